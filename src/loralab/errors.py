"""The exception types the CLI turns into a short message and an exit code, and the one-line form of any
exception for such messages. Imports nothing; every module may import it."""


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix, in one line."""


class Interrupted(Exception):
    """Training stopped on SIGINT / SIGTERM after saving a checkpoint; `code` is the exit code (128 + signal)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """The first non-empty line of an exception message (or its type's name), cut to `limit` characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

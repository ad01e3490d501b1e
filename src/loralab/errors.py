"""The one exception type that the CLI turns into a short message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix, in one line."""


class Interrupted(Exception):
    """Training stopped on SIGINT / SIGTERM after saving a checkpoint; `code` is the exit code (128 + signal)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code

"""Instruction rows of the common shapes turned into conversations (data.chat's messages).

- prompt_completion: {"prompt", "completion"} (or "response" for the completion).
- alpaca (Taori et al. 2023, Stanford Alpaca): {"instruction", "input" (optional, may be empty), "output"} (or
  "response", as GPTeacher writes it); the user turn is the instruction, a blank line and the input.
- messages: OpenAI-style {"messages": [{"role": "system" | "user" | "assistant", "content": str}, ...]}.
- sharegpt: {"conversations": [{"from": "system" | "human" | "user" | "gpt" | "assistant", "value": str}, ...]}.

`columns` maps these names (prompt, completion, instruction, input, output, messages, conversations) to the
data's own column names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from loralab.errors import UserError

FORMATS = ("prompt_completion", "alpaca", "messages", "sharegpt")
# The columns each format reads, the first of each tuple by default; later ones are read when the data has no
# column of the first name and `columns` does not name one.
FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "prompt_completion": {"prompt": ("prompt",), "completion": ("completion", "response")},
    "alpaca": {"instruction": ("instruction",), "input": ("input",), "output": ("output", "response")},
    "messages": {"messages": ("messages",)},
    "sharegpt": {"conversations": ("conversations",)},
}
OPTIONAL = {"input"}
ROLES = {
    "messages": {"system": "system", "user": "user", "assistant": "assistant"},
    "sharegpt": {
        "system": "system",
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
    },
}
# The keys of one turn: (role key, content key) of each format; either format's keys are read in both.
TURN_KEYS = {"messages": ("role", "content"), "sharegpt": ("from", "value")}


def detect_format(columns: Sequence[str]) -> str:
    """The format whose columns the data has: messages, conversations (sharegpt), instruction + output or
    response (alpaca), prompt + completion or response (prompt_completion)."""
    present = set(columns)
    if "messages" in present:
        return "messages"
    if "conversations" in present:
        return "sharegpt"
    if "instruction" in present and present & {"output", "response"}:
        return "alpaca"
    if "prompt" in present and present & {"completion", "response"}:
        return "prompt_completion"
    shown = ", ".join(repr(c) for c in columns) or "none"
    raise UserError(
        f"cannot tell the format of rows with columns {shown}: set format (one of {', '.join(FORMATS)}) and "
        'columns to name the data\'s columns, e.g. columns = {prompt = "question", completion = "answer"}'
    )


def to_messages(row: dict, fmt: str, columns: Mapping[str, str], where: str) -> list[dict]:
    """The conversation of one row: [{"role", "content"}, ...], ending with an assistant turn (user turns after
    the last assistant turn, which nothing answers, are left out). `where` (e.g. "train row 12") starts every
    error message."""
    if fmt not in FORMATS:
        raise UserError(f"{where}: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "prompt_completion":
        prompt = _text(row, fmt, "prompt", columns, where)
        messages = [_turn("user", prompt), _turn("assistant", _text(row, fmt, "completion", columns, where))]
    elif fmt == "alpaca":
        user = _text(row, fmt, "instruction", columns, where)
        extra = _text(row, fmt, "input", columns, where)
        if extra.strip():  # an empty input adds nothing
            user += "\n\n" + extra
        messages = [_turn("user", user), _turn("assistant", _text(row, fmt, "output", columns, where))]
    else:
        field = "messages" if fmt == "messages" else "conversations"
        messages = _conversation(_value(row, fmt, field, columns, where), fmt, where)
    return messages


def _turn(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def _column(row: dict, fmt: str, field: str, columns: Mapping[str, str]) -> str | None:
    """The data's column for `field`: the one `columns` names, else the first default name the row has."""
    if field in columns:
        return columns[field] if columns[field] in row else None
    return next((name for name in FIELDS[fmt][field] if name in row), None)


def _value(row: dict, fmt: str, field: str, columns: Mapping[str, str], where: str):
    name = _column(row, fmt, field, columns)
    if name is None:
        wanted = columns.get(field) or " or ".join(repr(n) for n in FIELDS[fmt][field])
        shown = ", ".join(repr(c) for c in row) or "none"
        raise UserError(
            f"{where}: no column {wanted} for the {fmt} format's {field} (the row has {shown}); name the column "
            f'with columns = {{{field} = "..."}}, or set format'
        )
    return row[name]


def _text(row: dict, fmt: str, field: str, columns: Mapping[str, str], where: str) -> str:
    """A text field: a string; the optional input may be missing (unless `columns` names it) or null: ""."""
    if field in OPTIONAL and field not in columns and _column(row, fmt, field, columns) is None:
        return ""
    value = _value(row, fmt, field, columns, where)
    if value is None and field in OPTIONAL:
        return ""
    if not isinstance(value, str):
        raise UserError(f"{where}: {field} must be a string, not {type(value).__name__}; make it text")
    if field not in OPTIONAL and not value.strip():
        raise UserError(f"{where}: {field} is empty; fill it or drop the row")
    return value


def _conversation(turns, fmt: str, where: str) -> list[dict]:
    """The turns of a messages or sharegpt list, checked, with our role names."""
    if not isinstance(turns, list) or not turns:
        raise UserError(f"{where}: the {fmt} column must hold a non-empty list of turns; fix the data")
    roles = ROLES[fmt]
    messages = []
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise UserError(f"{where}: turn {i} must be an object, not {type(turn).__name__}; fix the data")
        role_key, content_key = next(
            (keys for keys in (TURN_KEYS[fmt], *TURN_KEYS.values()) if keys[0] in turn),
            TURN_KEYS[fmt],
        )
        if role_key not in turn or content_key not in turn:
            raise UserError(
                f"{where}: turn {i} has keys {', '.join(map(repr, turn)) or 'none'}; a {fmt} turn needs "
                f"{TURN_KEYS[fmt][0]!r} and {TURN_KEYS[fmt][1]!r}; set format to the data's shape"
            )
        role, content = turn[role_key], turn[content_key]
        if not isinstance(role, str) or role not in roles:
            other = next((f for f in ROLES if f != fmt and role in ROLES[f]), None)
            fix = f"set format = {other}" if other else "drop such turns"
            raise UserError(
                f"{where}: turn {i} has role {role!r}; the {fmt} roles are {', '.join(roles)}; {fix}"
            )
        if not isinstance(content, str):
            raise UserError(
                f"{where}: turn {i} ({role}) content must be a string, not {type(content).__name__}; make it text"
            )
        if not content.strip():
            raise UserError(f"{where}: turn {i} ({role}) is empty; fill it or drop the row")
        if roles[role] == "system" and messages:
            raise UserError(
                f"{where}: turn {i} is a system turn; a system turn may only open the conversation"
            )
        messages.append(_turn(roles[role], content))
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise UserError(f"{where}: the conversation has no assistant turn, so nothing to learn; drop the row")
    return messages[: last + 1]

"""Tasks: where examples come from, how they become (prompt, answer) text, and how outputs are scored."""

from __future__ import annotations

from types import ModuleType

from loralab.errors import UserError
from loralab.tasks import code_qa, rotten_tomatoes, summarization

TASKS: dict[str, ModuleType] = {
    "rotten_tomatoes": rotten_tomatoes,
    "code_qa": code_qa,
    "summarization": summarization,
}


def get_task(name: str) -> ModuleType:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]

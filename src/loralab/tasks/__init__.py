"""Tasks: where examples come from, how they become (prompt, answer) text, and how outputs are scored.

One module per task; each ends with `TASK = Task(...)`, the hooks loralab calls (loralab.tasks.base lists
them).

May import errors, files, hub, config, lora, models, data and evaluation; nothing from methods, training,
reporting or cli.
"""

from __future__ import annotations

from loralab.errors import UserError
from loralab.tasks import code_qa, rotten_tomatoes, summarization
from loralab.tasks.base import Task

# loralab.config reads the task names from this file's source (config/registries.py): keep them literal
TASKS: dict[str, Task] = {
    "rotten_tomatoes": rotten_tomatoes.TASK,
    "code_qa": code_qa.TASK,
    "summarization": summarization.TASK,
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]

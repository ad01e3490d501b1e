"""Tasks: where examples come from, how they become conversations or (prompt, answer) texts, and how outputs
are scored. Four families (classification, instruction, summarization, text), one module each ending with
`TASK = Task(...)` (loralab.tasks.base lists the hooks); presets (presets.py) are families with other defaults.

May import errors, files, hub, config, lora, models, data and evaluation; nothing from methods, training,
reporting or cli.
"""

from __future__ import annotations

from loralab.config import FAMILY_OF
from loralab.errors import UserError
from loralab.tasks import classification, instruction, summarization, text
from loralab.tasks.base import Task

# loralab.config reads the family names from this file's source (config/registries.py): keep them literal
FAMILIES: dict[str, Task] = {
    "classification": classification.TASK,
    "instruction": instruction.TASK,
    "summarization": summarization.TASK,
    "text": text.TASK,
}


def get_task(name: str) -> Task:
    """The family of task `name` (a family, or a preset of one)."""
    if name not in FAMILY_OF:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(FAMILY_OF)}")
    return FAMILIES[FAMILY_OF[name]]

"""Adaptation methods: each says which parameters train and how its result is saved and loaded back.

One module per method; each ends with `METHOD = Method(...)`, the hooks the training loop calls
(loralab.methods.base lists them: prepare, save, load, restore, and build_model, attach_teacher,
training_loss, summary with defaults).

May import errors, files, hub, config, lora, models, data, evaluation and tasks (distill prompts its teacher
as the task does); nothing from training, reporting or cli: the loop hands distill the function that loads
a teacher run.
"""

from __future__ import annotations

from loralab.errors import UserError
from loralab.methods import distill, full, last_layers, lora, prompt_tuning, qlora
from loralab.methods.base import Method

# loralab.config reads the method names from this file's source (config/registries.py): keep them literal
METHODS: dict[str, Method] = {
    "lora": lora.METHOD,
    "full": full.METHOD,
    "last_layers": last_layers.METHOD,
    "prompt_tuning": prompt_tuning.METHOD,
    "qlora": qlora.METHOD,
    "distill": distill.METHOD,
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]

"""Adaptation methods: each says which parameters train and how its result is saved and loaded back.

A method is a module with four functions over a loaded base model:
    prepare(model, config, extra_modules, tokenizer) -> model
                                            make the right parameters trainable (may wrap the model)
    save(model, directory, config)          write what training changed
    load(model, directory) -> model         put a saved result onto a fresh base model
    restore(model, directory) -> model      load saved weights into a model that prepare() adapted
and optionally summary(model) -> dict       facts for summary.json (e.g. the bytes of a quantized base)
    build_model(config, device)             its own model and tokenizer instead of config.model (a student)
    attach_teacher(config, rows, examples, out) -> examples     extra targets for training (teacher logits)
    training_loss(config, kind) -> loss_sum                      the training loss, if not the kind's
"""

from __future__ import annotations

from types import ModuleType

from loralab.errors import UserError
from loralab.methods import distill, full, last_layers, lora, prompt_tuning, qlora

METHODS: dict[str, ModuleType] = {
    "lora": lora,
    "full": full,
    "last_layers": last_layers,
    "prompt_tuning": prompt_tuning,
    "qlora": qlora,
    "distill": distill,
}


def get_method(name: str) -> ModuleType:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]

"""Full fine-tuning: every parameter of the model trains (the baseline LoRA is measured against)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from loralab.config import RunConfig
from loralab.methods.base import Method
from loralab.methods.partial import load_trained, save_trained, unfreeze


def prepare(
    model: nn.Module, config: RunConfig, extra_modules: tuple[str, ...] = (), tokenizer=None
) -> nn.Module:
    unfreeze(model, [""])
    return model


def save(model: nn.Module, directory: Path, config: RunConfig) -> None:
    save_trained(model, directory, "full", config.model)


# a fresh base model and one this method prepared take the saved parameters the same way
load = restore = load_trained

METHOD = Method("full", prepare, save, load, restore)

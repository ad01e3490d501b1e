"""LoRA (Hu et al. 2021): freeze the model, train low-rank updates of the chosen linear layers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from loralab.config import RunConfig
from loralab.lora import apply_lora, load_adapter, load_adapter_weights, save_adapter
from loralab.methods.base import Method
from loralab.models.parts import extra_modules_to_save


def prepare(
    model: nn.Module, config: RunConfig, extra_modules: tuple[str, ...] = (), tokenizer=None
) -> nn.Module:
    """Apply LoRA; a classification head, the modules in `extra_modules` and (when asked) embeddings and
    layer norms train in full beside it."""
    lora = config.lora_config()
    extra = extra_modules_to_save(model, config.train_embeddings, config.train_layer_norms) + list(
        extra_modules
    )
    if extra:
        lora = dataclasses.replace(
            lora, modules_to_save=tuple(dict.fromkeys([*lora.modules_to_save, *extra]))
        )
    return apply_lora(model, lora)


def save(model: nn.Module, directory: Path, config: RunConfig) -> None:
    save_adapter(model, directory, base_model_name=config.model)


def load(model: nn.Module, directory: Path) -> nn.Module:
    return load_adapter(model, directory)


def restore(model: nn.Module, directory: Path) -> nn.Module:
    """Load saved weights into a model that `prepare` already adapted (e.g. the best checkpoint)."""
    return load_adapter_weights(model, directory)


METHOD = Method("lora", prepare, save, load, restore)

"""LoRA (Hu et al. 2021): freeze the model, train low-rank updates of the chosen linear layers."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from loralab.config import RunConfig
from loralab.lora import apply_lora, load_adapter, load_adapter_weights, save_adapter


def prepare(model: nn.Module, config: RunConfig) -> nn.Module:
    return apply_lora(model, config.lora_config())


def save(model: nn.Module, directory: Path, config: RunConfig) -> None:
    save_adapter(model, directory, base_model_name=config.model)


def load(model: nn.Module, directory: Path) -> nn.Module:
    return load_adapter(model, directory)


def restore(model: nn.Module, directory: Path) -> nn.Module:
    """Load saved weights into a model that `prepare` already adapted (e.g. the best checkpoint)."""
    return load_adapter_weights(model, directory)

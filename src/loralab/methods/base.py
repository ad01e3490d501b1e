"""The Method contract: every hook the training loop and `load_for_inference` call on an adaptation method.

Each method module (lora, full, ...) writes the four hooks that define it as plain functions and ends with
one `METHOD = Method(...)` naming them; the other hooks default to what a plain method does.

    prepare(model, config, extra_modules, tokenizer) -> model
                            make the right parameters trainable (may wrap the model); `extra_modules`
                            (the code vocabulary's embeddings) train in full beside them
    save(model, directory, config)
                            write what training changed
    load(model, directory) -> model
                            put a saved result onto a fresh base model
    restore(model, directory) -> model
                            load saved weights into a model that prepare() adapted (the best checkpoint)
    build_model(config, device) -> (model, tokenizer)
                            the model training starts from; default: the pretrained `config.model`
    attach_teacher(config, rows, examples, out, load_run) -> examples
                            extra targets for every training example (distill: the teacher's logits);
                            `load_run(config, run_dir)` loads a finished run as `loralab eval` does.
                            Default: the examples as they are
    training_loss(config, kind) -> loss_sum
                            the training loss (model, batch) -> (summed loss, targets); default: the kind's
    summary(model) -> dict  facts for summary.json (qlora: the bytes of the 4-bit base); default: none
    torchrun: bool          whether it trains under torchrun (distill computes its teacher in one process)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from loralab.config import RunConfig
from loralab.models.loading import load_model_and_tokenizer


def pretrained_model(config: RunConfig, device: torch.device) -> tuple[nn.Module, object]:
    """The pretrained `config.model` (with a classification head of len(label_words) classes when asked)."""
    return load_model_and_tokenizer(
        config.model,
        device,
        kind=config.model_kind,
        num_labels=len(config.label_words),
        trust_remote_code=config.trust_remote_code,
    )


def no_teacher(config: RunConfig, rows: list[dict], examples: list, out: Path, load_run: Callable) -> list:
    return examples


def kind_loss(config: RunConfig, kind) -> Callable:
    """The model kind's own loss (`kind` is a loralab.training.kinds.Kind)."""
    return kind.loss_sum


def no_summary(model: nn.Module) -> dict:
    return {}


@dataclass(frozen=True)
class Method:
    """An adaptation method as the training loop sees it; the module docstring describes each hook."""

    name: str
    prepare: Callable[..., nn.Module]
    save: Callable[[nn.Module, Path, RunConfig], None]
    load: Callable[[nn.Module, Path], nn.Module]
    restore: Callable[[nn.Module, Path], nn.Module]
    build_model: Callable[[RunConfig, torch.device], tuple[nn.Module, object]] = pretrained_model
    attach_teacher: Callable[[RunConfig, list[dict], list, Path, Callable], list] = no_teacher
    training_loss: Callable[[RunConfig, object], Callable] = kind_loss
    summary: Callable[[nn.Module], dict] = no_summary
    torchrun: bool = True

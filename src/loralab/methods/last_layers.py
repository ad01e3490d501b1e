"""Last-N-layers fine-tuning: the last `n_layers` transformer blocks train in full, everything else is frozen.

By flags the input embeddings (`train_embeddings`), every layer norm (`train_layer_norms`) and the output head
(`train_head`) train too; a new classification head always does. `n_layers = 0` with `train_head = true` is
the "head only" baseline. For an encoder-decoder the blocks are the decoder's (the larger stack).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from loralab.config import RunConfig
from loralab.errors import UserError
from loralab.methods.base import Method
from loralab.methods.partial import freeze, load_trained, save_trained, unfreeze
from loralab.models.parts import extra_modules_to_save
from loralab.naming import module_name


def block_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's stack of transformer blocks: the ModuleList of same-class modules holding the most
    parameters (decoder.block of T5, model.layers of Llama, transformer.h of GPT-2, encoder.layer of BERT)."""
    best, best_size = None, 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size >= best_size:
            best, best_size = (name, module), size
    if best is None:
        raise UserError(f"{type(model).__name__} has no stack of transformer blocks for method last_layers")
    return best


def output_head(model: nn.Module) -> list[str]:
    """The name of the output layer: the LM head, or a classification head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    name = module_name(model, head)
    return [] if name is None else [name]


def prepare(
    model: nn.Module, config: RunConfig, extra_modules: tuple[str, ...] = (), tokenizer=None
) -> nn.Module:
    name, blocks = block_stack(model)
    if config.n_layers > len(blocks):
        raise UserError(f"n_layers is {config.n_layers} but the model has {len(blocks)} blocks in {name}")
    freeze(model)
    trained = [f"{name}.{i}" for i in range(len(blocks) - config.n_layers, len(blocks))]
    trained += extra_modules_to_save(model, config.train_embeddings, config.train_layer_norms)
    trained += list(extra_modules)
    if config.train_head:
        trained += output_head(model)
    unfreeze(model, trained)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError("method last_layers with n_layers = 0 trains nothing; set n_layers > 0 or train_head")
    return model


def save(model: nn.Module, directory: Path, config: RunConfig) -> None:
    save_trained(model, directory, "last_layers", config.model)


# a fresh base model and one this method prepared take the saved parameters the same way
load = restore = load_trained

METHOD = Method("last_layers", prepare, save, load, restore)

"""Which whole modules train beside LoRA: a classification head, embeddings, layer norms.

They go into LoRAConfig.modules_to_save (module-name suffixes), so they are trained in full and saved with
the adapter, as the peft library does.
"""

from __future__ import annotations

from torch import nn

from loralab.naming import module_name

HEAD_NAMES = ("classifier", "score", "classification_head")  # BERT-likes, decoder LMs, BART-likes


def classification_head(model: nn.Module) -> list[str]:
    """The new (randomly initialised) classification head of a sequence-classification model, if any."""
    children = dict(model.named_children())
    return [name for name in HEAD_NAMES if name in children][:1]


def input_embeddings(model: nn.Module) -> list[str]:
    """The full name of the input embedding module (e.g. model.embed_tokens, shared, transformer.wte)."""
    name = module_name(model, model.get_input_embeddings())
    return [] if name is None else [name]


def layer_norms(model: nn.Module) -> list[str]:
    """Leaf names shared by all normalisation layers (LayerNorm, RMSNorm, T5LayerNorm...)."""
    leaves = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if name and type(module).__name__.lower().endswith("norm")
    }
    return sorted(leaves)


def extra_modules_to_save(model: nn.Module, train_embeddings: bool, train_layer_norms: bool) -> list[str]:
    """Head (always, when there is one), then embeddings and layer norms when asked for."""
    names = classification_head(model)
    if train_embeddings:
        names += input_embeddings(model)
    if train_layer_norms:
        names += layer_norms(model)
    return names

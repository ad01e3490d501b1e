"""Saving and loading the model's own parameters that a method trained (full fine-tuning, last layers).

    adapter/trained.safetensors    every trained parameter of the base model, by its name
    adapter/method.json            the method, the base model and the parameter names

Parameters shared between two names (tied input and output embeddings) are stored once.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from loralab.errors import UserError
from loralab.files import read_tensors, write_atomically, write_text_atomically

WEIGHTS_FILE = "trained.safetensors"
META_FILE = "method.json"


def freeze(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def unfreeze(model: nn.Module, names: list[str]) -> None:
    """Make the parameters of the named modules trainable: a full name (model.layers.3), a leaf name that
    matches anywhere (layer_norm), or "" for the whole model. Tied modules are found under every name."""
    for path, module in model.named_modules(remove_duplicate=False):
        if any(not n or path == n or path.endswith("." + n) for n in names):
            module.requires_grad_(True)


def save_trained(model: nn.Module, directory: Path, method: str, base_model: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    write_atomically(
        directory / WEIGHTS_FILE, lambda path: save_file(tensors, path, metadata={"format": "pt"})
    )
    meta = {"method": method, "base_model": base_model, "parameters": sorted(tensors)}
    write_text_atomically(directory / META_FILE, json.dumps(meta, indent=2))


def load_trained(model: nn.Module, directory: Path) -> nn.Module:
    """Copy the saved parameters into `model` (a fresh base model or one the method prepared); they train, the
    rest is frozen, as in the run that saved them."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise UserError(
            f"{directory} has no {WEIGHTS_FILE}; it was not saved by full or last_layers training"
        )
    saved = read_tensors(path, "train the run again (or resume it) to write it anew")
    params = dict(model.named_parameters(remove_duplicate=False))
    unknown = sorted(set(saved) - set(params))
    if unknown:
        raise UserError(
            f"{directory} holds {len(unknown)} parameters this model lacks (e.g. {unknown[0]}); "
            "load it onto the base model it was trained from"
        )
    with torch.no_grad():
        for name, value in saved.items():
            if params[name].shape != value.shape:
                raise UserError(
                    f"{name} in {directory} has shape {tuple(value.shape)}, the model's is "
                    f"{tuple(params[name].shape)}; load it onto the base model it was trained from"
                )
            params[name].copy_(value)
    trained = {id(params[name]) for name in saved}
    for parameter in params.values():  # as training left them: a frozen base converts (base_precision) alike
        parameter.requires_grad_(id(parameter) in trained)
    return model

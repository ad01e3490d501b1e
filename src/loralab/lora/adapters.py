"""Loading adapters, and several named adapters on one base model: load them side by side, switch, switch all
off, or give each row of a batch its own.

    load_adapter(model, "runs/sst/adapter")                   # apply the saved config, load its weights
    load_adapter(model, "runs/sst/adapter", name="sst")       # the first: applies LoRA, becomes active
    load_adapter(model, "runs/code/adapter", name="code")     # more: loaded beside it, the active one stays
    set_adapter(model, "code")                                # switch (no reload of the base)
    with disable_adapters(model): ...                         # the base model alone
    with adapter_per_row(model, ["sst", None, "code"]): ...   # row i of every batch uses adapter i (None: base)

Every adapter keeps its own weights (its own rank, alpha and targets) in each LoRALinear it touches, under its
name in the layer's `adapters`; the active one is the layer's `adapter`, so training, merging and saving work on
it exactly as with a single adapter. A layer that the active adapter does not touch passes its input to the base
layer. Switching swaps those references (and re-merges the weights in eval mode). In a mixed batch the weights
stay un-merged and each adapter's low-rank update is added to its own rows.

The model keeps `lora_adapters` (name -> its config and target layer names) and `active_adapter`; a model that
got its LoRA from apply_lora holds one adapter, registered as "default" on first use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from loralab.errors import UserError
from loralab.lora.config import LoRAConfig
from loralab.lora.init import is_residual
from loralab.lora.inject import all_lora_layers, apply_lora, find_target_modules, set_submodule
from loralab.lora.io import WEIGHTS_FILE, load_adapter_weights, read_adapter_config
from loralab.lora.layer import DEFAULT_ADAPTER, LoRALinear, base_forward
from loralab.lora.qkv import qkv_row_ranges


def load_adapter(model: nn.Module, directory: str | os.PathLike, name: str | None = None) -> nn.Module:
    """Apply the saved config to a fresh base model and load the adapter weights into it (in place).

    With `name`, the model may hold adapters already: this one is loaded beside them under `name` (the first
    one loaded becomes the active adapter; switch with set_adapter).
    """
    directory = Path(directory)
    if not (directory / WEIGHTS_FILE).is_file():
        raise UserError(f"{directory} has no {WEIGHTS_FILE}; pass the folder save_adapter wrote")
    if name is not None and getattr(model, "lora_config", None) is not None:
        return add_adapter(model, directory, name)
    config = read_adapter_config(directory)
    try:
        apply_lora(model, config, name=DEFAULT_ADAPTER if name is None else name)
    except UserError as exc:
        raise UserError(
            f"adapter {directory} was made for another model ({exc}); load it onto the base model "
            "it was trained on"
        ) from None
    load_adapter_weights(model, directory)
    if name is not None:
        model.lora_adapters = {name: _entry(config, model.lora_target_names)}
        model.active_adapter = name
    return model


def _entry(config: LoRAConfig, targets: list[str]) -> dict:
    return {"config": config, "targets": list(targets)}


def adapter_names(model: nn.Module) -> list[str]:
    """Names of the adapters loaded into the model, the active one first."""
    registry = _registry(model)
    return sorted(registry, key=lambda name: name != model.active_adapter)


def _registry(model: nn.Module) -> dict[str, dict]:
    """name -> {"config", "targets"} of every adapter loaded into the model."""
    if getattr(model, "lora_config", None) is None and not getattr(model, "lora_adapters", None):
        raise UserError("the model has no LoRA adapter; load one with load_adapter(model, folder, name=...)")
    if not getattr(model, "lora_adapters", None):
        model.lora_adapters = {DEFAULT_ADAPTER: _entry(model.lora_config, model.lora_target_names)}
        model.active_adapter = DEFAULT_ADAPTER
    return model.lora_adapters


def set_adapter(model: nn.Module, name: str) -> None:
    """Make `name` the active adapter (its weights merged again in eval mode at the next forward)."""
    registry = _registry(model)
    if name not in registry:
        raise UserError(f"no adapter named {name!r}; loaded: {', '.join(adapter_names(model))}")
    for layer in all_lora_layers(model).values():
        layer.set_adapter(name)
    entry = registry[name]
    model.lora_config, model.lora_target_names, model.active_adapter = entry["config"], entry["targets"], name


def add_adapter(model: nn.Module, directory: str | Path, name: str) -> nn.Module:
    """Load the adapter folder beside the adapters already in the model, as `name`; the active adapter stays.

    Adapters that train whole modules (modules_to_save) or biases change weights that all adapters share, so
    only the first adapter of a model may have them.
    """
    registry = _registry(model)
    if name in registry:
        raise UserError(f"an adapter named {name!r} is loaded already; pick another name")
    config: LoRAConfig = read_adapter_config(directory)
    if config.modules_to_save or config.bias != "none":
        raise UserError(
            f"adapter {directory} also trains whole modules or biases, which all adapters of a model "
            "share; load it alone (as the first adapter) or into its own copy of the base model"
        )
    previous = model.active_adapter
    targets = find_target_modules(model, config, include_wrapped=True)
    registry[name] = _entry(config, targets)
    try:
        _add_to_layers(model, name, config, targets)
        set_adapter(model, name)
        load_adapter_weights(model, directory)
    except BaseException:  # nothing of a half-loaded adapter stays (layers wrapped for it pass through)
        del registry[name]
        for layer in all_lora_layers(model).values():
            layer.delete_adapter(name)
        raise
    finally:
        set_adapter(model, previous)
    return model


def _add_to_layers(model: nn.Module, name: str, config: LoRAConfig, targets: list[str]) -> None:
    """Fresh weights of adapter `name` (built the way apply_lora builds them) in each target layer."""
    layers = all_lora_layers(model)
    for target in targets:
        layer = layers.get(target)
        if layer is None:  # a layer no earlier adapter touched: wrap it; the other adapters pass through it
            layer = LoRALinear(model.get_submodule(target)).train(model.training)
            set_submodule(model, target, layer)
        parts = qkv_row_ranges(target, layer.d_out, config.qkv_parts) if config.qkv_parts else None
        layer.add_adapter(name, config, parts)


def _refuse_residual(model: nn.Module, what: str) -> None:
    """A pissa / olora model's frozen weights are residuals: without its adapter it is not the base model."""
    if any(is_residual(u) for layer in all_lora_layers(model).values() for u in layer.adapters.values()):
        raise UserError(
            f"{what} needs the base model's weights, but this model's are pissa / olora residuals; save the "
            "adapter and load it onto a fresh base model (it loads as an ordinary LoRA)"
        )


@contextmanager
def disable_adapters(model: nn.Module) -> Iterator[None]:
    """Inside the block the model computes as its base model (every LoRA update taken out)."""
    _refuse_residual(model, "disabling the adapters")
    layers = list(all_lora_layers(model).values())
    for layer in layers:
        layer.unmerge()
        layer.disabled = True
    try:
        yield
    finally:
        for layer in layers:
            layer.disabled = False


@contextmanager
def adapter_per_row(model: nn.Module, names: list[str | None]) -> Iterator[None]:
    """Inside the block row i of every batch goes through adapter names[i] (None: no adapter), as if each
    row ran alone with its adapter active. Works for generate() too (beams of a row share its adapter)."""
    registry = _registry(model)
    _refuse_residual(model, "a batch of rows with their own adapters")
    unknown = sorted({n for n in names if n is not None and n not in registry})
    if unknown:
        raise UserError(
            f"no adapter named {', '.join(map(repr, unknown))}; loaded: {', '.join(adapter_names(model))}"
        )
    if any(registry[n]["config"].use_dora for n in set(names) if n is not None):
        raise UserError(
            "DoRA adapters scale the whole weight and cannot share a batch; run them one at a time"
        )
    layers = all_lora_layers(model)
    for layer in layers.values():
        layer.unmerge()
        updates = {name: layer.update_of(name) for name in set(names) - {None}}
        weights = {name: (u.lora_A, u.full_B(), u.scaling) for name, u in updates.items() if u is not None}
        layer.row_adapters = RowAdapters(list(names), weights)
    try:
        yield
    finally:
        for layer in layers.values():
            layer.row_adapters = None


@dataclass
class RowAdapters:
    """For a mixed batch: each row's adapter name (None: none) and, per name, the (A, full B, scaling) it has in
    one layer."""

    names: list[str | None]
    weights: dict[str, tuple[torch.Tensor, torch.Tensor, float]]
    _groups: dict = field(default_factory=dict)

    def forward(self, layer: LoRALinear, x: torch.Tensor) -> torch.Tensor:
        """The base output plus, on each adapter's rows, that adapter's scaling·B·A·x (un-merged weights)."""
        result = base_forward(layer._modules["base_layer"], x)
        for index, (A, B, scaling) in self.groups(x.shape[0], x.device):
            update = F.linear(F.linear(x.index_select(0, index).to(A.dtype), A), B) * scaling
            result.index_add_(0, index, update.to(result.dtype))  # a fresh tensor: F.linear keeps no output
        return result

    def groups(self, batch: int, device: torch.device) -> list[tuple[torch.Tensor, tuple]]:
        """(row indices, weights) per adapter for a batch of `batch` rows; generate() with beams repeats
        each row, so a batch may be a multiple of the names given."""
        if batch not in self._groups:
            if batch % len(self.names):
                raise ValueError(
                    f"a batch of {batch} rows does not match the {len(self.names)} adapter names given"
                )
            repeat = batch // len(self.names)
            rows = [name for name in self.names for _ in range(repeat)]
            self._groups[batch] = [
                (torch.tensor([i for i, n in enumerate(rows) if n == name], device=device), weights)
                for name, weights in self.weights.items()
                if name in rows
            ]
        return self._groups[batch]

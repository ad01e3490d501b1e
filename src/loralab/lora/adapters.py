"""Several named adapters on one base model: load them side by side, switch, switch all off, or give each row
of a batch its own.

    load_adapter(model, "runs/sst/adapter", name="sst")       # the first: applies LoRA, becomes active
    load_adapter(model, "runs/code/adapter", name="code")     # more: loaded beside it, the active one stays
    set_adapter(model, "code")                                # switch (no reload of the base)
    with disable_adapters(model): ...                         # the base model alone
    with adapter_per_row(model, ["sst", None, "code"]): ...   # row i of every batch uses adapter i (None: base)

Every adapter keeps its own A and B (its own rank, alpha and targets) in each LoRALinear it touches; the active
one's are the layer's `lora_A` / `lora_B`, so training, merging and saving work on it exactly as with a single
adapter. A layer that the active adapter does not touch passes its input to the base layer. Switching swaps
those references (and re-merges the weights in eval mode). In a mixed batch the weights stay un-merged and each
adapter's low-rank update is added to its own rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from loralab.errors import UserError
from loralab.lora.config import LoRAConfig
from loralab.lora.inject import all_lora_layers
from loralab.lora.layer import LoRALinear, RowAdapters, full_B

DEFAULT = "default"
STATE_ATTRIBUTES = ("r", "alpha", "scaling", "parts", "use_dora")
STATE_PARAMETERS = ("lora_A", "lora_B", "lora_magnitude_vector")


def adapter_names(model: nn.Module) -> list[str]:
    """Names of the adapters loaded into the model, the active one first."""
    registry = _registry(model)
    return sorted(registry, key=lambda name: name != model.active_adapter)


def _registry(model: nn.Module) -> dict[str, dict]:
    """name -> {"config", "targets", "layers": {layer name: state}}; a model that got its LoRA from
    apply_lora / load_adapter without a name holds one adapter, registered as "default" on first use."""
    if getattr(model, "lora_config", None) is None and not getattr(model, "lora_adapters", None):
        raise UserError("the model has no LoRA adapter; load one with load_adapter(model, folder, name=...)")
    if not getattr(model, "lora_adapters", None):
        model.lora_adapters = {DEFAULT: _snapshot(model)}
        model.active_adapter = DEFAULT
    return model.lora_adapters


def register_first(model: nn.Module, name: str) -> None:
    """Record the model's only adapter (just applied and loaded) under `name`, active."""
    model.lora_adapters = {name: _snapshot(model)}
    model.active_adapter = name


def _layer_state(layer: LoRALinear) -> dict:
    state = {key: getattr(layer, key) for key in STATE_ATTRIBUTES}
    return state | {key: layer._parameters.get(key) for key in STATE_PARAMETERS}


def _snapshot(model: nn.Module) -> dict:
    layers = all_lora_layers(model)
    targets = list(model.lora_target_names)
    return {
        "config": model.lora_config,
        "targets": targets,
        "layers": {n: _layer_state(layers[n]) for n in targets},
    }


def _install(layer: LoRALinear, state: dict | None) -> None:
    """Make `state` (an adapter's weights for this layer, or None: the adapter does not touch it) the
    layer's active adapter."""
    layer.unmerge()
    layer.present = state is not None
    if state is None:
        return
    for key in STATE_ATTRIBUTES:
        setattr(layer, key, state[key])
    device = layer.base_layer.weight.device
    for key in STATE_PARAMETERS:
        param = state[key]
        if param is None:
            layer._parameters.pop(key, None)
            continue
        if param.device != device:  # an inactive adapter's weights stay where they were when model.to() ran
            param.data = param.data.to(device)
        layer._parameters[key] = param


def set_adapter(model: nn.Module, name: str) -> None:
    """Make `name` the active adapter (its weights merged again in eval mode at the next forward)."""
    registry = _registry(model)
    if name not in registry:
        raise UserError(f"no adapter named {name!r}; loaded: {', '.join(adapter_names(model))}")
    entry = registry[name]
    for layer_name, layer in all_lora_layers(model).items():
        _install(layer, entry["layers"].get(layer_name))
    model.lora_config, model.lora_target_names, model.active_adapter = entry["config"], entry["targets"], name


def add_adapter(model: nn.Module, directory: str | Path, name: str) -> nn.Module:
    """Load the adapter folder beside the adapters already in the model, as `name`; the active adapter stays.

    Adapters that train whole modules (modules_to_save) or biases change weights that all adapters share, so
    only the first adapter of a model may have them.
    """
    from loralab.lora.inject import find_target_modules, qkv_row_ranges, set_submodule
    from loralab.lora.io import load_adapter_weights, read_adapter_config

    registry = _registry(model)
    if name in registry:
        raise UserError(f"an adapter named {name!r} is loaded already; pick another name")
    config: LoRAConfig = read_adapter_config(directory)
    if config.modules_to_save or config.bias != "none":
        raise UserError(f"adapter {directory} also trains whole modules or biases, which all adapters of a model "
                        "share; load it alone (as the first adapter) or into its own copy of the base model")  # fmt: skip
    previous = model.active_adapter
    targets = find_target_modules(model, config, include_wrapped=True)
    layers = all_lora_layers(model)
    for target in targets:
        if target not in layers:  # a layer no earlier adapter touched: wrap it; the others pass through it
            layers[target] = LoRALinear(model.get_submodule(target), 1, 1.0)
            layers[target].train(model.training)
            set_submodule(model, target, layers[target])
    states = {}  # fresh weights of this adapter's shapes, built the way apply_lora builds them
    for layer_name in targets:
        layer = layers[layer_name]
        layer.unmerge()
        parts = qkv_row_ranges(layer_name, layer.base_layer, config.qkv_parts) if config.qkv_parts else None
        fresh = LoRALinear(layer.base_layer, config.r, config.alpha, config.dropout, config.init,
                           config.use_rslora, parts, config.use_dora)  # fmt: skip
        states[layer_name] = _layer_state(fresh)
    for layer_name, layer in layers.items():  # earlier adapters do not touch the layers wrapped just now
        _install(layer, states.get(layer_name))
    model.lora_config, model.lora_target_names = config, targets
    load_adapter_weights(model, directory)
    registry[name] = {"config": config, "targets": targets, "layers": states}
    set_adapter(model, previous)
    return model


@contextmanager
def disable_adapters(model: nn.Module) -> Iterator[None]:
    """Inside the block the model computes as its base model (every LoRA update taken out)."""
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
    for layer_name, layer in layers.items():
        layer.unmerge()
        weights = {}
        for name in set(names) - {None}:
            state = registry[name]["layers"].get(layer_name)
            if state is not None:
                B = full_B(state["lora_B"], state["parts"], state["r"], layer.d_out)
                weights[name] = (state["lora_A"], B, state["scaling"])
        layer.row_adapters = RowAdapters(list(names), weights)
    try:
        yield
    finally:
        for layer in layers.values():
            layer.row_adapters = None

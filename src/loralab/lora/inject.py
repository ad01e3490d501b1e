"""Put LoRALinear layers into a model by name, freeze the rest, and read the trainable state back out."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from loralab.errors import UserError
from loralab.lora.config import LoRAConfig
from loralab.lora.layer import DEFAULT_ADAPTER, LoRALinear, is_linear, linear_shape
from loralab.lora.qkv import qkv_row_ranges
from loralab.naming import module_name

ALL_LINEAR = "all-linear"


def linear_module_names(model: nn.Module, include_wrapped: bool = False) -> list[str]:
    """Full names of every nn.Linear / Conv1D in the model that is not already wrapped (with
    `include_wrapped`, LoRALinear layers count as the linear layers they wrap)."""
    return [
        name
        for name, module in model.named_modules()
        if (is_linear(module) or (include_wrapped and isinstance(module, LoRALinear)))
        and not _inside_lora(name)
    ]


def _inside_lora(name: str) -> bool:
    return name.endswith(".base_layer") or name == "base_layer"


def _output_head_names(model: nn.Module) -> set[str]:
    get_head = getattr(model, "get_output_embeddings", None)
    name = module_name(model, get_head() if callable(get_head) else None)
    return set() if name is None else {name}


def _describe_linear_names(model: nn.Module) -> str:
    leaves = sorted({name.rsplit(".", 1)[-1] for name in linear_module_names(model)})
    return ", ".join(leaves) if leaves else "(none)"


def _matches_suffix(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def find_target_modules(model: nn.Module, config: LoRAConfig, include_wrapped: bool = False) -> list[str]:
    """Names of the linear layers that `config.target_modules` selects; UserError if a target matches none.
    With `include_wrapped`, layers that already carry LoRA (another adapter's) are candidates too."""
    linear = linear_module_names(model, include_wrapped)
    targets = config.target_modules
    if targets == ALL_LINEAR:
        heads, excluded = _output_head_names(model), config.modules_to_save
        chosen = [n for n in linear if n not in heads and not any(_matches_suffix(n, m) for m in excluded)]
    elif isinstance(targets, str):
        chosen = _matching_regex(model, linear, targets)
    else:
        chosen = _matching_suffixes(model, linear, targets)
    if not chosen:
        raise UserError(
            f"no linear layer to adapt; this model's linear layers are: {_describe_linear_names(model)}"
        )
    _refuse_tied_weights(model, chosen)
    return chosen


def _matching_regex(model: nn.Module, linear: list[str], regex: str) -> list[str]:
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise UserError(f"target_modules regex {regex!r} is invalid ({exc}); fix the pattern") from None
    chosen = [n for n in linear if pattern.fullmatch(n)]
    if not chosen:
        raise UserError(
            f"target_modules regex {regex!r} matches no linear layer; "
            f"this model's linear layers are named: {_describe_linear_names(model)}"
        )
    return chosen


def _matching_suffixes(model: nn.Module, linear: list[str], targets: tuple[str, ...]) -> list[str]:
    chosen = set()
    for target in targets:
        hits = [n for n in linear if _matches_suffix(n, target)]
        if not hits:
            named = any(_matches_suffix(n, target) for n, _ in model.named_modules())
            raise UserError(
                f"target module {target!r} {'is not a linear layer' if named else 'matches no module'}; "
                f"this model's linear layers are named: {_describe_linear_names(model)}"
            )
        chosen.update(hits)
    return [n for n in linear if n in chosen]  # model order, no duplicates


def _refuse_tied_weights(model: nn.Module, chosen: list[str]) -> None:
    """Merging into a weight shared with the input embedding (a tied output head) would change the
    embedding too, so such a layer cannot carry LoRA."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embeddings = get_embeddings() if callable(get_embeddings) else None
    shared = getattr(embeddings, "weight", None)
    for name in chosen:
        if shared is not None and model.get_submodule(name).weight is shared:
            raise UserError(
                f"{name} shares its weight with the input embedding (tied), so merging LoRA into it would "
                "change the embedding too; train it in full with modules_to_save, or untie it first"
            )


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def apply_lora(model: nn.Module, config: LoRAConfig, *, name: str = DEFAULT_ADAPTER) -> nn.Module:
    """Wrap the selected layers in LoRALinear (in place), freeze everything else, and return the model.

    What trains afterwards: every lora_A / lora_B, the biases that `config.bias` names, and the parameters of
    `config.modules_to_save`. The config is kept on the model as `model.lora_config` for saving; `name` is the
    adapter's name in the layers (adapters.py loads more adapters beside it).
    """
    if getattr(model, "lora_config", None) is not None:
        raise UserError(
            "this model already has LoRA layers; load a fresh base model before applying LoRA again"
        )
    names = find_target_modules(model, config)
    for target in names:
        base = model.get_submodule(target)
        parts = qkv_row_ranges(target, linear_shape(base)[1], config.qkv_parts) if config.qkv_parts else None
        set_submodule(model, target, LoRALinear(base, config, parts, name).train(model.training))
    model.lora_config = config
    model.lora_target_names = names
    mark_only_lora_as_trainable(model, config.bias)
    for saved in _modules_to_save(model, config.modules_to_save):
        for param in model.get_submodule(saved).parameters():
            param.requires_grad_(True)
    return model


def _modules_to_save(model: nn.Module, wanted: tuple[str, ...]) -> list[str]:
    found = []
    for target in wanted:
        hits = [n for n, _ in model.named_modules() if n and _matches_suffix(n, target)]
        if not hits:
            raise UserError(
                f"modules_to_save entry {target!r} matches no module in the model; check the name"
            )
        found.extend(hits)
    return found


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    """(name, layer) for every LoRALinear of the active adapter (with several adapters loaded, a layer that
    only other adapters touch is left out)."""
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear) and module.adapter is not None:
            yield name, module


def mark_only_lora_as_trainable(model: nn.Module, bias: str = "none") -> None:
    """Freeze every parameter except lora_A / lora_B (and DoRA's magnitudes) and, per `bias`, "all" biases or
    those of LoRA layers."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.rsplit(".", 1)[-1] in ("lora_A", "lora_B", "lora_magnitude_vector"))
    if bias == "all":
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.requires_grad_(True)
    elif bias == "lora_only":
        for _, layer in lora_layers(model):
            if getattr(layer.base_layer, "bias", None) is not None:
                layer.base_layer.bias.requires_grad_(True)
    elif bias != "none":
        raise UserError(f"bias must be none, all or lora_only, got {bias!r}")


def merge_lora(model: nn.Module) -> None:
    """Fold every LoRA update into its frozen weight (idempotent)."""
    for _, layer in lora_layers(model):
        layer.merge()


def set_auto_merge(model: nn.Module, enabled: bool) -> None:
    """Whether eval() folds each LoRA update into its weight (the default) or keeps it separate; turning it off
    also takes merged updates back out."""
    for layer in all_lora_layers(model).values():
        layer.auto_merge = enabled
        if not enabled:
            layer.unmerge()
        elif not layer.training:
            layer.train(False)


@contextmanager
def updates_kept_separate(model: nn.Module) -> Iterator[None]:
    """Inside the block eval() does not merge: each LoRA layer adds its update on the side (one product with
    W + s·B·A formed per call where that pays), and the frozen weights are never written.

    merge then unmerge returns W0 only up to float rounding (fl(fl(W0 + ΔW) − ΔW) ≠ W0 in the last bit), so
    validating a merged model inside training would make the run differ from one resumed from a checkpoint,
    which starts from the pristine weights."""
    layers = list(all_lora_layers(model).values())
    flags = [layer.auto_merge for layer in layers]
    for layer in layers:
        layer.unmerge()
        layer.auto_merge = False
    try:
        yield
    finally:
        for layer, flag in zip(layers, flags, strict=True):
            layer.auto_merge = flag


def unmerge_lora(model: nn.Module) -> None:
    """Take every merged LoRA update back out of its weight (idempotent)."""
    for layer in all_lora_layers(model).values():
        layer.unmerge()


def all_lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every LoRALinear by name, including those that only inactive adapters use (lora_layers: the active
    adapter's)."""
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


def unload_lora(model: nn.Module) -> nn.Module:
    """Merge the (active) LoRA update into each weight and put the plain base layer back in the wrapper's place
    (in place): the model is again the architecture it was loaded as, with the adapted weights."""
    for name, layer in all_lora_layers(model).items():
        layer.merge()  # the active adapter's update; layers it does not touch (or disabled) stay as they are
        set_submodule(model, name, layer.base_layer)
    for attribute in ("lora_config", "lora_target_names", "lora_adapters", "active_adapter"):
        if hasattr(model, attribute):
            delattr(model, attribute)
    return model


def lora_state_dict(model: nn.Module) -> dict:
    """The parameters that LoRA training changes: every trainable tensor plus all lora_A / lora_B, by name."""
    return {
        name: param.detach()
        for name, param in model.named_parameters()
        if param.requires_grad or name.endswith(("lora_A", "lora_B"))
    }


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared (tied) tensors count once; a quantized weight (stored as
    buffers) counts as the parameters it stands for, unless it copies a matrix counted elsewhere (`tied`)."""
    trainable = 0
    total = sum(
        getattr(module, "quantized_numel", 0)
        for module in model.modules()
        if not getattr(module, "tied", False)
    )
    for param in model.parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total

"""Adapter folders in the peft library's LoRA layout, so peft and loralab can load each other's adapters.

    adapter_config.json          peft's LoraConfig fields (peft_type "LORA", r, lora_alpha, target_modules, ...)
    adapter_model.safetensors    base_model.model.<module>.lora_A.weight (r×d_in), ...lora_B.weight (d_out×r),
                                 base_model.model.<module>.lora_magnitude_vector (DoRA's m, d_out),
                                 base_model.model.<module>.bias (trained biases),
                                 base_model.model.<module>.<param> (modules_to_save)
    loralab.json                 loralab's own LoRAConfig (peft ignores this file)

A fused-qkv subset (qkv_parts) is stored the way peft can read it: A = [A_q; A_v], B = the d_out×2r block
matrix, with rank_pattern / alpha_pattern so that peft's alpha'/r' equals our alpha/r. Tensors only; no pickle.
This module is the only reader and writer of these files; each LoRA layer's part is its active adapter's.

An adapter whose init (pissa, olora) changed the frozen weights is saved as the ordinary LoRA of rank 2r with
the same ΔW against the original weights (lora/init.py), its config so (loralab.json keeps the one it was
trained with as "converted_from"): peft and loralab load it onto the original base model; loading it back into
the residual model it was trained in (restore) takes A and B out of it again.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from loralab.errors import UserError
from loralab.files import read_json_object, read_tensors, write_atomically, write_text_atomically
from loralab.lora.config import LoRAConfig
from loralab.lora.init import converted_config, converted_factors, is_residual, trained_A, trained_B
from loralab.lora.inject import linear_module_names, lora_layers

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LORALAB_FILE = "loralab.json"
PREFIX = "base_model.model."
MAGNITUDE = "lora_magnitude_vector"


def _peft_target_modules(model: nn.Module, adapted: list[str]) -> list[str] | str:
    """The adapted set as peft will match it: leaf names when they select exactly that set, else a regex."""
    leaves = sorted({name.rsplit(".", 1)[-1] for name in adapted})
    selected = [n for n in linear_module_names(model) if n.rsplit(".", 1)[-1] in leaves]
    if sorted(selected) == sorted(adapted):
        return leaves
    return "^(" + "|".join(re.escape(n) for n in adapted) + ")$"


def _task_type(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    if getattr(config, "is_encoder_decoder", False):
        return "SEQ_2_SEQ_LM"
    if type(model).__name__.endswith("ForCausalLM") or type(model).__name__.endswith("LMHeadModel"):
        return "CAUSAL_LM"
    return None


def _is_converted(model: nn.Module) -> bool:
    """True when the active adapter changed the frozen weights (pissa, olora) and is saved converted."""
    return any(is_residual(layer.adapter) for _, layer in lora_layers(model))


def saved_config(model: nn.Module) -> LoRAConfig:
    """The LoRAConfig that the adapter's files describe (converted for pissa / olora)."""
    return converted_config(model.lora_config) if _is_converted(model) else model.lora_config


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors under peft's key names (contiguous CPU copies)."""
    config: LoRAConfig = model.lora_config
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(model):
        update = layer.adapter
        A, B = converted_factors(update) if is_residual(update) else (update.lora_A, update.full_B())
        tensors[f"{PREFIX}{name}.lora_A.weight"] = A.detach()
        tensors[f"{PREFIX}{name}.lora_B.weight"] = B.detach()
        if update.use_dora:
            tensors[f"{PREFIX}{name}.{MAGNITUDE}"] = update.lora_magnitude_vector.detach()
    if config.bias != "none":  # peft's names: a LoRA layer's own bias stays under base_layer
        for name, param in model.named_parameters():
            if name.endswith("bias") and param.requires_grad:
                tensors[PREFIX + name] = param.detach()
    for target in config.modules_to_save:
        for module_name, module in model.named_modules():
            if module_name == target or module_name.endswith("." + target):
                for param_name, param in module.named_parameters():
                    tensors[f"{PREFIX}{module_name}.{param_name}"] = param.detach()
    return {key: value.to("cpu").contiguous().clone() for key, value in tensors.items()}


def peft_config_dict(model: nn.Module, base_model_name: str | None = None) -> dict:
    """adapter_config.json contents in peft's LoraConfig vocabulary."""
    config = saved_config(model)
    rank_pattern, alpha_pattern = {}, {}
    for name, layer in lora_layers(model):
        if layer.adapter.parts:
            k = len(layer.adapter.parts)
            rank_pattern[name] = k * config.r
            # peft scales by alpha'/r' (or alpha'/sqrt(r')); pick alpha' so the scale equals ours.
            alpha_pattern[name] = config.alpha * (k**0.5 if config.use_rslora else k)
    fan_in_fan_out = any(layer.fan_in_fan_out for _, layer in lora_layers(model))
    return {
        "peft_type": "LORA",
        "task_type": _task_type(model),
        "base_model_name_or_path": base_model_name,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": _peft_target_modules(model, list(model.lora_target_names)),
        "bias": config.bias,
        "use_rslora": config.use_rslora,
        "modules_to_save": list(config.modules_to_save) or None,
        "init_lora_weights": "gaussian" if config.init == "gaussian" else True,
        "fan_in_fan_out": fan_in_fan_out,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "inference_mode": True,
        "use_dora": config.use_dora,
    }


def save_adapter(model: nn.Module, directory: str | os.PathLike, base_model_name: str | None = None) -> Path:
    """Write the adapter folder (each file written to a temp name, then renamed into place)."""
    if getattr(model, "lora_config", None) is None:
        raise UserError("the model has no LoRA layers to save; call apply_lora first")
    ours = {"lora_config": saved_config(model).to_dict()}
    if _is_converted(model):
        ours["converted_from"] = model.lora_config.to_dict()
    peft = peft_config_dict(model, base_model_name)
    return write_adapter_files(directory, adapter_tensors(model), peft, ours)


def write_adapter_files(
    directory: str | os.PathLike, tensors: dict[str, torch.Tensor], peft_config: dict, ours: dict
) -> Path:
    """The files of an adapter folder: peft's weights and adapter_config.json, and loralab's own record."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / WEIGHTS_FILE, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    write_text_atomically(directory / CONFIG_FILE, json.dumps(peft_config, indent=2))
    write_text_atomically(directory / LORALAB_FILE, json.dumps(ours, indent=2))
    return directory


def _read_json(path: Path) -> dict:
    """A JSON object from an adapter file; UserError if it is unreadable or not an object."""
    return read_json_object(path, "valid JSON", "save the adapter again (loralab train)")


def read_adapter_config(directory: str | os.PathLike) -> LoRAConfig:
    """The LoRAConfig of an adapter folder, from loralab.json or else from peft's adapter_config.json."""
    directory = Path(directory)
    ours = directory / LORALAB_FILE
    if ours.is_file():
        try:
            return LoRAConfig(**_read_json(ours)["lora_config"])
        except (KeyError, TypeError) as exc:
            raise UserError(
                f"{ours} is not a loralab adapter config ({type(exc).__name__}: {exc}); "
                "save the adapter again (loralab train)"
            ) from None
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise UserError(
            f"{directory} is not an adapter folder (no {CONFIG_FILE}); pass the folder save_adapter wrote"
        )
    peft = _read_json(path)
    try:
        return _from_peft_config(path, peft)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(
            f"{path} is not a LoRA adapter config ({type(exc).__name__}: {exc}); save the adapter again"
        ) from None


def _from_peft_config(path: Path, peft: dict) -> LoRAConfig:
    """LoRAConfig from peft's adapter_config.json fields."""
    if peft.get("peft_type", "LORA") != "LORA":
        raise UserError(f"{path} holds a {peft.get('peft_type')} adapter; loralab loads LoRA adapters only")
    if peft.get("rank_pattern") or peft.get("alpha_pattern"):
        raise UserError(
            f"{path} uses per-module ranks (rank_pattern); loralab needs one rank for all modules"
        )
    init = peft.get("init_lora_weights", True)
    if isinstance(init, str) and init.startswith(("pissa", "olora", "corda")):
        raise UserError(
            f"{path} was saved with init_lora_weights = {init}: its weights fit peft's residual model, not the "
            "base model; save it with peft's path_initial_model_for_weight_conversion (an ordinary LoRA)"
        )
    return LoRAConfig(
        r=int(peft["r"]),
        alpha=float(peft["lora_alpha"]),
        dropout=float(peft.get("lora_dropout") or 0.0),
        target_modules=peft["target_modules"],
        bias=peft.get("bias", "none"),
        init="gaussian" if init == "gaussian" else "kaiming",
        use_rslora=bool(peft.get("use_rslora", False)),
        use_dora=bool(peft.get("use_dora", False)),
        modules_to_save=tuple(peft.get("modules_to_save") or ()),
    )


def load_adapter_weights(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Copy an adapter folder's tensors into a model that already has the same LoRA layers."""
    directory = Path(directory)
    saved = read_tensors(directory / WEIGHTS_FILE, "save the adapter again (save_adapter or loralab train)")
    expected = adapter_tensors(model)
    missing = sorted(set(expected) - set(saved))
    if missing:
        unknown = sorted(set(saved) - set(expected))
        other = f", and holds {len(unknown)} this model lacks (first: {unknown[0]})" if unknown else ""
        raise UserError(
            f"adapter {directory} lacks {len(missing)} tensors this model needs (first: {missing[0]})"
            f"{other}; load it onto the base model it was trained on"
        )
    layers = dict(lora_layers(model))
    with torch.no_grad():
        for key in expected:
            value = saved[key]
            if value.shape != expected[key].shape:
                raise UserError(
                    f"adapter tensor {key} has shape {tuple(value.shape)} but the model needs "
                    f"{tuple(expected[key].shape)}: its config and weights disagree, or it was trained on another "
                    "base model; load it onto that model, or save the adapter again"
                )
            _load_tensor(model, key[len(PREFIX) :], value, layers)
    return model


def _load_tensor(model: nn.Module, name: str, value: torch.Tensor, layers: dict) -> None:
    module_name, _, leaf = name.rpartition(".")
    if leaf == "weight" and module_name.endswith((".lora_A", ".lora_B")):
        layer_name, _, which = module_name.rpartition(".")
        update = layers[layer_name].adapter
        residual = is_residual(update)  # the converted adapter of a pissa / olora model: A and B out of it
        if which == "lora_A":
            update.lora_A.copy_(trained_A(update, value) if residual else value)
        else:
            update.lora_B.copy_(trained_B(update, value) if residual else update.compact_B(value))
    elif leaf == MAGNITUDE and module_name in layers:
        layers[module_name].adapter.lora_magnitude_vector.copy_(value)
    else:
        model.get_parameter(name).copy_(value)

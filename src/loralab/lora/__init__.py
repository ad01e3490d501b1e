"""LoRA from scratch: the layer, its injection into models, named adapters, and PEFT-compatible adapter files.

Owns: config (LoRAConfig), fused (autograd functions for a LoRA layer's forward and backward: W + s·B·A in one
product, or LoRA beside a low-precision base), update / dora / qkv (one adapter's update in one layer: plain
LoRA, DoRA, row blocks of a fused q,k,v projection), init
(A and B from the weight: PiSSA, OLoRA, LoftQ), layer (LoRALinear, which holds a layer's adapters), inject
(targets, apply / merge / unload), io (peft's adapter files: their only reader and writer), adapters (loading
adapters, several side by side), nf4 (QLoRA's 4-bit weights).

May import loralab.errors and loralab.files (and torch, transformers, safetensors). Inside, modules import
downward in the order above (config, fused, update, dora / qkv, nf4, init, layer, inject, io, adapters), never
through this package, so there is no import cycle.
"""

from __future__ import annotations

import importlib

# Where each public name lives. They are imported on first use (PEP 562), so that `import loralab.lora.config`
# (a RunConfig builds a LoRAConfig) and with it `loralab --help` load no torch.
_HOMES = {
    "LoRAConfig": "config",
    "LoRALinear": "layer",
    "apply_lora": "inject",
    "count_parameters": "inject",
    "find_target_modules": "inject",
    "linear_module_names": "inject",
    "load_adapter": "adapters",
    "load_adapter_weights": "io",
    "lora_layers": "inject",
    "lora_state_dict": "inject",
    "mark_only_lora_as_trainable": "inject",
    "merge_lora": "inject",
    "read_adapter_config": "io",
    "save_adapter": "io",
    "set_auto_merge": "inject",
    "unload_lora": "inject",
    "unmerge_lora": "inject",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})

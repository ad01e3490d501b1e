"""LoRA from scratch: the layer, its injection into models, named adapters, and PEFT-compatible adapter files.

Owns: config (LoRAConfig), fused (one autograd function for a LoRA layer's forward and backward), update /
dora / qkv (one adapter's update in one layer: plain LoRA, DoRA, row blocks of a fused q,k,v projection), layer
(LoRALinear, which holds a layer's adapters), inject (targets, apply / merge / unload), io (peft's adapter files:
their only reader and writer), adapters (loading adapters, several side by side), nf4 (QLoRA's 4-bit weights).

May import loralab.errors and loralab.files (and torch, transformers, safetensors). Inside, modules import
downward in the order above (config, fused, update, dora / qkv, layer, inject, io, adapters), never through
this package, so there is no import cycle.
"""

from loralab.lora.adapters import load_adapter
from loralab.lora.config import LoRAConfig
from loralab.lora.inject import (
    apply_lora,
    count_parameters,
    find_target_modules,
    linear_module_names,
    lora_layers,
    lora_state_dict,
    mark_only_lora_as_trainable,
    merge_lora,
    set_auto_merge,
    unload_lora,
    unmerge_lora,
)
from loralab.lora.io import load_adapter_weights, read_adapter_config, save_adapter
from loralab.lora.layer import LoRALinear

__all__ = [
    "LoRAConfig",
    "LoRALinear",
    "apply_lora",
    "count_parameters",
    "find_target_modules",
    "linear_module_names",
    "load_adapter",
    "load_adapter_weights",
    "lora_layers",
    "lora_state_dict",
    "mark_only_lora_as_trainable",
    "merge_lora",
    "read_adapter_config",
    "save_adapter",
    "set_auto_merge",
    "unload_lora",
    "unmerge_lora",
]

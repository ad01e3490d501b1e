"""LoRA from scratch: the layer, its injection into models, and PEFT-compatible adapter files."""

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
from loralab.lora.io import load_adapter, load_adapter_weights, read_adapter_config, save_adapter
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

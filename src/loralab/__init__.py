"""loralab: fine-tune language models with a from-scratch LoRA and compare adaptation methods honestly."""

from loralab.lora import (
    LoRAConfig,
    LoRALinear,
    apply_lora,
    count_parameters,
    load_adapter,
    lora_state_dict,
    mark_only_lora_as_trainable,
    merge_lora,
    save_adapter,
    unload_lora,
    unmerge_lora,
)

__version__ = "0.1.0"

__all__ = [
    "LoRAConfig",
    "LoRALinear",
    "apply_lora",
    "count_parameters",
    "load_adapter",
    "lora_state_dict",
    "mark_only_lora_as_trainable",
    "merge_lora",
    "save_adapter",
    "unload_lora",
    "unmerge_lora",
]

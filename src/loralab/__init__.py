"""loralab: fine-tune language models with a from-scratch LoRA and compare adaptation methods honestly.

The names below come from loralab.lora, imported on first use (PEP 562) so that `loralab --help` and a bad
config are answered without loading torch.
"""

from __future__ import annotations

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


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from loralab import lora  # here, not at the top: see the docstring

    value = getattr(lora, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

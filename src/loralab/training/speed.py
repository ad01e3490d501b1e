"""Opt-in speed and memory options of a training run: gradient checkpointing, torch.compile, bf16 autocast.

Each trades one cost for another, so none is on by default; BENCHMARKS.md has what each did on the CPU the
figures come from.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch
from transformers import PreTrainedModel

from loralab.config import RunConfig
from loralab.errors import UserError
from loralab.precision.choose import native_units


def apply_speed_options(model: torch.nn.Module, config: RunConfig) -> list[str]:
    """Switch on what `config` asks for (in place); return one line per option for the log."""
    notes = []
    if config.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise UserError(
                "this model does not support gradient checkpointing; set gradient_checkpointing = false"
            )
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        notes.append("gradient checkpointing: activations recomputed block by block in backward")
    if config.compile:
        if not isinstance(model, PreTrainedModel):
            raise UserError(
                f"compile works on a plain transformers model, not method {config.method}; "
                "set compile = false"
            )
        notes.append(
            "torch.compile: the training loss pass is compiled at its first batches (this takes minutes)"
        )
    if config.autocast == "bf16":
        if not bf16_is_native(next(model.parameters()).device):
            warnings.warn(
                "autocast = bf16 on a CPU without bf16 units (AMX or AVX512-BF16): expect it to be slower than fp32",
                stacklevel=2,
            )
        notes.append("autocast: matrix products in bfloat16, weights and optimizer state in fp32")
    return notes


def bf16_is_native(device: torch.device) -> bool:
    """True on a CUDA device with bf16 support or a CPU whose vector units include bf16 (AMX, AVX512-BF16)."""
    return bool(native_units("bf16", device))


def autocast_context(config: RunConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The context the forward and backward run in: bf16 autocast when asked, else nothing."""
    if config.autocast == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compiled_loss(loss_sum: Callable, config: RunConfig) -> Callable:
    """The training loss function, compiled by torch.compile when `config.compile` (shapes marked dynamic, so
    batches of other lengths reuse the graph). Only training passes use it: validation and generation stay
    eager, where a compiled model would recompile for every cache length."""
    return torch.compile(loss_sum, dynamic=True) if config.compile else loss_sum

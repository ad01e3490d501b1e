"""The number format the frozen base weights are stored and multiplied in (config `base_precision`).

Owns: frozen (what the low-precision layers share), bf16 (Bf16Linear), int8 (Int8Linear: int8 products with a
Hadamard rotation, forward and input gradient), nf4_products (QLoRA's NF4 layers multiplying in bf16 / int8),
choose ("auto": CPU flags and a probe), convert (swapping a model's frozen linear layers). LoRA's A and B,
trained weights and the optimizer state stay fp32.

May import loralab.errors and loralab.lora (and torch, transformers). Inside, modules import downward in the
order above (frozen, bf16 / int8, nf4_products, choose, convert).
"""

from __future__ import annotations

import torch
from torch import nn

from loralab.precision.choose import PRECISIONS, choose_precision
from loralab.precision.convert import convert_base, low_precision_layers

__all__ = ["PRECISIONS", "apply_base_precision", "choose_precision", "convert_base", "low_precision_layers"]


def apply_base_precision(model: nn.Module, precision: str, device: torch.device) -> str | None:
    """Convert the model's frozen linear layers to `precision` (not "auto": choose first); a line for the
    log saying what was converted, or None for fp32."""
    if precision == "fp32":
        return None
    converted, kept, head = convert_base(model, precision, device)
    if not converted and not head:
        return f"base_precision {precision}: no frozen linear layer to convert (this method trains them all)"
    note = f"base_precision {precision}: {converted} frozen linear layers compute in {precision}"
    if head:
        note += f", the LM head in {head}"
    if kept:
        note += f"; {kept} stay fp32 (int8 on {device.type} needs their sizes in multiples of 8)"
    return note

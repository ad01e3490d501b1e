"""QLoRA's NF4 base (loralab.lora.nf4) with its products in bf16 or int8: the 4-bit codes stay what is stored;
each forward and backward dequantizes the weight and multiplies in the chosen format, so nothing but the codes
outlives a call (the memory QLoRA is for)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from loralab.lora.nf4 import NF4Linear
from loralab.precision.int8 import (
    input_grad_codes,
    int8_input_grad,
    int8_linear,
    rotation_block,
    weight_codes,
)


class _Bf16FromNF4(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: NF4Linear) -> torch.Tensor:
        ctx.layer = layer
        return F.linear(x.to(torch.bfloat16), layer.dequantized(torch.bfloat16)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None
        return (grad.to(torch.bfloat16) @ ctx.layer.dequantized(torch.bfloat16)).to(grad.dtype), None


class _Int8FromNF4(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: NF4Linear) -> torch.Tensor:
        ctx.layer = layer
        block = rotation_block(layer.in_features)
        return int8_linear(x, *weight_codes(layer.dequantized(torch.float32), block), block)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None
        return int8_input_grad(grad, *input_grad_codes(ctx.layer.dequantized(torch.float32))), None


PRODUCTS = {"bf16": _Bf16FromNF4.apply, "int8": _Int8FromNF4.apply}


def set_nf4_products(model: torch.nn.Module, precision: str) -> int:
    """Make every NF4Linear of the model multiply in `precision` ("bf16" or "int8"); returns how many."""
    layers = [module for module in model.modules() if isinstance(module, NF4Linear)]
    for layer in layers:
        layer.matmul = PRODUCTS[precision]
        layer.grid = f"NF4 ({precision} products)"
    return len(layers)

"""What the low-precision base layers share: built from a frozen nn.Linear or GPT-2 Conv1D, keeping its bias
in full precision, and showing `weight` in the wrapped layer's own layout (Conv1D: d_in × d_out), so that LoRA,
DoRA and the inits read and write it as they would the original layer's.

A subclass gives its two products without autograd, `product(x)` = x·Wᵀ and `input_grad(g)` = g·W (each
returning a fresh tensor); `forward` joins them into one autograd function, and LoRA runs beside them in one
function of its own (loralab.lora.fused.lora_beside_frozen)."""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from loralab.lora.layer import linear_shape


class _FrozenMatmul(torch.autograd.Function):
    """y = x·Wᵀ through the layer's `product`, the input gradient through its `input_grad`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: FrozenLinear) -> torch.Tensor:
        ctx.layer = layer
        return layer.product(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (ctx.layer.input_grad(grad) if ctx.needs_input_grad[0] else None), None


class FrozenLinear(nn.Module):
    """Base class: subclasses store a d_out × d_in weight (`_store`), give it back (`dequantized`) and multiply
    with it (`product`, `input_grad`).

    `quantized` tells LoRALinear not to merge LoRA into it in evaluation (that would round ΔW to the layer's
    grid, named by `grid`): the update runs beside it instead."""

    quantized = True
    grid = ""
    tied = False  # a copy of a matrix the model also holds elsewhere (a tied LM head): not counted again

    def __init__(self, linear: nn.Linear | Conv1D) -> None:
        super().__init__()
        self.conv1d = isinstance(linear, Conv1D)  # Conv1D stores d_in × d_out and computes x·W + b
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear_shape(linear)
        self.compute_dtype = weight.dtype
        self.bias = linear.bias
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.set_weight(weight)

    def _store(self, weight: torch.Tensor) -> None:
        raise NotImplementedError

    def dequantized(self) -> torch.Tensor:
        """The stored weight as d_out × d_in in the model's dtype (a fresh tensor)."""
        raise NotImplementedError

    def product(self, x: torch.Tensor) -> torch.Tensor:
        """x·Wᵀ (no bias, no autograd), a fresh tensor in x's dtype."""
        raise NotImplementedError

    def input_grad(self, grad: torch.Tensor) -> torch.Tensor:
        """grad·W (no autograd), a fresh tensor in grad's dtype."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add_bias(_FrozenMatmul.apply(x, self))

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor) -> None:
        """Store `weight` (in the wrapped layer's layout), rounded to this layer's grid."""
        self._store((weight.T if self.conv1d else weight).detach())

    @property
    def weight(self) -> torch.Tensor:
        """The weight in the wrapped layer's layout (a fresh tensor: writing to it does not change the layer)."""
        weight = self.dequantized()
        return weight.T if self.conv1d else weight

    def add_bias(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def to_linear(self) -> nn.Module:
        """The wrapped layer's type again (nn.Linear or Conv1D), holding the dequantized weight."""
        weight = self.weight
        if self.conv1d:
            layer = Conv1D(self.out_features, self.in_features)
        else:
            layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        layer.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(weight)
            if self.bias is not None:
                layer.bias.copy_(self.bias)
        return layer.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.grid}"

"""A frozen linear layer stored and multiplied in bfloat16, in a model whose activations stay fp32.

    y = bf16(x)·W_bf16ᵀ (accumulated in fp32 by the kernel, rounded to bf16) → fp32, + b in fp32

bf16 keeps fp32's exponent range with an 8-bit significand (Kalamkar et al. 2019), so inputs need no scaling;
each product's result carries a relative rounding error of at most 2⁻⁹. Norms, softmax, attention and the
LoRA path stay in fp32. The input gradient is the same product in bf16: bf16(g)·W_bf16 → fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from loralab.precision.frozen import FrozenLinear


class Bf16Linear(FrozenLinear):
    """A frozen nn.Linear (or GPT-2 Conv1D) holding its weight in bf16; the bias stays in full precision."""

    grid = "bf16"

    def _store(self, weight: torch.Tensor) -> None:
        self.register_buffer("weight_bf16", weight.to(torch.bfloat16).contiguous())

    @property
    def quantized_numel(self) -> int:
        return self.weight_bf16.numel()

    def dequantized(self) -> torch.Tensor:
        return self.weight_bf16.to(self.compute_dtype)

    def product(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight_bf16).to(x.dtype)

    def input_grad(self, grad: torch.Tensor) -> torch.Tensor:
        return (grad.to(torch.bfloat16) @ self.weight_bf16).to(grad.dtype)

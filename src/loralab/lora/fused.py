"""Autograd functions for a LoRA layer's forward and backward (no dropout), one per kind of frozen base.

fused_lora_linear: an unquantized base of the same dtype as LoRA (nn.Linear, GPT-2's Conv1D).

    forward   y  = x·(W + s·B·A)ᵀ + b              one matrix product with the adapted weight
    backward  gx = g·(W + s·B·A)                   one matrix product again
              gA = s·(g·B)ᵀ·x,  gB = s·gᵀ·(x·Aᵀ)   two thin products through the rank-r bottleneck

Compared with running the base layer and the two small linears separately (what autograd would record), the
input x, A and B are the only tensors kept for backward (no x·Aᵀ, no scaled copy, no second input-gradient
that is then added), and the d_in × d_out product W + s·B·A costs 2·r·d_in·d_out flops, less than the
low-rank path's 2·r·n·(d_in + d_out) once the batch has more tokens n than about d/2.

lora_beside_frozen: a base that multiplies in its own number format (int8, bf16: loralab.precision), where ΔW
cannot join W. It offers `product(x)` = x·Wᵀ and `input_grad(g)` = g·W without autograd; LoRA runs beside it:

    forward   y  = product(x) + b + s·(x·Aᵀ)·Bᵀ
    backward  gx = input_grad(g) + s·(g·B)·A,   gA and gB as above

with x·Aᵀ kept from the forward pass. Every thin product has the rank r as a row count and adds into its
result in place; on CPU that runs 2-4x faster than the layouts autograd picks for two nn.Linear calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _FusedLoRA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, A, B, scaling):  # noqa: D102 - documented in the module
        adapted = torch.addmm(weight, B, A, alpha=scaling)
        ctx.save_for_backward(x, weight, A, B)
        ctx.scaling = scaling
        ctx.has_bias = bias is not None
        return F.linear(x, adapted, bias)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, weight, A, B = ctx.saved_tensors
        s = ctx.scaling
        g = grad.reshape(-1, grad.shape[-1])
        x2 = x.reshape(-1, x.shape[-1])
        grad_x = grad_bias = grad_A = grad_B = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ torch.addmm(weight, B, A, alpha=s)).view(x.shape)
        if ctx.needs_input_grad[2] and ctx.has_bias:
            grad_bias = g.sum(dim=0)
        # The thin products are formed with the rank r as their row count (r × n, r × d): on CPU that layout
        # runs about twice as fast as n × r or d × r results.
        if ctx.needs_input_grad[3]:
            grad_A = (B.T @ g.T) @ x2  # (gB)ᵀ·x
            grad_A.mul_(s)
        if ctx.needs_input_grad[4]:
            grad_B = ((A @ x2.T) @ g).T  # ((xAᵀ)ᵀ·g)ᵀ = gᵀ·xAᵀ
            grad_B.mul_(s)
        return grad_x, None, grad_bias, grad_A, grad_B, None


class _LoRABeside(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, base, A, B, scaling):  # noqa: D102 - documented in the module
        x2 = x.reshape(-1, x.shape[-1])
        low_t = A @ x2.T  # (x·Aᵀ)ᵀ: r × n
        y = base.product(x)  # a fresh tensor
        y2 = y.view(-1, y.shape[-1])
        y2.addmm_(low_t.T, B.T, alpha=scaling)
        bias = getattr(base, "bias", None)
        if bias is not None:
            y2.add_(bias.to(y.dtype))
        ctx.save_for_backward(x, A, B, low_t)
        ctx.base, ctx.scaling = base, scaling
        return y

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, A, B, low_t = ctx.saved_tensors
        s = ctx.scaling
        g = grad.reshape(-1, grad.shape[-1])
        g_b = B.T @ g.T  # (g·B)ᵀ: r × n
        grad_x = grad_A = grad_B = None
        if ctx.needs_input_grad[0]:
            grad_x = ctx.base.input_grad(grad)  # a fresh tensor
            grad_x.view(-1, grad_x.shape[-1]).addmm_(g_b.T, A, alpha=s)
        if ctx.needs_input_grad[2]:
            grad_A = (g_b @ x.reshape(-1, x.shape[-1])).mul_(s)
        if ctx.needs_input_grad[3]:
            grad_B = (low_t @ g).T.mul_(s)
        return grad_x, None, grad_A, grad_B, None


def lora_beside_frozen(
    x: torch.Tensor, base: torch.nn.Module, A: torch.Tensor, B: torch.Tensor, scaling: float
) -> torch.Tensor:
    """base(x) + scaling·x·Aᵀ·Bᵀ for a frozen base offering `product` and `input_grad` (module docstring)."""
    return _LoRABeside.apply(x, base, A, B, scaling)


def fused_lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    A: torch.Tensor,
    B: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """x·(W + scaling·B·A)ᵀ + bias with W (d_out × d_in) frozen; gradients for x, bias, A and B."""
    if weight.requires_grad:
        raise ValueError("fused_lora_linear needs a frozen base weight")
    return _FusedLoRA.apply(x, weight, bias, A, B, scaling)

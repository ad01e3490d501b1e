"""A leaner gated MLP for training: SiLU(gate) · up as one autograd function that keeps only gate and up.

Llama-family MLPs compute down(SiLU(gate(x)) · up(x)). Run as two autograd steps, backward keeps three
tensors of batch × tokens × intermediate size per block: gate (for SiLU), SiLU(gate) and up (for the
product). The function below keeps gate and up and recomputes the sigmoid in backward:

    y = g·σ(g)·u      ∂y/∂u = g·σ(g)      ∂y/∂g = u·σ(g)·(1 + g·(1 − σ(g)))

which saves a third of the MLP's activations (on SmolLM2-135M with 8 × 128 tokens, 180 MB) for one SiLU
more per block in backward (four passes over the tensor instead of three). The result is the same up to
float rounding.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

SILU_CLASSES = ("SiLU", "SiLUActivation")


class _SiLUMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):  # noqa: D102 - see the module
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        gate, up = ctx.saved_tensors
        # aten's silu_backward computes grad·σ(g)·(1 + g·(1 − σ(g))) in one pass over the tensor.
        grad_gate = torch.ops.aten.silu_backward(grad * up, gate) if ctx.needs_input_grad[0] else None
        grad_up = F.silu(gate).mul_(grad) if ctx.needs_input_grad[1] else None
        return grad_gate, grad_up


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) · up, keeping only gate and up for backward."""
    return _SiLUMul.apply(gate, up)


def _lean_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(silu_mul(self.gate_proj(x), self.up_proj(x)))


def use_lean_swiglu(model: nn.Module) -> int:
    """Give every gated SiLU MLP of the model (gate_proj, up_proj, down_proj, act_fn SiLU) the lean forward;
    returns how many blocks changed. Other MLPs (GELU-gated Gemma, GPT-2) are left as they are."""
    changed = 0
    for module in model.modules():
        parts = ("gate_proj", "up_proj", "down_proj", "act_fn")
        if all(hasattr(module, p) for p in parts) and type(module.act_fn).__name__ in SILU_CLASSES:
            module.forward = types.MethodType(_lean_forward, module)
            changed += 1
    return changed

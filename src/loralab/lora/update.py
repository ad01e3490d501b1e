"""One adapter's low-rank update inside one layer (Hu et al. 2021, eq. 3):

    h = W0·x + scaling·B·A·dropout(x)        A: r×d_in (random), B: d_out×r (zero), so ΔW = 0 at start

scaling is alpha/r, or alpha/√r with rsLoRA. A LoRALinear (layer.py) holds one LoRAUpdate per adapter, keyed by
the adapter's name; DoRA (dora.py) and the row blocks of a fused q,k,v projection (qkv.py) are subclasses that
change the math or the layout of B, so this class is plain LoRA only. A, B and ΔW are kept in d_out × d_in
terms; `layer.out_in` turns ΔW into the base weight's own layout (transposed for GPT-2's Conv1D).

An update without dropout runs forward and backward as one autograd function (fused.py): with W + s·B·A in
one product once the batch has enough tokens to pay for forming it, or beside a low-precision base
(loralab.precision) that offers its products without autograd.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from loralab.lora.config import LoRAConfig
from loralab.lora.fused import fused_lora_linear, lora_beside_frozen

if TYPE_CHECKING:
    from loralab.lora.layer import LoRALinear


class LoRAUpdate(nn.Module):
    """scaling·B·A for one layer. `n_blocks` > 1 stacks that many A_i (qkv.PartsUpdate); `rows` is B's height:
    d_out here, the adapted rows there."""

    use_dora = False
    parts: list[tuple[int, int]] | None = None

    def __init__(
        self, layer: LoRALinear, config: LoRAConfig, rows: int | None = None, n_blocks: int = 1
    ) -> None:
        super().__init__()
        self.r, self.alpha = config.r, config.alpha
        self.scaling = config.alpha / (math.sqrt(config.r) if config.use_rslora else config.r)
        like = layer.base_layer.weight
        rows = layer.d_out if rows is None else rows
        self.lora_A = nn.Parameter(
            torch.empty(n_blocks * config.r, layer.d_in, dtype=like.dtype, device=like.device)
        )
        self.lora_B = nn.Parameter(torch.zeros(rows, config.r, dtype=like.dtype, device=like.device))
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.reset_parameters(config.init)

    def reset_parameters(self, init: str = "kaiming") -> None:
        """A random, B = 0 (so the adapted layer starts equal to its base layer). The inits taken from the weight
        (pissa, olora, loftq) start as kaiming here; init.py then sets A and B (layer.add_adapter; loftq: when
        methods/qlora.py quantizes the base)."""
        if init in ("kaiming", "pissa", "olora", "loftq"):
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        elif init == "gaussian":
            nn.init.normal_(self.lora_A, std=1.0 / self.r)
        else:
            raise ValueError(f"unknown init {init!r}")
        nn.init.zeros_(self.lora_B)

    def full_B(self, B: torch.Tensor | None = None) -> torch.Tensor:
        """B (or `B`) as the d_out-row matrix with full_B·A = ΔW/scaling: B itself here (qkv.py: block matrix)."""
        return self.lora_B if B is None else B

    def compact_B(self, full: torch.Tensor) -> torch.Tensor:
        """The inverse of full_B (adapter files store the full matrix)."""
        return full

    def delta_weight(
        self, layer: LoRALinear, A: torch.Tensor | None = None, B: torch.Tensor | None = None
    ) -> torch.Tensor:
        """scaling·B·A in the layout of the layer's base weight; A, B default to this update's."""
        A = self.lora_A if A is None else A
        return layer.out_in((self.full_B(B) @ A) * self.scaling)

    def forward(self, layer: LoRALinear, x: torch.Tensor) -> torch.Tensor:
        """The layer's output with this update: W0·x + b + scaling·B·A·dropout(x)."""
        A, B, base = self._parameters["lora_A"], self.full_B(), layer._modules["base_layer"]
        if self.fusable(layer, x):
            weight = base.weight
            return fused_lora_linear(
                x, weight.T if layer.fan_in_fan_out else weight, base.bias, A, B, self.scaling
            )
        if self.beside_frozen(base, x):
            return lora_beside_frozen(x, base, A, B, self.scaling)
        result = base(x)
        lora_in = x if self._no_dropout() and x.dtype == A.dtype else self.dropout(x.to(A.dtype))
        if result.dtype != A.dtype:
            return result + (F.linear(F.linear(lora_in, A), B) * self.scaling).to(result.dtype)
        low = F.linear(lora_in, A).reshape(-1, A.shape[0])  # result + s·(x·Aᵀ)·Bᵀ in one addmm
        flat = result.reshape(-1, result.shape[-1])
        addmm = torch.addmm if torch.is_grad_enabled() else torch.Tensor.addmm_
        return addmm(flat, low, B.T, alpha=self.scaling).view(result.shape)

    def _no_dropout(self) -> bool:
        return not self.training or type(self._modules["dropout"]) is nn.Identity

    def fusable(self, layer: LoRALinear, x: torch.Tensor) -> bool:
        """True when fused.py's single autograd function computes exactly this (no dropout to apply, a frozen
        unquantized base of the same dtype, no autocast) and pays: x has enough tokens n that forming W + s·B·A
        (r·d_in·d_out) costs less than the thin path (n·r·(d_in + d_out)); one-token decoding steps take the
        thin path."""
        tokens = x.numel() // max(x.shape[-1], 1)
        d_in, d_out = layer.d_in, layer.d_out
        if tokens * (d_in + d_out) < d_in * d_out or not self._no_dropout():
            return False
        base = layer._modules["base_layer"]
        return (
            type(base) in (nn.Linear, Conv1D)
            and not base.weight.requires_grad
            and x.dtype == base.weight.dtype == self._parameters["lora_A"].dtype
            and not torch.is_autocast_enabled(x.device.type)
        )

    def beside_frozen(self, base: nn.Module, x: torch.Tensor) -> bool:
        """True when fused.lora_beside_frozen computes exactly this: a base with its own products (`product`,
        `input_grad`: loralab.precision's int8 / bf16 layers), no dropout, x in LoRA's dtype, no autocast."""
        return (
            hasattr(base, "input_grad")
            and self._no_dropout()
            and x.dtype == self._parameters["lora_A"].dtype
            and not torch.is_autocast_enabled(x.device.type)
        )

    def merge_change(self, layer: LoRALinear) -> tuple[torch.Tensor, tuple]:
        """(what merging adds to the base weight, what unmerge_change needs to take exactly that out again): a
        copy of A and B (small), so that an edit of them while merged does not change what unmerge subtracts."""
        return self.delta_weight(layer), (self.lora_A.detach().clone(), self.lora_B.detach().clone())

    def unmerge_change(self, layer: LoRALinear, saved: tuple) -> torch.Tensor:
        """What un-merging adds to the base weight, given merge_change's `saved`."""
        return -self.delta_weight(layer, *saved)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}"

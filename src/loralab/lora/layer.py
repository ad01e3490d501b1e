"""LoRALinear: a frozen linear layer plus a trainable low-rank update (Hu et al. 2021, eq. 3).

    h = W0·x + (alpha/r)·B·A·dropout(x)        A: r×d_in (random), B: d_out×r (zero), so ΔW = 0 at start

The layer wraps the original module (kept as `base_layer`) and works for `nn.Linear` (weight d_out×d_in) and
transformers' GPT-2 `Conv1D` (weight d_in×d_out, y = x·W + b). For a fused projection such as GPT-2's `c_attn`
(q, k and v in one matrix) it can adapt only some row blocks ("parts"): each part i gets its own A_i, B_i, and
ΔW holds B_i·A_i in the rows of part i and zeros elsewhere.

`merge()` folds scaling·B·A into W0 so evaluation costs nothing extra; `unmerge()` takes it out again.
`eval()` merges and `train()` un-merges (nn.Module.eval() calls train(False), so both go through `train`),
unless `auto_merge` is off (inject.set_auto_merge), which keeps the update separate in evaluation too.

In training, a layer without dropout runs forward and backward as one autograd function (fused.py).

DoRA (Liu et al. 2024, `use_dora`) splits the adapted weight into a direction and a trained magnitude:
W' = m · (W0 + ΔW) / ‖W0 + ΔW‖, the norm taken per output unit and treated as a constant in backward (as the
paper's section 4.3 suggests); m starts at ‖W0‖ so the layer starts equal to the base.

When the base layer is quantized (QLoRA's NF4Linear), eval() does not merge: folding ΔW into a 4-bit weight
rounds it to the 4-bit grid. An explicit merge() still does, with a warning; to merge exactly, replace the
quantized layers by dequantized copies first (loralab.methods.qlora.dequantize_base).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from loralab.lora.fused import fused_lora_linear


def is_linear(module: nn.Module) -> bool:
    """True for the layer types LoRA can wrap."""
    return isinstance(module, nn.Linear | Conv1D)


def full_B(B: torch.Tensor, parts: list[tuple[int, int]] | None, r: int, d_out: int) -> torch.Tensor:
    """B as one d_out × (n_parts·r) matrix: B_i in the rows of part i and columns of A_i, zeros elsewhere.

    Without parts this is just B. With parts, B_full·A equals ΔW of the fused matrix, which is also the
    layout the peft library stores.
    """
    if parts is None:
        return B
    full = B.new_zeros(d_out, len(parts) * r)
    offset = 0
    for i, (start, stop) in enumerate(parts):
        rows = stop - start
        full[start:stop, i * r : (i + 1) * r] = B[offset : offset + rows]
        offset += rows
    return full


@dataclass
class RowAdapters:
    """For a mixed batch (adapters.adapter_per_row): each row's adapter name (None: none) and, per name, the
    (A, B_full, scaling) it has in this layer."""

    names: list[str | None]
    weights: dict[str, tuple[torch.Tensor, torch.Tensor, float]]
    _groups: dict = field(default_factory=dict)

    def groups(self, batch: int, device: torch.device) -> list[tuple[torch.Tensor, tuple]]:
        """(row indices, weights) per adapter for a batch of `batch` rows; generate() with beams repeats
        each row, so a batch may be a multiple of the names given."""
        if batch not in self._groups:
            if batch % len(self.names):
                raise ValueError(
                    f"a batch of {batch} rows does not match the {len(self.names)} adapter names given"
                )
            repeat = batch // len(self.names)
            rows = [name for name in self.names for _ in range(repeat)]
            self._groups[batch] = [
                (torch.tensor([i for i, n in enumerate(rows) if n == name], device=device), weights)
                for name, weights in self.weights.items()
                if name in rows
            ]
        return self._groups[batch]


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(d_in, d_out) of an nn.Linear or a Conv1D."""
    if isinstance(module, Conv1D):
        d_in, d_out = module.weight.shape
    else:
        d_out, d_in = module.weight.shape
    return d_in, d_out


class LoRALinear(nn.Module):
    """A frozen `base_layer` plus scaling·B·A, optionally only on row blocks `parts` of a fused projection.

    parts: None (adapt all d_out rows) or a list of (start, stop) row ranges, one (A_i, B_i) pair each.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        init: str = "kaiming",
        use_rslora: bool = False,
        parts: list[tuple[int, int]] | None = None,
        use_dora: bool = False,
    ) -> None:
        super().__init__()
        if not is_linear(base_layer):
            raise TypeError(f"LoRALinear wraps nn.Linear or Conv1D, not {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.fan_in_fan_out = isinstance(base_layer, Conv1D)
        self.d_in, self.d_out = linear_shape(base_layer)
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / (math.sqrt(r) if use_rslora else r)
        self.parts = [tuple(p) for p in parts] if parts is not None else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        n_parts = len(self.parts) if self.parts else 1
        rows = sum(stop - start for start, stop in self.parts) if self.parts else self.d_out
        weight = base_layer.weight
        # Stacked per part: A = [A_1; A_2; ...] (n_parts·r × d_in), B = [B_1; B_2; ...] (rows × r).
        self.lora_A = nn.Parameter(
            torch.empty(n_parts * r, self.d_in, dtype=weight.dtype, device=weight.device)
        )
        self.lora_B = nn.Parameter(torch.zeros(rows, r, dtype=weight.dtype, device=weight.device))
        self.reset_lora_parameters(init)
        self.use_dora = use_dora
        if use_dora:
            if self.parts is not None:
                raise ValueError("DoRA adapts a whole matrix; it cannot be combined with qkv_parts")
            with torch.no_grad():
                norm = self._out_in(weight.detach()).float().norm(dim=1)
            self.lora_magnitude_vector = nn.Parameter(norm.to(weight.dtype))
        self.merged = False
        self.present = True  # False: the active adapter (adapters.py) does not touch this layer
        self.disabled = False  # True inside adapters.disable_adapters
        self.row_adapters: RowAdapters | None = None  # set inside adapters.adapter_per_row
        self.auto_merge = True  # eval() merges; False keeps the update separate (inject.set_auto_merge)
        self._merged_AB: tuple[torch.Tensor, torch.Tensor] | None = None
        self._merged_versions: list[int] = []

    def reset_lora_parameters(self, init: str = "kaiming") -> None:
        """A random, B = 0 (so the adapted model starts equal to the base model)."""
        if init == "kaiming":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        elif init == "gaussian":
            nn.init.normal_(self.lora_A, std=1.0 / self.r)
        else:
            raise ValueError(f"unknown init {init!r}")
        nn.init.zeros_(self.lora_B)

    @property
    def base_is_quantized(self) -> bool:
        return getattr(self.base_layer, "quantized", False)

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight (some model code reads `layer.weight.dtype`)."""
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base_layer, "bias", None)

    def full_B(self, B: torch.Tensor | None = None) -> torch.Tensor:
        """This layer's B (or `B`) as one d_out × (n_parts·r) matrix (see full_B)."""
        return full_B(self.lora_B if B is None else B, self.parts, self.r, self.d_out)

    def delta_weight(self, A: torch.Tensor | None = None, B: torch.Tensor | None = None) -> torch.Tensor:
        """scaling·B·A in the layout of the base weight (transposed for Conv1D); A, B default to the layer's."""
        A = self.lora_A if A is None else A
        delta = (self.full_B(B) @ A) * self.scaling
        return delta.T if self.fan_in_fan_out else delta

    def _out_in(self, weight: torch.Tensor) -> torch.Tensor:
        """A weight in d_out × d_in layout (Conv1D stores d_in × d_out)."""
        return weight.T if self.fan_in_fan_out else weight

    def dora_scale(self, delta: torch.Tensor | None = None) -> torch.Tensor:
        """m / ‖W0 + ΔW‖ per output unit, the norm detached (no gradient flows through it)."""
        delta = self.delta_weight() if delta is None else delta
        norm = self._out_in(self.base_layer.weight + delta.to(self.base_layer.weight.dtype)).norm(dim=1)
        return self.lora_magnitude_vector / norm.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The checks run on every call (120 layers per token when decoding): plain dict lookups on purpose.
        base = self._modules["base_layer"]
        if self.row_adapters is not None:
            return self._forward_per_row(base, x)
        if self.disabled or not self.present:
            return self._base_forward(base, x)
        if self.merged:
            if not self._merged_is_stale():
                return self._base_forward(base, x)
            self.unmerge()
        if (
            not self.training
            and self.auto_merge
            and not self._needs_lora_grad()
            and not self.base_is_quantized
        ):
            self.merge()
            return self._base_forward(base, x)
        A = self._parameters["lora_A"]
        if self._fusable(x):
            weight = base.weight
            return fused_lora_linear(x, weight.T if self.fan_in_fan_out else weight, self.bias, A, self.full_B(),
                                     self.scaling)  # fmt: skip
        result = base(x)
        lora_in = x if self._no_dropout() and x.dtype == A.dtype else self.dropout(x.to(A.dtype))
        if not self.use_dora and result.dtype == A.dtype:  # result + s·(x·Aᵀ)·Bᵀ in one addmm
            low = F.linear(lora_in, A).reshape(-1, A.shape[0])
            flat = result.reshape(-1, result.shape[-1])
            if torch.is_grad_enabled():
                return torch.addmm(flat, low, self.full_B().T, alpha=self.scaling).view(result.shape)
            return flat.addmm_(low, self.full_B().T, alpha=self.scaling).view(result.shape)
        update = F.linear(F.linear(lora_in, A), self.full_B()) * self.scaling
        if self.use_dora:  # m/‖W0+ΔW‖ · (W0·x + ΔW·x) + b
            bias = self.bias if self.bias is not None else 0
            scale = self.dora_scale().to(result.dtype)
            return scale * (result - bias + update.to(result.dtype)) + bias
        return result + update.to(result.dtype)

    def _forward_per_row(self, base: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The base output plus, on each adapter's rows, that adapter's scaling·B·A·x (un-merged weights)."""
        result = self._base_forward(base, x)
        for index, (A, B, scaling) in self.row_adapters.groups(x.shape[0], x.device):
            update = F.linear(F.linear(x.index_select(0, index).to(A.dtype), A), B) * scaling
            result.index_add_(0, index, update.to(result.dtype))  # a fresh tensor: F.linear keeps no output
        return result

    @staticmethod
    def _base_forward(base: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """base(x); a plain nn.Linear without hooks is applied directly, so a merged layer costs what the
        base layer alone costs (one module call, not two)."""
        if type(base) is nn.Linear and not (base._forward_hooks or base._forward_pre_hooks):
            return F.linear(x, base.weight, base.bias)
        return base(x)

    def _no_dropout(self) -> bool:
        return not self.training or type(self._modules["dropout"]) is nn.Identity

    def _fusable(self, x: torch.Tensor) -> bool:
        """True when fused.py's single autograd function computes exactly this layer (plain LoRA, no dropout
        to apply, a frozen unquantized base of the same dtype, no autocast) and pays: x has enough tokens n
        that forming W + s·B·A (r·d_in·d_out) costs less than the thin path (n·r·(d_in + d_out)); one-token
        decoding steps take the thin path."""
        tokens = x.numel() // max(x.shape[-1], 1)
        if (
            tokens * (self.d_in + self.d_out) < self.d_in * self.d_out
            or self.use_dora
            or not self._no_dropout()
        ):
            return False
        base = self._modules["base_layer"]
        return (
            type(base) in (nn.Linear, Conv1D)
            and not base.weight.requires_grad
            and x.dtype == base.weight.dtype == self._parameters["lora_A"].dtype
            and not torch.is_autocast_enabled(x.device.type)
        )

    def _needs_lora_grad(self) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in self._parameters.values())

    def _merged_is_stale(self) -> bool:
        """True when A or B changed in place since the merge, or gradients must reach them."""
        return self._versions() != self._merged_versions or self._needs_lora_grad()

    def _versions(self) -> list[int]:
        return [t._version for t in self._parameters.values()]  # a list: cheaper per call than a tuple

    @torch.no_grad()
    def merge(self) -> None:
        """W0 ← W0 + scaling·B·A. A second call does nothing.

        A copy of A and B (small) is kept so that `unmerge` subtracts exactly what was added, even if the
        weights were edited in between (a later forward or merge notices the edit and re-merges).
        """
        if self.merged and self._versions() != self._merged_versions:  # A or B changed since: merge anew
            self.unmerge()
        if not self.merged and self.present and not self.disabled:
            delta = self.delta_weight()
            if self.use_dora:  # W ← s·(W0 + ΔW), i.e. add s·(W0 + ΔW) − W0
                scale = self._dora_rows(self.dora_scale(delta))
                delta = scale * (self.base_layer.weight + delta) - self.base_layer.weight
                self._merged_scale = scale
            self._add_to_base(delta)
            self._merged_AB = (self.lora_A.detach().clone(), self.lora_B.detach().clone())
            self._merged_versions = self._versions()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W0 ← W0 − scaling·B·A (with the A, B that were merged). Does nothing when not merged."""
        if self.merged:
            delta = self.delta_weight(*self._merged_AB)
            if self.use_dora:  # W0 = W / s − ΔW, so add (W / s − ΔW) − W
                weight = self.base_layer.weight
                delta = weight / self._merged_scale - delta - weight
            self._add_to_base(-delta if not self.use_dora else delta)
            self._merged_AB = None
            self.merged = False

    def _dora_rows(self, scale: torch.Tensor) -> torch.Tensor:
        """A per-output-unit scale shaped to multiply the base weight in its own layout."""
        return scale.detach()[None, :] if self.fan_in_fan_out else scale.detach()[:, None]

    def _add_to_base(self, delta: torch.Tensor) -> None:
        if self.base_is_quantized:
            warnings.warn(
                "merging LoRA into a 4-bit base weight re-quantizes it: the merged weight is rounded to the NF4 "
                "grid; call loralab.methods.qlora.dequantize_base(model) first to merge into full precision",
                stacklevel=3,
            )
            self.base_layer.set_weight(self.base_layer.weight + delta)
        else:
            self.base_layer.weight.data += delta.to(self.base_layer.weight.dtype)

    def train(self, mode: bool = True) -> LoRALinear:
        """train() un-merges; eval() merges (nn.Module.eval() calls train(False)), unless the base is 4-bit."""
        super().train(mode)
        if mode:
            self.unmerge()
        elif self.auto_merge and not self.base_is_quantized:
            self.merge()
        return self

    def extra_repr(self) -> str:
        parts = f", parts={self.parts}" if self.parts else ""
        dora = ", dora" if self.use_dora else ""
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}, merged={self.merged}{parts}{dora}"

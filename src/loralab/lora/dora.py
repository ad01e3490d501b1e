"""DoRA (Liu et al. 2024): the adapted weight split into a direction and a trained magnitude.

    W' = m · (W0 + ΔW) / ‖W0 + ΔW‖        ΔW = scaling·B·A as in plain LoRA; the norm per output unit

The norm is treated as a constant in backward (as the paper's section 4.3 suggests); m starts at ‖W0‖, so the
layer starts equal to its base. A DoRAUpdate is one adapter's update in a LoRALinear, beside plain LoRAUpdates
of other adapters; peft stores m as `<module>.lora_magnitude_vector`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from loralab.lora.config import LoRAConfig
from loralab.lora.update import LoRAUpdate

if TYPE_CHECKING:
    from loralab.lora.layer import LoRALinear


class DoRAUpdate(LoRAUpdate):
    """LoRA's A and B plus a magnitude m per output unit."""

    use_dora = True

    def __init__(self, layer: LoRALinear, config: LoRAConfig) -> None:
        super().__init__(layer, config)
        weight = layer.base_layer.weight
        with torch.no_grad():
            norm = layer.out_in(weight.detach()).float().norm(dim=1)
        self.lora_magnitude_vector = nn.Parameter(norm.to(weight.dtype))

    def scale(self, layer: LoRALinear, delta: torch.Tensor | None = None) -> torch.Tensor:
        """m / ‖W0 + ΔW‖ per output unit, the norm detached (no gradient flows through it); `delta`: ΔW in the
        base weight's layout, if already at hand."""
        weight = layer.base_layer.weight
        delta = self.delta_weight(layer) if delta is None else delta
        norm = layer.out_in(weight + delta.to(weight.dtype)).norm(dim=1)
        return self.lora_magnitude_vector / norm.detach()

    def forward(self, layer: LoRALinear, x: torch.Tensor) -> torch.Tensor:
        """m/‖W0 + ΔW‖ · (W0·x + ΔW·x) + b."""
        A, base = self._parameters["lora_A"], layer._modules["base_layer"]
        result = base(x)
        lora_in = x if self._no_dropout() and x.dtype == A.dtype else self.dropout(x.to(A.dtype))
        update = F.linear(F.linear(lora_in, A), self.full_B()) * self.scaling
        bias = getattr(base, "bias", None)
        bias = 0 if bias is None else bias
        scale = self.scale(layer).to(result.dtype)
        return scale * (result - bias + update.to(result.dtype)) + bias

    def fusable(self, layer: LoRALinear, x: torch.Tensor) -> bool:
        return False  # the norm needs W0 + ΔW on its own

    def merge_change(self, layer: LoRALinear) -> tuple[torch.Tensor, tuple]:
        """W ← s·(W0 + ΔW), i.e. add s·(W0 + ΔW) − W0; s is kept to divide it out again."""
        delta, saved = super().merge_change(layer)
        weight = layer.base_layer.weight
        scale = self._in_base_layout(layer, self.scale(layer, delta))
        return scale * (weight + delta) - weight, (*saved, scale)

    def unmerge_change(self, layer: LoRALinear, saved: tuple) -> torch.Tensor:
        """W0 = W / s − ΔW, so add (W / s − ΔW) − W."""
        *A_B, scale = saved
        weight = layer.base_layer.weight
        return weight / scale - self.delta_weight(layer, *A_B) - weight

    @staticmethod
    def _in_base_layout(layer: LoRALinear, scale: torch.Tensor) -> torch.Tensor:
        """A per-output-unit scale shaped to multiply the base weight in its own layout."""
        return scale.detach()[None, :] if layer.fan_in_fan_out else scale.detach()[:, None]

    def extra_repr(self) -> str:
        return super().extra_repr() + ", dora"

"""LoRA on some row blocks ("parts") of a fused projection, such as q and v inside GPT-2's `c_attn`.

Each part i gets its own A_i, B_i, and ΔW holds scaling·B_i·A_i in the rows of part i and zeros elsewhere. The
A_i are stacked, A = [A_1; A_2; ...] (n_parts·r × d_in), and so are the B_i, B = [B_1; B_2; ...] (rows × r).
The block matrix full_B (d_out × n_parts·r, B_i in the rows of part i and the columns of A_i) gives
ΔW = scaling·full_B·A; it is also the layout that peft stores (with rank_pattern and alpha_pattern).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from loralab.errors import UserError
from loralab.lora.config import LoRAConfig
from loralab.lora.update import LoRAUpdate

if TYPE_CHECKING:
    from loralab.lora.layer import LoRALinear

QKV = "qkv"


def qkv_row_ranges(name: str, d_out: int, parts: tuple[str, ...]) -> list[tuple[int, int]]:
    """Row ranges of the chosen q/k/v parts in a fused projection whose output is three equal blocks."""
    if d_out % 3 != 0:
        raise UserError(
            f"qkv_parts needs fused q,k,v layers with three equal output blocks, but {name} has "
            f"{d_out} outputs; target only fused layers (e.g. c_attn) or drop qkv_parts"
        )
    block = d_out // 3
    return [(QKV.index(p) * block, (QKV.index(p) + 1) * block) for p in sorted(parts, key=QKV.index)]


class PartsUpdate(LoRAUpdate):
    """scaling·B_i·A_i on the rows of each part (start, stop) of the layer's output, zeros elsewhere."""

    def __init__(self, layer: LoRALinear, config: LoRAConfig, parts: list[tuple[int, int]]) -> None:
        parts = [tuple(p) for p in parts]
        super().__init__(layer, config, rows=sum(stop - start for start, stop in parts), n_blocks=len(parts))
        self.parts = parts
        self.d_out = layer.d_out

    def full_B(self, B: torch.Tensor | None = None) -> torch.Tensor:
        B = self.lora_B if B is None else B
        full = B.new_zeros(self.d_out, len(self.parts) * self.r)
        offset = 0
        for i, (start, stop) in enumerate(self.parts):
            rows = stop - start
            full[start:stop, i * self.r : (i + 1) * self.r] = B[offset : offset + rows]
            offset += rows
        return full

    def compact_B(self, full: torch.Tensor) -> torch.Tensor:
        blocks = [
            full[start:stop, i * self.r : (i + 1) * self.r] for i, (start, stop) in enumerate(self.parts)
        ]
        return torch.cat(blocks, dim=0)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", parts={self.parts}"

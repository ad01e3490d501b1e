"""4-bit NormalFloat (NF4) weights, as QLoRA stores its frozen base model (Dettmers et al. 2023, section 3).

A weight is cut into blocks of 64 numbers; each block is divided by its absolute maximum (so it lies in
[-1, 1]) and every number is rounded to the nearest of 16 levels, stored as a 4-bit code, two per byte.
The levels are quantiles of the standard normal distribution, so that for normally distributed weights each
level is used about equally often. With double quantization the 32-bit block scales are themselves stored
in 8 bits (blocks of 256 scales, minus their mean), which takes the cost of the scales from 0.5 to about
0.127 bits per weight.

    bits per weight: 4 + 32/64 = 4.5 (0.141 × fp32), or with double quantization 4 + 8/64 + 32/(64·256) ≈ 4.127
    (0.129 × fp32).

NF4Linear dequantizes its weight on the fly in forward and again in backward (nothing of the full-precision
weight is kept between them), so only the 4-bit codes stay in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BLOCK_SIZE = 64
SCALE_BLOCK_SIZE = 256


def nf4_levels() -> torch.Tensor:
    """The 16 NF4 levels by the paper's construction: 8 positive and 7 negative normal quantiles, plus an
    exact zero, scaled into [-1, 1]. The outermost quantile is taken at 1 - offset, halfway between the
    1/(2·15) and 1/(2·16) tails, so that ±1 are levels and no quantile is infinite."""
    offset = 1 - (1 / (2 * 15) + 1 / (2 * 16)) / 2
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    levels = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).sort().values
    return (levels / levels.abs().max()).float()


LEVELS = nf4_levels()


@dataclass
class NF4Weight:
    """A quantized matrix: 4-bit codes (two per byte), block scales (fp32, or int8 with their own scales)."""

    codes: torch.Tensor  # uint8, numel/2 (padded to whole blocks)
    scales: torch.Tensor  # fp32 per block; or int8 per block with double quantization
    scale_scales: torch.Tensor | None  # fp32 per 256 scales (double quantization)
    scale_mean: torch.Tensor | None  # fp32 scalar subtracted before the scales were quantized
    shape: torch.Size

    def nbytes(self) -> int:
        tensors = [self.codes, self.scales, self.scale_scales, self.scale_mean]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _blocks(values: torch.Tensor, size: int) -> torch.Tensor:
    flat = values.reshape(-1)
    padding = -flat.numel() % size
    return F.pad(flat, (0, padding)).view(-1, size)


def quantize(weight: torch.Tensor, double_quant: bool = True) -> NF4Weight:
    """Round `weight` to NF4 codes with one absmax scale per block of 64 numbers."""
    blocks = _blocks(weight.detach().float(), BLOCK_SIZE)
    absmax = blocks.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    levels = LEVELS.to(blocks.device)
    # nearest level = the number of midpoints below the value
    codes = torch.bucketize(blocks / absmax[:, None], (levels[1:] + levels[:-1]) / 2).to(torch.uint8).view(-1)
    packed = (codes[0::2] << 4) | codes[1::2]
    if not double_quant:
        return NF4Weight(packed, absmax, None, None, weight.shape)
    mean = absmax.mean()
    centred = _blocks(absmax - mean, SCALE_BLOCK_SIZE)
    scale_scales = centred.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / 127
    scales = torch.round(centred / scale_scales[:, None]).to(torch.int8).view(-1)[: absmax.numel()]
    return NF4Weight(packed, scales, scale_scales, mean, weight.shape)


def block_scales(q: NF4Weight) -> torch.Tensor:
    """The fp32 absmax of every block (rebuilt from 8 bits with double quantization)."""
    if q.scale_scales is None:
        return q.scales
    scales = _blocks(q.scales.float(), SCALE_BLOCK_SIZE) * q.scale_scales[:, None]
    return scales.view(-1)[: q.scales.numel()] + q.scale_mean


def dequantize(q: NF4Weight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    codes = torch.stack([q.codes >> 4, q.codes & 15], dim=1).view(-1, BLOCK_SIZE).long()
    values = LEVELS.to(q.codes.device)[codes] * block_scales(q)[:, None]
    return values.view(-1)[: q.shape.numel()].view(q.shape).to(dtype)


class _DequantizedMatmul(torch.autograd.Function):
    """y = x·Wᵀ with W dequantized in forward and again in backward, never stored for the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: NF4Linear) -> torch.Tensor:
        ctx.layer = layer
        return F.linear(x, layer.dequantized(x.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_x = grad @ ctx.layer.dequantized(grad.dtype) if ctx.needs_input_grad[0] else None
        return grad_x, None


class NF4Linear(nn.Module):
    """A frozen nn.Linear whose weight is held in NF4; the bias (if any) stays in full precision."""

    quantized = True
    grid = "NF4"
    # (x, layer) -> x·Wᵀ in the layer's compute dtype; loralab.precision sets ones that multiply in bf16 / int8
    matmul = staticmethod(_DequantizedMatmul.apply)

    def __init__(self, linear: nn.Linear, double_quant: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.double_quant = double_quant
        self.compute_dtype = linear.weight.dtype
        self.bias = linear.bias
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self._store(quantize(linear.weight, double_quant))

    def _store(self, q: NF4Weight) -> None:
        for name in ("codes", "scales", "scale_scales", "scale_mean"):
            self.register_buffer(name, getattr(q, name))
        self.shape = q.shape

    def nf4(self) -> NF4Weight:
        return NF4Weight(self.codes, self.scales, self.scale_scales, self.scale_mean, self.shape)

    @property
    def quantized_numel(self) -> int:
        return self.shape.numel()

    def weight_nbytes(self) -> int:
        return self.nf4().nbytes()

    def dequantized(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return dequantize(self.nf4(), dtype or self.compute_dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight (a fresh tensor: writing to it does not change the layer)."""
        return self.dequantized()

    def set_weight(self, weight: torch.Tensor) -> None:
        """Quantize `weight` into this layer (rounds it to the NF4 grid)."""
        self._store(quantize(weight, self.double_quant))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.matmul(x, self)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nf4, double_quant={self.double_quant}"


def to_linear(layer: NF4Linear) -> nn.Linear:
    """A full-precision nn.Linear holding the dequantized weight (e.g. to merge LoRA without re-rounding)."""
    linear = nn.Linear(
        layer.in_features,
        layer.out_features,
        bias=layer.bias is not None,
        device=layer.codes.device,
        dtype=layer.compute_dtype,
    )
    with torch.no_grad():
        linear.weight.copy_(layer.dequantized())
        if layer.bias is not None:
            linear.bias.copy_(layer.bias)
    linear.requires_grad_(False)
    return linear

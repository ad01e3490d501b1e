"""A frozen linear layer whose products run in int8 × int8 → int32 on the CPU's (or GPU's) int8 units, forward
and backward, with LLM.int8's per-row scales (Dettmers et al. 2022) and, in the forward pass, QuaRot's Hadamard
rotation against outliers (Ashkboos et al. 2024).

    rotation  H: block-diagonal Hadamard (blocks of up to 64 along d_in), orthonormal and symmetric: H·H = I
    forward   y = x·Wᵀ = (x·H)·(W·H)ᵀ ≈ diag(s_x)·(Q_x·Q_wᵀ)·diag(s_w)
              W·H ≈ diag(s_w)·Q_w      s_w = max|(W·H)_o·| / 127 per output row
              Q_x = round(x·H / s_x),  s_x = max|(x·H)_t·| / 127 per token (dynamic: measured on every call)
    backward  ∂x = g·W ≈ diag(s_g)·(Q_g·Q_b)·diag(c)
              W ≈ Q_b·diag(c)          c = max|W_·i| / 127 per input column, no rotation
              Q_g = round(g / s_g),    s_g per row of the output gradient

Why the rotation: a token's activations in a language model carry a few channels a hundred times larger than
the rest (SmolLM2-135M: up to 99 against a median of 0.05), so one scale per token leaves the other channels
a handful of int8 levels. Rotating spreads each outlier over its block; on SmolLM2's layers it cut the
relative error of a product from 1.6-5.7% to 0.8-1.8%, averaged by kind of layer (benchmarks/precision_error.py),
at the cost of one small product (2·64 flops per input number, a 24th of a 576 × 1536 layer's).
Why none in backward: output gradients have no such outliers. On SmolLM2 (r 8 on q, k, v, o) LoRA's gradients
kept a cosine of 0.992 to fp32's without it against 0.993 with it, while the rotation of ∂x, and the scaling of
g by s_w that sharing Q_w would need, took about a tenth of a training step. So the backward pass has an int8
copy of W of its own, scaled per input column, and every scale stays outside the int8 products.
Q_w, s_w, Q_b and c are stored: half of fp32's bytes. The weight gets no gradient: the layer is frozen, as
LoRA's base is.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from loralab.precision.frozen import FrozenLinear

QMAX = 127
ROTATION_BLOCK = 64


def rotation_block(d_in: int) -> int:
    """The Hadamard block size for d_in inputs: the largest power of two up to ROTATION_BLOCK dividing d_in."""
    block = ROTATION_BLOCK
    while d_in % block:
        block //= 2
    return block


@functools.lru_cache(maxsize=16)
def hadamard(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The size × size Sylvester-Hadamard matrix divided by √size: orthonormal and symmetric."""
    matrix = torch.ones(1, 1, dtype=torch.float64)
    while matrix.shape[0] < size:
        matrix = torch.cat([torch.cat([matrix, matrix], 1), torch.cat([matrix, -matrix], 1)])
    return (matrix / math.sqrt(size)).to(device=device, dtype=dtype)


def rotate(values: torch.Tensor, block: int) -> torch.Tensor:
    """values·H for the block-diagonal Hadamard H along the last dimension (its own inverse)."""
    if block == 1:
        return values
    flat = values.reshape(-1, block)
    return (flat @ hadamard(block, values.device, values.dtype)).view(values.shape)


def quantize_rows(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 codes, fp32 scale per row) with values ≈ codes · scale, symmetric, rounded to nearest. Multiplying
    by the reciprocal and rounding in place takes two passes over `values` where dividing took three."""
    largest = values.abs().amax(dim=1, keepdim=True).float().clamp_min_(torch.finfo(torch.float32).tiny)
    codes = (values * (QMAX / largest)).round_().to(torch.int8)
    return codes, largest.div_(QMAX)


CUDA_MIN_ROWS = 17  # torch._int_mm on CUDA wants more than 16 rows (and k, m multiples of 8)


def int8_product(codes: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """codes (n × k, int8) · other (k × m, int8) in int32 (exact)."""
    rows = codes.shape[0]
    if codes.is_cuda and rows < CUDA_MIN_ROWS:
        return torch._int_mm(F.pad(codes, (0, 0, 0, CUDA_MIN_ROWS - rows)), other)[:rows]
    return torch._int_mm(codes, other)


def int8_shape_ok(d_in: int, d_out: int, device: torch.device) -> bool:
    """Whether torch._int_mm takes a d_out × d_in weight on `device` (CPU: any; CUDA: multiples of 8)."""
    return device.type != "cuda" or (d_in % 8 == 0 and d_out % 8 == 0)


def _scaled(product: torch.Tensor, row_scale: torch.Tensor, col_scale: torch.Tensor, dtype) -> torch.Tensor:
    """product (int32) · row_scale (per row) · col_scale (per column), in `dtype`. Converting first and scaling
    in place runs 2-3x faster on CPU than torch.mul's mixed int32 · fp32 path."""
    return product.to(torch.float32).mul_(row_scale).mul_(col_scale).to(dtype)


class _LastInput:
    """The last input quantized and what it became: q, k and v (and gate and up) read the same tensor, so
    they share one rotation and quantization. Holding the tensor keeps its id from being reused; an in-place
    change bumps its version and misses. Inference tensors (torch.inference_mode) carry no version, so they are
    quantized every time; loralab evaluates under torch.no_grad for that reason."""

    tensor: torch.Tensor | None = None
    key: tuple = ()
    quantized: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def quantize(cls, x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
        shareable = not x.is_inference()  # an inference tensor has no version to notice an in-place change
        if shareable and cls.tensor is x and cls.key == (x._version, block):
            return cls.quantized
        quantized = quantize_rows(rotate(x.reshape(-1, x.shape[-1]), block))
        if shareable:
            cls.tensor, cls.key, cls.quantized = x, (x._version, block), quantized
        return quantized


def weight_codes(weight: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q_w, s_w) of a d_out × d_in weight for the forward product: rotated, one scale per output row."""
    codes, scale = quantize_rows(rotate(weight.float(), block))
    return codes.contiguous(), scale.view(-1)


def input_grad_codes(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q_b, c) of a d_out × d_in weight for the input gradient: not rotated, one scale per input column."""
    codes, scale = quantize_rows(weight.float().T)
    return codes.T.contiguous(), scale.view(-1)


def int8_linear(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, block: int) -> torch.Tensor:
    """x·Wᵀ from the weight's (Q_w, s_w), x quantized per token after the rotation (module docstring)."""
    q, s_x = _LastInput.quantize(x, block)
    y = _scaled(int8_product(q, codes.t()), s_x, scale, x.dtype)
    return y.view(*x.shape[:-1], codes.shape[0])


def int8_input_grad(grad: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """grad·W from the weight's (Q_b, c) (input_grad_codes), the gradient quantized per row."""
    q, s_g = quantize_rows(grad.reshape(-1, grad.shape[-1]))
    grad_x = _scaled(int8_product(q, codes), s_g, scale, grad.dtype)
    return grad_x.view(*grad.shape[:-1], codes.shape[1])


class Int8Linear(FrozenLinear):
    """A frozen nn.Linear (or GPT-2 Conv1D) computing in int8 (module docstring); the bias stays in full
    precision."""

    grid = "int8"

    def _store(self, weight: torch.Tensor) -> None:
        self.block = rotation_block(weight.shape[1])
        codes, scale = weight_codes(weight, self.block)
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale)
        grad_codes, grad_scale = input_grad_codes(weight)
        self.register_buffer("grad_codes", grad_codes)
        self.register_buffer("grad_scale", grad_scale)

    @property
    def quantized_numel(self) -> int:
        return self.codes.numel()

    def dequantized(self) -> torch.Tensor:
        return rotate(self.codes.float() * self.scale[:, None], self.block).to(self.compute_dtype)

    def product(self, x: torch.Tensor) -> torch.Tensor:
        return int8_linear(x, self.codes, self.scale, self.block)

    def input_grad(self, grad: torch.Tensor) -> torch.Tensor:
        return int8_input_grad(grad, self.grad_codes, self.grad_scale)

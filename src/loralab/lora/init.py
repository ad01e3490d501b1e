"""LoRA initialisations taken from the layer's weight instead of random numbers.

All work in d_out × d_in terms (a Conv1D weight is transposed, layer.out_in), in float32, and for a fused q,k,v
projection (qkv_parts) per row block, each part with its own A_i, B_i. s is the update's scaling (alpha/r or
alpha/√r); ΔW = s·B·A.

    pissa   Meng et al. 2024, "PiSSA: Principal Singular Values and Singular Vectors Adaptation of Large
            Language Models". W = U·S·Vᵀ; B = U_r·√(S_r/s), A = √(S_r/s)·V_rᵀ, so s·B·A is the best rank-r part
            of W (its top r singular vectors). The frozen weight becomes the residual W − s·B·A.
    olora   Büyükakyüz 2024, "OLoRA: Orthonormal Low-Rank Adaptation of Large Language Models". W = Q·R;
            B = Q[:, :r] (orthonormal columns), A = R[:r]. The frozen weight becomes W − s·B·A.
    loftq   Li et al. 2023, "LoftQ: LoRA-Fine-Tuning-aware Quantization for Large Language Models", with NF4:
            for t = 1..T, Q_t = NF4(W − s·B_{t−1}·A_{t−1}) (B_0·A_0 = 0), then s·B_t·A_t = the best rank-r fit
            of W − Q_t (split as in pissa). The frozen weight is Q_T; T = 1 is QLoRA's own base NF4(W) plus a
            fit of its rounding error. peft fits B·A = SVD_r(W − Q) without s (its issue #1982); the two agree
            when alpha = r (s = 1).

pissa and olora change the frozen weight, so an adapter of A, B alone would fit only that residual model. As
peft's save_pretrained(..., path_initial_model_for_weight_conversion) does, the adapter is saved as the ordinary
LoRA with the same ΔW against the original W:

    s·(B·A − B0·A0) = s·[B, −B0]·[A; A0]        rank 2r, alpha doubled (√2·alpha with rsLoRA), so s is the same

(`converted_factors`; with qkv_parts each part's [A_i; A0_i] side by side). The update keeps A0, B0 as buffers
(`initial_A`, `initial_B`); `trained_A` / `trained_B` read A and B back out of a saved adapter.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from loralab.errors import UserError
from loralab.lora.config import RESIDUAL_INITS, LoRAConfig
from loralab.lora.nf4 import dequantize, quantize

if TYPE_CHECKING:
    from loralab.lora.layer import LoRALinear
    from loralab.lora.update import LoRAUpdate


def principal_factors(matrix: torch.Tensor, r: int, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with s·B·A the best rank-r approximation of `matrix` (truncated SVD), √ of each singular value on
    either side (PiSSA; LoftQ's low-rank fit)."""
    U, S, Vh = torch.linalg.svd(matrix, full_matrices=False)
    root = (S[:r] / scaling).sqrt()
    return root[:, None] * Vh[:r], U[:, :r] * root


def orthonormal_factors(matrix: torch.Tensor, r: int, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) = (R[:r], Q[:, :r]) of the QR decomposition `matrix` = Q·R (OLoRA)."""
    Q, R = torch.linalg.qr(matrix)
    return R[:r], Q[:, :r]


FITS = {"pissa": principal_factors, "olora": orthonormal_factors}


def is_residual(update: LoRAUpdate | None) -> bool:
    """True for an update whose init (pissa, olora) took s·B0·A0 out of its layer's frozen weight."""
    return update is not None and getattr(update, "initial_A", None) is not None


def _blocks(update: LoRAUpdate, d_out: int) -> list[tuple[slice, slice, slice]]:
    """(rows of W, rows of A, rows of the compact B) of each block fitted on its own: the whole matrix, or one
    block per q/k/v part."""
    r, blocks, offset = update.r, [], 0
    for i, (start, stop) in enumerate(update.parts or [(0, d_out)]):
        blocks.append((slice(start, stop), slice(i * r, (i + 1) * r), slice(offset, offset + stop - start)))
        offset += stop - start
    return blocks


def _fit(
    update: LoRAUpdate, d_out: int, matrix: torch.Tensor, init: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, compact B) in float32: FITS[init] (loftq: the SVD fit) of each block of `matrix` (d_out × d_in)."""
    A = matrix.new_zeros(update.lora_A.shape)
    B = matrix.new_zeros(update.lora_B.shape)
    fit = FITS.get(init, principal_factors)
    for rows, a_rows, b_rows in _blocks(update, d_out):
        block = matrix[rows]
        if update.r > min(block.shape):
            raise UserError(
                f"init {init} takes r = {update.r} directions from each weight, but a {block.shape[0]}×"
                f"{block.shape[1]} weight has only {min(block.shape)}; lower rank or use init kaiming"
            )
        A[a_rows], B[b_rows] = fit(block, update.r, update.scaling)
    return A, B


def _low_rank(update: LoRAUpdate, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """s·B·A in d_out × d_in terms (B compact: the parts' rows only)."""
    return (update.full_B(B) @ A) * update.scaling


@torch.no_grad()
def residual_init(layer: LoRALinear, update: LoRAUpdate, init: str) -> None:
    """PiSSA or OLoRA: A, B from the layer's weight, and W ← W − s·B·A (with A, B as stored, in their dtype)."""
    if init not in RESIDUAL_INITS:
        raise ValueError(f"{init!r} is not an init that changes the frozen weight")
    base = layer.base_layer
    if getattr(base, "quantized", False):
        raise UserError(f"init {init} needs a full-precision base weight; quantize after applying LoRA")
    A, B = _fit(update, layer.d_out, layer.out_in(base.weight).float(), init)
    update.lora_A.copy_(A)
    update.lora_B.copy_(B)
    taken = layer.out_in(_low_rank(update, update.lora_A.float(), update.lora_B.float()))
    base.weight.copy_((base.weight.float() - taken).to(base.weight.dtype))
    update.register_buffer("initial_A", update.lora_A.detach().clone(), persistent=False)
    update.register_buffer("initial_B", update.lora_B.detach().clone(), persistent=False)


@torch.no_grad()
def undo_residual(layer: LoRALinear, update: LoRAUpdate) -> None:
    """Give the layer its original weight back (W_res + s·B0·A0), as when the residual adapter is deleted."""
    taken = layer.out_in(_low_rank(update, update.initial_A.float(), update.initial_B.float()))
    base = layer.base_layer
    if getattr(base, "quantized", False):  # its weight is a fresh copy: store the sum (rounded to its grid)
        base.set_weight((base.weight.float() + taken).to(base.weight.dtype))
        return
    base.weight.copy_((base.weight.float() + taken).to(base.weight.dtype))


@torch.no_grad()
def loftq_weight(
    layer: LoRALinear, update: LoRAUpdate, iterations: int, double_quant: bool, fit: bool = True
) -> torch.Tensor:
    """LoftQ on one layer: the weight (base layout, float32) whose NF4 rounding is the frozen Q_T; the caller
    quantizes it. With `fit`, A and B are set to the rank-r fit of W − Q_T; without, they stay (a saved
    adapter's), and the last fit is skipped."""
    if iterations < 1:
        raise UserError(f"loftq_iter must be >= 1, got {iterations}")
    weight = layer.out_in(layer.base_layer.weight).float()
    target = weight
    for step in range(iterations):
        last = step == iterations - 1
        if last and not fit:
            break
        error = weight - dequantize(quantize(target, double_quant))
        A, B = _fit(update, layer.d_out, error, "loftq")
        if not last:
            target = weight - _low_rank(update, A, B)
    if fit:
        update.lora_A.copy_(A)
        update.lora_B.copy_(B)
    return layer.out_in(target)


def converted_config(config: LoRAConfig) -> LoRAConfig:
    """The config of the saved (converted) adapter: rank 2r, the same scaling, a plain init."""
    alpha = config.alpha * (2**0.5 if config.use_rslora else 2)
    return dataclasses.replace(config, r=2 * config.r, alpha=alpha, init="kaiming")


def _interleave(first: torch.Tensor, second: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Blocks of r along `dim`, one of `first` then one of `second`, in turn (one pair per part)."""
    pairs = zip(first.split(r, dim), second.split(r, dim), strict=True)
    return torch.cat([block for pair in pairs for block in pair], dim)


def converted_factors(update: LoRAUpdate) -> tuple[torch.Tensor, torch.Tensor]:
    """(A', full B') of rank 2r per part with s·B'·A' = s·(B·A − B0·A0): the ΔW against the original weight."""
    A = _interleave(update.lora_A.detach(), update.initial_A, update.r, 0)
    B = _interleave(update.full_B().detach(), -update.full_B(update.initial_B), update.r, 1)
    return A, B


def trained_A(update: LoRAUpdate, converted: torch.Tensor) -> torch.Tensor:
    """A out of a converted A' (the first r rows of each part's 2r)."""
    return torch.cat(converted.split(update.r, 0)[0::2], 0)


def trained_B(update: LoRAUpdate, converted: torch.Tensor) -> torch.Tensor:
    """The compact B out of a converted full B' (the first r columns of each part's 2r)."""
    return update.compact_B(torch.cat(converted.split(update.r, 1)[0::2], 1))

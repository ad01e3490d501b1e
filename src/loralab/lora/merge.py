"""Merging LoRA adapters into one: task arithmetic, TIES (Yadav et al. 2023, "TIES-Merging: Resolving
Interference When Merging Models") and DARE (Yu et al. 2023, "Language Models are Super Mario: Absorbing
Abilities from Homologous Models as a Free Lunch").

Adapter i with weight w_i gives, in every layer it adapts, the task vector τ_i = w_i·ΔW_i = w_i·s_i·B_i·A_i
(d_out × d_in, s_i its alpha/r or alpha/√r); in a layer it does not adapt, τ_i = 0. Per layer:

    linear      ΔW = Σ τ_i (task arithmetic, Ilharco et al. 2023). Its rank is at most Σ r_i, so at that rank
                the merge is exact: the adapter computes W0 + Σ w_i·ΔW_i.
    ties        trim: keep the ⌊density·numel⌋ entries of each τ_i largest in magnitude, zero the rest (τ̂_i);
                elect: the sign γ = sgn(Σ_i τ̂_i) per entry (+ where the sum is 0);
                disjoint mean: ΔW = the mean of the τ̂_i whose sign is γ, per entry (0 where none is).
    dare        drop and rescale: every entry of τ_i is kept with probability `density` (a seeded draw) and the
                kept ones are divided by density, so E[τ̃_i] = τ_i; then ΔW = Σ τ̃_i.
    dare_ties   DARE's drop and rescale in place of TIES' trim, then elect and disjoint mean.

ΔW then goes back to rank r by its truncated SVD U·S·Vᵀ: B = U_r·√S_r, A = √S_r·V_rᵀ, alpha = r (scaling 1).
What the truncation loses is reported per layer as the relative Frobenius error ‖ΔW − ΔW_r‖/‖ΔW‖ =
√(Σ_{j>r} σ_j²) / √(Σ_j σ_j²). For linear the SVD comes from QR factors of the stacked B_i and A_i (no dense
d_out × d_in matrix), in float64; the sparsified ΔW of ties and dare is full rank, so those lose something at
any rank below min(d_out, d_in), and their SVD is dense (right_vectors: exact up to 1024 columns, randomized
beyond, where the reported error is still exactly that of the stored factors, a hair above the optimum).

Where this differs from the papers and from peft's `add_weighted_adapter` (tests/test_merge.py compares them):
- TIES trims each layer's τ_i on its own, as peft and mergekit do; the paper trims the whole model's task
  vector at once. The weights play the paper's λ: with equal weights w, ties gives w·τ_m.
- The sign is elected from the weighted τ_i, so a negative weight (a task subtracted) votes with its sign.
  peft's "ties_svd" elects before weighting; with equal positive weights the two are the same.
- linear at rank Σ r_i equals peft's "cat", below it peft's "svd"; ties equals "ties_svd" (majority sign by
  total), dare "dare_linear_svd", dare_ties "dare_ties_svd" (other random draws). peft's "linear", "ties" and
  "dare_*" without "_svd" combine the A and the B factors separately, which is not the papers' task-vector
  merge, so they have no counterpart here.

Adapters are read from and written to peft-format folders (io.py's layout), so a merged adapter loads with
load_adapter, `loralab eval` and peft's PeftModel.from_pretrained alike.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from loralab.errors import UserError
from loralab.files import read_json_object, read_tensors
from loralab.lora.config import LoRAConfig
from loralab.lora.io import (
    CONFIG_FILE,
    PREFIX,
    WEIGHTS_FILE,
    read_adapter_config,
    write_adapter_files,
)

HOWS = ("linear", "ties", "dare", "dare_ties")
EXACT_UP_TO = 1024  # right_vectors: an exact SVD for layers with up to this many columns (the smaller side)
FIX = "save the adapter again (loralab train)"


# --- the merge of one layer's task vectors ---------------------------------------------------------------


def trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """TIES' trim: the ⌊density·numel⌋ entries largest in magnitude kept, the others zero."""
    k = int(density * delta.numel() + 1e-6)  # 1e-6: 0.29·100 is 28.999...; it keeps 29
    if k >= delta.numel():
        return delta
    keep = torch.zeros(delta.numel(), dtype=torch.bool, device=delta.device)
    keep[delta.abs().flatten().topk(k).indices] = True
    return delta * keep.view_as(delta)


def drop_and_rescale(delta: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """DARE: every entry kept with probability `density` (drawn from `generator`), the kept ones divided by
    density, so that the expectation is `delta`."""
    if density >= 1:
        return delta
    keep = torch.rand(delta.shape, generator=generator, device=generator.device) < density
    return delta * keep.to(delta.device) / density


def elect_and_mean(deltas: list[torch.Tensor]) -> torch.Tensor:
    """TIES' elect and disjoint merge: per entry, the sign of the sum (+ for 0) and the mean of the values
    with that sign (a zero has no sign, so it never counts); 0 where no value has it."""
    stacked = torch.stack(deltas)
    elected = torch.where(stacked.sum(dim=0) >= 0, 1.0, -1.0).to(stacked.dtype)
    agree = torch.sign(stacked) == elected
    total = (stacked * agree).sum(dim=0)
    return total / agree.sum(dim=0).clamp(min=1)


def combine(deltas: list[torch.Tensor], how: str, density: float, generator: torch.Generator) -> torch.Tensor:
    """One layer's merged ΔW from its task vectors τ_i (the weighted ΔW_i), the module docstring's `how`."""
    if how == "linear":
        return torch.stack(deltas).sum(dim=0)
    if how == "ties":
        return elect_and_mean([trim(d, density) for d in deltas])
    if how in ("dare", "dare_ties"):
        dropped = [drop_and_rescale(d, density, generator) for d in deltas]
        return torch.stack(dropped).sum(dim=0) if how == "dare" else elect_and_mean(dropped)
    raise ValueError(f"unknown merge {how!r}; use one of {', '.join(HOWS)}")


def _factors(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, rank: int) -> tuple:
    """(B, A, lost, norm): the top `rank` singular triplets as B = U·√S, A = √S·Vh (zero-padded to `rank`),
    and the Frobenius norms of what is dropped and of the whole."""
    kept = min(rank, S.numel())
    root = S[:kept].sqrt()
    B = U.new_zeros(U.shape[0], rank)
    A = Vh.new_zeros(rank, Vh.shape[1])
    B[:, :kept] = U[:, :kept] * root
    A[:kept] = root[:, None] * Vh[:kept]
    return B, A, S[kept:].square().sum().sqrt().item(), S.square().sum().sqrt().item()


def right_vectors(m: torch.Tensor, rank: int) -> torch.Tensor:
    """The top `rank` right singular vectors of the tall float64 matrix m (orthonormal columns).

    Up to EXACT_UP_TO columns: the eigenvectors of the Gram matrix mᵀ·m (exact, and 5x faster than a full SVD of
    a 1536×576 layer). Wider: a randomized range finder (Halko et al. 2011; torch.svd_lowrank, 10 extra columns,
    4 power iterations, seeded, so the merge is reproducible), O(d_out·d_in·rank) instead of O(d³)."""
    n = m.shape[1]
    if n <= EXACT_UP_TO or 4 * rank >= n:
        return torch.linalg.eigh(m.T @ m).eigenvectors.flip(1)[:, :rank]  # eigh sorts ascending
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.svd_lowrank(m, q=min(rank + 10, n), niter=4)[2][:, :rank]


def low_rank(delta: torch.Tensor, rank: int) -> tuple:
    """(B, A, lost, norm) with B·A = ΔW·V·Vᵀ for ΔW's top right singular vectors V (right_vectors): the truncated
    SVD, balanced as B = U·√S, A = √S·Vᵀ (σ_j = ‖ΔW·v_j‖); lost = ‖ΔW − B·A‖, exactly, as V·Vᵀ is a projection."""
    wide = delta.shape[0] < delta.shape[1]
    m = delta.double().T if wide else delta.double()  # tall, so the Gram matrix is of the small side
    vectors = right_vectors(m, rank)
    projected = m @ vectors  # U·S
    root = projected.norm(dim=0).sqrt()
    left = torch.where(root > 0, projected / root.clamp(min=1e-300), 0.0)  # U·√S
    right = root[:, None] * vectors.T  # √S·Vᵀ
    norm = m.norm().item()
    lost = (
        0.0
        if vectors.shape[1] == m.shape[1]
        else math.sqrt(max(norm**2 - projected.square().sum().item(), 0))
    )
    B, A = (right.T, left.T) if wide else (left, right)
    pad_B, pad_A = B.new_zeros(B.shape[0], rank), A.new_zeros(rank, A.shape[1])
    pad_B[:, : B.shape[1]], pad_A[: A.shape[0]] = B, A
    return pad_B, pad_A, lost, norm


def low_rank_of_product(B: torch.Tensor, A: torch.Tensor, rank: int) -> tuple:
    """low_rank(B·A) without forming B·A: B = Q_b·R_b and Aᵀ = Q_a·R_a, so B·A = Q_b·(R_b·R_aᵀ)·Q_aᵀ and only
    the small core needs an SVD."""
    Q_b, R_b = torch.linalg.qr(B.double())
    Q_a, R_a = torch.linalg.qr(A.double().T)
    U, S, Vh = torch.linalg.svd(R_b @ R_a.T, full_matrices=False)
    return _factors(Q_b @ U, S, Vh @ Q_a.T, rank)


# --- adapter folders -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedAdapter:
    """A plain LoRA adapter folder: its config, its peft config and, per layer, (A, full B) with
    ΔW = scaling·B·A in d_out × d_in terms (io.py stores a fused-qkv subset as a block B)."""

    directory: Path
    config: LoRAConfig
    peft_config: dict
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def delta(self, layer: str, weight: float) -> torch.Tensor:
        """weight·ΔW of `layer` in float32."""
        A, B = self.factors[layer]
        return (B.float() @ A.float()) * (weight * self.config.scaling)


def read_adapter(directory: Path) -> SavedAdapter:
    """The adapter folder at `directory`; UserError when it is not plain LoRA (DoRA, trained biases or whole
    modules have no task vector of the form B·A to merge)."""
    directory = Path(directory)
    config = read_adapter_config(directory)
    if config.use_dora:
        raise UserError(f"{directory} is a DoRA adapter; merging works on plain LoRA adapters only")
    if config.bias != "none" or config.modules_to_save:
        raise UserError(
            f"{directory} also trains biases or whole modules ({', '.join(config.modules_to_save) or 'bias'}), "
            "which have no low-rank update to merge; merge adapters trained without them"
        )
    peft_config = read_json_object(directory / CONFIG_FILE, "a peft adapter config", FIX)
    tensors = read_tensors(directory / WEIGHTS_FILE, FIX)
    pattern = re.compile(re.escape(PREFIX) + r"(.+)\.lora_([AB])\.weight")
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        found = pattern.fullmatch(key)
        if found is None:
            raise UserError(f"{directory} holds {key}, which is not a LoRA factor; merge plain LoRA adapters")
        parts.setdefault(found.group(1), {})[found.group(2)] = value
    factors = {}
    for layer, pair in parts.items():
        A, B = pair.get("A"), pair.get("B")
        if A is None or B is None or A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
            raise UserError(f"{directory} has no matching lora_A and lora_B for {layer}; {FIX}")
        factors[layer] = (A, B)
    if not factors:
        raise UserError(f"{directory} holds no LoRA weights; {FIX}")
    return SavedAdapter(directory, config, peft_config, factors)


@dataclass(frozen=True)
class MergedAdapter:
    """The merge's result: the adapter's LoRAConfig and peft config, its tensors (peft's key names), and per
    layer the SVD truncation's relative error and ‖ΔW‖."""

    config: LoRAConfig
    peft_config: dict
    tensors: dict[str, torch.Tensor]
    errors: dict[str, dict[str, float]]

    @property
    def relative_error(self) -> float:
        """‖ΔW − ΔW_r‖/‖ΔW‖ over all layers together (0 when every ΔW is 0)."""
        lost = sum(e["lost"] ** 2 for e in self.errors.values())
        norm = sum(e["norm"] ** 2 for e in self.errors.values())
        return math.sqrt(lost / norm) if norm > 0 else 0.0


def default_rank(adapters: list[SavedAdapter], how: str) -> int:
    """linear: the largest Σ r_i of a layer (the exact merge); otherwise the largest rank of an input."""
    ranks = [{layer: A.shape[0] for layer, (A, _) in a.factors.items()} for a in adapters]
    if how == "linear":
        layers = set().union(*ranks)
        return max(sum(r.get(layer, 0) for r in ranks) for layer in layers)
    return max(a.config.r for a in adapters)


def merge_adapters(
    adapters: list[SavedAdapter],
    weights: list[float],
    how: str = "linear",
    density: float = 1.0,
    rank: int | None = None,
    seed: int = 0,
) -> MergedAdapter:
    """The adapters merged layer by layer (module docstring), at `rank` (default: default_rank)."""
    if how not in HOWS:
        raise UserError(f"unknown merge {how!r}; use one of {', '.join(HOWS)}")
    if len(weights) != len(adapters):
        raise UserError(f"{len(weights)} weights for {len(adapters)} adapters; give one weight per adapter")
    if not 0 < density <= 1:
        raise UserError(f"density must be in (0, 1], got {density}; e.g. 0.2 keeps a fifth of each ΔW")
    rank = default_rank(adapters, how) if rank is None else rank
    if rank < 1:
        raise UserError(f"rank must be a positive integer, got {rank}")
    layers = sorted(set().union(*(a.factors for a in adapters)))
    _check_shapes(adapters, layers)
    generator = torch.Generator().manual_seed(seed)
    dtype = next(iter(adapters[0].factors.values()))[0].dtype
    tensors, errors = {}, {}
    for layer in layers:
        present = [(a, w) for a, w in zip(adapters, weights, strict=True) if layer in a.factors]
        if how == "linear":
            B = torch.cat([a.factors[layer][1].double() for a, _ in present], dim=1)
            A = torch.cat([a.factors[layer][0].double() * (w * a.config.scaling) for a, w in present])
            B_r, A_r, lost, norm = low_rank_of_product(B, A, rank)
        else:
            delta = combine([a.delta(layer, w) for a, w in present], how, density, generator)
            B_r, A_r, lost, norm = low_rank(delta, rank)
        tensors[f"{PREFIX}{layer}.lora_A.weight"] = A_r.to(dtype).contiguous()
        tensors[f"{PREFIX}{layer}.lora_B.weight"] = B_r.to(dtype).contiguous()
        errors[layer] = {"relative_error": lost / norm if norm > 0 else 0.0, "lost": lost, "norm": norm}
    config, peft_config = _merged_configs(adapters, layers, rank)
    return MergedAdapter(config, peft_config, tensors, errors)


def _check_shapes(adapters: list[SavedAdapter], layers: list[str]) -> None:
    for layer in layers:
        shapes = {}
        for a in adapters:
            if layer in a.factors:
                A, B = a.factors[layer]
                shapes.setdefault((B.shape[0], A.shape[1]), a.directory)
        if len(shapes) > 1:
            (one, first), (other, second) = list(shapes.items())[:2]
            raise UserError(
                f"{layer} is {one[0]}×{one[1]} in {first} but {other[0]}×{other[1]} in {second}: the adapters "
                "were trained on different base models; merge adapters of one base model"
            )


def _merged_configs(adapters: list[SavedAdapter], layers: list[str], rank: int) -> tuple[LoRAConfig, dict]:
    """(LoRAConfig, peft config) of the merged adapter: rank `rank`, alpha = rank (scaling 1), no dropout, and
    the inputs' target_modules when they all agree, else a regex naming exactly the merged layers."""
    first = adapters[0]
    if all(a.config.target_modules == first.config.target_modules for a in adapters):
        ours, peft_targets = first.config.target_modules, first.peft_config.get("target_modules")
    else:
        ours = peft_targets = "^(" + "|".join(re.escape(layer) for layer in layers) + ")$"
    config = LoRAConfig(r=rank, alpha=float(rank), target_modules=ours)
    peft_config = {
        **first.peft_config,
        "r": rank,
        "lora_alpha": float(rank),
        "lora_dropout": 0.0,
        "target_modules": peft_targets,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": True,
    }
    return config, peft_config


def save_merged(merged: MergedAdapter, directory: Path) -> Path:
    """Write the merged adapter as an adapter folder (the files io.save_adapter writes, each atomically)."""
    ours = {"lora_config": merged.config.to_dict()}
    return write_adapter_files(directory, merged.tensors, merged.peft_config, ours)

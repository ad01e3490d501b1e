"""LoRAConfig: the hyper-parameters of Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from loralab.errors import UserError

# loralab.config reads both modes from this file's source (config/registries.py): keep them literal
BIAS_MODES = ("none", "all", "lora_only")
INIT_MODES = ("kaiming", "gaussian", "pissa", "olora", "loftq")
# the inits that take s·B·A out of the frozen weight, which keeps the residual (init.py)
RESIDUAL_INITS = ("pissa", "olora")
QKV_PARTS = ("q", "k", "v")


@dataclass(frozen=True)
class LoRAConfig:
    """What to adapt and how.

    r: rank of the update ΔW = B·A (A: r×d_in, B: d_out×r).
    alpha: the update is scaled by alpha/r (or alpha/√r with use_rslora, Kalajdzievski 2023), so changing r
        does not force a new learning rate.
    dropout: dropout on the input of the low-rank path only (0 = off; it copies the input, so it costs memory).
    target_modules: module-name suffixes (["q_proj", "v_proj"]), a regex matched against full module names,
        or "all-linear" (every linear layer except the output head).
    bias: which biases train: "none", "all" (every bias in the model) or "lora_only" (biases of adapted layers).
    init: how A and B start. "kaiming" (kaiming-uniform, a=√5, as nn.Linear) or "gaussian" (N(0, 1/r)), B = 0;
        or from the layer's weight (lora/init.py): "pissa" (top-r singular vectors, Meng et al. 2024) and
        "olora" (QR, Büyükakyüz 2024) take s·B·A out of the frozen weight, which keeps the residual;
        "loftq" (Li et al. 2023) fits A, B to the error of the 4-bit base that QLoRA builds (method qlora).
    use_rslora: scale by alpha/√r instead of alpha/r.
    use_dora: DoRA (Liu et al. 2024): a trained magnitude per output unit times the normalised W0 + ΔW.
    modules_to_save: extra modules (suffixes) trained in full beside LoRA, e.g. "lm_head" or "classifier".
    qkv_parts: for a fused q,k,v projection (GPT-2's c_attn), adapt only these parts, e.g. ("q", "v") as in the
        LoRA paper; None adapts the whole fused matrix.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | str = "all-linear"
    bias: str = "none"
    init: str = "kaiming"
    use_rslora: bool = False
    use_dora: bool = False
    modules_to_save: tuple[str, ...] = field(default_factory=tuple)
    qkv_parts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Accept lists from users and JSON; store tuples so the config stays hashable and frozen.
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if isinstance(self.modules_to_save, list | type(None)):
            object.__setattr__(self, "modules_to_save", tuple(self.modules_to_save or ()))
        if isinstance(self.qkv_parts, list):
            object.__setattr__(self, "qkv_parts", tuple(self.qkv_parts))
        validate_lora_config(self)

    @property
    def scaling(self) -> float:
        """The factor in h = W0·x + scaling·B·A·x."""
        return self.alpha / (self.r**0.5 if self.use_rslora else self.r)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def validate_lora_config(config: LoRAConfig) -> None:
    """Raise UserError naming the first bad field and the fix."""
    if isinstance(config.r, bool) or not isinstance(config.r, int) or config.r <= 0:
        raise UserError(f"LoRA rank r must be a positive integer, got {config.r!r}; use e.g. r=8")
    alpha = config.alpha  # NaN and inf are rejected too: no comparison with them holds
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < math.inf:
        raise UserError(f"LoRA alpha must be a positive number, got {config.alpha!r}; use e.g. alpha=16")
    if not isinstance(config.dropout, int | float) or not 0.0 <= config.dropout < 1.0:
        raise UserError(f"LoRA dropout must be in [0, 1), got {config.dropout!r}; use e.g. dropout=0.05")
    if config.bias not in BIAS_MODES:
        raise UserError(f"LoRA bias must be one of {', '.join(BIAS_MODES)}, got {config.bias!r}")
    if config.init not in INIT_MODES:
        raise UserError(f"LoRA init must be one of {', '.join(INIT_MODES)}, got {config.init!r}")
    targets = config.target_modules
    if isinstance(targets, str):
        if not targets.strip():
            raise UserError('target_modules is empty; use "all-linear", a regex or a list of module names')
    elif not targets or not all(isinstance(t, str) and t for t in targets):
        raise UserError('target_modules must be "all-linear", a regex or a non-empty list of module names')
    if config.use_dora and config.init in ("pissa", "olora", "loftq"):
        raise UserError(
            f"init {config.init} is not supported with DoRA (lora_variant = dora); use init kaiming or plain LoRA"
        )
    if config.use_dora and config.qkv_parts is not None:
        raise UserError("DoRA adapts whole matrices; drop qkv_parts or use plain LoRA")
    if config.qkv_parts is not None:
        parts = config.qkv_parts
        if not parts or any(p not in QKV_PARTS for p in parts) or len(set(parts)) != len(parts):
            raise UserError(
                f"qkv_parts must be distinct letters from q, k, v, got {parts!r}; e.g. ['q', 'v']"
            )

"""LoRALinear: a frozen linear layer plus the low-rank update of its active adapter (Hu et al. 2021).

    h = W0·x + scaling·B·A·dropout(x)

The layer wraps the original module (kept as `base_layer`) and works for `nn.Linear` (weight d_out×d_in) and
transformers' GPT-2 `Conv1D` (weight d_in×d_out, y = x·W + b). Its adapters sit in the ModuleDict `adapters`,
keyed by adapter name, one update module each: plain LoRA (update.py), DoRA (dora.py) or row blocks of a fused
q,k,v projection (qkv.py). Being submodules, every adapter's weights move with `model.to(...)` and appear in
`state_dict()`; `adapter` is a plain reference to the active one (None: the layer passes its input to the base
layer), so a forward looks nothing up by name.

`merge()` folds the active update into W0 so evaluation costs nothing extra; `unmerge()` takes it out again.
`eval()` merges and `train()` un-merges (nn.Module.eval() calls train(False), so both go through `train`),
unless `auto_merge` is off (inject.set_auto_merge), which keeps the update separate in evaluation too.

When the base layer is quantized (QLoRA's NF4Linear, or an int8 / bf16 base: loralab.precision), eval() does
not merge: folding ΔW into such a weight rounds it to that grid. An explicit merge() still does, with a warning;
to merge exactly, replace the quantized layers by dequantized copies first (loralab.methods.qlora.dequantize_base).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from loralab.errors import UserError
from loralab.lora.config import RESIDUAL_INITS, LoRAConfig
from loralab.lora.dora import DoRAUpdate
from loralab.lora.init import is_residual, residual_init, undo_residual
from loralab.lora.qkv import PartsUpdate
from loralab.lora.update import LoRAUpdate

DEFAULT_ADAPTER = "default"
_RESERVED = nn.ModuleDict()  # its attribute names ("train", "keys", ...) cannot be keys of a ModuleDict


def is_linear(module: nn.Module) -> bool:
    """True for the layer types LoRA can wrap."""
    return isinstance(module, nn.Linear | Conv1D)


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(d_in, d_out) of an nn.Linear or a Conv1D."""
    if isinstance(module, Conv1D):
        d_in, d_out = module.weight.shape
    else:
        d_out, d_in = module.weight.shape
    return d_in, d_out


def adapter_key(name: str) -> str:
    """The key of adapter `name` (a run folder's name) in a layer's ModuleDict: the name itself, unless a child
    module may not be called that (empty, with a ".", or an attribute of ModuleDict such as "train"); then "~"
    and the name with "~" written "~~" and "." written "~d" ("run.1" -> "~run~d1", "train" -> "~train")."""
    if name and "." not in name and not name.startswith("~") and not hasattr(_RESERVED, name):
        return name
    return "~" + name.replace("~", "~~").replace(".", "~d")


def base_forward(base: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """base(x); a plain nn.Linear without hooks is applied directly, so a merged layer costs what the base layer
    alone costs (one module call, not two)."""
    if type(base) is nn.Linear and not (base._forward_hooks or base._forward_pre_hooks):
        return F.linear(x, base.weight, base.bias)
    return base(x)


class LoRALinear(nn.Module):
    """A frozen `base_layer` plus adapters, one of them (or none) active.

    `LoRALinear(base, config)` (or the config's fields as keywords: `LoRALinear(base, r=8, alpha=16)`) adds a
    first adapter named `name` and makes it active; `parts` adapts only those (start, stop) row ranges of a
    fused projection (qkv.py). `LoRALinear(base)` holds no adapter yet (adapters.add_adapter fills it in).
    """

    def __init__(
        self,
        base_layer: nn.Module,
        config: LoRAConfig | None = None,
        parts: list[tuple[int, int]] | None = None,
        name: str = DEFAULT_ADAPTER,
        **fields,
    ) -> None:
        super().__init__()
        if not is_linear(base_layer):
            raise TypeError(f"LoRALinear wraps nn.Linear or Conv1D, not {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.fan_in_fan_out = isinstance(base_layer, Conv1D)
        self.d_in, self.d_out = linear_shape(base_layer)
        self.adapters = nn.ModuleDict()
        object.__setattr__(self, "adapter", None)  # a reference, not a second registration as a submodule
        self.merged = False
        self.disabled = False  # True inside adapters.disable_adapters
        self.row_adapters = None  # set inside adapters.adapter_per_row: each row with its own adapter
        self.auto_merge = True  # eval() merges; False keeps the update separate (inject.set_auto_merge)
        self._undo: tuple[LoRAUpdate, tuple] | None = None  # the merged update and what unmerge needs
        self._merged_versions: list[int] = []
        if fields:
            if config is not None:
                raise TypeError("pass a LoRAConfig or its fields as keywords, not both")
            config = LoRAConfig(**fields)
        if config is not None:
            self.add_adapter(name, config, parts)
            self.set_adapter(name)

    def add_adapter(self, name: str, config: LoRAConfig, parts: list[tuple[int, int]] | None = None) -> None:
        """Give this layer fresh weights (A random, B = 0; pissa / olora: from the weight, init.py) for adapter
        `name`; the active adapter stays."""
        residual = config.init in RESIDUAL_INITS
        if len(self.adapters) and (residual or any(is_residual(u) for u in self.adapters.values())):
            raise UserError(
                "init pissa / olora turns a layer's frozen weight into a residual that no other adapter can "
                "share; load each adapter into its own base model (a saved pissa / olora adapter loads as an "
                "ordinary LoRA)"
            )
        if config.use_dora:
            if parts is not None:
                raise ValueError("DoRA adapts a whole matrix; it cannot be combined with qkv_parts")
            update = DoRAUpdate(self, config)
        else:
            update = LoRAUpdate(self, config) if parts is None else PartsUpdate(self, config, parts)
        if residual:
            residual_init(self, update, config.init)
        self.adapters[adapter_key(name)] = update.train(self.training)

    def delete_adapter(self, name: str) -> None:
        """Drop adapter `name`'s weights from this layer (if it has them); none is active if it was. A pissa /
        olora adapter gives the frozen weight back what its init took out."""
        if is_residual(self.update_of(name)):
            self.unmerge()
            undo_residual(self, self.update_of(name))
        update = self.adapters._modules.pop(adapter_key(name), None)
        if update is not None and update is self.adapter:
            self.set_adapter(None)

    def update_of(self, name: str) -> LoRAUpdate | None:
        """Adapter `name`'s update in this layer, or None if that adapter does not touch it."""
        return self.adapters._modules.get(adapter_key(name))  # ModuleDict itself has no get()

    def set_adapter(self, name: str | None) -> None:
        """Apply adapter `name` from now on (None, or an adapter this layer does not hold: none)."""
        self.unmerge()
        object.__setattr__(self, "adapter", None if name is None else self.update_of(name))

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

    def out_in(self, weight: torch.Tensor) -> torch.Tensor:
        """A d_out × d_in weight in the base weight's layout, or back (Conv1D stores d_in × d_out)."""
        return weight.T if self.fan_in_fan_out else weight

    def delta_weight(self) -> torch.Tensor:
        """The active adapter's ΔW in the layout of the base weight."""
        return self.adapter.delta_weight(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Runs for every adapted layer and token (120 layers per token when decoding): attribute reads only.
        if self.row_adapters is not None:
            return self.row_adapters.forward(self, x)
        update = self.adapter
        if update is None or self.disabled:
            return base_forward(self._modules["base_layer"], x)
        if self.merged:
            if not self._merged_is_stale(update):
                return base_forward(self._modules["base_layer"], x)
            self.unmerge()
        if (
            not self.training
            and self.auto_merge
            and not self._needs_grad(update)
            and not self.base_is_quantized
        ):
            self.merge()
            return base_forward(self._modules["base_layer"], x)
        return update.forward(self, x)

    @staticmethod
    def _needs_grad(update: LoRAUpdate) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in update._parameters.values())

    def _merged_is_stale(self, update: LoRAUpdate) -> bool:
        """True when the update's weights changed in place since the merge, or gradients must reach them."""
        return self._versions(update) != self._merged_versions or self._needs_grad(update)

    @staticmethod
    def _versions(update: LoRAUpdate) -> list[int]:
        return [t._version for t in update._parameters.values()]  # a list: cheaper per call than a tuple

    @torch.no_grad()
    def merge(self) -> None:
        """W0 ← W0 + ΔW of the active adapter (DoRA: its rescaled weight). A second call does nothing.

        What was added can be taken out exactly by `unmerge`, even if the adapter's weights were edited in
        between; a later forward or merge notices such an edit and merges anew.
        """
        if self.merged and self._versions(self._undo[0]) != self._merged_versions:
            self.unmerge()
        update = self.adapter
        if self.merged or update is None or self.disabled:
            return
        change, saved = update.merge_change(self)
        self._add_to_base(change)
        self._undo = (update, saved)
        self._merged_versions = self._versions(update)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the merged update out of W0 again. Does nothing when not merged."""
        if self.merged:
            update, saved = self._undo
            self._add_to_base(update.unmerge_change(self, saved))
            self._undo = None
            self.merged = False

    def _add_to_base(self, change: torch.Tensor) -> None:
        if self.base_is_quantized:
            grid = self.base_layer.grid
            warnings.warn(
                f"merging LoRA into a {grid} base weight re-quantizes it: the merged weight is rounded to the "
                f"{grid} grid; call loralab.methods.qlora.dequantize_base(model) first to merge into full precision",
                stacklevel=3,
            )
            self.base_layer.set_weight(self.base_layer.weight + change)
        else:
            self.base_layer.weight.data += change.to(self.base_layer.weight.dtype)

    def train(self, mode: bool = True) -> LoRALinear:
        """train() un-merges; eval() merges (nn.Module.eval() calls train(False)), unless the base is quantized."""
        super().train(mode)
        if mode:
            self.unmerge()
        elif self.auto_merge and not self.base_is_quantized:
            self.merge()
        return self

    def extra_repr(self) -> str:
        return f"merged={self.merged}"

"""Turn a model's frozen linear layers into low-precision ones (int8.py, bf16.py), in place.

A layer is converted when its weight trains not (LoRA's bases, the frozen part of last_layers, every linear of
a soft-prompt model) and is not shared with another module. A frozen LM head computes in bf16 (head_precision),
tied to the input embeddings or not: the embeddings keep the full-precision matrix for their lookups, and the
head gets a bf16 copy of its own (marked `tied`, so that its weights are not counted twice); the training loss
multiplies through it (evaluation/head_loss.py). Trained weights, LoRA's A and B, norms and embeddings keep
their precision.
"""

from __future__ import annotations

import collections

import torch
from torch import nn

from loralab.lora.inject import all_lora_layers, set_submodule
from loralab.lora.layer import is_linear, linear_shape
from loralab.lora.nf4 import NF4Linear
from loralab.naming import module_name
from loralab.precision.bf16 import Bf16Linear
from loralab.precision.choose import native_units
from loralab.precision.frozen import FrozenLinear
from loralab.precision.int8 import Int8Linear, int8_shape_ok
from loralab.precision.nf4_products import set_nf4_products

LAYERS = {"bf16": Bf16Linear, "int8": Int8Linear}


def _shared_weights(model: nn.Module) -> set[int]:
    counts = collections.Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    return {key for key, n in counts.items() if n > 1}


def _output_head(model: nn.Module) -> nn.Module | None:
    get_head = getattr(model, "get_output_embeddings", None)
    return get_head() if callable(get_head) else None


def convertible_linears(model: nn.Module) -> list[str]:
    """Names of the frozen, unshared nn.Linear / Conv1D layers that are not the output head."""
    head = _output_head(model)
    shared = _shared_weights(model)
    return [
        name
        for name, module in model.named_modules()
        if is_linear(module)
        and module is not head
        and not module.weight.requires_grad
        and (module.bias is None or not module.bias.requires_grad)
        and id(module.weight) not in shared
    ]


def convert_base(model: nn.Module, precision: str, device: torch.device) -> tuple[int, int, str | None]:
    """Replace every convertible linear layer by its `precision` ("bf16" or "int8") version, make QLoRA's NF4
    layers multiply in it, and a frozen LM head in head_precision; returns (layers converted, layers left in
    full precision because int8 cannot take their shape on `device`, the head's new format or None)."""
    if precision == "fp32":
        return 0, 0, None
    for layer in all_lora_layers(model).values():
        layer.unmerge()  # a model in eval mode merged on wrapping: convert the pure base weight
    converted = kept = 0
    for name in convertible_linears(model):
        module = model.get_submodule(name)
        d_in, d_out = linear_shape(module)
        if precision == "int8" and not int8_shape_ok(d_in, d_out, device):
            kept += 1
            continue
        set_submodule(model, name, LAYERS[precision](module))
        converted += 1
    head = _convert_head(model, precision, device)
    if converted or head:
        own_storage(model)
    return converted + set_nf4_products(model, precision), kept, head


def head_precision(precision: str, device: torch.device) -> str:
    """The format of a frozen LM head under base precision `precision`: bf16 under bf16, and under int8 where
    the device has bf16 units; never int8. The head's output gradient (softmax − one-hot) is one spike per row,
    and per-row int8 rounds the rest of the row to zero: on SmolLM2 an int8 head turned LoRA's gradients to a
    cosine of 0.62 against fp32's; with a bf16 head they kept 0.99 (benchmarks/precision_error.py)."""
    if precision == "bf16" or (precision == "int8" and native_units("bf16", device)):
        return "bf16"
    return "fp32"


def _convert_head(model: nn.Module, precision: str, device: torch.device) -> str | None:
    """Replace the output head by its head_precision version when it is a frozen nn.Linear; that format, or
    None when the head stays as it is."""
    head = _output_head(model)
    if (
        type(head) is not nn.Linear
        or head.weight.requires_grad
        or head_precision(precision, device) == "fp32"
    ):
        return None
    tied = id(head.weight) in _shared_weights(model)
    low = Bf16Linear(head)
    low.tied = tied
    set_submodule(model, module_name(model, head), low)
    return low.grid


@torch.no_grad()
def own_storage(model: nn.Module) -> None:
    """Copy the remaining weights into memory of their own. Weights loaded from safetensors can be views of
    the file's memory map; while one of them is alive the whole map (fp32 weights included) stays resident."""
    for parameter in model.parameters():
        parameter.data = parameter.data.clone()
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer is not None:
                setattr(module, name, buffer.clone())


def low_precision_layers(model: nn.Module) -> dict[str, int]:
    """How many layers of each grid the model holds (to check that the chosen path is really taken)."""
    grids = [m.grid for m in model.modules() if isinstance(m, FrozenLinear | NF4Linear)]
    return dict(collections.Counter(grids))

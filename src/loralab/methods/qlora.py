"""QLoRA (Dettmers et al. 2023): LoRA on a base model whose targeted linear weights are stored in 4-bit NF4.

The LoRA part is loralab's LoRA unchanged; every base layer LoRA wraps is replaced by an NF4Linear
(loralab.lora.nf4), dequantized on the fly in forward and backward, on CPU as on GPU. The adapter is saved in the
usual peft layout, plus `quantization.json` so that evaluation rebuilds the same 4-bit base it trained on.
Evaluation does not merge LoRA into the 4-bit weights (that would round ΔW to the NF4 grid);
`dequantize_base` turns the base back into full precision for an exact merge.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import torch
from torch import nn

from loralab.config import RunConfig
from loralab.errors import UserError
from loralab.files import read_json_object, write_text_atomically
from loralab.lora import load_adapter
from loralab.lora.inject import all_lora_layers
from loralab.lora.nf4 import BLOCK_SIZE, NF4Linear, to_linear
from loralab.methods.base import Method
from loralab.methods.lora import METHOD as LORA

QUANT_FILE = "quantization.json"


def quantize_base(model: nn.Module, double_quant: bool = True) -> nn.Module:
    """Replace the nn.Linear inside every LoRA layer by an NF4Linear (in place); frees the fp32 weights."""
    layers = list(all_lora_layers(model).values())
    if not any(isinstance(layer.base_layer, nn.Linear) for layer in layers):
        raise UserError(
            "qlora found no nn.Linear under LoRA to quantize (GPT-2's Conv1D is not supported); "
            "use method lora for this model"
        )
    for layer in layers:
        if isinstance(layer.base_layer, nn.Linear):
            layer.unmerge()  # a model in eval mode merged on wrapping: quantize the pure base weight
            layer.base_layer = NF4Linear(layer.base_layer, double_quant)
    _own_storage(model)
    gc.collect()
    return model


@torch.no_grad()
def _own_storage(model: nn.Module) -> None:
    """Copy the remaining weights into memory of their own. Weights loaded from safetensors can be views of
    the file's memory map; while one of them is alive the whole map (fp32 weights included) stays resident."""
    for parameter in model.parameters():
        parameter.data = parameter.data.clone()
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer is not None:
                setattr(module, name, buffer.clone())


def dequantize_base(model: nn.Module) -> nn.Module:
    """Replace every NF4Linear by a full-precision nn.Linear with its dequantized weight (in place)."""
    for layer in all_lora_layers(model).values():
        if isinstance(layer.base_layer, NF4Linear):
            layer.base_layer = to_linear(layer.base_layer)
    return model


def quantization_report(model: nn.Module) -> dict:
    """How many weights are 4-bit and the bytes they take, against the same weights in fp32."""
    layers = [m for m in model.modules() if isinstance(m, NF4Linear)]
    numel = sum(layer.quantized_numel for layer in layers)
    nbytes = sum(layer.weight_nbytes() for layer in layers)
    return {
        "quantized_layers": len(layers),
        "quantized_weights": numel,
        "quantized_bytes": nbytes,
        "fp32_bytes": 4 * numel,
        "ratio_to_fp32": nbytes / (4 * numel) if numel else None,
    }


def prepare(
    model: nn.Module, config: RunConfig, extra_modules: tuple[str, ...] = (), tokenizer=None
) -> nn.Module:
    return quantize_base(LORA.prepare(model, config, extra_modules), config.nf4_double_quant)


def save(model: nn.Module, directory: Path, config: RunConfig) -> None:
    LORA.save(model, directory, config)
    meta = {"quant_type": "nf4", "block_size": BLOCK_SIZE, "double_quant": config.nf4_double_quant}
    write_text_atomically(directory / QUANT_FILE, json.dumps(meta, indent=2))


def load(model: nn.Module, directory: Path) -> nn.Module:
    meta = read_json_object(
        Path(directory) / QUANT_FILE, "a qlora run's quantization settings", "is it a qlora run?"
    )
    return quantize_base(load_adapter(model, directory), meta["double_quant"])


def restore(model: nn.Module, directory: Path) -> nn.Module:
    return LORA.restore(model, directory)


def summary(model: nn.Module) -> dict:
    return {"quantization": quantization_report(model)}


METHOD = Method("qlora", prepare, save, load, restore, summary=summary)

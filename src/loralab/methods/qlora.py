"""QLoRA (Dettmers et al. 2023): LoRA on a base model whose targeted linear weights are stored in 4-bit NF4.

The LoRA part is loralab's LoRA unchanged; every base layer LoRA wraps is replaced by an NF4Linear
(loralab.lora.nf4), dequantized on the fly in forward and backward, on CPU as on GPU. The adapter is saved in the
usual peft layout, plus `quantization.json` so that evaluation rebuilds the same 4-bit base it trained on.
Evaluation does not merge LoRA into the 4-bit weights (that would round ΔW to the NF4 grid);
`dequantize_base` turns the base back into full precision for an exact merge.

With init = "loftq" (Li et al. 2023, lora/init.py) the 4-bit base and A, B come from LoftQ's alternating NF4
rounding and low-rank fit; quantization.json keeps loftq_iter, and loading runs the same steps (no fit of A, B:
they come from the adapter) to rebuild the same base. The adapter fits that 4-bit base, not the original
weights: to use it with peft, give peft the base as its dequantized weights (`dequantized_base_model`).
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

from torch import nn

from loralab.config import RunConfig
from loralab.errors import UserError
from loralab.files import read_json_object, write_text_atomically
from loralab.lora import load_adapter
from loralab.lora.init import is_residual, loftq_weight
from loralab.lora.inject import all_lora_layers, set_submodule
from loralab.lora.nf4 import BLOCK_SIZE, NF4Linear, to_linear
from loralab.methods.base import Method
from loralab.methods.lora import METHOD as LORA
from loralab.precision.convert import own_storage
from loralab.precision.frozen import FrozenLinear

QUANT_FILE = "quantization.json"


def quantize_base(
    model: nn.Module, double_quant: bool = True, loftq_iter: int = 0, fit: bool = True
) -> nn.Module:
    """Replace the nn.Linear inside every LoRA layer by an NF4Linear (in place); frees the fp32 weights.

    loftq_iter > 0: the 4-bit weight is LoftQ's after that many steps, and with `fit` the active adapter's A, B
    are set to LoftQ's fit (without: they stay, e.g. loaded from an adapter folder)."""
    layers = list(all_lora_layers(model).values())
    if not any(isinstance(layer.base_layer, nn.Linear) for layer in layers):
        raise UserError(
            "qlora found no nn.Linear under LoRA to quantize (GPT-2's Conv1D is not supported); "
            "use method lora for this model"
        )
    if any(is_residual(update) for layer in layers for update in layer.adapters.values()):
        raise UserError(
            "init pissa / olora changed the base weights, and qlora would quantize those residuals, which a "
            "saved adapter does not fit; use init loftq (or kaiming) with qlora, or method lora"
        )
    for layer in layers:
        if isinstance(layer.base_layer, nn.Linear):
            layer.unmerge()  # a model in eval mode merged on wrapping: quantize the pure base weight
            quantized = NF4Linear(layer.base_layer, double_quant)
            if loftq_iter and layer.adapter is not None:
                quantized.set_weight(loftq_weight(layer, layer.adapter, loftq_iter, double_quant, fit))
            layer.base_layer = quantized
    own_storage(model)
    gc.collect()
    return model


def dequantize_base(model: nn.Module) -> nn.Module:
    """Replace every quantized base layer of LoRA (NF4, int8, bf16) by a full-precision nn.Linear (GPT-2: Conv1D)
    holding its dequantized weight (in place)."""
    for layer in all_lora_layers(model).values():
        if isinstance(layer.base_layer, NF4Linear):
            layer.base_layer = to_linear(layer.base_layer)
        elif isinstance(layer.base_layer, FrozenLinear):
            layer.base_layer = layer.base_layer.to_linear()
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


def dequantized_base_model(model: nn.Module) -> nn.Module:
    """The base model that a qlora adapter fits, as peft must be given it (in place): every 4-bit weight
    dequantized to full precision, the LoRA layers taken out without merging. save_pretrained it, and
    PeftModel.from_pretrained(that model, adapter folder) computes what the qlora model does."""
    dequantize_base(model)
    for name, layer in all_lora_layers(model).items():
        layer.unmerge()
        set_submodule(model, name, layer.base_layer)
    for attribute in ("lora_config", "lora_target_names", "lora_adapters", "active_adapter"):
        if hasattr(model, attribute):
            delattr(model, attribute)
    return model


def _loftq_iter(config: RunConfig) -> int:
    return config.loftq_iter if config.init == "loftq" else 0


def prepare(
    model: nn.Module, config: RunConfig, extra_modules: tuple[str, ...] = (), tokenizer=None
) -> nn.Module:
    lora = LORA.prepare(model, config, extra_modules)
    return quantize_base(lora, config.nf4_double_quant, _loftq_iter(config))


def save(model: nn.Module, directory: Path, config: RunConfig) -> None:
    LORA.save(model, directory, config)
    meta = {
        "quant_type": "nf4",
        "block_size": BLOCK_SIZE,
        "double_quant": config.nf4_double_quant,
        "loftq_iter": _loftq_iter(config),
    }
    write_text_atomically(directory / QUANT_FILE, json.dumps(meta, indent=2))


def load(model: nn.Module, directory: Path) -> nn.Module:
    meta = read_json_object(
        Path(directory) / QUANT_FILE, "a qlora run's quantization settings", "is it a qlora run?"
    )
    # 0: plain NF4 of the weights (also in runs saved before LoftQ existed)
    loftq_iter = int(meta.get("loftq_iter", 0))
    return quantize_base(load_adapter(model, directory), meta["double_quant"], loftq_iter, fit=False)


def restore(model: nn.Module, directory: Path) -> nn.Module:
    return LORA.restore(model, directory)


def summary(model: nn.Module) -> dict:
    return {"quantization": quantization_report(model)}


METHOD = Method("qlora", prepare, save, load, restore, summary=summary)

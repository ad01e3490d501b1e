"""`loralab export RUN_DIR --to DIR`: a finished run as a plain transformers model folder.

The run's result is folded into the base weights (LoRA and DoRA merged, a QLoRA base dequantized first, full
and last-layer runs as trained), the wrapper modules are taken out again, and the model and its tokenizer are
written with `save_pretrained` (safetensors, config.json, tokenizer files). The folder loads with
`AutoModelForCausalLM.from_pretrained(DIR)` (or the Auto class of the model's kind) without loralab.

Soft prompts and RNN students have no place in a transformers checkpoint, so those runs are refused.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from transformers import PreTrainedModel

from loralab.errors import UserError
from loralab.files import write_folder_atomically
from loralab.lora.inject import unload_lora
from loralab.methods.qlora import dequantize_base
from loralab.training.run_model import load_for_inference

NOT_EXPORTABLE = {
    "prompt_tuning": "a soft prompt is extra input, not a weight change; load the run with loralab instead",
    "distill": "the student is loralab's own RNN (or a model you named); export works on adapted pretrained models",
}


def merged_model(model: torch.nn.Module) -> PreTrainedModel:
    """The model with every LoRA update folded into its weights and the LoRA wrappers removed (in place)."""

    dequantize_base(model)  # 4-bit bases back to full precision, so the merge is exact
    unload_lora(model)
    if not isinstance(model, PreTrainedModel):
        raise UserError(f"cannot export a {type(model).__name__}: only transformers models can be saved")
    return model


def export_run(run: Path, config, destination: Path, overwrite: bool = False) -> Path:
    """Write run's merged model and tokenizer to `destination`; refuse to replace an existing folder unless
    `overwrite`. The folder is written beside `destination` and renamed into place at the end, so a failure
    leaves nothing half-written and an existing folder untouched until the new one is complete."""

    destination = Path(destination)
    if destination.exists() and not overwrite:
        raise UserError(f"{destination} exists; pick a new folder or pass --overwrite to replace it")
    if config.method in NOT_EXPORTABLE:
        raise UserError(f"cannot export a {config.method} run: {NOT_EXPORTABLE[config.method]}")
    if destination.resolve() == run.resolve() or run.resolve() in destination.resolve().parents:
        raise UserError(f"export into a folder outside the run ({run}), not into it")
    destination.parent.mkdir(parents=True, exist_ok=True)
    # merged from the original weights, whatever precision the base computed in while training
    model, tokenizer, _, _ = load_for_inference(dataclasses.replace(config, base_precision="fp32"), run)
    model = merged_model(model.to("cpu"))

    def write(scratch: Path) -> None:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)

    write_folder_atomically(destination, write)
    return destination

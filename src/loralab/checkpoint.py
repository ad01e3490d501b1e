"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON, swapped in atomically.

    checkpoint/weights.safetensors     every trainable parameter, by name
    checkpoint/optimizer.safetensors   AdamW moments (state.<i>.<key>) and the torch RNG state
    checkpoint/state.json              step, epoch, position in the epoch, best loss, optimizer param groups, ...

The folder is written as a temp folder and renamed over the old one, so a crash leaves either the old
checkpoint or the new one, never half of each.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from loralab.errors import UserError
from loralab.tensor_files import read_tensors


def save_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    weights = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    opt = optimizer.state_dict()
    tensors = {"rng.torch": torch.get_rng_state()}
    scalars: dict[str, dict] = {}
    for index, slots in opt["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    meta = dict(state, param_groups=opt["param_groups"], optimizer_scalars=scalars)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        save_file(weights, str(tmp / "weights.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=2))
        old = directory.with_name(f".{directory.name}.old")
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore trainable weights, optimizer moments and RNG; return the saved state dict."""
    if not (directory / "state.json").is_file():
        raise UserError(f"no checkpoint in {directory}; start the run without --resume")
    meta = json.loads((directory / "state.json").read_text())
    fix = "the checkpoint is damaged: start the run again without --resume (with --overwrite)"
    weights = read_tensors(directory / "weights.safetensors", fix)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(weights) != set(params):
        raise UserError(f"checkpoint in {directory} does not fit this model/config; start a new out_dir")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    tensors = read_tensors(directory / "optimizer.safetensors", fix)
    torch.set_rng_state(tensors.pop("rng.torch"))
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, index, slot = key.split(".", 2)
        state.setdefault(int(index), {})[slot] = value
    for index, slots in meta.pop("optimizer_scalars").items():
        state.setdefault(int(index), {}).update(slots)
    groups = meta.pop("param_groups")
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return meta

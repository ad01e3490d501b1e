"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON, each file checksummed.

    checkpoint/weights.safetensors     every trainable parameter, by name
    checkpoint/optimizer.safetensors   AdamW moments (state.<i>.<key>) and the RNG states of torch and numpy
    checkpoint/state.json              step, epoch, position in the epoch, best loss, optimizer param groups,
                                       python's RNG state and the SHA-256 of the two tensor files

The learning rate needs no saved scheduler: it is a function of the step (training.schedule). The data order
of an epoch is a function of the seed and the epoch, so the position in it is one number.

A new checkpoint is written into a temp folder (files fsynced), then the current one becomes
`checkpoint.previous` and the temp folder `checkpoint`: a crash at any moment leaves at least one complete
checkpoint. `usable_checkpoint` checks the checksums and picks the previous one when the latest is damaged
or missing.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from loralab.errors import UserError
from loralab.files import read_json_object, read_tensors, sha256_of

TENSOR_FILES = ("weights.safetensors", "optimizer.safetensors")
STATE_FILE = "state.json"


def previous_of(directory: Path) -> Path:
    """Where the checkpoint before the latest one is kept."""
    return directory.with_name(f"{directory.name}.previous")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    _, keys, pos, has_gauss, gauss = np.random.get_state()  # legacy MT19937 state: 624 words, position
    tensors["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    return tensors | {
        "rng.numpy_rest": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "rng.numpy_gauss": torch.tensor([gauss], dtype=torch.float64),
    }


def _restore_rng(tensors: dict[str, torch.Tensor], python_state: list | None) -> None:
    torch.set_rng_state(tensors.pop("rng.torch"))
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    states = [tensors.pop(k) for k in cuda]
    if states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states)
    if "rng.numpy" in tensors:
        keys = tensors.pop("rng.numpy").numpy().astype(np.uint32)
        pos, has_gauss = (int(v) for v in tensors.pop("rng.numpy_rest"))
        np.random.set_state(("MT19937", keys, pos, has_gauss, float(tensors.pop("rng.numpy_gauss")[0])))
    if python_state is not None:  # None: a checkpoint written before python's state was kept
        version, internal, gauss_next = python_state
        random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    """Write weights, optimizer moments, RNG states and `state` as the new latest checkpoint, atomically."""
    weights = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    opt = optimizer.state_dict()
    tensors = _rng_tensors()
    scalars: dict[str, dict] = {}
    for index, slots in opt["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    meta = dict(
        state, param_groups=opt["param_groups"], optimizer_scalars=scalars, python_rng=list(random.getstate())
    )
    for stale in directory.parent.glob(f".{directory.name}.*"):  # left by a process killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        save_file(weights, str(tmp / TENSOR_FILES[0]))
        save_file(tensors, str(tmp / TENSOR_FILES[1]))
        meta["sha256"] = {name: sha256_of(tmp / name) for name in TENSOR_FILES}
        (tmp / STATE_FILE).write_text(json.dumps(meta, indent=2))
        for name in (*TENSOR_FILES, STATE_FILE):
            _fsync(tmp / name)
        _rotate_in(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _rotate_in(tmp: Path, directory: Path) -> None:
    """latest → previous, tmp → latest; each step a rename, so some complete checkpoint is always on disk."""
    previous = previous_of(directory)
    if directory.exists():
        if previous.exists():
            trash = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.trash."))
            previous.rename(trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        directory.rename(previous)
    tmp.rename(directory)
    _fsync(directory.parent)


def checkpoint_problem(directory: Path) -> str | None:
    """Why the checkpoint in `directory` cannot be used (missing, unreadable, checksum mismatch), or None."""
    path = directory / STATE_FILE
    if not path.is_file():
        return f"{path} is missing"
    try:
        state = read_json_object(path, "readable JSON", "the checkpoint is damaged")
    except UserError as exc:
        return str(exc)
    sums = state.get("sha256", {})  # {}: written before checksums were kept
    for name in TENSOR_FILES:
        if not (directory / name).is_file():
            return f"{directory / name} is missing"
        if sums and sha256_of(directory / name) != sums.get(name):
            return f"{directory / name} does not match its checksum (damaged or partly written)"
    return None


def usable_checkpoint(directory: Path, log: Callable[[str], None]) -> Path | None:
    """The latest checkpoint that passes its checks (`directory` or its previous one); None if there is none
    at all. A damaged latest one is reported through `log`; if every one is damaged, UserError."""
    candidates = (directory, previous_of(directory))
    if not any(d.exists() for d in candidates):
        return None
    problems = []
    for candidate in candidates:
        problem = checkpoint_problem(candidate)
        if problem is None:
            if problems:
                log(f"{problems[0]}; resuming from the previous checkpoint, {candidate}")
            return candidate
        problems.append(problem)
    raise UserError(
        f"no usable checkpoint: {'; '.join(problems)}; start the run again without --resume "
        "(with --overwrite)"
    )


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore trainable weights, optimizer moments and RNG states from `directory`; return the saved state.

    `directory` is one checkpoint folder; usable_checkpoint picks between the latest and the previous one."""
    if not (directory / STATE_FILE).is_file():
        raise UserError(f"no checkpoint in {directory}; start the run without --resume")
    fix = "the checkpoint is damaged: start the run again without --resume (with --overwrite)"
    meta = read_json_object(directory / STATE_FILE, "valid JSON", fix)
    weights = read_tensors(directory / TENSOR_FILES[0], fix)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(weights) != set(params) or any(weights[k].shape != params[k].shape for k in params):
        raise UserError(f"checkpoint in {directory} does not fit this model/config; start a new out_dir")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    tensors = read_tensors(directory / TENSOR_FILES[1], fix)
    meta.pop("sha256", None)
    _restore_rng(tensors, meta.pop("python_rng", None))
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

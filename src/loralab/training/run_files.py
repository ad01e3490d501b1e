"""Run outputs: metrics.jsonl lines, summary.json, the loss curve, and peak memory."""

from __future__ import annotations

import ctypes
import gc
import json
import resource
import sys
from pathlib import Path

import torch

from loralab.errors import UserError
from loralab.files import write_atomically


def append_metrics(path: Path, record: dict) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a last line cut short (the process was killed while writing it) is
    left out."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise UserError(f"{path} line {number} is not JSON; delete the line or the file") from None
    return records


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def current_memory_mb(device: torch.device) -> float | None:
    """Memory in use now: CUDA memory allocated on a GPU, the resident set size on CPU (Linux)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    resident = _status_kib("VmRSS")
    return resident / 2**10 if resident is not None else None


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (e.g. after the model is loaded and prepared, before training).

    CUDA: the allocator's peak. CPU on Linux: freed heap is handed back to the OS (malloc_trim) and the
    kernel's resident-set high-water mark is reset to the current size (/proc/self/clear_refs). Elsewhere the
    window cannot be reset and peak_memory_mb reports the whole process.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except (OSError, AttributeError):
        pass


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated since the last reset on a GPU; on CPU the peak resident set size since the
    last reset (Linux), else of the whole process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    high_water = _status_kib("VmHWM")
    if high_water is not None:
        return high_water / 2**10
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def process_peak_memory_mb(device: torch.device) -> float:
    """The whole process's peak (CPU: maximum resident set size, including model loading)."""
    if device.type == "cuda":
        return peak_memory_mb(device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def plot_losses(records: list[dict], path: Path, title: str) -> None:
    """Train loss per logged step and validation loss per evaluation, in one PNG."""
    import matplotlib  # imported here: plotting is the last step of a run, and matplotlib is slow to load

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val, strict=True), label="validation", marker="o")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per answer token")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)

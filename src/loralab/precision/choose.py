"""Which number format the frozen base weights compute in: the one asked for, or with "auto" the fastest this
machine runs well, picked from its CPU flags (or CUDA capability) and confirmed by a short probe: machines of
one kind differ in their CPU, and a flag alone does not say that torch's kernels use it."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from loralab.precision.bf16 import Bf16Linear
from loralab.precision.int8 import Int8Linear

PRECISIONS = ("auto", "fp32", "bf16", "int8")
UNITS = {  # CPU flags (/proc/cpuinfo) naming units that run the format natively
    "bf16": ("amx_bf16", "avx512_bf16"),
    "int8": ("amx_int8", "avx512_vnni", "avx_vnni"),
}
MIN_GAIN = 1.25  # "auto" takes a format only when the probe finds it at least this much faster than fp32
PROBE_SHAPE = (256, 1024, 1024)  # tokens × d_in × d_out: one mid-sized layer call


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def native_units(precision: str, device: torch.device) -> list[str]:
    """The units this device has for `precision` (CPU flags; on CUDA bf16 support), empty if none."""
    if device.type == "cuda":
        ok = precision == "int8" or torch.cuda.is_bf16_supported()
        return (
            [f"CUDA capability {'.'.join(map(str, torch.cuda.get_device_capability(device)))}"] if ok else []
        )
    flags = cpu_flags()
    return [flag for flag in UNITS.get(precision, ()) if flag in flags]


def probe(device: torch.device, repeats: int = 5) -> dict[str, float]:
    """Seconds of one layer call (PROBE_SHAPE, everything it does included) in each format, the best of
    `repeats` after a warm-up. The formats take turns within each repeat, so that a burst of load from another
    process slows each of them rather than the one that happened to be running."""
    tokens, d_in, d_out = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    linear = nn.Linear(d_in, d_out, bias=False).requires_grad_(False)
    nn.init.normal_(linear.weight, std=d_in**-0.5, generator=generator)
    x = torch.randn(tokens, d_in, generator=generator).to(device)
    linear.to(device)
    calls = {
        "fp32": lambda inputs: F.linear(inputs, linear.weight),
        "bf16": Bf16Linear(linear),
        "int8": Int8Linear(linear),
    }
    seconds = dict.fromkeys(calls, float("inf"))
    with torch.no_grad():
        for call in calls.values():
            call(x)
        for _ in range(repeats):
            for name, call in calls.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                call(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds[name] = min(seconds[name], time.perf_counter() - start)
    return seconds


def choose_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """(the format to use, one line saying what was chosen and why)."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown base precision {requested!r}")
    if requested != "auto":
        missing = requested != "fp32" and not native_units(requested, device)
        why = (
            f" (this {device.type.upper()} has no {requested} units: expect it slower than fp32)"
            if missing
            else ""
        )
        return (
            requested,
            f"base_precision {requested}: frozen base weights stored and multiplied in {requested}{why}",
        )
    candidates = [p for p in ("int8", "bf16") if native_units(p, device)]
    if not candidates:
        return "fp32", "base_precision auto: fp32 (no bf16 or int8 units found on this machine)"
    seconds = probe(device)
    gains = {p: seconds["fp32"] / seconds[p] for p in candidates}
    probed = ", ".join(f"{p} {gains[p]:.1f}x" for p in candidates)
    best = max(candidates, key=gains.get)
    if gains[best] < MIN_GAIN:
        return (
            "fp32",
            f"base_precision auto: fp32 (a probe found no format at least {MIN_GAIN}x faster: {probed})",
        )
    units = ", ".join(native_units(best, device))
    return best, f"base_precision auto: {best} ({units}; a probe measured {probed} the speed of fp32)"

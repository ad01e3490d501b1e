"""`loralab merge RUN_A RUN_B ... --how linear|ties|dare|dare_ties --out DIR`: the LoRA adapters of finished
runs merged into one (lora/merge.py: task arithmetic, TIES, DARE), written as a run folder that `loralab eval`
and `loralab generate` load like a trained run:

    DIR/config.json     the first run's config, with the merged adapter's rank, alpha and targets
    DIR/adapter/        the merged adapter (peft layout: PeftModel.from_pretrained loads it too)
    DIR/merge.json      the inputs, weights, how, density, seed, rank, and per layer the SVD truncation error

Everything is checked and computed before anything is written; the folder is then written beside DIR and
renamed into place, so a failure leaves nothing behind (and an existing DIR untouched until the end).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from loralab.errors import UserError

HOWS = ("linear", "ties", "dare", "dare_ties")  # as lora/merge.py (imported lazily: it loads torch)
DEFAULT_DENSITY = 0.2  # the TIES paper keeps the top 20% (k = 20)

MERGE_HELP = """Merge the LoRA adapters of RUN_DIRs (runs of one base model) into one adapter, written to --out
as a run folder: `loralab eval DIR` and `loralab generate DIR` use it like a trained run, peft loads DIR/adapter.

Per layer, adapter i (weight w_i) gives the task vector τ_i = w_i·ΔW_i (0 where it adapts nothing):
  linear     Σ τ_i (task arithmetic); exact at the default rank (the sum of the ranks)
  ties       TIES-Merging (Yadav et al. 2023): keep the top --density of each τ_i by magnitude, elect each
             entry's sign by the sum, average the values of that sign
  dare       DARE (Yu et al. 2023): keep each entry with probability --density, divide by it, then Σ
  dare_ties  DARE's drop and rescale, then TIES' sign election and average
The result returns to --rank by truncated SVD; what that loses (relative Frobenius error per layer) is
printed and written to DIR/merge.json.

examples:
  loralab merge runs/sst runs/code --out runs/sst+code
  loralab merge runs/a runs/b runs/c --how ties --density 0.3 --weights 0.5,0.3,0.2 --rank 16 --out runs/abc
"""


def add_merge_parser(commands: argparse._SubParsersAction) -> None:
    """Register `loralab merge` on the CLI's subcommands."""
    merge = commands.add_parser(
        "merge",
        help="merge the LoRA adapters of several runs into one (linear, TIES, DARE)",
        description=MERGE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    merge.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="LoRA runs of one base model")
    merge.add_argument("--out", required=True, metavar="DIR", help="the run folder to write")
    merge.add_argument("--how", choices=HOWS, default="linear", help="the merge (default linear)")
    merge.add_argument(
        "--weights",
        nargs="+",
        metavar="W",
        help="one weight per run, e.g. 0.7 0.3 or 0.7,0.3 (negative subtracts; default 1 each)",
    )
    merge.add_argument(
        "--density",
        type=float,
        help=f"ties/dare: the fraction of each ΔW kept, in (0, 1] (default {DEFAULT_DENSITY})",
    )
    merge.add_argument(
        "--rank",
        type=int,
        help="the merged adapter's rank (default: linear the sum of the ranks, exact; else the largest)",
    )
    merge.add_argument("--seed", type=int, default=0, help="dare: the seed of the random drop (default 0)")
    merge.add_argument("--overwrite", action="store_true", help="replace DIR if it holds something")


def parse_weights(values: list[str] | None, count: int) -> list[float]:
    """The --weights values (separate or comma-separated) as floats, one per run; 1 each without any."""
    if not values:
        return [1.0] * count
    weights = []
    for item in (p for v in values for p in v.split(",") if p.strip()):
        try:
            weight = float(item)
        except ValueError:
            raise UserError(f"--weights: {item!r} is not a number; e.g. --weights 0.7,0.3") from None
        if not math.isfinite(weight):
            raise UserError(f"--weights: {item} is not a finite number; e.g. --weights 0.7,0.3")
        weights.append(weight)
    if len(weights) != count:
        raise UserError(f"{len(weights)} --weights for {count} runs; give one weight per run")
    return weights


def check_out(out: Path, runs: list[Path], overwrite: bool) -> None:
    """UserError when DIR cannot take the merge: a file, a folder holding something (without --overwrite), a
    run itself or a folder inside or around one, or an unwritable place."""
    from loralab.files import check_writable

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pick a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(
            f"--out {out} holds files already; pick a new folder or pass --overwrite to replace it"
        )
    target = out.resolve()
    for run in runs:
        source = run.resolve()
        if target == source or source in target.parents or target in source.parents:
            raise UserError(f"--out {out} overlaps the run {run}; write the merge to a folder of its own")
    check_writable(out, "pick another --out folder")


def read_runs(folders: list[str]) -> list:
    """(RunConfig, Path) of every run, checked: LoRA runs of one base model, each with its adapter/."""
    from loralab.config import read_run_config

    runs = []
    for folder in folders:
        run = Path(folder)
        if not (run / "config.json").is_file():
            raise UserError(
                f"{run} is not a loralab run folder (no config.json); pass the out_dir of a training run"
            )
        config = read_run_config(run / "config.json")
        if config.method != "lora":
            raise UserError(
                f"{run} is a {config.method} run; merging works on LoRA adapters (method lora) only"
            )
        if not (run / "adapter").is_dir():
            raise UserError(f"{run} has no adapter/ folder yet; train it first (or resume it)")
        runs.append((config, run))
    first, first_run = runs[0]
    for config, run in runs[1:]:
        if (config.model, config.model_kind) != (first.model, first.model_kind):
            raise UserError(
                f"{run} was trained on {config.model} ({config.model_kind}), {first_run} on {first.model} "
                f"({first.model_kind}): merge adapters of one base model"
            )
    return runs


def merge_runs(
    folders: list[str],
    out: Path,
    how: str = "linear",
    weights: list[float] | None = None,
    density: float | None = None,
    rank: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Merge the runs' adapters into the run folder `out` (module docstring); returns merge.json's record."""
    import dataclasses

    from loralab.files import write_folder_atomically, write_json_atomically
    from loralab.lora.merge import merge_adapters, read_adapter, save_merged

    if how not in HOWS:
        raise UserError(f"unknown merge {how!r}; use one of {', '.join(HOWS)}")
    if how == "linear" and density is not None:
        raise UserError("--density applies to ties, dare and dare_ties; drop it for a linear merge")
    if density is not None and not 0 < density <= 1:
        raise UserError(f"--density must be in (0, 1], got {density}; e.g. 0.2 keeps a fifth of each ΔW")
    if rank is not None and rank < 1:
        raise UserError(f"--rank must be a positive integer, got {rank}")
    weights = [1.0] * len(folders) if weights is None else weights
    if len(weights) != len(folders):
        raise UserError(f"{len(weights)} --weights for {len(folders)} runs; give one weight per run")
    out = Path(out)
    runs = read_runs(folders)
    check_out(out, [run for _, run in runs], overwrite)
    density = 1.0 if how == "linear" else DEFAULT_DENSITY if density is None else density
    adapters = [read_adapter(run / "adapter") for _, run in runs]
    merged = merge_adapters(adapters, weights, how, density, rank, seed)
    targets = merged.config.target_modules
    config = dataclasses.replace(
        runs[0][0], out_dir=str(out), rank=merged.config.r, alpha=merged.config.alpha, dropout=0.0,
        target_modules=targets if isinstance(targets, str) else list(targets), bias="none", use_rslora=False,
        lora_variant="lora", init="kaiming", modules_to_save=[], qkv_parts=[],
    )  # fmt: skip
    record = {
        "how": how,
        "runs": [str(run) for _, run in runs],
        "weights": weights,
        "density": None if how == "linear" else density,
        "seed": seed if how.startswith("dare") else None,
        "rank": merged.config.r,
        "relative_error": merged.relative_error,
        "layers": {name: e["relative_error"] for name, e in merged.errors.items()},
    }

    def write(scratch: Path) -> None:
        save_merged(merged, scratch / "adapter")
        write_json_atomically(scratch / "config.json", config.to_dict())
        write_json_atomically(scratch / "merge.json", record)

    write_folder_atomically(out, write)
    return record


def cmd_merge(args: argparse.Namespace, overrides: list[str]) -> int:
    """Merge, then print the rank and what the SVD truncation lost."""
    if overrides:
        raise UserError(f"loralab merge takes no overrides, got {' '.join(overrides)}")
    weights = parse_weights(args.weights, len(args.run_dirs))
    record = merge_runs(
        args.run_dirs, Path(args.out), args.how, weights, args.density, args.rank, args.seed, args.overwrite
    )
    worst = max(record["layers"], key=record["layers"].get)
    setting = "" if args.how == "linear" else f", density {record['density']:g}"
    print(f"merged {len(args.run_dirs)} runs ({args.how}{setting}) into {args.out}: rank {record['rank']}, "
          f"{len(record['layers'])} layers")  # fmt: skip
    print(
        f"SVD truncation error (relative Frobenius, ‖ΔW − ΔW_r‖/‖ΔW‖): {record['relative_error']:.3g} over all "
        f"layers, at most {record['layers'][worst]:.3g} ({worst}); per layer in merge.json"
    )
    return 0

"""Several runs from one config: `loralab compare` (one run per method) and `loralab sweep` (a grid of keys).

Every run gets its own folder under a parent folder and the same data, seed and budget; only the compared
keys differ. Each run trains in a fresh process, so its peak memory and time are its own (not what an earlier
run left behind) and a crash (even one the OS kills for memory) stops only that run. A run that already
finished is reused and a run with a checkpoint is resumed, so an interrupted comparison continues when the
same command is given again. A run that fails is recorded (error.json) and the others go on; the report shows
it with its error.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from loralab.config import CHOICES, RunConfig, config_from_dict, load_config
from loralab.errors import Interrupted, UserError
from loralab.evaluation.code_eval import check_code_eval
from loralab.files import read_json_object, write_json_atomically
from loralab.training.loop import train
from loralab.training.run_dir import RESUMABLE_CHANGES

ERROR_FILE = "error.json"


def log(message: str) -> None:
    print(f"loralab: {message}", file=sys.stderr, flush=True)


def split_overrides(overrides: list[str], names: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Shared overrides, and per-run ones written --NAME.key=value (e.g. --full.lr=5e-5)."""
    shared: list[str] = []
    own: dict[str, list[str]] = {name: [] for name in names}
    for item in overrides:
        key = item[2:].split("=", 1)[0]
        prefix, dot, rest = key.partition(".")
        if dot and prefix in own:
            own[prefix].append(f"--{rest}={item.split('=', 1)[1]}")
        elif dot:
            raise UserError(
                f"override {item!r} names {prefix!r}, which is not one of the runs: {', '.join(names)}"
            )
        else:
            shared.append(item)
    return shared, own


def parent_folder(config_path: str, overrides: list[str], suffix: str) -> Path:
    """--out_dir when given; else the config's out_dir with a suffix (runs/x_compare), apart from plain runs."""
    out = Path(load_config(config_path, overrides).out_dir)
    given = any(item.startswith(("--out_dir=", "--out-dir=")) for item in overrides)
    return out if given else out.with_name(out.name + suffix)


def parse_methods(text: str) -> list[tuple[str, str]]:
    """(run name, method) pairs from "lora,full,pissa:lora": a NAME:METHOD entry is a second run of a method
    under its own name, whose settings --NAME.key=value overrides give (--pissa.init=pissa)."""
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        if item:
            name, _, method = item.rpartition(":")
            pairs.append((name.strip() or method.strip(), method.strip()))
    return pairs


def compare_configs(
    config_path: str, methods: list[str] | list[tuple[str, str]], overrides: list[str]
) -> list[tuple[str, RunConfig]]:
    """One config per method (or named run of a method), all from the same file and overrides, in folders
    under the parent out_dir."""
    pairs = [(m, m) if isinstance(m, str) else m for m in methods]
    unknown = [method for _, method in pairs if method not in CHOICES["method"]]
    if unknown or not pairs:
        raise UserError(
            f"--methods must list methods from {', '.join(CHOICES['method'])} (or NAME:METHOD), got "
            f"{', '.join(unknown) or 'none'}"
        )
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise UserError(f"--methods names a run twice ({', '.join(names)}); give repeats a NAME:METHOD name")
    shared, own = split_overrides(overrides, names)
    parent = parent_folder(config_path, shared, "_compare")
    return [
        (name, load_config(config_path, [*shared, *own[name], f"--method={m}", f"--out_dir={parent / name}"]))
        for name, m in pairs
    ]


def parse_seeds(text: str) -> list[int]:
    """[0, 1, 2] from "0,1,2"; UserError for anything but distinct non-negative integers."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must be distinct non-negative integers such as 0,1,2, got {text!r}")
    return seeds


SEED_SUFFIX = "_seed="


def with_seeds(runs: list[tuple[str, RunConfig]], seeds: list[int]) -> list[tuple[str, RunConfig]]:
    """Each run once per seed (NAME_seed=S, in its own folder). The seed changes the batch order, the
    initialisations and dropout; data_seed stays as the config had it, so every seed trains on the same
    subset and is tested on the same examples (and runs of one seed can be paired example by example)."""
    if not seeds:
        return runs
    repeated = []
    for name, config in runs:
        out = Path(config.out_dir)
        for seed in seeds:
            changes = [f"--seed={seed}", f"--data_seed={config.subset_seed}"]
            changes.append(f"--out_dir={out.with_name(f'{out.name}{SEED_SUFFIX}{seed}')}")
            repeated.append((f"{name}{SEED_SUFFIX}{seed}", load_config(None, changes, base=config)))
    return repeated


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    grid = []
    for item in items:
        key, eq, values = item.partition("=")
        parts = [v.strip() for v in values.split(",") if v.strip()]
        if not eq or not key or not parts:
            raise UserError(f"--grid {item!r} must look like key=value1,value2 (e.g. rank=8,16,32)")
        grid.append((key.strip().replace("-", "_"), parts))
    if len({key for key, _ in grid}) != len(grid):
        raise UserError("each key may appear in one --grid only")
    return grid


def sweep_configs(
    config_path: str, grid_items: list[str], overrides: list[str], alpha_over_rank: float = 0.0
) -> list[tuple[str, RunConfig]]:
    """One config per point of the grid; with alpha_over_rank, alpha = that × rank (constant α/r scaling)."""
    grid = parse_grid(grid_items)
    if alpha_over_rank < 0:
        raise UserError(f"--alpha-over-rank must be > 0, got {alpha_over_rank}")
    if alpha_over_rank and any(key == "alpha" for key, _ in grid):
        raise UserError("--alpha-over-rank sets alpha from rank; do not also put alpha in the grid")
    parent = parent_folder(config_path, overrides, "_sweep")
    configs = []
    for values in itertools.product(*(vals for _, vals in grid)):
        point = [f"--{key}={value}" for (key, _), value in zip(grid, values, strict=True)]
        name = "_".join(f"{key}={value}" for (key, _), value in zip(grid, values, strict=True))
        config = load_config(config_path, [*overrides, *point, f"--out_dir={parent / name}"])
        if alpha_over_rank:
            config = load_config(None, [f"--alpha={alpha_over_rank * config.rank}"], base=config)
        configs.append((name, config))
    return configs


def run_all(runs: list[tuple[str, RunConfig]], overwrite: bool = False) -> list[Path]:
    """Train each config in turn, each in its own process (reusing finished runs, resuming interrupted ones);
    return the run folders."""
    if not overwrite:
        check_earlier_runs(runs)
    for _name, config in runs:  # once, before any run, rather than one refused run after another
        check_code_eval(config)
    folders: list[Path] = []
    durations: list[float] = []  # seconds of each run trained by this call, for the time-left estimate
    for i, (name, config) in enumerate(runs, 1):
        out = Path(config.out_dir)
        folders.append(out)
        if (out / "summary.json").is_file() and not overwrite:
            log(f"[{i}/{len(runs)}] {name}: finished earlier, reusing {out}")
            continue
        resume = (out / "checkpoint" / "state.json").is_file() and not overwrite
        log(
            f"[{i}/{len(runs)}] {name}: {'resuming' if resume else 'training'} in {out}"
            f"{_time_left(durations, len(runs) - i + 1)}"
        )
        started = time.monotonic()
        (out / ERROR_FILE).unlink(missing_ok=True)
        process = multiprocessing.get_context("spawn").Process(
            target=_train_one, args=(name, config.to_dict(), resume, overwrite or not resume)
        )
        process.start()
        with _forwarding_sigterm(process) as stopped:
            try:
                process.join()
            except KeyboardInterrupt:
                process.join()
                raise
        if stopped:  # the run saved a checkpoint and left; so do we, with the same news
            raise Interrupted(
                f"stopped by SIGTERM during {name}; give the same command again to resume", 128 + stopped[0]
            )
        error = read_error(out)
        if process.exitcode != 0 and error is None:
            how = f"signal {-process.exitcode}" if process.exitcode < 0 else f"exit code {process.exitcode}"
            hint = " (killed: out of memory?)" if process.exitcode == -9 else ""
            error = {"error": f"the run's process ended with {how}{hint}"}
            _record_failure(out, name, config, error["error"], "")
        durations.append(time.monotonic() - started)
        if error is not None:
            log(f"[{i}/{len(runs)}] {name} failed: {error['error']}")
    return folders


@contextlib.contextmanager
def _forwarding_sigterm(process: multiprocessing.process.BaseProcess) -> Iterator[list[int]]:
    """While a run's process works, pass a SIGTERM sent to us on to it (it saves a checkpoint between steps and
    exits), rather than dying and leaving it training alone; yields the signals received."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield []
        return
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        process.terminate()

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _time_left(durations: list[float], remaining: int) -> str:
    """ "; ~N min per run, about M min left" from the runs timed so far (empty before the first)."""
    if not durations:
        return ""
    per_run = sum(durations) / len(durations)
    return f"; {per_run / 60:.1f} min per run so far, about {per_run * remaining / 60:.0f} min left"


def _record_failure(out: Path, name: str, config: RunConfig, message: str, trace: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(
        out / ERROR_FILE,
        {
            "name": name,
            "method": config.method,
            "error": message,
            "config": config.to_dict(),
            "traceback": trace,
        },
    )


def _train_one(name: str, config_values: dict, resume: bool, overwrite: bool) -> None:
    """The body of one run's process: train, or record why it failed (error.json) and exit with 1."""

    config = config_from_dict(config_values)
    try:
        train(config, resume=resume, overwrite=overwrite)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Interrupted as exc:  # stopped by a signal after saving a checkpoint: resumable, not failed
        log(str(exc))
        raise SystemExit(exc.code) from None
    except Exception as exc:  # one failing method must not sink the comparison
        message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        _record_failure(Path(config.out_dir), name, config, message, traceback.format_exc())
        raise SystemExit(1) from None


def check_earlier_runs(runs: list[tuple[str, RunConfig]]) -> None:
    """Refuse (before anything trains) to reuse or resume a folder that holds a run with other settings."""

    for name, config in runs:
        saved = Path(config.out_dir) / "config.json"
        if saved.is_file():
            earlier = read_json_object(
                saved, "a run config", "pass --overwrite to replace that run or choose another --out_dir"
            )
            changed = sorted(
                k
                for k, v in config.to_dict().items()
                if earlier.get(k, v) != v and k not in RESUMABLE_CHANGES
            )
            if changed:
                raise UserError(
                    f"{config.out_dir} holds a run of {name} with a different {', '.join(changed)}; "
                    "pass --overwrite to replace it or choose another --out_dir"
                )


def read_error(folder: Path) -> dict | None:
    path = folder / ERROR_FILE
    return (
        read_json_object(path, "a failed run's record", "delete it and run again") if path.is_file() else None
    )

"""The run folder: what a run writes there, and the checks before a run starts in (or continues) one."""

from __future__ import annotations

import shutil
from pathlib import Path

from loralab.config import RunConfig, read_run_config
from loralab.errors import UserError
from loralab.files import check_writable

RUN_FILES = ("config.json", "summary.json", "metrics.jsonl", "predictions.jsonl", "code_eval_samples.jsonl",
             "loss_curve.png", "confusion.png", "adapter", "checkpoint", "checkpoint.previous", "teacher_logits.safetensors",
             "tensorboard", "wandb", "wandb_run_id")  # fmt: skip
# Keys that may change when a run is resumed (to train longer or evaluate differently; out_dir: a moved run).
RESUMABLE_CHANGES = {"epochs", "max_steps", "patience", "eval_every", "device", "eval_batch_size",
                     "gradient_checkpointing", "compile", "report_to", "on_nonfinite", "out_dir",
                     "code_eval_isolation", "bootstrap_resamples"}  # fmt: skip


def check_out_dir(config: RunConfig, resume: bool, overwrite: bool) -> Path:
    """The checks that change nothing: a folder we may write, a run to resume, or no run to clobber unless
    asked. Done first, so that a run that cannot start fails before the data and the model load."""
    out = Path(config.out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"out_dir {out} is a file; choose a folder")
    check_writable(out)  # a read-only, full or forbidden out_dir fails now, not after the model has loaded
    if resume and not (out / "config.json").is_file():
        raise UserError(f"nothing to resume in {out} (no config.json); drop --resume to start a new run")
    if not resume and not overwrite and _holds_run(out):
        raise UserError(
            f"{out} already holds a run; pass --overwrite to replace it, --resume to continue it, "
            "or choose another out_dir"
        )
    return out


def _holds_run(out: Path) -> bool:
    return (
        (out / "config.json").is_file() or (out / "summary.json").is_file() or (out / "checkpoint").exists()
    )


def prepare_out_dir(config: RunConfig, resume: bool, overwrite: bool) -> Path:
    """check_out_dir, then check a resumed run's config still fits, or (overwrite) remove the earlier run.

    Called once the data and the model have loaded (config then holds what the data decided, such as the
    label words), so that a run that fails to start leaves an earlier run where it was."""
    out = check_out_dir(config, resume, overwrite)
    if resume:
        old = read_run_config(out / "config.json").to_dict()
        changed = sorted(k for k, v in config.to_dict().items() if old[k] != v and k not in RESUMABLE_CHANGES)
        if changed:
            raise UserError(
                f"--resume with a different {', '.join(changed)} than the run in {out}; use a new out_dir"
            )
        return out
    if _holds_run(out):
        for name in RUN_FILES:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    return out

"""Where a run's numbers go: metrics.jsonl always; TensorBoard event files (out_dir/tensorboard) and Weights &
Biases when `report_to` names them.

Each record is a dict with a "step"; its numbers become scalars under fixed tags (train/loss, train/lr,
train/memory_mb, eval/loss, ...), the test metrics at the end go under test/. Weights & Biases runs offline
unless WANDB_MODE says otherwise (a machine without internet must not hang); `wandb sync` uploads later.
"""

from __future__ import annotations

import os
from pathlib import Path

from loralab.errors import UserError
from loralab.training.run_files import append_metrics

TAGS = {
    "train_loss": "train/loss",
    "lr": "train/lr",
    "target_tokens": "train/target_tokens",
    "memory_mb": "train/memory_mb",
    "val_loss": "eval/loss",
    "val_accuracy": "eval/accuracy",
    "best_val_loss": "eval/best_loss",
    "eval_time_s": "eval/time_s",
}


class RunLog:
    """metrics.jsonl plus the reporters asked for; `resume_step` (the first step still to come when a run
    resumes) drops the TensorBoard events logged at and after it by the interrupted run."""

    def __init__(
        self,
        out: Path,
        report_to: list[str],
        config: dict,
        resume_step: int | None = None,
        enabled: bool = True,
    ) -> None:
        self.path = out / "metrics.jsonl"
        self.enabled = enabled  # False: write nothing (the other ranks of a torchrun job)
        self.tensorboard = self.wandb = None
        if not enabled:
            return
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step)
        if "wandb" in report_to:
            self.wandb = _start_wandb(out, config, resume=resume_step is not None)

    def log(self, record: dict) -> None:
        """Append `record` to metrics.jsonl and send its numbers to the reporters at record["step"]."""
        if self.enabled:
            append_metrics(self.path, record)
        self._scalars(
            {TAGS.get(k, f"other/{k}"): v for k, v in record.items() if k not in ("step", "epoch")},
            record["step"],
        )

    def log_test(self, metrics: dict, step: int) -> None:
        """The final test metrics (numbers only) under test/."""
        self._scalars({f"test/{k}": v for k, v in metrics.items()}, step)

    def _scalars(self, values: dict, step: int) -> None:
        numbers = {
            k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if self.tensorboard is not None:
            for tag, value in numbers.items():
                self.tensorboard.add_scalar(tag, value, step)
        if self.wandb is not None and numbers:
            self.wandb.log(numbers, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def check_reporters(report_to: list[str]) -> None:
    """Refuse reporters whose package is missing, before any training starts (config.validate has checked
    the names)."""
    if "tensorboard" in report_to:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise UserError(
                "report_to = tensorboard needs the tensorboard package: pip install tensorboard"
            ) from None
    if "wandb" in report_to:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UserError("report_to = wandb needs the wandb package: pip install wandb") from None


def _start_wandb(out: Path, config: dict, resume: bool):
    import wandb

    run_id_file = out / "wandb_run_id"
    run_id = run_id_file.read_text().strip() if resume and run_id_file.is_file() else None
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "loralab"),
        name=out.name,
        dir=str(out),
        config=config,
        mode=os.environ.get("WANDB_MODE", "offline"),
        id=run_id,
        resume="allow" if run_id else None,
    )
    run_id_file.write_text(run.id)
    return run

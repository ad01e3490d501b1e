"""Run logging: metrics.jsonl and TensorBoard event files with fixed tags; bad reporters are user errors."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from loralab.config import load_config
from loralab.errors import UserError
from loralab.training.run_log import RunLog, check_reporters


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in a TensorBoard folder as (step, value) pairs, as TensorBoard itself reads them."""
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_records_go_to_jsonl_and_tensorboard_under_fixed_tags(tmp_path):
    log = RunLog(tmp_path, ["tensorboard"], {"lr": 1e-3})
    log.log({"step": 0, "epoch": 0, "val_loss": 2.5, "best_val_loss": 2.5})
    for step in (1, 2):
        log.log({"step": step, "epoch": 0, "train_loss": 3.0 - step, "lr": 1e-3 * step, "memory_mb": 512.0,
                 "note": "text is not a scalar"})  # fmt: skip
    log.log_test({"accuracy": 0.75, "n": 48, "per_class": {"positive": 1.0}}, step=2)
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 1, 2]
    tags = scalars(tmp_path / "tensorboard")
    assert tags["train/loss"] == [(1, 2.0), (2, 1.0)]
    assert [step for step, _ in tags["train/lr"]] == [1, 2]
    assert tags["train/memory_mb"] == [(1, 512.0), (2, 512.0)]
    assert tags["eval/loss"] == [(0, 2.5)] and tags["eval/best_loss"] == [(0, 2.5)]
    assert tags["test/accuracy"] == [(2, 0.75)] and tags["test/n"] == [(2, 48.0)]
    assert not any("note" in tag or "per_class" in tag for tag in tags)


def test_resuming_drops_the_events_logged_after_the_checkpoint(tmp_path):
    first = RunLog(tmp_path, ["tensorboard"], {})
    for step in (1, 2, 3, 4):  # checkpoint at step 2, then killed after logging 3 and 4
        first.log({"step": step, "train_loss": float(step)})
    first.close()
    resumed = RunLog(tmp_path, ["tensorboard"], {}, resume_step=3)
    for step in (3, 4, 5):
        resumed.log({"step": step, "train_loss": 10.0 + step})
    resumed.close()
    assert scalars(tmp_path / "tensorboard")["train/loss"] == [
        (1, 1.0),
        (2, 2.0),
        (3, 13.0),
        (4, 14.0),
        (5, 15.0),
    ]


def test_no_reporters_writes_only_the_jsonl(tmp_path):
    log = RunLog(tmp_path, [], {})
    log.log({"step": 1, "train_loss": torch.tensor(1.0).item()})
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_bad_reporters_are_user_errors(monkeypatch):
    with pytest.raises(UserError, match="report_to: unknown reporter 'mlflow'"):
        load_config(None, ["--report_to=tensorboard,mlflow"])
    assert load_config(None, ["--report_to="]).report_to == []
    monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # as if wandb were not installed
    with pytest.raises(UserError, match="pip install wandb"):
        check_reporters(["wandb"])


def test_weights_and_biases_runs_offline_and_writes_its_run_beside_the_metrics(tmp_path, monkeypatch):
    pytest.importorskip("wandb")  # the dev extra installs it
    monkeypatch.delenv(
        "WANDB_MODE", raising=False
    )  # the default must be offline: this machine has no internet
    monkeypatch.setenv("WANDB_SILENT", "true")
    log = RunLog(tmp_path, ["wandb"], {"lr": 1e-3, "rank": 8})
    for step in (1, 2, 3):
        log.log({"step": step, "train_loss": 1.0 / step})
    log.log_test({"accuracy": 0.5}, step=3)
    log.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert (tmp_path / "wandb_run_id").read_text().strip() in runs[0].name

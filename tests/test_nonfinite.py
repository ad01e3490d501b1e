"""A NaN or Inf in a training step: stop with a message naming the step and the cause, keeping the last good
checkpoint, or (on_nonfinite = "skip") skip the step and count it."""

import json
import math

import pytest
from safetensors.torch import load_file

import loralab.training.setup as training_setup
from loralab.cli import main

SMALL = ["configs/rotten_tomatoes_lora.toml", "--max_train_samples=48", "--max_eval_samples=8",
         "--max_test_samples=4", "--max_steps=5", "--eval_every=2", "--batch_size=8", "--max_length=48",
         "--lr=1e-2", "--report_to="]  # fmt: skip


@pytest.fixture
def nan_at_step_3(monkeypatch):
    """The training loss of the third step comes out NaN (as an overflow would)."""
    real = training_setup.compiled_loss

    def poisoned(loss_sum, config):
        inner, calls = real(loss_sum, config), []

        def loss(model, batch):
            value, n = inner(model, batch)
            calls.append(1)
            return (value * math.nan if len(calls) == 3 else value), n

        return loss

    monkeypatch.setattr(training_setup, "compiled_loss", poisoned)


def test_a_nan_step_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path, tiny_llama_folder, shared_data, monkeypatch, capsys, nan_at_step_3
):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    out = tmp_path / "run"
    assert main(["train", *SMALL, f"--model={tiny_llama_folder}", f"--out_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert "step 3: the loss is nan; lr 0.01 may be too high" in err
    assert "--resume --on_nonfinite=skip" in err and "Traceback" not in err
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2  # the evaluation at step 2 wrote it; step 3 changed nothing
    weights = load_file(out / "checkpoint" / "weights.safetensors")
    assert all(w.isfinite().all() for w in weights.values())
    assert not (out / "summary.json").exists()
    argv = [
        "train",
        *SMALL,
        f"--model={tiny_llama_folder}",
        f"--out_dir={out}",
        "--resume",
        "--on_nonfinite=skip",
    ]
    assert main(argv) == 0  # what the message advises works: the run goes on from step 2 to the end
    assert json.loads((out / "summary.json").read_text())["steps"] == 5


def test_skip_mode_leaves_the_step_out_and_counts_it(
    tmp_path, tiny_llama_folder, shared_data, monkeypatch, capsys, nan_at_step_3
):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    out = tmp_path / "run"
    argv = ["train", *SMALL, f"--model={tiny_llama_folder}", f"--out_dir={out}", "--on_nonfinite=skip"]
    assert main(argv) == 0
    assert "step 3: the loss is nan: skipped, no update (1 so far)" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_steps"] == 1 and summary["steps"] == 5
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert all(w.isfinite().all() for w in adapter.values())

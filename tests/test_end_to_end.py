"""Real runs on the bundled SmolLM2-135M-Instruct and real Rotten Tomatoes data (slow: minutes on 2 cores)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from loralab.cli import main

pytestmark = pytest.mark.slow
DEMO = "configs/rotten_tomatoes_lora.toml"
SMALL = ["--max_train_samples=64", "--max_eval_samples=32", "--max_test_samples=48", "--batch_size=8",
         "--max_length=96", "--eval_every=4"]  # fmt: skip


@pytest.fixture(autouse=True)
def offline_shared_data(monkeypatch, shared_data):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_lowers_validation_loss_then_eval_and_generate(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", DEMO, f"--out_dir={out}", "--max_steps=8", *SMALL]) == 0
    stdout = capsys.readouterr().out
    evals = [r for r in lines(out / "metrics.jsonl") if "val_loss" in r]
    assert [r["step"] for r in evals] == [0, 4, 8]
    assert evals[-1]["val_loss"] < 0.5 * evals[0]["val_loss"]  # the base model's loss at step 0 vs trained

    summary = json.loads((out / "summary.json").read_text())
    # all-linear on SmolLM2-135M: r * (d_in + d_out) for q, k, v, o, gate, up, down in 30 layers
    per_layer = (576 + 576) + (576 + 192) * 2 + (576 + 576) + (576 + 1536) * 2 + (1536 + 576)
    assert summary["trainable_params"] == 8 * per_layer * 30 == 2_442_240
    assert summary["trainable_percent"] == pytest.approx(100 * 2_442_240 / summary["total_params"])
    assert summary["steps"] == 8 and summary["best_val_loss"] == min(r["val_loss"] for r in evals)
    for key in ("peak_memory_mb", "train_time_s", "time_per_epoch_s"):
        assert summary[key] > 0
    metrics = summary["metrics"]
    assert metrics["n"] == 48 and 0 <= metrics["invalid_rate"] <= 1
    assert {"accuracy", "precision", "recall", "f1", "per_class"} <= metrics.keys()
    assert f"accuracy {metrics['accuracy']:.4f} on 48 examples" in stdout
    low, high = metrics["ci95"]["accuracy"]  # a bootstrap interval over the 48 test reviews
    assert low <= metrics["accuracy"] <= high and set(metrics["ci95"]) >= {"accuracy", "macro_f1"}
    assert f"accuracy {metrics['accuracy']:.3f} [{low:.3f}, {high:.3f}]" in stdout
    assert (out / "test_statistics.safetensors").is_file()
    assert len(lines(out / "predictions.jsonl")) == 48
    assert (out / "loss_curve.png").stat().st_size > 1000
    assert {p.name for p in (out / "adapter").iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
    }

    assert main(["eval", str(out)]) == 0  # greedy decoding: the same score again
    assert f"accuracy {metrics['accuracy']:.4f} on 48 examples" in capsys.readouterr().out
    assert main(["generate", str(out), "--prompt=Review: a warm, funny and moving film\nSentiment:"]) == 0
    assert capsys.readouterr().out.strip().lower().startswith(("positive", "negative"))


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, interrupt_after_checkpoint):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", DEMO, f"--out_dir={straight}", "--max_steps=8", "--max_test_samples=8", *SMALL[:-1],
                 "--eval_every=4"]) == 0  # fmt: skip

    args = ["train", DEMO, f"--out_dir={resumed}", "--max_steps=8", "--max_test_samples=8", *SMALL[:-1],
            "--eval_every=4"]  # fmt: skip
    with interrupt_after_checkpoint(step=4):
        assert main(args) == 130
    assert not (resumed / "summary.json").exists()
    assert main([*args, "--resume"]) == 0

    a = load_file(straight / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert all(
        torch.equal(a[k], b[k]) for k in a
    )  # bit-identical: validation never writes the frozen weights
    steps = [r["step"] for r in lines(resumed / "metrics.jsonl") if "train_loss" in r]
    assert steps == list(range(1, 9))

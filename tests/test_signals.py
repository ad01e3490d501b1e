"""SIGTERM / SIGINT during training: the step under way finishes, a checkpoint is saved, the process exits
saying how to resume, and --resume carries on from that step."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

RUN = ["configs/rotten_tomatoes_lora.toml", "--max_train_samples=800", "--max_eval_samples=8",
       "--max_test_samples=4", "--max_steps=200", "--eval_every=1000", "--batch_size=4", "--max_length=48",
       "--report_to="]  # fmt: skip


def train_steps(out) -> list[int]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if "train_loss" in line]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint_and_resume_continues(tmp_path, tiny_llama_folder, shared_data, sig):
    out = tmp_path / "run"
    env = os.environ | {"LORALAB_DATA_DIR": str(shared_data), "HF_HUB_OFFLINE": "1"}
    argv = [
        sys.executable,
        "-m",
        "loralab",
        "train",
        *RUN,
        f"--model={tiny_llama_folder}",
        f"--out_dir={out}",
    ]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(train_steps(out)) < 3 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, err[-2000:]
    assert f"stopped by {sig.name} after step" in err and "--resume to continue" in err
    assert "Traceback" not in err
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == train_steps(out)[-1] >= 3  # the checkpoint holds every step that was logged
    assert not (out / "summary.json").exists()

    resumed = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert train_steps(out) == list(range(1, 201))
    assert json.loads((out / "summary.json").read_text())["steps"] == 200


def test_sigterm_to_compare_stops_its_run_with_a_checkpoint_and_leaves_no_orphan(
    tmp_path, tiny_llama_folder, shared_data
):
    """compare trains each run in a child process: a SIGTERM to compare is passed on to the child, which saves
    its checkpoint and exits, and compare exits after it (without forwarding, the child trained on alone)."""
    parent = tmp_path / "cmp"
    out = parent / "lora"
    env = os.environ | {"LORALAB_DATA_DIR": str(shared_data), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "loralab", "compare", *RUN, "--methods=lora",
            f"--model={tiny_llama_folder}", f"--out_dir={parent}"]  # fmt: skip
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while len(train_steps(out)) < 3 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM after step" in err and "give the same command again to resume" in err
    assert "Traceback" not in err
    steps = train_steps(out)
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == steps[-1]
    time.sleep(2)
    assert train_steps(out) == steps  # nothing trains on after compare has gone
    assert not (out / "error.json").exists()  # stopped, not failed: the same command resumes it

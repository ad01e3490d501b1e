"""Crash safety: checkpoints are checksummed and rotated (a damaged or half-written latest one falls back to the
previous), RNG states come back, and a run killed with SIGKILL at random moments then resumed ends with the
bit-identical adapter of an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tiny_models
from loralab import LoRAConfig, apply_lora
from loralab.errors import UserError
from loralab.training.checkpoint import load_checkpoint, previous_of, save_checkpoint, usable_checkpoint
from loralab.training.run_files import read_metrics


def small_run() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = apply_lora(tiny_models.make("llama"), LoRAConfig(r=2, target_modules=["q_proj"]))
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])


def take_a_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    model(torch.randint(0, tiny_models.VOCAB, (2, 8))).logits.sum().backward()
    optimizer.step()
    optimizer.zero_grad()


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the tensor data: the file still parses, only the checksum can tell
    path.write_bytes(bytes(data))


def test_the_previous_checkpoint_is_kept_and_used_when_the_latest_is_damaged(tmp_path):
    model, optimizer = small_run()
    directory = tmp_path / "checkpoint"
    save_checkpoint(directory, model, optimizer, {"step": 1})
    take_a_step(model, optimizer)
    save_checkpoint(directory, model, optimizer, {"step": 2})
    notes: list[str] = []
    assert usable_checkpoint(directory, notes.append) == directory and not notes

    flip_a_byte(directory / "optimizer.safetensors")
    assert usable_checkpoint(directory, notes.append) == previous_of(directory)
    assert "optimizer.safetensors does not match its checksum" in notes[0]
    assert "resuming from the previous checkpoint" in notes[0]
    assert load_checkpoint(previous_of(directory), *small_run())["step"] == 1

    flip_a_byte(previous_of(directory) / "weights.safetensors")
    with pytest.raises(UserError, match="no usable checkpoint: .*checksum.*; .*checksum.*without --resume"):
        usable_checkpoint(directory, notes.append)


def test_a_crash_between_the_renames_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = small_run()
    directory = tmp_path / "checkpoint"
    save_checkpoint(directory, model, optimizer, {"step": 1})
    take_a_step(model, optimizer)
    real_rename = Path.rename

    def die_before_the_new_one_is_in_place(self, target):
        if Path(target) == directory:
            raise KeyboardInterrupt  # as a kill at that instant would leave it
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", die_before_the_new_one_is_in_place)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(directory, model, optimizer, {"step": 2})
    monkeypatch.undo()
    assert not directory.exists()
    notes: list[str] = []
    assert usable_checkpoint(directory, notes.append) == previous_of(directory)
    assert "checkpoint/state.json is missing" in notes[0]
    assert load_checkpoint(previous_of(directory), *small_run())["step"] == 1
    (tmp_path / ".checkpoint.leftover").mkdir()  # a temp folder a killed save left behind
    save_checkpoint(directory, model, optimizer, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "checkpoint.previous"]


def test_no_checkpoint_at_all_is_none_not_an_error(tmp_path):
    assert usable_checkpoint(tmp_path / "checkpoint", print) is None


def test_random_states_of_torch_numpy_and_python_come_back(tmp_path):
    model, optimizer = small_run()
    take_a_step(model, optimizer)
    save_checkpoint(tmp_path / "checkpoint", model, optimizer, {"step": 1})
    after_save = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    fresh_model, fresh_optimizer = small_run()
    assert load_checkpoint(tmp_path / "checkpoint", fresh_model, fresh_optimizer)["step"] == 1
    after_load = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    assert torch.equal(after_save[0], after_load[0]) and np.array_equal(after_save[1], after_load[1])
    assert after_save[2:] == after_load[2:]
    for a, b in zip(optimizer.state.values(), fresh_optimizer.state.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


# A run long enough to be killed in many places: 60 steps, a validation and a checkpoint every 5, dropout on
# (so the torch RNG state matters), the tiny Llama.
RUN = ["configs/rotten_tomatoes_lora.toml", "--max_train_samples=240", "--max_eval_samples=8",
       "--max_test_samples=4", "--max_steps=60", "--eval_every=5", "--batch_size=4", "--max_length=48",
       "--dropout=0.1", "--report_to="]  # fmt: skip
STEPS = 60


def logged(out: Path, key: str) -> list[dict]:
    return [r for r in read_metrics(out / "metrics.jsonl") if key in r]  # a line being written is left out


def checkpoint_step(out: Path) -> int | None:
    try:
        return json.loads((out / "checkpoint" / "state.json").read_text())["step"]
    except (OSError, json.JSONDecodeError):
        return None


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_bit_identical_adapter(
    tmp_path, tiny_llama_folder, shared_data
):
    env = os.environ | {"LORALAB_DATA_DIR": str(shared_data), "HF_HUB_OFFLINE": "1"}

    def argv(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "loralab", "train", *RUN, f"--model={tiny_llama_folder}", f"--out_dir={out}",
                *extra]  # fmt: skip

    straight = tmp_path / "straight"
    done = subprocess.run(argv(straight), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    summary = json.loads((straight / "summary.json").read_text())
    step_s = summary["train_time_s"] / summary["steps"]  # kills land within about three steps of a target
    out, chooser, kills = tmp_path / "killed", random.Random(7), []
    targets = [0, *sorted(chooser.sample(range(2, STEPS - 10), 5))]  # steps to kill after, one per start
    while_saving = {2, 4}  # these kills wait for a checkpoint being written and strike at once
    for attempt, target in enumerate(targets):
        if attempt:  # a step still to come (the kill before may have gone past this one)
            target = max(target, (checkpoint_step(out) or 0) + 1)
            if target > STEPS - 8:
                break  # too near the end to be sure of killing it before it finishes
        err = (tmp_path / f"stderr.{attempt}").open("w")  # a file: a pipe nobody reads would fill and block
        process = subprocess.Popen(argv(out, *(["--resume"] if attempt else [])), env=env,
                                   stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        if attempt == 0:  # while it starts: after config.json, maybe before the first checkpoint
            while not (out / "config.json").exists() and process.poll() is None:
                time.sleep(0.005)
        else:  # while it trains, validates or saves: past the target step, then a random delay
            started = (
                "resuming at step",
                "starting from step 0",
            )  # metrics.jsonl is cut back to its checkpoint
            while not any(s in Path(err.name).read_text() for s in started) and process.poll() is None:
                time.sleep(0.005)
            while len(logged(out, "train_loss")) < target and process.poll() is None:
                time.sleep(0.005)
        saving = False
        if attempt in while_saving:
            while not saving and process.poll() is None:
                saving = any(out.glob(".checkpoint.*"))  # the temp folder of a checkpoint not yet in place
        else:
            time.sleep(chooser.uniform(0, 3 * step_s))
        ended = process.poll() is not None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        err.close()
        assert not ended, f"the run ended before kill {attempt}: {Path(err.name).read_text()[-2000:]}"
        steps = [r["step"] for r in logged(out, "train_loss")]
        kills.append({"after_step": target, "last_logged": steps[-1] if steps else 0,
                      "checkpoint": checkpoint_step(out), "while_saving": saving})  # fmt: skip
    print("kill points:", kills)
    assert len({k["last_logged"] for k in kills}) >= 3, kills  # really different moments of the run

    damaged = previous_of(out / "checkpoint").exists()
    if damaged:  # the latest checkpoint damaged too: the resume must take the previous one
        flip_a_byte(out / "checkpoint" / "weights.safetensors")
    final = subprocess.run([*argv(out), "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    assert "Traceback" not in final.stderr
    if damaged:
        assert "does not match its checksum" in final.stderr and "resuming from the previous" in final.stderr

    a = load_file(straight / "adapter" / "adapter_model.safetensors")
    b = load_file(out / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in logged(out, "train_loss")] == list(range(1, STEPS + 1))
    for key in ("train_loss", "val_loss"):
        assert [r[key] for r in logged(out, key)] == [r[key] for r in logged(straight, key)]
    ours, theirs = json.loads((out / "summary.json").read_text()), summary
    assert ours["best_step"] == theirs["best_step"] and ours["metrics"] == theirs["metrics"]


def test_a_moved_run_folder_resumes(tmp_path, tiny_llama_folder, shared_data, monkeypatch):
    from loralab.cli import main

    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    small = [*RUN, f"--model={tiny_llama_folder}", "--max_train_samples=16", "--eval_every=2"]
    assert main(["train", *small, "--max_steps=2", f"--out_dir={tmp_path / 'here'}"]) == 0
    (tmp_path / "here").rename(tmp_path / "there")
    assert main(["train", *small, "--max_steps=4", f"--out_dir={tmp_path / 'there'}", "--resume"]) == 0
    assert [r["step"] for r in logged(tmp_path / "there", "train_loss")] == [1, 2, 3, 4]

"""Code evaluation fails closed: where the sandbox's namespaces cannot be set up, a run with code_eval stops
before its model loads, with one line and exit code 2; code_eval_isolation = "rlimits-only" runs it anyway and
logs what is missing. The probe fails for real here: `unshare` is taken off PATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = "configs/code_qa_lora.toml"
TINY = ["--max_train_samples=8", "--max_eval_samples=2", "--max_test_samples=2", "--max_steps=1",
        "--batch_size=4", "--eval_batch_size=4", "--max_length=64", "--max_new_tokens=8",
        "--max_code_eval_problems=2", "--report_to="]  # fmt: skip


def loralab(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    """`python -m loralab ARGV` with a PATH that holds no `unshare`, so the sandbox has no namespaces."""
    no_unshare = tmp_path / "bin"
    no_unshare.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": str(no_unshare)}
    return subprocess.run([sys.executable, "-m", "loralab", *argv], capture_output=True, text=True, env=env,
                          timeout=600)  # fmt: skip


def assert_refused(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("loralab: error: refusing to run untrusted code"), lines
    line = lines[0]
    assert "namespaces cannot be set up here (util-linux `unshare` not found)" in line
    assert "To get them: install util-linux" in line
    assert 'code_eval_isolation = "rlimits-only"' in line and "--code_eval_isolation=rlimits-only" in line


def test_train_refuses_before_loading_the_model(tmp_path, tiny_llama_folder):
    out = tmp_path / "run"
    done = loralab(tmp_path, "train", CONFIG, *TINY, f"--model={tiny_llama_folder}", f"--out_dir={out}")
    assert_refused(done)  # the only line: no data loaded, no model, no training logged before it
    assert not out.exists()


def test_eval_refuses_before_loading_the_model(tmp_path):
    done = loralab(tmp_path, "eval", "--model", "smollm2-135m", "--task=code_qa", "--code_eval=humaneval")
    assert_refused(done)


def test_missing_problems_are_refused_before_the_model_loads(tmp_path, tiny_llama_folder):
    """Namespaces here, but no MBPP file: the run stops at once, not after training."""
    out, empty = tmp_path / "run", tmp_path / "no_data"
    empty.mkdir()
    env = {**os.environ, "LORALAB_DATA_DIR": str(empty)}
    done = subprocess.run([sys.executable, "-m", "loralab", "train", CONFIG, *TINY, "--code_eval=mbpp",
                           "--dataset=stdlib_docstrings", f"--model={tiny_llama_folder}", f"--out_dir={out}"],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "mbpp" in lines[0].lower() and lines[0].startswith("loralab: error: "), lines
    assert not out.exists()


def test_compare_refuses_before_its_first_run(tmp_path):
    out = tmp_path / "runs"
    done = loralab(tmp_path, "compare", CONFIG, "--methods", "lora,full", *TINY, f"--out_dir={out}")
    assert_refused(done)
    assert not any(out.rglob("*.json")), list(out.rglob("*"))


def test_unknown_isolation_is_a_config_error(tmp_path):
    done = loralab(tmp_path, "train", CONFIG, "--code_eval_isolation=none", f"--out_dir={tmp_path / 'run'}")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "code_eval_isolation must be one of namespaces, rlimits-only, got 'none'" in done.stderr


@pytest.mark.slow
def test_the_opt_in_runs_the_code_and_logs_what_is_missing(tmp_path, tiny_llama_folder):
    out = tmp_path / "run"
    done = loralab(tmp_path, "train", CONFIG, *TINY, f"--model={tiny_llama_folder}", f"--out_dir={out}",
                   "--code_eval_isolation=rlimits-only")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    logged = [line for line in done.stderr.splitlines() if line.startswith("loralab: sandbox: ")]
    assert len(logged) == 1, done.stderr[-3000:]
    assert "running generated code WITHOUT namespaces, as isolation = rlimits-only allows" in logged[0]
    assert "NO namespaces (util-linux `unshare` not found)" in logged[0] and "NO file protection" in logged[0]
    humaneval = json.loads((out / "summary.json").read_text())["metrics"]["humaneval"]
    assert humaneval["n_problems"] == 2 and sum(humaneval["status"].values()) == 2
    assert 0 <= humaneval["pass@1"] <= 1

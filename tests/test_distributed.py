"""torchrun: two gloo processes train the same adapter as one process running the same global batch."""

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

RUN = ["configs/rotten_tomatoes_lora.toml", "--max_train_samples=32", "--max_eval_samples=8",
       "--max_test_samples=4", "--max_steps=3", "--eval_every=0", "--max_length=48", "--lr=1e-2",
       "--batch_size=4", "--report_to="]  # fmt: skip


def run(argv: list[str], shared_data) -> subprocess.CompletedProcess:
    env = os.environ | {"LORALAB_DATA_DIR": str(shared_data), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                        "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_two_processes_train_the_adapter_of_one_process_with_the_same_global_batch(
    tmp_path, tiny_llama_folder, shared_data, precision
):
    model = [f"--model={tiny_llama_folder}", f"--base_precision={precision}"]
    one = run([sys.executable, "-m", "loralab", "train", *RUN, *model, "--grad_accum=2",
               f"--out_dir={tmp_path / 'one'}"], shared_data)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    two = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "loralab", "train", *RUN, *model, "--grad_accum=1", f"--out_dir={tmp_path / 'two'}"],
              shared_data)  # fmt: skip
    assert two.returncode == 0, two.stderr[-2000:]

    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert any(a[k].abs().max().item() > 0 for k in a if "lora_B" in k)  # it trained

    def steps(folder):
        return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]

    train_one = [
        (r["step"], r["train_loss"], r["target_tokens"]) for r in steps(tmp_path / "one") if "train_loss" in r
    ]
    train_two = [
        (r["step"], r["train_loss"], r["target_tokens"]) for r in steps(tmp_path / "two") if "train_loss" in r
    ]
    assert [s for s, *_ in train_two] == [1, 2, 3]  # one line per step: only rank 0 writes
    for (_, loss_a, tokens_a), (_, loss_b, tokens_b) in zip(train_one, train_two, strict=True):
        assert tokens_a == tokens_b and abs(loss_a - loss_b) <= 1e-6
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["metrics"]["n"] == 4
    assert two.stdout.count("trainable") == 1  # rank 1 prints no summary of its own
    if precision == "int8":  # both ranks compute in int8; rank 0 says so
        assert two.stderr.count("28 frozen linear layers compute in int8") == 1

"""Packing (several examples in one row give the same losses and gradients as each alone) and the other speed
options of a run: gradient checkpointing, bf16 autocast."""

import json
import warnings

import pytest
import torch
from torch import nn
from transformers import Gemma3ForCausalLM

import tiny_models
from loralab import LoRAConfig, apply_lora
from loralab.cli import main
from loralab.data.encoding import Encoded, collate, collate_packed, pack_examples
from loralab.evaluation.loss import answer_loss_sum, packing_problem

DEMO = "configs/rotten_tomatoes_lora.toml"


def examples() -> list[Encoded]:
    torch.manual_seed(3)
    lengths = [(7, 3), (12, 5), (5, 2), (9, 9), (6, 1)]  # (prompt, answer) tokens
    return [Encoded(torch.randint(1, 90, (p + a,)).tolist(), p) for p, a in lengths]


def test_packing_fills_rows_up_to_capacity_and_keeps_every_example():
    rows = pack_examples(examples(), capacity=20, seed=0)
    assert all(len(row) <= 20 for row in rows)
    assert sorted(len(e) for row in rows for e in row.examples) == sorted(len(e) for e in examples())
    assert len(rows) < len(examples())


def gemma3_wide_window() -> nn.Module:
    config = tiny_models.gemma3().config
    config.sliding_window = 32  # wider than any packed row: sliding layers see what full ones see
    return Gemma3ForCausalLM(config)


@pytest.mark.parametrize(
    "make", [tiny_models.llama, gemma3_wide_window, tiny_models.gpt2, tiny_models.gpt_neo]
)
def test_packed_rows_match_examples_alone(make):
    torch.manual_seed(0)
    model = make()
    assert packing_problem(model, 24) is None
    model = apply_lora(model, LoRAConfig(r=4, alpha=8, target_modules="all-linear"))
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:  # B = 0 would hide a wrong mask from the LoRA gradients of A
        nn.init.normal_(p, std=0.1)
    items = examples()
    alone, count_alone = 0.0, 0
    for e in items:
        loss, n = answer_loss_sum(model, collate([e], pad_id=0))
        alone, count_alone = alone + loss, count_alone + n
    packed_rows = pack_examples(items, capacity=24, seed=1)
    assert any(len(row.examples) > 1 for row in packed_rows)
    packed, count_packed = answer_loss_sum(model, collate_packed(packed_rows, pad_id=0))
    assert count_packed == count_alone
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)
    for g, w in zip(torch.autograd.grad(packed, params), torch.autograd.grad(alone, params), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_packing_is_refused_where_a_sliding_window_is_shorter_than_a_row():
    problem = packing_problem(tiny_models.gemma3(), max_length=24)  # window of 16 tokens
    assert "sliding window of 16" in problem and "max_length" in problem
    assert "causal" in packing_problem(tiny_models.t5(), max_length=24)


SMALL = ["--max_train_samples=32", "--max_eval_samples=8", "--max_test_samples=4", "--max_steps=2",
         "--batch_size=4", "--eval_batch_size=8", "--max_length=64"]  # fmt: skip


def test_training_with_packing_puts_several_reviews_in_a_row(tmp_path, tiny_llama_folder, shared_data, capsys,
                                                             monkeypatch):  # fmt: skip
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    out = tmp_path / "run"
    args = ["train", DEMO, f"--model={tiny_llama_folder}", f"--out_dir={out}", "--packing=true", *SMALL,
            "--max_length=160"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    rows = int(err.split("training examples in ")[1].split(" rows")[0])
    assert rows <= 16  # reviews (with the template) are far shorter than 80 tokens
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_examples"] == 32 and summary["steps"] == 2
    # each step's 4 rows hold more than 4 reviews: more than 4 answers of 2 tokens (label word, EOS)
    targets = [json.loads(line)["target_tokens"] for line in (out / "metrics.jsonl").read_text().splitlines()
               if "target_tokens" in line]  # fmt: skip
    assert len(targets) == 2 and all(t > 4 * 2 + 1 for t in targets)


def test_packing_a_classifier_is_a_clear_error(tmp_path, tiny_llama_folder, shared_data, capsys, monkeypatch):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    args = ["train", DEMO, f"--model={tiny_llama_folder}", f"--out_dir={tmp_path / 'c'}", "--packing=true",
            "--model_kind=classifier", *SMALL]  # fmt: skip
    assert main(args) == 2
    assert "packing works for causal language models only" in capsys.readouterr().err


def test_gradient_checkpointing_trains_the_same_adapter(
    tmp_path, tiny_llama_folder, shared_data, monkeypatch
):
    from safetensors.torch import load_file

    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    adapters = []
    for flag in ("false", "true"):
        out = tmp_path / flag
        args = ["train", DEMO, f"--model={tiny_llama_folder}", f"--out_dir={out}", *SMALL,
                f"--gradient_checkpointing={flag}"]  # fmt: skip
        assert main(args) == 0
        adapters.append(load_file(out / "adapter" / "adapter_model.safetensors"))
    assert adapters[0].keys() == adapters[1].keys()
    for key in adapters[0]:
        torch.testing.assert_close(adapters[1][key], adapters[0][key], rtol=1e-5, atol=1e-6)


def test_bf16_autocast_trains_and_says_when_the_cpu_lacks_bf16(tmp_path, tiny_llama_folder, shared_data, capsys,
                                                               monkeypatch):  # fmt: skip
    from loralab.training.speed import bf16_is_native

    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    out = tmp_path / "bf16"
    args = ["train", DEMO, f"--model={tiny_llama_folder}", f"--out_dir={out}", *SMALL, "--autocast=bf16"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["best_val_loss"] < 20
    slow = [w for w in caught if "autocast = bf16 on a CPU without bf16 units" in str(w.message)]
    assert bool(slow) == (not bf16_is_native(torch.device("cpu")))

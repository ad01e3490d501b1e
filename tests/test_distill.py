"""Knowledge distillation: the loss against its definition, the RNN student, and a teacher run teaching it."""

import json

import pytest
import torch
from safetensors.torch import load_file

from loralab.cli import main
from loralab.config import load_config
from loralab.errors import UserError
from loralab.methods.distill import RNNForSequenceClassification, distillation_loss_sum

DEMO = "configs/rotten_tomatoes_lora.toml"
SMALL = ["--max_train_samples=32", "--max_eval_samples=16", "--max_test_samples=16", "--max_steps=2",
         "--eval_every=2", "--batch_size=8", "--max_length=64"]  # fmt: skip


@pytest.fixture(autouse=True)
def offline_shared_data(monkeypatch, shared_data):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def json_config(run):
    from loralab.config import config_from_dict

    return config_from_dict(json.loads((run / "config.json").read_text()))


def test_loss_is_cross_entropy_plus_scaled_kl():
    student, teacher = torch.tensor([[2.0, -1.0], [0.5, 0.3]]), torch.tensor([[1.0, 0.0], [-2.0, 1.0]])
    labels = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(student, labels, reduction="sum")
    assert torch.allclose(distillation_loss_sum(student, teacher, labels, 0.0, 2.0), ce)
    t = 3.0
    p_t, p_s = torch.softmax(teacher / t, -1), torch.softmax(student / t, -1)
    kl = (p_t * (p_t.log() - p_s.log())).sum()
    assert torch.allclose(
        distillation_loss_sum(student, teacher, labels, 0.7, t), 0.7 * t * t * kl + 0.3 * ce
    )
    assert torch.allclose(
        distillation_loss_sum(teacher, teacher, labels, 1.0, t), torch.tensor(0.0), atol=1e-6
    )


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_rnn_student_reads_up_to_the_last_real_token(cell):
    torch.manual_seed(0)
    model = RNNForSequenceClassification(50, 2, cell, embedding_dim=8, hidden_size=12, pad_id=0).eval()
    short = model(
        input_ids=torch.tensor([[5, 6, 7]]), attention_mask=torch.ones(1, 3, dtype=torch.long)
    ).logits
    padded = model(input_ids=torch.tensor([[5, 6, 7, 0, 0], [9, 9, 9, 9, 9]]),
                   attention_mask=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])).logits  # fmt: skip
    assert torch.allclose(short[0], padded[0], atol=1e-6)
    assert not torch.allclose(padded[0], padded[1])


def test_a_lora_teacher_run_teaches_an_rnn_student(tmp_path, tiny_llama_folder, capsys, monkeypatch):
    teacher = tmp_path / "teacher"
    assert main(["train", DEMO, f"--model={tiny_llama_folder}", f"--out_dir={teacher}", *SMALL]) == 0
    student = tmp_path / "student"
    args = ["train", DEMO, f"--model={tiny_llama_folder}", f"--out_dir={student}", "--method=distill",
            f"--teacher={teacher}", "--template={text}", "--student_hidden_size=16", "--student_embedding_dim=8",
            "--lr=1e-2", *SMALL]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((student / "summary.json").read_text())
    evals = [
        json.loads(line)
        for line in (student / "metrics.jsonl").read_text().splitlines()
        if "val_loss" in line
    ]
    assert all(0 <= e["val_accuracy"] <= 1 for e in evals) and len(evals) == 2  # step 0 and step 2
    assert summary["model_kind"] == "classifier" and summary["trainable_params"] == summary["total_params"]
    vocab = 49152  # the SmolLM2 tokenizer of the tiny model: the student embeds the same tokens
    assert summary["total_params"] == vocab * 8 + 3 * (8 * 16 + 16 * 16 + 2 * 16) + 16 * 2 + 2
    cached = load_file(str(student / "teacher_logits.safetensors"))
    (logits,) = cached.values()
    assert logits.shape == (32, 2) and bool(torch.isfinite(logits).all())

    # a sibling run with the same teacher and examples (another seed of a sweep) reuses them, and keeps a copy
    import loralab.methods.distill as distill

    def no_teacher_pass(*_args):
        raise AssertionError("the teacher's logits were computed again")

    monkeypatch.setattr(distill, "compute_teacher_logits", no_teacher_pass)
    again = tmp_path / "student_seed1"
    same_data = f"--data_seed={json_config(student).seed}"  # as compare / sweep --seeds set it
    assert main([*args[:3], f"--out_dir={again}", *args[4:], "--seed=1", same_data]) == 0
    assert torch.equal(load_file(str(again / "teacher_logits.safetensors"))[next(iter(cached))], logits)
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["eval", str(student)]) == 0  # the student is rebuilt from the config and its weights loaded
    assert f"accuracy {summary['metrics']['accuracy']:.4f} on 16 examples" in capsys.readouterr().out

    # the teacher's class logits in a padded batch equal those of each prompt run alone
    from loralab.data.encoding import encode_prompt
    from loralab.methods.distill import compute_teacher_logits
    from loralab.tasks import get_task
    from loralab.training.run_model import load_for_inference

    config = load_config(None, [f"--teacher={teacher}", "--method=distill"], base=load_config(DEMO, SMALL))
    rows = get_task(config.task).load_data(config, ("test",)).rows["test"][:5]
    batched = compute_teacher_logits(config, rows, load_for_inference)
    model, tokenizer, _, _ = load_for_inference(json_config(teacher), teacher)
    label_ids = [tokenizer(" negative")["input_ids"][0], tokenizer(" positive")["input_ids"][0]]
    for row, logits in zip(rows, batched, strict=True):
        ids = encode_prompt(tokenizer, "Review: {text}\nSentiment:", row["text"], 64)
        with torch.no_grad():
            alone_logits = model(input_ids=torch.tensor([ids])).logits[0, -1, label_ids]
        assert torch.allclose(logits, alone_logits, atol=1e-4)

    alone = tmp_path / "alone"
    assert main([*args[:3], f"--out_dir={alone}", *args[4:], "--distill_alpha=0"]) == 0
    assert json_config(alone).method == "distill"
    assert not (alone / "teacher_logits.safetensors").exists()  # no teacher needed or asked


def test_distill_bad_settings_are_user_errors(tmp_path, tiny_llama_folder, capsys):
    with pytest.raises(UserError, match="needs a teacher"):
        load_config(DEMO, ["--method=distill"])
    with pytest.raises(UserError, match="classification task"):
        load_config(DEMO, ["--method=distill", "--task=code_qa", "--teacher=x"])
    with pytest.raises(UserError, match=r"distill_alpha must be in \[0, 1\]"):
        load_config(DEMO, ["--distill_alpha=1.5"])
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text(json.dumps(load_config(DEMO, []).to_dict()))
    args = ["train", DEMO, f"--model={tiny_llama_folder}", f"--out_dir={tmp_path / 's'}", "--method=distill",
            f"--teacher={unfinished}", *SMALL]  # fmt: skip
    assert main(args) == 2
    assert "has no adapter/ yet" in capsys.readouterr().err


def test_a_small_transformer_can_be_the_student(tmp_path, tiny_llama_folder, capsys):
    out = tmp_path / "student"
    args = ["train", DEMO, f"--out_dir={out}", "--method=distill", f"--student={tiny_llama_folder}",
            "--distill_alpha=0", "--template={text}", "--lr=1e-2", *SMALL]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_kind"] == "classifier" and summary["trainable_params"] == summary["total_params"]
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0  # a fresh random head is replaced by the trained one
    assert f"accuracy {summary['metrics']['accuracy']:.4f} on 16 examples" in capsys.readouterr().out


def test_a_teacher_by_name_reads_the_students_task_with_the_tasks_own_prompt(tiny_llama_folder):
    from loralab.methods.distill import _teacher_config

    config = load_config(
        DEMO, [*SMALL, "--method=distill", f"--teacher={tiny_llama_folder}", "--template={text}"]
    )
    teacher, run = _teacher_config(config)
    assert run is None and teacher.model == str(tiny_llama_folder) and teacher.method == "lora"
    assert teacher.template == "Review: {text}\nSentiment:" and teacher.label_words == config.label_words
    assert (teacher.task, teacher.dataset, teacher.max_length) == (
        config.task,
        config.dataset,
        config.max_length,
    )

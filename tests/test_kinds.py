"""Model kinds beyond decoder-only LMs: encoder-decoders (T5, BERT2BERT) and classification heads."""

import json

import pytest
import torch
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForSequenceClassification,
    T5Config,
    T5ForConditionalGeneration,
)

from loralab.cli import main
from loralab.config import load_config
from loralab.data.encoding import collate_seq2seq, encode_seq2seq
from loralab.evaluation.loss import seq2seq_loss_sum
from loralab.lora import count_parameters, load_adapter, save_adapter
from loralab.methods import lora as lora_method
from loralab.models.bundled import _minilm_folder
from loralab.models.detect import kind_of_config, model_kind
from loralab.models.loading import load_model_and_tokenizer


@pytest.fixture(autouse=True)
def offline_shared_data(monkeypatch, shared_data):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def bert_tokenizer():
    return AutoTokenizer.from_pretrained(_minilm_folder())


@pytest.fixture(scope="module")
def tiny_t5_folder(tmp_path_factory, bert_tokenizer):
    """A tiny random T5 saved with the MiniLM (BERT) tokenizer: a complete local model folder, offline."""
    folder = tmp_path_factory.mktemp("tiny_t5")
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(bert_tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4,
                      decoder_start_token_id=bert_tokenizer.pad_token_id, pad_token_id=bert_tokenizer.pad_token_id,
                      eos_token_id=bert_tokenizer.sep_token_id)  # fmt: skip
    T5ForConditionalGeneration(config).save_pretrained(folder)
    bert_tokenizer.save_pretrained(folder)
    return folder


def test_kind_follows_the_architecture_unless_asked(tiny_t5_folder):
    t5 = T5Config()
    assert kind_of_config(t5) == "seq2seq"
    assert kind_of_config(LlamaConfig()) == "causal"
    assert kind_of_config(LlamaConfig(), "classifier") == "classifier"
    model, _ = load_model_and_tokenizer("minilm-l6")
    assert model_kind(model) == "classifier" and type(model).__name__ == "BertForSequenceClassification"
    model, _ = load_model_and_tokenizer(str(tiny_t5_folder))
    assert model_kind(model) == "seq2seq"


def test_seq2seq_loss_matches_the_models_own_mean_loss(tiny_t5_folder, bert_tokenizer):
    model, tokenizer = load_model_and_tokenizer(str(tiny_t5_folder))
    examples = [encode_seq2seq(tokenizer, "summarize: {text}", text, summary, 64)
                for text, summary in [("the cat sat on the mat all day", "cat sits"), ("rain", "wet streets today")]]  # fmt: skip
    assert examples[0].target_ids[-1] == bert_tokenizer.sep_token_id  # answers end with the end token
    batch = collate_seq2seq(examples, tokenizer.pad_token_id)
    loss_sum, n = seq2seq_loss_sum(model, batch)
    assert n == sum(len(e.target_ids) for e in examples)
    reference = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
    )
    assert loss_sum.item() / n == pytest.approx(reference.loss.item(), rel=1e-5)


def test_t5_decoder_lora_trains_end_to_end_and_evaluates(tmp_path, tiny_t5_folder, capsys):
    """LoRA on the decoder's q and v only, summarization task, through the CLI (train then eval)."""
    out = tmp_path / "run"
    args = ["train", "configs/summarization_lora.toml", f"--model={tiny_t5_folder}", f"--out_dir={out}",
            "--target_modules=decoder\\..*\\.(q|v)", "--template=summarize: {text}", "--max_train_samples=32",
            "--max_eval_samples=16", "--max_test_samples=4", "--max_steps=6", "--eval_every=3", "--lr=1e-2",
            "--batch_size=8", "--max_length=128", "--max_new_tokens=8"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_kind"] == "seq2seq"
    evals = [
        json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "val_loss" in line
    ]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    adapted = config["target_modules"].strip("^()$").replace("\\.", ".").split("|")
    assert len(adapted) == 8 and all(n.startswith("decoder.") and n.endswith((".q", ".v")) for n in adapted)
    # 2 decoder layers x (self + cross attention) x (q, v), each r * (32 + 32)
    assert summary["trainable_params"] == 2 * 2 * 2 * 8 * (32 + 32)
    assert {"rouge1", "rouge2", "rougeL"} <= summary["metrics"].keys()
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0  # the saved adapter loads back and scores the same
    assert f"ROUGE-1 {summary['metrics']['rouge1']:.4f}" in capsys.readouterr().out


def test_encoder_classifier_with_lora_and_a_trained_head(tmp_path, capsys):
    """Bundled MiniLM + a new 2-way head on Rotten Tomatoes: the head trains in full and is saved."""
    out = tmp_path / "run"
    args = ["train", "configs/sentiment_minilm_lora.toml", f"--out_dir={out}", "--max_train_samples=96",
            "--max_eval_samples=48", "--max_test_samples=64", "--max_steps=6", "--eval_every=3"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_kind"] == "classifier"
    evals = [
        json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "val_loss" in line
    ]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert "classifier" in adapter["modules_to_save"]
    assert summary["metrics"]["invalid_rate"] == 0  # a head always names a label
    accuracy = summary["metrics"]["accuracy"]
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert f"accuracy {accuracy:.4f} on 64 examples" in capsys.readouterr().out


def test_decoder_classifier_head_on_the_last_token_saves_and_loads(tmp_path):
    """The GPT-2 + LoRA classification setup on a Llama: LoRA on q, v plus the `score` head, saved and loaded."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=1, num_labels=2)  # fmt: skip
    model = LlamaForSequenceClassification(config)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    run = load_config(None, ["--model_kind=classifier", "--rank=4", "--target_modules=q_proj,v_proj"])
    lora_method.prepare(model, run)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any(name.startswith("score") for name in trainable)
    assert all("lora_" in name or name.startswith("score") for name in trainable)
    # per layer q: 4 * (32 + 32), v: 4 * (32 + 16) (2 kv heads of 8); head: 32 * 2, no bias
    assert count_parameters(model)[0] == 2 * (4 * 64 + 4 * 48) + 32 * 2
    with torch.no_grad():  # move every trained weight away from its initial value
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    ids = torch.tensor([[5, 6, 7, 8], [1, 1, 9, 10]])  # the second row is left-padded
    mask = (ids != 1).long()
    model.eval()
    expected = model(input_ids=ids, attention_mask=mask).logits
    save_adapter(model, tmp_path / "adapter")

    fresh = LlamaForSequenceClassification(config)
    fresh.load_state_dict(base_state)
    load_adapter(fresh, tmp_path / "adapter").eval()
    assert torch.allclose(fresh(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-5)


def test_t5_code_qa_with_the_code_vocabulary_trains_saves_and_evaluates(tmp_path, tiny_t5_folder, capsys):
    """The reference T5 setup in miniature: decoder q,v LoRA + code vocabulary whose embeddings train."""
    out = tmp_path / "run"
    args = ["train", "configs/code_qa_t5_lora.toml", f"--model={tiny_t5_folder}", f"--out_dir={out}",
            "--dataset=stdlib_docstrings", "--max_train_samples=24", "--max_eval_samples=8",
            "--max_test_samples=4", "--max_steps=2", "--eval_every=2", "--batch_size=8", "--max_length=96",
            "--max_new_tokens=12", "--code_eval=humaneval", "--max_code_eval_problems=3"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["humaneval"]["n_problems"] == 3
    samples = [json.loads(line) for line in (out / "code_eval_samples.jsonl").read_text().splitlines()]
    assert [s["passed"] for s in samples] == [0, 0, 0]  # a random tiny T5 writes no working function
    assert all(len(s["generations"]) == 1 and s["task_id"].startswith("HumanEval/") for s in samples)
    vocab = json.loads((out / "adapter" / "code_vocab.json").read_text())
    assert "pytkw:def" in vocab["tokens"] and "pytfunc:len" in vocab["tokens"]
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert "shared" in adapter["modules_to_save"]  # the resized embedding trains and is saved
    assert summary["trainable_params"] > vocab["num_embeddings"] * 32  # the whole embedding + LoRA
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert not any("pytkw:" in p["generated"] or "pytfunc:" in p["generated"] for p in predictions)
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0  # tokens re-added at the same ids before the adapter loads
    assert f"BLEU {summary['metrics']['bleu']:.2f}" in capsys.readouterr().out
    assert len((out / "eval_code_samples.jsonl").read_text().splitlines()) == 3

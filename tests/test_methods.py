"""The adaptation methods besides LoRA: which parameters train, what is saved, and that a run reloads exactly."""

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

import tiny_models
from loralab.cli import main
from loralab.config import load_config
from loralab.errors import UserError
from loralab.lora import count_parameters
from loralab.methods import full, last_layers, prompt_tuning
from loralab.models.loading import load_model_and_tokenizer


@pytest.fixture(autouse=True)
def offline_shared_data(monkeypatch, shared_data):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def config_with(*overrides: str):
    return load_config(None, list(overrides))


def trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "name, stack", [("llama", "model.layers"), ("gpt2", "transformer.h"), ("t5", "decoder.block"),
                    ("bert", "encoder.layer"), ("gpt_neo", "transformer.h")]
)  # fmt: skip
def test_block_stack_is_the_models_layer_list(name, stack):
    found, blocks = last_layers.block_stack(tiny_models.make(name))
    assert found == stack and len(blocks) == 2


def test_last_layers_trains_exactly_the_last_blocks():
    model = tiny_models.make("llama")
    last_layers.prepare(model, config_with("--method=last_layers", "--n_layers=1"))
    assert trainable_names(model) == {
        n for n, _ in model.named_parameters() if n.startswith("model.layers.1.")
    }


def test_head_only_and_the_flags():
    model = tiny_models.make("gpt2")
    last_layers.prepare(model, config_with("--method=last_layers", "--n_layers=0", "--train_head=true"))
    # GPT-2 ties its LM head to the token embedding: training the head trains that one matrix
    assert trainable_names(model) == {"transformer.wte.weight"}
    model = tiny_models.make("t5")
    last_layers.prepare(model, config_with("--method=last_layers", "--n_layers=2", "--train_embeddings=true",
                                           "--train_layer_norms=true"))  # fmt: skip
    names = trainable_names(model)
    assert {n for n in names if n.startswith("decoder.block.")} == {
        n for n, _ in model.named_parameters() if n.startswith("decoder.block.")
    }
    assert "shared.weight" in names and "encoder.final_layer_norm.weight" in names
    assert not any(n.startswith("encoder.block.") and "layer_norm" not in n for n in names)


def test_last_layers_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="trains nothing"):
        last_layers.prepare(tiny_models.make("llama"), config_with("--method=last_layers", "--n_layers=0"))
    with pytest.raises(UserError, match="has 2 blocks"):
        last_layers.prepare(tiny_models.make("llama"), config_with("--method=last_layers", "--n_layers=3"))


def test_full_trains_everything_and_reloads_onto_a_fresh_model(tmp_path):
    model = full.prepare(tiny_models.make("llama"), config_with("--method=full"))
    trainable, total = count_parameters(model)
    assert trainable == total
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    full.save(model, tmp_path / "adapter", config_with("--method=full"))
    saved = json.loads((tmp_path / "adapter" / "method.json").read_text())
    assert saved["method"] == "full" and "lm_head.weight" not in saved["parameters"]  # tied: stored once
    fresh = full.load(tiny_models.make("llama"), tmp_path / "adapter")
    assert torch.equal(tiny_models.run(fresh), tiny_models.run(model))
    with pytest.raises(UserError, match="lacks"):
        full.load(tiny_models.make("gpt2"), tmp_path / "adapter")


@pytest.mark.parametrize(
    "method, extra", [("full", []), ("last_layers", ["--n_layers=1", "--train_head=true"])]
)
def test_method_trains_through_the_cli_and_eval_reproduces_it(
    tmp_path, tiny_llama_folder, capsys, method, extra
):
    out = tmp_path / "run"
    args = ["train", "configs/rotten_tomatoes_lora.toml", f"--model={tiny_llama_folder}", f"--out_dir={out}",
            f"--method={method}", "--max_train_samples=32", "--max_eval_samples=16", "--max_test_samples=16",
            "--max_steps=3", "--eval_every=3", "--batch_size=8", "--max_length=64", "--lr=1e-2", *extra]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method
    sources, printed = summary["data_sources"], capsys.readouterr()
    assert list(sources) == ["train", "validation", "test"]
    for split, used in (("train", 32), ("validation", 16), ("test", 16)):
        source = sources[split]
        assert (source["dataset"], source["split"], source["kind"], source["used"]) == (
            "rotten_tomatoes",
            split,
            "data_dir",
            used,
        )
        assert source["rows"] >= used and Path(source["location"]).name == f"{split}.jsonl"
        assert f"{split}: {used} examples from {source['description']}" in printed.out + printed.err
    evals = [
        json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "val_loss" in line
    ]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    if method == "full":
        assert summary["trainable_params"] == summary["total_params"]
    else:  # one of four blocks + the tied embedding / head
        assert 0 < summary["trainable_params"] < summary["total_params"]
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert f"accuracy {summary['metrics']['accuracy']:.4f} on 16 examples" in capsys.readouterr().out


def test_soft_prompt_from_text_equals_the_text_in_front_of_the_input(tiny_llama_folder):
    """A prompt initialised from a text's embeddings must act exactly like that text typed before the input."""
    model, tokenizer = load_model_and_tokenizer(str(tiny_llama_folder))
    text = "Is this review positive?"
    prefix = tokenizer(text, add_special_tokens=False)["input_ids"]
    config = config_with(
        "--method=prompt_tuning", f"--n_virtual_tokens={len(prefix)}", f"--prompt_init_text={text}"
    )
    tuned = prompt_tuning.prepare(model, config, tokenizer=tokenizer).eval()
    assert trainable_names(tuned) == {"prompt"} and tuned.prompt.shape == (len(prefix), 16)
    ids = tokenizer(["a warm and funny film", "dull"], padding=True, return_tensors="pt")
    ids = {"input_ids": ids["input_ids"][:, :3], "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    both = torch.cat([torch.tensor([prefix, prefix]), ids["input_ids"]], 1)
    with torch.no_grad():
        expected = model(input_ids=both).logits[:, len(prefix) :]
        assert torch.allclose(tuned(**ids).logits, expected, atol=1e-5)
        assert torch.allclose(tuned(**ids, logits_to_keep=2).logits, expected[:, -2:], atol=1e-5)
        options = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
        generated = tuned.generate(**ids, **options)
        assert torch.equal(generated[:, : ids["input_ids"].shape[1]], ids["input_ids"])
        assert torch.equal(generated[:, 3:], model.generate(input_ids=both, **options)[:, both.shape[1] :])


def test_soft_prompt_goes_in_front_of_the_encoder_input():
    model = tiny_models.make("t5")
    prompt = model.get_input_embeddings()(torch.tensor([5, 6, 7])).detach()
    tuned = prompt_tuning.PromptTuned(model, prompt).eval()
    ids, decoder_ids = torch.tensor([[9, 10, 11, 1]]), torch.tensor([[0, 12, 13]])
    with torch.no_grad():
        expected = model(
            input_ids=torch.tensor([[5, 6, 7, 9, 10, 11, 1]]), decoder_input_ids=decoder_ids
        ).logits
        assert torch.allclose(tuned(input_ids=ids, decoder_input_ids=decoder_ids).logits, expected, atol=1e-5)


def test_soft_prompt_run_reloads_and_peft_reads_it(tmp_path, tiny_llama_folder, capsys):
    from peft import PeftModel

    out = tmp_path / "run"
    args = ["train", "configs/rotten_tomatoes_lora.toml", f"--model={tiny_llama_folder}", f"--out_dir={out}",
            "--method=prompt_tuning", "--n_virtual_tokens=4", "--max_train_samples=32", "--max_eval_samples=16",
            "--max_test_samples=16", "--max_steps=3", "--eval_every=3", "--batch_size=8", "--max_length=64",
            "--lr=0.1"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trainable_params"] == 4 * 16
    evals = [
        json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "val_loss" in line
    ]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert f"accuracy {summary['metrics']['accuracy']:.4f} on 16 examples" in capsys.readouterr().out

    ours = prompt_tuning.load(load_model_and_tokenizer(str(tiny_llama_folder))[0], out / "adapter").eval()
    theirs = PeftModel.from_pretrained(
        LlamaForCausalLM.from_pretrained(tiny_llama_folder), out / "adapter"
    ).eval()
    ids = torch.tensor([[100, 200, 300, 400]])
    with torch.no_grad():
        assert torch.allclose(theirs(input_ids=ids).logits[:, 4:], ours(input_ids=ids).logits, atol=1e-5)


def test_soft_prompt_bad_inputs_are_user_errors(tmp_path, tiny_llama_folder):
    model, tokenizer = load_model_and_tokenizer(str(tiny_llama_folder))
    with pytest.raises(UserError, match="no words"):
        prompt_tuning.prepare(
            model, config_with("--method=prompt_tuning", "--prompt_init_text= "), tokenizer=tokenizer
        )
    with pytest.raises(UserError, match="code vocabulary"):
        prompt_tuning.prepare(
            model, config_with("--method=prompt_tuning"), ("model.embed_tokens",), tokenizer
        )
    with pytest.raises(UserError, match="prompt-tuning run"):
        prompt_tuning.load(model, tmp_path)
    classifier, _ = load_model_and_tokenizer(str(tiny_llama_folder), kind="classifier")
    with pytest.raises(UserError, match="not a classification head"):
        prompt_tuning.prepare(classifier, config_with("--method=prompt_tuning"), tokenizer=tokenizer)

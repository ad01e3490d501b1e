"""Several named adapters on one base: switch, disable, mixed-adapter batches, saving the active one."""

import pytest
import torch

import tiny_models
from loralab import LoRAConfig, apply_lora, load_adapter, save_adapter
from loralab.errors import UserError
from loralab.lora import find_target_modules
from loralab.lora.adapters import adapter_names, adapter_per_row, disable_adapters, set_adapter

IDS = torch.tensor([[5, 17, 30, 8, 64, 2], [9, 9, 41, 3, 77, 12], [60, 2, 2, 15, 33, 4]])
ADAPTERS = {  # different targets and ranks on purpose
    "llama": {
        "a": LoRAConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]),
        "b": LoRAConfig(r=2, alpha=16, target_modules="all-linear", use_rslora=True),
    },
    "gpt2": {
        "a": LoRAConfig(r=3, alpha=6, target_modules=["c_attn"], qkv_parts=["q", "v"]),
        "b": LoRAConfig(r=2, alpha=4, target_modules=["c_attn", "c_fc"]),
    },
}


def logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def saved_adapters(tmp_path, arch) -> dict:
    """name -> (folder, the eval-mode model that was saved there)."""
    out = {}
    for seed, (name, config) in enumerate(ADAPTERS[arch].items()):
        model = apply_lora(tiny_models.make(arch), config)
        gen = torch.Generator().manual_seed(10 + seed)
        with torch.no_grad():
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(torch.randn(param.shape, generator=gen) * 0.3)
        save_adapter(model, tmp_path / name)
        out[name] = (tmp_path / name, model.eval())
    return out


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_switching_and_disabling_give_each_adapter_and_the_base(tmp_path, arch):
    saved = saved_adapters(tmp_path, arch)
    base_alone = tiny_models.make(arch).eval()
    model = tiny_models.make(arch).eval()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    load_adapter(model, saved["a"][0], name="a")
    load_adapter(model, saved["b"][0], name="b")
    assert adapter_names(model) == ["a", "b"]  # the first loaded stays active
    for name in ("a", "b", "a"):
        set_adapter(model, name)
        assert (logits(model) - logits(saved[name][1])).abs().max().item() <= 1e-5
    with disable_adapters(model):
        assert (logits(model) - logits(base_alone)).abs().max().item() <= 1e-5
    assert (logits(model) - logits(saved["a"][1])).abs().max().item() <= 1e-5
    model.train()  # un-merges: the base weights are back as loaded
    for key, value in model.state_dict().items():
        plain = key.replace(".base_layer", "")
        if plain in original and "lora" not in key:
            torch.testing.assert_close(value, original[plain], atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_mixed_batch_equals_each_row_alone_with_its_adapter(tmp_path, arch):
    saved = saved_adapters(tmp_path, arch)
    model = tiny_models.make(arch).eval()
    load_adapter(model, saved["a"][0], name="a")
    load_adapter(model, saved["b"][0], name="b")
    base_alone = tiny_models.make(arch).eval()
    names = ["b", None, "a"]
    with adapter_per_row(model, names):
        mixed = logits(model)
    for row, name in enumerate(names):
        alone = logits(saved[name][1] if name else base_alone, IDS[row : row + 1])
        assert (mixed[row : row + 1] - alone).abs().max().item() <= 1e-5, (row, name)
    assert (logits(model) - logits(saved["a"][1])).abs().max().item() <= 1e-5  # back to the active adapter


def test_mixed_generation_equals_generating_each_row_alone(tmp_path):
    saved = saved_adapters(tmp_path, "llama")
    model = tiny_models.make("llama").eval()
    load_adapter(model, saved["a"][0], name="a")
    load_adapter(model, saved["b"][0], name="b")
    options = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 1}
    names = ["a", "b", None]
    with torch.no_grad(), adapter_per_row(model, names):
        mixed = model.generate(input_ids=IDS, attention_mask=torch.ones_like(IDS), **options)
    for row, name in enumerate(names):
        one = IDS[row : row + 1]
        if name is None:
            with torch.no_grad(), disable_adapters(model):
                alone = model.generate(input_ids=one, attention_mask=torch.ones_like(one), **options)
        else:
            set_adapter(model, name)
            with torch.no_grad():
                alone = model.generate(input_ids=one, attention_mask=torch.ones_like(one), **options)
        assert torch.equal(mixed[row : row + 1], alone), (row, name)


def test_saving_writes_the_active_adapter(tmp_path):
    saved = saved_adapters(tmp_path, "llama")
    model = tiny_models.make("llama").eval()
    load_adapter(model, saved["a"][0], name="a")
    load_adapter(model, saved["b"][0], name="b")
    set_adapter(model, "b")
    save_adapter(model, tmp_path / "again")
    reloaded = load_adapter(tiny_models.make("llama"), tmp_path / "again").eval()
    assert (logits(reloaded) - logits(saved["b"][1])).abs().max().item() <= 1e-5


def test_bad_adapter_use_is_a_user_error(tmp_path):
    saved = saved_adapters(tmp_path, "llama")
    model = tiny_models.make("llama").eval()
    load_adapter(model, saved["a"][0], name="a")
    with pytest.raises(UserError, match="an adapter named 'a' is loaded already"):
        load_adapter(model, saved["b"][0], name="a")
    with pytest.raises(UserError, match="no adapter named 'c'; loaded: a"):
        set_adapter(model, "c")
    with pytest.raises(UserError, match="no adapter named 'c'"), adapter_per_row(model, ["a", "c"]):
        pass
    whole = apply_lora(
        tiny_models.make("llama"), LoRAConfig(r=2, target_modules=["q_proj"], modules_to_save=["model.norm"])
    )
    save_adapter(whole, tmp_path / "whole")
    with pytest.raises(UserError, match="also trains whole modules or biases"):
        load_adapter(model, tmp_path / "whole", name="whole")
    with pytest.raises(UserError, match="no LoRA adapter"):
        set_adapter(tiny_models.make("llama"), "a")


def test_generate_cli_takes_several_runs_and_an_adapter_per_prompt(tmp_path, tiny_llama_folder, shared_data,
                                                                    monkeypatch, capsys):  # fmt: skip
    from loralab.cli import main

    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    small = ["configs/rotten_tomatoes_lora.toml", f"--model={tiny_llama_folder}", "--max_train_samples=16",
             "--max_eval_samples=8", "--max_test_samples=4", "--max_steps=2", "--batch_size=8", "--max_length=48",
             "--report_to=", "--chat_template=tokenizer"]  # fmt: skip
    runs = {}
    for name, extra in (("pos", ["--lr=5e-2", "--seed=1"]), ("neg", ["--lr=5e-2", "--seed=2", "--rank=2"])):
        runs[name] = tmp_path / name
        assert main(["train", *small, *extra, f"--out_dir={runs[name]}"]) == 0
    prompts = [
        "Review: a warm film\nSentiment:",
        "Review: dull and long\nSentiment:",
        "Review: fine\nSentiment:",
    ]
    capsys.readouterr()

    def one(run: str | None, prompt: str) -> str:
        base = ["generate", f"--model={tiny_llama_folder}", "--chat_template=tokenizer"]  # as the runs read
        argv = ["generate", str(runs[run])] if run else base
        assert main([*argv, f"--prompt={prompt}", "--max_new_tokens=4"]) == 0
        return capsys.readouterr().out[:-1]  # the continuation as printed, without print's newline

    alone = [one("neg", prompts[0]), one("pos", prompts[1]), one(None, prompts[2])]
    argv = ["generate", str(runs["pos"]), str(runs["neg"]), "--max_new_tokens=4"]
    argv += [f"--prompt={p}" for p in prompts] + ["--adapter=neg", "--adapter=pos", "--adapter=none"]
    assert main(argv) == 0
    assert capsys.readouterr().out == f"[1] (neg) {alone[0]}\n[2] (pos) {alone[1]}\n[3] (none) {alone[2]}\n"
    assert main([*argv[:4], f"--prompt={prompts[0]}"]) == 2
    assert "say which one each prompt uses" in capsys.readouterr().err
    assert main([*argv[:4], f"--prompt={prompts[0]}", "--adapter=other"]) == 2
    assert "not among the runs given (pos, neg)" in capsys.readouterr().err


def test_every_adapter_moves_with_the_model_and_is_in_its_state_dict(tmp_path):
    """Inactive adapters are submodules too: model.to() converts them and state_dict() holds them."""
    saved = saved_adapters(tmp_path, "llama")
    model = tiny_models.make("llama").eval()
    load_adapter(model, saved["a"][0], name="a")
    load_adapter(model, saved["b"][0], name="b")
    keys = set(model.state_dict())
    for name, config in ADAPTERS["llama"].items():
        targets = find_target_modules(tiny_models.make("llama"), config)
        expected = {f"{t}.adapters.{name}.{w}" for t in targets for w in ("lora_A", "lora_B")}
        assert {k for k in keys if f".adapters.{name}." in k} == expected
    model.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    set_adapter(model, "b")  # inactive while the model was converted
    got = logits(model)
    assert got.dtype == torch.float64
    assert (got - logits(saved["b"][1]).double()).abs().max().item() <= 1e-4  # against float32 logits


def test_names_that_are_no_module_names_and_a_dora_adapter_beside_a_plain_one(tmp_path):
    """Adapter names are run folder names: a "." or a ModuleDict attribute ("train") must work as well."""
    saved = saved_adapters(tmp_path, "llama")
    dora = apply_lora(tiny_models.make("llama"), LoRAConfig(r=2, alpha=4, target_modules=["q_proj", "o_proj"],
                                                             use_dora=True))  # fmt: skip
    with torch.no_grad():
        for param in dora.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(7)) * 0.3)
    save_adapter(dora, tmp_path / "dora")
    model = tiny_models.make("llama").eval()
    load_adapter(model, saved["a"][0], name="run.1")
    load_adapter(model, tmp_path / "dora", name="train")
    load_adapter(model, saved["b"][0], name="~b")
    assert adapter_names(model) == ["run.1", "train", "~b"]
    for name, reference in (("train", dora.eval()), ("~b", saved["b"][1]), ("run.1", saved["a"][1])):
        set_adapter(model, name)
        assert (logits(model) - logits(reference)).abs().max().item() <= 1e-5, name
    with adapter_per_row(model, ["~b", None, "run.1"]):
        mixed = logits(model)
    assert (mixed[:1] - logits(saved["b"][1], IDS[:1])).abs().max().item() <= 1e-5
    assert (mixed[2:] - logits(saved["a"][1], IDS[2:])).abs().max().item() <= 1e-5

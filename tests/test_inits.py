"""LoRA initialisations from the weight: PiSSA, OLoRA (the frozen weight keeps the residual) and LoftQ (qlora).

Each starts at the base model's outputs, matches peft's definitions, and a trained adapter saves as one that peft
(on the original base model; LoftQ: on the dequantized 4-bit base) and loralab load with the same outputs."""

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

import tiny_models
from loralab import LoRAConfig, apply_lora, load_adapter, save_adapter
from loralab.cli import main
from loralab.config import config_from_dict, load_config
from loralab.errors import UserError
from loralab.lora import load_adapter_weights
from loralab.lora.adapters import disable_adapters, set_adapter
from loralab.lora.inject import all_lora_layers, lora_layers, set_auto_merge
from loralab.lora.layer import LoRALinear
from loralab.lora.nf4 import dequantize, quantize
from loralab.methods import qlora
from loralab.reporting.compare import compare_configs, parse_methods, sweep_configs

RESIDUAL_CASES = [
    ("llama", LoRAConfig(r=4, alpha=8, init="pissa", target_modules=["q_proj", "v_proj", "down_proj"])),
    ("llama", LoRAConfig(r=3, alpha=16, init="olora", use_rslora=True, bias="lora_only")),
    ("gpt2", LoRAConfig(r=4, alpha=8, init="pissa")),  # Conv1D: fan_in_fan_out
    (
        "gpt2",
        LoRAConfig(
            r=2, alpha=4, init="olora", use_rslora=True, target_modules=["c_attn"], qkv_parts=["q", "v"]
        ),
    ),
]


def base_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: module.weight.detach().clone()
        for name, module in model.named_modules()
        if hasattr(module, "weight")
    }


def train_a_little(model: torch.nn.Module, steps: int = 3) -> torch.nn.Module:
    """A few AdamW steps on a made-up loss, so that A, B (and biases) move away from their init."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(steps):
        tiny_models.run(model, seed=step, grad=True).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


@pytest.mark.parametrize("arch,config", RESIDUAL_CASES)
def test_residual_inits_start_at_the_base_model_and_keep_w_as_residual_plus_update(arch, config):
    original = base_weights(tiny_models.make(arch))
    expected = tiny_models.run(tiny_models.make(arch))
    model = apply_lora(tiny_models.make(arch).train(), config)  # in training mode: nothing merged
    for name, layer in lora_layers(model):
        update = layer.adapter
        assert not torch.equal(update.lora_B, torch.zeros_like(update.lora_B))  # not LoRA's B = 0
        total = layer.base_layer.weight + layer.delta_weight()
        assert (total - original[name]).abs().max().item() <= 1e-5
        assert (layer.base_layer.weight - original[name]).abs().max().item() > 1e-3  # the base did change
    set_auto_merge(model.eval(), False)  # no dropout, the update on the side
    assert (tiny_models.run(model) - expected).abs().max().item() <= 1e-5
    set_auto_merge(model, True)
    assert (tiny_models.run(model) - expected).abs().max().item() <= 1e-5  # merged


def aligned(ours: tuple[torch.Tensor, torch.Tensor], theirs: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Largest difference of (A, B) after flipping each rank-1 component (row of A, column of B) to peft's sign
    (SVD and QR fix singular vectors only up to sign)."""
    (A, B), (A_p, B_p) = ours, theirs
    signs = torch.sign((A * A_p).sum(dim=1))
    return max((A * signs[:, None] - A_p).abs().max().item(), (B * signs - B_p).abs().max().item())


@pytest.mark.parametrize("init,use_rslora", [("pissa", False), ("pissa", True), ("olora", False)])
def test_factors_and_residual_match_peft(init, use_rslora):
    targets = ["q_proj", "k_proj", "up_proj", "down_proj"]
    config = LoRAConfig(r=4, alpha=8, init=init, use_rslora=use_rslora, target_modules=targets)
    ours = apply_lora(tiny_models.make("llama").train(), config)  # training mode: the residual, not merged
    peft_model = get_peft_model(
        tiny_models.make("llama"),
        LoraConfig(r=4, lora_alpha=8, init_lora_weights=init, use_rslora=use_rslora, target_modules=targets),
    )
    layers = dict(lora_layers(ours))
    checked = 0
    for name, module in peft_model.base_model.model.named_modules():
        if name not in layers:
            continue
        update = layers[name].adapter
        A_p, B_p = module.lora_A["default"].weight.detach(), module.lora_B["default"].weight.detach()
        assert aligned((update.lora_A.detach(), update.lora_B.detach()), (A_p, B_p)) <= 1e-5
        assert torch.allclose(update.lora_B @ update.lora_A, B_p @ A_p, atol=1e-5)
        assert torch.allclose(layers[name].base_layer.weight, module.base_layer.weight, atol=1e-6)
        checked += 1
    assert checked == 2 * len(targets)


@pytest.mark.parametrize("arch,config", RESIDUAL_CASES)
def test_trained_adapter_loads_in_peft_and_loralab_on_the_original_base_with_the_same_outputs(
    tmp_path, arch, config
):
    model = train_a_little(apply_lora(tiny_models.make(arch), config)).eval()
    ours = tiny_models.run(model)
    save_adapter(model, tmp_path)
    peft_config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert peft_config["r"] == 2 * config.r and peft_config["init_lora_weights"] is True
    saved = json.loads((tmp_path / "loralab.json").read_text())
    assert saved["converted_from"]["init"] == config.init and saved["lora_config"]["init"] == "kaiming"

    theirs = PeftModel.from_pretrained(tiny_models.make(arch), tmp_path).eval()
    assert (tiny_models.run(theirs) - ours).abs().max().item() <= 1e-5
    loaded = load_adapter(tiny_models.make(arch), tmp_path).eval()  # an ordinary rank-2r LoRA on W
    assert (tiny_models.run(loaded) - ours).abs().max().item() <= 1e-5
    with disable_adapters(loaded):  # the original base model again (merged and taken out: up to rounding)
        base = tiny_models.run(tiny_models.make(arch))
        assert (tiny_models.run(loaded) - base).abs().max().item() <= 1e-6

    # the loop's restore: the saved adapter back into a residual model (same init) gives the trained A, B
    restored = load_adapter_weights(apply_lora(tiny_models.make(arch), config), tmp_path).eval()
    for (name, layer), (_, again) in zip(lora_layers(model), lora_layers(restored), strict=True):
        assert torch.equal(layer.adapter.lora_A, again.adapter.lora_A), name
        assert torch.equal(layer.adapter.lora_B, again.adapter.lora_B), name
    assert torch.equal(tiny_models.run(restored), ours)


def test_merge_and_unmerge_with_a_residual_base():
    model = train_a_little(apply_lora(tiny_models.make("gpt2"), LoRAConfig(r=4, alpha=8, init="pissa")))
    residual = {n: layer.base_layer.weight.clone() for n, layer in lora_layers(model)}
    set_auto_merge(model.eval(), False)
    separate = tiny_models.run(model)
    set_auto_merge(model, True)  # eval() merges
    assert all(layer.merged for _, layer in lora_layers(model))
    assert (tiny_models.run(model) - separate).abs().max().item() <= 1e-5
    model.train()  # un-merges: the residual is back (up to rounding)
    for name, layer in lora_layers(model):
        assert (layer.base_layer.weight - residual[name]).abs().max().item() <= 1e-6


def test_several_adapters_cannot_share_a_residual_base_but_saved_ones_can(tmp_path):
    plain = train_a_little(apply_lora(tiny_models.make("llama"), LoRAConfig(r=2, target_modules=["q_proj"])))
    save_adapter(plain, tmp_path / "plain")
    model = apply_lora(tiny_models.make("llama"), LoRAConfig(r=2, init="pissa", target_modules=["q_proj"]))
    save_adapter(train_a_little(model).eval(), tmp_path / "pissa")
    ours = tiny_models.run(model)
    both = load_adapter(tiny_models.make("llama"), tmp_path / "plain", name="plain")
    load_adapter(both, tmp_path / "pissa", name="pissa")  # saved converted: an ordinary LoRA beside another
    set_adapter(both.eval(), "pissa")
    assert (tiny_models.run(both) - ours).abs().max().item() <= 1e-5

    with pytest.raises(UserError, match="residual") as caught:
        load_adapter(model, tmp_path / "plain", name="other")
    assert "\n" not in str(caught.value)
    with pytest.raises(UserError, match="residual"), disable_adapters(model):
        pass
    layer = LoRALinear(torch.nn.Linear(8, 6), r=2)
    with pytest.raises(UserError, match="residual"):
        layer.add_adapter("second", LoRAConfig(r=2, init="olora"))


def test_deleting_a_residual_adapter_gives_the_weight_back():
    linear = torch.nn.Linear(8, 6)
    original = linear.weight.detach().clone()
    layer = LoRALinear(linear, r=2, init="pissa")
    assert not torch.allclose(layer.base_layer.weight, original, atol=1e-3)
    layer.delete_adapter("default")
    assert torch.allclose(layer.base_layer.weight, original, atol=1e-6) and layer.adapter is None


def test_wrong_combinations_are_one_line_user_errors():
    problems = {
        "DoRA": lambda: LoRAConfig(init="pissa", use_dora=True),
        "r = 40": lambda: apply_lora(tiny_models.make("llama"), LoRAConfig(r=40, init="olora")),
        "method qlora": lambda: config_from_dict({"init": "loftq", "method": "lora"}),
        "with qlora use init": lambda: config_from_dict({"init": "pissa", "method": "qlora"}),
        "loftq_iter": lambda: config_from_dict({"init": "loftq", "method": "qlora", "loftq_iter": 0}),
        "loraplus_lr_ratio": lambda: config_from_dict({"loraplus_lr_ratio": 0}),
    }
    for words, make in problems.items():
        with pytest.raises(UserError, match=words) as caught:
            make()
        assert "\n" not in str(caught.value)
    config_from_dict({"init": "loftq", "method": "qlora", "loftq_iter": 3})  # the right combination


def test_peft_adapters_saved_against_a_residual_model_are_refused(tmp_path):
    model = get_peft_model(
        tiny_models.make("llama"), LoraConfig(r=2, init_lora_weights="pissa", target_modules=["q_proj"])
    )
    # saved without path_initial_model_for_weight_conversion: the adapter fits only peft's residual model
    model.save_pretrained(tmp_path)
    with pytest.raises(UserError, match="path_initial_model_for_weight_conversion"):
        load_adapter(tiny_models.make("llama"), tmp_path)


# --- LoftQ (method qlora) -------------------------------------------------------------------------------------


def loftq_model(iterations: int) -> torch.nn.Module:
    config = LoRAConfig(
        r=4, alpha=8, init="loftq", target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]
    )
    return qlora.quantize_base(apply_lora(tiny_models.make("llama"), config), True, iterations)


def relative_errors(model: torch.nn.Module, original: dict) -> list[float]:
    """‖W − (Q + s·B·A)‖ / ‖W‖ of every LoRA layer (B·A left out: the plain NF4 error)."""
    return [
        ((original[n] - layer.base_layer.weight - layer.delta_weight()).norm() / original[n].norm()).item()
        for n, layer in all_lora_layers(model).items()
    ]


def test_loftq_is_closer_to_the_weights_than_plain_nf4_and_its_first_step_is_qloras_base():
    original = base_weights(tiny_models.make("llama"))
    one, three = loftq_model(1), loftq_model(3)
    for name, layer in all_lora_layers(one).items():
        plain = dequantize(quantize(original[name]))  # QLoRA's base: T = 1 keeps it, and fits its error
        assert torch.equal(layer.base_layer.weight, plain)
        plain_error = ((original[name] - plain).norm() / original[name].norm()).item()
        loftq_error = relative_errors(one, original)[list(all_lora_layers(one)).index(name)]
        assert loftq_error < 0.9 * plain_error
    assert sum(relative_errors(three, original)) < sum(relative_errors(one, original))
    expected = tiny_models.run(tiny_models.make("llama"))
    plain_model = qlora.quantize_base(apply_lora(tiny_models.make("llama"), LoRAConfig(r=4)), True)
    closer = (tiny_models.run(one) - expected).abs().mean()
    assert closer < (tiny_models.run(plain_model) - expected).abs().mean()


def test_loftq_run_reloads_its_base_and_peft_on_the_dequantized_base_gives_the_same_outputs(tmp_path):
    config = load_config(None, ["--method=qlora", "--init=loftq", "--loftq_iter=2", "--rank=4", "--alpha=8",
                                "--target_modules=q_proj,v_proj,up_proj,down_proj"])  # fmt: skip
    model = train_a_little(qlora.prepare(tiny_models.make("llama"), config)).eval()
    ours = tiny_models.run(model)
    qlora.save(model, tmp_path, config)
    assert json.loads((tmp_path / "quantization.json").read_text())["loftq_iter"] == 2

    loaded = qlora.load(tiny_models.make("llama"), tmp_path).eval()  # rebuilds LoftQ's 4-bit base, not NF4(W)
    trained, reloaded = all_lora_layers(model), all_lora_layers(loaded)
    for name, layer in trained.items():
        assert torch.equal(layer.base_layer.codes, reloaded[name].base_layer.codes), name
    assert torch.equal(tiny_models.run(loaded), ours)

    base = qlora.dequantized_base_model(loaded)  # peft's LoftQ workflow: the 4-bit base as its full weights
    assert not any(isinstance(m, LoRALinear) for m in base.modules())
    theirs = PeftModel.from_pretrained(base, tmp_path).eval()
    assert (tiny_models.run(theirs) - ours).abs().max().item() <= 1e-5
    on_original = PeftModel.from_pretrained(tiny_models.make("llama"), tmp_path).eval()
    assert (tiny_models.run(on_original) - ours).abs().max().item() > 1e-4  # the base matters


# --- the training loop, the CLI and sweeps ---------------------------------------------------------------------


def test_pissa_with_loraplus_trains_restores_its_best_adapter_and_eval_reproduces_it(
    tmp_path, tiny_llama_folder, shared_data, monkeypatch, capsys
):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    out = tmp_path / "run"
    args = ["train", "configs/rotten_tomatoes_lora.toml", f"--model={tiny_llama_folder}", f"--out_dir={out}",
            "--init=pissa", "--loraplus_lr_ratio=4", "--rank=4", "--max_train_samples=16", "--max_eval_samples=8",
            "--max_test_samples=8", "--max_steps=2", "--eval_every=1", "--batch_size=8", "--max_length=48",
            "--report_to="]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().err
    assert "LoRA+: the B matrices learn at lr × 4" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 8
    assert main(["eval", str(out)]) == 0
    assert f"accuracy {summary['metrics']['accuracy']:.4f} on 8 examples" in capsys.readouterr().out


def test_sweep_grid_over_init_and_loraplus_lr_ratio(tmp_path):
    runs = sweep_configs(
        "configs/rotten_tomatoes_lora.toml",
        ["init=kaiming,pissa,olora", "loraplus_lr_ratio=1,16"],
        [f"--out_dir={tmp_path / 'sweep'}"],
    )
    assert [(c.init, c.loraplus_lr_ratio) for _, c in runs] == [
        (init, ratio) for init in ("kaiming", "pissa", "olora") for ratio in (1.0, 16.0)
    ]
    assert runs[1][0] == "init=kaiming_loraplus_lr_ratio=16"
    with pytest.raises(UserError, match="method qlora"):
        sweep_configs("configs/rotten_tomatoes_lora.toml", ["init=kaiming,loftq"], [])
    pairs = parse_methods("lora,pissa:lora,loftq:qlora")  # compare: a named second run of a method
    runs = compare_configs(
        "configs/rotten_tomatoes_lora.toml", pairs, ["--pissa.init=pissa", "--loftq.init=loftq"]
    )
    assert [(name, c.method, c.init) for name, c in runs] == [
        ("lora", "lora", "kaiming"),
        ("pissa", "lora", "pissa"),
        ("loftq", "qlora", "loftq"),
    ]
    qlora_runs = sweep_configs(
        "configs/rotten_tomatoes_lora.toml", ["init=kaiming,loftq"], ["--method=qlora"]
    )
    assert [c.init for _, c in qlora_runs] == ["kaiming", "loftq"]

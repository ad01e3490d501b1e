"""Adapter folders: loralab round trip bit-exact, and interop with the peft library in both directions."""

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

import tiny_models
from loralab import LoRAConfig, apply_lora, load_adapter, lora_state_dict, save_adapter
from loralab.errors import UserError
from loralab.lora import lora_layers


def trained_like(model):
    """Give every LoRA tensor and trainable extra a non-trivial value, as training would."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=gen) * 0.2)
    return model


CASES = [
    ("llama", LoRAConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"])),
    ("llama", LoRAConfig(r=2, alpha=16, use_rslora=True, modules_to_save=["model.norm"])),
    ("gpt2", LoRAConfig(r=3, alpha=6, bias="lora_only")),
    ("gpt2", LoRAConfig(r=2, alpha=4, bias="all", use_rslora=True, modules_to_save=["ln_f"])),
    ("gpt2", LoRAConfig(r=4, alpha=8, target_modules=["c_attn"], qkv_parts=["q", "v"])),
    ("t5", LoRAConfig(r=2, alpha=4, target_modules=r".*decoder.*\.(q|v)")),
    ("bert", LoRAConfig(r=2, alpha=4, target_modules=["query", "value"], bias="all")),
]


@pytest.mark.parametrize("arch,config", CASES)
def test_save_load_roundtrip_is_bit_exact(tmp_path, arch, config):
    model = trained_like(apply_lora(tiny_models.make(arch), config))
    save_adapter(model, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "loralab.json",
    }
    loaded = load_adapter(tiny_models.make(arch), tmp_path)
    a, b = lora_state_dict(model), lora_state_dict(loaded)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(tiny_models.run(model.eval()), tiny_models.run(loaded.eval()))


@pytest.mark.parametrize("arch,config", CASES)
def test_peft_loads_a_loralab_adapter(tmp_path, arch, config):
    model = trained_like(apply_lora(tiny_models.make(arch), config))
    model.eval()
    ours = tiny_models.run(model)
    save_adapter(model, tmp_path)
    peft_model = PeftModel.from_pretrained(tiny_models.make(arch), tmp_path)
    peft_model.eval()
    theirs = tiny_models.run(peft_model)
    assert (ours - theirs).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "arch,peft_config",
    [
        ("llama", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "down_proj"])),
        ("gpt2", LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True)),
        ("gpt_neo", LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", use_rslora=True)),
        (
            "llama",
            LoraConfig(
                r=2,
                lora_alpha=16,
                target_modules=["q_proj", "v_proj"],
                use_rslora=True,
                modules_to_save=["model.norm"],
            ),
        ),
        ("gpt2", LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True, bias="all")),
        (
            "gpt2",
            LoraConfig(
                r=3,
                lora_alpha=6,
                target_modules=["c_attn", "c_fc"],
                fan_in_fan_out=True,
                bias="lora_only",
                modules_to_save=["ln_f"],
            ),
        ),
    ],
)
def test_loralab_loads_a_peft_adapter(tmp_path, arch, peft_config):
    peft_model = get_peft_model(tiny_models.make(arch), peft_config)
    trained_like(peft_model)
    peft_model.eval()
    expected = tiny_models.run(peft_model)
    peft_model.save_pretrained(tmp_path)
    ours = load_adapter(tiny_models.make(arch), tmp_path)
    ours.eval()
    assert (tiny_models.run(ours) - expected).abs().max().item() <= 1e-5


def test_saved_layout_uses_peft_keys(tmp_path):
    model = apply_lora(
        tiny_models.make("gpt2"), LoRAConfig(r=4, target_modules=["c_attn"], qkv_parts=["q", "v"])
    )
    save_adapter(model, tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    key = "base_model.model.transformer.h.0.attn.c_attn"
    assert tensors[f"{key}.lora_A.weight"].shape == (8, 32)  # [A_q; A_v]
    assert tensors[f"{key}.lora_B.weight"].shape == (96, 8)  # block matrix
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["fan_in_fan_out"] is True
    assert config["rank_pattern"][key.removeprefix("base_model.model.")] == 8


def test_load_into_wrong_base_model_fails_clearly(tmp_path):
    model = apply_lora(tiny_models.make("llama"), LoRAConfig(r=2, target_modules=["q_proj"]))
    save_adapter(model, tmp_path)
    with pytest.raises(UserError, match="target module 'q_proj'"):
        load_adapter(tiny_models.make("gpt2"), tmp_path)
    with pytest.raises(UserError, match="not an adapter folder|no adapter_model"):
        load_adapter(tiny_models.make("llama"), tmp_path / "missing")
    assert not list(lora_layers(tiny_models.make("llama")))

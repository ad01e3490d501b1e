"""DoRA (Liu et al. 2024): the layer against its formula, merge / un-merge, and adapters peft reads both ways."""

import pytest
import torch
from peft import PeftModel
from transformers.pytorch_utils import Conv1D

import tiny_models
from loralab.config import load_config
from loralab.errors import UserError
from loralab.lora import LoRAConfig, LoRALinear, apply_lora, count_parameters, load_adapter, save_adapter


def dora_layer(base: torch.nn.Module) -> LoRALinear:
    torch.manual_seed(0)
    layer = LoRALinear(base, r=4, alpha=8, use_dora=True)
    with torch.no_grad():
        layer.adapter.lora_B.normal_(std=0.3)
        layer.adapter.lora_magnitude_vector.mul_(torch.rand_like(layer.adapter.lora_magnitude_vector) + 0.5)
    return layer


@pytest.mark.parametrize("base", [torch.nn.Linear(12, 10), Conv1D(10, 12)])
def test_dora_output_is_magnitude_times_unit_direction(base):
    layer = LoRALinear(base, r=4, alpha=8, use_dora=True)
    x = torch.randn(3, 12)
    assert torch.allclose(layer(x), base(x), atol=1e-6)  # m = ‖W0‖, B = 0: the base layer exactly
    layer = dora_layer(base)
    w0 = base.weight.T if isinstance(base, Conv1D) else base.weight  # d_out × d_in
    delta = layer.adapter.lora_B @ layer.adapter.lora_A * layer.adapter.scaling
    direction = (w0 + delta) / (w0 + delta).norm(dim=1, keepdim=True)
    expected = x @ (layer.adapter.lora_magnitude_vector[:, None] * direction).T + base.bias
    assert torch.allclose(layer(x), expected, atol=1e-5)


@pytest.mark.parametrize("base", [torch.nn.Linear(12, 10), Conv1D(10, 12)])
def test_dora_merges_and_unmerges(base):
    layer = dora_layer(base)
    original = base.weight.detach().clone()
    x = torch.randn(3, 12)
    with torch.no_grad():
        unmerged = layer(x)
        layer.eval()
        assert layer.merged and torch.allclose(layer(x), unmerged, atol=1e-5)
    layer.train()
    assert not layer.merged and torch.allclose(base.weight, original, atol=1e-6)


def test_dora_trains_magnitudes_but_not_through_the_norm():
    model = apply_lora(tiny_models.make("llama"), LoRAConfig(r=2, alpha=4, target_modules=["q_proj", "v_proj"],
                                                              use_dora=True))  # fmt: skip
    plain = apply_lora(
        tiny_models.make("llama"), LoRAConfig(r=2, alpha=4, target_modules=["q_proj", "v_proj"])
    )
    d_out = 32 + 16  # q_proj 32, v_proj 16 (2 kv heads of 8) per layer
    assert count_parameters(model)[0] == count_parameters(plain)[0] + 2 * d_out
    model.train()
    tiny_models.run(model, grad=True).sum().backward()
    layer = model.model.layers[0].self_attn.q_proj
    assert layer.adapter.lora_magnitude_vector.grad is not None and layer.adapter.lora_A.grad is not None
    with pytest.raises(UserError, match="qkv_parts"):
        LoRAConfig(use_dora=True, qkv_parts=("q", "v"))
    assert load_config(None, ["--lora_variant=dora"]).lora_config().use_dora


def test_peft_reads_our_dora_adapter_and_we_read_its(tmp_path):
    ours = apply_lora(tiny_models.make("llama"), LoRAConfig(r=2, alpha=4, target_modules=["q_proj", "v_proj"],
                                                             use_dora=True))  # fmt: skip
    for module in ours.modules():
        if isinstance(module, LoRALinear):
            with torch.no_grad():
                module.adapter.lora_B.normal_(std=0.2)
                module.adapter.lora_magnitude_vector.mul_(1.3)
    ours.eval()
    expected = tiny_models.run(ours)
    save_adapter(ours, tmp_path / "dora")
    theirs = PeftModel.from_pretrained(tiny_models.make("llama"), tmp_path / "dora").eval()
    assert torch.allclose(tiny_models.run(theirs), expected, atol=1e-5)
    theirs.save_pretrained(tmp_path / "from_peft")
    back = load_adapter(tiny_models.make("llama"), tmp_path / "from_peft").eval()
    assert torch.allclose(tiny_models.run(back), expected, atol=1e-5)

"""LoRALinear on its own: the math of Hu et al. 2021 for nn.Linear, GPT-2 Conv1D and fused-qkv parts."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from transformers.pytorch_utils import Conv1D

from loralab import LoRAConfig, LoRALinear


def make_base(kind: str, d_in: int, d_out: int) -> nn.Module:
    torch.manual_seed(0)
    if kind == "linear":
        return nn.Linear(d_in, d_out)
    layer = Conv1D(d_out, d_in)
    nn.init.normal_(layer.weight, std=0.2)
    nn.init.normal_(layer.bias, std=0.2)
    return layer


def randomize_B(layer: LoRALinear) -> None:
    with torch.no_grad():
        layer.adapter.lora_B.normal_(std=0.5)


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_zero_B_gives_base_output(kind):
    base = make_base(kind, 12, 18)
    x = torch.randn(3, 5, 12)
    expected = base(x)
    layer = LoRALinear(base, r=4, alpha=8)
    assert torch.equal(layer(x), expected)


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_forward_is_W0x_plus_scaled_BAx(kind):
    base = make_base(kind, 12, 18)
    layer = LoRALinear(base, r=4, alpha=8)
    randomize_B(layer)
    x = torch.randn(3, 12)
    W0 = base.weight.T if kind == "conv1d" else base.weight  # d_out x d_in
    expected = x @ W0.T + base.bias + (8 / 4) * (x @ layer.adapter.lora_A.T @ layer.adapter.lora_B.T)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
@pytest.mark.parametrize("parts", [None, [(0, 6), (12, 18)], [(6, 12)]])
def test_merged_equals_unmerged(kind, parts):
    base = make_base(kind, 12, 18)
    layer = LoRALinear(base, r=3, alpha=5, parts=parts)
    randomize_B(layer)
    x = torch.randn(4, 12)
    unmerged = layer(x)
    weight_before = base.weight.clone()
    layer.merge()
    assert layer.merged
    assert not torch.equal(base.weight, weight_before)
    assert (layer(x) - unmerged).abs().max().item() <= 1e-5
    layer.merge()  # never merge twice
    assert (layer(x) - unmerged).abs().max().item() <= 1e-5
    layer.unmerge()
    assert (base.weight - weight_before).abs().max().item() <= 1e-6
    layer.unmerge()
    assert (base.weight - weight_before).abs().max().item() <= 1e-6


def test_eval_merges_and_train_unmerges():
    layer = LoRALinear(make_base("linear", 8, 8), r=2, alpha=4)
    randomize_B(layer)
    model = nn.Sequential(layer)
    model.eval()
    assert layer.merged
    model.eval()
    assert layer.merged
    model.train()
    assert not layer.merged


def test_fused_parts_only_change_their_rows():
    base = make_base("conv1d", 12, 18)  # like GPT-2 c_attn: q, k, v blocks of 6 rows
    x = torch.randn(4, 12)
    before = base(x)
    layer = LoRALinear(base, r=2, alpha=4, parts=[(0, 6), (12, 18)])
    randomize_B(layer)
    after = layer(x)
    assert torch.equal(after[:, 6:12], before[:, 6:12])
    assert not torch.allclose(after[:, :6], before[:, :6])
    assert not torch.allclose(after[:, 12:], before[:, 12:])


@pytest.mark.parametrize("parts,expected", [(None, 3 * (12 + 18)), ([(0, 6), (12, 18)], 2 * 3 * (12 + 6))])
def test_parameter_count_is_r_times_din_plus_dout_per_matrix(parts, expected):
    layer = LoRALinear(make_base("linear", 12, 18), r=3, alpha=3, parts=parts)
    assert layer.adapter.lora_A.numel() + layer.adapter.lora_B.numel() == expected


def test_rslora_and_init_modes():
    layer = LoRALinear(make_base("linear", 64, 64), r=16, alpha=8, use_rslora=True, init="gaussian")
    assert layer.adapter.scaling == pytest.approx(8 / 4)
    assert layer.adapter.lora_A.std().item() == pytest.approx(1 / 16, rel=0.15)
    kaiming = LoRALinear(make_base("linear", 64, 64), r=16, alpha=8)
    bound = 1 / 64**0.5  # kaiming-uniform with a=sqrt(5) is U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert kaiming.adapter.lora_A.abs().max().item() <= bound
    assert kaiming.adapter.scaling == 0.5
    assert torch.count_nonzero(kaiming.adapter.lora_B) == 0


@settings(max_examples=25, deadline=None)
@given(
    d_in=st.integers(1, 24),
    block=st.integers(1, 8),
    r=st.integers(1, 6),
    alpha=st.floats(0.5, 64),
    conv=st.booleans(),
    rslora=st.booleans(),
    parts=st.sampled_from([None, "q", "v", "qv", "kv", "qkv"]),
)
def test_merge_roundtrip_property(d_in, block, r, alpha, conv, rslora, parts):
    base = make_base("conv1d" if conv else "linear", d_in, 3 * block)
    ranges = (
        None if parts is None else [("qkv".index(p) * block, ("qkv".index(p) + 1) * block) for p in parts]
    )
    layer = LoRALinear(base, r=r, alpha=alpha, use_rslora=rslora, parts=ranges)
    randomize_B(layer)
    x = torch.randn(5, d_in)
    unmerged = layer(x)
    layer.merge()
    merged = layer(x)
    scale = 1 + unmerged.abs().max().item()
    assert (merged - unmerged).abs().max().item() <= 1e-5 * scale


def test_editing_weights_while_merged_is_noticed():
    base = make_base("linear", 8, 10)
    original = base.weight.clone()
    layer = LoRALinear(base, r=2, alpha=4)
    layer.eval()  # merged with B = 0
    assert layer.merged
    with torch.no_grad():
        layer.adapter.lora_B.normal_()  # e.g. load_adapter into a model in eval mode
    x = torch.randn(3, 8)
    with torch.no_grad():
        got = layer(x)
    expected = x @ (original + layer.delta_weight()).T + base.bias
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    layer.train()
    assert (base.weight - original).abs().max().item() <= 1e-6


def test_eval_mode_forward_with_grad_still_trains_lora():
    layer = LoRALinear(make_base("linear", 8, 10), r=2, alpha=4)
    randomize_B(layer)
    layer.eval()
    layer(torch.randn(3, 8)).sum().backward()
    assert layer.adapter.lora_A.grad is not None and layer.adapter.lora_B.grad is not None


def test_merged_layer_still_runs_hooks_on_its_base_layer():
    """A merged nn.Linear base is applied directly (one module call), unless hooks are registered on it."""
    layer = LoRALinear(make_base("linear", 8, 10), r=2, alpha=4)
    randomize_B(layer)
    layer.eval()
    seen = []
    layer.base_layer.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    x = torch.randn(3, 8)
    with torch.inference_mode():
        got = layer(x)
    assert seen == [torch.Size([3, 10])]
    torch.testing.assert_close(got, layer.base_layer(x))


def test_merge_after_an_edit_merges_the_new_weights():
    """load_adapter into a model in eval mode edits A and B after the (B = 0) merge; merge() and eval() must
    then fold in the new update, not keep the old one (an export saves weights without running forward)."""
    layer = LoRALinear(make_base("linear", 8, 10), r=2, alpha=4)
    original = layer.base_layer.weight.clone()
    layer.eval()
    randomize_B(layer)
    for fold in (layer.merge, layer.eval):
        fold()
        torch.testing.assert_close(layer.base_layer.weight, original + layer.delta_weight())
    layer.train()
    torch.testing.assert_close(layer.base_layer.weight, original, atol=1e-6, rtol=0)


def test_one_constructor_from_a_config_or_its_fields():
    base = make_base("linear", 8, 10)
    torch.manual_seed(1)
    from_config = LoRALinear(base, LoRAConfig(r=2, alpha=4, dropout=0.1, init="gaussian"))
    torch.manual_seed(1)
    from_fields = LoRALinear(base, r=2, alpha=4, dropout=0.1, init="gaussian")
    assert torch.equal(from_config.adapter.lora_A, from_fields.adapter.lora_A)
    assert from_config.adapter.scaling == from_fields.adapter.scaling == 2
    with pytest.raises(TypeError, match="not both"):
        LoRALinear(base, LoRAConfig(), r=2)
    empty = LoRALinear(base)  # no adapter yet: the base layer's output
    x = torch.randn(3, 8)
    assert empty.adapter is None and torch.equal(empty(x), base(x))

"""apply_lora on real transformers architectures (tiny random configs): targets, freezing, merge, gradients."""

import pytest
import torch

import tiny_models
from loralab import LoRAConfig, apply_lora, count_parameters, merge_lora, unmerge_lora
from loralab.errors import UserError
from loralab.lora import find_target_modules, linear_module_names, lora_layers
from loralab.lora.layer import linear_shape

ARCHS = list(tiny_models.FACTORIES)


def randomize_all_B(model):
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.adapter.lora_B.copy_(torch.randn(layer.adapter.lora_B.shape, generator=gen) * 0.3)


@pytest.mark.parametrize("arch", ARCHS)
def test_all_linear_counts_and_equivalences(arch):
    base_out = tiny_models.run(tiny_models.make(arch))
    model = tiny_models.make(arch)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    apply_lora(model, LoRAConfig(r=4, alpha=8))
    layers = dict(lora_layers(model))
    assert layers, "all-linear adapted nothing"
    assert all(layer.base_layer is not head for layer in layers.values())
    expected = sum(4 * sum(linear_shape(layer.base_layer)) for layer in layers.values())
    trainable, total = count_parameters(model)
    assert trainable == expected
    assert total > trainable

    model.eval()
    assert torch.equal(tiny_models.run(model), base_out)  # B = 0: merged update is exactly zero
    model.train()
    randomize_all_B(model)
    model.eval()  # merges
    assert all(layer.merged for layer in layers.values())
    merged = tiny_models.run(model)
    unmerge_lora(model)
    unmerged = tiny_models.run(model)
    assert (merged - unmerged).abs().max().item() <= 1e-5
    assert (merged - base_out).abs().max().item() > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_only_lora_parameters_receive_gradients(arch):
    model = tiny_models.make(arch)
    apply_lora(model, LoRAConfig(r=2, alpha=2))
    randomize_all_B(model)
    model.train()
    tiny_models.run(model, grad=True).pow(2).mean().backward()
    for name, param in model.named_parameters():
        is_lora = name.endswith(("lora_A", "lora_B"))
        assert param.requires_grad == is_lora, name
        if is_lora:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_gpt2_fused_qkv_subset_q_and_v():
    model = tiny_models.make("gpt2")
    base_out = tiny_models.run(model)
    apply_lora(model, LoRAConfig(r=4, alpha=8, target_modules=["c_attn"], qkv_parts=["q", "v"]))
    layers = dict(lora_layers(model))
    assert sorted(layers) == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    d = 32
    # the LoRA paper's count: 2 matrices (W_q, W_v) x r x (d_in + d_out) per layer
    assert count_parameters(model)[0] == 2 * 2 * 4 * (d + d)
    randomize_all_B(model)
    model.eval()
    merged = tiny_models.run(model)
    unmerge_lora(model)
    assert (tiny_models.run(model) - merged).abs().max().item() <= 1e-5
    assert (merged - base_out).abs().max().item() > 1e-3
    # the k block of the fused weight is untouched by the merged update
    layer = layers["transformer.h.0.attn.c_attn"]
    delta = layer.delta_weight()  # Conv1D layout: d_in x 3d
    assert torch.count_nonzero(delta[:, d : 2 * d]) == 0
    assert torch.count_nonzero(delta[:, :d]) > 0 and torch.count_nonzero(delta[:, 2 * d :]) > 0


@pytest.mark.parametrize(
    "targets,expect",
    [
        (r".*encoder.*SelfAttention\.(q|k|v|o)", {"encoder"}),
        (r".*decoder.*SelfAttention\.(q|k|v|o)", {"decoder"}),
        (["q", "k", "v", "o"], {"encoder", "decoder"}),
    ],
)
def test_t5_attention_in_encoder_decoder_or_both(targets, expect):
    model = tiny_models.make("t5")
    names = find_target_modules(model, LoRAConfig(target_modules=targets))
    assert {n.split(".")[0] for n in names} == expect
    assert all(n.rsplit(".", 1)[-1] in "qkvo" for n in names)
    apply_lora(model, LoRAConfig(r=2, alpha=4, target_modules=targets))
    randomize_all_B(model)
    model.train()
    tiny_models.run(model, grad=True).sum().backward()
    assert all(layer.adapter.lora_B.grad is not None for _, layer in lora_layers(model))


def test_unknown_target_lists_linear_names():
    model = tiny_models.make("llama")
    with pytest.raises(UserError) as err:
        apply_lora(model, LoRAConfig(target_modules=["qq_proj"]))
    message = str(err.value)
    assert "qq_proj" in message and "q_proj" in message and "down_proj" in message
    with pytest.raises(UserError, match="not a linear layer"):
        apply_lora(model, LoRAConfig(target_modules=["self_attn"]))
    with pytest.raises(UserError, match="matches no linear layer"):
        apply_lora(model, LoRAConfig(target_modules=r"nothing\.here"))
    assert not list(lora_layers(model))  # nothing half-applied


def test_bias_modes_and_modules_to_save():
    model = tiny_models.make("gpt2")
    apply_lora(model, LoRAConfig(r=2, target_modules=["c_attn"], bias="lora_only", modules_to_save=["ln_f"]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "transformer.h.0.attn.c_attn.base_layer.bias" in trainable
    assert "transformer.h.0.mlp.c_fc.bias" not in trainable
    assert {"transformer.ln_f.weight", "transformer.ln_f.bias"} <= trainable
    model = tiny_models.make("gpt2")
    apply_lora(model, LoRAConfig(r=2, target_modules=["c_attn"], bias="all"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "transformer.h.0.mlp.c_fc.bias" in trainable


def test_merge_lora_idempotent_and_apply_twice_refused():
    model = tiny_models.make("gpt_neo")
    apply_lora(model, LoRAConfig(r=2))
    randomize_all_B(model)
    unmerge_lora(model)
    before = tiny_models.run(model)
    merge_lora(model)
    merge_lora(model)
    unmerge_lora(model)
    assert (tiny_models.run(model) - before).abs().max().item() <= 1e-5
    with pytest.raises(UserError, match="already has LoRA"):
        apply_lora(model, LoRAConfig(r=2))
    assert "lm_head" in linear_module_names(tiny_models.make("gpt_neo"))


def test_lora_on_a_head_tied_to_the_embedding_is_refused():
    model = tiny_models.make("llama")  # tie_word_embeddings=True
    assert model.lm_head.weight is model.get_input_embeddings().weight
    with pytest.raises(UserError, match="shares its weight with the input embedding"):
        apply_lora(model, LoRAConfig(r=2, alpha=4, target_modules=["lm_head"]))

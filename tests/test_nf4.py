"""NF4 quantization (QLoRA) checked against its definition, and QLoRA training on CPU."""

import json
import warnings

import pytest
import torch

import tiny_models
from loralab.cli import main
from loralab.config import load_config
from loralab.lora import LoRALinear, count_parameters
from loralab.lora.nf4 import BLOCK_SIZE, LEVELS, NF4Linear, block_scales, dequantize, quantize
from loralab.methods import lora, qlora

# Table of the 16 NF4 values as published with QLoRA (Dettmers et al. 2023, appendix E).
PUBLISHED = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
             -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
             0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
             0.7229568362236023, 1.0]  # fmt: skip


def test_levels_built_from_normal_quantiles_match_the_published_table():
    assert torch.allclose(LEVELS, torch.tensor(PUBLISHED), atol=1e-6)


def weights(shape=(96, 200), seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.02


def test_every_number_becomes_the_nearest_level_times_its_block_absmax():
    w = weights()
    q = quantize(w, double_quant=False)
    blocks = torch.nn.functional.pad(w.reshape(-1), (0, -w.numel() % BLOCK_SIZE)).view(-1, BLOCK_SIZE)
    absmax = blocks.abs().amax(1, keepdim=True)
    nearest = LEVELS[(blocks / absmax).unsqueeze(-1).sub(LEVELS).abs().argmin(-1)] * absmax
    assert torch.allclose(dequantize(q), nearest.view(-1)[: w.numel()].view(w.shape), atol=1e-7)
    # so the error is at most half the widest gap between levels, times the block's absmax
    error = (dequantize(q) - w).abs().view(-1)
    bound = (absmax * (LEVELS.diff().max() / 2)).expand(-1, BLOCK_SIZE).reshape(-1)[: w.numel()]
    assert bool((error <= bound + 1e-7).all())
    # each block's largest number is a level (±1) and comes back exactly
    assert torch.equal(dequantize(q).abs().view(-1).max(), w.abs().max())


def test_normal_weights_use_all_levels_and_beat_uniform_4bit():
    w = torch.randn(256, 256, generator=torch.Generator().manual_seed(1))
    q = quantize(w, double_quant=False)
    codes = torch.stack([q.codes >> 4, q.codes & 15], 1).view(-1).long()
    usage = torch.bincount(codes, minlength=16).float() / codes.numel()
    # quantile levels: none idle or dominant (±1 are rarer: about one number per block is its absmax)
    assert usage.min() > 0.01 and usage.max() < 0.12
    nf4_error = (dequantize(q) - w).pow(2).mean()
    blocks = w.view(-1, BLOCK_SIZE)
    absmax = blocks.abs().amax(1, keepdim=True)
    uniform = (torch.round(blocks / absmax * 7) / 7 * absmax).view(w.shape)  # symmetric int4 absmax
    assert nf4_error < 0.9 * (uniform - w).pow(2).mean()


def test_double_quantization_costs_little_accuracy_and_saves_bytes():
    w = weights((512, 640))
    single, double = quantize(w, double_quant=False), quantize(w, double_quant=True)
    assert single.nbytes() / (4 * w.numel()) == pytest.approx(4.5 / 32, rel=1e-3)
    assert double.nbytes() / (4 * w.numel()) == pytest.approx((4 + 8 / 64 + 32 / (64 * 256)) / 32, rel=1e-3)
    # 8-bit scales: each off by at most half a step of its 256-scale block
    centred = single.scales - single.scales.mean()
    step = centred.abs().view(-1, 256).amax(1) / 127
    assert bool(
        ((block_scales(double) - single.scales).abs().view(-1, 256) <= step[:, None] / 2 + 1e-9).all()
    )
    e_single, e_double = (dequantize(single) - w).pow(2).mean(), (dequantize(double) - w).pow(2).mean()
    assert e_double < 1.01 * e_single


def test_nf4_linear_computes_with_the_dequantized_weight_and_keeps_nothing_for_backward():
    linear = torch.nn.Linear(200, 96)
    layer = NF4Linear(linear)
    x = torch.randn(3, 200, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        y = layer(x)
    expected = torch.nn.functional.linear(x, layer.dequantized(), linear.bias)
    assert torch.allclose(y, expected, atol=1e-6)
    assert 96 * 200 not in saved  # no full-precision weight held between forward and backward
    y.sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(x2, layer.dequantized(), linear.bias).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-6)
    assert not any(p.requires_grad for p in layer.parameters())


def qlora_config(*extra):
    return load_config(None, ["--method=qlora", "--rank=4", "--alpha=8", *extra])


def test_qlora_quantizes_exactly_the_lora_targets_and_counts_them():
    model = qlora.prepare(tiny_models.make("llama"), qlora_config())
    reference = lora.prepare(tiny_models.make("llama"), qlora_config())
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert layers and all(isinstance(m.base_layer, NF4Linear) for m in layers)
    assert count_parameters(model) == count_parameters(reference)
    report = qlora.quantization_report(model)
    assert report["quantized_layers"] == len(layers) and report["ratio_to_fp32"] <= 0.16
    with pytest.raises(Exception, match="Conv1D"):
        qlora.prepare(tiny_models.make("gpt2"), qlora_config())


def test_eval_does_not_merge_into_4bit_and_an_explicit_merge_warns():
    model = qlora.prepare(tiny_models.make("llama"), qlora_config())
    for layer in model.modules():
        if isinstance(layer, LoRALinear):
            torch.nn.init.normal_(layer.adapter.lora_B, std=0.05)
    model.eval()
    out = tiny_models.run(model)
    layer = next(m for m in model.modules() if isinstance(m, LoRALinear))
    assert not layer.merged
    with pytest.warns(UserWarning, match="re-quantizes"):
        layer.merge()
    exact = qlora.dequantize_base(qlora.prepare(tiny_models.make("llama"), qlora_config()))
    exact.load_state_dict(model.state_dict(), strict=False)  # LoRA weights only (bases differ in type)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact.eval()  # full precision again: merges silently and exactly
        assert torch.allclose(tiny_models.run(exact), out, atol=2e-4)  # float rounding of W + ΔW


def test_qlora_trains_on_cpu_and_eval_rebuilds_the_same_4bit_base(tmp_path, tiny_llama_folder, capsys, shared_data,
                                                                   monkeypatch):  # fmt: skip
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    out = tmp_path / "run"
    args = ["train", "configs/rotten_tomatoes_lora.toml", f"--model={tiny_llama_folder}", f"--out_dir={out}",
            "--method=qlora", "--max_train_samples=32", "--max_eval_samples=16", "--max_test_samples=16",
            "--max_steps=3", "--eval_every=3", "--batch_size=8", "--max_length=64", "--lr=1e-2"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    quant = summary["quantization"]
    assert quant["quantized_weights"] == 4 * (2 * 16 * 16 + 2 * 16 * 8 + 3 * 16 * 32)  # q,o; k,v; mlp
    assert quant["ratio_to_fp32"] <= 0.16
    evals = [
        json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "val_loss" in line
    ]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert json.loads((out / "adapter" / "quantization.json").read_text())["double_quant"] is True
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert f"accuracy {summary['metrics']['accuracy']:.4f} on 16 examples" in capsys.readouterr().out


def test_qlora_lets_go_of_the_fp32_model_file(tmp_path, tiny_llama_folder):
    """Weights loaded from safetensors can be views of the file's memory map; after quantization none may be,
    or the fp32 file stays resident and QLoRA saves no memory."""
    import gc
    import shutil
    from pathlib import Path

    from loralab.models.loading import load_model_and_tokenizer

    def mapped(folder):
        return str(folder) in Path("/proc/self/maps").read_text()

    for method, still_mapped in ((lora, True), (qlora, False)):
        folder = tmp_path / method.__name__.rsplit(".", 1)[-1]
        shutil.copytree(tiny_llama_folder, folder)
        model, tokenizer = load_model_and_tokenizer(str(folder))
        model = method.prepare(model, qlora_config(), (), tokenizer)
        gc.collect()
        assert mapped(folder) == still_mapped
        del model

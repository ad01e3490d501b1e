"""Frozen base layers in bf16 and int8 (loralab.precision): their products against fp64 within bounds derived
from the rounding they do, LoRA's gradients through them on a real SmolLM2 block, and runs that really take
the chosen path (and resume bit-exactly in it)."""

import copy
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers.pytorch_utils import Conv1D

import loralab.precision.int8 as int8_module
from loralab import LoRAConfig, apply_lora
from loralab.cli import main
from loralab.lora.inject import all_lora_layers, count_parameters
from loralab.precision import choose, choose_precision, convert_base, low_precision_layers
from loralab.precision.bf16 import Bf16Linear
from loralab.precision.convert import head_precision
from loralab.precision.int8 import Int8Linear, quantize_rows, rotate

EPS32, EPS_BF16 = 2.0**-24, 2.0**-8  # unit roundoff of fp32 and bf16 (rounding to nearest)
DEMO = "configs/rotten_tomatoes_lora.toml"
SMALL = ["--max_train_samples=32", "--max_eval_samples=8", "--max_test_samples=4", "--batch_size=4",
         "--eval_batch_size=8", "--max_length=64", "--report_to=[]"]  # fmt: skip


def heavy_tailed(*shape: int, seed: int = 0) -> torch.Tensor:
    """Gaussian numbers with a few channels 50x larger, as a language model's activations have."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(*shape, generator=generator)
    values[..., :3] *= 50
    return values


def layer(d_in: int = 192, d_out: int = 96, bias: bool = True) -> nn.Linear:
    torch.manual_seed(1)
    return nn.Linear(d_in, d_out, bias=bias).requires_grad_(False)


def test_int8_forward_is_the_exact_product_of_its_rounded_operands_and_within_the_rounding_bound():
    base = layer(bias=False)
    q_layer = Int8Linear(base)
    x = heavy_tailed(5, 7, 192)
    y = q_layer(x).reshape(-1, 96).double()
    x_rot = rotate(x.reshape(-1, 192), q_layer.block)  # the layer's own fp32 steps, so the same codes
    q_x, s_x = quantize_rows(x_rot)
    w_rot = q_layer.codes.double() * q_layer.scale.double()[:, None]
    exact = (q_x.double() * s_x.double()) @ w_rot.T
    # int32 -> fp32 is exact here (|sum| < 2^24), then two fp32 products: at most 3 roundings
    assert ((y - exact).abs() <= 3 * EPS32 * exact.abs()).all()
    # against the true product: |x·Wᵀ - x̂·Ŵᵀ| <= Σ|x'|·s_w/2 + Σ|Ŵ'|·s_x/2 in the rotated basis (x' = x·H,
    # Ŵ' its rounded weight), + the fp32 rounding of the rotation and of the result
    true = x.reshape(-1, 192).double() @ base.weight.double().T
    bound = x_rot.double().abs().sum(1, keepdim=True) * q_layer.scale.double() / 2
    bound += s_x.double() / 2 * w_rot.abs().sum(1)
    error = (y - true).abs()
    assert (error <= bound * (1 + 1e-5)).all()
    assert error.max() > 1e-4  # it did round


def test_int8_input_gradient_is_within_its_rounding_bound():
    base = layer(bias=False)
    q_layer = Int8Linear(base)
    x = heavy_tailed(6, 192, seed=2).requires_grad_(True)
    g = torch.randn(6, 96, generator=torch.Generator().manual_seed(3))
    q_layer(x).backward(g)
    true = g.double() @ base.weight.double()  # ∂(g·y)/∂x = g·W
    _, s_g = quantize_rows(g)
    rounded = q_layer.grad_codes.double() * q_layer.grad_scale.double()  # Ŵ = Q_b·diag(c)
    # per entry i: (s_g/2)·Σ_o|Ŵ_oi| (g's rounding) + Σ_o|g_o|·c_i/2 (W's rounding), + fp32's in the scaling
    bound = s_g.double() / 2 * rounded.abs().sum(0) + g.double().abs().sum(1, keepdim=True) * (
        q_layer.grad_scale.double() / 2
    )
    error = (x.grad.double() - true).abs()
    assert (error <= bound * (1 + 1e-5) + 3 * EPS32 * true.abs()).all()
    assert error.max() > 1e-4  # it did round


def test_bf16_forward_and_input_gradient_are_within_the_bf16_rounding_bound():
    base = layer()
    x = heavy_tailed(4, 192, seed=4).requires_grad_(True)
    g = torch.randn(4, 96, generator=torch.Generator().manual_seed(5))
    y = Bf16Linear(base)(x)
    y.backward(g)
    true = x.detach().double() @ base.weight.double().T + base.bias.double()
    # x and W each rounded to bf16 (relative EPS_BF16), fp32 accumulation over d_in terms, the result rounded
    # to bf16, then the fp32 bias added
    magnitude = x.detach().double().abs() @ base.weight.double().abs().T
    bound = (
        magnitude * (2 * EPS_BF16 + EPS_BF16**2 + 192 * EPS32) + EPS_BF16 * (true - base.bias.double()).abs()
    )
    assert ((y.detach().double() - true).abs() <= bound * 1.01 + 2 * EPS32 * true.abs()).all()
    true_grad = g.double() @ base.weight.double()
    grad_bound = g.double().abs() @ base.weight.double().abs() * (3 * EPS_BF16 + 96 * EPS32) * 1.01
    assert ((x.grad.double() - true_grad).abs() <= grad_bound).all()


@pytest.mark.parametrize("make", [Int8Linear, Bf16Linear])
def test_a_conv1d_base_computes_what_the_linear_with_its_transposed_weight_does(make):
    linear = layer()
    conv = Conv1D(96, 192)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.T)
        conv.bias.copy_(linear.bias)
    conv.requires_grad_(False)
    x = torch.randn(3, 192)
    from_conv, from_linear = make(conv), make(linear)
    torch.testing.assert_close(from_conv(x), from_linear(x), rtol=0, atol=0)
    assert from_conv.weight.shape == conv.weight.shape  # LoRA reads the base weight in its own layout
    assert type(from_conv.to_linear()) is Conv1D


def smol_block_and_input():
    """Block 12 of the bundled SmolLM2-135M and the real hidden states it receives on eight movie reviews."""
    from loralab.models.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("smollm2-135m", torch.device("cpu"))
    texts = ["a warm, funny and moving film", "the plot is thin and the acting wooden",
             "an instant classic of the genre", "two hours I will never get back",
             "beautifully shot but emotionally empty", "the best thing the director has made",
             "it drags in the middle, then soars", "a mess from start to finish"]  # fmt: skip
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    return model, out.hidden_states[12]


def test_lora_gradients_through_an_int8_smollm2_block_match_the_fp32_block():
    model, hidden = smol_block_and_input()
    block = model.model.layers[12]
    rotary = model.model.rotary_emb(hidden, torch.arange(hidden.shape[1])[None])
    apply_lora(block, LoRAConfig(r=8, alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    torch.manual_seed(0)
    for lora in all_lora_layers(block).values():
        nn.init.normal_(lora.adapter.lora_B, std=0.02)  # B = 0 would leave A without a gradient
    direction = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(1))

    def lora_grads(b):
        b.train()
        b.zero_grad()
        (b(hidden, position_embeddings=rotary)[0] * direction).sum().backward()
        return torch.cat([p.grad.flatten() for p in b.parameters() if p.requires_grad])

    quantized = copy.deepcopy(block)
    assert convert_base(quantized, "int8", torch.device("cpu")) == (7, 0, None)
    assert count_parameters(quantized) == count_parameters(block)  # an int8 weight counts as its parameters
    cosine = F.cosine_similarity(lora_grads(block), lora_grads(quantized), dim=0)
    assert cosine > 0.99


def test_auto_picks_fp32_without_units_and_a_format_only_when_the_probe_finds_it_faster(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(choose, "cpu_flags", lambda: {"avx2", "fma"})
    assert choose_precision("auto", cpu)[0] == "fp32"
    monkeypatch.setattr(choose, "cpu_flags", lambda: {"avx512_vnni", "avx512_bf16"})
    monkeypatch.setattr(choose, "probe", lambda device: {"fp32": 1.0, "bf16": 0.9, "int8": 0.95})
    chosen, note = choose_precision("auto", cpu)
    assert chosen == "fp32" and "no format at least" in note
    monkeypatch.setattr(choose, "probe", lambda device: {"fp32": 1.0, "bf16": 0.45, "int8": 0.25})
    chosen, note = choose_precision("auto", cpu)
    assert chosen == "int8" and "avx512_vnni" in note and "int8 4.0x" in note
    monkeypatch.setattr(choose, "cpu_flags", lambda: {"avx512_bf16"})
    assert choose_precision("auto", cpu)[0] == "bf16"
    assert "expect it slower than fp32" in choose_precision("int8", cpu)[1]


def test_the_lm_head_computes_in_bf16_where_it_can_and_never_in_int8(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(choose, "cpu_flags", lambda: {"avx512_vnni"})  # int8 units, no bf16 ones
    assert head_precision("int8", cpu) == "fp32" and head_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(choose, "cpu_flags", lambda: {"avx512_vnni", "avx512_bf16"})
    assert head_precision("int8", cpu) == "bf16"
    assert head_precision("fp32", cpu) == "fp32"


def test_the_probe_times_every_format():
    seconds = choose.probe(torch.device("cpu"), repeats=1)
    assert set(seconds) == {"fp32", "bf16", "int8"} and all(s > 0 for s in seconds.values())


@pytest.fixture
def data(monkeypatch, shared_data):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))


def test_an_int8_run_takes_the_int8_path_keeps_lora_apart_in_eval_and_exports_from_the_fp32_weights(
    tmp_path, tiny_llama_folder, data, capsys, monkeypatch
):
    products = []
    real_product = int8_module.int8_product
    monkeypatch.setattr(
        int8_module, "int8_product", lambda a, b: products.append(a.shape) or real_product(a, b)
    )
    out = tmp_path / "run"
    args = ["train", DEMO, f"--model={tiny_llama_folder}", f"--out_dir={out}", "--max_steps=2", *SMALL,
            "--base_precision=int8", "--target_modules=q_proj,v_proj"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    head = head_precision("int8", torch.device("cpu"))  # bf16 where this CPU has bf16 units, else fp32
    note = "base_precision int8: 28 frozen linear layers compute in int8"  # 4 blocks × 7
    assert note + (f", the LM head in {head}\n" if head == "bf16" else "\n") in err
    assert json.loads((out / "config.json").read_text())["base_precision"] == "int8"
    assert len(products) > 28 * 3  # forward and input gradient in every step, and evaluation
    products.clear()
    rotations = []
    real_rotate = int8_module.rotate
    monkeypatch.setattr(int8_module, "rotate", lambda v, b: rotations.append(v.shape) or real_rotate(v, b))
    assert main(["eval", str(out)]) == 0
    assert products  # eval computes in int8 too
    # per block 7 products but 4 inputs rotated and quantized (q, k, v share one; gate, up another), after
    # the 28 weights of the conversion
    assert (len(rotations) - 28) * 7 == len(products) * 4
    from loralab.config import read_run_config
    from loralab.training.run_model import load_for_inference

    config = read_run_config(out / "config.json")
    model, *_ = load_for_inference(config, out)
    assert low_precision_layers(model) == {"int8": 28} | ({"bf16": 1} if head == "bf16" else {})
    fp32_model, *_ = load_for_inference(dataclasses.replace(config, base_precision="fp32"), out)
    assert count_parameters(model) == count_parameters(fp32_model)  # the tied head's copy is not counted
    assert not any(layer.merged for layer in all_lora_layers(model).values())  # ΔW not rounded into int8

    exported = tmp_path / "exported"
    assert main(["export", str(out), f"--to={exported}"]) == 0
    weights = load_file(exported / "model.safetensors")
    original = load_file(tiny_llama_folder / "model.safetensors")
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    name = "model.layers.0.self_attn.q_proj"
    lora_a = next(v for k, v in adapter.items() if f"{name}.lora_A" in k)
    lora_b = next(v for k, v in adapter.items() if f"{name}.lora_B" in k)
    scaling = 16 / 8  # the demo config's alpha / r
    expected = original[f"{name}.weight"] + scaling * lora_b @ lora_a
    torch.testing.assert_close(weights[f"{name}.weight"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_an_interrupted_low_precision_run_resumes_to_the_bit_identical_adapter(
    tmp_path, tiny_llama_folder, data, interrupt_after_checkpoint, precision
):
    base = ["train", DEMO, f"--model={tiny_llama_folder}", "--max_steps=4", "--eval_every=2", *SMALL,
            f"--base_precision={precision}"]  # fmt: skip
    assert main([*base, f"--out_dir={tmp_path / 'straight'}"]) == 0
    resumed = [*base, f"--out_dir={tmp_path / 'resumed'}"]
    with interrupt_after_checkpoint(step=2):
        assert main(resumed) == 130
    assert main([*resumed, "--resume"]) == 0
    a = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_auto_is_decided_once_and_a_resumed_run_keeps_its_choice(tmp_path, tiny_llama_folder, data, monkeypatch,
                                                                  capsys):  # fmt: skip
    monkeypatch.setattr(choose, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setattr(choose, "probe", lambda device: {"fp32": 1.0, "bf16": 0.4, "int8": 0.5})
    out = tmp_path / "run"
    args = ["train", DEMO, f"--model={tiny_llama_folder}", f"--out_dir={out}", "--max_steps=1", *SMALL,
            "--base_precision=auto"]  # fmt: skip
    assert main(args) == 0
    assert "base_precision auto: bf16 (avx512_bf16; a probe measured bf16 2.5x" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["base_precision"] == "bf16"
    monkeypatch.setattr(choose, "cpu_flags", lambda: set())  # the machine now would choose fp32
    assert main([*args, "--max_steps=2", "--resume"]) == 0
    assert "base_precision auto: bf16, as the run being resumed chose" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--autocast=bf16"], "base_precision int8 and autocast bf16 both set"),
        (["--base_precision=fp8"], "base_precision must be one of auto, fp32, bf16, int8"),
    ],
)
def test_conflicting_precision_settings_are_refused(tmp_path, data, capsys, extra, message):
    args = ["train", DEMO, f"--out_dir={tmp_path / 'run'}", "--base_precision=int8", *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "method, grids",
    [
        ("lora", {"int8": 28}),  # 4 blocks × 7
        ("last_layers", {"int8": 14}),  # the 2 frozen blocks × 7
        ("full", {}),
        ("qlora", {"NF4 (int8 products)": 28}),
    ],
)
def test_eval_converts_the_layers_training_froze_and_repeats_the_training_score(
    tmp_path, tiny_llama_folder, data, capsys, method, grids
):
    out = tmp_path / method
    args = ["train", DEMO, f"--model={tiny_llama_folder}", f"--out_dir={out}", "--max_steps=2", *SMALL,
            "--base_precision=int8", f"--method={method}", "--n_layers=2", "--max_test_samples=16"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    converted = sum(grids.values())
    expected = f"{converted} frozen linear layers compute in int8" if converted else "no frozen linear layer"
    if method != "full" and head_precision("int8", torch.device("cpu")) == "bf16":
        grids = grids | {"bf16": 1}  # the frozen LM head
    assert expected in err
    from loralab.config import read_run_config
    from loralab.training.run_model import load_for_inference

    model, *_ = load_for_inference(read_run_config(out / "config.json"), out)
    assert low_precision_layers(model) == grids
    assert main(["eval", str(out)]) == 0
    trained = json.loads((out / "summary.json").read_text())["metrics"]
    evaluated = json.loads((out / "eval.json").read_text())
    assert evaluated["accuracy"] == trained["accuracy"] and evaluated["n"] == trained["n"] == 16


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_an_nf4_base_multiplies_in_the_chosen_format_forward_and_backward(precision):
    from loralab.lora.nf4 import NF4Linear, to_linear
    from loralab.precision.nf4_products import set_nf4_products

    nf4 = NF4Linear(layer(bias=False))
    dense = {"bf16": Bf16Linear, "int8": Int8Linear}[precision](to_linear(nf4))  # the same weight, stored
    holder = nn.Sequential(nf4)
    assert set_nf4_products(holder, precision) == 1
    x = heavy_tailed(4, 192, seed=6)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1, y2 = nf4(x1), dense(x2)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=0)

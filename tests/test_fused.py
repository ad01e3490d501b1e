"""The fused paths give what the plain composition gives: the LoRA autograd functions (lora/fused.py: W + s·B·A in
one product, or LoRA beside a low-precision base) and the chunked LM-head cross-entropy (head_loss.py) behind answer_loss_sum, and the lean gated MLP (swiglu.py)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

import tiny_models
from loralab import LoRAConfig, LoRALinear, apply_lora
from loralab.data.encoding import IGNORE, Encoded, collate
from loralab.evaluation.head_loss import linear_cross_entropy_sum
from loralab.evaluation.loss import answer_loss_sum, fused_head
from loralab.lora import lora_layers, set_auto_merge
from loralab.lora.fused import fused_lora_linear
from loralab.precision import convert_base
from loralab.precision.bf16 import Bf16Linear
from loralab.precision.frozen import FrozenLinear
from loralab.precision.int8 import Int8Linear
from loralab.training.swiglu import use_lean_swiglu


def reference(layer: LoRALinear, x: torch.Tensor) -> torch.Tensor:
    """W0·x + b + s·B·A·x written out with autograd's own ops."""
    update = (x @ layer.adapter.lora_A.T) @ layer.adapter.full_B().T * layer.adapter.scaling
    return layer.base_layer(x) + update


def fusable(layer: LoRALinear, x: torch.Tensor) -> bool:
    """Whether the active adapter's forward takes the fused autograd function for `x`."""
    return layer.adapter.fusable(layer, x)


def gradients(layer: LoRALinear, x: torch.Tensor, forward) -> list[torch.Tensor]:
    x = x.clone().requires_grad_(True)
    out = forward(layer, x)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)  # a loss whose gradient differs per element
    (out * weights).sum().backward()
    trained = [p for p in layer.parameters() if p.requires_grad]
    grads = [x.grad] + [p.grad.clone() for p in trained]
    layer.zero_grad(set_to_none=True)
    return [out.detach()] + grads


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
@pytest.mark.parametrize("parts", [None, [(0, 6), (12, 18)]])
@pytest.mark.parametrize("train_bias", [False, True])
def test_fused_matches_composition(kind, parts, train_bias):
    torch.manual_seed(0)
    base = nn.Linear(12, 18) if kind == "linear" else Conv1D(18, 12)
    nn.init.normal_(base.weight, std=0.2)
    layer = LoRALinear(base, r=4, alpha=8, parts=parts)
    base.weight.requires_grad_(False)
    base.bias.requires_grad_(train_bias)
    with torch.no_grad():
        layer.adapter.lora_B.normal_(std=0.5)
    x = torch.randn(3, 5, 12)
    assert fusable(layer, x)
    fused = gradients(layer, x, lambda m, v: m(v))
    plain = gradients(layer, x, reference)
    assert len(fused) == len(plain) == 4 + train_bias
    for got, want in zip(fused, plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", [Int8Linear, Bf16Linear])
@pytest.mark.parametrize("kind", ["linear", "conv1d"])
@pytest.mark.parametrize("parts", [None, [(0, 6), (12, 18)]])
def test_lora_beside_a_low_precision_base_matches_composition(precision, kind, parts):
    torch.manual_seed(0)
    linear = nn.Linear(16, 18) if kind == "linear" else Conv1D(18, 16)
    nn.init.normal_(linear.weight, std=0.2)
    nn.init.normal_(linear.bias, std=0.2)
    layer = LoRALinear(linear.requires_grad_(False), r=4, alpha=8, parts=parts)
    layer.base_layer = precision(linear)  # as loralab.precision.convert_base does after LoRA is in
    with torch.no_grad():
        layer.adapter.lora_B.normal_(std=0.5)
    x = torch.randn(3, 5, 16)
    assert layer.adapter.beside_frozen(layer.base_layer, x)
    beside = gradients(layer, x, lambda m, v: m(v))
    plain = gradients(layer, x, reference)  # the base layer's own autograd function, LoRA by autograd
    assert len(beside) == len(plain) == 4
    for got, want in zip(beside, plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_layers_that_cannot_fuse_say_so():
    base = nn.Linear(8, 8)
    base.weight.requires_grad_(False)
    x = torch.randn(16, 8)
    assert fusable(LoRALinear(base, r=2, alpha=4), x)
    assert not fusable(LoRALinear(base, r=2, alpha=4), x[:2])  # too few tokens to pay for W + s·B·A
    assert not fusable(LoRALinear(base, r=2, alpha=4, dropout=0.1), x)  # dropout needs its own mask
    assert not fusable(LoRALinear(base, r=2, alpha=4, use_dora=True), x)
    assert not fusable(LoRALinear(base, r=2, alpha=4), x.double())
    base.weight.requires_grad_(True)  # a trained base weight needs its own gradient
    assert not fusable(LoRALinear(base, r=2, alpha=4), x)
    with pytest.raises(ValueError, match="frozen"):
        fused_lora_linear(x, base.weight, None, torch.zeros(2, 8), torch.zeros(8, 2), 1.0)


@pytest.mark.parametrize("train_head", [False, True])
@pytest.mark.parametrize("chunk_rows", [1, 3, 0])
def test_chunked_head_loss_matches_full_logits(train_head, chunk_rows):
    torch.manual_seed(0)
    hidden = torch.randn(7, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=train_head)
    bias = torch.randn(50, requires_grad=train_head)
    targets = torch.randint(0, 50, (7,))
    got = linear_cross_entropy_sum(hidden, weight, bias, targets, chunk_rows)
    want = F.cross_entropy(hidden @ weight.T + bias, targets, reduction="sum")
    torch.testing.assert_close(got, want)
    leaves = [hidden] + ([weight, bias] if train_head else [])
    got_grads = torch.autograd.grad(got * 0.5, leaves)
    want_grads = torch.autograd.grad(want * 0.5, leaves)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w)
    with torch.no_grad():  # no gradients wanted: the loss alone
        torch.testing.assert_close(linear_cross_entropy_sum(hidden, weight, bias, targets, chunk_rows), want)


@pytest.mark.parametrize(
    "make", [tiny_models.llama, tiny_models.gemma3, tiny_models.gpt2, tiny_models.gpt_neo]
)
@pytest.mark.parametrize("every_token", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "int8", "bf16"])
def test_answer_loss_with_fused_head_equals_model_logits(make, every_token, precision):
    """The fused path (body + chunked head) gives the loss and LoRA gradients of the model's own logits, with
    the frozen base and head in fp32 or converted to int8 / bf16."""
    torch.manual_seed(0)
    model = apply_lora(make(), LoRAConfig(r=4, alpha=8, target_modules="all-linear"))
    convert_base(model, precision, torch.device("cpu"))
    assert isinstance(fused_head(model), nn.Linear if precision == "fp32" else FrozenLinear)
    model.train()
    for module in model.modules():  # GPT-2's dropouts would make the two passes differ
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    for _, layer in lora_layers(model):
        torch.nn.init.normal_(layer.adapter.lora_B, std=0.1)
    assert fused_head(model) is not None
    examples = [Encoded(list(range(3, 3 + n)), n - (n - 1 if every_token else 3)) for n in (9, 14, 6)]
    batch = collate(examples, pad_id=0)
    loss, count = answer_loss_sum(model, batch)
    assert count == sum(e.n_answer for e in examples)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"]).logits  # fmt: skip
    want = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                           ignore_index=IGNORE, reduction="sum")  # fmt: skip
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)
    params = [p for p in model.parameters() if p.requires_grad]
    for g, w in zip(torch.autograd.grad(loss, params), torch.autograd.grad(want, params), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_models_with_logit_softcapping_keep_the_models_own_head():
    model = tiny_models.gemma3()
    model.config.final_logit_softcapping = 30.0
    assert fused_head(model) is None


def test_auto_merge_off_keeps_eval_unmerged_with_the_same_output():
    model = apply_lora(tiny_models.llama(), LoRAConfig(r=4, alpha=8, target_modules="all-linear"))
    for _, layer in lora_layers(model):
        torch.nn.init.normal_(layer.adapter.lora_B, std=0.1)
    ids = torch.arange(3, 15).view(2, 6)
    model.eval()
    with torch.no_grad():
        merged = model(input_ids=ids).logits
    assert all(layer.merged for _, layer in lora_layers(model))
    set_auto_merge(model, False)
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
    assert not any(layer.merged for _, layer in lora_layers(model))
    torch.testing.assert_close(unmerged, merged, rtol=1e-5, atol=1e-5)
    set_auto_merge(model, True)  # back on in eval mode: merged again
    assert all(layer.merged for _, layer in lora_layers(model))


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for backward while `fn` runs (parameters excluded)."""
    total = 0

    def pack(tensor):
        nonlocal total
        if not isinstance(tensor, nn.Parameter):
            total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_lean_swiglu_gives_the_same_gradients_and_keeps_less():
    def run(lean: bool):
        torch.manual_seed(0)
        model = apply_lora(tiny_models.llama(), LoRAConfig(r=4, alpha=8, target_modules="all-linear"))
        model.train()
        for _, layer in lora_layers(model):
            torch.nn.init.normal_(layer.adapter.lora_B, std=0.1)
        if lean:
            assert use_lean_swiglu(model) == len(model.model.layers)
        ids = torch.arange(3, 27).view(2, 12)
        out = {}
        out["kept"] = saved_bytes(lambda: out.setdefault("loss", model(input_ids=ids).logits.square().mean()))
        params = [p for p in model.parameters() if p.requires_grad]
        return out["loss"], torch.autograd.grad(out["loss"], params), out["kept"]

    loss, grads, kept = run(False)
    lean_loss, lean_grads, lean_kept = run(True)
    torch.testing.assert_close(lean_loss, loss)
    for g, w in zip(lean_grads, grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    assert lean_kept < kept
    assert use_lean_swiglu(tiny_models.gpt2()) == 0  # no gated SiLU MLP there: left alone

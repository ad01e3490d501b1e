"""Inference latency of a LoRA model, merged and un-merged, against the base model alone (target P5).

    python benchmarks/inference.py

Setting: bundled SmolLM2-135M-Instruct, fp32, LoRA r=8, alpha=16 on q,k,v,o with a non-zero B (as after
training). Two workloads under torch.inference_mode: a forward pass over 8 × 128 tokens (prefill), and greedy
generation of 32 tokens with the KV cache from one Rotten Tomatoes prompt (decoding). "merged" folds B·A into
the weights (what loralab's eval() does); "un-merged" keeps the update separate (set_auto_merge(model, False));
"base copy" is a second copy of the base model, the control: its ratio to the base shows how far this
machine's noise alone moves a ratio. Rounds alternate between the four models, the order flipped every round;
times are medians, ratios the median of each round's ratio with the interquartile range of those ratios.

The cost a merged layer adds is its Python wrapper; the last line times it directly (a merged LoRALinear
against a plain nn.Linear, both 16 × 16 with a one-token input, where the product itself is negligible) and
scales it to the model's adapted layers.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def trained_looking_lora(model):
    """LoRA on q,k,v,o with B drawn at random (B = 0 would make the un-merged path's output trivial)."""
    from loralab.lora import lora_layers

    model = common.loralab_lora(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.adapter.lora_B.copy_(torch.randn(layer.adapter.lora_B.shape, generator=generator) * 0.01)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--new_tokens", type=int, default=32)
    args = parser.parse_args()
    from loralab.lora import set_auto_merge

    base, tokenizer = common.base_model()
    merged = trained_looking_lora(copy.deepcopy(base))
    unmerged = copy.deepcopy(merged)  # the same A and B
    set_auto_merge(unmerged, False)
    models = {"base": base, "base copy": copy.deepcopy(base), "merged": merged, "un-merged": unmerged}
    for model in models.values():
        model.eval()
    batch = common.lm_batch(tokenizer)
    row = common.review_rows("test")[0]
    prompt = tokenizer(f"Review: {row['text']}\nSentiment:", return_tensors="pt")
    with torch.inference_mode():
        outputs = {name: model(input_ids=batch["input_ids"]).logits for name, model in models.items()}
    drift = (outputs["merged"] - outputs["un-merged"]).abs().max().item()
    change = (outputs["merged"] - outputs["base"]).abs().max().item()

    def prefill(model) -> None:
        with torch.inference_mode():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    def decode(model) -> None:
        with torch.inference_mode():
            model.generate(**prompt, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                           do_sample=False, pad_token_id=tokenizer.pad_token_id)  # fmt: skip

    print(f"# {common.machine()}")
    print(f"# max |logit| difference merged vs un-merged {drift:.2e}; LoRA vs base {change:.2e}")
    print(
        "| workload | base s | merged s | un-merged s | merged / base | un-merged / base | base copy / base (control) |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, work in (("prefill 8 x 128", prefill), (f"decode 1 x {args.new_tokens} tokens", decode)):
        times = common.alternate({name: lambda m=model, w=work: w(m) for name, model in models.items()},
                                 args.repeats)  # fmt: skip
        med = {name: common.median(t) for name, t in times.items()}
        ratio = {
            name: _spread(common.paired_ratios(times, name, "base")) for name in models if name != "base"
        }
        print(f"| {label} | {med['base']:.3f} | {med['merged']:.3f} | {med['un-merged']:.3f} | {ratio['merged']} | "
              f"{ratio['un-merged']} | {ratio['base copy']} |", flush=True)  # fmt: skip
    per_call, layers = _wrapper_overhead(merged)
    step = common.median(times["base"]) / args.new_tokens
    print(
        f"\nmerged wrapper: {per_call * 1e6:.1f} us per call x {layers} adapted layers = "
        f"{per_call * layers * 1e3:.2f} ms per forward, {per_call * layers / step:.2%} of a decoding step "
        f"({step * 1e3:.0f} ms per token with the base model)"
    )


def _spread(ratios: list[float]) -> str:
    """The median ratio and its interquartile range, e.g. 1.004 (0.97-1.04)."""
    q1, q2, q3 = statistics.quantiles(ratios, n=4)
    return f"{q2:.3f} ({q1:.2f}-{q3:.2f})"


def _wrapper_overhead(model, calls: int = 20000) -> tuple[float, int]:
    """Seconds a merged LoRALinear adds per call over the nn.Linear it wraps, and how many adapted layers the
    model has. Timed on a 16 × 16 layer with a one-token input, so that the product itself (the same in both)
    costs next to nothing and the wrapper's Python overhead shows; best of 5 interleaved rounds."""
    from torch import nn

    from loralab.lora import LoRALinear, lora_layers

    layers = len(list(lora_layers(model)))
    linear = nn.Linear(16, 16).requires_grad_(False)
    merged = LoRALinear(nn.Linear(16, 16).requires_grad_(False), r=8, alpha=16).eval()
    x = torch.randn(1, 1, 16)
    timings: dict[str, list[float]] = {"linear": [], "merged": []}
    with torch.inference_mode():
        for _ in range(5):
            for name, fn in (("linear", linear), ("merged", merged)):
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn(x)
                timings[name].append((time.perf_counter() - t0) / calls)
    return min(timings["merged"]) - min(timings["linear"]), layers

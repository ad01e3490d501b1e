"""Evaluation with a low-precision base: LoRA kept beside the int8 / bf16 base, or merged into a bf16 copy of the
weights (issue 18), against fp32 with LoRA merged (loralab's evaluation in fp32).

    python benchmarks/precision_eval.py [--repeats 7]

Bundled SmolLM2-135M-Instruct with LoRA r 8 on all linear layers (B drawn small, so ΔW is not zero), in eval
mode under torch.no_grad (as loralab evaluates): a prefill of 32 prompts × 64 tokens (the shape of P3's test
batches; logits at the last position only, as generation asks) and one decoding step of 32 rows over that cache.
Sides are timed in turn, the order reversed every round; medians. The last column is the largest difference of
the prefill's last-position logits from fp32's.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from loralab.lora.inject import all_lora_layers, unload_lora  # noqa: E402
from loralab.precision import convert_base  # noqa: E402

ALL_LINEAR = "all-linear"


def sides(lora) -> dict[str, torch.nn.Module]:
    built = {"fp32, LoRA merged": copy.deepcopy(lora)}
    for precision in ("int8", "bf16"):
        model = copy.deepcopy(lora)
        convert_base(model, precision, torch.device("cpu"))
        built[f"{precision} base, LoRA beside"] = model
    merged = unload_lora(copy.deepcopy(lora))
    convert_base(merged, "bf16", torch.device("cpu"))
    built["bf16 copy, LoRA merged in"] = merged
    for model in built.values():
        model.eval()
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    base, tokenizer = common.base_model()
    lora = common.loralab_lora(base, targets=ALL_LINEAR)
    for layer in all_lora_layers(lora).values():
        torch.nn.init.normal_(layer.adapter.lora_B, std=0.01)
    built = sides(lora)
    ids = common.lm_batch(tokenizer, batch_size=32, length=64)["input_ids"]
    print(f"# {common.machine()}")
    with torch.no_grad():
        logits = {name: model(input_ids=ids, logits_to_keep=1).logits for name, model in built.items()}
        caches = {
            name: model(input_ids=ids[:, :-1], use_cache=True).past_key_values
            for name, model in built.items()
        }

        def prefill(model):
            return lambda: model(
                input_ids=ids, logits_to_keep=1
            )  # as generation: the head at the last position

        def decode(name, model):
            return lambda: model(
                input_ids=ids[:, -1:], past_key_values=copy.deepcopy(caches[name]), use_cache=True
            )

        times = {
            "prefill": common.alternate({n: prefill(m) for n, m in built.items()}, args.repeats),
            "decode": common.alternate({n: decode(n, m) for n, m in built.items()}, args.repeats),
        }
    reference = logits["fp32, LoRA merged"]
    print("| side | prefill 32 × 64 s | decode step s | prefill vs fp32 | max |logit − fp32's| |")
    print("|---|---|---|---|---|")
    for name in built:
        ratio = common.median(common.paired_ratios(times["prefill"], "fp32, LoRA merged", name))
        print(f"| {name} | {common.median(times['prefill'][name]):.3f} | {common.median(times['decode'][name]):.4f} "
              f"| {ratio:.2f} | {(logits[name] - reference).abs().max().item():.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()

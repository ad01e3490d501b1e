"""Switching between adapters loaded side by side on one base model, and the cost of mixed-adapter batches.

    python benchmarks/adapter_switch.py [--repeats 15]

Setting: bundled SmolLM2-135M-Instruct, fp32, two LoRA adapters (r=8, alpha=16, all linear layers, B drawn at
random as after training) loaded with load_adapter(..., name=...). A switch is set_adapter followed by the
first forward of one token (in eval mode that forward folds the new adapter into the weights, so it is part of
the switch). "merged" is the default (eval() merges); "un-merged" keeps updates separate
(set_auto_merge(model, False)), so a switch only swaps references and every forward pays the low-rank path.
The forward of one token alone is timed as the baseline the switch adds to. Then a prefill of 8 × 128 tokens:
one adapter merged, one adapter un-merged, and four rows per adapter in one batch (adapter_per_row).
Times are medians; each figure alternates its cases round by round.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def two_adapters(base, folder: Path):
    """The base with adapters "a" and "b" loaded (random B, different seeds)."""
    from loralab import LoRAConfig, apply_lora, load_adapter, save_adapter

    for seed, name in enumerate(("a", "b")):
        model = apply_lora(copy.deepcopy(base), LoRAConfig(r=8, alpha=16, target_modules="all-linear"))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                if param_name.endswith("lora_B"):
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
        save_adapter(model, folder / name)
    model = copy.deepcopy(base)
    load_adapter(model, folder / "a", name="a")
    load_adapter(model, folder / "b", name="b")
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    from loralab.lora import set_auto_merge
    from loralab.lora.adapters import adapter_per_row, set_adapter

    base, tokenizer = common.base_model()
    one_token = torch.tensor([[tokenizer.bos_token_id or 1]])
    batch = common.lm_batch(tokenizer)["input_ids"]
    with tempfile.TemporaryDirectory() as scratch:
        merged = two_adapters(base, Path(scratch))
        unmerged = two_adapters(base, Path(scratch))
    set_auto_merge(unmerged, False)
    state = {"merged": "a", "un-merged": "a"}

    def forward(model, ids) -> None:
        with torch.inference_mode():
            model(input_ids=ids)

    def switch(label: str, model) -> None:
        state[label] = "b" if state[label] == "a" else "a"
        set_adapter(model, state[label])
        forward(model, one_token)

    print(f"# {common.machine()}")
    print("| case | median s |")
    print("|---|---|")
    times = common.alternate({"merged switch + 1-token forward": lambda: switch("merged", merged),
                              "un-merged switch + 1-token forward": lambda: switch("un-merged", unmerged),
                              "1-token forward, merged (no switch)": lambda: forward(merged, one_token),
                              "1-token forward, un-merged (no switch)": lambda: forward(unmerged, one_token)},
                             args.repeats)  # fmt: skip
    for case, values in times.items():
        print(f"| {case} | {common.median(values):.4f} |", flush=True)

    def mixed() -> None:
        with adapter_per_row(unmerged, ["a"] * 4 + ["b"] * 4):
            forward(unmerged, batch)

    set_adapter(merged, "a")
    set_adapter(unmerged, "a")
    times = common.alternate({"prefill 8 x 128, adapter a merged": lambda: forward(merged, batch),
                              "prefill 8 x 128, adapter a un-merged": lambda: forward(unmerged, batch),
                              "prefill 8 x 128, rows 0-3 a, rows 4-7 b": mixed},
                             max(3, args.repeats // 3))  # fmt: skip
    for case, values in times.items():
        print(f"| {case} | {common.median(values):.3f} |", flush=True)


if __name__ == "__main__":
    main()

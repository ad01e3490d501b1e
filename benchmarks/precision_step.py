"""Training-step speed of loralab's LoRA with the base in fp32, bf16 and int8 (and fp32 under `autocast = "bf16"`)
against peft in fp32 and peft with the base in bf16 under bf16 autocast (what `Trainer(bf16=True)` does on a
CPU), targets P1 / P2 of issue 18.

    python benchmarks/precision_step.py [--repeats 5]

Setting as in train_step.py: bundled SmolLM2-135M-Instruct, LoRA r=8, alpha=16 on q,k,v,o, AdamW, batch 8 × 128
tokens of Rotten Tomatoes reviews; P1 every token a target, P2 the answer only. All six sides are loaded in
one process and stepped in turn (the order reversed every round); a ratio is the median of per-round ratios
(anchor seconds / side seconds: > 1 means faster than the anchor). The CPU's model and its bf16 / int8 flags are
printed above the table: the figures hold for that CPU only.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from loralab.precision import convert_base  # noqa: E402

BATCHES = {"all": common.lm_batch, "answer": common.answer_batch}


def peft_bf16(base) -> tuple[torch.nn.Module, contextlib.AbstractContextManager]:
    """peft on the base loaded in bf16 (adapter weights in fp32, peft's default), stepped under bf16 autocast."""
    model = common.peft_lora(copy.deepcopy(base).to(torch.bfloat16))
    return model, torch.autocast("cpu", dtype=torch.bfloat16)


def sides(base) -> dict:
    """name -> (model, step function)."""
    built = {}
    for precision in ("fp32", "bf16", "int8"):
        model = common.loralab_lora(copy.deepcopy(base))
        convert_base(model, precision, torch.device("cpu"))
        built[f"loralab {precision}"] = (model, common.loralab_step(model, common.optimizer_for(model)))
    model = common.loralab_lora(copy.deepcopy(base))
    plain_step = common.loralab_step(model, common.optimizer_for(model))

    def autocast_loralab(batch: dict, plain=plain_step) -> float:  # what `autocast = "bf16"` does
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return plain(batch)

    built["loralab fp32 + autocast bf16"] = (model, autocast_loralab)
    model = common.peft_lora(copy.deepcopy(base))
    built["peft fp32"] = (model, common.peft_step(model, common.optimizer_for(model)))
    model, autocast = peft_bf16(base)
    plain = common.peft_step(model, common.optimizer_for(model))

    def autocast_step(batch: dict, plain=plain, autocast=autocast) -> float:
        with autocast:
            return plain(batch)

    built["peft bf16"] = (model, autocast_step)
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per target")
    args = parser.parse_args()
    torch.manual_seed(0)
    base, tokenizer = common.base_model()
    built = sides(base)
    print(f"# {common.machine()}; fp32 matmul {common.matmul_gflops():.0f} GFLOP/s")
    print("| target | side | s/step (median) | min-max | vs peft fp32 | vs peft bf16 |")
    print("|---|---|---|---|---|---|")
    for target, labels in (("P1", "all"), ("P2", "answer")):
        batch = BATCHES[labels](tokenizer)
        times = common.alternate(
            {name: lambda s=step, b=batch: s(b) for name, (_, step) in built.items()}, args.repeats
        )
        for name, seconds in times.items():
            versus = [
                common.median(common.paired_ratios(times, anchor, name))
                for anchor in ("peft fp32", "peft bf16")
            ]
            print(f"| {target} | {name} | {common.median(seconds):.3f} | {min(seconds):.3f}-{max(seconds):.3f} | "
                  f"{versus[0]:.2f} | {versus[1]:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

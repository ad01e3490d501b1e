"""Where a training step's time goes: torch.profiler over loralab's and peft's LoRA step (the P1/P2 setting).

    python benchmarks/profile_step.py [--labels all|answer] [--side both|loralab|peft] [--rows 25]

Prints the operators with the most self CPU time per step over `--steps` profiled steps of each side (after
one warm-up step each; the sides take turns in one process, so both see the same machine), with the share of
each side's total; the matrix products (addmm, mm, bmm, linear's kernels) are the FLOP floor, the
rest is overhead that fusing or not materialising tensors can remove.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", choices=["all", "answer"], default="all")
    parser.add_argument("--side", choices=["loralab", "peft", "both"], default="both")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    base, tokenizer = common.base_model()
    sides = ["loralab", "peft"] if args.side == "both" else [args.side]
    steps = {}
    for side in sides:
        model = (
            common.loralab_lora(copy.deepcopy(base))
            if side == "loralab"
            else common.peft_lora(copy.deepcopy(base))
        )
        make = common.loralab_step if side == "loralab" else common.peft_step
        steps[side] = make(model, common.optimizer_for(model))
    batch = (common.lm_batch if args.labels == "all" else common.answer_batch)(tokenizer)
    for step in steps.values():
        step(batch)  # warm-up
    events = {side: {} for side in sides}
    for _ in range(args.steps):  # the sides take turns, so a drift of the machine's speed hits both
        for side in sides:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                steps[side](batch)
            for e in prof.key_averages():
                total, count = events[side].get(e.key, (0, 0))
                events[side][e.key] = (total + e.self_cpu_time_total, count + e.count)
    totals = {side: sum(t for t, _ in events[side].values()) / 1e6 / args.steps for side in sides}
    print(f"# {common.machine()}; labels {args.labels}, {args.steps} profiled steps per side, taking turns; "
          + ", ".join(f"{side} {totals[side]:.3f} s" for side in sides) + " of operator time per step")  # fmt: skip
    print(
        "| operator | "
        + " | ".join(f"{side} calls / step | {side} self s / step | share" for side in sides)
        + " |"
    )
    print("|---" * (1 + 3 * len(sides)) + "|")
    ranked = sorted(
        {k for side in sides for k in events[side]},
        key=lambda k: -max(events[s].get(k, (0, 0))[0] for s in sides),
    )
    for key in ranked[: args.rows]:
        cells = []
        for side in sides:
            total, count = events[side].get(key, (0, 0))
            seconds = total / 1e6 / args.steps
            cells.append(f"{count // args.steps} | {seconds:.3f} | {seconds / totals[side]:.1%}")
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

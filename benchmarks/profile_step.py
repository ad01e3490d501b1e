"""Where a training step's time goes: torch.profiler over loralab's and peft's LoRA step (the P1/P2 setting).

    python benchmarks/profile_step.py [--labels all|answer] [--side loralab|peft] [--rows 25]

Prints the operators with the most self CPU time over `--steps` profiled steps (after one warm-up step),
with the share of the total; the matrix products (addmm, mm, bmm, linear's kernels) are the FLOP floor, the
rest is overhead that fusing or not materialising tensors can remove.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", choices=["all", "answer"], default="all")
    parser.add_argument("--side", choices=["loralab", "peft"], default="loralab")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    base, tokenizer = common.base_model()
    if args.side == "loralab":
        model = common.loralab_lora(base)
        step = common.loralab_step(model, common.optimizer_for(model))
    else:
        model = common.peft_lora(base)
        step = common.peft_step(model, common.optimizer_for(model))
    batch = (common.lm_batch if args.labels == "all" else common.answer_batch)(tokenizer)
    step(batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step(batch)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    print(f"# {common.machine()}; {args.side}, labels {args.labels}, {args.steps} steps: "
          f"{total / 1e6 / args.steps:.3f} s of operator time per step")  # fmt: skip
    print("| operator | calls / step | self s / step | share |")
    print("|---|---|---|---|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.rows]:
        print(f"| {e.key} | {e.count // args.steps} | {e.self_cpu_time_total / 1e6 / args.steps:.3f} | "
              f"{e.self_cpu_time_total / total:.1%} |")  # fmt: skip


if __name__ == "__main__":
    main()

"""What each speed option of a run costs and buys: gradient checkpointing, torch.compile, bf16 autocast.

    python benchmarks/options.py [--steps 4]

Setting of the P2 benchmark (bundled SmolLM2-135M-Instruct, LoRA r=8 on q,k,v,o, batch 8 × 128 tokens,
targets on the answer only), loralab's training step with each option alone. Each option runs in a fresh
process: the first step is timed apart (it includes compiling for torch.compile), then `--steps` steps give the
median step time; the peak resident set is taken over those steps (model loaded).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

OPTIONS = {
    "default": {},
    "gradient_checkpointing": {"gradient_checkpointing": True},
    "compile": {"compile": True},
    "autocast bf16": {"autocast": "bf16"},
}


def one_option(name: str, steps: int) -> None:
    from loralab.config import RunConfig
    from loralab.evaluation.loss import answer_loss_sum
    from loralab.training.run_files import reset_peak_memory
    from loralab.training.speed import apply_speed_options, autocast_context, compiled_loss

    config = RunConfig(**OPTIONS[name])
    base, tokenizer = common.base_model()
    model = common.loralab_lora(base)
    apply_speed_options(model, config)
    step = common.loralab_step(model, common.optimizer_for(model), compiled_loss(answer_loss_sum, config))
    batch = common.answer_batch(tokenizer)
    cpu = torch.device("cpu")

    def timed_step() -> float:
        t0 = time.perf_counter()
        with autocast_context(config, cpu):
            step(batch)
        return time.perf_counter() - t0

    first = timed_step()
    reset_peak_memory(cpu)
    times = [timed_step() for _ in range(steps)]
    common.print_json({"option": name, "first_step_s": first, "step_s": common.median(times),
                       "peak_mb": common.peak_rss_mb()})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--option", choices=list(OPTIONS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.option:
        one_option(args.option, args.steps)
        return
    from loralab.training.speed import bf16_is_native

    print(f"# {common.machine()}; bf16 units: {'yes' if bf16_is_native(torch.device('cpu')) else 'no'}")
    print(
        "| option | first step s | step s (median) | step vs default | peak memory MB | memory vs default |"
    )
    print("|---|---|---|---|---|---|")
    default = None
    for name in OPTIONS:
        out = subprocess.run([sys.executable, __file__, "--option", name, "--steps", str(args.steps)],
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
        r = json.loads(out.strip().splitlines()[-1])
        default = default or r
        print(f"| {name} | {r['first_step_s']:.2f} | {r['step_s']:.3f} | {r['step_s'] / default['step_s']:.2f} | "
              f"{r['peak_mb']:,.0f} | {r['peak_mb'] / default['peak_mb']:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

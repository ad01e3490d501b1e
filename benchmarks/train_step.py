"""Training-step speed and memory of loralab's LoRA against the peft library (targets P1, P2, P4).

    python benchmarks/train_step.py                 # P1 + P2 (speed, one process) and P4 (memory, one process per run)
    python benchmarks/train_step.py --only speed    # or --only memory

Setting: bundled SmolLM2-135M-Instruct, fp32, LoRA r=8, alpha=16, dropout 0 on q,k,v,o, AdamW, batch 8 × 128
tokens of Rotten Tomatoes reviews. P1 puts a target on every token; P2 only on the answer (label word + EOS)
after a prompt of earlier labelled reviews. peft runs as its users write it (the model's loss from `labels`);
loralab runs its training loop's loss path. Both models are loaded in the same process and stepped in turn,
the order flipped every round; a ratio > 1 means loralab is faster. Peak memory (P4) is measured in a fresh
process per side and run (resident-set high-water mark while training, the loaded model included).
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BATCHES = {"all": common.lm_batch, "answer": common.answer_batch}


def speed(repeats: int, steps: int) -> None:
    base, tokenizer = common.base_model()
    models = {"loralab": common.loralab_lora(copy.deepcopy(base)), "peft": common.peft_lora(base)}
    optimizers = {name: common.optimizer_for(model) for name, model in models.items()}
    make_step = {"loralab": common.loralab_step, "peft": common.peft_step}
    steppers = {name: make_step[name](models[name], optimizers[name]) for name in models}
    rate = common.matmul_gflops()
    print(f"# {common.machine()}; fp32 matmul {rate:.0f} GFLOP/s (2048^3, best of 10)")
    print("| target | labels | loralab s/step | peft s/step | speed-up (median of paired peft/loralab) | loralab TFLOP | peft TFLOP "
          "| loralab MFU | peft MFU | loss at B = 0, loralab / peft |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    batches = {labels: make(tokenizer) for labels, make in BATCHES.items()}
    with torch.no_grad():  # both start from the same base model (B = 0): the same loss
        first = {
            labels: {name: _loss(name, models[name], b) for name in models} for labels, b in batches.items()
        }
    for target, labels in (("P1", "all"), ("P2", "answer")):
        batch = batches[labels]
        flops = {name: common.counted_flops(lambda n=name, b=batch: steppers[n](b)) for name in models}

        def run_steps(name: str, batch: dict = batch) -> None:
            for _ in range(steps):
                steppers[name](batch)

        times = common.alternate({name: lambda n=name: run_steps(n) for name in models}, repeats)
        per_step = {name: common.median(t) / steps for name, t in times.items()}
        mfu = {name: flops[name] / per_step[name] / (rate * 1e9) for name in models}
        ratio = common.median(common.paired_ratios(times, "peft", "loralab"))
        print(f"| {target} | {labels} | {per_step['loralab']:.3f} | {per_step['peft']:.3f} | "
              f"{ratio:.2f} | {flops['loralab'] / 1e12:.3f} | "
              f"{flops['peft'] / 1e12:.3f} | {mfu['loralab']:.0%} | {mfu['peft']:.0%} | "
              f"{first[labels]['loralab']:.4f} / {first[labels]['peft']:.4f} |", flush=True)  # fmt: skip
        spread = {name: f"{min(t) / steps:.3f}-{max(t) / steps:.3f}" for name, t in times.items()}
        print(f"#   {target}: {repeats} rounds of {steps} steps each; per-step min-max {spread}")


def _loss(name: str, model, batch: dict) -> float:
    from loralab.evaluation.loss import answer_loss_sum

    if name == "loralab":
        loss_sum, n = answer_loss_sum(model, batch)
        return loss_sum.item() / n
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 labels=batch["labels"]).loss.item()  # fmt: skip


def one_side(side: str, labels: str, steps: int) -> None:
    """Child process of the memory benchmark: load, reset the peak, train `steps` steps, print the peak."""
    base, tokenizer = common.base_model()
    model = common.loralab_lora(base) if side == "loralab" else common.peft_lora(base)
    step = (common.loralab_step if side == "loralab" else common.peft_step)(
        model, common.optimizer_for(model)
    )
    batch = BATCHES[labels](tokenizer)
    loaded = common.peak_rss_mb()
    from loralab.training.run_files import reset_peak_memory

    reset_peak_memory(torch.device("cpu"))
    for _ in range(steps):
        step(batch)
    common.print_json(
        {"side": side, "labels": labels, "loaded_mb": loaded, "train_peak_mb": common.peak_rss_mb()}
    )


def memory(repeats: int, steps: int) -> None:
    import json

    print(f"# {common.machine()}")
    print("| target | labels | loralab peak MB | peft peak MB | ratio (loralab/peft) |")
    print("|---|---|---|---|---|")
    for labels in ("all", "answer"):
        peaks: dict[str, list[float]] = {"loralab": [], "peft": []}
        for round_ in range(repeats):
            for side in ("loralab", "peft") if round_ % 2 == 0 else ("peft", "loralab"):
                out = subprocess.run([sys.executable, __file__, "--side", side, "--labels", labels, "--steps",
                                      str(steps)], check=True, capture_output=True, text=True).stdout  # fmt: skip
                peaks[side].append(json.loads(out.strip().splitlines()[-1])["train_peak_mb"])
        med = {side: common.median(v) for side, v in peaks.items()}
        target = "P4" if labels == "all" else "P4 (answer labels)"
        print(f"| {target} | {labels} | {med['loralab']:,.0f} | {med['peft']:,.0f} | "
              f"{med['loralab'] / med['peft']:.2f} |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["speed", "memory"])
    parser.add_argument("--repeats", type=int, default=8, help="timed rounds (memory: processes per side)")
    parser.add_argument("--steps", type=int, default=1, help="optimizer steps per round")
    parser.add_argument("--side", choices=["loralab", "peft"], help=argparse.SUPPRESS)
    parser.add_argument("--labels", choices=list(BATCHES), default="all", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.side:
        one_side(args.side, args.labels, args.steps)
        return
    if args.only in (None, "speed"):
        speed(args.repeats, args.steps)
    if args.only in (None, "memory"):
        memory(3, max(2, args.steps))  # 3 fresh processes per side and labels setting


if __name__ == "__main__":
    main()

"""End to end: LoRA fine-tuning on Rotten Tomatoes then the test split by generation, loralab against a
peft + transformers Trainer pipeline (target P3).

    python benchmarks/end_to_end.py [--repeats 3]
    python benchmarks/end_to_end.py --sides loralab,loralab-int8,loralab-bf16,peft,peft-bf16 --repeats 1

Both sides: the bundled SmolLM2-135M-Instruct (the same converted weights), the same 1,024 training reviews
(loralab's seeded subset), prompt "Review: {text}\\nSentiment:" and the label word + EOS as the only target,
LoRA r=8, alpha=16, dropout 0 on all linear layers, batch 16, lr 1e-3 with 6% warmup and cosine decay, one
epoch, AdamW, clipping 1.0, then greedy generation of 3 tokens for all 1,066 test reviews, scored the same way.

The anchor is written as a competent user would: dynamic padding, length-grouped sampling, no checkpoints,
LoRA merged before evaluation, left-padded generation in batches of 32 sorted by length. loralab runs its
`train` command with the demo config (plus a validation loss on 64 reviews at the start and the end, which
the anchor skips). `loralab-int8` / `loralab-bf16` add `--base_precision=int8` / `bf16` (issue 18); `peft-bf16`
loads the base in bf16 and trains with `TrainingArguments(bf16=True)`, the best a peft user can set on a CPU.
Each side is a fresh process, timed as a whole (imports and model loading included);
the sides alternate, the order flipped every round.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRAIN_EXAMPLES, LR, BATCH, RANK, ALPHA = 1024, 1e-3, 16, 8, 16.0
TEMPLATE, WORDS = "Review: {text}\nSentiment:", ("negative", "positive")


SIDES = ("loralab", "loralab-int8", "loralab-bf16", "peft", "peft-bf16")


def loralab_command(out_dir: str, precision: str = "fp32") -> list[str]:
    return [sys.executable, "-m", "loralab", "train", str(ROOT / "configs/rotten_tomatoes_lora.toml"),
            f"--max_train_samples={TRAIN_EXAMPLES}", "--max_eval_samples=64", "--eval_every=0",
            f"--out_dir={out_dir}", f"--base_precision={precision}"]  # fmt: skip


def peft_pipeline(out_dir: str, bf16: bool = False) -> dict:
    """The anchor: peft LoRA trained by transformers' Trainer, then batched generation."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    from loralab.data.encoding import random_subset
    from loralab.evaluation.metrics import match_label
    from loralab.models.bundled import bundled_dir

    t0 = time.time()
    folder = bundled_dir("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16 if bf16 else torch.float32)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules="all-linear",
                        task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(model, config)

    def encode(row: dict) -> dict:
        prompt = tokenizer(TEMPLATE.replace("{text}", row["text"])).input_ids[:120]
        answer = tokenizer(" " + WORDS[row["label"]], add_special_tokens=False).input_ids + [
            tokenizer.eos_token_id
        ]
        return {"input_ids": prompt + answer, "attention_mask": [1] * (len(prompt) + len(answer)),
                "labels": [-100] * len(prompt) + answer}  # fmt: skip

    train_rows = random_subset(common.review_rows("train"), TRAIN_EXAMPLES, 0)
    train_set = [encode(row) for row in train_rows]
    args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=BATCH, learning_rate=LR,
                             num_train_epochs=1, lr_scheduler_type="cosine", warmup_steps=0.06, weight_decay=0.0,
                             max_grad_norm=1.0, train_sampling_strategy="group_by_length", save_strategy="no", report_to="none",
                             logging_steps=16, use_cpu=True, seed=0, disable_tqdm=True, bf16=bf16)  # fmt: skip
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    t_train = time.time()
    Trainer(model=model, args=args, train_dataset=train_set, data_collator=collator).train()
    train_s = time.time() - t_train

    t_eval = time.time()
    model = model.merge_and_unload().eval()
    tokenizer.padding_side = "left"
    test_rows = common.review_rows("test")
    prompts = [TEMPLATE.replace("{text}", row["text"]) for row in test_rows]
    order = sorted(range(len(prompts)), key=lambda i: len(tokenizer(prompts[i]).input_ids))
    generated = [""] * len(prompts)
    with torch.inference_mode():
        for start in range(0, len(order), 32):
            rows = order[start : start + 32]
            batch = tokenizer([prompts[i] for i in rows], return_tensors="pt", padding=True)
            out = model.generate(
                **batch, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            for i, ids in zip(rows, out[:, batch["input_ids"].shape[1] :], strict=True):
                generated[i] = tokenizer.decode(ids, skip_special_tokens=True)
    correct = sum(
        match_label(text, list(WORDS)) == row["label"] for text, row in zip(generated, test_rows, strict=True)
    )
    return {"accuracy": correct / len(test_rows), "n": len(test_rows), "train_s": train_s,
            "eval_s": time.time() - t_eval, "in_process_s": time.time() - t0}  # fmt: skip


def run_side(side: str) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        t0 = time.time()
        if side.startswith("loralab"):
            precision = side.partition("-")[2] or "fp32"
            subprocess.run(
                loralab_command(scratch + "/run", precision), check=True, capture_output=True, text=True
            )
            summary = json.loads(Path(scratch, "run", "summary.json").read_text())
            record = {"accuracy": summary["metrics"]["accuracy"], "n": summary["metrics"]["n"],
                      "train_s": summary["train_time_s"], "eval_s": summary["test_eval_time_s"]}  # fmt: skip
        else:
            out = subprocess.run([sys.executable, __file__, "--side", side, "--out", scratch], check=True,
                                 capture_output=True, text=True).stdout  # fmt: skip
            record = json.loads(out.strip().splitlines()[-1])
        return record | {"wall_s": time.time() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sides", default="loralab,peft", help=f"comma-separated, of {', '.join(SIDES)}")
    parser.add_argument("--side", choices=["peft", "peft-bf16"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        common.print_json(peft_pipeline(args.out, bf16=args.side == "peft-bf16"))
        return
    sides = args.sides.split(",")
    if unknown := set(sides) - set(SIDES):
        parser.error(f"unknown sides {sorted(unknown)}; choose from {', '.join(SIDES)}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"# {common.machine()}")
    print("| round | side | wall s | train s | test eval s | accuracy |")
    print("|---|---|---|---|---|---|")
    walls: dict[str, list[float]] = {side: [] for side in sides}
    accuracy: dict[str, list[float]] = {side: [] for side in sides}
    for round_ in range(args.repeats):
        for side in sides if round_ % 2 == 0 else sides[::-1]:
            r = run_side(side)
            walls[side].append(r["wall_s"])
            accuracy[side].append(r["accuracy"])
            print(f"| {round_ + 1} | {side} | {r['wall_s']:.1f} | {r['train_s']:.1f} | {r['eval_s']:.1f} | "
                  f"{r['accuracy']:.4f} |", flush=True)  # fmt: skip
    anchors = [side for side in ("peft", "peft-bf16") if side in sides]
    print(
        "\n| target | side | wall s (median) | accuracy (median) | "
        + " | ".join(f"wall vs {a}" for a in anchors)
        + " |"
    )
    print("|---|---|---|---|" + "---|" * len(anchors))
    for side in sides:
        ratios = [f"{common.median(walls[side]) / common.median(walls[a]):.2f}" for a in anchors]
        print(
            f"| P3 | {side} | {common.median(walls[side]):.1f} | {common.median(accuracy[side]):.4f} | "
            + " | ".join(ratios)
            + " |"
        )


if __name__ == "__main__":
    main()

"""Validation loss during training: LoRA merged into the frozen weights (eval()'s default) against updates kept
separate (inject.updates_kept_separate, what `loralab train` does so that a resumed run is bit-identical).

    python benchmarks/validation.py [--examples 96] [--repeats 4]

Setting: bundled SmolLM2-135M-Instruct, fp32, LoRA r=8 on all linear layers with B drawn at random (as after
training), Rotten Tomatoes validation reviews encoded as `loralab train` encodes them (max_length 128), batches
of 32. "merged" includes folding B·A into the 210 weights and taking it out again afterwards, as a validation
inside training must; "separate" adds each update on the side (one product with W + s·B·A per call). Rounds
alternate; the ratio is the median of the paired per-round ratios. Both must give the same loss.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    from loralab.config import load_config
    from loralab.data.chat import PromptFormat
    from loralab.data.encoding import random_subset
    from loralab.evaluation.validate import validation_loss
    from loralab.lora.inject import updates_kept_separate
    from loralab.tasks import get_task
    from loralab.training.examples import encode_rows
    from loralab.training.kinds import get_kind

    config = load_config("configs/rotten_tomatoes_lora.toml")
    task, kind = get_task(config.task), get_kind("causal")
    base, tokenizer = common.base_model()
    model = common.loralab_lora(base, targets="all-linear")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_B"):
                param.normal_(0, 0.01, generator=torch.Generator().manual_seed(0))
    rows = random_subset(common.review_rows("validation"), args.examples, 1)
    examples = encode_rows(task, kind, tokenizer, PromptFormat(config.template), config, rows, "validation")
    losses: dict[str, set[float]] = {"merged": set(), "separate": set()}

    def validate(case: str) -> None:
        kept = updates_kept_separate(model) if case == "separate" else contextlib.nullcontext()
        with kept:  # validation_loss returns the model to train mode, which un-merges
            loss = validation_loss(
                model, examples, 32, tokenizer.pad_token_id, torch.device("cpu"), kind.collate, kind.loss_sum
            )
        losses[case].add(round(loss, 6))

    print(f"# {common.machine()}")
    times = common.alternate({case: lambda case=case: validate(case) for case in losses}, args.repeats)
    print("| case | median s |")
    print("|---|---|")
    for case, values in times.items():
        print(f"| {case} | {common.median(values):.2f} |")
    ratio = common.median(common.paired_ratios(times, "separate", "merged"))
    print(f"separate / merged: {ratio:.3f} (median of {args.repeats} paired rounds); losses {losses}")


if __name__ == "__main__":
    main()

"""Shared pieces of the benchmarks: the bundled model with loralab's or peft's LoRA, real batches, timing.

Both sides start from the same converted SmolLM2-135M-Instruct weights (loaded the same way) and the same
LoRA settings; only the adapter code and the loss path differ. Timings alternate between the two sides so a
drift of the machine's speed hits both; figures are medians.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

IGNORE = -100
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def machine() -> str:
    """A line naming the CPU, its bf16 / int8 flags, cores and torch version (printed above every table)."""
    from loralab.precision.choose import UNITS, cpu_flags

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    units = [flag for names in UNITS.values() for flag in names if flag in flags]
    return (
        f"{cpu} (bf16 / int8 flags: {', '.join(units) or 'none'}), {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def base_model(name: str = "smollm2-135m"):
    """(model, tokenizer) of the bundled model in fp32, in train mode."""
    from loralab.models.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(name)
    model.train()
    return model, tokenizer


def loralab_lora(model, r: int = 8, alpha: float = 16.0, targets: list[str] = TARGETS):
    """LoRA as `loralab train` sets it up: the adapter, and the lean gated MLP of swiglu.py."""
    from loralab.lora import LoRAConfig, apply_lora
    from loralab.training.swiglu import use_lean_swiglu

    model = apply_lora(model, LoRAConfig(r=r, alpha=alpha, dropout=0.0, target_modules=targets))
    use_lean_swiglu(model)
    return model


def peft_lora(model, r: int = 8, alpha: float = 16.0, targets: list[str] = TARGETS):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)


def review_rows(split: str = "train") -> list[dict]:
    """Rotten Tomatoes rows ({"text", "label"}) from loralab's usual sources (LORALAB_DATA_DIR first)."""
    from loralab.data.sentiment_sources import load_rotten_tomatoes

    return load_rotten_tomatoes(split)[0]


def _labelled_review(row: dict) -> str:
    return f"Review: {row['text']}\nSentiment: {('negative', 'positive')[row['label']]}\n"


def lm_batch(tokenizer, batch_size: int = 8, length: int = 128) -> dict[str, torch.Tensor]:
    """Rows cut from a stream of labelled reviews, every token a target (language-model style)."""
    stream: list[int] = []
    for row in review_rows():
        stream += tokenizer(_labelled_review(row), add_special_tokens=False).input_ids
        if len(stream) >= batch_size * length:
            break
    input_ids = torch.tensor(stream[: batch_size * length]).view(batch_size, length)
    labels = input_ids.clone()
    labels[:, 0] = IGNORE  # nothing predicts the first token; both sides then count the same targets
    return _batch(input_ids, labels)


def answer_batch(tokenizer, batch_size: int = 8, length: int = 128) -> dict[str, torch.Tensor]:
    """Instruction-tuning rows: earlier labelled reviews as context, then "Review: ...\\nSentiment:"; only the
    answer (label word + EOS) is a target. Each row is exactly `length` tokens (context cut from the left)."""
    rows = review_rows()
    input_ids, labels = [], []
    for i in range(batch_size):
        query = rows[100 + i]
        prompt = tokenizer(f"Review: {query['text']}\nSentiment:", add_special_tokens=False).input_ids
        answer = tokenizer(" " + ("negative", "positive")[query["label"]], add_special_tokens=False).input_ids
        answer += [tokenizer.eos_token_id]
        context: list[int] = []
        for row in rows[i * 12 : i * 12 + 12]:
            context += tokenizer(_labelled_review(row), add_special_tokens=False).input_ids
        ids = (context + prompt + answer)[-length:]
        input_ids.append(ids)
        labels.append([IGNORE] * (length - len(answer)) + answer)
    return _batch(torch.tensor(input_ids), torch.tensor(labels))


def _batch(input_ids: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    positions = torch.arange(input_ids.shape[1]).expand_as(input_ids).contiguous()
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "position_ids": positions,
            "labels": labels}  # fmt: skip


def loralab_step(model, optimizer, loss_sum_fn: Callable | None = None) -> Callable[[dict], float]:
    """One optimizer step of loralab's training loop (its loss path: logits only where there are targets)."""
    from loralab.evaluation.loss import answer_loss_sum

    loss_fn = loss_sum_fn or answer_loss_sum

    def step(batch: dict) -> float:
        loss_sum, n = loss_fn(model, batch)
        (loss_sum / n).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss_sum.item() / n

    return step


def peft_step(model, optimizer) -> Callable[[dict], float]:
    """One optimizer step as a peft user writes it: the model's own loss from `labels`."""

    def step(batch: dict) -> float:
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     labels=batch["labels"]).loss  # fmt: skip
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def optimizer_for(model, lr: float = 1e-4) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)


def alternate(sides: dict[str, Callable[[], None]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each side's callable `warmup` times, then `repeats` rounds of all sides (order flipped every round);
    return each side's seconds per round."""
    for _ in range(warmup):
        for run in sides.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """The machine's fp32 matmul rate (GFLOP/s, best of `repeats` size×size products after a second of
    warm-up)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    start = time.perf_counter()
    while time.perf_counter() - start < 1.0:
        torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def paired_ratios(times: dict[str, list[float]], numerator: str, denominator: str) -> list[float]:
    """numerator / denominator round by round (the two ran back to back, so a drift of the machine's speed
    cancels); quote their median."""
    return [a / b for a, b in zip(times[numerator], times[denominator], strict=True)]


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def counted_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products and attention that `fn` runs (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def peak_rss_mb() -> float:
    """The process's resident-set high-water mark since the last reset (Linux /proc)."""
    from loralab.training.run_files import peak_memory_mb

    return peak_memory_mb(torch.device("cpu"))


def print_json(record: dict) -> None:
    print(json.dumps(record), flush=True)

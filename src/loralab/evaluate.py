"""Evaluation: validation loss over answer tokens, and batched generation scored by the task."""

from __future__ import annotations

from types import ModuleType

import torch
from tqdm.auto import tqdm

from loralab.config import RunConfig
from loralab.data import Encoded, collate, collate_prompts, encode_prompt
from loralab.loss import answer_loss_sum


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


@torch.no_grad()
def validation_loss(model: torch.nn.Module, examples: list[Encoded], batch_size: int, pad_id: int,
                    device: torch.device) -> float:  # fmt: skip
    """Mean loss per answer token (the model is put in eval mode, which merges LoRA)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = collate([examples[i] for i in order[start : start + batch_size]], pad_id)
        loss, n = answer_loss_sum(model, _to(batch, device))
        total, count = total + loss.item(), count + n
    model.train(was_training)
    return total / max(count, 1)


@torch.no_grad()
def generate(model: torch.nn.Module, tokenizer, prompts: list[str], config: RunConfig, device: torch.device,
             desc: str = "generating") -> list[str]:  # fmt: skip
    """Continuations of each prompt (greedy when temperature is 0), in the order given."""
    model.eval()
    encoded = [encode_prompt(tokenizer, p, config.max_length) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(prompts)
    sampling = config.temperature > 0
    options = {
        "do_sample": sampling,
        "max_new_tokens": config.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if sampling:
        options.update(temperature=config.temperature, top_k=config.top_k or None)
    else:
        options.update(temperature=None, top_k=None, top_p=None)
    bar = tqdm(total=len(prompts), desc=desc, unit="ex", disable=len(prompts) < 2 * config.eval_batch_size)
    for start in range(0, len(order), config.eval_batch_size):
        rows = order[start : start + config.eval_batch_size]
        batch = _to(collate_prompts([encoded[i] for i in rows], tokenizer.pad_token_id), device)
        generated = model.generate(**batch, **options)[:, batch["input_ids"].shape[1] :]
        for row, ids in zip(rows, generated, strict=True):
            outputs[row] = tokenizer.decode(ids, skip_special_tokens=True)
        bar.update(len(rows))
    bar.close()
    return outputs


def evaluate_task(model: torch.nn.Module, tokenizer, task: ModuleType, config: RunConfig, rows: list[dict],
                  device: torch.device, desc: str = "test") -> tuple[dict, list[str]]:  # fmt: skip
    """Generate for every row and score with the task's metric; returns (metrics, generations)."""
    generations = generate(model, tokenizer, [task.prompt(config, r) for r in rows], config, device, desc)
    return task.score(config, rows, generations), generations

"""Evaluation: validation loss over the targets, and batched predictions scored by the task.

Predictions come from generation for language models (causal: the continuation after the prompt;
encoder-decoder: the decoder's output) and from the argmax of the head for classifiers, which is turned into
the label word so that every task scores text.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import torch
from tqdm.auto import tqdm

from loralab.config import RunConfig
from loralab.data.encoding import collate_inputs, collate_prompts, encode_prompt
from loralab.errors import UserError
from loralab.evaluation.loss import label_loss_sum


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


@torch.inference_mode()
def validation_loss(model: torch.nn.Module, examples: list, batch_size: int, pad_id: int, device: torch.device,
                    collate: Callable, loss_sum: Callable) -> float:  # fmt: skip
    """Mean loss per target token, in eval mode (which merges LoRA, unless inject.updates_kept_separate is in
    force, as it is while training)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    total, count = 0.0, 0
    starts = range(0, len(order), batch_size)
    quiet = len(starts) < 8 or (torch.distributed.is_initialized() and torch.distributed.get_rank() != 0)
    for start in tqdm(starts, desc="validation", unit="batch", leave=False, disable=quiet):
        batch = collate([examples[i] for i in order[start : start + batch_size]], pad_id)
        loss, n = loss_sum(model, _to(batch, device))
        total, count = total + loss.item(), count + n
    model.train(was_training)
    return total / max(count, 1)


def validation_loss_and_accuracy(model: torch.nn.Module, examples: list, batch_size: int, pad_id: int,
                                 device: torch.device, collate: Callable) -> tuple[float, float]:  # fmt: skip
    """Mean cross-entropy and share of correct top classes of a classification head, in one pass."""
    correct: list[int] = []
    loss = validation_loss(model, examples, batch_size, pad_id, device, collate,
                           lambda m, batch: label_loss_sum(m, batch, correct))  # fmt: skip
    return loss, sum(correct) / max(len(examples), 1)


def _generation_options(config: RunConfig, tokenizer) -> dict:
    options = {"max_new_tokens": config.max_new_tokens, "pad_token_id": tokenizer.pad_token_id,
               "num_beams": config.num_beams, "do_sample": config.temperature > 0}  # fmt: skip
    if config.temperature > 0:
        options.update(temperature=config.temperature, top_k=config.top_k or None)
    else:
        options.update(temperature=None, top_k=None, top_p=None)
    return options


@torch.inference_mode()
def _batched(model: torch.nn.Module, tokenizer, texts: list[str], config: RunConfig, template: str, desc: str,
             run_batch: Callable[[list[list[int]]], list[str]]) -> list[str]:  # fmt: skip
    """Encode every prompt, run `run_batch` on length-sorted batches, return outputs in the order given."""
    model.eval()
    encoded = [encode_prompt(tokenizer, template, t, config.max_length) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(texts)
    bar = tqdm(total=len(texts), desc=desc, unit="ex", disable=len(texts) < 2 * config.eval_batch_size)
    for start in range(0, len(order), config.eval_batch_size):
        rows = order[start : start + config.eval_batch_size]
        for row, text in zip(rows, run_batch([encoded[i] for i in rows]), strict=True):
            outputs[row] = text
        bar.update(len(rows))
    bar.close()
    return outputs


def generate(model: torch.nn.Module, tokenizer, texts: list[str], config: RunConfig, device: torch.device,
             desc: str = "generating", template: str | None = None) -> list[str]:  # fmt: skip
    """Continuations of each filled-in prompt by a causal LM (greedy when temperature is 0)."""
    options = _generation_options(config, tokenizer)

    def run_batch(prompts: list[list[int]]) -> list[str]:
        batch = _to(collate_prompts(prompts, tokenizer.pad_token_id), device)
        generated = model.generate(**batch, **options)[:, batch["input_ids"].shape[1] :]
        return [tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]

    return _batched(model, tokenizer, texts, config, config.template if template is None else template, desc,
                    run_batch)  # fmt: skip


@torch.inference_mode()
def generate_per_row(model: torch.nn.Module, tokenizer, prompts: list[str], adapters: list[str | None],
                     config: RunConfig, device: torch.device) -> list[str]:  # fmt: skip
    """Continuations of `prompts` (used as given) by a causal LM with several adapters loaded, prompt i through
    adapter adapters[i] (None: the base model); prompts with different adapters share batches."""
    from loralab.lora.adapters import adapter_per_row
    from loralab.models.loading import model_kind

    if model_kind(model) != "causal":
        raise UserError("several adapters in one batch work for causal language models; generate one by one")
    options = _generation_options(config, tokenizer)
    encoded = [encode_prompt(tokenizer, "{text}", p, config.max_length) for p in prompts]
    outputs: list[str] = []
    for start in range(0, len(prompts), config.eval_batch_size):
        rows = slice(start, start + config.eval_batch_size)
        batch = _to(collate_prompts(encoded[rows], tokenizer.pad_token_id), device)
        with adapter_per_row(model, adapters[rows]):
            generated = model.generate(**batch, **options)[:, batch["input_ids"].shape[1] :]
        outputs += [tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]
    return outputs


def generate_seq2seq(model: torch.nn.Module, tokenizer, texts: list[str], config: RunConfig,
                     device: torch.device, desc: str = "generating", template: str | None = None) -> list[str]:  # fmt: skip
    """The decoder's output for each filled-in prompt, read by the encoder of an encoder-decoder model."""
    options = _generation_options(config, tokenizer)

    def run_batch(prompts: list[list[int]]) -> list[str]:
        batch = _to(collate_inputs(prompts, tokenizer.pad_token_id), device)
        generated = model.generate(**batch, **options)
        return [tokenizer.decode(g, skip_special_tokens=True) for g in generated]

    return _batched(model, tokenizer, texts, config, config.template if template is None else template, desc,
                    run_batch)  # fmt: skip


def predict_labels(model: torch.nn.Module, tokenizer, texts: list[str], config: RunConfig, device: torch.device,
                   desc: str = "classifying", template: str | None = None) -> list[str]:  # fmt: skip
    """The label word of the highest-scoring class of a classification head, for each text."""

    def run_batch(prompts: list[list[int]]) -> list[str]:
        batch = _to(collate_inputs(prompts, tokenizer.pad_token_id), device)
        logits = model(**batch).logits
        return [config.label_words[int(i)] for i in logits.argmax(dim=-1)]

    return _batched(model, tokenizer, texts, config, config.template if template is None else template, desc,
                    run_batch)  # fmt: skip


def evaluate_task(model: torch.nn.Module, tokenizer, task: ModuleType, config: RunConfig, rows: list[dict],
                  device: torch.device, predict: Callable = generate, desc: str = "test") -> tuple[dict, list[str]]:  # fmt: skip
    """Predict for every row and score with the task's metric; returns (metrics, predictions)."""
    outputs = predict(model, tokenizer, [task.input_text(config, r) for r in rows], config, device, desc)
    return task.score(config, rows, outputs), outputs

"""Batched predictions, text for every prompt: generation for language models (causal: the continuation after
the prompt; encoder-decoder: the decoder's output), and the argmax of a classification head turned into its
label word, so that every task scores text.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from loralab.config import RunConfig
from loralab.data.encoding import collate_inputs, collate_prompts, encode_prompt, to_device
from loralab.errors import UserError
from loralab.lora.adapters import adapter_per_row
from loralab.models.detect import model_kind


def _generation_options(config: RunConfig, tokenizer) -> dict:
    options = {
        "max_new_tokens": config.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "num_beams": config.num_beams,
        "do_sample": config.temperature > 0,
    }
    if config.temperature > 0:
        options.update(temperature=config.temperature, top_k=config.top_k or None)
    else:
        options.update(temperature=None, top_k=None, top_p=None)
    return options


@torch.inference_mode()
def _batched(
    model: torch.nn.Module,
    tokenizer,
    texts: list[str],
    config: RunConfig,
    template: str | None,
    desc: str,
    run_batch: Callable[[list[list[int]]], list[str]],
) -> list[str]:
    """Encode every prompt (into `template`, else config.template), run `run_batch` on length-sorted batches,
    return outputs in the order given."""
    model.eval()
    template = config.template if template is None else template
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


def generate(
    model: torch.nn.Module,
    tokenizer,
    texts: list[str],
    config: RunConfig,
    device: torch.device,
    desc: str = "generating",
    template: str | None = None,
) -> list[str]:
    """Continuations of each filled-in prompt by a causal LM (greedy when temperature is 0)."""
    options = _generation_options(config, tokenizer)

    def run_batch(prompts: list[list[int]]) -> list[str]:
        batch = to_device(collate_prompts(prompts, tokenizer.pad_token_id), device)
        generated = model.generate(**batch, **options)[:, batch["input_ids"].shape[1] :]
        return [tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]

    return _batched(model, tokenizer, texts, config, template, desc, run_batch)


@torch.inference_mode()
def generate_per_row(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[str],
    adapters: list[str | None],
    config: RunConfig,
    device: torch.device,
) -> list[str]:
    """Continuations of `prompts` (used as given) by a causal LM with several adapters loaded, prompt i through
    adapter adapters[i] (None: the base model); prompts with different adapters share batches."""
    if model_kind(model) != "causal":
        raise UserError("several adapters in one batch work for causal language models; generate one by one")
    options = _generation_options(config, tokenizer)
    encoded = [encode_prompt(tokenizer, "{text}", p, config.max_length) for p in prompts]
    outputs: list[str] = []
    for start in range(0, len(prompts), config.eval_batch_size):
        rows = slice(start, start + config.eval_batch_size)
        batch = to_device(collate_prompts(encoded[rows], tokenizer.pad_token_id), device)
        with adapter_per_row(model, adapters[rows]):
            generated = model.generate(**batch, **options)[:, batch["input_ids"].shape[1] :]
        outputs += [tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]
    return outputs


def generate_seq2seq(
    model: torch.nn.Module,
    tokenizer,
    texts: list[str],
    config: RunConfig,
    device: torch.device,
    desc: str = "generating",
    template: str | None = None,
) -> list[str]:
    """The decoder's output for each filled-in prompt, read by the encoder of an encoder-decoder model."""
    options = _generation_options(config, tokenizer)

    def run_batch(prompts: list[list[int]]) -> list[str]:
        batch = to_device(collate_inputs(prompts, tokenizer.pad_token_id), device)
        generated = model.generate(**batch, **options)
        return [tokenizer.decode(g, skip_special_tokens=True) for g in generated]

    return _batched(model, tokenizer, texts, config, template, desc, run_batch)


def predict_labels(
    model: torch.nn.Module,
    tokenizer,
    texts: list[str],
    config: RunConfig,
    device: torch.device,
    desc: str = "classifying",
    template: str | None = None,
) -> list[str]:
    """The label word of the highest-scoring class of a classification head, for each text."""

    def run_batch(prompts: list[list[int]]) -> list[str]:
        batch = to_device(collate_inputs(prompts, tokenizer.pad_token_id), device)
        logits = model(**batch).logits
        return [config.label_words[int(i)] for i in logits.argmax(dim=-1)]

    return _batched(model, tokenizer, texts, config, template, desc, run_batch)

"""Batched predictions, text for every prompt: generation for language models (causal: the continuation after
the prompt; encoder-decoder: the decoder's output), and the argmax of a classification head turned into its
label word, so that every task scores text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from loralab.config import RunConfig
from loralab.data.chat import PromptFormat, encode_generation_prompt, prompt_format, stop_token_ids
from loralab.data.encoding import collate_inputs, collate_prompts, encode_prompt, to_device
from loralab.errors import UserError
from loralab.lora.adapters import adapter_per_row
from loralab.models.detect import model_kind

# What a prediction is asked for: a user text (filled into the template), or a conversation whose last turn
# is the user's (instruction tasks with several turns).
Item = str | list[dict]


def run_format(tokenizer, config: RunConfig, causal: bool = True) -> tuple[PromptFormat, str]:
    """The prompt format of a run and the line that says which: the config's chat template for a causal LM,
    the plain template for the other kinds (their inputs are not conversations)."""
    choice = config.chat_template if causal else "none"
    return prompt_format(tokenizer, choice or "none", config.template, config.system_prompt)


def as_format(fmt: PromptFormat | str | None, tokenizer, config: RunConfig, causal: bool) -> PromptFormat:
    """A format given, a plain template given as text, or (None) the run's own format."""
    if isinstance(fmt, PromptFormat):
        return fmt
    if isinstance(fmt, str):
        return PromptFormat(fmt)
    return run_format(tokenizer, config, causal)[0]


def flatten(item: Item) -> str:
    """The text of an item for models that read one text: a conversation as "role: content" lines."""
    if isinstance(item, str):
        return item
    return "\n".join(f"{turn['role']}: {turn['content']}" for turn in item)


def prompt_ids(tokenizer, fmt: PromptFormat, item: Item, max_length: int, causal: bool) -> list[int]:
    """The ids a model reads before it answers `item`."""
    if causal:
        messages = [{"role": "user", "content": item}] if isinstance(item, str) else item
        return encode_generation_prompt(tokenizer, fmt, messages, max_length)
    return encode_prompt(tokenizer, fmt.template, flatten(item), max_length)


def _generation_options(config: RunConfig, tokenizer, fmt: PromptFormat | None = None) -> dict:
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
    if fmt is not None and fmt.chat is not None:  # stop at the end of the assistant's turn
        options["eos_token_id"] = stop_token_ids(tokenizer, fmt)
    return options


# no_grad, not inference_mode: tensors keep their version counters, so int8 layers reading one input (q, k, v)
# quantize it once (precision/int8.py _LastInput)
@torch.no_grad()
def _batched(
    model: torch.nn.Module,
    tokenizer,
    texts: list[Item],
    config: RunConfig,
    fmt: PromptFormat,
    desc: str,
    run_batch: Callable[[list[list[int]]], list[str]],
    causal: bool,
) -> list[str]:
    """Encode every prompt in `fmt`, run `run_batch` on length-sorted batches, return outputs in the order
    given."""
    model.eval()
    encoded = [prompt_ids(tokenizer, fmt, t, config.max_length, causal) for t in texts]
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
    texts: list[Item],
    config: RunConfig,
    device: torch.device,
    desc: str = "generating",
    fmt: PromptFormat | str | None = None,
) -> list[str]:
    """Continuations of each prompt by a causal LM (greedy when temperature is 0), in `fmt` (a format, a plain
    template, or None: the run's format from config)."""
    fmt = as_format(fmt, tokenizer, config, causal=True)
    options = _generation_options(config, tokenizer, fmt)

    def run_batch(prompts: list[list[int]]) -> list[str]:
        batch = to_device(collate_prompts(prompts, tokenizer.pad_token_id), device)
        generated = model.generate(**batch, **options)[:, batch["input_ids"].shape[1] :]
        return [tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]

    return _batched(model, tokenizer, texts, config, fmt, desc, run_batch, causal=True)


# no_grad, not inference_mode: tensors keep their version counters, so int8 layers reading one input (q, k, v)
# quantize it once (precision/int8.py _LastInput)
@torch.no_grad()
def generate_per_row(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[str],
    adapters: list[str | None],
    config: RunConfig,
    device: torch.device,
) -> list[str]:
    """Continuations of `prompts` (no task template; in the run's chat template when it uses one, as
    `generate` with one run) by a causal LM with several adapters loaded, prompt i through adapter
    adapters[i] (None: the base model); prompts with different adapters share batches."""
    if model_kind(model) != "causal":
        raise UserError("several adapters in one batch work for causal language models; generate one by one")
    fmt = run_format(tokenizer, dataclasses.replace(config, template="{text}"))[0]
    options = _generation_options(config, tokenizer, fmt)
    encoded = [prompt_ids(tokenizer, fmt, p, config.max_length, causal=True) for p in prompts]
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
    texts: list[Item],
    config: RunConfig,
    device: torch.device,
    desc: str = "generating",
    fmt: PromptFormat | str | None = None,
) -> list[str]:
    """The decoder's output for each filled-in prompt, read by the encoder of an encoder-decoder model."""
    fmt = as_format(fmt, tokenizer, config, causal=False)
    options = _generation_options(config, tokenizer)

    def run_batch(prompts: list[list[int]]) -> list[str]:
        batch = to_device(collate_inputs(prompts, tokenizer.pad_token_id), device)
        generated = model.generate(**batch, **options)
        return [tokenizer.decode(g, skip_special_tokens=True) for g in generated]

    return _batched(model, tokenizer, texts, config, fmt, desc, run_batch, causal=False)


def predict_labels(
    model: torch.nn.Module,
    tokenizer,
    texts: list[Item],
    config: RunConfig,
    device: torch.device,
    desc: str = "classifying",
    fmt: PromptFormat | str | None = None,
) -> list[str]:
    """The label word of the highest-scoring class of a classification head, for each text."""
    fmt = as_format(fmt, tokenizer, config, causal=False)

    def run_batch(prompts: list[list[int]]) -> list[str]:
        batch = to_device(collate_inputs(prompts, tokenizer.pad_token_id), device)
        logits = model(**batch).logits
        return [config.label_words[int(i)] for i in logits.argmax(dim=-1)]

    return _batched(model, tokenizer, texts, config, fmt, desc, run_batch, causal=False)

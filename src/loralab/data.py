"""From (prompt, answer) text pairs to padded batches: tokenize, mask the prompt out of the loss, group lengths.

Batches are LEFT-padded: every sequence ends at the last column, so the answer tokens sit in the last few
columns and the loss needs logits only there (see loss.py). Position ids are passed explicitly so that
padding does not shift positions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + answer; the first n_prompt ids are the prompt (not trained on)."""

    input_ids: list[int]
    n_prompt: int

    @property
    def n_answer(self) -> int:
        return len(self.input_ids) - self.n_prompt


def random_subset(rows: list, n: int, seed: int) -> list:
    """A seeded random subset of n rows (all rows when n is 0 or too large), in a shuffled order.

    Never the first n: some splits (e.g. Rotten Tomatoes on the HF hub) list all positives first.
    """
    if n <= 0 or n >= len(rows):
        return list(rows)
    return random.Random(seed).sample(rows, n)


def encode_prompt(tokenizer, prompt: str, max_length: int) -> list[int]:
    """Prompt ids as the tokenizer makes them (special tokens included), cut from the left to max_length."""
    ids = tokenizer(prompt).input_ids
    return ids[-max_length:] if len(ids) > max_length else ids


def encode_example(tokenizer, prompt: str, answer: str, max_length: int) -> Encoded:
    """prompt ids + answer ids + EOS; when too long, the prompt loses tokens from its start, the answer none."""
    answer_ids = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    budget = max(1, max_length - len(answer_ids))
    prompt_ids = encode_prompt(tokenizer, prompt, budget)
    return Encoded(prompt_ids + answer_ids, len(prompt_ids))


def batch_order(lengths: list[int], batch_size: int, seed: int, group_by_length: bool) -> list[list[int]]:
    """Indices grouped into batches, shuffled by `seed`.

    With group_by_length, indices are sorted by length inside windows of 50 batches, which removes most
    padding while keeping the order random at the scale of an epoch.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        window = batch_size * 50
        order = [
            i
            for s in range(0, len(order), window)
            for i in sorted(order[s : s + window], key=lengths.__getitem__)
        ]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def collate(examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad to the longest example; labels are IGNORE on prompt and padding."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, width - n :] = torch.tensor(example.input_ids)
        attention_mask[row, width - n :] = 1
        labels[row, width - example.n_answer :] = torch.tensor(example.input_ids[example.n_prompt :])
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "labels": labels,
    }


def collate_prompts(prompts: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad prompt ids for generation."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}

"""From (prompt, answer) text pairs to padded batches: tokenize, mask the prompt out of the loss, group lengths.

Batches are LEFT-padded: every sequence ends at the last column, so a single answer's tokens sit in the last few
columns and the loss needs logits only there (see loss.py; a multi-turn example from data.chat marks several
answers with `Encoded.trained`). Position ids are passed explicitly so that padding does not shift positions.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + answer; the first n_prompt ids are the prompt (not trained on).

    `trained` marks the ids the loss is taken on, one flag per id, for examples with several answers (the
    assistant turns of a conversation); None = every id from n_prompt on. n_prompt is then the number of ids
    before the first trained one.
    """

    input_ids: list[int]
    n_prompt: int
    trained: tuple[bool, ...] | None = None

    @property
    def n_answer(self) -> int:
        """The number of trained ids."""
        return len(self.input_ids) - self.n_prompt if self.trained is None else sum(self.trained)

    def labels(self) -> torch.Tensor:
        """The ids where they are trained, IGNORE elsewhere."""
        ids = torch.tensor(self.input_ids, dtype=torch.long)
        if self.trained is None:
            ids[: self.n_prompt] = IGNORE
            return ids
        return ids.masked_fill_(~torch.tensor(self.trained, dtype=torch.bool), IGNORE)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Seq2SeqExample:
    """Encoder input ids and decoder target ids (answer + EOS) of an encoder-decoder model such as T5."""

    source_ids: list[int]
    target_ids: list[int]

    def __len__(self) -> int:
        return len(self.source_ids) + len(self.target_ids)


@dataclass(frozen=True)
class LabelledExample:
    """Input ids and a class index, for a model with a classification head (and, for distillation, the
    teacher's class logits)."""

    input_ids: list[int]
    label: int
    teacher_logits: tuple[float, ...] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


def random_subset(rows: list, n: int, seed: int) -> list:
    """A seeded random subset of n rows (all rows when n is 0 or too large), in a shuffled order.

    Never the first n: some splits (e.g. Rotten Tomatoes on the HF hub) list all positives first.
    """
    if n <= 0 or n >= len(rows):
        return list(rows)
    return random.Random(seed).sample(rows, n)


def fill(template: str, text: str) -> str:
    """The template with `text` in place of {text} (no other braces are touched, so code stays intact)."""
    return template.replace("{text}", text)


def encode_prompt(tokenizer, template: str, text: str, max_length: int) -> list[int]:
    """Ids of the filled template (special tokens included), at most max_length of them.

    When too long, `text` is cut at its end (the longest prefix that fits, found by bisection), so the
    instruction before it and the cue after it (e.g. "Summary:") survive. A template too long even with no
    text at all is cut from the left.
    """
    return fit_text(_filled(tokenizer, template), text, max_length)


def _filled(tokenizer, template: str) -> Callable[[str], list[int]]:
    """text -> the ids of the template filled with it (verbose=False: no "longer than the maximum" warning)."""
    return lambda text: tokenizer(fill(template, text), verbose=False).input_ids


def fit_text(encode: Callable[[str], list[int]], text: str, max_length: int) -> list[int]:
    """encode(text) when it has at most max_length ids, else encode(the longest prefix of text that fits),
    found by bisection; when even encode("") is too long, the last max_length ids of encode(text)."""
    ids = encode(text)
    if len(ids) <= max_length:
        return ids
    low, high, best = 0, len(text), None
    while low <= high:
        middle = (low + high) // 2
        candidate = encode(text[:middle])
        if len(candidate) <= max_length:
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best if best is not None else ids[-max_length:]


def end_token_id(tokenizer) -> int:
    """EOS, or SEP for BERT-style tokenizers that have no EOS."""
    token = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if token is None:
        raise ValueError("the tokenizer has neither an eos nor a sep token to end answers with")
    return token


def answer_ids(tokenizer, answer: str) -> list[int]:
    return tokenizer(answer, add_special_tokens=False).input_ids + [end_token_id(tokenizer)]


def encode_example(tokenizer, template: str, text: str, answer: str, max_length: int) -> Encoded:
    """prompt ids + answer ids + EOS, at most max_length in all.

    A long prompt loses the end of its text first. Short answers (labels) are never cut; an answer longer
    than half of max_length (long code or summaries) keeps the prompt at least that half and loses its own
    end, EOS included (the model must not learn to stop where the text was merely cut).
    """
    prompt, answer = fit_example(
        _filled(tokenizer, template), text, answer_ids(tokenizer, answer), max_length
    )
    return Encoded(prompt + answer, len(prompt))


def fit_example(
    encode: Callable[[str], list[int]], text: str, answer: list[int], max_length: int
) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of at most max_length in all, by encode_example's rule; encode(text) gives the
    prompt's ids with `text` in it (fit_text cuts text)."""
    prompt = fit_text(encode, text, max_length)
    room = max_length - len(answer)
    if len(prompt) > room:
        budget = max(room, min(len(prompt), max_length // 2))
        prompt = fit_text(encode, text, budget) if budget < len(prompt) else prompt
        answer = answer[: max(0, max_length - len(prompt))]
    return prompt, answer


def encode_seq2seq(tokenizer, template: str, text: str, answer: str, max_length: int) -> Seq2SeqExample:
    """Source and target each at most max_length (a cut target loses its EOS, as in encode_example).

    The decoder starts the answer afresh, so the space a causal prompt needs before it is dropped.
    """
    target = answer_ids(tokenizer, answer.lstrip(" "))[:max_length]
    return Seq2SeqExample(encode_prompt(tokenizer, template, text, max_length), target)


def encode_labelled(tokenizer, template: str, text: str, label: int, max_length: int) -> LabelledExample:
    return LabelledExample(encode_prompt(tokenizer, template, text, max_length), int(label))


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
    """Left-pad to the longest example; labels are the trained ids, IGNORE elsewhere (prompt, padding)."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, width - n :] = torch.tensor(example.input_ids)
        attention_mask[row, width - n :] = 1
        labels[row, width - n :] = example.labels()
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "labels": labels,
    }


@dataclass(frozen=True)
class Packed:
    """Several examples laid end to end in one row (packing); none attends to another."""

    examples: tuple[Encoded, ...]

    def __len__(self) -> int:
        return sum(len(e) for e in self.examples)


def pack_examples(examples: list[Encoded], capacity: int, seed: int) -> list[Packed]:
    """Examples in a seeded random order, each appended to the current row while the row stays within
    `capacity` tokens, else starting a new row."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    rows: list[list[Encoded]] = []
    used = capacity + 1
    for i in order:
        example = examples[i]
        if used + len(example) > capacity:
            rows.append([])
            used = 0
        rows[-1].append(example)
        used += len(example)
    return [Packed(tuple(row)) for row in rows]


def collate_packed(
    rows: list[Packed], pad_id: int, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Left-padded packed rows: position ids restart at 0 for every example, and a 4-D additive attention
    mask (batch × 1 × width × width, 0 = attend, dtype's min = blocked) lets each token see only the earlier
    tokens of its own example. A padding position sees itself, so no softmax row is empty."""
    flat = [Encoded([t for e in row.examples for t in e.input_ids], 0) for row in rows]
    batch = collate(flat, pad_id)
    width = batch["input_ids"].shape[1]
    labels = torch.full_like(batch["labels"], IGNORE)
    positions = torch.zeros_like(batch["position_ids"])
    segment = torch.full((len(rows), width), -1, dtype=torch.long)  # example index per column; -1 = padding
    for r, row in enumerate(rows):
        column = width - len(row)
        for k, example in enumerate(row.examples):
            n = len(example)
            positions[r, column : column + n] = torch.arange(n)
            segment[r, column : column + n] = k
            labels[r, column : column + n] = example.labels()
            column += n
    same = segment[:, :, None] == segment[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = (same & causal & (segment[:, :, None] >= 0)) | torch.eye(width, dtype=torch.bool)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": mask[:, None],
        "position_ids": positions,
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


def _right_pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, ids in enumerate(rows):
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def collate_seq2seq(examples: list[Seq2SeqExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded encoder inputs (T5 uses relative positions, so padding side does not matter there) and
    right-padded labels with IGNORE after each target."""
    return collate_inputs([e.source_ids for e in examples], pad_id) | {
        "labels": _right_pad([e.target_ids for e in examples], IGNORE)
    }


def collate_labelled(examples: list[LabelledExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded inputs and one class index per row (plus the teacher's logits when every row has them)."""
    batch = collate_inputs([e.input_ids for e in examples], pad_id) | {
        "labels": torch.tensor([e.label for e in examples], dtype=torch.long)
    }
    if all(e.teacher_logits is not None for e in examples):
        batch["teacher_logits"] = torch.tensor([e.teacher_logits for e in examples], dtype=torch.float32)
    return batch


def collate_inputs(prompts: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids and attention mask (encoders and classifiers)."""
    return {
        "input_ids": _right_pad(prompts, pad_id),
        "attention_mask": _right_pad([[1] * len(p) for p in prompts], 0),
    }


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors on `device`."""
    return {key: value.to(device) for key, value in batch.items()}

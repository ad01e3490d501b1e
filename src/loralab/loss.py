"""Summed cross-entropy over the answer tokens, computing logits only where there are targets.

With left-padded batches the answer occupies the last K columns, so the model is asked for the last K+1
positions' logits (`logits_to_keep`): the LM head, often a fifth of a small model's compute, runs on a few
positions instead of all of them.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F

from loralab.data import IGNORE


@functools.cache
def accepts(model_class: type, argument: str) -> bool:
    return argument in inspect.signature(model_class.forward).parameters


def answer_loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of token losses, number of target tokens) for a left-padded batch from data.collate."""
    labels = batch["labels"]
    targets_per_row = (labels != IGNORE).sum(dim=1)
    k = int(targets_per_row.max())
    width = labels.shape[1]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if accepts(type(model), "position_ids"):
        inputs["position_ids"] = batch["position_ids"]
    keep = min(k + 1, width)
    if accepts(type(model), "logits_to_keep"):
        logits = model(**inputs, logits_to_keep=keep).logits
    else:
        logits = model(**inputs).logits[:, -keep:]
    # logits at column c predict the token at column c + 1
    predictions = logits[:, :-1]
    targets = labels[:, width - keep + 1 :]
    loss = F.cross_entropy(predictions.reshape(-1, predictions.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")  # fmt: skip
    return loss, int(targets_per_row.sum())


def seq2seq_loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of token losses, number of target tokens) for an encoder-decoder batch from data.collate_seq2seq.

    The decoder reads the targets shifted right behind its start token (teacher forcing); the loss is summed
    here rather than taken from the model, whose built-in loss is a mean.
    """
    labels = batch["labels"]
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   decoder_input_ids=decoder_input_ids).logits  # fmt: skip
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")  # fmt: skip
    return loss, int((labels != IGNORE).sum())


def label_loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                   correct: list[int] | None = None) -> tuple[torch.Tensor, int]:  # fmt: skip
    """(sum of cross-entropies, number of examples) for a classification batch from data.collate_labelled;
    with `correct`, the number of rows whose top class is the label is appended to it (same forward pass)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = F.cross_entropy(logits.float(), batch["labels"], reduction="sum")
    if correct is not None:
        correct.append(int((logits.argmax(dim=-1) == batch["labels"]).sum()))
    return loss, int(batch["labels"].numel())

"""Validation loss: the mean loss per target token over a set of examples, and for a classification head its
accuracy in the same pass. The loss function comes from the model's kind (training/kinds.py)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from loralab.data.encoding import to_device
from loralab.evaluation.loss import label_loss_sum


# no_grad, not inference_mode: tensors keep their version counters, so int8 layers reading one input (q, k, v)
# quantize it once (precision/int8.py _LastInput)
@torch.no_grad()
def validation_loss(
    model: torch.nn.Module,
    examples: list,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    collate: Callable,
    loss_sum: Callable,
) -> float:
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
        loss, n = loss_sum(model, to_device(batch, device))
        total, count = total + loss.item(), count + n
    model.train(was_training)
    return total / max(count, 1)


def validation_loss_and_accuracy(
    model: torch.nn.Module,
    examples: list,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    collate: Callable,
) -> tuple[float, float]:
    """Mean cross-entropy and share of correct top classes of a classification head, in one pass."""
    correct: list[int] = []
    loss = validation_loss(
        model,
        examples,
        batch_size,
        pad_id,
        device,
        collate,
        lambda m, batch: label_loss_sum(m, batch, correct),
    )
    return loss, sum(correct) / max(len(examples), 1)

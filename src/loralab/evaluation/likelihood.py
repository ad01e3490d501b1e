"""Classification by likelihood: the score of each label word (a choice) after a prompt is the log-probability a
causal LM gives its tokens, sum over the choice's tokens of log p(token | prompt + the choice's earlier tokens),
and the prediction is the best-scoring choice (as in the rank classification of Brown et al. 2020, without
length normalisation). Unlike generation, every prediction is a valid label.

Batches are left-padded with explicit position ids, as data.encoding.collate makes them, so a prompt scores the
same alone or in any batch.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from loralab.data.encoding import IGNORE, Encoded, collate, collate_prompts, to_device
from loralab.errors import UserError
from loralab.evaluation.loss import accepts


def _check(
    model: torch.nn.Module, prompts: list[list[int]], choices: list[list[int]], batch_size: int
) -> None:
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        raise UserError(
            "scoring label words by likelihood works for causal language models only; score this "
            "encoder-decoder model by generation instead"
        )
    if not choices or any(not choice for choice in choices):
        raise ValueError("every choice needs at least one token")
    if any(not prompt for prompt in prompts):
        raise ValueError("every prompt needs at least one token (e.g. BOS) to predict the choice from")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _forward_tail(model: torch.nn.Module, batch: dict[str, torch.Tensor], keep: int) -> torch.Tensor:
    """Float32 log-softmax of the logits at the last `keep` columns of a left-padded batch."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if accepts(type(model), "position_ids"):
        inputs["position_ids"] = batch["position_ids"]
    if accepts(type(model), "use_cache"):
        inputs["use_cache"] = False
    if accepts(type(model), "logits_to_keep"):
        logits = model(**inputs, logits_to_keep=keep).logits
    else:
        logits = model(**inputs).logits[:, -keep:]
    return logits.float().log_softmax(dim=-1)


def _batches(n: int, batch_size: int):
    """The start of every batch, with a progress bar when there are many."""
    starts = range(0, n, batch_size)
    return tqdm(starts, desc="scoring label words", unit="batch", leave=False, disable=len(starts) < 8)


def _single_token_scores(model, prompts, token_ids, pad_id, device, batch_size) -> torch.Tensor:
    """One forward pass per batch of prompts: the next-token log-probabilities of each choice's only token."""
    scores = torch.empty(len(prompts), len(token_ids))
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths: little padding
    choice_ids = torch.tensor(token_ids, device=device)
    for start in _batches(len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = collate_prompts([prompts[i] for i in rows], pad_id)
        batch["position_ids"] = (batch["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
        log_probs = _forward_tail(model, to_device(batch, device), 1)[:, -1]
        scores[rows] = log_probs[:, choice_ids].cpu()
    return scores


def _sequence_scores(model, prompts, choices, pad_id, device, batch_size) -> torch.Tensor:
    """Batches of prompt + choice sequences (`batch_size` sequences each), each choice's log-probs summed."""
    pairs = [(p, c) for p in range(len(prompts)) for c in range(len(choices))]
    examples = [Encoded(prompts[p] + choices[c], len(prompts[p])) for p, c in pairs]
    order = sorted(range(len(pairs)), key=lambda i: len(examples[i]))
    scores = torch.empty(len(prompts), len(choices))
    for start in _batches(len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = to_device(collate([examples[i] for i in rows], pad_id), device)
        keep = max(examples[i].n_answer for i in rows) + 1  # the choice fills the last columns (left padding)
        log_probs = _forward_tail(model, batch, keep)[:, :-1]  # column c predicts the token at c + 1
        targets = batch["labels"][:, -(keep - 1) :]
        chosen = targets != IGNORE
        picked = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        sums = torch.where(chosen, picked, 0.0).sum(dim=1).cpu()
        for row, total in zip(rows, sums, strict=True):
            scores[pairs[row]] = total
    return scores


@torch.inference_mode()
def score_choices(
    model: torch.nn.Module,
    prompts: list[list[int]],
    choices: list[list[int]],
    pad_id: int,
    device: torch.device | str,
    batch_size: int,
) -> torch.Tensor:
    """[len(prompts), len(choices)] float32 log-likelihoods (on the CPU) of each choice's tokens after each
    prompt, by a causal LM.

    When every choice is one token, one forward pass per `batch_size` prompts reads them all off the next-token
    distribution; otherwise each prompt + choice is a sequence, `batch_size` sequences per pass. The model is
    put in eval mode for the call and back in the mode it was in after it.
    """
    _check(model, prompts, choices, batch_size)
    was_training = model.training
    model.eval()
    try:
        if all(len(choice) == 1 for choice in choices):
            token_ids = [choice[0] for choice in choices]
            return _single_token_scores(model, prompts, token_ids, pad_id, device, batch_size)
        return _sequence_scores(model, prompts, choices, pad_id, device, batch_size)
    finally:
        model.train(was_training)


def pick_choices(
    model: torch.nn.Module,
    prompts: list[list[int]],
    choices: list[list[int]],
    pad_id: int,
    device: torch.device | str,
    batch_size: int,
) -> list[int]:
    """The index of the likeliest choice (score_choices) for each prompt; ties go to the earlier choice."""
    scores = score_choices(model, prompts, choices, pad_id, device, batch_size)
    return [int(i) for i in scores.argmax(dim=1)]

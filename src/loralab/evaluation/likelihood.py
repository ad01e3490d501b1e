"""Classification by likelihood: the score of each label word (a choice) after a prompt is the log-probability a
causal LM gives its tokens, sum over the choice's tokens of log p(token | prompt + the choice's earlier tokens),
and the prediction is the best-scoring choice (as in the rank classification of Brown et al. 2020, without
length normalisation). Unlike generation, every prediction is a valid label.

Prompt batches are left-padded with explicit position ids, as data.encoding.collate makes them, so a prompt
scores the same alone or in any batch; choices of several tokens follow their prompt's cached keys and values.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from loralab.data.encoding import collate_prompts, to_device
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
    """Prompt by prompt: a pass over the prompt (its keys and values cached), then up to `batch_size` choices
    in one batch (right-padded, the cache repeated per choice); each choice's token log-probs summed. The
    prompt's tokens are read once per batch of choices, not once per choice (77 label words: about 10x fewer
    tokens than prompt + choice sequences)."""
    scores = torch.empty(len(prompts), len(choices))
    for p in _batches(len(prompts), 1):
        prompt = torch.tensor([prompts[p]], device=device)
        for start in range(0, len(choices), batch_size):
            part = choices[start : start + batch_size]
            scores[p, start : start + len(part)] = _choices_after(model, prompt, part, pad_id, device)
    return scores


def _choices_after(
    model, prompt: torch.Tensor, choices: list[list[int]], pad_id: int, device
) -> torch.Tensor:
    """The summed log-probs of each choice after the one prompt (a 1 x P tensor)."""
    n, width, length = len(choices), max(len(c) for c in choices), prompt.shape[1]
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    present = torch.zeros((n, width), dtype=torch.bool)
    for row, choice in enumerate(choices):
        ids[row, : len(choice)] = torch.tensor(choice)
        present[row, : len(choice)] = True
    ids, present = ids.to(device), present.to(device)
    out = model(input_ids=prompt, use_cache=True)
    first = out.logits[0, -1].float().log_softmax(dim=-1)[ids[:, 0]]  # each choice's first token
    cache = out.past_key_values
    cache.batch_repeat_interleave(n)
    mask = torch.cat([torch.ones((n, length), dtype=torch.long, device=device), present.long()], dim=1)
    positions = torch.arange(length, length + width, device=device).expand(n, width)
    name = "cache" if accepts(type(model), "cache") else "past_key_values"  # renamed in transformers 5
    later = model(input_ids=ids, attention_mask=mask, position_ids=positions, **{name: cache}).logits
    log_probs = later[:, :-1].float().log_softmax(dim=-1)  # column c predicts the choice's token c + 1
    picked = log_probs.gather(-1, ids[:, 1:, None])[..., 0]
    return (first + torch.where(present[:, 1:], picked, 0.0).sum(dim=1)).cpu()


# no_grad, not inference_mode: tensors keep their version counters, so int8 layers reading one input (q, k, v)
# quantize it once (precision/int8.py _LastInput)
@torch.no_grad()
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
    distribution; otherwise each prompt is read once (keys and values cached) and its choices follow it,
    `batch_size` choices per pass. The model is
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

"""Summed cross-entropy over the answer tokens, computing logits only where there are targets.

For the decoder LMs whose logits are exactly `lm_head(body(...).last_hidden_state)` (FUSED_HEAD_MODELS), the
body's hidden states at the positions that predict a target are gathered and handed to head_loss.py, which
makes their logits a chunk at a time: the LM head, often a fifth of a small model's compute, runs only where
there are targets and the vocabulary-size logits tensor never exists whole. Other models are asked for the
last K+1 positions' logits (`logits_to_keep`), K counted from the first column holding a target: with
left-padded batches a single answer occupies the last K columns.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from loralab.data.encoding import IGNORE
from loralab.evaluation.head_loss import linear_cross_entropy_sum
from loralab.precision.frozen import FrozenLinear

# model_type values whose causal-LM forward is body → lm_head with nothing in between (Gemma 3 only when it has
# no final logit soft-capping, checked below).
FUSED_HEAD_MODELS = {"llama", "gpt2", "gpt_neo", "gemma3_text", "mistral", "qwen2"}


@functools.cache
def accepts(model_class: type, argument: str) -> bool:
    return argument in inspect.signature(model_class.forward).parameters


def fused_head(model: torch.nn.Module) -> torch.nn.Linear | FrozenLinear | None:
    """The model's LM head when answer_loss_sum may apply it itself to the body's hidden states, else None
    (a FrozenLinear: a frozen head in int8 / bf16, loralab.precision)."""
    config = getattr(model, "config", None)
    if not isinstance(model, PreTrainedModel) or getattr(config, "model_type", None) not in FUSED_HEAD_MODELS:
        return None
    if getattr(config, "final_logit_softcapping", None) or model.base_model is model:
        return None
    head = model.get_output_embeddings()
    return head if type(head) is torch.nn.Linear or isinstance(head, FrozenLinear) else None


def packing_problem(model: torch.nn.Module, max_length: int, kind: str = "causal") -> str | None:
    """Why packed rows (data.collate_packed: a 4-D block-diagonal mask) would not train this model of `kind`
    (kinds.py) exactly as its examples alone, or None when they would."""
    config = getattr(model, "config", None)
    if not isinstance(model, PreTrainedModel):  # e.g. prompt tuning's wrapper, which adds columns
        return "packing needs the plain model; set packing = false for this method"
    if (
        kind != "causal"
        or getattr(config, "is_encoder_decoder", False)
        or not accepts(type(model), "position_ids")
    ):
        return "packing works for causal language models only; set packing = false for this model"
    window = getattr(config, "sliding_window", None)
    if window and window < max_length and getattr(config, "use_sliding_window", True):
        return (
            f"this model's sliding window of {window} tokens is shorter than a packed row (max_length "
            f"{max_length}): one mask cannot serve its full and sliding layers; lower max_length to {window} "
            "or set packing = false"
        )
    return None


def answer_loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of token losses, number of target tokens) for a left-padded batch from data.collate."""
    labels = batch["labels"]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if accepts(type(model), "position_ids"):
        inputs["position_ids"] = batch["position_ids"]
    if accepts(type(model), "use_cache"):
        inputs["use_cache"] = False  # a training or validation pass has no use for a KV cache
    head = fused_head(model)
    if head is not None:
        hidden = model.base_model(**inputs).last_hidden_state
        predicts = labels[:, 1:] != IGNORE  # the hidden state at column c predicts the token at c + 1
        frozen = head if isinstance(head, FrozenLinear) else None
        loss = linear_cross_entropy_sum(
            hidden[:, :-1][predicts],
            None if frozen else head.weight,
            head.bias,
            labels[:, 1:][predicts],
            frozen=frozen,
        )
        return loss, int(predicts.sum())
    # Logits from the first column holding a target on: with left padding a single answer fills the last k
    # columns; the assistant turns of a conversation (data.chat) can start further left, with gaps.
    width = labels.shape[1]
    to_end = torch.arange(width, 0, -1, device=labels.device)  # columns from c to the end
    k = int(torch.where((labels != IGNORE).any(dim=0), to_end, 0).max())
    keep = min(k + 1, width)
    if accepts(type(model), "logits_to_keep"):
        logits = model(**inputs, logits_to_keep=keep).logits
    else:
        logits = model(**inputs).logits[:, -keep:]
    # logits at column c predict the token at column c + 1
    predictions = logits[:, :-1]
    targets = labels[:, width - keep + 1 :]
    loss = F.cross_entropy(
        predictions.reshape(-1, predictions.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return loss, int((targets != IGNORE).sum())


def seq2seq_loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of token losses, number of target tokens) for an encoder-decoder batch from data.collate_seq2seq.

    The decoder reads the targets shifted right behind its start token (teacher forcing); the loss is summed
    here rather than taken from the model, whose built-in loss is a mean.
    """
    labels = batch["labels"]
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        decoder_input_ids=decoder_input_ids,
    ).logits
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return loss, int((labels != IGNORE).sum())


def label_loss_sum(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], correct: list[int] | None = None
) -> tuple[torch.Tensor, int]:
    """(sum of cross-entropies, number of examples) for a classification batch from data.collate_labelled;
    with `correct`, the number of rows whose top class is the label is appended to it (same forward pass)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = F.cross_entropy(logits.float(), batch["labels"], reduction="sum")
    if correct is not None:
        correct.append(int((logits.argmax(dim=-1) == batch["labels"]).sum()))
    return loss, int(batch["labels"].numel())

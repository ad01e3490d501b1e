"""Model kinds: how a family of models is fed, trained and asked for predictions.

The training loop is the same for all; only these four steps differ:

    kind        example from                        loss                         prediction
    causal      the conversation (data.chat),       assistant turns only         generated continuation
                left-padded
    seq2seq     encoder: prompt; decoder: answer    decoder tokens               decoder output
    classifier  prompt, class index                 cross-entropy of the head    label word of the argmax

"causal" are decoder-only LMs (GPT-2, Llama, Gemma...); "seq2seq" encoder-decoders (T5, BERT2BERT);
"classifier" any model with a sequence-classification head: an encoder (BERT, MiniLM) or a decoder LM whose
head reads the last token (the GPT-2 + LoRA classification setup).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from loralab.data.chat import PromptFormat, encode_turns
from loralab.data.encoding import (
    collate,
    collate_labelled,
    collate_seq2seq,
    encode_labelled,
    encode_seq2seq,
)
from loralab.errors import UserError
from loralab.evaluation.loss import answer_loss_sum, label_loss_sum, seq2seq_loss_sum
from loralab.evaluation.predict import generate, generate_seq2seq, predict_labels


@dataclass(frozen=True)
class Example:
    """One row as any kind may read it: the conversation (causal LMs), or one input text and its target (the
    answer text of an encoder-decoder, the class index of a classifier)."""

    messages: list[dict]
    text: str
    target: str | int


def _causal(tokenizer, fmt: PromptFormat, example: Example, max_length: int):
    return encode_turns(tokenizer, fmt, example.messages, max_length)


def _seq2seq(tokenizer, fmt: PromptFormat, example: Example, max_length: int):
    return encode_seq2seq(tokenizer, fmt.template, example.text, str(example.target), max_length)


def _classifier(tokenizer, fmt: PromptFormat, example: Example, max_length: int):
    return encode_labelled(tokenizer, fmt.template, example.text, int(example.target), max_length)


@dataclass(frozen=True)
class Kind:
    name: str
    encode: Callable  # (tokenizer, format, Example, max_length) -> example
    collate: Callable  # (examples, pad_id) -> batch of tensors with "labels"
    loss_sum: Callable  # (model, batch) -> (summed loss, number of targets)
    predict: Callable  # (model, tokenizer, texts, config, device, desc) -> list of texts
    generative: bool  # True when the target is text (an answer), False when it is a class index


# loralab.config reads the kind names from this file's source (config/registries.py): keep them literal
KINDS = {
    "causal": Kind("causal", _causal, collate, answer_loss_sum, generate, True),
    "seq2seq": Kind("seq2seq", _seq2seq, collate_seq2seq, seq2seq_loss_sum, generate_seq2seq, True),
    "classifier": Kind("classifier", _classifier, collate_labelled, label_loss_sum, predict_labels, False),
}


def get_kind(name: str) -> Kind:
    if name not in KINDS:
        raise UserError(f"unknown model_kind {name!r}; choose auto, {', '.join(KINDS)}")
    return KINDS[name]

"""Which kind of model a transformers config or model is: causal (decoder-only LM), seq2seq (encoder-decoder)
or classifier (a sequence-classification head). Imports nothing of loralab, so every layer may ask.
"""

from __future__ import annotations

ENCODER_ONLY = {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta",
                "mpnet", "camembert", "modernbert"}  # fmt: skip


def kind_of_config(model_config: object, requested: str = "auto") -> str:
    """The kind to build from a transformers config: `requested`, or for "auto" seq2seq for
    encoder-decoders, classifier for encoder-only models, causal otherwise."""
    if requested != "auto":
        return requested
    if getattr(model_config, "is_encoder_decoder", False):
        return "seq2seq"
    if getattr(model_config, "model_type", "") in ENCODER_ONLY:
        return "classifier"
    return "causal"


def model_kind(model: object) -> str:
    """ "seq2seq" for encoder-decoder models (T5, BART, ...), "classifier" for a sequence-classification
    head, else "causal"."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    return "classifier" if type(model).__name__.endswith("ForSequenceClassification") else "causal"

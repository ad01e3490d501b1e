"""Reading a model folder or a GGUF file into the transformers class for the wanted head.

Below loading.py and bundled.py; imports transformers and models/detect.py only.
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from loralab.errors import UserError, short_reason
from loralab.models.detect import ENCODER_ONLY, kind_of_config


@dataclass(frozen=True)
class Head:
    """Which head to put on the loaded model: kind auto | causal | seq2seq | classifier (see kinds.py)."""

    kind: str = "auto"
    num_labels: int = 2


def model_class(config) -> type:
    """The language-model class for a config (used for the GGUF conversion, which keeps the LM head)."""
    return AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM


def from_pretrained(source: str | Path, config, dtype: torch.dtype, head: Head, **kwargs) -> PreTrainedModel:
    """The model class for the requested head, loaded from `source` (a folder or a hub id)."""
    kind = kind_of_config(config, head.kind)
    if kind == "classifier":
        config.num_labels = head.num_labels
        model_class = AutoModelForSequenceClassification
    elif kind == "seq2seq":
        if not getattr(config, "is_encoder_decoder", False):
            raise UserError(
                f"model_kind seq2seq needs an encoder-decoder model (T5, BART...); {source} is not one"
            )
        model_class = AutoModelForSeq2SeqLM
    else:
        if getattr(config, "is_encoder_decoder", False) or getattr(config, "model_type", "") in ENCODER_ONLY:
            raise UserError(f"model_kind causal needs a decoder-only language model; {source} is not one")
        model_class = AutoModelForCausalLM
    try:
        return model_class.from_pretrained(source, config=config, dtype=dtype, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" not in str(exc):
            raise
        raise UserError(
            f"{source} has no {kind} version in transformers ({short_reason(exc)}); use another model_kind"
        ) from None


@contextmanager
def quiet_transformers():
    """Silence the expected "weights newly initialized" warning of a model built from parts."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


@contextmanager
def quiet_progress():
    """No per-tensor "Loading weights" bars for a load that takes a second."""
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def read_folder(
    path: Path, dtype: torch.dtype, head: Head, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (with the requested head) and tokenizer from a save_pretrained folder; errors pass through."""
    trust = {"trust_remote_code": trust_remote_code}
    config = AutoConfig.from_pretrained(path, **trust)
    with quiet_progress():
        model = from_pretrained(path, config, dtype, head, **trust)
    return model, AutoTokenizer.from_pretrained(path, **trust)


def read_gguf(
    path: Path, dtype: torch.dtype, head: Head | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from a GGUF file via transformers (which dequantises the weights to `dtype`);
    without `head`, the file's own language-model class (as the one-time conversion needs)."""
    if importlib.util.find_spec("accelerate") is None:
        raise UserError("loading a .gguf file needs the accelerate package: pip install accelerate")
    folder, gguf = path.parent, {"gguf_file": path.name, "trust_remote_code": False}  # weights only, no code
    config = AutoConfig.from_pretrained(folder, **gguf)
    if head is None:
        model = model_class(config).from_pretrained(folder, config=config, dtype=dtype, **gguf)
    else:
        model = from_pretrained(folder, config, dtype, head, **gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder, **gguf)
    return model, tokenizer

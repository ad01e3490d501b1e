"""Loading a model for a run: the base model (or a method's own model, e.g. a distillation student), and a
finished run's result on top of it for evaluation and generation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from loralab.config import RunConfig


def load_base(config: RunConfig, device: torch.device) -> tuple[torch.nn.Module, object]:
    """(model, tokenizer) that `config.method` starts from: the pretrained model, unless the method builds
    its own (distill builds a small student)."""
    from loralab.methods import get_method
    from loralab.models import load_model_and_tokenizer

    method = get_method(config.method)
    if hasattr(method, "build_model"):
        return method.build_model(config, device)
    return load_model_and_tokenizer(config.model, device, kind=config.model_kind,
                                    num_labels=len(config.label_words))  # fmt: skip


def load_for_inference(
    config: RunConfig, run: Path | None
) -> tuple[torch.nn.Module, object, torch.device, Callable]:
    """(model with the run's saved result, tokenizer, device, the kind's predict function); without a run,
    the base model as it is (zero-shot)."""
    from loralab.code_vocab import add_code_vocabulary, load_code_vocab, predicting_with
    from loralab.kinds import get_kind
    from loralab.methods import get_method
    from loralab.models import model_kind, resolve_device

    device = resolve_device(config.device)
    model, tokenizer = load_base(config, device)
    kind = get_kind(model_kind(model))
    predict = kind.predict
    if run is not None:
        vocab = load_code_vocab(run / "adapter")
        if (
            vocab is not None
        ):  # the tokens must be back, at the same ids, before the adapter's embedding loads
            add_code_vocabulary(model, tokenizer, vocab)
            predict = predicting_with(kind.predict, vocab)
        model = get_method(config.method).load(model, run / "adapter")
        model.to(device)
    model.eval()
    return model, tokenizer, device, predict

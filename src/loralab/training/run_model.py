"""Loading a model for a run: the base model (or a method's own model, e.g. a distillation student), and a
finished run's result on top of it for evaluation and generation."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch

from loralab.config import RunConfig
from loralab.data.code_vocab.embeddings import add_code_vocabulary
from loralab.data.code_vocab.text import load_code_vocab, predicting_with
from loralab.errors import UserError
from loralab.lora import load_adapter
from loralab.methods import get_method
from loralab.models.detect import model_kind
from loralab.models.loading import resolve_device
from loralab.precision import apply_base_precision, choose_precision
from loralab.training.kinds import get_kind


def load_base(config: RunConfig, device: torch.device) -> tuple[torch.nn.Module, object]:
    """(model, tokenizer) that `config.method` starts from: the pretrained model, unless the method builds
    its own (distill builds a small student).

    Seeded with config.seed first: parts the checkpoint has no weights for start random (minilm-l6-seq2seq's
    cross-attention and the decoder's LM-head transform), and unless an adapter saves them they must be the
    same in `loralab eval` and `generate` as they were in training.
    """
    torch.manual_seed(config.seed)
    return get_method(config.method).build_model(config, device)


def with_base_precision(model: torch.nn.Module, config: RunConfig, device: torch.device) -> None:
    """Convert the frozen base to the run's base_precision (recorded at its start; "auto" from the command
    line is decided here, with a line on stderr saying what it chose). The layers that trained in the run
    (a method's load leaves them trainable) keep their precision, as in training."""
    precision = config.base_precision
    if precision == "auto":
        precision, note = choose_precision(precision, device)
        print(f"loralab: {note}", file=sys.stderr)
    apply_base_precision(model, precision, device)


def load_for_inference(
    config: RunConfig, run: Path | None
) -> tuple[torch.nn.Module, object, torch.device, Callable]:
    """(model with the run's saved result, tokenizer, device, the kind's predict function); without a run,
    the base model as it is (zero-shot)."""
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
    else:
        model.requires_grad_(False)  # zero-shot: the whole base is frozen, so every linear layer converts
    with_base_precision(model, config, device)
    model.eval()
    return model, tokenizer, device, predict


def load_with_adapters(runs: list[tuple[RunConfig, Path]]) -> tuple[torch.nn.Module, object, torch.device]:
    """One base model with every run's LoRA adapter loaded beside the others, named after its run folder;
    the first is active. The runs must be LoRA runs of the same base model."""
    first = runs[0][0]
    names = [run.name for _, run in runs]
    if len(set(names)) != len(names):
        raise UserError(f"two runs share a folder name ({', '.join(names)}); adapters are named after them")
    for config, run in runs:
        if config.method != "lora":
            raise UserError(f"{run} is a {config.method} run; only LoRA adapters can share one base model")
        if config.model != first.model:
            raise UserError(
                f"{run} was trained on {config.model}, {runs[0][1]} on {first.model}: adapters must share a base"
            )
        if load_code_vocab(run / "adapter") is not None:
            raise UserError(f"{run} adds code tokens to the vocabulary; generate with it alone")
    device = resolve_device(first.device)
    model, tokenizer = load_base(first, device)
    for _, run in runs:
        load_adapter(model, run / "adapter", name=run.name)
    model.to(device)
    with_base_precision(model, first, device)
    model.eval()
    return model, tokenizer, device

"""The code vocabulary in a model: grow the token tables (input embeddings, an untied output head) by the new
tokens, start their rows sensibly, optionally train only the new rows, and load an adapter trained with them.

Training cost. The new rows must be trained, so the input embedding (an EncoderDecoderModel's two: see
add_code_vocabulary; and an untied output head) goes into LoRAConfig.modules_to_save and trains in full: for
SmolLM2-135M that is 49,259 x 576 = 28M parameters beside a LoRA of about 1-5M; with its gradient and two
AdamW moments that is ~450 MB in float32, and every saved adapter holds the 113 MB matrix.
`train_only_new_rows` keeps the old rows fixed (a gradient mask) when only the new tokens should learn; it
saves no memory, and the adapter still stores the whole matrix.

Loading. `load_adapter_with_code_vocab` re-adds exactly the tokens of an adapter's code_vocab.json (checking
that they get the same ids) to a fresh model and tokenizer, so the saved embedding fits, then loads the adapter.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from torch import nn
from transformers import EncoderDecoderModel

from loralab.data.code_vocab.text import CodeVocab, load_code_vocab
from loralab.data.code_vocab.tokens import add_tokens, code_vocab_for
from loralab.errors import UserError, short_reason
from loralab.lora import load_adapter
from loralab.naming import module_name


def _refuse(model: nn.Module, why: str) -> UserError:
    return UserError(
        f"the code vocabulary cannot be added to {type(model).__name__}: {why}; "
        "train without it: --code_vocab=false"
    )


def token_models(model: nn.Module) -> list[nn.Module]:
    """The models that own token embeddings: the model itself, or for transformers' EncoderDecoderModel (an
    encoder and a decoder joined by cross-attention, which refuses to resize as a whole) both of them."""
    if isinstance(model, EncoderDecoderModel):
        return [model.encoder, model.decoder]
    return [model]


def input_embeddings(model: nn.Module) -> list[nn.Module]:
    """Each distinct input embedding of the token models; a shared one (T5's `shared`) counts once."""
    found: list[nn.Module] = []
    for part in token_models(model):
        try:
            embedding = part.get_input_embeddings()
        except (AttributeError, NotImplementedError) as exc:
            raise _refuse(model, f"it has no token embedding ({short_reason(exc)})") from None
        if not isinstance(getattr(embedding, "weight", None), torch.Tensor):
            raise _refuse(model, f"its input embedding is a {type(embedding).__name__}, not a table of rows")
        if all(embedding.weight is not e.weight for e in found):
            found.append(embedding)
    return found


def output_heads(model: nn.Module) -> list[nn.Module]:
    """The output heads over the vocabulary (an LM head, a BERT decoder's prediction layer), tied or not."""
    heads = []
    for part in token_models(model):
        get_head = getattr(part, "get_output_embeddings", None)
        head = get_head() if callable(get_head) else None
        if isinstance(getattr(head, "weight", None), torch.Tensor):
            heads.append(head)
    return heads


def _untied(heads: list[nn.Module], embeddings: list[nn.Module]) -> list[nn.Module]:
    return [h for h in heads if all(h.weight is not e.weight for e in embeddings)]


def vocabulary_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every distinct tensor with one row per token: input embeddings, output-head weights and biases."""
    tensors: list[torch.Tensor] = []
    candidates = [e.weight for e in input_embeddings(model)]
    for head in output_heads(model):
        candidates += [head.weight, getattr(head, "bias", None)]
    for tensor in candidates:
        if tensor is not None and all(tensor is not t for t in tensors):
            tensors.append(tensor)
    return tensors


def _check_resizable(model: nn.Module) -> None:
    """Refuse (UserError) a model whose token tables cannot all grow by the tokens of one tokenizer."""
    rows = {module_name(model, e): e.weight.shape[0] for e in input_embeddings(model)}
    if len(set(rows.values())) > 1:
        shown = ", ".join(f"{name} {n}" for name, n in rows.items())
        raise _refuse(model, f"its embeddings have different vocabularies ({shown} rows) but one tokenizer")
    for part in token_models(model):
        if not callable(getattr(part, "resize_token_embeddings", None)):
            raise _refuse(model, f"{type(part).__name__} has no resize_token_embeddings")


def _resize(model: nn.Module, rows: int) -> None:
    for part in token_models(model):
        try:
            part.resize_token_embeddings(rows, mean_resizing=False)
        except (NotImplementedError, AttributeError, ValueError, TypeError) as exc:
            raise _refuse(model, f"resizing its token embeddings failed ({short_reason(exc)})") from None


def _source_ids(tokenizer, vocab: CodeVocab) -> list[list[int]]:
    """For each new token, the ids the base tokenizer gives its text ([] when it cannot write it)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    out = []
    for text in vocab.sources.values():
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append([] if unk is not None and unk in ids else ids)
    return out


@torch.no_grad()
def _init_rows(weight: torch.Tensor, first: int, base: int, sources: list[list[int]], init: str) -> None:
    mean = weight[:base].mean(dim=0)
    for i, ids in enumerate(sources):
        weight[first + i] = weight[ids].mean(dim=0) if init == "source" and ids else mean


def add_code_vocabulary(
    model: nn.Module, tokenizer, vocab: CodeVocab | None = None, init: str = "source"
) -> CodeVocab:
    """Add the code tokens to tokenizer and model; return the vocab with ids and the modules to train in full.

    vocab: None builds one for this tokenizer (code_vocab_for); pass load_code_vocab(adapter_dir) to re-add
        the tokens of a saved adapter (same ids, same embedding size) before load_adapter.
    init: how new embedding rows start. "source" (default): the mean of the rows of the pieces the token
        replaces (with SmolLM2, `pytfunc:memoryview` starts as the average of "memory" and "view"), so the
        model first reads the new token about as it read the old text and the loss does not jump at step 0;
        a token the tokenizer could not write (T5's "\\n") falls back to "mean": the mean of all existing
        rows, which keeps the new logits near the average, so the model does not start out predicting them
        (Hewitt 2021). Used when vocab is None (a loaded vocab keeps its own). Every table with a row per
        token gets the same treatment: input embeddings, an untied output head, an output head's bias.

    What is resized. A decoder-only model or a classifier: its input embedding (and untied head). T5 and
    BART: their one shared embedding, once (encoder and decoder read it), plus an untied lm_head. transformers'
    EncoderDecoderModel (e.g. minilm-l6-seq2seq): the encoder's embedding and the decoder's embedding and
    head, because loralab feeds both sides ids of the same tokenizer; their configs' vocab_size follow. A
    model whose tables cannot all grow (an encoder and decoder with different vocabularies, a model without
    resize_token_embeddings) is refused with a UserError before the tokenizer changes.

    Call it before apply_lora and put `vocab.modules_to_save` into LoRAConfig.modules_to_save: each input
    embedding (for T5 `shared`), plus the output head when it is untied.
    """
    if vocab is None:
        vocab = dataclasses.replace(code_vocab_for(tokenizer), init=init)
    if getattr(model, "lora_config", None) is not None:
        raise UserError("add the code vocabulary before apply_lora: resizing replaces the embedding module")
    _check_resizable(model)
    sources = _source_ids(tokenizer, vocab)  # before adding: the base tokenizer's view of each token's text
    vocab = add_tokens(tokenizer, vocab)
    present = input_embeddings(model)[0].weight.shape[0]
    rows = max(present, vocab.first_id + len(sources))
    if vocab.num_embeddings is not None and rows != vocab.num_embeddings:
        raise UserError(
            f"the adapter's embedding has {vocab.num_embeddings} rows but this model would get {rows}; "
            "load the same base model the adapter was trained on"
        )
    if rows != present:
        _resize(model, rows)
    for tensor in vocabulary_tensors(model):
        rows_view = tensor if tensor.dim() == 2 else tensor[:, None]
        _init_rows(rows_view, vocab.first_id, vocab.base_vocab_size, sources, vocab.init)
    embeddings = input_embeddings(model)
    trained = embeddings + _untied(output_heads(model), embeddings)
    names = tuple(module_name(model, m) for m in trained)
    return dataclasses.replace(vocab, num_embeddings=rows, modules_to_save=names)


def train_only_new_rows(model: nn.Module, vocab: CodeVocab) -> list[torch.utils.hooks.RemovableHandle]:
    """Zero the gradient of the old rows of every token table, so that only the new tokens learn.

    The tables are those add_code_vocabulary resized: each input embedding (an encoder-decoder's two), an
    untied output head and a head's bias; each is hooked once, and only if it trains (requires_grad).
    Old rows then stay bit-identical under SGD or Adam(W) with weight_decay=0 (loralab's default); weight
    decay would still shrink them. Memory and compute are those of the full matrix: the gradient is dense.
    Returns the hook handles (call .remove() on them to train every row again).
    """
    if vocab.first_id is None:
        raise UserError("this code vocabulary was not added to a model; call add_code_vocabulary first")
    first = vocab.first_id

    def mask(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:first] = 0
        return grad

    return [t.register_hook(mask) for t in vocabulary_tensors(model) if t.requires_grad]


def load_adapter_with_code_vocab(
    model: nn.Module, tokenizer, directory: str | os.PathLike
) -> CodeVocab | None:
    """Re-add the adapter's code vocabulary (if any) to a fresh model and tokenizer, then load the adapter."""
    vocab = load_code_vocab(directory)
    if vocab is not None:
        vocab = add_code_vocabulary(model, tokenizer, vocab)
    load_adapter(model, directory)
    return vocab

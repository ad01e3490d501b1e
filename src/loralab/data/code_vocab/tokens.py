"""The code vocabulary in a tokenizer: which stand-ins a tokenizer needs, adding the tokens, encoding, decoding.

What survives encode -> decode_ids (measured on 200 stdlib functions):

* byte-level BPE (SmolLM2, GPT-2): everything, byte for byte; no stand-ins are needed. The rewritten code is
  about 5% more tokens, because " def" (one token before) becomes " " + `pytkw:def`;
* sentencepiece (T5): everything, once newline, tab, braces, "<" and spaces have stand-ins, as long as every
  other character is in its vocabulary (real T5 lacks some: they come back as nothing);
* WordPiece (BERT): newlines and indentation exactly, every character up to case; not the spacing inside a
  line (BERT splits punctuation: "self._split(x)" -> "self. _ split ( x )") and not upper case (except our
  tokens: `pytkw:True` stays True). An exact round trip is impossible: "f(x)" and "f ( x )" encode the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from transformers import AddedToken

from loralab.data.code_vocab.text import CHAR_NAMES, CodeVocab
from loralab.errors import UserError


def _round_trip(tokenizer, text: str) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def lost_characters(tokenizer) -> str:
    """The candidate characters (CHAR_NAMES) that do not come back from encode -> decode of "a<c>b"."""
    return "".join(c for c in CHAR_NAMES if _round_trip(tokenizer, f"a{c}b").count(c) != 1)


def loses_spaces(tokenizer) -> bool:
    """Whether encode -> decode changes a run of spaces or a space at either end (T5, BERT: yes)."""
    return any(_round_trip(tokenizer, probe) != probe for probe in ("a  b", "    a", "a "))


def code_vocab_for(tokenizer) -> CodeVocab:
    """The vocabulary this tokenizer needs: keywords, builtins, and stand-ins for what it loses."""
    return CodeVocab(chars=lost_characters(tokenizer), explicit_spaces=loses_spaces(tokenizer))


def add_tokens(tokenizer, vocab: CodeVocab) -> CodeVocab:
    """Add the tokens (atomic, matched on the raw text, decoded verbatim); return vocab with first_id set.

    normalized=False: matched before any lowercasing (BERT would turn `pytkw:True` into `pytkw:true`).
    lstrip/rstrip=False: a token takes no neighbouring spaces, so decoding gives the rewritten text back.
    special=False: `decode(..., skip_special_tokens=True)` must keep them. A vocab that already has a
    first_id (loaded with an adapter) must land on the same ids, or the saved embedding rows mean nothing.
    """
    tokens = vocab.tokens
    known = tokenizer.get_vocab()  # a fresh dict on every call: 50 ms for SmolLM2
    present = [t for t in tokens if t in known]
    if not present:
        base = len(tokenizer)
        if vocab.base_vocab_size is not None and base != vocab.base_vocab_size:
            raise UserError(
                f"the code vocabulary was added to a tokenizer of {vocab.base_vocab_size} tokens but this "
                f"one has {base}; load the same base model (and tokenizer) the adapter was trained on"
            )
        tokenizer.add_tokens(
            [
                AddedToken(t, normalized=False, lstrip=False, rstrip=False, single_word=False, special=False)
                for t in tokens
            ]
        )
    elif len(present) != len(tokens):
        raise UserError(
            f"the tokenizer already has {len(present)} of the {len(tokens)} code tokens; load a fresh one"
        )
    ids = tokenizer.convert_tokens_to_ids(tokens)
    first = ids[0]
    if ids != list(range(first, first + len(tokens))):
        raise UserError("the code tokens did not get consecutive ids; load a fresh tokenizer")
    if vocab.first_id is not None and first != vocab.first_id:
        raise UserError(
            f"the code tokens got ids from {first}, but the adapter was trained with ids from "
            f"{vocab.first_id}; load the same base model (and tokenizer) the adapter was trained on"
        )
    base = vocab.base_vocab_size if vocab.base_vocab_size is not None else first
    return dataclasses.replace(vocab, first_id=first, base_vocab_size=base)


def decode_ids(vocab: CodeVocab, tokenizer, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    """Plain text from ids: each of our ids becomes its keyword / builtin / character, the rest is decoded.

    The ids between two of ours are decoded on their own, so a sentencepiece tokenizer (T5) cannot put its
    word-start space in front of them; since the text holds no marker we did not put there, everything
    decoded from ordinary ids is literal text and needs no restore.
    """
    if vocab.first_id is None:
        raise UserError("this code vocabulary was not added to a tokenizer; call add_code_vocabulary first")
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)  # a tensor, or a list of ids
    sources, first = list(vocab.sources.values()), vocab.first_id
    parts, run = [], []

    def flush() -> None:
        if run:
            parts.append(
                tokenizer.decode(
                    run, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False
                )
            )
            run.clear()

    for i in ids:
        if first <= i < first + len(sources):
            flush()
            parts.append(sources[i - first])
        else:
            run.append(i)
    flush()
    return "".join(parts)

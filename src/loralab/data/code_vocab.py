"""A code vocabulary: a token per Python keyword and builtin, and stand-ins for characters a tokenizer loses.

The idea. A subword tokenizer made for prose may cut `memoryview` into pieces, and T5's has no newline and no
braces at all, so it cannot even write Python. We therefore rewrite code before tokenizing it:

    def f(x):\\n    return len(x)   ->   pytkw:def f(x):\\n    pytkw:return pytfunc:len(x)

and add every `pytkw:<keyword>` / `pytfunc:<builtin>` to the tokenizer as one atomic token with its own new
embedding row. Characters the tokenizer cannot write get a stand-in token (`pytchr:nl;` for "\\n"), and a
tokenizer that collapses runs of spaces (T5, BERT) gets explicit space tokens (`pytchr:sp;`, `pytchr:sp4;`) so
that indentation survives. `restore` undoes `rewrite` exactly, for any text.

The rules, chosen to be simple and deterministic:

* keywords: `keyword.kwlist` (soft keywords such as `match` are ordinary names too, so they stay as they are);
* builtins: the public names in `builtins` bound to a builtin function or to a class that is not an exception
  (`len`, `print`, `int`, `dict`, `zip`, ...; the same 69 names on Python 3.10-3.13, sorted). Exceptions are
  left out to keep the list short; the site helpers `help`, `exit`, ... are objects, not functions, so they
  are out. The lists are saved with an adapter, so loading never depends on the Python version;
* a name is rewritten only as a whole identifier that is not an attribute: `len(x)` changes, `length`,
  `self.len_x` and `x.len` do not (`\\w` runs of the `re` module stand for identifiers);
* inside string literals and comments too: telling code from strings needs a parser, and model outputs are
  often not parseable. The rewrite is reversible everywhere, so this costs nothing but a few extra tokens;
* a stand-in for a lost character is `pytchr:<name>;` (the `;` ends it, so `pytchr:sp;` and `pytchr:sp4;`
  never run into each other); a literal `pytkw:`, `pytfunc:` or `pytchr:` in the input is escaped as
  `pytchr:pytkw;` (etc.), so the rewritten text holds our markers exactly where we put them, and the
  tokenizer turns each of them, and nothing else, into one of the new ids.

What survives encode -> decode_ids (measured on 200 stdlib functions):

* byte-level BPE (SmolLM2, GPT-2): everything, byte for byte; no stand-ins are needed. The rewritten code is
  about 5% more tokens, because " def" (one token before) becomes " " + `pytkw:def`;
* sentencepiece (T5): everything, once newline, tab, braces, "<" and spaces have stand-ins, as long as every
  other character is in its vocabulary (real T5 lacks some: they come back as nothing);
* WordPiece (BERT): newlines and indentation exactly, every character up to case; not the spacing inside a
  line (BERT splits punctuation: "self._split(x)" -> "self. _ split ( x )") and not upper case (except our
  tokens: `pytkw:True` stays True). An exact round trip is impossible: "f(x)" and "f ( x )" encode the same.

Training cost. The new rows must be trained, so the input embedding (an EncoderDecoderModel's two: see
add_code_vocabulary; and an untied output head) goes into LoRAConfig.modules_to_save and trains in full: for
SmolLM2-135M that is 49,259 x 576 = 28M parameters beside a LoRA of about 1-5M; with its gradient and two
AdamW moments that is ~450 MB in float32, and every saved adapter holds the 113 MB matrix.
`train_only_new_rows` keeps the old rows fixed (a gradient mask) when only the new tokens should learn; it
saves no memory, and the adapter still stores the whole matrix.

Saving. The adapter folder gets a `code_vocab.json` (save_code_vocab): the names, the stand-ins, the ids and
the embedding size. `load_adapter_with_code_vocab` re-adds exactly these tokens (checking that they get the
same ids) to a fresh model and tokenizer, so the saved embedding fits, then loads the adapter.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import keyword
import os
import re
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import nn
from transformers import AddedToken

from loralab.errors import UserError
from loralab.files import write_text_atomically
from loralab.lora.io import load_adapter
from loralab.models.loading import _short

KW_PREFIX = "pytkw:"
FUNC_PREFIX = "pytfunc:"
CHR_PREFIX = "pytchr:"
VOCAB_FILE = "code_vocab.json"
FORMAT = "loralab-code-vocab/1"

# Characters that may get a stand-in token when a tokenizer cannot write them, with the stand-in's name.
# Never ".", ":", ";" or word characters: our markers are made of those, so every tokenizer must have them.
CHAR_NAMES: dict[str, str] = {
    "\n": "nl", "\t": "tab", "\r": "cr", "\f": "ff", "\v": "vt",
    "{": "lbrace", "}": "rbrace", "<": "lt", ">": "gt", "[": "lbrack", "]": "rbrack", "(": "lparen",
    ")": "rparen", "~": "tilde", "^": "caret", "`": "backtick", "\\": "backslash", "|": "pipe", "@": "at",
    "#": "hash", "$": "dollar", "%": "percent", "&": "amp", "'": "quote", '"': "dquote", "!": "bang",
    "*": "star", "+": "plus", "-": "minus", "=": "eq", "/": "slash", "?": "qmark", ",": "comma",
}  # fmt: skip
SPACE_NAMES = {"sp4": "    ", "sp": " "}  # a run of n spaces: n // 4 times sp4, then n % 4 times sp
ESCAPE_NAMES = {"pytkw": KW_PREFIX, "pytfunc": FUNC_PREFIX, "pytchr": CHR_PREFIX}
INIT_MODES = ("source", "mean")


def python_keywords() -> tuple[str, ...]:
    """Python's keywords, in `keyword.kwlist` order."""
    return tuple(keyword.kwlist)


def python_builtins() -> tuple[str, ...]:
    """Public builtin functions and non-exception classes, sorted: the names a program commonly calls."""
    names = []
    for name, value in vars(builtins).items():
        is_class = isinstance(value, type) and not issubclass(value, BaseException)
        if not name.startswith("_") and (isinstance(value, types.BuiltinFunctionType) or is_class):
            names.append(name)
    return tuple(sorted(names))


@dataclass(frozen=True)
class CodeVocab:
    """Which tokens the code vocabulary has and, once added to a tokenizer and model, where they live.

    keywords / builtins: the names rewritten to `pytkw:<name>` / `pytfunc:<name>`.
    chars: the characters this tokenizer cannot write, each written as `pytchr:<name>;` instead.
    explicit_spaces: the tokenizer collapses or drops spaces, so runs of spaces, and spaces next to one of
        our tokens, are written as `pytchr:sp4;` / `pytchr:sp;`.
    first_id .. modules_to_save: filled in by add_code_vocabulary; `tokens[i]` has id `first_id + i`.
    """

    keywords: tuple[str, ...] = field(default_factory=python_keywords)
    builtins: tuple[str, ...] = field(default_factory=python_builtins)
    chars: str = ""
    explicit_spaces: bool = False
    first_id: int | None = None
    base_vocab_size: int | None = None  # len(tokenizer) before the tokens were added
    num_embeddings: int | None = None  # rows of the resized input embedding
    modules_to_save: tuple[str, ...] = ()
    init: str = "source"

    def __post_init__(self) -> None:
        for name in ("keywords", "builtins", "modules_to_save"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        words = self.keywords + self.builtins
        # A name containing "pyt" could end in a marker ("xpytkw" + ":"), which restore would misread.
        bad = [w for w in words if not w.isidentifier() or "pyt" in w]
        if bad or len(set(words)) != len(words) or not words:
            raise UserError(
                f"code vocabulary names must be distinct identifiers without 'pyt'; got {bad[:3]}"
            )
        unknown = sorted(set(self.chars) - set(CHAR_NAMES))
        if unknown or len(set(self.chars)) != len(self.chars):
            raise UserError(
                f"code vocabulary chars must be distinct, from {''.join(CHAR_NAMES)!r}: {unknown}"
            )
        if self.init not in INIT_MODES:
            raise UserError(f"code vocabulary init must be one of {', '.join(INIT_MODES)}, got {self.init!r}")

    # --- the token list -------------------------------------------------------------------------------

    @cached_property
    def sources(self) -> dict[str, str]:
        """Every token and the text it stands for, in id order."""
        table = {KW_PREFIX + w: w for w in self.keywords}
        table.update({FUNC_PREFIX + w: w for w in self.builtins})
        table.update({f"{CHR_PREFIX}{name};": text for name, text in self._chr_names().items()})
        return table

    @property
    def tokens(self) -> list[str]:
        return list(self.sources)

    def _chr_names(self) -> dict[str, str]:
        names = dict(ESCAPE_NAMES)
        names.update({CHAR_NAMES[c]: c for c in self.chars})
        if self.explicit_spaces:
            names.update(SPACE_NAMES)
        return names

    # --- text: rewrite and restore -----------------------------------------------------------------------

    @cached_property
    def _keyword_set(self) -> frozenset[str]:
        return frozenset(self.keywords)

    @cached_property
    def _rewrite_re(self) -> re.Pattern:
        words = "|".join(sorted(self.keywords + self.builtins, key=lambda w: (-len(w), w)))
        escapes = "|".join(re.escape(p) for p in ESCAPE_NAMES.values())
        chars = f"|(?P<char>[{re.escape(self.chars)}])" if self.chars else ""
        return re.compile(rf"(?P<esc>{escapes})|(?<![\w.])(?P<word>{words})(?!\w){chars}")

    @cached_property
    def _restore_re(self) -> re.Pattern:
        def names(items) -> str:
            return "|".join(re.escape(n) for n in sorted(items, key=lambda n: (-len(n), n)))

        # After a keyword token comes either a non-word character or a stand-in (pytchr:...), never a word.
        end = rf"(?={re.escape(CHR_PREFIX)}|(?!\w))"
        return re.compile(
            rf"{re.escape(CHR_PREFIX)}(?P<chr>{names(self._chr_names())});"
            rf"|{re.escape(KW_PREFIX)}(?P<kw>{names(self.keywords)}){end}"
            rf"|{re.escape(FUNC_PREFIX)}(?P<fn>{names(self.builtins)}){end}"
        )

    def _token_for(self, match: re.Match) -> str:
        if match.group("esc"):
            return f"{CHR_PREFIX}{match.group('esc')[:-1]};"
        if match.group("word"):
            word = match.group("word")
            return (KW_PREFIX if word in self._keyword_set else FUNC_PREFIX) + word
        return f"{CHR_PREFIX}{CHAR_NAMES[match.group('char')]};"

    def rewrite(self, text: str) -> str:
        """Code -> text with our tokens: keywords, builtins, lost characters (and spaces, if needed)."""
        pieces, pos = [], 0
        for match in self._rewrite_re.finditer(text):
            if match.start() > pos:
                pieces.append(self._plain(text[pos : match.start()]))
            pieces.append(self._token_for(match))
            pos = match.end()
        if pos < len(text):
            pieces.append(self._plain(text[pos:]))
        return "".join(pieces)

    def _plain(self, piece: str) -> str:
        """Text between two of our tokens; with explicit_spaces, edge spaces and runs of spaces are tokens."""
        if not self.explicit_spaces:
            return piece
        return re.sub(r"\A +| +\Z| {2,}", lambda m: _space_tokens(len(m.group())), piece)

    def restore(self, text: str) -> str:
        """Undo rewrite: restore(rewrite(s)) == s for every string s."""
        return self._restore_re.sub(self._source_of, text)

    def _source_of(self, match: re.Match) -> str:
        if match.group("chr"):
            return self._chr_names()[match.group("chr")]
        return match.group("kw") or match.group("fn")


def _space_tokens(n: int) -> str:
    return f"{CHR_PREFIX}sp4;" * (n // 4) + f"{CHR_PREFIX}sp;" * (n % 4)


DEFAULT = CodeVocab()


def rewrite(text: str, vocab: CodeVocab | None = None) -> str:
    """`vocab.rewrite(text)`; without a vocab, keywords and builtins only (all byte-level tokenizers need)."""
    return (vocab or DEFAULT).rewrite(text)


def restore(text: str, vocab: CodeVocab | None = None) -> str:
    """`vocab.restore(text)`: the inverse of rewrite with the same vocab."""
    return (vocab or DEFAULT).restore(text)


# --- tokenizer --------------------------------------------------------------------------------------------


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


def encode_text(vocab: CodeVocab, tokenizer, text: str, add_special_tokens: bool = False) -> list[int]:
    """Token ids of `text` with the code vocabulary (rewrite, then the tokenizer)."""
    return tokenizer(vocab.rewrite(text), add_special_tokens=add_special_tokens)["input_ids"]


def decode_ids(
    vocab: CodeVocab, tokenizer, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True
) -> str:
    """Plain text from ids: each of our ids becomes its keyword / builtin / character, the rest is decoded.

    The ids between two of ours are decoded on their own, so a sentencepiece tokenizer (T5) cannot put its
    word-start space in front of them; since the text holds no marker we did not put there, everything
    decoded from ordinary ids is literal text and needs no restore.
    """
    if vocab.first_id is None:
        raise UserError("this code vocabulary was not added to a tokenizer; call add_code_vocabulary first")
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
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


# --- model ------------------------------------------------------------------------------------------------


def _module_name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def _refuse(model: nn.Module, why: str) -> UserError:
    return UserError(
        f"the code vocabulary cannot be added to {type(model).__name__}: {why}; "
        "train without it: --code_vocab=false"
    )


def token_models(model: nn.Module) -> list[nn.Module]:
    """The models that own token embeddings: the model itself, or for transformers' EncoderDecoderModel (an
    encoder and a decoder joined by cross-attention, which refuses to resize as a whole) both of them."""
    from transformers import EncoderDecoderModel

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
            raise _refuse(model, f"it has no token embedding ({_short(exc)})") from None
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
    rows = {_module_name(model, e): e.weight.shape[0] for e in input_embeddings(model)}
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
            raise _refuse(model, f"resizing its token embeddings failed ({_short(exc)})") from None


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
    names = tuple(_module_name(model, m) for m in trained)
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


# --- files ------------------------------------------------------------------------------------------------


def save_code_vocab(directory: str | os.PathLike, vocab: CodeVocab) -> Path:
    """Write code_vocab.json into an adapter folder: what add_code_vocabulary needs to re-add the tokens."""
    if vocab.first_id is None:
        raise UserError("this code vocabulary was not added to a model; call add_code_vocabulary first")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fields = {f.name: getattr(vocab, f.name) for f in dataclasses.fields(vocab)}
    data = {"format": FORMAT, **fields, "tokens": vocab.tokens}
    path = directory / VOCAB_FILE
    write_text_atomically(path, json.dumps(data, indent=1, ensure_ascii=True) + "\n")
    return path


def load_code_vocab(directory: str | os.PathLike) -> CodeVocab | None:
    """The CodeVocab saved in an adapter folder, or None when the adapter was trained without one."""
    path = Path(directory) / VOCAB_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.pop("format", None) != FORMAT:
        raise UserError(
            f"{path} is not a loralab code vocabulary ({FORMAT}); was it written by another tool?"
        )
    tokens = data.pop("tokens")
    vocab = CodeVocab(**data)
    if vocab.tokens != tokens:
        raise UserError(f"{path} lists other tokens than its fields make; the file was edited or is damaged")
    return vocab


def load_adapter_with_code_vocab(
    model: nn.Module, tokenizer, directory: str | os.PathLike
) -> CodeVocab | None:
    """Re-add the adapter's code vocabulary (if any) to a fresh model and tokenizer, then load the adapter."""
    vocab = load_code_vocab(directory)
    if vocab is not None:
        vocab = add_code_vocabulary(model, tokenizer, vocab)
    load_adapter(model, directory)
    return vocab


# --- the training loop's view -------------------------------------------------------------------------------


def rewrite_template(template: str, vocab: CodeVocab) -> str:
    """The template in code-vocabulary form, its {text} placeholder kept (its braces may be stand-ins)."""
    return "{text}".join(vocab.rewrite(part) for part in template.split("{text}"))


def predicting_with(predict: Callable, vocab: CodeVocab) -> Callable:
    """Wrap a kinds.Kind.predict: prompts go in rewritten, outputs come back as plain Python."""

    def wrapped(model, tokenizer, texts, config, device, desc="generating", template=None):
        template = rewrite_template(config.template if template is None else template, vocab)
        outputs = predict(model, tokenizer, [vocab.rewrite(t) for t in texts], config, device, desc, template)
        return [vocab.restore(text) for text in outputs]

    return wrapped

"""The code vocabulary as text: which tokens it has, rewriting code into them and restoring it, code_vocab.json.

The idea. A subword tokenizer made for prose may cut `memoryview` into pieces, and T5's has no newline and no
braces at all, so it cannot even write Python. We therefore rewrite code before tokenizing it:

    def f(x):\\n    return len(x)   ->   pytkw:def f(x):\\n    pytkw:return pytfunc:len(x)

and add every `pytkw:<keyword>` / `pytfunc:<builtin>` to the tokenizer as one atomic token with its own new
embedding row (tokens.py, embeddings.py). Characters the tokenizer cannot write get a stand-in token
(`pytchr:nl;` for "\\n"), and a tokenizer that collapses runs of spaces (T5, BERT) gets explicit space tokens
(`pytchr:sp;`, `pytchr:sp4;`) so that indentation survives. `restore` undoes `rewrite` exactly, for any text.

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

Saving. An adapter folder gets a `code_vocab.json` (save_code_vocab): the names, the stand-ins, the ids and
the embedding size; load_code_vocab reads it back.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import keyword
import os
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from loralab.errors import UserError
from loralab.files import read_json_object, write_text_atomically

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
        # After a keyword token rewrite puts a non-word character or a stand-in (pytchr:...), never a word.
        return self._markers_re(end=rf"(?={re.escape(CHR_PREFIX)}|(?!\w))")

    @cached_property
    def _generated_re(self) -> re.Pattern:
        return self._markers_re(end="")

    def _markers_re(self, end: str) -> re.Pattern:
        def names(items) -> str:
            return "|".join(re.escape(n) for n in sorted(items, key=lambda n: (-len(n), n)))

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

    def restore_generated(self, text: str) -> str:
        """Plain text from a model's decoded output: each of our tokens becomes its source wherever it stands.
        A model may put a keyword token before word characters (`pytkw:is` + "close"), which rewrite never
        does, so restore would keep the marker. Literal marker text is trained as stand-ins, so a decoded
        marker is one of our tokens (then this equals decode_ids, id by id)."""
        return self._generated_re.sub(self._source_of, text)

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
    data = read_json_object(path, "a loralab code vocabulary", "train the adapter again to write it anew")
    if data.pop("format", None) != FORMAT:
        raise UserError(
            f"{path} is not a loralab code vocabulary ({FORMAT}); was it written by another tool?"
        )
    tokens = data.pop("tokens")
    vocab = CodeVocab(**data)
    if vocab.tokens != tokens:
        raise UserError(f"{path} lists other tokens than its fields make; the file was edited or is damaged")
    return vocab


# --- the training loop's view -------------------------------------------------------------------------------


def rewrite_template(template: str, vocab: CodeVocab) -> str:
    """The template in code-vocabulary form, its {text} placeholder kept (its braces may be stand-ins)."""
    return "{text}".join(vocab.rewrite(part) for part in template.split("{text}"))


def predicting_with(predict: Callable, vocab: CodeVocab) -> Callable:
    """Wrap a kinds.Kind.predict: prompts (texts or conversations) go in rewritten, outputs come back as plain
    Python."""

    def rewrite(item: str | list[dict]) -> str | list[dict]:
        if isinstance(item, str):
            return vocab.rewrite(item)
        return [turn | {"content": vocab.rewrite(turn["content"])} for turn in item]

    def wrapped(model, tokenizer, items, config, device, desc="generating", fmt=None):
        config = dataclasses.replace(config, template=rewrite_template(config.template, vocab))
        if isinstance(fmt, str):
            fmt = rewrite_template(fmt, vocab)
        elif fmt is not None:  # a data.chat.PromptFormat
            fmt = dataclasses.replace(fmt, template=rewrite_template(fmt.template, vocab))
        outputs = predict(model, tokenizer, [rewrite(i) for i in items], config, device, desc, fmt)
        return [vocab.restore_generated(text) for text in outputs]

    return wrapped

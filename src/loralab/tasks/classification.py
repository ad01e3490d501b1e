"""Classification: a text in, one of N >= 2 labels out, each label named by a word the model learns to say.

Label words come from `label_words` (index = the label's id, or the data's label strings in that order), else
from the data: a `datasets` ClassLabel's names, or the distinct label strings sorted. A language model is
scored by generation (correct when the expected word starts the output: Rotten Tomatoes as in the reference
experiment) or, with score_by = "likelihood", by the label word it finds likeliest after the prompt (summed
log-probabilities of its tokens; never invalid). A model with a classification head predicts the index.
Metrics: accuracy, macro precision / recall / F1, per-class F1, the confusion matrix and the invalid rate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from loralab.config import RunConfig
from loralab.data.chat import answer_ids
from loralab.data.datasets import Table
from loralab.errors import UserError
from loralab.evaluation.likelihood import pick_choices
from loralab.evaluation.metrics import classification_metrics, match_label
from loralab.evaluation.predict import generate, prompt_ids, run_format
from loralab.evaluation.scores import classification_statistics, examples_digest
from loralab.models.detect import model_kind
from loralab.tasks.base import Data, Statistics, Task, generate_and_score, prompt_of
from loralab.tasks.rows import column, dataset_label, load_tables, require_columns, text_value, value_key

# Literals: loralab.config reads them from this file without importing it. ROLES: the fields `columns` may
# map; DEFAULTS: what an empty key means for this family (a preset in presets.py overrides them).
ROLES = ("text", "label")
DEFAULTS = {"template": "{text}\nLabel:", "chat_template": "none", "max_new_tokens": 0}

# test metrics for comparison reports (dotted: nested), the first is the main one
REPORT_METRICS = ("accuracy", "macro_f1", "invalid_rate")


def _label_words(config: RunConfig, tables: dict[str, Table]) -> tuple[list[str], str]:
    """The label words and the line saying where they came from."""
    if config.label_words:
        return list(config.label_words), f"label words from label_words: {', '.join(config.label_words)}"
    name = column(config, "label")
    for table in tables.values():
        if name in table.class_names:
            words = list(table.class_names[name])
            return words, f"label words from the data's label names ({len(words)}): {_shown(words)}"
    values = {row.get(name) for table in tables.values() for row in table.rows}
    numeric = [
        isinstance(v, int | float) and not isinstance(v, bool) or str(v).strip().isdigit() for v in values
    ]
    if any(numeric):  # ids (a CSV reads them as digit strings) say nothing a model could learn to answer
        raise UserError(
            f"the labels of {dataset_label(config)} are numbers without names; set label_words = [...] "
            "(one word per label id, in id order)"
        )
    words = sorted(str(v) for v in values if v is not None)
    if len(words) < 2:
        raise UserError(
            f"{dataset_label(config)} has {len(words)} distinct label(s); classification needs two or more"
        )
    return words, f"label words from the data's distinct labels, sorted ({len(words)}): {_shown(words)}"


def _shown(words: list[str]) -> str:
    return ", ".join(words) if len(words) <= 12 else ", ".join(words[:12]) + f", ... ({len(words) - 12} more)"


def _index(value: object, words: list[str], where: str) -> int:
    """A row's label as an index into `words`: an id, or the word itself."""
    if isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        if 0 <= int(value) < len(words):
            return int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text in words:
            return words.index(text)
        if text.isdigit() and int(text) < len(words):
            return int(text)
    raise UserError(
        f"{where}: label {value!r} is not one of the {len(words)} label words ({_shown(words)}) nor an id "
        "below their number; fix the data or label_words"
    )


def load_data(config: RunConfig, splits: tuple[str, ...]) -> Data:
    tables = load_tables(config, splits, value_key(column(config, "text")))
    for split, table in tables.items():
        require_columns(config, table, ROLES, split)
    words, note = _label_words(config, tables)
    # a word has at most as many tokens as characters (+1 for a leading space); generation stops at EOS anyway
    new_tokens = config.max_new_tokens or max(len(w) for w in words) + 2
    config = dataclasses.replace(config, label_words=words, max_new_tokens=new_tokens)
    text_name, label_name = column(config, "text"), column(config, "label")
    rows = {}
    for split, table in tables.items():
        rows[split] = [
            {
                "text": text_value(row[text_name], f"{dataset_label(config)}/{split} row {i}", "text"),
                "label": _index(row[label_name], words, f"{dataset_label(config)}/{split} row {i}"),
            }
            for i, row in enumerate(table.rows, 1)
        ]
    return Data(config, rows, {split: t.provenance for split, t in tables.items()}, [note])


def input_text(config: RunConfig, row: dict) -> str:
    return row["text"]


def label(config: RunConfig, row: dict) -> int:
    return int(row["label"])


def answer(config: RunConfig, row: dict) -> str:
    return config.label_words[int(row["label"])]


def messages(config: RunConfig, row: dict) -> list[dict]:
    return [{"role": "user", "content": row["text"]}, {"role": "assistant", "content": answer(config, row)}]


def score(config: RunConfig, rows: list[dict], generations: list[str]) -> tuple[dict, Statistics]:
    predicted = [match_label(text, config.label_words) for text in generations]
    expected = [int(r["label"]) for r in rows]
    words = config.label_words
    statistics = classification_statistics(expected, predicted, len(words), examples_digest(rows))
    return classification_metrics(expected, predicted, words), statistics


def evaluate(
    task: Task,
    model: torch.nn.Module,
    tokenizer,
    config: RunConfig,
    rows: list[dict],
    device: torch.device,
    predict: Callable = generate,
    desc: str = "test",
) -> tuple[dict, list[str], Statistics]:
    """By generation (or a classifier head), or with score_by = "likelihood" the likeliest label word."""
    if config.score_by != "likelihood":
        return generate_and_score(task, model, tokenizer, config, rows, device, predict, desc)
    if model_kind(model) != "causal":
        raise UserError(
            f"score_by = likelihood needs a causal language model, not a {model_kind(model)} model; use "
            "score_by = generation"
        )
    fmt = run_format(tokenizer, config)[0]
    prompts = [
        prompt_ids(tokenizer, fmt, prompt_of(messages(config, r)), config.max_length, True) for r in rows
    ]
    before = [{"role": "user", "content": "x"}]
    choices = [answer_ids(tokenizer, fmt, before, word) for word in config.label_words]
    picked = pick_choices(model, prompts, choices, tokenizer.pad_token_id, device, config.eval_batch_size)
    outputs = [config.label_words[i] for i in picked]
    metrics, statistics = score(config, rows, outputs)
    return metrics, outputs, statistics


def headline(metrics: dict) -> str:
    return (
        f"accuracy {metrics['accuracy']:.4f} on {metrics['n']} examples "
        f"(macro F1 {metrics['macro_f1']:.4f}, invalid {metrics['invalid_rate']:.2%})"
    )


TASK = Task(
    "classification",
    load_data,
    messages,
    input_text,
    answer,
    score,
    headline,
    REPORT_METRICS,
    label=label,
    evaluate_hook=evaluate,
)

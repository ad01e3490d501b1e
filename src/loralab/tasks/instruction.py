"""Instruction tuning: a prompt (or a conversation) in, a response out.

Rows come in one of four shapes, detected from the columns or set by `format` (data.formats): prompt /
completion; alpaca (instruction, input, output); messages (OpenAI style, role / content, several turns); ShareGPT
(conversations: from / value). Every row becomes a conversation; a causal LM trains on every assistant turn
and nothing else. Validation loss (and its perplexity) always; test metrics by generation, the last assistant
turn of each test conversation being the reference, chosen by `metrics` (evaluation.scores.text_metrics);
with `code_eval`, pass@k of the generated code (tasks.code_checks).
"""

from __future__ import annotations

import json

from loralab.config import RunConfig
from loralab.data.formats import detect_format, to_messages
from loralab.evaluation.predict import flatten
from loralab.evaluation.scores import examples_digest, text_statistics
from loralab.tasks.base import Data, Statistics, Task, prompt_of
from loralab.tasks.code_checks import extra_evaluation, pass_headline
from loralab.tasks.rows import column_map, dataset_label, load_tables

# Literals: loralab.config reads them from this file without importing it. ROLES: the fields `columns` may
# map; DEFAULTS: what an empty key means for this family (a preset in presets.py overrides them).
ROLES = ("prompt", "completion", "instruction", "input", "output", "messages", "conversations")
DEFAULTS = {
    "template": "{text}",
    "chat_template": "auto",
    "max_new_tokens": 256,
    "metrics": ["exact_match", "token_f1", "bleu", "chrf", "rougeL"],
}

# test metrics for comparison reports (dotted: nested), the first present one is the main one
REPORT_METRICS = (
    "bleu", "token_f1", "code_token_f1", "exact_match", "chrf", "rougeL", "rougeLsum", "humaneval.pass@1",
    "mbpp.pass@1",
)  # fmt: skip


def _format(config: RunConfig, columns: tuple[str, ...]) -> str:
    if config.format != "auto":
        return config.format
    mapping = column_map(config)
    renamed = {mapping.get(role, role) for role in ROLES}
    # the data's columns as the task's field names, so that detection sees mapped columns too
    seen = [role for role in ROLES if mapping.get(role, role) in columns] + [
        c for c in columns if c not in renamed
    ]
    return detect_format(seen)


def _split_key(config: RunConfig):
    """Rows sharing their first user turn (e.g. branches of one conversation) stay in one split."""
    mapping = column_map(config)

    def key(row: dict) -> list[str]:
        try:
            turns = to_messages(row, _format(config, tuple(row)), mapping, "a row")
            return [next(t["content"] for t in turns if t["role"] == "user")]
        except Exception:  # a bad row gets its one-line error when the split is converted below
            return [json.dumps(row, sort_keys=True, default=str)]

    return key


def load_data(config: RunConfig, splits: tuple[str, ...]) -> Data:
    tables = load_tables(config, splits, _split_key(config))
    mapping = column_map(config)
    rows, notes = {}, []
    for split, table in tables.items():
        fmt = _format(config, table.columns)
        if not notes:
            how = "detected" if config.format == "auto" else "set by format"
            notes.append(f"rows read as {fmt} ({how})")
        rows[split] = [
            {
                "messages": _until_last_answer(
                    to_messages(row, fmt, mapping, f"{dataset_label(config)}/{split} row {i}")
                )
            }
            for i, row in enumerate(table.rows, 1)
        ]
    return Data(config, rows, {split: t.provenance for split, t in tables.items()}, notes)


def _until_last_answer(turns: list[dict]) -> list[dict]:
    """The conversation up to its last assistant turn (turns after it have nothing to train or score)."""
    last = max(i for i, turn in enumerate(turns) if turn["role"] == "assistant")
    return turns[: last + 1]


def messages(config: RunConfig, row: dict) -> list[dict]:
    return row["messages"]


def input_text(config: RunConfig, row: dict) -> str:
    """The prompt for models that read one text: the user's text, or the earlier turns as role lines."""
    return flatten(prompt_of(row["messages"]))


def answer(config: RunConfig, row: dict) -> str:
    return row["messages"][-1]["content"]


def score(config: RunConfig, rows: list[dict], generations: list[str]) -> tuple[dict, Statistics]:
    references = [answer(config, r) for r in rows]
    hypotheses = [g.strip() for g in generations]
    statistics = text_statistics(config.metrics, hypotheses, references, examples_digest(rows))
    metrics = {name: statistic.value() for name, statistic in statistics.items()}
    return {"n": len(rows)} | metrics | {
        "empty_rate": sum(not h for h in hypotheses) / len(hypotheses)
    }, statistics


def headline(metrics: dict) -> str:
    names = [k for k in REPORT_METRICS if "." not in k and k in metrics]
    shown = ", ".join(
        f"{k} {metrics[k]:.2f}" if k in ("bleu", "chrf") else f"{k} {metrics[k]:.3f}" for k in names
    )
    if "bleu_batched16" in metrics:
        shown += f" (batch-averaged BLEU {metrics['bleu_batched16']:.2f})"
    return f"{shown} on {metrics['n']} examples" + pass_headline(metrics)


TASK = Task(
    "instruction",
    load_data,
    messages,
    input_text,
    answer,
    score,
    headline,
    REPORT_METRICS,
    extra_evaluation=extra_evaluation,
)

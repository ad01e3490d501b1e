"""Summarization: a document in, a summary out, scored by ROUGE-1/2/L and ROUGE-Lsum (Lin 2004).

The document fills the template's {text} and is cut at its end when the prompt would exceed max_length (the
summary always keeps its room: see data.encoding.encode_example). ROUGE-Lsum splits texts into sentences
(one per line), the flavour published CNN/DailyMail results report as ROUGE-L. With clean_text, document and
summary are lowercased and stripped of punctuation, as a reference experiment did (its ROUGE is then on
cleaned text). Presets: cnn_dailymail (highlights) and xsum (one-sentence summaries).
"""

from __future__ import annotations

from loralab.config import RunConfig
from loralab.data.summarization_sources import clean_text
from loralab.evaluation.scores import examples_digest, rouge_statistics
from loralab.tasks.base import Data, Statistics, Task
from loralab.tasks.rows import column, dataset_label, load_tables, require_columns, text_value, value_key

# Literals: loralab.config reads them from this file without importing it. ROLES: the fields `columns` may
# map; DEFAULTS: what an empty key means for this family (a preset in presets.py overrides them).
ROLES = ("document", "summary")
DEFAULTS = {
    "dataset": "cnn_dailymail",
    "template": "Summarize this article.\n\n{text}\n\nSummary:",
    "chat_template": "none",
    "max_new_tokens": 64,
}

# test metrics for comparison reports (dotted: nested), the first is the main one
REPORT_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def load_data(config: RunConfig, splits: tuple[str, ...]) -> Data:
    document, summary = column(config, "document"), column(config, "summary")
    tables = load_tables(config, splits, value_key(document))  # the same article stays in one split
    rows = {}
    for split, table in tables.items():
        require_columns(config, table, ROLES, split)
        where = f"{dataset_label(config)}/{split} row"
        rows[split] = [
            {
                "document": text_value(row[document], f"{where} {i}", "document"),
                "summary": text_value(row[summary], f"{where} {i}", "summary"),
            }
            for i, row in enumerate(table.rows, 1)
        ]
    return Data(config, rows, {split: t.provenance for split, t in tables.items()})


def _clean(config: RunConfig, text: str) -> str:
    return clean_text(text) if config.clean_text else text


def input_text(config: RunConfig, row: dict) -> str:
    return _clean(config, row["document"])


def answer(config: RunConfig, row: dict) -> str:
    return _clean(config, row["summary"])


def messages(config: RunConfig, row: dict) -> list[dict]:
    return [
        {"role": "user", "content": input_text(config, row)},
        {"role": "assistant", "content": answer(config, row)},
    ]


def score(config: RunConfig, rows: list[dict], generations: list[str]) -> tuple[dict, Statistics]:
    references = [answer(config, r) for r in rows]
    hypotheses = [g.strip() for g in generations]
    statistics = rouge_statistics(hypotheses, references, examples_digest(rows))
    result = {name: statistic.value() for name, statistic in statistics.items()} | {"n": len(rows)}
    result["empty_rate"] = sum(not h for h in hypotheses) / len(hypotheses)
    return result, statistics


def headline(metrics: dict) -> str:
    return (
        f"ROUGE-1 {metrics['rouge1']:.4f}, ROUGE-2 {metrics['rouge2']:.4f}, ROUGE-L {metrics['rougeL']:.4f}, "
        f"ROUGE-Lsum {metrics['rougeLsum']:.4f} on {metrics['n']} examples"
    )


TASK = Task("summarization", load_data, messages, input_text, answer, score, headline, REPORT_METRICS)

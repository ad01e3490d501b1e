"""Summarization (CNN/DailyMail highlights or XSum one-liners), scored by ROUGE-1/2/L (Lin 2004).

The article fills the template's {text} and is cut at its end when the prompt would exceed max_length (the
summary always keeps its room: see data.encode_example). With clean_text, article and summary are lowercased
and stripped of punctuation, as a reference experiment did (its ROUGE is then on cleaned text).
"""

from __future__ import annotations

from loralab.config import RunConfig
from loralab.data.sources import Loaded
from loralab.data.summarization_sources import clean_text, load_summarization
from loralab.evaluation.metrics import rouge
from loralab.tasks.base import Task

# Literals: loralab.config reads them from this file without importing it. DEFAULTS: what an empty dataset,
# template or max_new_tokens means; DATASETS: the datasets this task reads.
DEFAULTS = {
    "dataset": "cnn_dailymail",
    "template": "Summarize this article.\n\n{text}\n\nSummary:",
    "max_new_tokens": 64,
}
DATASETS = ("cnn_dailymail", "xsum")

# test metrics for comparison reports (dotted: nested), the first is the main one
REPORT_METRICS = ("rouge1", "rouge2", "rougeL")


def load_split(config: RunConfig, split: str) -> Loaded:
    """Rows {"document", "summary", "id"} of one split and where they came from."""
    return load_summarization(config.dataset, split, config.data_path or None)


def _clean(config: RunConfig, text: str) -> str:
    return clean_text(text) if config.clean_text else text


def input_text(config: RunConfig, row: dict) -> str:
    return _clean(config, row["document"])


def answer(config: RunConfig, row: dict) -> str:
    """The reference summary, after a space unless the template already ends in whitespace."""
    summary = _clean(config, row["summary"])
    return summary if config.template[-1:].isspace() else " " + summary


def score(config: RunConfig, rows: list[dict], generations: list[str]) -> dict:
    references = [_clean(config, r["summary"]) for r in rows]
    hypotheses = [g.strip() for g in generations]
    result = rouge(hypotheses, references)
    result["empty_rate"] = sum(not h for h in hypotheses) / len(hypotheses)
    return result


def headline(metrics: dict) -> str:
    return (
        f"ROUGE-1 {metrics['rouge1']:.4f}, ROUGE-2 {metrics['rouge2']:.4f}, ROUGE-L {metrics['rougeL']:.4f} "
        f"on {metrics['n']} examples"
    )


TASK = Task("summarization", load_split, input_text, answer, score, headline, REPORT_METRICS)

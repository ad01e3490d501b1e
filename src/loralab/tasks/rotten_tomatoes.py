"""Sentiment of Rotten Tomatoes snippets (Pang & Lee 2005) by instruction tuning, scored by generation.

A prompt is the config's template with the review filled in; the answer is the label word (and EOS), or
for a model with a classification head the class index. A generated text is correct when the expected label
word starts it; text that starts with no label word counts as wrong and as invalid.
"""

from __future__ import annotations

from loralab.config import RunConfig
from loralab.data.sentiment_sources import load_rotten_tomatoes
from loralab.data.sources import Loaded
from loralab.evaluation.metrics import classification_metrics, match_label
from loralab.tasks.base import Task

# Literals: loralab.config reads them from this file without importing it. DEFAULTS: what an empty dataset,
# template or max_new_tokens means; DATASETS: the datasets this task reads.
DEFAULTS = {"dataset": "rotten_tomatoes", "template": "Review: {text}\nSentiment:", "max_new_tokens": 3}
DATASETS = ("rotten_tomatoes",)
SPLITS = ("train", "validation", "test")


# test metrics for comparison reports (dotted: nested), the first is the main one
REPORT_METRICS = ("accuracy", "macro_f1", "invalid_rate")


def load_split(config: RunConfig, split: str) -> Loaded:
    """Rows {"text", "label"} of one split and where they came from."""
    return load_rotten_tomatoes(split, config.data_path or None)


def input_text(config: RunConfig, row: dict) -> str:
    """What goes into the template's {text}."""
    return row["text"]


def label(config: RunConfig, row: dict) -> int:
    """The class index, for classification heads."""
    return int(row["label"])


def answer(config: RunConfig, row: dict) -> str:
    """The label word, after a space unless the template already ends in whitespace."""
    word = config.label_words[int(row["label"])]
    return word if config.template[-1:].isspace() else " " + word


def score(config: RunConfig, rows: list[dict], generations: list[str]) -> dict:
    predicted = [match_label(text, config.label_words) for text in generations]
    return classification_metrics([int(r["label"]) for r in rows], predicted, config.label_words)


def headline(metrics: dict) -> str:
    """One line for the terminal."""
    return (
        f"accuracy {metrics['accuracy']:.4f} on {metrics['n']} examples "
        f"(macro F1 {metrics['macro_f1']:.4f}, invalid {metrics['invalid_rate']:.2%})"
    )


TASK = Task("rotten_tomatoes", load_split, input_text, answer, score, headline, REPORT_METRICS, label=label)

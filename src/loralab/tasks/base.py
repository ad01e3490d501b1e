"""The Task contract: every hook the training loop, `loralab eval`, `loralab data` and the reports call on a
task family (classification, instruction, summarization, text). Presets (rotten_tomatoes, code_qa, ...) are
families with other defaults (tasks/presets.py), not code.

Each family module writes its hooks as plain functions and ends with one `TASK = Task(...)` naming them.

    load_data(config, splits) -> Data
                            the rows of the named splits ("train", "validation", "test"), normalised to the
                            family's fields, where each came from, the lines to print, and the config with
                            what the data decides filled in (classification: label_words)
    messages(config, row) -> [{"role", "content"}, ...]
                            the conversation a causal LM trains on; its last turn is the assistant's answer
    input_text(config, row) -> str
                            the input of a model that reads one text (encoder-decoder, classifier head)
    answer(config, row) -> str
                            the target text (the last assistant turn)
    score(config, rows, generations) -> (metrics, statistics)
                            the test metrics of the generated texts, and the per-example statistics
                            (evaluation.uncertainty.Statistic) of those that get a bootstrap interval
    headline(metrics) -> str
                            one line for the terminal
    report_metrics          test metrics for comparison reports (dotted: nested); the first present one is
                            the main one
    label(config, row) -> int
                            the class index, for a model with a classification head; None (the default): the
                            task produces text and needs a language model
    evaluate(task, model, tokenizer, config, rows, device, predict, desc) -> (metrics, predictions, statistics)
                            default: generate an answer to every row's prompt and score the texts
    examples(config, tokenizer, rows) -> list[Encoded] | None
                            a family that does not encode row by row (text: packed chunks); None (default):
                            each row is one example
    extra_evaluation(model, tokenizer, config, device, predict) -> (metrics, samples, statistics)
                            more test metrics, one record per sample for the run folder and the metrics'
                            statistics (pass@k by running the generated code); default: none
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from loralab.config import RunConfig
from loralab.data.sources import Provenance
from loralab.evaluation.predict import generate
from loralab.evaluation.uncertainty import Statistic

Statistics = dict[str, Statistic]


@dataclass(frozen=True)
class Data:
    """What a task's load_data gives: rows per split, where each came from, lines to print, the config."""

    config: RunConfig
    rows: dict[str, list[dict]]
    sources: dict[str, Provenance]
    notes: list[str] = field(default_factory=list)


def no_extra_evaluation(
    model: torch.nn.Module, tokenizer, config: RunConfig, device: torch.device, predict: Callable
) -> tuple[dict, list[dict], Statistics]:
    return {}, [], {}


def prompt_of(messages: list[dict]) -> str | list[dict]:
    """What a model is asked: the user's text for one turn, else the conversation before the last answer."""
    before = messages[:-1]
    if len(before) == 1 and before[0]["role"] == "user":
        return before[0]["content"]
    return before


def generate_and_score(
    task: Task,
    model: torch.nn.Module,
    tokenizer,
    config: RunConfig,
    rows: list[dict],
    device: torch.device,
    predict: Callable = generate,
    desc: str = "test",
) -> tuple[dict, list[str], Statistics]:
    """Predict for every row (its conversation up to the last answer) and score with the task's metric."""
    items = [prompt_of(task.messages(config, r)) for r in rows]  # one-text models flatten conversations
    outputs = predict(model, tokenizer, items, config, device, desc)
    metrics, statistics = task.score(config, rows, outputs)
    return metrics, outputs, statistics


def one_example_per_row(config: RunConfig, tokenizer, rows: list[dict]) -> None:
    return None


@dataclass(frozen=True)
class Task:
    """A task family as the rest of loralab sees it; the module docstring describes each hook."""

    name: str
    load_data: Callable[[RunConfig, tuple[str, ...]], Data]
    messages: Callable[[RunConfig, dict], list[dict]]
    input_text: Callable[[RunConfig, dict], str]
    answer: Callable[[RunConfig, dict], str]
    score: Callable[[RunConfig, list[dict], list[str]], tuple[dict, Statistics]]
    headline: Callable[[dict], str]
    report_metrics: tuple[str, ...]
    label: Callable[[RunConfig, dict], int] | None = None
    evaluate_hook: Callable[..., tuple[dict, list[str], Statistics]] = generate_and_score
    examples: Callable[[RunConfig, object, list[dict]], list | None] = one_example_per_row
    extra_evaluation: Callable[..., tuple[dict, list[dict], Statistics]] = no_extra_evaluation

    def evaluate(
        self,
        model: torch.nn.Module,
        tokenizer,
        config: RunConfig,
        rows: list[dict],
        device: torch.device,
        predict: Callable = generate,
        desc: str = "test",
    ) -> tuple[dict, list[str], Statistics]:
        """The test metrics of `rows`, the predictions (texts) they were computed from, and the metrics'
        per-example statistics."""
        return self.evaluate_hook(self, model, tokenizer, config, rows, device, predict, desc)

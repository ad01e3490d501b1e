"""The Task contract: every hook the training loop, `loralab eval` and the reports call on a task.

Each task module writes its hooks as plain functions and ends with one `TASK = Task(...)` naming them.

    load_split(config, split) -> (rows, provenance)
                            the rows of "train", "validation" or "test" and where they came from
                            (a data.sources.Provenance; str() of it is the line to print)
    input_text(config, row) -> str
                            what goes into the template's {text}
    answer(config, row) -> str
                            the target text of a language model
    score(config, rows, generations) -> metrics
                            the test metrics of the generated texts
    headline(metrics) -> str
                            one line for the terminal
    report_metrics          test metrics for comparison reports (dotted: nested), the first is the main one
    label(config, row) -> int
                            the class index, for a model with a classification head; None (the default):
                            the task produces text and needs a language model
    extra_evaluation(model, tokenizer, config, device, predict) -> (metrics, samples)
                            more test metrics and one record per sample for the run folder (code_qa: pass@k
                            by running the generated code); default: none
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from loralab.config import RunConfig
from loralab.data.sources import Loaded
from loralab.evaluation.predict import generate


def no_extra_evaluation(
    model: torch.nn.Module, tokenizer, config: RunConfig, device: torch.device, predict: Callable
) -> tuple[dict, list[dict]]:
    return {}, []


@dataclass(frozen=True)
class Task:
    """A task as the rest of loralab sees it; the module docstring describes each hook."""

    name: str
    load_split: Callable[[RunConfig, str], Loaded]
    input_text: Callable[[RunConfig, dict], str]
    answer: Callable[[RunConfig, dict], str]
    score: Callable[[RunConfig, list[dict], list[str]], dict]
    headline: Callable[[dict], str]
    report_metrics: tuple[str, ...]
    label: Callable[[RunConfig, dict], int] | None = None
    extra_evaluation: Callable[..., tuple[dict, list[dict]]] = no_extra_evaluation

    def evaluate(
        self,
        model: torch.nn.Module,
        tokenizer,
        config: RunConfig,
        rows: list[dict],
        device: torch.device,
        predict: Callable = generate,
        desc: str = "test",
    ) -> tuple[dict, list[str]]:
        """Predict for every row and score with the task's metric; returns (metrics, predictions)."""
        outputs = predict(model, tokenizer, [self.input_text(config, r) for r in rows], config, device, desc)
        return self.score(config, rows, outputs), outputs

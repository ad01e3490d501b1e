"""How sure a test metric is: per-example statistics, and bootstrap confidence intervals over test examples.

Every test metric is written as a `Statistic`: one row of numbers per test example and a named way to combine
rows into the metric. A mean metric (accuracy, ROUGE, token F1) keeps each example's score; a corpus metric
keeps what it pools over the corpus (BLEU: n-gram matches and totals and the two lengths; chrF: character
n-gram counts; macro F1: each example's one-hot expected, predicted and correct class), so a resample of the
examples gives the metric of that resampled corpus exactly (Efron & Tibshirani 1993; for BLEU as in Koehn
2004, "Statistical Significance Tests for Machine Translation Evaluation").

`bootstrap_intervals` draws `resamples` test sets of the same size with replacement (seeded; every metric of one
example set sees the same draws) and reports the 2.5th and 97.5th percentiles of the metric over them: the
percentile interval. It says how much the figure would move on another test set of this size from the same
source, not how much it would move with another training seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loralab.errors import UserError
from loralab.files import write_atomically

LEVEL = 0.95


def _mean(stats: np.ndarray) -> float:
    return float(stats[:, 0].mean())


def _bleu(stats: np.ndarray) -> float:
    from sacrebleu.metrics import BLEU  # its score-from-counts is what sacrebleu's own paired test uses

    return float(BLEU()._compute_score_from_stats([int(v) for v in stats.sum(axis=0)]).score)


def _chrf(stats: np.ndarray) -> float:
    from sacrebleu.metrics import CHRF

    return float(CHRF()._compute_score_from_stats([int(v) for v in stats.sum(axis=0)]).score)


def _bleu_batched16(stats: np.ndarray) -> float:
    """Mean BLEU over consecutive batches of 16 rows (metrics.batched_bleu, kept for old reports)."""
    return float(np.mean([_bleu(stats[i : i + 16]) for i in range(0, len(stats), 16)]))


def _per_class(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 from rows of [one-hot expected | one-hot predicted | one-hot correct]
    (0 where a denominator is 0, as metrics.classification_metrics)."""
    expected, predicted, correct = np.split(stats.sum(axis=0), 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, correct / predicted, 0.0)
        recall = np.where(expected > 0, correct / expected, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1


def _macro(which: int) -> Callable[[np.ndarray], float]:
    return lambda stats: float(_per_class(stats)[which].mean())


def _perplexity(stats: np.ndarray) -> float:
    """exp(summed loss / summed tokens) from rows of (loss sum, tokens)."""
    loss, tokens = stats.sum(axis=0)
    return math.exp(min(loss / tokens, 700.0)) if tokens else math.nan


def _mean_loss(stats: np.ndarray) -> float:
    loss, tokens = stats.sum(axis=0)
    return float(loss / tokens) if tokens else math.nan


# How each kind of statistic becomes its metric; the names are stored in test_statistics.safetensors.
COMBINE: dict[str, Callable[[np.ndarray], float]] = {
    "mean": _mean,
    "bleu": _bleu,
    "chrf": _chrf,
    "bleu_batched16": _bleu_batched16,
    "macro_precision": _macro(0),
    "macro_recall": _macro(1),
    "macro_f1": _macro(2),
    "perplexity": _perplexity,
    "mean_loss": _mean_loss,
}


@dataclass(frozen=True)
class Statistic:
    """A metric as rows of per-example numbers (`stats`, n × k) and the name of how rows combine (COMBINE).

    `examples` names the example set (a digest of the test rows): two runs' statistics can be paired only when
    they name the same examples in the same order.
    """

    stats: np.ndarray
    combine: str
    examples: str = ""

    def __post_init__(self) -> None:
        if self.combine not in COMBINE:
            raise ValueError(f"unknown combine {self.combine!r}; one of {', '.join(COMBINE)}")
        stats = np.asarray(self.stats, dtype=np.float64)
        object.__setattr__(self, "stats", stats.reshape(len(stats), -1))

    @property
    def n(self) -> int:
        return len(self.stats)

    def value(self, rows: np.ndarray | None = None) -> float:
        """The metric of all examples, or of the given rows (e.g. a resample)."""
        return COMBINE[self.combine](self.stats if rows is None else rows)

    def is_binary_mean(self) -> bool:
        """A share of examples that are right (accuracy, exact match): McNemar's test applies to pairs."""
        return self.combine == "mean" and bool(np.isin(self.stats, (0.0, 1.0)).all())


def mean_statistic(values: list[float] | np.ndarray, examples: str = "") -> Statistic:
    return Statistic(np.asarray(values, dtype=np.float64).reshape(-1, 1), "mean", examples)


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """`resamples` rows of n indices drawn with replacement from range(n), seeded."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_values(statistic: Statistic, indices: np.ndarray) -> np.ndarray:
    """The metric on each resample (one per row of `indices`)."""
    return np.array([statistic.value(statistic.stats[row]) for row in indices])


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    finite = values[np.isfinite(values)]
    if len(finite) < len(values) or not len(finite):  # an undefined resample: no honest interval
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_intervals(
    statistics: dict[str, Statistic], resamples: int = 1000, seed: int = 0, level: float = LEVEL
) -> dict[str, list[float] | None]:
    """{metric: [low, high]}, the percentile bootstrap interval of each metric (None with fewer than two
    examples, or when a resample leaves the metric undefined); statistics of the same size share the draws."""
    draws: dict[int, np.ndarray] = {}
    intervals: dict[str, list[float] | None] = {}
    for name, statistic in statistics.items():
        if statistic.n < 2 or resamples < 1:
            intervals[name] = None
            continue
        if statistic.n not in draws:
            draws[statistic.n] = resample_indices(statistic.n, resamples, seed)
        interval = percentile_interval(bootstrap_values(statistic, draws[statistic.n]), level)
        intervals[name] = None if interval is None else list(interval)
    return intervals


def format_interval(value: float, interval: list[float] | None, digits: int = 3) -> str:
    """ "0.857 [0.836, 0.878]", or the value alone without an interval."""
    if interval is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def save_statistics(path: Path, statistics: dict[str, Statistic]) -> None:
    """test_statistics.safetensors: one float64 tensor per metric; how each combines and which examples it
    covers in the metadata (JSON)."""
    from safetensors.numpy import save_file

    tensors = {name: np.ascontiguousarray(s.stats) for name, s in statistics.items()}
    meta = {name: {"combine": s.combine, "examples": s.examples} for name, s in statistics.items()}
    write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata={"statistics": json.dumps(meta)}))


def load_statistics(path: Path) -> dict[str, Statistic]:
    """What save_statistics wrote; {} when the file is absent (a run from before intervals existed)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = json.loads((handle.metadata() or {})["statistics"])
            return {
                name: Statistic(handle.get_tensor(name), info["combine"], info["examples"])
                for name, info in meta.items()
            }
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{path} is not a loralab statistics file ({exc}); delete it or evaluate the run again"
        ) from None


INTERVALS_KEY = "ci95"  # metrics[INTERVALS_KEY] = {dotted metric name: [low, high] or None}


def with_intervals(metrics: dict, statistics: dict[str, Statistic], resamples: int, seed: int) -> dict:
    """The metrics with each statistic's bootstrap interval under metrics["ci95"] (keyed by dotted name, as
    "humaneval.pass@1"); unchanged when resamples is 0 or there are no statistics."""
    if not resamples or not statistics:
        return metrics
    return metrics | {INTERVALS_KEY: bootstrap_intervals(statistics, resamples, seed)}


def metric_value(metrics: dict, dotted: str) -> float | None:
    """The number at a dotted name in a metrics dict ("rouge.rougeL"), or None where there is none."""
    value: object = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def intervals_line(metrics: dict, names: tuple[str, ...] | list[str]) -> str:
    """ "95% intervals: accuracy 0.857 [0.836, 0.878], macro_f1 ..." for the named metrics that have one."""
    intervals = metrics.get(INTERVALS_KEY) or {}
    parts = []
    for name in names:
        value = metric_value(metrics, name)
        if value is not None and intervals.get(name) is not None:
            digits = 2 if max(abs(value), *map(abs, intervals[name])) >= 10 else 3
            parts.append(f"{name} {format_interval(value, intervals[name], digits)}")
    return "95% intervals (bootstrap over test examples): " + ", ".join(parts) if parts else ""

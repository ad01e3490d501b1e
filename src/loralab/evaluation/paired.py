"""Is run A better than run B on the same test examples, or is the difference noise?

Both runs must have scored the same examples in the same order (their statistics name the same example set).
A metric that is a share of right answers (accuracy, exact match, pass@1 with one sample) is tested with
McNemar's exact test: only the examples where the two runs disagree carry information, and under "no
difference" each of them is equally likely to favour either run (McNemar 1947; the exact binomial form as in
Dietterich 1998, "Approximate Statistical Tests for Comparing Supervised Classification Learning Algorithms").
Any other metric (BLEU, ROUGE, chrF, macro F1, perplexity) gets a paired bootstrap: the same resampled test
sets for both runs, and the share of them on which the difference changes sign (Koehn 2004).

Each comparison also says how many test examples would be needed to see the observed difference at the 5%
level with 80% power, if it is real and as large as observed: for McNemar from the discordant share (Connor
1987, "Sample size for testing differences in proportions for the paired-sample design"), for the bootstrap
from the standard error, which shrinks as 1/√n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from loralab.evaluation.uncertainty import Statistic, percentile_interval, resample_indices

ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Comparison:
    """The outcome of testing metric `metric` of run `a` against run `b` on the same n examples."""

    metric: str
    a: str
    b: str
    a_value: float
    b_value: float
    interval: tuple[float, float] | None  # of a - b, 95% paired bootstrap
    p_value: float
    test: str  # "McNemar exact" or "paired bootstrap"
    n: int
    needed: int | None  # examples to see this difference at ALPHA with POWER; None: no difference seen

    @property
    def difference(self) -> float:
        return self.a_value - self.b_value

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def binomial_two_sided(k: int, n: int) -> float:
    """P-value of k successes in n fair coin flips, two-sided (twice the smaller tail, at most 1)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1))
    return min(1.0, 2 * tail / 2**n)


def mcnemar_exact(a_right: np.ndarray, b_right: np.ndarray) -> tuple[int, int, float]:
    """(examples only A gets right, examples only B gets right, exact two-sided p-value)."""
    a_right, b_right = np.asarray(a_right, dtype=bool), np.asarray(b_right, dtype=bool)
    only_a, only_b = int((a_right & ~b_right).sum()), int((~a_right & b_right).sum())
    return only_a, only_b, binomial_two_sided(only_a, only_a + only_b)


def mcnemar_needed(
    only_a: int, only_b: int, n: int, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """Test examples for McNemar's test to detect the observed difference (Connor 1987); None if none seen."""
    delta = (only_a - only_b) / n
    discordant = (only_a + only_b) / n
    if delta == 0:
        return None
    z_a, z_b = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    root = z_a * math.sqrt(discordant) + z_b * math.sqrt(max(discordant - delta**2, 0.0))
    return math.ceil(root**2 / delta**2)


def bootstrap_needed(
    difference: float, standard_error: float, n: int, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """Test examples for a difference with this standard error at n examples to be seen (SE ∝ 1/√n)."""
    if difference == 0 or not math.isfinite(standard_error):
        return None
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return max(2, math.ceil(n * (z * standard_error / abs(difference)) ** 2))


def compare(
    metric: str, a: str, sa: Statistic, b: str, sb: Statistic, resamples: int = 1000, seed: int = 0
) -> Comparison:
    """Test metric `metric` of run `a` (statistic sa) against run `b` (sb). ValueError if the two were not
    computed on the same examples."""
    if sa.n != sb.n or sa.examples != sb.examples or sa.combine != sb.combine:
        raise ValueError(f"{metric}: {a} and {b} were not scored on the same test examples")
    indices = resample_indices(sa.n, resamples, seed)
    deltas = np.array([sa.value(sa.stats[r]) - sb.value(sb.stats[r]) for r in indices])
    interval = percentile_interval(deltas)
    a_value, b_value = sa.value(), sb.value()
    if sa.is_binary_mean() and sb.is_binary_mean():
        only_a, only_b, p = mcnemar_exact(sa.stats[:, 0] == 1, sb.stats[:, 0] == 1)
        needed, test = mcnemar_needed(only_a, only_b, sa.n), "McNemar exact"
    else:
        finite = deltas[np.isfinite(deltas)]
        below, above = float(np.mean(finite <= 0)), float(np.mean(finite >= 0))
        p = min(1.0, 2 * min(below, above)) if len(finite) else 1.0
        needed = bootstrap_needed(a_value - b_value, float(np.std(finite)), sa.n) if len(finite) else None
        test = "paired bootstrap"
    return Comparison(metric, a, b, a_value, b_value, interval, p, test, sa.n, needed)


def format_p(p: float) -> str:
    """Two significant digits, more where two would round across the 5% line (0.0498 is not "0.05")."""
    for digits in (2, 3, 4):
        text = f"{p:.{digits}g}"
        if (float(text) < ALPHA) == (p < ALPHA):
            return text
    return f"{p:.6g}"


def _p_text(comparison: Comparison, resamples: int) -> str:
    if comparison.test == "paired bootstrap" and comparison.p_value == 0:
        return f"p < {2 / resamples:.3g}"
    return f"p = {format_p(comparison.p_value)}"


def statement(comparison: Comparison, resamples: int = 1000, digits: int = 3) -> str:
    """The comparison in words: which run is ahead, by how much, and whether this test size can tell."""
    c = comparison
    head = f"{c.a} vs {c.b} on {c.metric}: {c.a_value:.{digits}f} vs {c.b_value:.{digits}f}"
    if c.interval is not None:
        head += f", difference {c.difference:+.{digits}f} [{c.interval[0]:+.{digits}f}, {c.interval[1]:+.{digits}f}]"
    how = f"{c.test}, {_p_text(c, resamples)}, {c.n:,} paired test examples"
    if c.significant:
        higher = c.a if c.difference > 0 else c.b
        return f"{head}. Significant at 5% ({how}): {higher} has the higher {c.metric}."
    if c.needed is None:
        return f"{head}. No difference at all on these {c.n:,} examples ({how})."
    return (
        f"{head}. Not distinguishable at this test size ({how}); a difference this large would need about "
        f"{c.needed:,} test examples to show at 5% with 80% power."
    )

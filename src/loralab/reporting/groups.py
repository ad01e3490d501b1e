"""Runs grouped by setting across seeds, their figures with intervals or spreads, and the paired tests between
groups in words.

A group is the runs of one setting (method, or point of a sweep) that differ only in seed: compare/sweep
--seeds name them NAME_seed=S. With one run, a metric is shown with its bootstrap interval over test examples;
with several, as mean ± standard deviation over seeds. Groups are tested against each other seed by seed (the
runs of one seed saw the same test examples) on the main metric (evaluation.paired).
"""

from __future__ import annotations

import statistics as stats
from dataclasses import dataclass
from itertools import combinations

from loralab.evaluation.paired import Comparison, compare, format_p, statement
from loralab.evaluation.uncertainty import INTERVALS_KEY, format_interval, metric_value
from loralab.reporting.compare import SEED_SUFFIX

MAX_ALL_PAIRS = 6  # more groups than this: each is tested against the best one only


@dataclass(frozen=True)
class Group:
    name: str
    runs: list[dict]  # reporting.report.load_run records, one per seed

    @property
    def done(self) -> list[dict]:
        return [run for run in self.runs if run["summary"] is not None]


def group_name(run_name: str) -> str:
    base, sep, seed = run_name.rpartition(SEED_SUFFIX)
    return base if sep and seed.isdigit() else run_name


def group_runs(runs: list[dict]) -> list[Group]:
    """Runs grouped by name without its _seed=S suffix, in the order they first appear."""
    names: dict[str, list[dict]] = {}
    for run in runs:
        names.setdefault(group_name(run["name"]), []).append(run)
    return [Group(name, members) for name, members in names.items()]


def values(group: Group, metric: str) -> list[float]:
    found = (metric_value(run["summary"]["metrics"], metric) for run in group.done)
    return [v for v in found if v is not None]


def interval(run: dict, metric: str) -> list[float] | None:
    return (run["summary"]["metrics"].get(INTERVALS_KEY) or {}).get(metric)


def digits_for(value: float) -> int:
    return 2 if abs(value) >= 10 else 4


def cell(group: Group, metric: str) -> str:
    """ "0.8574 [0.8362, 0.8780]" for one run, "0.8561 ± 0.0031" over seeds, "–" without a value."""
    found = values(group, metric)
    if not found:
        return "–"
    digits = digits_for(found[0])
    if len(found) == 1:
        run = next(r for r in group.done if metric_value(r["summary"]["metrics"], metric) is not None)
        return format_interval(found[0], interval(run, metric), digits)
    return f"{stats.mean(found):.{digits}f} ± {stats.stdev(found):.{digits}f}"


def spread(group: Group, metric: str) -> tuple[float, float | None, float | None] | None:
    """(value, low, high) for a bar: one run with its interval, or the mean over seeds from min to max."""
    found = values(group, metric)
    if not found:
        return None
    if len(found) == 1:
        bounds = interval(group.done[0], metric)
        return (found[0], *bounds) if bounds else (found[0], None, None)
    return stats.mean(found), min(found), max(found)


def _by_seed(group: Group) -> dict[int, dict]:
    return {run["config"]["seed"]: run for run in group.done}


def pairs_to_test(groups: list[Group], metric: str) -> list[tuple[Group, Group]]:
    """Every pair when there are few groups; otherwise each group against the one with the best mean."""
    tested = [g for g in groups if values(g, metric)]
    if len(tested) <= MAX_ALL_PAIRS:
        return list(combinations(tested, 2))
    lower_is_better = metric in ("perplexity", "loss", "invalid_rate")
    pick = min if lower_is_better else max
    best = pick(tested, key=lambda g: stats.mean(values(g, metric)))
    return [(best, g) for g in tested if g is not best]


def compare_groups(a: Group, b: Group, metric: str, resamples: int) -> str:
    """The test of a against b on `metric` in words: one statement for one seed, a summary over seeds."""
    runs_a, runs_b = _by_seed(a), _by_seed(b)
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        return f"{a.name} vs {b.name}: no seed in common, so no paired test."
    results: list[Comparison] = []
    for seed in seeds:
        sa, sb = runs_a[seed]["statistics"].get(metric), runs_b[seed]["statistics"].get(metric)
        if sa is None or sb is None:
            missing = a.name if sa is None else b.name
            return (
                f"{a.name} vs {b.name} on {metric}: not tested; {missing} has no per-example statistics "
                "(test_statistics.safetensors, written by runs of this version)."
            )
        try:
            results.append(compare(metric, a.name, sa, b.name, sb, resamples, seed))
        except ValueError:
            return f"{a.name} vs {b.name} on {metric}: not tested; the runs were scored on different test examples."
    if len(results) == 1:
        return statement(results[0], resamples, digits_for(results[0].a_value))
    return _seeds_statement(a, b, metric, results)


def _seeds_statement(a: Group, b: Group, metric: str, results: list[Comparison]) -> str:
    digits = digits_for(results[0].a_value)
    mean_a, mean_b = stats.mean(r.a_value for r in results), stats.mean(r.b_value for r in results)
    std_a = stats.stdev(r.a_value for r in results)
    std_b = stats.stdev(r.b_value for r in results)
    head = (
        f"{a.name} vs {b.name} on {metric}, {len(results)} seeds paired by seed: mean {mean_a:.{digits}f} vs "
        f"{mean_b:.{digits}f} (difference {mean_a - mean_b:+.{digits}f}; std over seeds {std_a:.{digits}f} "
        f"and {std_b:.{digits}f})"
    )
    ps = ", ".join(format_p(r.p_value) for r in results)
    significant = [r for r in results if r.significant]
    same_sign = len({r.difference > 0 for r in significant}) <= 1
    if significant and len(significant) == len(results) and same_sign:
        higher = a.name if mean_a > mean_b else b.name
        return f"{head}. Significant at 5% in every seed ({results[0].test}, p = {ps}): {higher} has the higher {metric}."
    if not significant:
        needed = sorted(r.needed for r in results if r.needed is not None)
        more = (
            f"; to show each seed's own difference at 5% with 80% power would take about {needed[0]:,} to "
            f"{needed[-1]:,} test examples"
            if len(needed) > 1
            else f"; to show a difference this large would take about {needed[0]:,} test examples"
            if needed
            else ""
        )
        return f"{head}. Not distinguishable in any seed ({results[0].test}, p = {ps}){more}."
    count = f"{len(significant)} of {len(results)} seeds ({results[0].test}, p = {ps})"
    if all(r.difference > 0 for r in results) or all(r.difference < 0 for r in results):
        ahead = a.name if mean_a > mean_b else b.name
        return (
            f"{head}. {ahead} is ahead in every seed, significantly at 5% in {count}: the direction holds "
            "over seeds, but this test size does not show the difference in each one."
        )
    return f"{head}. Significant at 5% in {count}: not a consistent difference at this test size."

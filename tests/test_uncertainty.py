"""Per-example statistics give back every metric exactly; bootstrap intervals and paired tests behave as the
textbook says (normal approximation, a brute-force binomial, scipy where it is installed)."""

import json
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loralab.errors import UserError
from loralab.evaluation.metrics import (
    METRIC_NAMES,
    batched_bleu,
    classification_metrics,
    corpus_bleu,
    corpus_chrf,
    exact_match,
    rouge,
    token_prf,
    word_f1,
)
from loralab.evaluation.paired import (
    binomial_two_sided,
    compare,
    mcnemar_exact,
    mcnemar_needed,
    statement,
)
from loralab.evaluation.scores import (
    classification_statistics,
    examples_digest,
    pass_statistics,
    perplexity_statistics,
    rouge_statistics,
    text_statistics,
)
from loralab.evaluation.uncertainty import (
    Statistic,
    bootstrap_intervals,
    intervals_line,
    load_statistics,
    mean_statistic,
    save_statistics,
    with_intervals,
)

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "under",
    "mat",
    "rug",
    "quickly",
    "slowly",
    "red",
    "blue",
    "and",
]


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) for _ in range(n)]


def test_text_statistics_give_back_each_metric_exactly():
    hypotheses, references = sentences(40, 1), sentences(40, 2)
    references[:5] = hypotheses[:5]  # some exact matches
    stats = text_statistics(METRIC_NAMES, hypotheses, references)
    prf = token_prf(hypotheses, references)
    expected = {
        "bleu": corpus_bleu(hypotheses, references),
        "bleu_batched16": batched_bleu(hypotheses, references, 16),
        "chrf": corpus_chrf(hypotheses, references),
        "exact_match": exact_match(hypotheses, references),
        "token_f1": word_f1(hypotheses, references),
        "rougeL": rouge(hypotheses, references)["rougeL"],
        "rougeLsum": rouge(hypotheses, references)["rougeLsum"],
        "code_token_f1": prf["f1"],
        "code_token_precision": prf["precision"],
        "code_token_recall": prf["recall"],
    }
    assert set(stats) == set(expected)
    for name, value in expected.items():
        assert stats[name].value() == pytest.approx(value, abs=1e-9), name
        assert stats[name].n == 40


def test_a_bleu_resample_is_the_bleu_of_the_resampled_corpus():
    """Resampling rows of counts is the same as scoring a corpus with those sentences repeated."""
    hypotheses, references = sentences(30, 3), sentences(30, 4)
    bleu = text_statistics(["bleu"], hypotheses, references)["bleu"]
    rows = np.random.default_rng(0).integers(0, 30, size=30)
    resampled = corpus_bleu([hypotheses[i] for i in rows], [references[i] for i in rows])
    assert bleu.value(bleu.stats[rows]) == pytest.approx(resampled, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6).flatmap(lambda k: st.tuples(st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.one_of(st.none(), st.integers(0, k - 1))), min_size=1, max_size=40))))  # fmt: skip
def test_classification_statistics_match_classification_metrics(case):
    k, pairs = case
    expected, predicted = [e for e, _ in pairs], [p for _, p in pairs]
    words = [f"w{i}" for i in range(k)]
    metrics = classification_metrics(expected, predicted, words)
    stats = classification_statistics(expected, predicted, k)
    for name in ("accuracy", "invalid_rate", "macro_f1", "macro_precision", "macro_recall"):
        assert stats[name].value() == pytest.approx(metrics[name], abs=1e-12), name


def test_perplexity_and_pass_statistics():
    stats = perplexity_statistics([10.0, 30.0], [10, 10])
    assert stats["loss"].value() == pytest.approx(2.0)
    assert stats["perplexity"].value() == pytest.approx(math.exp(2.0))
    passing = pass_statistics("humaneval", [0, 3, 10], 10, [1, 10])
    assert passing["humaneval.pass@1"].value() == pytest.approx((0 + 0.3 + 1) / 3)
    assert passing["humaneval.pass@10"].value() == pytest.approx((0 + 1 + 1) / 3)


def test_bootstrap_interval_of_a_share_matches_the_normal_approximation():
    n, right = 2000, 1600
    values = np.zeros(n)
    values[:right] = 1
    low, high = bootstrap_intervals({"accuracy": mean_statistic(values)}, resamples=2000, seed=1)["accuracy"]
    half_width = 1.96 * math.sqrt(0.8 * 0.2 / n)  # 0.0175
    assert low < 0.8 < high
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1)


def test_intervals_are_seeded_and_shared_across_metrics_of_one_example_set():
    values = np.random.default_rng(0).random(100)
    stats = {"x": mean_statistic(values), "y": mean_statistic(values)}
    first = bootstrap_intervals(stats, resamples=300, seed=5)
    assert first == bootstrap_intervals(stats, resamples=300, seed=5)
    assert first["x"] == first["y"]  # same draws for every metric of the same examples
    assert first != bootstrap_intervals(stats, resamples=300, seed=6)
    assert bootstrap_intervals({"one": mean_statistic([1.0])})["one"] is None  # one example: no interval


def test_with_intervals_and_the_printed_line():
    metrics = {"accuracy": 0.8, "bleu": 25.0, "n": 4}
    stats = {"accuracy": mean_statistic([1, 1, 1, 0] * 50), "bleu": mean_statistic([20.0, 30.0] * 100)}
    result = with_intervals(metrics, stats, resamples=200, seed=0)
    assert set(result["ci95"]) == {"accuracy", "bleu"}
    line = intervals_line(result, ("accuracy", "bleu", "missing"))
    assert line.startswith("95% intervals") and "accuracy 0.800 [" in line and "bleu 25.00 [" in line
    assert with_intervals(metrics, stats, resamples=0, seed=0) == metrics


def test_statistics_file_round_trip_and_a_damaged_file(tmp_path):
    stats = text_statistics(["bleu", "exact_match"], sentences(5, 1), sentences(5, 2), examples="abc")
    path = tmp_path / "test_statistics.safetensors"
    save_statistics(path, stats)
    loaded = load_statistics(path)
    assert set(loaded) == set(stats)
    for name in stats:
        assert loaded[name].combine == stats[name].combine and loaded[name].examples == "abc"
        assert loaded[name].value() == stats[name].value()
    assert load_statistics(tmp_path / "absent.safetensors") == {}
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a loralab statistics file"):
        load_statistics(path)


def test_examples_digest_tells_example_sets_apart():
    rows = [{"text": "a", "label": 0}, {"text": "b", "label": 1}]
    assert examples_digest(rows) == examples_digest(json.loads(json.dumps(rows)))
    assert examples_digest(rows) != examples_digest(rows[::-1])


# ---------------------------------------------------------------------------------------------- paired tests


def brute_force_binomial(k: int, n: int) -> float:
    """Two-sided exact p: the probability of outcomes no more likely than k, summed (fair coin)."""
    probabilities = [math.comb(n, i) / 2**n for i in range(n + 1)]
    return min(1.0, sum(p for p in probabilities if p <= probabilities[k] * (1 + 1e-12)))


@pytest.mark.parametrize(("k", "n"), [(0, 0), (0, 5), (2, 10), (5, 10), (10, 30), (40, 100), (99, 100)])
def test_binomial_two_sided_is_exact(k, n):
    assert binomial_two_sided(k, n) == pytest.approx(brute_force_binomial(k, n) if n else 1.0)
    try:
        from scipy.stats import binomtest
    except ImportError:
        return
    if n:
        assert binomial_two_sided(k, n) == pytest.approx(binomtest(k, n, 0.5).pvalue)


def test_mcnemar_counts_only_the_disagreements():
    a = np.array([1, 1, 1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([1, 0, 0, 0, 0, 1, 1, 0], dtype=bool)
    only_a, only_b, p = mcnemar_exact(a, b)
    assert (only_a, only_b) == (3, 1)
    assert p == pytest.approx(binomial_two_sided(1, 4))  # 0.625


def test_a_clear_accuracy_difference_is_significant_and_a_tiny_one_is_not():
    rng = np.random.default_rng(0)
    n = 1000
    a = rng.random(n) < 0.85
    b = a.copy()
    flip = rng.choice(n, 120, replace=False)  # B loses 120 examples A gets right (where A was right)
    b[flip[a[flip]]] = False
    clear = compare("accuracy", "A", mean_statistic(a), "B", mean_statistic(b), resamples=500)
    assert clear.test == "McNemar exact" and clear.significant and clear.difference > 0
    assert "Significant at 5%" in statement(clear) and "A has the higher accuracy" in statement(clear)
    d = a.copy()
    d[np.flatnonzero(a)[:3]] = False
    d[np.flatnonzero(~a)[:1]] = True  # 3 lost, 1 gained: +0.002 for A
    small = compare("accuracy", "A", mean_statistic(a), "D", mean_statistic(d), resamples=500)
    assert not small.significant and small.needed is not None and small.needed > n
    assert "Not distinguishable at this test size" in statement(small)
    same = compare("accuracy", "A", mean_statistic(a), "A2", mean_statistic(a), resamples=200)
    assert same.p_value == 1.0 and same.needed is None and "No difference at all" in statement(same)


def test_mcnemar_needed_grows_as_the_difference_shrinks():
    assert mcnemar_needed(30, 10, 1000) < mcnemar_needed(25, 15, 1000) < mcnemar_needed(21, 19, 1000)
    assert mcnemar_needed(10, 10, 1000) is None


def test_paired_bootstrap_for_bleu_sees_a_real_gap_and_refuses_other_examples():
    references = sentences(200, 7)
    good = [r if i % 3 else sentences(1, i)[0] for i, r in enumerate(references)]
    poor = [r if i % 3 == 0 else sentences(1, 1000 + i)[0] for i, r in enumerate(references)]
    sa = text_statistics(["bleu"], good, references, "x")["bleu"]
    sb = text_statistics(["bleu"], poor, references, "x")["bleu"]
    result = compare("bleu", "good", sa, "poor", sb, resamples=300)
    assert result.test == "paired bootstrap" and result.significant and result.difference > 20
    assert result.interval[0] > 0
    other = Statistic(sb.stats, "bleu", "y")
    with pytest.raises(ValueError, match="same test examples"):
        compare("bleu", "good", sa, "other", other)


def test_rouge_statistics_are_means_per_example():
    h, r = sentences(10, 1), sentences(10, 2)
    stats = rouge_statistics(h, r)
    assert stats["rouge2"].value() == pytest.approx(rouge(h, r)["rouge2"])
    assert stats["rouge1"].combine == "mean" and not stats["rouge1"].is_binary_mean()

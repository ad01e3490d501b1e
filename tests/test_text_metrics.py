from itertools import combinations
from math import comb

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loralab.evaluation.metrics import batched_bleu, code_tokens, corpus_bleu, pass_at_k, rouge, token_prf

SENTENCE = "the quick brown fox jumps over the lazy dog near the river bank today"


# ---------------------------------------------------------------------------------------------- BLEU


def test_bleu_of_identical_texts_is_100_and_of_disjoint_texts_0():
    texts = [SENTENCE, "a completely different sentence about cats and their many toys"]
    assert corpus_bleu(texts, texts) == pytest.approx(100.0)
    assert corpus_bleu(["alpha beta gamma delta epsilon"], ["one two three four five"]) == pytest.approx(0.0)


def test_batched_bleu_is_the_mean_over_batches_not_corpus_bleu():
    # 16 perfect pairs then one pair with nothing in common: corpus BLEU pools the n-gram counts (mostly matches),
    # batched BLEU averages batch 1 (100) with batch 2 (0).
    hypotheses = [SENTENCE] * 16 + ["alpha beta gamma delta epsilon zeta"]
    references = [SENTENCE] * 16 + ["one two three four five six"]
    assert batched_bleu(hypotheses, references) == pytest.approx(50.0)
    assert corpus_bleu(hypotheses, references) > 90
    # one batch holding everything is corpus BLEU again
    assert batched_bleu(hypotheses, references, batch_size=17) == corpus_bleu(hypotheses, references)


def test_bleu_checks_its_inputs():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no hypotheses"):
        corpus_bleu([], [])
    with pytest.raises(ValueError, match="batch_size"):
        batched_bleu(["a"], ["a"], batch_size=0)


# ---------------------------------------------------------------------------------------------- token P/R/F1


def test_code_tokens_split_identifiers_numbers_and_operators():
    tokens = ["def", "f", "(", "x_1", ")", ":", "return", "x_1", "**", "2", ">=", "1.5", "->", "y"]
    assert code_tokens("def f(x_1):\n    return x_1**2 >= 1.5 -> y") == tokens
    assert code_tokens("a+=1") == code_tokens("a += 1") == ["a", "+=", "1"]


def test_token_prf_on_hand_computed_examples():
    # 1: [return a + b] vs [return a - b]: overlap 3 of 4 and 4 -> P = R = F1 = 0.75
    # 2: [x = x + 1] vs [x += 1]: overlap x (min(2, 1) = 1) and 1 -> 2; P = 2/5, R = 2/3, F1 = 0.5
    result = token_prf(["return a + b", "x = x + 1"], ["return a - b", "x += 1"])
    assert result["n"] == 2
    assert result["precision"] == pytest.approx((0.75 + 2 / 5) / 2)
    assert result["recall"] == pytest.approx((0.75 + 2 / 3) / 2)
    assert result["f1"] == pytest.approx((0.75 + 0.5) / 2)


def test_token_prf_edge_cases():
    assert token_prf(["a b"], ["c d"]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "n": 1}
    assert token_prf([""], [""]) == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "n": 1}
    assert token_prf(["  "], ["x"])["f1"] == 0.0
    assert token_prf(["a a a"], ["a"]) == pytest.approx(
        {"precision": 1 / 3, "recall": 1.0, "f1": 0.5, "n": 1}
    )


# ---------------------------------------------------------------------------------------------- ROUGE


def test_rouge_with_stemming_on_a_hand_checkable_case():
    # stems: [the dog wa run] vs [the dog run]; without stemming "running" != "runs"
    result = rouge(["The dog was running."], ["the dog runs"])
    assert result["rouge1"] == pytest.approx(2 * (3 / 4) * 1 / (3 / 4 + 1))  # 6/7
    assert result["rouge2"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))  # "the dog" only: 0.4
    assert result["rougeL"] == pytest.approx(6 / 7)  # LCS: the dog run
    unrelated_verb = rouge(["the dog was flying"], ["the dog runs"])
    assert unrelated_verb["rouge1"] == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))  # 4/7


def test_rouge_averages_over_examples():
    result = rouge(["a b c", "x y"], ["a b c", "p q"])
    assert result == pytest.approx({"rouge1": 0.5, "rouge2": 0.5, "rougeL": 0.5, "n": 2})


# ---------------------------------------------------------------------------------------------- pass@k


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (the first c pass) that contain a passing sample."""
    subsets = list(combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


@given(st.integers(1, 10).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_matches_brute_force(args):
    n, c, k = args
    assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_large_n_matches_the_binomial_form():
    for n, c, k in [(200, 10, 1), (200, 10, 10), (200, 10, 100), (1000, 1, 500)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), rel=1e-9)


def test_pass_at_k_edge_cases():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # pass@1 is c / n
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(5, 3, 3) == 1.0  # n - c = 2 < k: every draw of 3 holds a pass
    assert pass_at_k(1, 1, 1) == 1.0
    with pytest.raises(ValueError, match="at least 4 samples"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="between 0 and n"):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="k >= 1"):
        pass_at_k(3, 1, 0)

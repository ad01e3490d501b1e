import math
import subprocess
import sys
from itertools import combinations
from math import comb

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loralab.evaluation.metrics import (
    METRIC_NAMES,
    batched_bleu,
    classification_metrics,
    code_tokens,
    corpus_bleu,
    corpus_chrf,
    exact_match,
    normalize_answer,
    pass_at_k,
    perplexity,
    rouge,
    sentence_lines,
    token_prf,
    word_f1,
)
from loralab.evaluation.scores import text_metrics

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
    assert result == pytest.approx({"rouge1": 0.5, "rouge2": 0.5, "rougeL": 0.5, "rougeLsum": 0.5, "n": 2})


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


# ---------------------------------------------------------------------------------------------- ROUGE-Lsum

TWO_SENTENCES = "the cat sat on the mat. the dog ran away."
SWAPPED = "the dog ran away. the cat sat on the mat."


def test_rouge_lsum_scores_sentences_apart_unlike_rouge_l():
    # rougeL: one LCS over the whole texts, "the cat sat on the mat" = 6 of 10 words each way -> 0.6.
    # rougeLsum: each reference sentence is matched against the hypothesis sentences -> all 10 words, 1.0.
    result = rouge([TWO_SENTENCES], [SWAPPED])
    assert result["rougeL"] == pytest.approx(0.6)
    assert result["rougeLsum"] == pytest.approx(1.0)
    assert result["rouge1"] == pytest.approx(1.0)


def test_rouge_lsum_equals_rouge_score_on_newline_joined_sentences():
    from rouge_score import rouge_scorer

    hypothesis = "They were released on bail! Police arrested two men on Friday. Nobody else was hurt."
    reference = "Two men were arrested by police. Both men were later released on bail."
    scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    expected = scorer.score(
        "Two men were arrested by police.\nBoth men were later released on bail.",
        "They were released on bail!\nPolice arrested two men on Friday.\nNobody else was hurt.",
    )["rougeLsum"].fmeasure
    result = rouge([hypothesis], [reference])
    assert result["rougeLsum"] == pytest.approx(expected)
    assert result["rougeLsum"] != pytest.approx(result["rougeL"])


def test_sentence_lines_splits_only_texts_without_newlines():
    assert sentence_lines(" One. Two!  Three? four 3.5 ") == "One.\nTwo!\nThree?\nfour 3.5"
    assert sentence_lines("kept. as\nit is. ") == "kept. as\nit is. "
    assert sentence_lines("a.\nb. c") == "a.\nb. c"


# ---------------------------------------------------------------------------------------------- SQuAD EM / F1


def test_normalize_answer_follows_squad():
    assert normalize_answer("  The Eiffel-Tower, in  PARIS! ") == "eiffeltower in paris"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_exact_match_after_normalisation():
    hypotheses = ["The Beatles!", "beatles", "Paris, France", "1984"]
    references = ["beatles", "the  Beatles.", "Paris", "1984 "]
    assert exact_match(hypotheses, references) == pytest.approx(3 / 4)


def test_word_f1_by_hand():
    # 1: [big red ball] vs [red ball]: overlap 2, P = 2/3, R = 1, F1 = 0.8
    # 2: [cat cat dog] vs [cat bird]: overlap 1 (cat counted once), P = 1/3, R = 1/2, F1 = 0.4
    # 3: nothing in common: 0. 4: both empty after normalisation ("The" is an article): 1
    hypotheses = ["a big red ball", "cat cat dog", "yes", "The"]
    references = ["the red ball", "cat, bird", "no", "!"]
    assert word_f1(hypotheses, references) == pytest.approx((0.8 + 0.4 + 0 + 1) / 4)
    assert word_f1(["x"], [""]) == 0.0


# ---------------------------------------------------------------------------------------------- chrF


def test_chrf_by_hand():
    # "abc" vs "abd": 1-grams 2 of 3 match, 2-grams 1 of 2 ("ab"), 3-grams 0 of 1; orders 4-6 have no n-grams
    # and are left out (sacrebleu's effective order). Mean P = mean R = (2/3 + 1/2 + 0) / 3 = 7/18 = F_beta.
    assert corpus_chrf(["abc"], ["abd"]) == pytest.approx(100 * 7 / 18)
    assert corpus_chrf([SENTENCE], [SENTENCE]) == pytest.approx(100.0)
    assert corpus_chrf(["xyz"], ["abc"]) == 0.0


def test_chrf_matches_the_sacrebleu_command_line(tmp_path):
    hypotheses = ["a cat sat on a mat", "hello there world", "Das ist gut."]
    references = ["the cat sat on the mat", "hello world again", "Das ist sehr gut."]
    (tmp_path / "hyp.txt").write_text("\n".join(hypotheses) + "\n")
    (tmp_path / "ref.txt").write_text("\n".join(references) + "\n")
    command = [sys.executable, "-m", "sacrebleu", "ref.txt", "-i", "hyp.txt", "-m", "chrf", "-b", "-w", "6"]
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert corpus_chrf(hypotheses, references) == pytest.approx(float(out), abs=1e-6)


# ---------------------------------------------------------------------------------------------- text_metrics


def test_text_metrics_returns_the_named_metrics_under_flat_keys():
    hypotheses, references = ["The cat!", "x = 1"], ["cat", "x=1"]
    result = text_metrics(METRIC_NAMES, hypotheses, references)
    assert set(result) == {
        "exact_match", "token_f1", "bleu", "bleu_batched16", "chrf", "rougeL", "rougeLsum",
        "code_token_f1", "code_token_precision", "code_token_recall", "n",
    }  # fmt: skip
    assert result["n"] == 2
    assert result["exact_match"] == pytest.approx(0.5)  # "cat" == "cat"; "x 1" != "x1"
    assert result["token_f1"] == pytest.approx(0.5)
    # code tokens: [The cat !] vs [cat]: P 1/3, R 1; [x = 1] both: 1
    assert result["code_token_precision"] == pytest.approx((1 / 3 + 1) / 2)
    assert result["code_token_f1"] == pytest.approx((0.5 + 1) / 2)
    assert result["chrf"] == pytest.approx(corpus_chrf(hypotheses, references))
    assert result["rougeL"] == pytest.approx(rouge(hypotheses, references)["rougeL"])
    assert text_metrics(["bleu"], [SENTENCE], [SENTENCE]) == pytest.approx({"bleu": 100.0, "n": 1})


def test_text_metrics_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown text metric meteor; choose from exact_match"):
        text_metrics(["bleu", "meteor"], ["a"], ["a"])
    assert isinstance(METRIC_NAMES, tuple) and "rougeLsum" in METRIC_NAMES


def test_perplexity():
    assert perplexity(6.0, 3) == pytest.approx(math.e**2)
    assert perplexity(0.0, 5) == 1.0
    assert perplexity(1e6, 1) == math.inf  # exp overflows
    assert perplexity(math.inf, 4) == math.inf
    with pytest.raises(ValueError, match="at least one token"):
        perplexity(1.0, 0)


# ---------------------------------------------------------------------------------------------- classification


def test_classification_confusion_and_macro_scores_on_three_classes():
    words = ["red", "green", "blue"]
    expected = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    predicted = [0, 1, None, 1, 1, 2, 0, None, 2]
    m = classification_metrics(expected, predicted, words)
    assert m["confusion"] == {
        "labels": words,
        "matrix": [[1, 1, 0, 1], [0, 2, 0, 0], [1, 0, 2, 1]],  # last column: no label (invalid)
    }
    assert m["accuracy"] == pytest.approx(5 / 9) and m["invalid_rate"] == pytest.approx(2 / 9)
    # red: P 1/2 R 1/3; green: P 2/3 R 1; blue: P 1 R 1/2
    assert m["macro_precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["macro_recall"] == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)
    f1s = [2 * p * r / (p + r) for p, r in [(1 / 2, 1 / 3), (2 / 3, 1), (1, 1 / 2)]]
    assert m["macro_f1"] == pytest.approx(sum(f1s) / 3)
    assert [m["per_class"][w]["support"] for w in words] == [3, 2, 4]
    assert (m["precision"], m["recall"]) == pytest.approx((1.0, 0.5))  # the last label's
    with pytest.raises(ValueError, match="class indices"):
        classification_metrics([3], [0], words)


def _classification_metrics_before(expected, predicted, label_words):
    """classification_metrics as it was before the confusion matrix (commit 22a4fd8), as the reference."""
    n = len(expected)
    correct = sum(e == p for e, p in zip(expected, predicted, strict=True))
    result = {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "invalid_rate": sum(p is None for p in predicted) / n if n else 0.0,
        "per_class": {},
    }
    f1s = []
    for index, word in enumerate(label_words):
        tp = sum(e == index and p == index for e, p in zip(expected, predicted, strict=True))
        fp = sum(e != index and p == index for e, p in zip(expected, predicted, strict=True))
        fn = sum(e == index and p != index for e, p in zip(expected, predicted, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result["per_class"][word] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
        f1s.append(f1)
    result["macro_f1"] = sum(f1s) / len(f1s) if f1s else 0.0
    positive = result["per_class"][label_words[-1]]
    result.update(precision=positive["precision"], recall=positive["recall"], f1=positive["f1"])
    return result


@given(
    st.integers(2, 6).flatmap(
        lambda k: st.lists(
            st.tuples(st.integers(0, k - 1), st.none() | st.integers(0, k - 1)), max_size=30
        ).map(lambda pairs: (k, pairs))
    )
)
def test_classification_metrics_keeps_every_earlier_key_and_value(args):
    k, pairs = args
    words = [f"w{i}" for i in range(k)]
    expected, predicted = [e for e, _ in pairs], [p for _, p in pairs]
    new = classification_metrics(expected, predicted, words)
    old = _classification_metrics_before(expected, predicted, words)
    assert {key: new[key] for key in old} == old  # exactly equal, not approximately
    assert sum(map(sum, new["confusion"]["matrix"])) == len(pairs)

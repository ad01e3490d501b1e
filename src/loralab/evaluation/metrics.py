"""Task metrics.

Classification: accuracy, per-class precision / recall / F1, invalid rate. Text: BLEU (Papineni et al. 2002, via
sacrebleu), ROUGE (Lin 2004, via rouge-score), token-level precision / recall / F1. Code: pass@k (Chen et al.
2021). sacrebleu and rouge-score are imported inside the functions that need them (together about 0.7 s).
"""

from __future__ import annotations

import re
from collections import Counter


def match_label(generated: str, label_words: list[str]) -> int | None:
    """Index of the label word that starts the generated text (after whitespace, case-insensitive), or None."""
    text = generated.lstrip().lower()
    for index, word in enumerate(label_words):
        if text.startswith(word.lower()):
            return index
    return None


def classification_metrics(expected: list[int], predicted: list[int | None], label_words: list[str]) -> dict:
    """Accuracy, per-class P/R/F1 and macro F1; a prediction of None (no label at all) is wrong and invalid."""
    if len(expected) != len(predicted):
        raise ValueError("expected and predicted differ in length")
    n = len(expected)
    correct = sum(e == p for e, p in zip(expected, predicted, strict=True))
    result: dict = {
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


# ---------------------------------------------------------------------------------------------- text


def _check_pairs(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("no hypotheses to score")


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (Papineni et al. 2002) on a 0-100 scale, one reference per hypothesis, sacrebleu defaults.

    The defaults are sacrebleu's 13a tokenizer, case-sensitive, exponential smoothing, and n-gram counts and
    lengths summed over the whole corpus before the geometric mean and brevity penalty are taken.
    """
    import sacrebleu  # imported here, as rouge_score below: only the tasks that score text need them

    _check_pairs(hypotheses, references)
    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def batched_bleu(hypotheses: list[str], references: list[str], batch_size: int = 16) -> float:
    """Mean of corpus_bleu over consecutive batches of `batch_size` pairs (the last batch may be smaller).

    This is NOT corpus BLEU: BLEU is a ratio of n-gram counts pooled over the corpus, with one brevity penalty,
    and the mean of per-batch ratios weighs short batches like long ones, depends on the order and on
    `batch_size`, and drops to 0 for a whole batch with no matching 4-gram. It exists only to reproduce a
    reference experiment that reported BLEU averaged over evaluation batches of 16; report corpus_bleu for
    anything new.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    _check_pairs(hypotheses, references)
    scores = [
        corpus_bleu(hypotheses[start : start + batch_size], references[start : start + batch_size])
        for start in range(0, len(hypotheses), batch_size)
    ]
    return sum(scores) / len(scores)


# Identifiers and keywords, numbers, multi-character operators, then any other single non-space character.
_CODE_TOKEN = re.compile(
    r"[^\W\d]\w*"  # identifiers and keywords (Unicode letters included)
    r"|\d+(?:\.\d+)?"  # integer and decimal numbers (1e5 is "1", "e5")
    r"|\*\*=?|//=?|<<=?|>>=?|->|:=|[-+*/%&|^@<>=!]="  # multi-character operators
    r"|\S"  # any other character: brackets, punctuation, quotes, single-character operators
)


def code_tokens(text: str) -> list[str]:
    """Python-aware tokens of `text`: identifiers, numbers, operators (`==`, `**=`, `->`), single symbols.

    Whitespace and indentation are dropped; string literals and comments are split like code. Works on
    incomplete or invalid code, unlike the tokenize module.
    """
    return _CODE_TOKEN.findall(text)


def token_prf(hypotheses: list[str], references: list[str]) -> dict:
    """Token precision, recall and F1 of each hypothesis against its reference, averaged over examples.

    Tokens come from code_tokens (so `x+1` and `x + 1` agree). The overlap is the bag-of-tokens intersection
    with counts: sum over tokens of min(count in hypothesis, count in reference). Precision = overlap / hypothesis
    tokens, recall = overlap / reference tokens, F1 their harmonic mean (0 when both are 0). Two empty texts
    score 1, one empty text 0. Returns {"precision", "recall", "f1", "n"} on a 0-1 scale.
    """
    _check_pairs(hypotheses, references)
    totals = {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = Counter(code_tokens(hypothesis)), Counter(code_tokens(reference))
        n_hyp, n_ref = sum(hyp.values()), sum(ref.values())
        if n_hyp == 0 or n_ref == 0:
            precision = recall = f1 = float(n_hyp == n_ref)
        else:
            overlap = sum((hyp & ref).values())
            precision, recall = overlap / n_hyp, overlap / n_ref
            f1 = 2 * precision * recall / (precision + recall) if overlap else 0.0
        totals["precision"] += precision
        totals["recall"] += recall
        totals["f1"] += f1
    n = len(hypotheses)
    return {key: value / n for key, value in totals.items()} | {"n": n}


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge(hypotheses: list[str], references: list[str]) -> dict:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures (Lin 2004) on a 0-1 scale, averaged over examples.

    Computed by Google's rouge-score package with its Porter stemmer on ("running" matches "run") and its
    default tokenizer, which lowercases and keeps only runs of ASCII letters and digits (punctuation, symbols
    and non-Latin letters are dropped). ROUGE-L is sentence-level LCS, not rougeLsum. Returns {"rouge1",
    "rouge2", "rougeL", "n"}.
    """
    from rouge_score import rouge_scorer

    _check_pairs(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        scores = scorer.score(reference, hypothesis)  # rouge-score takes (target, prediction)
        for key in ROUGE_TYPES:
            totals[key] += scores[key].fmeasure
    n = len(hypotheses)
    return {key: value / n for key, value in totals.items()} | {"n": n}


# ---------------------------------------------------------------------------------------------- code


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from n samples of which c pass (Chen et al. 2021, "Evaluating Large Language
    Models Trained on Code", eq. 1): 1 - C(n-c, k) / C(n, k), the chance that k of the n samples drawn without
    replacement include a passing one.

    Computed as the product 1 - prod_{i=n-c+1}^{n} (1 - k/i), which avoids huge binomials; when fewer than k
    samples fail (n - c < k) every draw of k includes a pass and the result is exactly 1.0.
    """
    if n < 1 or k < 1:
        raise ValueError(f"pass@k needs n >= 1 and k >= 1, got n={n}, k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"c must be between 0 and n={n}, got {c}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product

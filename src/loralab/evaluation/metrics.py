"""Task metrics.

Classification: accuracy, per-class and macro precision / recall / F1, invalid rate, confusion matrix. Text:
BLEU (Papineni et al. 2002) and chrF (Popović 2015), both via sacrebleu on its 0-100 scale; ROUGE (Lin 2004, via
rouge-score); SQuAD exact match and word F1 (Rajpurkar et al. 2016); code-token precision / recall / F1; all
but BLEU and chrF on a 0-1 scale; evaluation.scores.text_metrics computes a chosen set of them by name
(METRIC_NAMES), with each one's per-example statistics. Language modelling: perplexity. Code: pass@k (Chen et al. 2021). sacrebleu and rouge-score are imported inside the
functions that need them (together about 0.7 s).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

# The names scores.text_metrics accepts (a literal tuple: the config layer, below this one, reads it without importing).
METRIC_NAMES = (
    "exact_match",
    "token_f1",
    "bleu",
    "chrf",
    "rougeL",
    "rougeLsum",
    "code_token_f1",
    "bleu_batched16",
)


def match_label(generated: str, label_words: list[str]) -> int | None:
    """Index of the label word that starts the generated text (after whitespace, case-insensitive), or None;
    the longest such word when one is the start of another ("card" and "card_arrival")."""
    text = generated.lstrip().lower()
    matches = [i for i, word in enumerate(label_words) if text.startswith(word.lower())]
    return max(matches, key=lambda i: len(label_words[i])) if matches else None


def _confusion(expected: list[int], predicted: list[int | None], n_classes: int) -> list[list[int]]:
    """Counts: rows = expected class, columns = predicted class, then one column for no label (None)."""
    matrix = [[0] * (n_classes + 1) for _ in range(n_classes)]
    for e, p in zip(expected, predicted, strict=True):
        if not 0 <= e < n_classes or (p is not None and not 0 <= p < n_classes):
            raise ValueError(f"class indices must be in 0..{n_classes - 1}: expected {e}, predicted {p}")
        matrix[e][n_classes if p is None else p] += 1
    return matrix


def classification_metrics(expected: list[int], predicted: list[int | None], label_words: list[str]) -> dict:
    """Accuracy, per-class P/R/F1, macro P/R/F1 and the confusion matrix, for any number of classes.

    A prediction of None (no label at all) is wrong and invalid. Per-class precision, recall or F1 with a zero
    denominator is 0, and the macro averages are the unweighted means over classes. "precision", "recall" and
    "f1" are those of the last label (the positive class of a two-class task). "confusion" is {"labels":
    label_words, "matrix": rows = expected class, columns = predicted class then one "invalid" column}.
    """
    if len(expected) != len(predicted):
        raise ValueError("expected and predicted differ in length")
    n = len(expected)
    matrix = _confusion(expected, predicted, len(label_words))
    correct = sum(matrix[i][i] for i in range(len(label_words)))
    result: dict = {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "invalid_rate": sum(p is None for p in predicted) / n if n else 0.0,
        "per_class": {},
    }
    per_class = []
    for index, word in enumerate(label_words):
        tp = matrix[index][index]
        fp = sum(row[index] for row in matrix) - tp
        fn = sum(matrix[index]) - tp
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result["per_class"][word] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
        per_class.append((precision, recall, f1))
    for column, key in ((2, "f1"), (0, "precision"), (1, "recall")):
        values = [scores[column] for scores in per_class]
        result[f"macro_{key}"] = sum(values) / len(values) if values else 0.0
    positive = result["per_class"][label_words[-1]]
    result.update(precision=positive["precision"], recall=positive["recall"], f1=positive["f1"])
    result["confusion"] = {"labels": list(label_words), "matrix": matrix}
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


def token_prf_each(hypotheses: list[str], references: list[str]) -> dict[str, list[float]]:
    """Token precision, recall and F1 of each hypothesis against its reference ({"precision": [...], ...}).

    Tokens come from code_tokens (so `x+1` and `x + 1` agree). The overlap is the bag-of-tokens intersection
    with counts: sum over tokens of min(count in hypothesis, count in reference). Precision = overlap / hypothesis
    tokens, recall = overlap / reference tokens, F1 their harmonic mean (0 when both are 0). Two empty texts
    score 1, one empty text 0.
    """
    _check_pairs(hypotheses, references)
    scores: dict[str, list[float]] = {"precision": [], "recall": [], "f1": []}
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = Counter(code_tokens(hypothesis)), Counter(code_tokens(reference))
        n_hyp, n_ref = sum(hyp.values()), sum(ref.values())
        if n_hyp == 0 or n_ref == 0:
            precision = recall = f1 = float(n_hyp == n_ref)
        else:
            overlap = sum((hyp & ref).values())
            precision, recall = overlap / n_hyp, overlap / n_ref
            f1 = 2 * precision * recall / (precision + recall) if overlap else 0.0
        for key, value in (("precision", precision), ("recall", recall), ("f1", f1)):
            scores[key].append(value)
    return scores


def token_prf(hypotheses: list[str], references: list[str]) -> dict:
    """token_prf_each averaged over examples: {"precision", "recall", "f1", "n"} on a 0-1 scale."""
    scores = token_prf_each(hypotheses, references)
    return {key: sum(values) / len(values) for key, values in scores.items()} | {"n": len(hypotheses)}


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

# A sentence ends at . ! or ? followed by whitespace (no abbreviation list: "Dr. Smith" is split too).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentence_lines(text: str) -> str:
    """`text` with one sentence per line, as rougeLsum reads it: a text that already has newlines is kept as
    it is; otherwise it is split after every . ! or ? that whitespace follows."""
    if "\n" in text:
        return text
    return "\n".join(_SENTENCE_END.split(text.strip()))


def rouge_each(hypotheses: list[str], references: list[str]) -> dict[str, list[float]]:
    """ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures (Lin 2004) of each example, on a 0-1 scale.

    Computed by Google's rouge-score package with its Porter stemmer on ("running" matches "run") and its
    default tokenizer, which lowercases and keeps only runs of ASCII letters and digits (punctuation, symbols
    and non-Latin letters are dropped). rougeL is the LCS of the whole texts; rougeLsum is the summary-level
    LCS over sentences (the union of each reference sentence's LCS with all hypothesis sentences), with the
    sentences put on lines by sentence_lines. The ROUGE-L that papers publish for CNN/DailyMail (the original
    ROUGE-1.5.5 script on sentence-split summaries) is ROUGE-Lsum, not rougeL.
    """
    from rouge_score import rouge_scorer

    _check_pairs(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    # Given rougeLsum alone, rouge-score tokenizes only sentence by sentence, so nothing is tokenized twice.
    summary_scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    each: dict[str, list[float]] = {key: [] for key in (*ROUGE_TYPES, "rougeLsum")}
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        scores = scorer.score(reference, hypothesis)  # rouge-score takes (target, prediction)
        for key in ROUGE_TYPES:
            each[key].append(scores[key].fmeasure)
        summary = summary_scorer.score(sentence_lines(reference), sentence_lines(hypothesis))
        each["rougeLsum"].append(summary["rougeLsum"].fmeasure)
    return each


def rouge(hypotheses: list[str], references: list[str]) -> dict:
    """rouge_each averaged over examples: {"rouge1", "rouge2", "rougeL", "rougeLsum", "n"}."""
    each = rouge_each(hypotheses, references)
    return {key: sum(values) / len(values) for key, values in each.items()} | {"n": len(hypotheses)}


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation (Rajpurkar et al. 2016): lowercase, drop ASCII punctuation, drop the
    articles a / an / the, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def exact_match_each(hypotheses: list[str], references: list[str]) -> list[float]:
    """1.0 where a hypothesis equals its reference after normalize_answer (SQuAD exact match), else 0.0."""
    _check_pairs(hypotheses, references)
    pairs = zip(hypotheses, references, strict=True)
    return [float(normalize_answer(h) == normalize_answer(r)) for h, r in pairs]


def exact_match(hypotheses: list[str], references: list[str]) -> float:
    """Share of hypotheses equal to their reference after normalize_answer (SQuAD exact match), 0-1."""
    return sum(exact_match_each(hypotheses, references)) / len(hypotheses)


def word_f1_each(hypotheses: list[str], references: list[str]) -> list[float]:
    """SQuAD token F1 (Rajpurkar et al. 2016) of each example, 0-1: the words of normalize_answer (split on
    whitespace) as bags, overlap = sum of min counts, F1 of overlap / hypothesis words and overlap / reference
    words. Two texts with no words score 1, one of them alone 0. Compare token_prf, on code tokens."""
    _check_pairs(hypotheses, references)
    scores = []
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp = Counter(normalize_answer(hypothesis).split())
        ref = Counter(normalize_answer(reference).split())
        overlap = sum((hyp & ref).values())
        if not hyp or not ref:
            scores.append(float(hyp == ref))
        elif overlap:
            precision, recall = overlap / sum(hyp.values()), overlap / sum(ref.values())
            scores.append(2 * precision * recall / (precision + recall))
        else:
            scores.append(0.0)
    return scores


def word_f1(hypotheses: list[str], references: list[str]) -> float:
    """word_f1_each averaged over examples."""
    return sum(word_f1_each(hypotheses, references)) / len(hypotheses)


def corpus_chrf(hypotheses: list[str], references: list[str]) -> float:
    """Corpus chrF (Popović 2015) on a 0-100 scale, one reference per hypothesis, sacrebleu defaults (as
    `sacrebleu -m chrf`): character n-grams of orders 1-6 with whitespace removed, no word n-grams, beta = 2
    (recall twice as important as precision), case-sensitive, match counts summed over the corpus."""
    import sacrebleu

    _check_pairs(hypotheses, references)
    return float(sacrebleu.corpus_chrf(hypotheses, [references]).score)


def perplexity(loss_sum: float, n_tokens: int) -> float:
    """exp(loss_sum / n_tokens), the perplexity of a summed token cross-entropy (in nats); inf when that
    overflows or the loss is inf (NaN stays NaN). No tokens is a ValueError."""
    if n_tokens <= 0:
        raise ValueError(f"perplexity needs at least one token, got {n_tokens}")
    try:
        return math.exp(loss_sum / n_tokens)
    except OverflowError:
        return math.inf


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

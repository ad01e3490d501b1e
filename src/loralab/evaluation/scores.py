"""Test metrics together with their per-example statistics (evaluation.uncertainty.Statistic), so that every
figure can get a bootstrap interval and two runs can be tested against each other example by example.

text_metrics        the chosen text metrics by name (METRIC_NAMES), each computed from its statistic
text_statistics     those statistics
classification_statistics   accuracy, macro P/R/F1 and the invalid rate as statistics
perplexity_statistics       loss and perplexity from each text's summed loss and token count
pass_statistics             pass@k over problems
examples_digest     a name for an ordered set of test examples, to check that two runs saw the same ones
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np

from loralab.evaluation.metrics import (
    METRIC_NAMES,
    exact_match_each,
    pass_at_k,
    rouge_each,
    token_prf_each,
    word_f1_each,
)
from loralab.evaluation.uncertainty import Statistic, mean_statistic


def examples_digest(items: Sequence[object]) -> str:
    """A short digest of the test examples in order (their JSON), the same for two runs on the same data."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps(item, sort_keys=True, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def _sacrebleu_statistics(kind: str, hypotheses: list[str], references: list[str]) -> np.ndarray:
    """Per-sentence counts that sacrebleu pools into corpus BLEU or chrF (its paired test uses the same)."""
    from sacrebleu.metrics import BLEU, CHRF

    metric = BLEU() if kind == "bleu" else CHRF()
    return np.array(metric._extract_corpus_statistics(hypotheses, [references]), dtype=np.float64)


def text_statistics(
    names: Sequence[str], hypotheses: list[str], references: list[str], examples: str = ""
) -> dict[str, Statistic]:
    """The statistic of each metric in `names` (from METRIC_NAMES); code_token_f1 brings code_token_precision
    and code_token_recall. An unknown name is a ValueError."""
    unknown = [name for name in names if name not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown text metric {', '.join(unknown)}; choose from {', '.join(METRIC_NAMES)}")
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(f"{len(hypotheses)} hypotheses and {len(references)} references: need as many, > 0")
    result: dict[str, Statistic] = {}
    for name in names:
        if name == "exact_match":
            result[name] = mean_statistic(exact_match_each(hypotheses, references), examples)
        elif name == "token_f1":
            result[name] = mean_statistic(word_f1_each(hypotheses, references), examples)
        elif name in ("bleu", "bleu_batched16", "chrf"):
            kind = "chrf" if name == "chrf" else "bleu"
            result[name] = Statistic(_sacrebleu_statistics(kind, hypotheses, references), name, examples)
        elif name == "code_token_f1":
            for key, values in token_prf_each(hypotheses, references).items():
                result[f"code_token_{key}"] = mean_statistic(values, examples)
    wanted = [name for name in ("rougeL", "rougeLsum") if name in names]
    if wanted:
        each = rouge_each(hypotheses, references)
        result |= {name: mean_statistic(each[name], examples) for name in wanted}
    return result


def text_metrics(names: Sequence[str], hypotheses: list[str], references: list[str]) -> dict:
    """The metrics `names` (from METRIC_NAMES) of hypotheses against references, as a flat dict plus "n".

    exact_match (0-1) and token_f1 (word_f1, 0-1): SQuAD-normalised words. bleu and bleu_batched16 (0-100):
    sacrebleu's 13a tokens (bleu_batched16 is batched_bleu over batches of 16, only to match old reports).
    chrf (0-100): characters. rougeL and rougeLsum (0-1): rouge-score's stemmed lowercase words. code_token_f1
    (0-1): code_tokens, with code_token_precision and code_token_recall beside it. An unknown name is a
    ValueError.
    """
    statistics = text_statistics(names, hypotheses, references)
    return {name: statistic.value() for name, statistic in statistics.items()} | {"n": len(hypotheses)}


def rouge_statistics(
    hypotheses: list[str], references: list[str], examples: str = ""
) -> dict[str, Statistic]:
    """rouge1, rouge2, rougeL and rougeLsum of each example, as mean statistics."""
    return {key: mean_statistic(v, examples) for key, v in rouge_each(hypotheses, references).items()}


def classification_statistics(
    expected: list[int], predicted: list[int | None], n_classes: int, examples: str = ""
) -> dict[str, Statistic]:
    """accuracy, invalid_rate and macro precision / recall / F1 (the definitions of
    metrics.classification_metrics) as statistics; a prediction of None is wrong and invalid."""
    n = len(expected)
    eye = np.eye(n_classes)
    truth = eye[np.asarray(expected, dtype=int)].reshape(n, n_classes)
    valid = np.array([p is not None for p in predicted])
    guess = np.zeros((n, n_classes))
    guess[valid] = eye[np.array([p for p in predicted if p is not None], dtype=int)]
    rows = np.concatenate([truth, guess, truth * guess], axis=1)
    correct = (truth * guess).sum(axis=1)
    result = {
        "accuracy": mean_statistic(correct, examples),
        "invalid_rate": mean_statistic(~valid, examples),
    }
    for key in ("macro_f1", "macro_precision", "macro_recall"):
        result[key] = Statistic(rows, key, examples)
    return result


def perplexity_statistics(
    loss_sums: list[float], tokens: list[int], examples: str = ""
) -> dict[str, Statistic]:
    """loss (per token) and perplexity, resampled by text: rows of (summed loss, tokens)."""
    rows = np.stack([np.asarray(loss_sums, dtype=np.float64), np.asarray(tokens, dtype=np.float64)], axis=1)
    return {
        "loss": Statistic(rows, "mean_loss", examples),
        "perplexity": Statistic(rows, "perplexity", examples),
    }


def pass_statistics(
    name: str, passed: list[int], samples: int, ks: Sequence[int], examples: str = ""
) -> dict[str, Statistic]:
    """f"{name}.pass@k" for each k: the unbiased pass@k of each problem (Chen et al. 2021), averaged over
    problems, so the interval is over problems."""
    return {
        f"{name}.pass@{k}": mean_statistic([pass_at_k(samples, c, k) for c in passed], examples) for k in ks
    }

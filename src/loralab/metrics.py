"""Task metrics. Classification: accuracy, per-class precision / recall / F1, invalid rate."""

from __future__ import annotations


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

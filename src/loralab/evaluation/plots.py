"""Plots of evaluation results: the confusion matrix of a classification (metrics.classification_metrics)."""

from __future__ import annotations

from pathlib import Path

from loralab.files import write_atomically

# Cells get their count written in them up to this many classes; beyond, the figure would be unreadable.
MAX_ANNOTATED_CLASSES = 20


def _check_confusion(confusion: dict) -> tuple[list[str], list[list[int]]]:
    labels, matrix = list(confusion["labels"]), [list(row) for row in confusion["matrix"]]
    if not labels or len(matrix) != len(labels) or any(len(row) != len(labels) + 1 for row in matrix):
        raise ValueError(
            f"a confusion matrix of {len(labels)} labels needs {len(labels)} rows of {len(labels) + 1} "
            "counts (the last for invalid predictions)"
        )
    return labels, matrix


def plot_confusion(confusion: dict, path: Path, title: str) -> None:
    """A heatmap PNG of `confusion` ({"labels", "matrix"} as classification_metrics returns it): rows are the
    expected label, columns the predicted label then "invalid" (no label). The colour is each cell's share of
    its row (the recall of the class on the diagonal), so rare and common classes read alike; the counts are
    written in the cells when there are at most MAX_ANNOTATED_CLASSES classes. The figure grows with the
    number of classes (every label is ticked, in 6 pt type past 20). Written atomically: a failure leaves
    no partial file at `path`.
    """
    labels, matrix = _check_confusion(confusion)
    # Imported here: matplotlib takes about a second to load and only runs that plot need it. Agg draws to
    # files without a display (servers, CI).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    columns = [*labels, "invalid"]
    shares = [[count / max(sum(row), 1) for count in row] for row in matrix]
    font = 9 if n <= MAX_ANNOTATED_CLASSES else 6  # 6 pt fits the 0.16 inch a row gets below
    side = max(4.5, 0.45 * n + 2.5) if n <= MAX_ANNOTATED_CLASSES else 0.16 * n + 4
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    try:
        image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="share of the expected label's examples")
        ax.set_xticks(range(n + 1), columns, rotation=90, fontsize=font)
        ax.set_yticks(range(n), labels, fontsize=font)
        ax.set_xlabel("predicted")
        ax.set_ylabel("expected")
        ax.set_title(title)
        if n <= MAX_ANNOTATED_CLASSES:
            for r, row in enumerate(matrix):
                for c, count in enumerate(row):
                    colour = "white" if shares[r][c] > 0.5 else "black"
                    ax.text(c, r, str(count), ha="center", va="center", fontsize=font, color=colour)
        fig.tight_layout()
        write_atomically(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    finally:
        plt.close(fig)

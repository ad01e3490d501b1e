import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from loralab.evaluation.metrics import classification_metrics
from loralab.evaluation.plots import plot_confusion

PNG_HEADER = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def drawn(monkeypatch):
    """Per saved figure: the texts written in the heatmap's cells and the x tick labels."""
    saved = []
    original = Figure.savefig

    def spy(self, *args, **kwargs):
        axes = self.axes[0]
        saved.append(
            {"cells": [t.get_text() for t in axes.texts], "x": [t.get_text() for t in axes.get_xticklabels()]}
        )
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return saved


def test_two_classes_written_as_png_with_counts(tmp_path, drawn):
    confusion = classification_metrics([0, 0, 1, 1, 1], [0, 1, 1, None, 1], ["negative", "positive"])[
        "confusion"
    ]
    path = tmp_path / "confusion.png"
    plot_confusion(confusion, path, "test set")
    assert path.read_bytes()[:8] == PNG_HEADER
    assert [p.name for p in tmp_path.iterdir()] == ["confusion.png"]  # no temp file left
    assert drawn[0]["x"] == ["negative", "positive", "invalid"]
    assert drawn[0]["cells"] == ["1", "1", "0", "0", "2", "1"]  # row by row, the invalid column last


def test_many_classes_get_a_bigger_figure_and_no_counts(tmp_path, drawn):
    labels = [f"intent_number_{i}_with_a_long_name" for i in range(77)]
    expected = [i % 77 for i in range(300)]
    predicted = [(i * 7) % 77 if i % 5 else None for i in range(300)]
    confusion = classification_metrics(expected, predicted, labels)["confusion"]
    small = tmp_path / "small.png"
    plot_confusion({"labels": ["a", "b"], "matrix": [[1, 0, 0], [0, 1, 0]]}, small, "two")
    big = tmp_path / "big.png"
    plot_confusion(confusion, big, "banking77")
    assert big.read_bytes()[:8] == PNG_HEADER
    assert imread(big).shape[1] > 2 * imread(small).shape[1]
    assert drawn[1]["cells"] == [] and len(drawn[1]["x"]) == 78  # every label ticked, plus "invalid"


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    path = tmp_path / "confusion.png"
    path.write_bytes(b"old")

    def broken(self, target, *args, **kwargs):
        with open(target, "wb") as handle:
            handle.write(PNG_HEADER)  # half a file, then the failure
        raise OSError("disk on fire")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk on fire"):
        plot_confusion({"labels": ["a", "b"], "matrix": [[1, 0, 0], [0, 1, 0]]}, path, "t")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["confusion.png"]


def test_a_malformed_matrix_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="2 rows of 3 counts"):
        plot_confusion({"labels": ["a", "b"], "matrix": [[1, 0], [0, 1]]}, tmp_path / "c.png", "t")
    assert list(tmp_path.iterdir()) == []

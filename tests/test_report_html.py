"""The HTML report (reporting/html.py) and its figures (reporting/plots.py): escaping, self-containment, the
plots' content, and the page as a real headless Chromium (Debian's package, driven by playwright) renders it:
the table, the decoded images, no console errors, no network request, a screenshot."""

from __future__ import annotations

import os
import shutil
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from loralab.reporting.content import ReportContent
from loralab.reporting.html import write_html
from loralab.reporting.plots import plot_cost_quality, plot_loss_bands, plot_metric_bars

PNG_HEADER = b"\x89PNG\r\n\x1a\n"
INJECTED = '<script>console.error("injected")</script>'
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Each image drawn to a canvas: its size and the sums of its R, G, B and A bytes, to compare with the PNG's
# own pixels (a PNG cut short still gets its width decoded, and Chromium draws what it has without an error).
PIXEL_SUMS = """imgs => imgs.map(img => {
  const canvas = Object.assign(document.createElement("canvas"), {width: img.naturalWidth, height: img.naturalHeight});
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data, sums = [0, 0, 0, 0];
  for (let k = 0; k < data.length; k++) sums[k % 4] += data[k];
  return [canvas.width, canvas.height, sums];
})"""
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr", "col", "area", "base", "embed", "track"}


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_HEADER
    return struct.unpack(">II", data[16:24])


def pixel_sums(path: Path) -> list:
    """As PIXEL_SUMS computes it in the browser, from the PNG file."""
    pixels = np.round(imread(path) * 255).astype(np.int64)
    return [pixels.shape[1], pixels.shape[0], pixels.sum(axis=(0, 1)).tolist()]


def curve(seed: int, steps=(10, 20, 30, 40)) -> list[tuple[int, float]]:
    return [(step, 2.0 / (1 + step / 10) + 0.05 * seed) for step in steps]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[ReportContent, Path]:
    """Real figures from small synthetic series (2 methods x 3 seeds) and a report with a failed row."""
    out = tmp_path_factory.mktemp("report")
    series = {"lora": [curve(s) for s in range(3)], "full": [curve(s + 3) for s in range(3)]}
    plot_loss_bands(series, out / "val_loss.png", "validation loss", "loss per answer token")
    plot_metric_bars([("lora", 0.85, 0.83, 0.87), ("full", 0.86, 0.84, 0.88)], "accuracy", out / "bars.png")
    points = [
        {"name": "lora", "trainable_params": 10_000, "peak_memory_mb": 900.0, "time_per_epoch_s": 30.0},
        {"name": "full", "trainable_params": 1_000_000, "peak_memory_mb": 1500.0, "time_per_epoch_s": None},
    ]
    points = [{**p, "value": 0.85, "low": 0.83, "high": 0.87} for p in points]
    plot_cost_quality(points, "accuracy", out / "cost.png")
    content = ReportContent(
        title="Comparison: lora & full",
        intro=["Task rotten_tomatoes, 3 seeds per method.", "Intervals are 95% bootstrap intervals."],
        header=["run", "method", "accuracy", "trainable params"],
        rows=[
            ["lora_r8", "lora", "0.850 [0.830, 0.870]", "10,000"],
            ["full", "full", "0.860 [0.840, 0.880]", "1,000,000"],
            ["lora_r64", "lora", "failed: out of memory", INJECTED],
        ],
        failed=[2],
        statements=["full and lora_r8 do not differ (p = 0.41, paired bootstrap)."],
        figures=[
            ("validation loss, mean and min-max over seeds", out / "val_loss.png"),
            ("accuracy with 95% intervals", out / "bars.png"),
            ("accuracy against cost", out / "cost.png"),
        ],
        notes=["Peak memory: the peak resident set while training."],
    )
    path = out / "report.html"
    write_html(content, path)
    return content, path


@pytest.fixture
def drawn(monkeypatch) -> list[list]:
    """The axes of every figure saved while the test runs."""
    saved = []
    original = Figure.savefig

    def spy(self, *args, **kwargs):
        saved.append(list(self.axes))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return saved


# --- without a browser ---------------------------------------------------------------------------------------


class TagBalance(HTMLParser):
    """Every opened tag closed in order (void elements excepted)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_the_file_is_self_contained_html5(report):
    content, path = report
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>\n") and '<meta charset="utf-8">' in text
    assert "http://" not in text and "https://" not in text
    assert text.count('src="data:image/png;base64,') == len(content.figures)
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left
    parser = TagBalance()
    parser.feed(text)
    assert parser.errors == [] and parser.stack == []


def test_every_text_is_escaped(report):
    text = report[1].read_text(encoding="utf-8")
    assert "<script" not in text
    assert "&lt;script&gt;console.error(&quot;injected&quot;)&lt;/script&gt;" in text
    assert "<title>Comparison: lora &amp; full</title>" in text


def test_plots_write_pngs(report):
    for _, png in report[0].figures:
        width, height = png_size(png)
        assert width > 300 and height > 300


def test_several_seeds_draw_the_mean_and_a_min_max_band(tmp_path, drawn):
    seeds = [curve(0), curve(1), curve(2, steps=(10, 20, 30))]  # the third seed stops one step early
    plot_loss_bands({"lora": seeds, "full": [curve(5)]}, tmp_path / "loss.png", "val", "loss")
    (ax,) = drawn[0]
    (band,) = ax.collections  # one band: lora's; full has one seed
    band_y = band.get_paths()[0].vertices[:, 1]
    common = [value for c in seeds for step, value in c if step <= 30]
    assert band_y.min() == pytest.approx(min(common)) and band_y.max() == pytest.approx(max(common))
    mean, single = ax.lines
    assert mean.get_label() == "lora (3 seeds)" and single.get_label() == "full"
    assert list(mean.get_xdata()) == [10, 20, 30]  # the steps all seeds have
    assert list(mean.get_ydata()) == pytest.approx([sum(c[i][1] for c in seeds) / 3 for i in range(3)])
    assert list(single.get_xdata()) == [10, 20, 30, 40]


def test_bars_have_error_bars_only_where_an_interval_is_given(tmp_path, drawn):
    path = tmp_path / "bars.png"
    plot_metric_bars([("a", 0.5, 0.4, 0.6), ("b", 0.7, None, None), ("c", 0.6, 0.5, 0.65)], "f1", path)
    assert path.read_bytes()[:8] == PNG_HEADER
    (ax,) = drawn[0]
    caps = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    spans = sorted(tuple(sorted(cap.get_ydata()[0] for cap in c.lines[1])) for c in caps)  # (low, high) caps
    assert spans == [(0.4, 0.6), (0.5, 0.65)]
    assert [t.get_text() for t in ax.texts] == ["0.5", "0.7", "0.6"]


def test_cost_quality_leaves_out_a_missing_cost(tmp_path, drawn):
    points = [
        {"name": "a", "trainable_params": 100, "peak_memory_mb": 10.0, "time_per_epoch_s": 1.0, "value": 0.5},
        {
            "name": "b",
            "trainable_params": 10_000,
            "peak_memory_mb": 20.0,
            "time_per_epoch_s": None,
            "value": 0.6,
        },
    ]
    points = [{**p, "low": None, "high": None} for p in points]
    plot_cost_quality(points, "accuracy", tmp_path / "cost.png")
    params, memory, time = drawn[0]
    assert params.get_xscale() == "log" and memory.get_xscale() == "linear"
    assert [t.get_text() for t in params.texts] == ["a", "b"] and [t.get_text() for t in time.texts] == ["a"]


# --- in a real headless Chromium --------------------------------------------------------------------------------


def _chromium_or_skip() -> tuple[object, str]:
    """playwright's sync API and Debian's chromium; in CI (CI=true) a missing one fails, elsewhere it skips."""
    problem, executable = None, shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "playwright is not installed"
    if executable is None:
        problem = "Debian's chromium is not installed"
    if problem is None:
        return sync_playwright, executable
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI must test the HTML report in a browser, but {problem}")
    pytest.skip(f"{problem}; to run this test: apt-get install chromium && pip install -e .[dev]")


def test_chromium_renders_the_report(report, tmp_path):
    sync_playwright, executable = _chromium_or_skip()
    content, path = report
    url = path.resolve().as_uri()
    problems, requests = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.route("**/*", lambda r: r.continue_() if r.request.url == url else r.abort())
            page.goto(url, wait_until="load")

            assert page.locator("thead th").all_inner_texts() == content.header
            assert page.locator("tbody tr").count() == len(content.rows)
            assert page.locator("tbody tr.failed").count() == 1
            assert page.locator("tbody tr.failed td").last.inner_text() == INJECTED  # shown as text
            background = "el => getComputedStyle(el).backgroundColor"
            assert page.locator("tbody tr").nth(0).locator("td").first.evaluate(background) != (
                page.locator("tbody tr.failed td").first.evaluate(background)
            )
            assert page.locator("li").all_inner_texts() == content.statements
            assert page.locator("figcaption").all_inner_texts() == [c for c, _ in content.figures]
            decoded = page.locator("img").evaluate_all(PIXEL_SUMS)
            assert decoded == [pixel_sums(png) for _, png in content.figures]  # every pixel decoded

            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            seen_requests, seen_problems = list(requests), list(problems)

            # the checks can fail: an external reference is seen (and blocked) and errors in the console
            page.set_content('<img src="http://127.0.0.1:9/x.png">', wait_until="load")
            assert "http://127.0.0.1:9/x.png" in requests and len(problems) > len(seen_problems)
        finally:
            browser.close()
    assert [u for u in seen_requests if u != url and not u.startswith("data:")] == []
    assert seen_problems == []
    width, height = png_size(shot)
    assert width >= 600 and height > 3 * 300  # the table and three figures, one under the other
    assert shot.stat().st_size > 50_000

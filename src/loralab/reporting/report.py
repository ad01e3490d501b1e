"""The comparison report of several runs: report.md and a self-contained report.html, with PNG plots.

report.md / .html  one row per setting (its seeds together): method, settings, trainable params and % of total,
                   peak memory, time per epoch, best validation loss and the task's test metrics, each with
                   its 95% bootstrap interval (one seed) or mean ± std over seeds; failed runs with their
                   error; per-seed values; the paired tests of the main metric in words (reporting.groups)
val_loss.png       validation-loss curves (the band spans the seeds)
train_loss.png     training-loss curves
metric.png         the main test metric per setting with its interval (or range over seeds)
cost_quality.png   the main metric against trainable parameters, peak memory and time per epoch
"""

from __future__ import annotations

import statistics as stats
from pathlib import Path

from loralab.errors import UserError
from loralab.evaluation.uncertainty import load_statistics, metric_value
from loralab.files import read_json_object, write_text_atomically
from loralab.reporting.compare import read_error
from loralab.reporting.content import ReportContent
from loralab.reporting.groups import (
    Group,
    cell,
    compare_groups,
    group_runs,
    pairs_to_test,
    spread,
)
from loralab.reporting.html import write_html
from loralab.reporting.plots import plot_cost_quality, plot_loss_bands, plot_metric_bars
from loralab.tasks import get_task
from loralab.training.run_files import read_metrics

# the settings that matter for each method (the rest is shared by all runs of a comparison)
METHOD_SETTINGS = {
    "lora": ("rank", "alpha", "target_modules", "lora_variant", "use_rslora", "init", "loraplus_lr_ratio"),
    "qlora": ("rank", "alpha", "target_modules", "lora_variant", "nf4_double_quant"),
    "full": (),
    "last_layers": ("n_layers", "train_head", "train_embeddings", "train_layer_norms"),
    "prompt_tuning": ("n_virtual_tokens",),
    "distill": ("student", "teacher", "distill_alpha", "distill_temperature"),
}


QUIET_DEFAULTS = {"init": ("kaiming",), "loraplus_lr_ratio": (0, 1)}  # settings that are not shown


def load_run(folder: Path) -> dict:
    """{name, config, summary (or None), error (or None), metrics (metrics.jsonl lines)}."""
    folder = Path(folder)
    error = read_error(folder)
    config_path = folder / "config.json"
    if error is None and not config_path.is_file():
        raise UserError(
            f"{folder} is not a loralab run folder (no config.json); pass folders `loralab train` wrote"
        )
    damaged = "train that run again, or leave its folder out"
    config = (
        read_json_object(config_path, "a run config", damaged) if config_path.is_file() else error["config"]
    )
    summary_path = folder / "summary.json"
    has_summary = summary_path.is_file() and error is None
    summary = read_json_object(summary_path, "a run summary", damaged) if has_summary else None
    if summary is None and error is None:
        error = {"error": "unfinished (no summary.json): resume it with the same command"}
    return {
        "name": folder.name,
        "config": config,
        "summary": summary,
        "error": error and error["error"],
        "metrics": read_metrics(folder / "metrics.jsonl"),
        "statistics": load_statistics(folder / "test_statistics.safetensors") if summary else {},
    }


def _settings(config: dict) -> str:
    keys = METHOD_SETTINGS.get(config["method"], ())

    def worth_showing(key: str, value: object) -> bool:  # off flags, empty values and defaults say nothing
        return (
            value is not False and value not in ("", [], "lora") and value not in QUIET_DEFAULTS.get(key, ())
        )

    parts = [f"{k}={config[k]}" for k in keys if k in config and worth_showing(k, config[k])]
    return ", ".join([*parts, f"lr={config['lr']:g}"])


def _number(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _mean_of(group: Group, key: str) -> float | None:
    found = [run["summary"].get(key) for run in group.done]
    found = [v for v in found if v is not None]
    return stats.mean(found) if found else None


def _row(group: Group, metric_keys: tuple[str, ...], seeded: bool) -> list[str]:
    config = group.runs[0]["config"]
    cells = [group.name, config["method"], _settings(config)]
    if seeded:
        cells.append(
            str(len(group.done))
            if len(group.done) == len(group.runs)
            else f"{len(group.done)} of {len(group.runs)}"
        )
    if not group.done:
        return [*cells, f"failed: {group.runs[0]['error']}"]
    summary = group.done[0]["summary"]
    return [
        *cells,
        f"{summary['trainable_params']:,}",
        f"{summary['trainable_percent']:.3f}",
        f"{_mean_of(group, 'peak_memory_mb'):,.0f}",
        _number(_mean_of(group, "time_per_epoch_s"), 1),
        _number(_mean_of(group, "best_val_loss")),
        *(cell(group, key) for key in metric_keys),
    ]


def _seed_rows(groups: list[Group], metric_keys: tuple[str, ...]) -> list[str]:
    """Markdown lines of the per-seed table (every run with its own interval)."""
    head = ["run", "seed", *metric_keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group in groups:
        for run in group.runs:
            if run["summary"] is None:
                cells = [f"failed: {run['error']}"]
            else:
                cells = [cell(Group(run["name"], [run]), key) for key in metric_keys]
            lines.append(
                "| " + " | ".join([group.name, str(run["config"]["seed"]), *cells]).replace("\n", " ") + " |"
            )
    return lines


def _plots(groups: list[Group], main: str, out: Path, seeded: bool) -> list[tuple[str, Path]]:
    for key, title in (("val_loss", "validation loss"), ("train_loss", "training loss")):
        series = {
            g.name: [[(r["step"], r[key]) for r in run["metrics"] if key in r] for run in g.runs]
            for g in groups
        }
        plot_loss_bands(series, out / f"{key}.png", title, key.replace("_", " "))
    bars = [(g.name, *found) for g in groups if (found := spread(g, main)) is not None]
    how = "mean over seeds, bars from the lowest to the highest seed" if seeded else "95% bootstrap interval"
    plot_metric_bars(bars, f"test {main}", out / "metric.png")
    points = [
        {
            "name": name,
            "value": value,
            "low": low,
            "high": high,
            "trainable_params": group.done[0]["summary"]["trainable_params"],
            "peak_memory_mb": _mean_of(group, "peak_memory_mb"),
            "time_per_epoch_s": _mean_of(group, "time_per_epoch_s"),
        }
        for group in groups
        for name, value, low, high in bars
        if name == group.name
    ]
    plot_cost_quality(points, main, out / "cost_quality.png")
    band = " (the band spans the seeds)" if seeded else ""
    return [
        (f"Validation loss per optimizer step{band}.", out / "val_loss.png"),
        (f"Training loss per logged step{band}.", out / "train_loss.png"),
        (f"Test {main} per setting ({how}).", out / "metric.png"),
        (
            f"Test {main} against trainable parameters, peak memory and time per epoch ({how}).",
            out / "cost_quality.png",
        ),
    ]


def build_content(runs: list[dict], title: str, out: Path) -> ReportContent:
    """The report's text, table, statements and figures (the PNGs are written into `out`)."""
    task = get_task(runs[0]["config"]["task"])
    groups = group_runs(runs)
    seeded = any(len(g.runs) > 1 for g in groups)
    used = (
        tuple(
            k
            for k in task.report_metrics
            if any(r["summary"] and metric_value(r["summary"]["metrics"], k) is not None for r in runs)
        )
        or task.report_metrics[:1]
    )
    main = used[0]
    first = runs[0]["config"]
    seeds = sorted({r["config"]["seed"] for r in runs})
    n_test = next((r["summary"]["metrics"].get("n") for r in runs if r["summary"]), None)
    resamples = first.get("bootstrap_resamples", 1000)
    intro = [
        f"Task {first['task']} ({first['dataset']}), model {first['model']}, seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))}, max_train_samples {first['max_train_samples'] or 'all'}, epochs "
        f"{first['epochs']}, max_steps {first['max_steps'] or 'by epochs'}, batch size {first['batch_size']} × "
        f"grad_accum {first['grad_accum']}, max_length {first['max_length']}"
        + (f", {n_test:,} test examples." if n_test else "."),
        (
            "Each test metric is given as mean ± standard deviation over seeds (the per-seed values and their "
            "intervals are below). "
            if seeded
            else "Each test metric is given with its 95% interval: a percentile bootstrap over the test examples "
            f"({resamples:,} resamples). "
        )
        + "An interval says how much the figure would move on another test set of this size; the spread "
        "over seeds says how much it moves with another training run.",
    ]
    header = ["run", "method", "settings", *(["seeds"] if seeded else []), "trainable params", "% of total",
              "peak memory (MB)", "time / epoch (s)", "best val loss", *used]  # fmt: skip
    rows = [_row(g, used, seeded) for g in groups]
    failed = [i for i, g in enumerate(groups) if not g.done]
    statements = [compare_groups(a, b, main, resamples) for a, b in pairs_to_test(groups, main)]
    notes = [
        "Peak memory: the peak resident set (CPU) or allocated memory (GPU) while training and validating, the "
        "loaded model included (the peak of loading it is not counted). compare and sweep train each run in "
        "its own process.",
        f"The statements test {main}, paired example by example on the same test set: McNemar's exact test for a "
        "share of right answers, a paired bootstrap otherwise. Each is one test at the 5% level with no "
        "correction for multiple comparisons: among many pairs, about 1 in 20 true non-differences will look "
        "significant.",
    ]
    return ReportContent(
        title, intro, header, rows, failed, statements, _plots(groups, main, out, seeded), notes
    )


def markdown(content: ReportContent, extra: list[str] | None = None) -> str:
    """report.md: the same content as report.html, with the figures as image links beside it."""
    lines = [f"# {content.title}", "", *(p + "\n" for p in content.intro)]
    lines += ["| " + " | ".join(content.header) + " |", "|" + "---|" * len(content.header)]
    for i, row in enumerate(content.rows):
        cells = [c.replace("|", "/").replace("\n", " ") for c in row]
        if i in content.failed:
            cells[-1] = cells[-1].replace("failed:", "**failed**:", 1)
            cells += [""] * (len(content.header) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if extra:
        lines += [*extra, ""]
    if content.statements:
        lines += ["## What differs and what does not", "", *(f"- {s}" for s in content.statements), ""]
    lines += [*(p + "\n" for p in content.notes)]
    lines += [f"![{caption}]({path.name})\n" for caption, path in content.figures]
    return "\n".join(lines)


def write_report(folders: list[Path], out: Path, title: str = "Comparison") -> Path:
    """Write report.md, report.html and the plots for these run folders into `out`; return report.md's path."""
    if not folders:
        raise UserError("no run folders given; pass the folders `loralab train`, compare or sweep wrote")
    runs = [load_run(Path(f)) for f in folders]
    tasks = {run["config"]["task"] for run in runs}
    if len(tasks) > 1:
        raise UserError(
            f"the runs are of different tasks ({', '.join(sorted(tasks))}); report one task at a time"
        )
    out.mkdir(parents=True, exist_ok=True)
    content = build_content(runs, title, out)
    groups = group_runs(runs)
    extra = None
    if any(len(g.runs) > 1 for g in groups):
        used = [h for h in content.header[content.header.index("best val loss") + 1 :]]
        extra = ["## Per seed", "", *_seed_rows(groups, tuple(used))]
    path = out / "report.md"
    write_text_atomically(path, markdown(content, extra))
    write_html(content, out / "report.html")
    return path

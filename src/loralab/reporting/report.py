"""The comparison report of several runs: report.md with one table, and PNG plots beside it.

report.md          run / method / settings, trainable params and % of total, peak memory, time per epoch,
                   best validation loss, the task's test metrics; failed runs with their error
val_loss.png       validation-loss curves of all runs on one figure
train_loss.png     training-loss curves
bars.png           trainable parameters, peak memory, time per epoch and the main test metric, per run
"""

from __future__ import annotations

from pathlib import Path

from loralab.errors import UserError
from loralab.files import read_json_object, write_text_atomically
from loralab.reporting.compare import read_error
from loralab.tasks import get_task
from loralab.training.run_files import read_metrics

# the settings that matter for each method (the rest is shared by all runs of a comparison)
METHOD_SETTINGS = {
    "lora": ("rank", "alpha", "target_modules", "lora_variant", "use_rslora"),
    "qlora": ("rank", "alpha", "target_modules", "lora_variant", "nf4_double_quant"),
    "full": (),
    "last_layers": ("n_layers", "train_head", "train_embeddings", "train_layer_norms"),
    "prompt_tuning": ("n_virtual_tokens",),
    "distill": ("student", "teacher", "distill_alpha", "distill_temperature"),
}


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
    }


def metric_value(metrics: dict, dotted: str) -> float | None:
    value: object = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, int | float) else None


def _settings(config: dict) -> str:
    keys = METHOD_SETTINGS.get(config["method"], ())

    def worth_showing(value: object) -> bool:  # off flags, empty values and plain "lora" say nothing
        return value is not False and value not in ("", [], "lora")

    parts = [f"{k}={config[k]}" for k in keys if k in config and worth_showing(config[k])]
    return ", ".join([*parts, f"lr={config['lr']:g}"])


def _number(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(runs: list[dict], metric_keys: tuple[str, ...]) -> str:
    head = [
        "run",
        "method",
        "settings",
        "trainable params",
        "% of total",
        "peak memory (MB)",
        "time / epoch (s)",
        "best val loss",
        *metric_keys,
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        config, summary = run["config"], run["summary"]
        cells = [run["name"], config["method"], _settings(config)]
        if summary is None:
            cells += [f"**failed**: {run['error']}".replace("|", "/")] + [""] * (len(head) - 4)
        else:
            cells += [
                f"{summary['trainable_params']:,}",
                f"{summary['trainable_percent']:.3f}",
                f"{summary['peak_memory_mb']:,.0f}",
                _number(summary.get("time_per_epoch_s"), 1),
                _number(summary["best_val_loss"]),
                *(_number(metric_value(summary["metrics"], key)) for key in metric_keys),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot_curves(runs: list[dict], key: str, path: Path, title: str) -> None:
    import matplotlib  # imported here: plotting is the last step of a run, and matplotlib is slow to load

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        points = [(r["step"], r[key]) for r in run["metrics"] if key in r]
        if points:
            ax.plot(
                *zip(*points, strict=True),
                marker="o" if key == "val_loss" else None,
                markersize=3,
                label=run["name"],
                linewidth=1.2,
            )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_bars(runs: list[dict], main_metric: str, path: Path) -> None:
    import matplotlib  # imported here: plotting is the last step of a run, and matplotlib is slow to load

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [run for run in runs if run["summary"] is not None]
    panels = [
        ("trainable parameters", lambda s: s["trainable_params"], True),
        ("peak memory (MB)", lambda s: s["peak_memory_mb"], False),
        ("time per epoch (s)", lambda s: s.get("time_per_epoch_s") or 0, False),
        (f"test {main_metric}", lambda s: metric_value(s["metrics"], main_metric) or 0, False),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    names = [run["name"] for run in done]
    for ax, (label, value, log_scale) in zip(axes, panels, strict=True):
        ax.bar(names, [value(run["summary"]) for run in done], color="tab:blue")
        ax.set_title(label)
        if log_scale:
            ax.set_yscale("log")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(folders: list[Path], out: Path, title: str = "Comparison") -> Path:
    """Write report.md and the plots for these run folders into `out`; return the report's path."""
    if not folders:
        raise UserError("no run folders given; pass the folders `loralab train`, compare or sweep wrote")
    runs = [load_run(Path(f)) for f in folders]
    tasks = {run["config"]["task"] for run in runs}
    if len(tasks) > 1:
        raise UserError(
            f"the runs are of different tasks ({', '.join(sorted(tasks))}); report one task at a time"
        )
    task = get_task(tasks.pop())
    out.mkdir(parents=True, exist_ok=True)
    _plot_curves(runs, "val_loss", out / "val_loss.png", "validation loss")
    _plot_curves(runs, "train_loss", out / "train_loss.png", "training loss")
    first = runs[0]["config"]
    shared = (
        f"Task {first['task']} ({first['dataset']}), model {first['model']}, seed {first['seed']}, "
        f"max_train_samples {first['max_train_samples'] or 'all'}, epochs {first['epochs']}, "
        f"max_steps {first['max_steps'] or 'by epochs'}, batch size {first['batch_size']} × grad_accum "
        f"{first['grad_accum']}, max_length {first['max_length']}."
    )
    used = tuple(
        k
        for k in task.report_metrics
        if any(r["summary"] and metric_value(r["summary"]["metrics"], k) is not None for r in runs)
    )
    _plot_bars(runs, (used or task.report_metrics)[0], out / "bars.png")
    lines = [
        f"# {title}",
        "",
        shared,
        "",
        table(runs, used or task.report_metrics[:1]),
        "",
        "Peak memory: the peak resident set (CPU) or allocated memory (GPU) while training and validating, "
        "the loaded model included (the peak of loading it is not counted). compare and sweep train each run "
        "in its own process.",
        "",
        "![validation loss](val_loss.png)",
        "",
        "![training loss](train_loss.png)",
        "",
        "![costs and main metric](bars.png)",
        "",
    ]
    path = out / "report.md"

    write_text_atomically(path, "\n".join(lines))
    return path

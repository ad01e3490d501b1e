"""The comparison report's figures, as PNGs: loss curves with a band over seeds, a metric per run with its
95% interval, and quality against cost. Each is written atomically (a failure leaves no partial file)."""

from __future__ import annotations

from pathlib import Path

from loralab.files import write_atomically


def _pyplot():
    import matplotlib  # imported here: plotting is the last step, and matplotlib is slow to load

    matplotlib.use("Agg")  # draws to files, no display needed (servers, CI)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    try:
        fig.tight_layout()
        write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    finally:
        _pyplot().close(fig)


def _yerr(value: float, low: float | None, high: float | None) -> list[list[float]] | None:
    """Matplotlib's asymmetric error bar [[below], [above]] of an interval, None without one."""
    if low is None or high is None:
        return None
    return [[value - low], [high - value]]


def plot_loss_bands(
    series: dict[str, list[list[tuple[int, float]]]], path: Path, title: str, ylabel: str
) -> None:
    """name -> one curve per seed, each a list of (step, value). One curve is drawn as a plain line. Several
    are drawn as their mean at the steps all of them have, with a shaded band from the minimum to the maximum
    over seeds; the legend says how many seeds (e.g. "lora (3 seeds)")."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, (name, curves) in enumerate(series.items()):
        curves = [dict(curve) for curve in curves if curve]
        if not curves:
            continue
        color = f"C{index % 10}"
        steps = sorted(set.intersection(*(set(curve) for curve in curves)))
        marker = "o" if len(steps) <= 20 else None
        if len(curves) == 1:
            ax.plot(
                steps, [curves[0][s] for s in steps], color=color, marker=marker, markersize=3, label=name
            )
            continue
        if not steps:  # the seeds were logged at different steps: show each one thinly instead of a mean
            for number, curve in enumerate(curves):
                label = f"{name} ({len(curves)} seeds, no common steps)" if number == 0 else None
                ax.plot(*zip(*sorted(curve.items()), strict=True), color=color, linewidth=0.8, label=label)
            continue
        values = [[curve[s] for curve in curves] for s in steps]
        ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=color, alpha=0.2)
        mean = [sum(v) / len(v) for v in values]
        ax.plot(steps, mean, color=color, marker=marker, markersize=3, label=f"{name} ({len(curves)} seeds)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_metric_bars(
    bars: list[tuple[str, float, float | None, float | None]], label: str, path: Path
) -> None:
    """One bar per (name, value, low, high), its value written on it, and the 95% interval [low, high] as an
    error bar where both are given. The axis starts at zero, so bar heights compare honestly."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(bars) + 2), 4.5))
    names = [name for name, *_ in bars]
    drawn = ax.bar(names, [value for _, value, _, _ in bars], color="tab:blue", alpha=0.8)
    values = [f"{value:.4g}" for _, value, _, _ in bars]
    ax.bar_label(drawn, labels=values, label_type="center", color="white", fontsize=9)  # clear of error bars
    for name, value, low, high in bars:
        yerr = _yerr(value, low, high)
        if yerr is not None:
            ax.errorbar([name], [value], yerr=yerr, fmt="none", ecolor="black", capsize=4)
    has_intervals = any(_yerr(value, low, high) for _, value, low, high in bars)
    ax.set_ylabel(label)
    ax.set_title(f"{label} (error bars: 95% interval)" if has_intervals else label)
    ax.tick_params(axis="x", rotation=45 if len(bars) > 4 else 0, labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


COST_AXES = (
    ("trainable_params", "trainable parameters (log scale)", True),
    ("peak_memory_mb", "peak memory (MB)", False),
    ("time_per_epoch_s", "time per epoch (s)", False),
)


def plot_cost_quality(points: list[dict], metric: str, path: Path) -> None:
    """Three scatter panels of the metric (y, with its interval as an error bar where low and high are given)
    against a cost (x): trainable parameters (log scale), peak memory, time per epoch. Each point is labelled
    with its name; a point without that cost (time_per_epoch_s None) is left out of that panel."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5), sharey=True)
    for ax, (key, xlabel, log_scale) in zip(axes, COST_AXES, strict=True):
        for index, point in enumerate(points):
            x, value = point.get(key), point.get("value")
            if x is None or value is None:
                continue
            yerr = _yerr(value, point.get("low"), point.get("high"))
            ax.errorbar([x], [value], yerr=yerr, fmt="o", color=f"C{index % 10}", capsize=3)
            ax.annotate(point["name"], (x, value), textcoords="offset points", xytext=(5, 5), fontsize=8)
        if log_scale:
            ax.set_xscale("log")
        ax.margins(x=0.15, y=0.1)  # room for the names beside the outermost points
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    fig.suptitle(f"{metric} against cost")
    _save(fig, path)

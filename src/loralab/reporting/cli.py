"""The commands that put several runs side by side: compare (methods), sweep (a grid of settings), each over
one or more --seeds, and report (rebuild a report from finished runs). Each imports what it runs inside its
function, so `loralab --help` does not load torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loralab.errors import UserError

SEEDS_HELP = (
    "repeat every run with each seed (batch order, initialisation, dropout; the data stay the same), e.g. "
    "0,1,2: the report shows mean ± std over seeds and tests the runs of each seed against each other"
)


def add_comparison_parsers(commands: argparse._SubParsersAction) -> None:
    """Several runs side by side: compare (methods), sweep (a grid of settings), report."""
    compare = commands.add_parser(
        "compare",
        help="train several methods on the same data and budget, then write a report",
        description="Run CONFIG once per method (same data, seed and budget), each in its own folder under "
        "OUT_DIR_compare (or --out_dir), then write report.md and plots there. --key=value overrides apply "
        "to all runs; --METHOD.key=value to one (e.g. --full.lr=5e-5). Run the same command again to reuse "
        "finished runs and resume interrupted ones.",
    )
    compare.add_argument("config", help="TOML config file (see configs/)")
    compare.add_argument(
        "--methods",
        required=True,
        help="comma-separated, e.g. lora,full,last_layers,prompt_tuning,qlora; NAME:METHOD runs a method again "
        "under another name with its own --NAME.key=value settings (pissa:lora --pissa.init=pissa)",
    )
    compare.add_argument("--overwrite", action="store_true", help="retrain runs that exist already")
    compare.add_argument("--seeds", default="", metavar="S1,S2", help=SEEDS_HELP)

    sweep = commands.add_parser(
        "sweep",
        help="train a grid of settings (e.g. rank × lr), then write a report",
        description="Run CONFIG for every combination of the --grid values, each in its own folder under "
        "OUT_DIR_sweep (or --out_dir), then write report.md and plots there.",
    )
    sweep.add_argument("config", help="TOML config file (see configs/)")
    sweep.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=V1,V2",
        help="repeatable, e.g. --grid rank=8,16,32 --grid lr=1e-4,5e-4",
    )
    sweep.add_argument(
        "--alpha-over-rank",
        type=float,
        default=0.0,
        metavar="K",
        help="set alpha = K × rank in every run (constant scaling)",
    )
    sweep.add_argument("--overwrite", action="store_true", help="retrain runs that exist already")
    sweep.add_argument("--seeds", default="", metavar="S1,S2", help=SEEDS_HELP)

    report = commands.add_parser(
        "report",
        help="rebuild the comparison report from finished runs",
        description="Write report.md and plots for RUN_DIRs (folders of loralab train / compare / sweep).",
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", default=None, help="folder for the report (default: the first run's parent)")


def _bench(runs: list, args: argparse.Namespace, title: str) -> int:
    from loralab.reporting.compare import parse_seeds, run_all, with_seeds
    from loralab.reporting.report import write_report

    seeds = parse_seeds(args.seeds) if args.seeds else []
    folders = run_all(with_seeds(runs, seeds), args.overwrite)
    path = write_report(folders, folders[0].parent, title)
    print("\n".join(line for line in path.read_text().splitlines() if line.startswith("|")))
    print(f"report: {path}")
    return 0


def cmd_compare(args: argparse.Namespace, overrides: list[str]) -> int:
    from loralab.reporting.compare import compare_configs, parse_methods

    methods = parse_methods(args.methods)
    runs = compare_configs(args.config, methods, overrides)
    return _bench(runs, args, f"Methods compared: {', '.join(name for name, _ in methods)}")


def cmd_sweep(args: argparse.Namespace, overrides: list[str]) -> int:
    from loralab.reporting.compare import sweep_configs

    runs = sweep_configs(args.config, args.grid, overrides, args.alpha_over_rank)
    return _bench(runs, args, f"Sweep over {' × '.join(g.split('=')[0] for g in args.grid)}")


def cmd_report(args: argparse.Namespace, overrides: list[str]) -> int:
    from loralab.reporting.report import write_report

    if overrides:
        raise UserError(f"loralab report takes no overrides, got {' '.join(overrides)}")
    folders = [Path(f) for f in args.run_dirs]
    path = write_report(folders, Path(args.out) if args.out else folders[0].parent)
    print(f"report: {path}")
    return 0

"""Command line: loralab train | eval | generate | export | merge | compare | sweep | report | data | sandbox.

Bad input ends with one line on stderr ("loralab: error: ...") and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

from loralab.config import BUILTIN_DATASETS, RunConfig, describe_options, load_config, read_run_config
from loralab.errors import Interrupted, UserError
from loralab.evaluation.sandbox.cli import add_sandbox_parser, cmd_sandbox
from loralab.reporting.cli import add_comparison_parsers, cmd_compare, cmd_report, cmd_sweep
from loralab.training.merge_runs import add_merge_parser, cmd_merge

# Each command imports the layers it runs inside its own function, so that `loralab --help`, a bad flag or a
# bad config is answered without loading torch, transformers and the models.

TRAIN_HELP = """Train with the settings of CONFIG.toml (or the defaults), then any --key=value overrides.

keys and their defaults, by section (key = value in CONFIG.toml, --key=value on the command line):

{options}

examples:
  loralab train configs/rotten_tomatoes_lora.toml
  loralab train configs/rotten_tomatoes_lora.toml --rank=16 --lr=5e-4 --out_dir=runs/r16
  loralab train configs/rotten_tomatoes_lora.toml --resume        (continue the run in out_dir)
  loralab train --task=classification --dataset=reviews.csv --columns=text=review,label=stars --out_dir=runs/my
  loralab data preview my.toml                                       (see the examples before training)
"""


class Parser(argparse.ArgumentParser):
    """argparse with loralab's error format: one line naming the problem and where the help is, exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"loralab: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="loralab", description="Fine-tune language models with LoRA.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_parsers(commands)
    add_merge_parser(commands)
    add_comparison_parsers(commands)
    _add_data_parser(commands)
    add_sandbox_parser(commands)
    return parser


def _add_run_parsers(commands: argparse._SubParsersAction) -> None:
    """train, and what is done with a run afterwards: eval, generate, export."""
    train = commands.add_parser(
        "train",
        help="train a model (LoRA) and evaluate it",
        description=TRAIN_HELP.format(options=describe_options()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "config", nargs="?", default=None, help="TOML config file (see configs/); without one, the defaults"
    )
    train.add_argument(
        "--resume", action="store_true", help="continue the run in out_dir from its checkpoint"
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace a finished or partial run in out_dir"
    )

    evaluate = commands.add_parser(
        "eval",
        help="score a trained run (or a base model zero-shot) on the test split",
        description="Evaluate RUN_DIR's best adapter, or with --model a base model zero-shot, on the task's "
        "test split. Extra --key=value overrides (e.g. --max_test_samples=200, --device=cpu) apply.",
    )
    evaluate.add_argument("run_dir", nargs="?", help="a folder written by `loralab train`")
    evaluate.add_argument(
        "--model", help="zero-shot: a bundled name, hub id or local folder instead of a run"
    )

    generate = commands.add_parser(
        "generate",
        help="continue prompts with trained runs (several adapters on one base) or a base model",
        description="Generate a continuation of each --prompt (used as given, not put into the template). "
        "Several LoRA runs of the same base model load side by side as adapters named after their folders; "
        "--adapter picks the one each prompt uses (in the order of the prompts; one value for all; none = the "
        "base model), and prompts with different adapters share batches. Overrides such as "
        "--max_new_tokens=40 --temperature=0.8 --top_k=50 apply.",
    )
    generate.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="folders written by `loralab train`")
    generate.add_argument("--model", help="a bundled name, hub id or local folder instead of a run")
    generate.add_argument(
        "--prompt", action="append", required=True, help="the text to continue (repeatable)"
    )
    generate.add_argument(
        "--adapter", action="append", metavar="NAME", help="the run folder name each prompt uses (repeatable)"
    )

    export = commands.add_parser(
        "export",
        help="write a run's model with the adapter merged, as a plain transformers folder",
        description="Fold RUN_DIR's adapter into the base weights and write model + tokenizer to --to with "
        "save_pretrained (safetensors). AutoModelForCausalLM.from_pretrained(DIR) loads it without loralab.",
    )
    export.add_argument("run_dir", help="a folder written by `loralab train`")
    export.add_argument("--to", required=True, metavar="DIR", help="the folder to write (must not exist)")
    export.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")


def _add_data_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="inspect datasets", description="Inspect datasets.")
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    stats = actions.add_parser(
        "stats",
        help="entries, unique values and average token counts per split",
        description="Entries, unique prompts and answers, and average tokens per example of each split of "
        f"a built-in DATASET ({', '.join(BUILTIN_DATASETS)}), or of the dataset a CONFIG (.toml) names, "
        "read through its task (--key=value overrides apply, e.g. --dataset=my.csv --task=classification).",
    )
    stats.add_argument("dataset", metavar="DATASET|CONFIG", help="a built-in dataset name or a .toml config")
    stats.add_argument(
        "--tokenizer", default=None, help="whose tokens to count (default: the config's model)"
    )
    stats.add_argument("--data_path", default=None, help="a data file or folder instead of the defaults")
    preview = actions.add_parser(
        "preview",
        help="the first training examples as the model sees them",
        description="The first training examples of CONFIG exactly as the model sees them (template or chat "
        "template, special tokens), the trained tokens between ⟦ and ⟧, their token counts, and how many "
        "examples max_length cuts. Loads the tokenizer only. --key=value overrides apply.",
    )
    preview.add_argument("config", metavar="CONFIG", help="a .toml config")
    preview.add_argument("--n", type=int, default=3, help="how many examples to show (default 3)")


def _run_config(
    run_dir: str | None, model: str | None, overrides: list[str]
) -> tuple[RunConfig, Path | None]:
    """Config of a run folder (plus overrides), or a default config for a bare --model."""
    if bool(run_dir) == bool(model):
        raise UserError("give either RUN_DIR or --model NAME (not both, not neither)")
    if model:
        return load_config(None, [*overrides, f"--model={model}"]), None
    run = Path(run_dir)
    saved = run / "config.json"
    if not saved.is_file():
        raise UserError(
            f"{run} is not a loralab run folder (no config.json); pass the out_dir of a training run"
        )
    base = read_run_config(saved)
    merged = load_config(None, overrides, base=base)
    if not (run / "adapter").is_dir():
        raise UserError(f"{run} has no adapter/ folder yet; train it first (or resume it)")
    return merged, run


def cmd_train(args: argparse.Namespace, overrides: list[str]) -> int:
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    config = load_config(args.config, overrides)  # a bad config is answered before torch loads
    from loralab.evaluation.uncertainty import intervals_line
    from loralab.files import is_disk_full, no_space_error
    from loralab.tasks import get_task
    from loralab.training.loop import train

    try:
        summary = train(config, resume=args.resume, overwrite=args.overwrite)
    except Exception as exc:  # a full disk shows up as OSError, or as safetensors' own error type
        if not is_disk_full(exc):
            raise
        raise no_space_error(Path(config.out_dir)) from None
    if not summary:  # a torchrun rank other than 0: rank 0 reports
        return 0
    task = get_task(config.task)
    print(f"test {task.headline(summary['metrics'])}")
    print(
        intervals_line(summary["metrics"], task.report_metrics) or "(no intervals: bootstrap_resamples = 0)"
    )
    print(
        f"trainable {summary['trainable_params']:,} of {summary['total_params']:,} "
        f"({summary['trainable_percent']:.3f}%), train time {summary['train_time_s']:.0f} s, "
        f"peak memory {summary['peak_memory_mb']:.0f} MB"
    )
    print(f"run folder: {config.out_dir}")
    return 0


def cmd_eval(args: argparse.Namespace, overrides: list[str]) -> int:
    from loralab.data.encoding import random_subset
    from loralab.evaluation.code_eval import check_code_eval
    from loralab.evaluation.uncertainty import intervals_line, save_statistics, with_intervals
    from loralab.files import write_json_atomically, write_lines_atomically
    from loralab.tasks import get_task
    from loralab.training.run_model import load_for_inference

    config, run = _run_config(args.run_dir, args.model, overrides)
    task = get_task(config.task)
    check_code_eval(config)  # before the model loads
    data = task.load_data(config, ("test",))
    config, source = data.config, data.sources["test"]
    rows = random_subset(data.rows["test"], config.max_test_samples, config.subset_seed + 2)
    print(f"loralab: test: {len(rows):,} examples from {source}", file=sys.stderr)
    model, tokenizer, device, predict = load_for_inference(config, run)
    metrics, _, statistics = task.evaluate(model, tokenizer, config, rows, device, predict)
    extra, samples, more = task.extra_evaluation(model, tokenizer, config, device, predict)  # code_qa: pass@k
    metrics = with_intervals(metrics | extra, statistics | more, config.bootstrap_resamples, config.seed)
    print(f"test {task.headline(metrics)}" + ("" if run else f" (zero-shot {config.model})"))
    print(intervals_line(metrics, task.report_metrics) or "(no intervals: bootstrap_resamples = 0)")
    if run is not None:
        write_json_atomically(run / "eval.json", metrics)
        save_statistics(run / "eval_statistics.safetensors", statistics | more)
        if samples:
            write_lines_atomically(run / "eval_code_samples.jsonl", samples)
    return 0


def cmd_generate(args: argparse.Namespace, overrides: list[str]) -> int:
    from loralab.training.run_model import load_for_inference

    if len(args.run_dirs) > 1 or args.adapter:
        texts = _generate_with_adapters(args, overrides)
    else:
        config, run = _run_config(args.run_dirs[0] if args.run_dirs else None, args.model, overrides)
        model, tokenizer, device, predict = load_for_inference(config, run)
        # the prompts as given (no task template), in the model's chat template when the run uses one
        plain = dataclasses.replace(config, template="{text}")
        texts = predict(model, tokenizer, args.prompt, plain, device, "generating")
    if len(texts) == 1:
        print(texts[0])
    else:
        choices = args.adapter or [None]
        for i, text in enumerate(texts):
            label = choices[i] if len(choices) == len(texts) else choices[0]
            print(f"[{i + 1}]{f' ({label})' if label else ''} {text}")
    return 0


def _generate_with_adapters(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """Every run's adapter on one base model, each prompt through the adapter --adapter names for it."""
    from loralab.evaluation.predict import generate_per_row
    from loralab.training.run_model import load_with_adapters

    if args.model or not args.run_dirs:
        raise UserError(
            "--adapter picks among run folders: pass RUN_DIRs (LoRA runs of one base), not --model"
        )
    runs = [_run_config(folder, None, overrides) for folder in args.run_dirs]
    names = [run.name for _, run in runs]
    choices = args.adapter  # set whenever there is only one run (cmd_generate routes here only then)
    if not choices:
        raise UserError(
            f"with several runs, say which one each prompt uses: --adapter NAME per prompt "
            f"(names: {', '.join(names)}, or none)"
        )
    if len(choices) not in (1, len(args.prompt)):
        raise UserError(
            f"{len(choices)} --adapter values for {len(args.prompt)} prompts; give one per prompt "
            "or one for all"
        )
    unknown = sorted({c for c in choices if c not in names and c != "none"})
    if unknown:
        raise UserError(
            f"--adapter {', '.join(unknown)}: not among the runs given ({', '.join(names)}) or none"
        )
    per_prompt = [None if c == "none" else c for c in (choices * len(args.prompt))[: len(args.prompt)]]
    model, tokenizer, device = load_with_adapters(runs)
    return generate_per_row(model, tokenizer, args.prompt, per_prompt, runs[0][0], device)


def cmd_export(args: argparse.Namespace, overrides: list[str]) -> int:
    from loralab.training.export import export_run

    config, run = _run_config(args.run_dir, None, overrides)
    folder = export_run(run, config, Path(args.to), args.overwrite)
    print(f"exported {run} with its adapter merged to {folder}")
    return 0


def cmd_data(args: argparse.Namespace, overrides: list[str]) -> int:
    if args.action == "preview":
        if args.n < 1:
            raise UserError(f"--n must be at least 1, got {args.n}")
        config = load_config(args.config, overrides)
        from loralab.training.preview import preview

        print(preview(config, args.n))
        return 0
    from loralab.training.preview import stats_report

    print(stats_report(args.dataset, args.tokenizer, args.data_path, overrides))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [item for item in extra if not item.startswith("--") or "=" not in item]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (overrides look like --key=value)")
    commands = {"train": cmd_train, "eval": cmd_eval, "generate": cmd_generate, "export": cmd_export,
                "compare": cmd_compare, "sweep": cmd_sweep, "report": cmd_report, "data": cmd_data,
                "sandbox": cmd_sandbox, "merge": cmd_merge}  # fmt: skip
    try:
        return commands[args.command](args, extra)
    except UserError as exc:
        print(f"loralab: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"loralab: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("loralab: interrupted", file=sys.stderr)
        return 130

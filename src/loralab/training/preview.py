"""`loralab data preview CONFIG`: the first training examples exactly as the model will see them, the trained
span marked, their token counts, and how many examples max_length cuts. Loads the tokenizer, not the model."""

from __future__ import annotations

from pathlib import Path

from loralab.config import BUILTIN_DATASETS, RunConfig, load_config
from loralab.data.encoding import Encoded, LabelledExample, Seq2SeqExample, random_subset
from loralab.data.stats import dataset_stats, format_stats, splits_stats
from loralab.errors import UserError
from loralab.evaluation.predict import run_format
from loralab.models.bundled import BUNDLED_ENCODER_DECODERS, BUNDLED_FOLDERS, bundled_dir, bundled_names
from loralab.models.detect import kind_of_config
from loralab.models.loading import load_tokenizer
from loralab.tasks import get_task
from loralab.training.examples import encode_rows
from loralab.training.kinds import get_kind

OPEN, CLOSE = "⟦", "⟧"  # around the tokens the loss trains on


def _kind_name(config: RunConfig) -> str:
    """The model's kind read from its config.json alone (causal when it cannot be read)."""
    if config.model_kind != "auto":
        return config.model_kind
    if config.model in BUNDLED_ENCODER_DECODERS:
        return "seq2seq"
    try:
        from transformers import AutoConfig  # imported here: the rest of this module needs no transformers

        if config.model in BUNDLED_FOLDERS:
            folder: str | Path = BUNDLED_FOLDERS[config.model]()
        elif config.model in bundled_names():
            folder = bundled_dir(config.model)
        else:
            folder = config.model
        return kind_of_config(AutoConfig.from_pretrained(folder, trust_remote_code=config.trust_remote_code))
    except Exception:  # a hub id offline, a .gguf file: its tokenizer says enough for a preview
        return "causal"


def _trained(example: Encoded) -> list[bool]:
    if getattr(example, "trained", None) is not None:
        return list(example.trained)
    return [i >= example.n_prompt for i in range(len(example.input_ids))]


def marked(tokenizer, ids: list[int], trained: list[bool]) -> str:
    """The decoded ids, each run of trained tokens between ⟦ and ⟧ (special tokens shown)."""
    parts, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or trained[i] != trained[start]:
            text = tokenizer.decode(ids[start:i], skip_special_tokens=False)
            parts.append(f"{OPEN}{text}{CLOSE}" if trained[start] else text)
            start = i
    return "".join(parts)


def _show(tokenizer, example, label_words: list[str]) -> tuple[str, int, int]:
    """(marked text, tokens, trained tokens) of one example of any kind."""
    if isinstance(example, Seq2SeqExample):
        source = tokenizer.decode(example.source_ids, skip_special_tokens=False)
        target = tokenizer.decode(example.target_ids, skip_special_tokens=False)
        return f"encoder: {source}\ndecoder: {OPEN}{target}{CLOSE}", len(example), len(example.target_ids)
    if isinstance(example, LabelledExample):
        text = tokenizer.decode(example.input_ids, skip_special_tokens=False)
        word = label_words[example.label] if example.label < len(label_words) else str(example.label)
        return f"{text}\nclass: {OPEN}{example.label} ({word}){CLOSE}", len(example), 1
    trained = _trained(example)
    return marked(tokenizer, example.input_ids, trained), len(example), sum(trained)


def preview(config: RunConfig, n: int = 3) -> str:
    """The report `loralab data preview` prints."""
    task = get_task(config.task)
    data = task.load_data(config, ("train",))
    config = data.config
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    kind = get_kind(_kind_name(config))
    fmt, note = run_format(tokenizer, config, causal=kind.name == "causal")
    rows = random_subset(data.rows["train"], config.max_train_samples, config.subset_seed)
    examples = encode_rows(task, kind, tokenizer, fmt, config, rows, "train")
    lines = [
        f"train: {len(rows):,} examples from {data.sources['train']}",
        *data.notes,
        f"{kind.name} model {config.model}; {note}",
        f"{OPEN} {CLOSE} mark the tokens the loss trains on" + ("" if kind.generative else " (the class)"),
    ]
    if config.code_vocab:
        lines.append("(shown without the code vocabulary's new tokens, which training adds to the model)")
    for i, example in enumerate(examples[:n], 1):
        text, tokens, trained = _show(tokenizer, example, config.label_words)
        lines += ["", f"--- example {i}: {tokens} tokens, {trained} trained", text]
    lengths = [len(e) for e in examples]
    cut = sum(length >= config.max_length for length in lengths)
    lines += [
        "",
        f"{len(examples):,} training examples (rows): {sum(lengths) / max(len(lengths), 1):.1f} tokens on "
        f"average, longest {max(lengths, default=0):,}; {cut:,} reach max_length = {config.max_length} "
        f"({100 * cut / max(len(examples), 1):.1f}%){' and were cut' if cut else ''}",
    ]
    return "\n".join(lines)


def config_stats(config: RunConfig, tokenizer: str) -> dict:
    """`loralab data stats` for the dataset a config names, read through its task: prompts and answers as
    the task makes them (a conversation's earlier turns as role lines)."""
    task = get_task(config.task)
    data = task.load_data(config, ("train", "validation", "test"))
    loaded = {
        split: (
            [
                {"prompt": task.input_text(data.config, r), "answer": task.answer(data.config, r)}
                for r in rows
            ],
            data.sources[split],
        )
        for split, rows in data.rows.items()
    }
    return splits_stats(config.dataset or config.data_path, tokenizer, loaded)


def stats_report(dataset: str, tokenizer: str | None, data_path: str | None, overrides: list[str]) -> str:
    """What `loralab data stats DATASET|CONFIG` prints: a built-in dataset's stats as its loader reads it,
    or any dataset's through the task a config (or --task=...) names."""
    if dataset in BUILTIN_DATASETS and not overrides:
        return format_stats(dataset_stats(dataset, tokenizer or "smollm2-135m", data_path))
    is_config = dataset.endswith(".toml")
    extra = [] if is_config else [f"--dataset={dataset}"]
    extra += [f"--data_path={data_path}"] if data_path else []
    config = load_config(dataset if is_config else None, [*overrides, *extra])
    if (
        not is_config
        and config.dataset not in BUILTIN_DATASETS
        and not any(o.startswith("--task=") for o in overrides)
    ):
        raise UserError(
            f"say which task reads {dataset}: add --task=classification, instruction, summarization or text "
            "(and --columns=... if its columns have other names)"
        )
    return format_stats(config_stats(config, tokenizer or config.model))

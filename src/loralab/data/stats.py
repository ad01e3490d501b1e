"""`loralab data stats`: size, duplicates and token lengths of a dataset's train/validation/test splits.

Token counts are of the raw fields (question or document or review text as the prompt; answer, summary or
label word as the answer), without a task's prompt template or special tokens.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loralab.data.code_sources import load_python_codes_25k, load_stdlib_docstrings
from loralab.data.sentiment_sources import load_rotten_tomatoes
from loralab.data.sources import Loaded
from loralab.data.splits import SPLITS
from loralab.data.summarization_sources import load_cnn_dailymail, load_xsum
from loralab.errors import UserError
from loralab.models.loading import load_tokenizer

TOKEN_SAMPLE = 20_000  # rows per split whose tokens are counted (a fixed random sample beyond that)
LABEL_WORDS = ("negative", "positive")  # rotten_tomatoes answers, as in the default config


@dataclass(frozen=True)
class Fields:
    """How a dataset's rows read: the prompt field, the answer (field or function), other text fields."""

    load: Callable[[str, str | Path | None], Loaded]
    prompt: str
    answer: str
    answer_text: Callable[[dict], str]
    extra: tuple[str, ...] = ()  # more fields whose distinct values are counted


DATASET_FIELDS = {
    "rotten_tomatoes": Fields(
        load_rotten_tomatoes, "text", "label", lambda row: LABEL_WORDS[int(row["label"])]
    ),
    "python_codes_25k": Fields(
        load_python_codes_25k, "question", "answer", lambda row: row["answer"], ("instruction", "input")
    ),
    "stdlib_docstrings": Fields(load_stdlib_docstrings, "question", "answer", lambda row: row["answer"]),
    "cnn_dailymail": Fields(load_cnn_dailymail, "document", "summary", lambda row: row["summary"]),
    "xsum": Fields(load_xsum, "document", "summary", lambda row: row["summary"]),
}
DATASETS = tuple(DATASET_FIELDS)


def dataset_stats(name: str, tokenizer, path: str | Path | None = None) -> dict:
    """Counts per split and over all splits for dataset `name`; `tokenizer` is a tokenizer or a model name.

    Returns {"dataset", "tokenizer", "sources": {split: line}, "splits": {split|"all": {metric: value}}}.
    A split whose rows equal an earlier split's (one file given for every split) is not added to "all" again.
    """
    if name not in DATASETS:
        raise UserError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, or pass a config file (.toml) "
            "naming any dataset"
        )
    fields = DATASET_FIELDS[name]
    return splits_stats(name, tokenizer, {split: fields.load(split, path) for split in SPLITS}, fields)


PROMPT_ANSWER = Fields(lambda split, path: ([], None), "prompt", "answer", lambda row: row["answer"])


def splits_stats(name: str, tokenizer, loaded: dict[str, Loaded], fields: Fields = PROMPT_ANSWER) -> dict:
    """dataset_stats of rows already loaded (by default rows {"prompt", "answer"}, as a task makes them)."""
    if isinstance(tokenizer, str):
        tokenizer_name, tokenizer = tokenizer, load_tokenizer(tokenizer)
    else:
        tokenizer_name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    count = _token_counter(tokenizer)
    sources, splits, everything, seen = {}, {}, [], []
    for split in SPLITS:
        rows, provenance = loaded[split]
        sources[split] = provenance.describe()
        splits[split] = _split_stats(rows, fields, count)
        if not any(rows == earlier for earlier in seen):
            everything.extend(rows)
        seen.append(rows)
    splits["all"] = _split_stats(everything, fields, count)
    return {"dataset": name, "tokenizer": tokenizer_name, "sources": sources, "splits": splits}


def _unique(field: str) -> str:
    return f"unique {field[:-1]}ies" if field.endswith("y") else f"unique {field}s"


def _split_stats(rows: list[dict], fields: Fields, count: Callable[[list[str]], list[int]]) -> dict:
    stats = {"entries": len(rows), _unique(fields.prompt): len({row[fields.prompt] for row in rows})}
    for extra in fields.extra:
        stats[_unique(extra)] = len({row[extra] for row in rows})
    stats[_unique(fields.answer)] = len({fields.answer_text(row) for row in rows})
    sample = rows if len(rows) <= TOKEN_SAMPLE else random.Random(0).sample(rows, TOKEN_SAMPLE)
    stats["avg prompt tokens"] = _mean(count([row[fields.prompt] for row in sample]))
    stats["avg answer tokens"] = _mean(count([fields.answer_text(row) for row in sample]))
    stats["rows tokenized"] = len(sample)
    return stats


def _token_counter(tokenizer) -> Callable[[list[str]], list[int]]:
    """texts -> token counts (no special tokens); each distinct text is tokenized once."""
    known: dict[str, int] = {}

    def count(texts: list[str]) -> list[int]:
        new = list(dict.fromkeys(text for text in texts if text not in known))
        if new:
            ids = tokenizer(new, add_special_tokens=False)["input_ids"]
            known.update(zip(new, map(len, ids), strict=True))
        return [known[text] for text in texts]

    return count


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def format_stats(stats: dict) -> str:
    """A plain-text table: one row per metric, one column per split, then the source of each split."""
    columns = [*SPLITS, "all"]
    metrics = list(stats["splits"]["all"])
    rows = [["", *columns]]
    for metric in metrics:
        values = [stats["splits"][column][metric] for column in columns]
        rows.append([metric, *(f"{v:,.1f}" if isinstance(v, float) else f"{v:,}" for v in values)])
    width0 = max(len(row[0]) for row in rows)
    widths = [max(len(row[i]) for row in rows) for i in range(1, len(columns) + 1)]
    lines = [f"{stats['dataset']} (tokens: {stats['tokenizer']}, raw fields, no template or special tokens)"]
    for row in rows:
        cells = [cell.rjust(width) for cell, width in zip(row[1:], widths, strict=True)]
        lines.append("  ".join([row[0].ljust(width0), *cells]).rstrip())
    lines.extend(f"{split}: {stats['sources'][split]}" for split in SPLITS)
    return "\n".join(lines)

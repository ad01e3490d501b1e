"""The datasets loralab knows by name: each has its own loader (data.sources' chain: an explicit path,
$LORALAB_DATA_DIR, the Hugging Face hub, an offline stand-in) and rows with fixed columns.

A task reads any other dataset through data.datasets (a hub id, a file or a folder); these names stay so that
the presets (rotten_tomatoes, code_qa, cnn_dailymail, xsum) run offline.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from loralab.data.code_sources import load_python_codes_25k, load_stdlib_docstrings
from loralab.data.sentiment_sources import load_rotten_tomatoes
from loralab.data.sources import Loaded
from loralab.data.summarization_sources import load_cnn_dailymail, load_xsum

# loralab.config reads the names from this file's source (config/registries.py): keep them literal
BUILTIN: dict[str, Callable[[str, str | Path | None], Loaded]] = {
    "rotten_tomatoes": load_rotten_tomatoes,
    "stdlib_docstrings": load_stdlib_docstrings,
    "python_codes_25k": load_python_codes_25k,
    "cnn_dailymail": load_cnn_dailymail,
    "xsum": load_xsum,
}

# the task fields their columns fill, where the names differ from the task's own
COLUMNS: dict[str, dict[str, str]] = {
    "stdlib_docstrings": {"prompt": "question", "completion": "answer"},
    "python_codes_25k": {"prompt": "question", "completion": "answer"},
}


def is_builtin(dataset: str) -> bool:
    return dataset in BUILTIN


def load_builtin(dataset: str, split: str, path: str | Path | None) -> Loaded:
    """`split` of a built-in dataset (rows with its fixed columns) and where it came from."""
    return BUILTIN[dataset](split, path or None)

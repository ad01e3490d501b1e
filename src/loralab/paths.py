"""Where loralab keeps converted models and downloaded data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$LORALAB_CACHE_DIR, else ~/.cache/loralab (created on first use)."""
    path = Path(os.environ.get("LORALAB_CACHE_DIR") or Path.home() / ".cache" / "loralab").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path | None:
    """$LORALAB_DATA_DIR when set (a folder of datasets such as rotten_tomatoes/{train,validation,test}.jsonl)."""
    value = os.environ.get("LORALAB_DATA_DIR")
    return Path(value).expanduser() if value else None

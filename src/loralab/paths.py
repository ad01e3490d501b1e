"""Where loralab keeps converted models and downloaded data; a file's checksum."""

from __future__ import annotations

import hashlib
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


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

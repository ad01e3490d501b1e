"""Where loralab keeps converted models and downloaded data; a file's checksum; a JSON file read with a
one-line error."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from loralab.errors import UserError


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


def read_json_object(path: Path, what: str, fix: str) -> dict:
    """The JSON object in `path`; UserError "PATH is not WHAT (why); FIX" if it is unreadable or not JSON, and
    one saying so if it holds something other than an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not {what} ({exc}); {fix}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} holds no JSON object; {fix}")
    return value

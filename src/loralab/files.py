"""Files: atomic writes (readers see the old version or the new one, never half of it), safe reads (JSON, JSON
lines and safetensors only, never pickle), checksums, and where loralab keeps its caches. A full or read-only
disk, a missing or corrupt file, is a one-line UserError naming the file and the fix, not a traceback.

Imports nothing of loralab but errors; every layer may import it."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from loralab.errors import UserError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# Less than this free where a run goes counts as full: its first checkpoint needs more.
MIN_FREE_BYTES = 1 << 20


def is_disk_full(exc: BaseException) -> bool:
    """True for "no space left" / "quota exceeded", also as safetensors reports it (an "os error 28")."""
    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL
    text = str(exc)
    return "No space left on device" in text or f"os error {errno.ENOSPC}" in text


def no_space_error(folder: Path) -> UserError:
    return UserError(
        f"no space left on the disk holding {folder}; free some space there (or write to another "
        "disk, e.g. another out_dir) and run again"
    )


def write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Call write(temp_path) for a temp file beside `path`, then rename it over `path`."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if exc.errno not in (*DISK_FULL, errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise _unwritable(path.parent, exc, "write to another folder") from None
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if is_disk_full(exc):
            raise no_space_error(path.parent) from None
        raise


def write_text_atomically(path: Path, text: str) -> None:
    write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json_atomically(path: Path, data: object) -> None:
    """`data` as indented JSON, through a temp file and a rename."""
    write_text_atomically(path, json.dumps(data, indent=2) + "\n")


def write_lines_atomically(path: Path, records: Iterable[object]) -> None:
    """A JSON-lines file (one record per line), through a temp file and a rename."""
    write_text_atomically(path, "".join(json.dumps(record) + "\n" for record in records))


def check_writable(folder: Path, fix: str = "choose another out_dir") -> None:
    """UserError now, before any work, when files cannot be written in `folder` (or where it would be
    created): a read-only file system, no write permission, or a full disk. Nothing is written to find out."""
    base = folder
    while not base.exists() and base != base.parent:  # the nearest existing folder: where it will be created
        base = base.parent
    if not base.is_dir():
        raise UserError(f"{base} is a file, so {folder} cannot be created there; {fix}")
    stats = os.statvfs(base) if hasattr(os, "statvfs") else None
    if stats is not None and stats.f_flag & os.ST_RDONLY:
        raise UserError(f"{folder} is on a read-only file system; {fix} on a writable disk")
    if not os.access(base, os.W_OK | os.X_OK):
        where = "" if base == folder else f" in {base}"
        raise UserError(
            f"cannot write to {folder} (permission denied{where}); {fix}, or make it writable for you"
        )
    if stats is not None and stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
        raise no_space_error(folder)


def _unwritable(folder: Path, exc: OSError, fix: str) -> UserError:
    if is_disk_full(exc):
        return no_space_error(folder)
    if exc.errno == errno.EROFS:
        return UserError(f"{folder} is on a read-only file system; {fix} on a writable disk")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return UserError(f"cannot write to {folder} (permission denied); {fix}, or make it writable for you")
    return UserError(f"cannot write to {folder} ({exc.strerror or exc}); {fix}")


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


def read_json(path: Path, what: str, fix: str) -> object:
    """The JSON value in `path`; UserError "PATH is not WHAT (why); FIX" if it is missing, unreadable or not
    JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not {what} ({exc}); {fix}") from None


def read_json_object(path: Path, what: str, fix: str) -> dict:
    """The JSON object in `path`; UserError "PATH is not WHAT (why); FIX" if it is unreadable or not JSON, and
    one saying so if it holds something other than an object."""
    value = read_json(path, what, fix)
    if not isinstance(value, dict):
        raise UserError(f"{path} holds no JSON object; {fix}")
    return value


def json_lines(text: str, where: object) -> list[tuple[int, object]]:
    """The values of a JSON-lines text with their line numbers; blank lines are skipped. A line that is not
    JSON is a UserError "WHERE, line N: not valid JSON (why); fix or remove that line"."""
    values = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            values.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{where}, line {number}: not valid JSON ({exc.msg}); fix or remove that line"
            ) from None
    return values


def read_tensors(path: Path, fix: str) -> dict:
    """The tensors of the safetensors file at `path`; UserError (ending in `fix`) if it is missing or corrupt."""
    # Imported here: safetensors.torch loads torch, which `loralab --help` and config checks do not need.
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise UserError(f"{path} is missing; {fix}") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a valid safetensors file ({exc}); {fix}") from None


def write_folder_atomically(destination: Path, write: Callable[[Path], None]) -> None:
    """Call write(scratch) for a fresh folder beside `destination`, then put it in destination's place (an
    existing destination is removed only then); a failure leaves destination as it was and no scratch folder."""
    import shutil

    destination.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}."))
    try:
        write(scratch)
        if destination.exists():
            shutil.rmtree(destination)
        scratch.rename(destination)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

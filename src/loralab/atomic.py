"""Write a file so that readers see the old version or the new one, never half of it; a full or read-only
disk is a one-line UserError naming the folder, not a traceback."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
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
    return UserError(f"no space left on the disk holding {folder}; free some space there (or write to another "
                     "disk, e.g. another out_dir) and run again")  # fmt: skip


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
    write_atomically(path, lambda tmp: Path(tmp).write_text(text))


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

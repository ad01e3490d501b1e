"""The work directory of one sandboxed run: made fresh, with the program in it, and deleted afterwards.

The supervisor deletes it through a descriptor it kept, so a program that moves it, locks it (chmod 000) or
leaves a symlink in its place cannot make cleanup follow a link out of it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator

from loralab.evaluation.sandbox.launcher import PROGRAM_NAME


@contextlib.contextmanager
def work_directory(program: str) -> Iterator[str]:
    """A fresh directory under the temporary folder holding `program` as PROGRAM_NAME; deleted on exit,
    wherever the program moved it and whatever it left there."""
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="loralab-sandbox-"))
    workdir_fd = os.open(workdir, os.O_PATH | os.O_DIRECTORY)  # finds it even if the program moves it
    try:
        with open(os.path.join(workdir, PROGRAM_NAME), "w", encoding="utf-8") as file:
            file.write(program)
        yield workdir
    finally:
        _remove_workdir(workdir, workdir_fd)


def _remove_workdir(path: str, workdir_fd: int) -> None:
    """Delete the work directory (an O_PATH descriptor of it) wherever the program moved it, and whatever it
    left at its path, without following a symlink out of it. Only the fallback lets the program touch it."""
    try:
        moved_to = os.readlink(f"/proc/self/fd/{workdir_fd}")
        with contextlib.suppress(OSError):
            if moved_to != path and os.path.samestat(os.lstat(moved_to), os.fstat(workdir_fd)):
                _remove_tree(moved_to)
        _remove_tree(path)
    finally:
        os.close(workdir_fd)


def _remove_tree(path: str) -> None:
    """Delete a directory tree even where the program took permissions away (chmod 000); a symlink or file at
    `path` is unlinked, never followed."""
    try:
        top = os.open(path, os.O_PATH | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISDIR(os.fstat(top).st_mode):
            os.unlink(path)
            return
        _make_owner_writable(top)
        for _root, dirs, _files, dir_fd in os.fwalk(".", dir_fd=top):  # never descends through a symlink
            for name in dirs:
                with contextlib.suppress(OSError):
                    entry = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=dir_fd)
                    try:
                        if stat.S_ISDIR(os.fstat(entry).st_mode):  # not a symlink to a directory
                            _make_owner_writable(entry)
                    finally:
                        os.close(entry)
    except OSError:
        pass
    finally:
        os.close(top)
    shutil.rmtree(path, ignore_errors=True)


def _make_owner_writable(path_fd: int) -> None:
    """chmod 0o700 the directory of an O_PATH descriptor (fchmod refuses those; the /proc link does not)."""
    os.chmod(f"/proc/self/fd/{path_fd}", 0o700)

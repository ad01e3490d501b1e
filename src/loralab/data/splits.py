"""Deterministic train/validation/test splits for datasets that ship as one table, and explicit data paths.

A split is decided by content, not by row position: rows are linked into groups when they share a key (e.g. the
same question or the same answer), groups are ordered by a SHA-256 hash of their smallest key and a seed, and
the ordered groups fill train, then validation, then test up to the given fractions. The result does not depend
on the order of the rows or on the machine, and no key appears in two splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from loralab.data.tables import TABLE_SUFFIXES
from loralab.errors import UserError

SPLITS = ("train", "validation", "test")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


def hash_split(
    rows: Sequence[dict],
    keys: Callable[[dict], Sequence[str]],
    seed: str,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
) -> dict[str, list[dict]]:
    """Rows divided into train/validation/test by content hash; rows sharing any key stay together.

    Sizes are round(n * fraction) cumulatively when no two rows share a key; each split keeps the rows' order.
    """
    groups = _groups([list(keys(row)) for row in rows])
    ordered = sorted(groups, key=lambda group: min(_digest(seed, key) for key in group[1]))
    total = len(rows)
    cut1 = round(total * fractions[0])
    cut2 = round(total * (fractions[0] + fractions[1]))
    chosen: dict[str, list[int]] = {name: [] for name in SPLITS}
    placed = 0
    for indices, _ in ordered:
        name = "train" if placed < cut1 else "validation" if placed < cut2 else "test"
        chosen[name].extend(indices)
        placed += len(indices)
    return {name: [rows[i] for i in sorted(indices)] for name, indices in chosen.items()}


def _digest(seed: str, key: str) -> str:
    return hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()


def _groups(keys_per_row: list[list[str]]) -> list[tuple[list[int], list[str]]]:
    """Connected components of rows that share a key (union-find): (row indices, keys) per component."""
    parent = list(range(len(keys_per_row)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, keys in enumerate(keys_per_row):
        for key in keys:
            if key in owner:
                parent[root(i)] = root(owner[key])
            else:
                owner[key] = i
    members: dict[int, tuple[list[int], list[str]]] = {}
    for i, keys in enumerate(keys_per_row):
        indices, group_keys = members.setdefault(root(i), ([], []))
        indices.append(i)
        group_keys.extend(keys)
    return list(members.values())


def explicit_files(path: str | Path, split: str) -> tuple[list[Path], bool]:
    """The table files an explicit data path names for `split`, and whether they hold that split alone.

    A path with '{split}' or a folder holding {split}.<ext> is one split (True); any other file, or a folder of
    table files with other names, is the whole dataset, to be split by the caller (False).
    """
    text = str(path)
    if "{split}" in text:
        return [Path(text.replace("{split}", split)).expanduser()], True
    path = Path(text).expanduser()
    if not path.is_dir():
        return [path], False
    for suffix in TABLE_SUFFIXES:
        if (path / f"{split}{suffix}").is_file():
            return [path / f"{split}{suffix}"], True
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)
    if any(p.stem in SPLITS for p in files):
        raise UserError(f"{path} has split files but no {split}.jsonl (or .csv/.parquet); add it")
    if not files:
        raise UserError(
            f"{path} has no {split}.jsonl and no other .jsonl/.csv/.parquet file; add one or pass a file path"
        )
    return files, False

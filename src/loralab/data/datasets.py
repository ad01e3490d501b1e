"""Any dataset the user names: a Hugging Face hub id, a local file or a local folder (see data.local_data for
the local layouts), one split at a time, as rows (dicts with the data's own columns) and their Provenance.

Splits: ours are train, validation and test; `splits` maps them to the data's own names ({validation = "dev"}),
an unlisted one keeps its name. When the data lacks validation or test (and `splits` does not name it), it is
cut from train by content hash (splits.hash_split: seeded, the same rows on every machine, rows with equal keys
on one side): 80/10/10 when both are missing, 90/10 when one is. Every call derives the same way from the spec,
so train, validation and test loaded separately never overlap. A missing train split, a `splits` entry the data
does not have, or an empty split is a UserError listing what the data has.

The hub is asked only when it can answer: with an offline flag set, datasets answers from its cache; with the
hub unreachable (hub.skip_reason) the error comes at once, with how to pass a local copy, instead of after the
library's retries. A source is read once per process (cached by the spec and, for local data, the files'
modification times), so train, validation and test do not read or download it three times.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loralab import hub
from loralab.data.local_data import (
    DATA_SUFFIXES,
    SPLIT_FIELD,
    Source,
    dict_source,
    failure,
    local_source,
    template_matches,
)
from loralab.data.sources import HUB, PATH, Provenance
from loralab.data.splits import SPLITS, check_split, hash_split
from loralab.errors import UserError

LOCAL_PREFIXES = ("./", "../", "/", "~")
DERIVABLE = ("validation", "test")
LOCAL_COPY_FIX = (
    'pass a local copy instead: dataset = "path/to/file.jsonl" (or a folder), or data_path = "..."'
)
# split names that usually mean held-out data: when a split is cut from train, the note names these if unused
HELD_OUT_NAMES = {
    "dev",
    "val",
    "valid",
    "validation",
    "eval",
    "evaluation",
    "test",
    "testing",
    "heldout",
    "held_out",
}
CACHED_SOURCES = 4  # sources kept in memory (their rows): a run uses one, tests a few


@dataclass(frozen=True)
class DataSpec:
    """Which dataset to load and how its splits are named.

    dataset: a hub id ("user/name" or "name") or a local path (file, folder, or a path with '{split}').
    dataset_config, revision: the hub dataset's configuration and branch/tag/commit (hub ids only).
    splits: (our split, the data's split name) pairs, e.g. (("validation", "dev"),); unlisted: the same name.
    data_path: a local copy that replaces `dataset` as the location (file, folder or '{split}' path).
    seed: seeds the splits cut from train.
    """

    dataset: str
    dataset_config: str = ""
    revision: str = ""
    splits: tuple[tuple[str, str], ...] = ()
    data_path: str = ""
    seed: int = 0


@dataclass(frozen=True)
class Table:
    """One split: its rows, where they came from, the column names (every row's keys, first-seen order) and,
    for columns that are a datasets ClassLabel, the class names (the rows keep the integers)."""

    rows: list[dict]
    provenance: Provenance
    columns: tuple[str, ...]
    class_names: dict[str, tuple[str, ...]]


def is_local(dataset: str) -> bool:
    """Whether `dataset` names local data: an existing path, or text that looks like one (a data-file suffix,
    a '{split}', or a start of ./ ../ / ~) rather than a hub id."""
    text = dataset.strip()
    if not text:
        return False
    if SPLIT_FIELD in text or text.startswith(LOCAL_PREFIXES) or Path(text).suffix.lower() in DATA_SUFFIXES:
        return True
    return Path(text).expanduser().exists()


def load_table(spec: DataSpec, split: str, group_key: Callable[[dict], Sequence[str]] | None = None) -> Table:
    """Our `split` ("train", "validation" or "test") of the dataset `spec` names (see the module docstring).

    group_key: the keys of a row that must stay on one side when a split is cut from train (default: the row's
    whole content, so duplicate rows stay together). Every problem the user can fix is a one-line UserError.
    """
    check_split(split)
    mapping = _mapping(spec)
    source = _source(spec, mapping)
    plan = _plan(source, mapping)
    derived = tuple(name for name in DERIVABLE if plan[name] is None)
    location = _location(spec)
    kind, hub_config = (PATH, None) if location else (HUB, spec.dataset_config or None)
    # what the printed line calls the dataset: a hub id (also when data_path holds a copy of it), or a local
    # path's last part (its location follows)
    named = spec.dataset.strip()
    label = named if named and not is_local(named) else Path(location).expanduser().name or location
    if split not in derived and not (split == "train" and derived):
        name = plan[split]
        part = source.part(name)
        if not part.rows:
            raise UserError(
                f"the {name!r} split of {source.where} has no rows; add rows, or map {split} to "
                f"another split in splits (the data has {_names(source)})"
            )
        note = "" if name == split else f"the data's {name!r} split"
        provenance = Provenance(label, split, kind, part.location, len(part.rows), None, hub_config, note)
        return _table(part.rows, provenance, part.class_names)
    train = source.part(plan["train"])
    rows = _derive(source, plan["train"], derived, spec.seed, group_key)[split]
    if not rows:
        raise UserError(
            f"{split} cut from the {plan['train']!r} split of {source.where} is empty: that split has only "
            f"{len(train.rows)} rows; add rows, or give the data a {split} split (a {split} file, or splits = "
            f'{{{split} = "..."}})'
        )
    note = _derived_note(split, derived, plan, source, spec.seed)
    provenance = Provenance(label, split, kind, train.location, len(rows), len(train.rows), hub_config, note)
    return _table(rows, provenance, train.class_names)


def _table(rows: list[dict], provenance: Provenance, class_names: dict[str, tuple[str, ...]]) -> Table:
    fresh = [dict(row) for row in rows]  # the cached rows stay as read, whatever the caller does to these
    columns = tuple(dict.fromkeys(column for row in fresh for column in row))
    return Table(fresh, provenance, columns, dict(class_names))


# ------------------------------------------------------------------------------------------------ splits


def _mapping(spec: DataSpec) -> dict[str, str]:
    """`splits` as a dict, checked: only our split names as keys, non-empty names as values."""
    mapping = {}
    pairs = spec.splits.items() if isinstance(spec.splits, dict) else spec.splits  # a dict is taken too
    for ours, theirs in pairs:
        if ours not in SPLITS:
            raise UserError(f"splits: unknown split {ours!r}; its keys are {', '.join(SPLITS)}")
        if not str(theirs).strip():
            raise UserError(
                f'splits: no split name for {ours}; write the data\'s name, e.g. {{{ours} = "dev"}}'
            )
        mapping[ours] = str(theirs)
    return mapping


def _plan(source: Source, mapping: dict[str, str]) -> dict[str, str | None]:
    """Our split -> the data's split it is read from; None: cut from train."""
    plan: dict[str, str | None] = {}
    for ours in SPLITS:
        name = mapping.get(ours, ours)
        if name in source.names:
            plan[ours] = name
        elif ours in mapping:
            raise UserError(
                f'{source.where} has no split {name!r} (splits: {ours} = "{name}"); it has '
                f'{_names(source)}; set splits = {{{ours} = "<one of those>"}}'
            )
        elif ours == "train":
            raise UserError(
                f"{source.where} has no train split (it has {_names(source)}); name the one to train "
                f'on: splits = {{train = "{source.names[0]}"}}'
            )
        else:
            plan[ours] = None
    read = [ours for ours in SPLITS if plan[ours] is not None]
    for i, ours in enumerate(read):
        for other in read[i + 1 :]:
            if plan[ours] == plan[other]:
                raise UserError(
                    f"{ours} and {other} both read the data's split {plan[ours]!r}, so they would "
                    f"share rows; map them to different splits in splits"
                )
    return plan


def _names(source: Source) -> str:
    return ", ".join(repr(name) for name in source.names) or "no splits"


def _fractions(derived: tuple[str, ...]) -> tuple[float, float, float]:
    if len(derived) == 2:
        return 0.8, 0.1, 0.1
    return (0.9, 0.1, 0.0) if derived == ("validation",) else (0.9, 0.0, 0.1)


def _derive(
    source: Source, train_name: str, derived: tuple[str, ...], seed: int, group_key: Callable | None
) -> dict[str, list[dict]]:
    """train, validation and test cut from the data's train split (the splits not derived come back empty).
    The last cut is kept on the source, so loading train, validation and test with one key hashes once."""
    key = (train_name, derived, seed, group_key)
    if source.derived is not None and source.derived[0] == key:
        return source.derived[1]
    keys = group_key or _content_key
    parts = hash_split(source.part(train_name).rows, keys, str(seed), _fractions(derived))
    source.derived = (key, parts)
    return parts


def _content_key(row: dict) -> list[str]:
    """A row's whole content as one key: equal rows (duplicates) stay on one side of a split."""
    return [json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)]


def _derived_note(split: str, derived: tuple[str, ...], plan: dict, source: Source, seed: int) -> str:
    train_name = plan["train"]
    fractions = dict(zip(SPLITS, _fractions(derived), strict=True))
    how = f"by content hash, seed {seed}, duplicates kept on one side"
    if split == "train":
        cut = " and ".join(derived)
        return f"{fractions['train']:.0%} of {train_name}; {cut} cut from it {how}"
    note = f"{split} derived from {train_name}: {fractions[split]:.0%} {how}"
    unused = [name for name in source.names if name not in plan.values() and name.lower() in HELD_OUT_NAMES]
    if unused:  # e.g. a "dev" split the user may have meant
        listed = ", ".join(repr(name) for name in unused)
        note += (
            f" (the data also has {listed}: to use one, set splits = {{{split} = {json.dumps(unused[0])}}})"
        )
    return note


# ------------------------------------------------------------------------------------------------ sources


def _location(spec: DataSpec) -> str:
    """The local path the data is read from; "" when it comes from the hub."""
    if spec.data_path.strip():
        return spec.data_path.strip()
    return spec.dataset.strip() if is_local(spec.dataset) else ""


def _source(spec: DataSpec, mapping: dict[str, str]) -> Source:
    location = _location(spec)
    if location:
        wanted = tuple(mapping.get(ours, ours) for ours in SPLITS)
        return _cached_local(location, wanted, spec.dataset_config, _signature(location))
    if not spec.dataset.strip():
        raise UserError('no dataset given; set dataset = "user/name" (a hub id) or "path/to/file.jsonl"')
    return _cached_hub(spec.dataset.strip(), spec.dataset_config, spec.revision)


def _signature(location: str) -> tuple:
    """What changes when the data at `location` changes: each file's path, modification time and size."""
    if SPLIT_FIELD in location:
        files = list(template_matches(location).values())
    else:
        path = Path(location).expanduser()
        files = [path] if path.is_file() else sorted(_files_under(path)) if path.is_dir() else []
    stats = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        stats.append((str(file), stat.st_mtime_ns, stat.st_size))
    return tuple(stats)


def _files_under(folder: Path) -> list[Path]:
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git, .cache: not the data
        found.extend(Path(root, name) for name in names if not name.startswith("."))
    return found


@functools.lru_cache(maxsize=CACHED_SOURCES)
def _cached_local(location: str, wanted: tuple[str, ...], config: str, signature: tuple) -> Source:
    del signature  # part of the cache key only: changed files are read again
    return local_source(location, wanted, config)


@functools.lru_cache(maxsize=CACHED_SOURCES)
def _cached_hub(dataset: str, config: str, revision: str) -> Source:
    """The hub dataset's DatasetDict: all its splits in one load_dataset call (the library downloads and
    prepares every split even when asked for one, so one call for all costs no more and says which exist)."""
    what = (
        dataset
        + (f" (configuration {config!r})" if config else "")
        + (f" at revision {revision!r}" if revision else "")
    )
    flag = hub.offline_flag("datasets")
    if flag is None:  # with an offline flag, datasets answers from its cache without trying the hub
        reason = hub.skip_reason("datasets")
        if reason is not None:  # datasets would retry an unreachable hub for tens of seconds first
            raise UserError(f"cannot load {what} from the Hugging Face hub ({reason}); {LOCAL_COPY_FIX}")
    # imported here: datasets takes about a second to import and only hub ids and its own formats need it
    import datasets

    try:
        loaded = datasets.load_dataset(dataset, name=config or None, revision=revision or None)
    # not found, no such configuration, not cached while offline, a network error, ...
    except Exception as exc:
        cache = f"; {flag} is set, so only the local cache was looked in" if flag else ""
        raise UserError(
            f"cannot load {what} from the Hugging Face hub ({failure(exc)}){cache}; check the id, "
            f"dataset_config and revision, or {LOCAL_COPY_FIX}"
        ) from None
    return dict_source(loaded, dataset + (f"@{revision}" if revision else ""))

"""The one data-source chain: a dataset's split comes from the first of these that has it.

    1. an explicit path (config `data_path`, `--data_path`): a file, a folder or a '{split}' template; when
       it is given, nothing else is tried, so a wrong path is an error, not a silent download;
    2. $LORALAB_DATA_DIR: a folder of datasets (rotten_tomatoes/{split}.jsonl, ...);
    3. the Hugging Face hub, when hub.skip_reason("datasets") allows it (no offline flag, and it answers);
    4. an offline stand-in made on this machine (rotten_tomatoes: the vaderSentiment snippets from PyPI;
       stdlib_docstrings: built from this Python's standard library).

A dataset module says only what differs (a `Sources`: which files, how rows are read and split, its hub
loader, its stand-in) and calls load_rows(). Every split comes back with a Provenance: which step answered,
the file or hub id, the row counts and how the split was made. str(provenance) is the line printed; the
training loop compares `origin` (every split of a run must come from the same kind of source).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from loralab import hub
from loralab.data.splits import check_split
from loralab.errors import UserError, short_reason
from loralab.files import data_dir

PATH, DATA_DIR, HUB, OFFLINE = "path", "data_dir", "hub", "offline"  # Provenance.kind, in chain order
KINDS = (PATH, DATA_DIR, HUB, OFFLINE)


@dataclass(frozen=True)
class Provenance:
    """Where one split's rows came from.

    kind: "path" (an explicit data path), "data_dir" ($LORALAB_DATA_DIR), "hub", or "offline" (made on this
        machine: a stand-in, or a dataset built locally).
    location: the file ("folder (n files)" for several), the hub id, or the offline data's cache file.
    rows: how many rows this split has; total: the rows of the source it was taken from, when loralab made
        the split itself (None: the source had the split as it is).
    hub_config: the hub dataset's configuration, if it has one (cnn_dailymail: "3.0.0").
    note: how the split was made and what to know about the data ("own 80/10/10 hash split", ...).
    stand_in: the rows are not the dataset itself but a substitute for it (offline only).
    """

    dataset: str
    split: str
    kind: str
    location: str
    rows: int
    total: int | None = None
    hub_config: str | None = None
    note: str = ""
    stand_in: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown provenance kind {self.kind!r}; one of {', '.join(KINDS)}")

    @property
    def origin(self) -> str:
        """The kind of source all splits of a run must share: "files" (path or data_dir), "hub" or "offline"."""
        return "files" if self.kind in (PATH, DATA_DIR) else self.kind

    def describe(self) -> str:
        """The line printed for this split, e.g. "rotten_tomatoes/test from /data/test.jsonl (1,066 rows)"."""
        label = f"{self.dataset}/{self.split}"
        of_total = "" if self.total is None else f" of {self.total:,}"
        if self.kind == OFFLINE:  # "rotten_tomatoes/test stand-in: 1,057 <what they are, from where>"
            label += " stand-in" if self.stand_in else ""
            return f"{label}: {self.rows:,}{of_total} {self.note}".rstrip()
        count = f"{self.rows:,} rows{of_total}"
        detail = f"{count}; {self.note}" if self.note else count
        place = self.location
        if self.kind == HUB:  # the id is left out when it is just the dataset's name
            place = "the Hugging Face hub" + ("" if self.location == self.dataset else f" {self.location}")
        return f"{label} from {place} ({detail})"

    def __str__(self) -> str:
        return self.describe()

    def as_dict(self) -> dict:
        """The fields as a JSON-ready dict, plus the printed line under "description"."""
        return asdict(self) | {"description": self.describe()}


Loaded = tuple[list[dict], Provenance]
# table files, and whether they hold the one split asked for (else: the whole dataset, to be split)
Files = tuple[list[Path], bool]
# the split's rows, the total they were taken from (None: the source had the split as it is), a note
Read = tuple[list[dict], int | None, str]


@dataclass(frozen=True)
class Sources:
    """What one dataset gives the chain; each callable takes the split name last.

    files_at(path, split): the files an explicit path names (UserError when it names none).
    files_in(root, split): the files under $LORALAB_DATA_DIR, or a note of what was looked for and not found.
    read(files, split, presplit): the split's rows from those files (see Read).
    hub(split): the split's rows from the hub (see Read); None: the dataset is not on the hub.
    offline(split): rows and provenance made on this machine; None: there is no such fallback. With an
        offline_name, a failure is listed with the other sources tried; without, its error is the error.
    """

    dataset: str
    files_at: Callable[[str | Path, str], Files]
    files_in: Callable[[Path, str], Files | str]
    read: Callable[[list[Path], str, bool], Read]
    wanted: str  # what LORALAB_DATA_DIR should hold, for the error when nothing works ({split} filled in)
    hub: Callable[[str], Read] | None = None
    hub_id: str = ""
    hub_config: str | None = None
    offline: Callable[[str], Loaded] | None = None
    offline_name: str = ""  # what the offline fallback is, in the list of what was tried
    missing: str = "{dataset}/{split}"  # what was not found, in that error


def load_rows(sources: Sources, split: str, path: str | Path | None = None) -> Loaded:
    """`split` of the dataset from the first source that has it (see the module docstring), and where from."""
    check_split(split)
    if path is not None:
        return _from_files(sources, split, *sources.files_at(path, split), PATH)
    tried = []
    for step in (_from_data_dir, _from_hub, _from_offline):
        outcome = step(sources, split)
        if isinstance(outcome, tuple):
            return outcome
        if outcome:
            tried.append(outcome)
    missing = sources.missing.format(dataset=sources.dataset, split=split)
    raise UserError(
        f"no {missing} data found (tried: {'; '.join(tried)}); set LORALAB_DATA_DIR to a folder holding "
        f"{sources.wanted.format(split=split)} or pass a data path"
    )


# Each step returns the rows and their provenance, or what it tried and why that did not work (None: it has
# nothing to try for this dataset).


def _from_data_dir(sources: Sources, split: str) -> Loaded | str:
    root = data_dir()
    if root is None:
        return "LORALAB_DATA_DIR not set"
    found = sources.files_in(root, split)
    return found if isinstance(found, str) else _from_files(sources, split, *found, DATA_DIR)


def _from_hub(sources: Sources, split: str) -> Loaded | str | None:
    if sources.hub is None:
        return None
    reason = hub.skip_reason("datasets")  # datasets retries an unreachable hub for ~25 s: ask first
    if reason is not None:
        return f"Hugging Face hub skipped ({reason})"
    try:
        rows, total, note = sources.hub(split)
    except UserError:
        raise
    except Exception as exc:  # any other failure of the hub means: try the next source
        return f"Hugging Face hub failed ({short_reason(exc, 200)})"
    where = sources.hub_id or sources.dataset
    return rows, Provenance(sources.dataset, split, HUB, where, len(rows), total, sources.hub_config, note)


def _from_offline(sources: Sources, split: str) -> Loaded | str | None:
    if sources.offline is None:
        return None
    if not sources.offline_name:  # the dataset itself is made here: its errors are the error
        return sources.offline(split)
    try:
        return sources.offline(split)
    except Exception as exc:  # a stand-in that fails is one more source tried
        return f"{sources.offline_name} failed ({short_reason(exc, 200)})"


def _from_files(sources: Sources, split: str, files: list[Path], presplit: bool, kind: str) -> Loaded:
    rows, total, note = sources.read(files, split, presplit)
    return rows, Provenance(sources.dataset, split, kind, files_location(files), len(rows), total, note=note)


def files_location(files: list[Path]) -> str:
    """The file, or for several "FOLDER (n files)"."""
    return str(files[0]) if len(files) == 1 else f"{files[0].parent} ({len(files)} files)"

"""The data a user keeps on disk, for data.datasets, as a Source: the data's own split names, each split read
the first time it is asked for. A location is one of:

    - one file (.jsonl/.json/.csv/.tsv/.parquet, or .txt as blocks of text): the whole dataset, split "train";
    - a path with '{split}' (data/{split}.jsonl, data/{split}/all.csv): one file per split, found by glob;
    - a folder of split files <name>.<ext> (train.jsonl, dev.csv, ...) when one is named for a wanted split;
    - a folder holding one data file and no others, below it either: that file;
    - a folder written by datasets' save_to_disk: a DatasetDict (dataset_dict.json), or one Dataset (state.json
      and dataset_info.json), which is the split "train";
    - any other folder of data files the `datasets` library reads (a downloaded hub repository with
      data/train-00000-of-00001.parquet, ...), through datasets.load_dataset.

The hub's DatasetDicts become Sources here too (dict_source), so ClassLabel names are read in one place.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from loralab.data.tables import TABLE_SUFFIXES, TEXT_SUFFIX, read_located_table, read_text_blocks
from loralab.errors import UserError, short_reason
from loralab.files import read_json_object

DATA_SUFFIXES = (*TABLE_SUFFIXES, TEXT_SUFFIX)
SPLIT_FIELD = "{split}"


@dataclass(frozen=True)
class Part:
    """One split as the data has it: its rows, the ClassLabel names of its columns, and where it is."""

    rows: list[dict]
    class_names: dict[str, tuple[str, ...]]
    location: str


class Source:
    """A dataset's splits by the data's own names; each is read once, when first asked for.

    derived: a slot where data.datasets keeps the last splits it cut from this source's train split.
    """

    def __init__(self, readers: dict[str, Callable[[], Part]], where: str) -> None:
        self.where = where  # what the errors call the data: the path or the hub id
        self._readers = readers
        self._parts: dict[str, Part] = {}
        self.derived: tuple[object, dict[str, list[dict]]] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._readers)

    def part(self, name: str) -> Part:
        if name not in self._parts:
            self._parts[name] = self._readers[name]()
        return self._parts[name]


def local_source(location: str, wanted: Collection[str], config: str = "") -> Source:
    """The Source at a local path (see the module docstring). `wanted`: the data's names for the splits asked
    for, which decide whether a folder is a folder of split files; config: the configuration of a folder that
    the datasets library reads (a downloaded hub repository with several)."""
    if SPLIT_FIELD in location:
        return _template_source(location)
    path = Path(location).expanduser()
    if not path.exists():
        raise UserError(
            f"{path} not found; check the path (a Hugging Face dataset is named by its id, user/name)"
        )
    if path.is_file():
        return Source({"train": lambda: file_part(path)}, str(path))
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return _disk_source(path)
    files = split_files(path)
    if any(name in files for name in wanted):
        return Source({name: _file_reader(file) for name, file in files.items()}, str(path))
    if len(files) == 1 and not _data_files_below(path):
        (file,) = files.values()
        return Source({"train": _file_reader(file)}, str(file))
    return _library_source(path, config)


def file_part(path: Path) -> Part:
    """All rows of one local file."""
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise UserError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; use one of {', '.join(DATA_SUFFIXES)}"
        )
    located = read_text_blocks(path) if suffix == TEXT_SUFFIX else read_located_table(path, ())
    return Part([row for _, row in located], {}, str(path))


def _file_reader(path: Path) -> Callable[[], Part]:
    return lambda: file_part(path)


def split_files(folder: Path) -> dict[str, Path]:
    """The data files directly in `folder` by name without suffix (train.jsonl -> "train"), hidden ones left out."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in DATA_SUFFIXES:
            continue
        if path.stem in files:
            raise UserError(
                f"{folder} has two files for the split {path.stem!r}: {files[path.stem].name} and "
                f"{path.name}; keep one"
            )
        files[path.stem] = path
    return files


def _data_files_below(folder: Path) -> bool:
    """Whether a subfolder (not a hidden one) holds a data file."""
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if Path(root) != folder and any(Path(n).suffix.lower() in DATA_SUFFIXES for n in names):
            return True
    return False


def template_matches(location: str) -> dict[str, Path]:
    """The files a '{split}' path names, by the text that stands for {split} (the same text where it repeats)."""
    pattern = os.path.expanduser(location)
    first, *rest = pattern.split(SPLIT_FIELD)
    regex = re.escape(first) + "".join(
        ("(?P<split>[^/]+)" if i == 0 else "(?P=split)") + re.escape(piece) for i, piece in enumerate(rest)
    )
    found: dict[str, Path] = {}
    for match in sorted(glob.glob(glob.escape(first) + "".join("*" + glob.escape(p) for p in rest))):
        named = re.fullmatch(regex, match)
        if named and Path(match).is_file() and not named["split"].startswith("."):
            found[named["split"]] = Path(match)
    return found


def _template_source(location: str) -> Source:
    files = template_matches(location)
    if not files:
        train = os.path.expanduser(location.replace(SPLIT_FIELD, "train"))
        raise UserError(f"no file matches {location} (e.g. {train}); check the path")
    return Source({name: _file_reader(file) for name, file in files.items()}, location)


def _disk_source(folder: Path) -> Source:
    """A save_to_disk folder; the split names come from dataset_dict.json, so only the split read loads data."""
    fix = "check that the folder was written by datasets' save_to_disk, or pass a data file"
    if (folder / "dataset_dict.json").is_file():
        names = read_json_object(folder / "dataset_dict.json", "a DatasetDict description", fix).get("splits")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UserError(f"{folder / 'dataset_dict.json'} lists no splits; {fix}")
        return Source({name: _disk_reader(folder / name, fix) for name in names}, str(folder))
    return Source({"train": _disk_reader(folder, fix)}, str(folder))  # one Dataset: the whole data


def _disk_reader(folder: Path, fix: str) -> Callable[[], Part]:
    def read() -> Part:
        # imported here: datasets takes about a second to import and only its own formats need it
        import datasets

        try:
            loaded = datasets.load_from_disk(str(folder))
        except Exception as exc:  # FileNotFoundError, a corrupt arrow file, a newer format, ...
            raise UserError(
                f"cannot load {folder} with datasets.load_from_disk ({short_reason(exc)}); {fix}"
            ) from None
        return dataset_part(loaded, str(folder))

    return read


def _library_source(folder: Path, config: str) -> Source:
    # imported here: datasets takes about a second to import and only folders in its layouts need it
    import datasets

    try:
        loaded = datasets.load_dataset(str(folder), name=config or None)
    except Exception as exc:  # no data files, files with different columns, an unreadable file, ...
        raise UserError(
            f"{folder} has no split files (train.jsonl, validation.jsonl, ...) and the datasets library cannot "
            f"read it ({failure(exc)}); put split files there or pass one data file"
        ) from None
    return dict_source(loaded, str(folder))


def dict_source(loaded: object, location: str) -> Source:
    """A Source over a datasets DatasetDict (split name -> Dataset); its rows become plain dicts when read."""
    splits = dict(loaded.items()) if hasattr(loaded, "items") else {"train": loaded}
    return Source({name: _dataset_reader(data, location) for name, data in splits.items()}, location)


def _dataset_reader(data: object, location: str) -> Callable[[], Part]:
    return lambda: dataset_part(data, location)


def dataset_part(data: object, location: str) -> Part:
    """A datasets Dataset as plain rows (ClassLabel columns keep their integers) and its ClassLabel names."""
    import datasets  # loaded already: `data` is one of its objects

    names = {
        column: tuple(feature.names)
        for column, feature in (getattr(data, "features", None) or {}).items()
        if isinstance(feature, datasets.ClassLabel)
    }
    return Part(list(data.to_list()), names, location)


def failure(exc: BaseException) -> str:
    """An exception's first line, with that of the error that caused it when they differ ("An error occurred
    while generating the dataset: Couldn't cast ...")."""
    root = exc
    while root.__cause__ is not None or (root.__context__ is not None and not root.__suppress_context__):
        root = root.__cause__ or root.__context__
    first, cause = short_reason(exc, 120), short_reason(root, 120)
    return first if root is exc or cause in first else f"{first}: {cause}"

"""rotten_tomatoes (Pang & Lee 2005): review snippets as rows {"text": str, "label": 1 positive / 0 negative}.

Sources (data.sources' chain): an explicit path; $LORALAB_DATA_DIR/rotten_tomatoes/{split}.jsonl; the Hugging
Face hub; and, for machines that reach only PyPI, a stand-in: the movie-review snippets with human ratings
shipped in the vaderSentiment 3.3.2 source distribution (Hutto & Gilbert, ICWSM 2014), split 80/10/10 with a
fixed seed.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from loralab.data.sources import OFFLINE, Files, Loaded, Provenance, Read, Sources, load_rows
from loralab.data.splits import SPLITS
from loralab.data.tables import TABLE_SUFFIXES, read_located_table
from loralab.errors import UserError
from loralab.files import cache_dir, sha256_of, write_lines_atomically

NAME = "rotten_tomatoes"
COLUMNS = ("text", "label")
VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
VADER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
VADER_SNIPPETS = "movieReviewSnippets_GroundTruth.txt"
VADER_NOTE = (
    "Rotten Tomatoes snippets with human ratings from the vaderSentiment 3.3.2 sdist (Hutto & Gilbert "
    "2014; own 80/10/10 split, not the HF split)"
)
PIP_TIMEOUT_S = 600


def load_rotten_tomatoes(split: str, path: str | Path | None = None) -> Loaded:
    """`split` of rotten_tomatoes as rows {"text": str, "label": 1 pos / 0 neg}, and where they came from."""
    sources = Sources(
        NAME,
        files_at=lambda path, split: ([_explicit_file(path, split)], True),
        files_in=_files_in_data_dir,
        read=_read,
        wanted=f"{NAME}/{{split}}.jsonl",
        hub=lambda split: (_hub_rows(split), None, ""),
        hub_id=NAME,
        offline=_vader,
        offline_name="vaderSentiment snippets from PyPI",
    )
    return load_rows(sources, split, path)


def _explicit_file(path: str | Path, split: str) -> Path:
    """The file an explicit path names for `split`: a folder's {split}.<ext>, a '{split}' template, or the file
    (which then serves every split)."""
    text = str(path)
    if "{split}" in text:
        return Path(text.replace("{split}", split)).expanduser()
    path = Path(text).expanduser()
    if path.is_dir():
        for suffix in TABLE_SUFFIXES:
            if (path / f"{split}{suffix}").is_file():
                return path / f"{split}{suffix}"
        raise UserError(
            f"{path} has no {split}.jsonl, {split}.csv or {split}.parquet; add one or pass a file path"
        )
    return path


def _files_in_data_dir(root: Path, split: str) -> Files | str:
    file = root / NAME / f"{split}.jsonl"
    return ([file], True) if file.is_file() else f"{file} not found"


def _read(files: list[Path], split: str, presplit: bool) -> Read:
    (file,) = files
    return sentiment_rows(file, read_located_table(file, COLUMNS)), None, ""


def sentiment_rows(path: Path, rows: list[tuple[str, dict]]) -> list[dict]:
    """Rows reduced to {"text": str, "label": 0 or 1}; labels may be ints, 0/1 floats or "0"/"1" strings.
    A text must say something: an empty one is an error, not an example of nothing."""
    out = []
    for where, row in rows:
        text, label = row["text"], row["label"]
        if not isinstance(text, str):
            raise UserError(f"{path}, {where}: text must be a string, got {text!r}; fix that row")
        if not text.strip():
            raise UserError(f"{path}, {where}: the text is empty; write the review there or remove that row")
        value = label.strip() if isinstance(label, str) else label
        if isinstance(value, bool) or value not in (0, 1, "0", "1"):
            raise UserError(
                f"{path}, {where}: label {label!r} is not 0 (negative) or 1 (positive); fix the labels"
            )
        out.append({"text": text, "label": int(value)})
    return out


def _hub_rows(split: str) -> list[dict]:
    # imported here: datasets takes seconds to import and only the hub step needs it (`loralab --help`
    # and runs on local data stay fast)
    import datasets

    dataset = datasets.load_dataset(NAME, split=split)
    return [{"text": t, "label": int(y)} for t, y in zip(dataset["text"], dataset["label"], strict=True)]


# ---------------------------------------------------------------------------------------------- vaderSentiment


def _vader(split: str) -> Loaded:
    file = _vader_split_file(split)
    rows = sentiment_rows(file, read_located_table(file, COLUMNS))
    return rows, Provenance(
        NAME, split, OFFLINE, str(file), len(rows), note=f"{VADER_NOTE} at {file}", stand_in=True
    )


def _vader_split_file(split: str) -> Path:
    """cache_dir()/datasets/rotten_tomatoes_vader/{split}.jsonl, made from the (cached) sdist when missing."""
    folder = cache_dir() / "datasets" / "rotten_tomatoes_vader"
    files = {name: folder / f"{name}.jsonl" for name in SPLITS}
    if not all(f.is_file() for f in files.values()):
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in _vader_splits(_parse_vader_snippets(_vader_sdist())).items():
            write_lines_atomically(files[name], rows)
    return files[split]


def _vader_sdist() -> Path:
    """The vaderSentiment 3.3.2 sdist in cache_dir()/downloads, fetched with pip once and checked by SHA-256."""
    downloads = cache_dir() / "downloads"
    target = downloads / VADER_SDIST
    if target.is_file() and sha256_of(target) == VADER_SHA256:
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=downloads, prefix=".pip-"))
    try:
        command = [sys.executable, "-m", "pip", "download", "vaderSentiment==3.3.2", "--no-deps"]
        command += ["--no-binary", ":all:", "--disable-pip-version-check", "-d", str(staging)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        fetched = staging / VADER_SDIST
        if done.returncode != 0 or not fetched.is_file():
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
            raise RuntimeError(f"pip download vaderSentiment==3.3.2 failed: {last[0]}")
        if sha256_of(fetched) != VADER_SHA256:
            raise RuntimeError(f"{VADER_SDIST} from the package index has an unexpected SHA-256")
        os.replace(fetched, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _parse_vader_snippets(sdist: Path) -> list[dict]:
    """Snippets of movieReviewSnippets_GroundTruth.txt (id, mean rating -4..+4, text) as 0/1 rows.

    Rating 0 rows are dropped; a text seen before is dropped too, so the splits cannot share a sentence.
    """
    with tarfile.open(sdist) as outer:
        member = next(m for m in outer.getmembers() if m.name.endswith(VADER_ARCHIVE))
        archive = outer.extractfile(member).read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as inner:
        member = next(m for m in inner.getmembers() if m.name.endswith(VADER_SNIPPETS))
        text = inner.extractfile(member).read().decode("utf-8")
    rows, seen = [], set()
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        parts = line.rstrip("\r").split("\t", 2)
        if len(parts) != 3:
            raise ValueError(
                f"{VADER_SNIPPETS}, line {number}: expected id, rating and text separated by tabs"
            )
        rating, snippet = float(parts[1]), parts[2].strip()
        if rating == 0 or snippet in seen:
            continue
        seen.add(snippet)
        rows.append({"text": snippet, "label": 1 if rating > 0 else 0})
    return rows


def _vader_splits(rows: list[dict]) -> dict[str, list[dict]]:
    """Shuffle with random.Random(0), then 80% train, 10% validation, 10% test."""
    rows = list(rows)
    random.Random(0).shuffle(rows)
    i1, i2 = int(len(rows) * 0.8), int(len(rows) * 0.9)
    return {"train": rows[:i1], "validation": rows[i1:i2], "test": rows[i2:]}

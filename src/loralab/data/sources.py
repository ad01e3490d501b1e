"""Where training data comes from: tables on disk, and the rotten_tomatoes sentiment task from the first source that works.

rotten_tomatoes sources, in order: an explicit path; $LORALAB_DATA_DIR/rotten_tomatoes/{split}.jsonl; the Hugging
Face hub; and, for machines that reach only PyPI, the movie-review snippets with human ratings shipped in the
vaderSentiment 3.3.2 source distribution (Hutto & Gilbert, ICWSM 2014), split 80/10/10 with a fixed seed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from loralab.errors import UserError
from loralab.files import cache_dir, data_dir, sha256_of

SPLITS = ("train", "validation", "test")
TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")

HUB_PROBE_TIMEOUT_S = 3.0
VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
VADER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
VADER_SNIPPETS = "movieReviewSnippets_GroundTruth.txt"
PIP_TIMEOUT_S = 600


# ---------------------------------------------------------------------------------------------- tables


def read_table(path: str | Path, columns: Sequence[str]) -> list[dict]:
    """Rows of a .jsonl/.json (JSON lines or a JSON list), .csv, .tsv or .parquet file; each has `columns`."""
    return [row for _, row in read_located_table(path, columns)]


def read_located_table(path: str | Path, columns: Sequence[str]) -> list[tuple[str, dict]]:
    """Like read_table, each row with where it stands in the file ("line 7", "item 3", "row 2")."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path} not found; check the path")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a table file; pass a {'/'.join(TABLE_SUFFIXES)} file")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise UserError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; use one of {', '.join(TABLE_SUFFIXES)}"
        )
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty; it needs a header or at least one row")
    try:
        if suffix == ".parquet":
            rows = _read_parquet(path, columns)
        elif suffix in (".csv", ".tsv"):
            rows = _read_delimited(path, columns, "\t" if suffix == ".tsv" else ",")
        else:
            rows = _read_json(path, columns)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc}); check its permissions") from None
    if not rows:
        raise UserError(f"{path} is empty; it has no data rows")
    return rows


def _check_columns(path: Path, present: Sequence[str], columns: Sequence[str], where: str = "") -> None:
    missing = [c for c in columns if c not in present]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        have = ", ".join(repr(str(c)) for c in present) or "none"
        raise UserError(
            f"{path}{where}: missing column(s) {names}; columns present: {have}; rename or add them"
        )


def _read_json(path: Path, columns: Sequence[str]) -> list[tuple[str, dict]]:
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg}); fix that line") from None
        numbered = list(enumerate(records, 1))
        label = "item"
    else:
        numbered = []
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                numbered.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"{path}, line {number}: not valid JSON ({exc.msg}); fix or remove that line"
                ) from None
        label = "line"
    for number, record in numbered:
        if not isinstance(record, dict):
            raise UserError(
                f"{path}, {label} {number}: expected a JSON object with {', '.join(columns)}; fix it"
            )
        _check_columns(path, list(record), columns, f" ({label} {number})")
    return [(f"{label} {number}", record) for number, record in numbered]


def _read_delimited(path: Path, columns: Sequence[str], delimiter: str) -> list[tuple[str, dict]]:
    rows = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter, strict=True)
        try:
            _check_columns(path, reader.fieldnames or [], columns)
            for row in reader:
                if None in row:
                    raise UserError(
                        f"{path}, line {reader.line_num}: more fields than the header; quote fields containing {delimiter!r}"
                    )
                short = [c for c in columns if row[c] is None]
                if short:
                    raise UserError(
                        f"{path}, line {reader.line_num}: no value for {', '.join(short)}; fix that line"
                    )
                rows.append((f"line {reader.line_num}", row))
        except csv.Error as exc:
            raise UserError(f"{path}, line {reader.line_num}: unparsable ({exc}); fix that line") from None
    return rows


def _read_parquet(path: Path, columns: Sequence[str]) -> list[tuple[str, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"reading {path} needs pyarrow; pip install pyarrow") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise UserError(
            f"{path} is not a readable parquet file ({' '.join(str(exc).split())}); check it"
        ) from None
    _check_columns(path, table.column_names, columns)
    return [(f"row {number}", row) for number, row in enumerate(table.to_pylist(), 1)]


# ---------------------------------------------------------------------------------------------- rotten_tomatoes


def load_rotten_tomatoes(split: str, path: str | Path | None = None) -> tuple[list[dict], str]:
    """`split` of rotten_tomatoes as rows {"text": str, "label": 1 pos / 0 neg}, and a line saying where from."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if path is not None:
        file = _explicit_file(path, split)
        rows = _sentiment_rows(file, read_located_table(file, ["text", "label"]))
        return rows, f"rotten_tomatoes/{split} from {file} ({len(rows):,} rows)"

    tried = []
    root = data_dir()
    if root is None:
        tried.append("LORALAB_DATA_DIR not set")
    else:
        file = root / "rotten_tomatoes" / f"{split}.jsonl"
        if file.is_file():
            rows = _sentiment_rows(file, read_located_table(file, ["text", "label"]))
            return rows, f"rotten_tomatoes/{split} from {file} ({len(rows):,} rows)"
        tried.append(f"{file} not found")

    reason = _hub_skip_reason()
    if reason is None:
        try:
            rows = _hub_rows(split)
            return rows, f"rotten_tomatoes/{split} from the Hugging Face hub ({len(rows):,} rows)"
        except Exception as exc:  # any failure of the hub means: try the next source
            reason = f"failed ({_one_line(exc)})"
    tried.append(f"Hugging Face hub {reason}")

    try:
        file = _vader_split_file(split)
        rows = _sentiment_rows(file, read_located_table(file, ["text", "label"]))
    except Exception as exc:
        tried.append(f"vaderSentiment snippets from PyPI failed ({_one_line(exc)})")
    else:
        return rows, (
            f"rotten_tomatoes/{split} stand-in: {len(rows):,} Rotten Tomatoes snippets with human ratings from the "
            f"vaderSentiment 3.3.2 sdist (Hutto & Gilbert 2014; own 80/10/10 split, not the HF split) at {file}"
        )

    raise UserError(
        f"no rotten_tomatoes/{split} data found (tried: {'; '.join(tried)}); "
        f"set LORALAB_DATA_DIR to a folder holding rotten_tomatoes/{split}.jsonl or pass a data path"
    )


def _explicit_file(path: str | Path, split: str) -> Path:
    """The file an explicit path names for `split`: a folder's {split}.<ext>, a '{split}' template, or the file."""
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


def _sentiment_rows(path: Path, rows: list[tuple[str, dict]]) -> list[dict]:
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


def _one_line(exc: BaseException, limit: int = 200) -> str:
    message = " ".join(str(exc).split()) or type(exc).__name__
    return message if len(message) <= limit else message[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- hub


def _hub_skip_reason() -> str | None:
    """Why not to try the hub (an offline flag is set, or it does not answer within seconds), else None.

    datasets itself retries an unreachable hub for about 25 s before it gives up, so it is probed first.
    """
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return f"skipped ({var} is set)"
    url = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    outcome = [f"no answer in {HUB_PROBE_TIMEOUT_S:g} s"]

    def probe() -> None:
        try:
            urllib.request.urlopen(url, timeout=HUB_PROBE_TIMEOUT_S).close()
            outcome[0] = None
        except Exception as exc:  # HTTPError (e.g. a captive 404), URLError, timeouts, bad HF_ENDPOINT
            outcome[0] = _one_line(getattr(exc, "reason", None) or exc, 80)

    thread = threading.Thread(target=probe, daemon=True)  # a thread also bounds a hanging DNS lookup
    thread.start()
    thread.join(HUB_PROBE_TIMEOUT_S + 1)
    return None if outcome[0] is None else f"skipped ({url} unreachable: {outcome[0]})"


def _hub_rows(split: str) -> list[dict]:
    import datasets

    dataset = datasets.load_dataset("rotten_tomatoes", split=split)
    return [{"text": t, "label": int(y)} for t, y in zip(dataset["text"], dataset["label"], strict=True)]


# ---------------------------------------------------------------------------------------------- vaderSentiment


def _vader_split_file(split: str) -> Path:
    """cache_dir()/datasets/rotten_tomatoes_vader/{split}.jsonl, made from the (cached) sdist when missing."""
    folder = cache_dir() / "datasets" / "rotten_tomatoes_vader"
    files = {name: folder / f"{name}.jsonl" for name in SPLITS}
    if not all(f.is_file() for f in files.values()):
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in _vader_splits(_parse_vader_snippets(_vader_sdist())).items():
            _write_jsonl_atomic(files[name], rows)
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


def _write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

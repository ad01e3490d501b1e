"""Reading a table file: .jsonl/.json (JSON lines or a JSON list), .csv, .tsv or .parquet, each row a dict; and
a plain-text file (.txt) as blocks of lines, each row {"text": block}, for raw-text training.

Every problem is a one-line UserError naming the file, the line (or item, or row) and the fix: a missing file,
an unsupported type, a missing column, a line that does not parse, text that is not UTF-8.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from loralab.errors import UserError
from loralab.files import json_lines

TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
TEXT_SUFFIX = ".txt"  # read by read_text_blocks, not read_table (a table needs named columns)


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
        numbered = json_lines(text, path)
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
        import pyarrow.parquet as pq  # imported here: only parquet files need it, and it may be missing
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


def read_text_blocks(path: str | Path) -> list[tuple[str, dict]]:
    """Rows {"text": block} of a plain-text file, each with the line it starts on ("line 5"). Blocks are runs of
    non-blank lines (a speech, a paragraph, a poem's stanza), joined with newlines; blank lines separate them."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path} {'is a folder' if path.is_dir() else 'not found'}; pass a text file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc}); check its permissions") from None
    rows: list[tuple[str, dict]] = []
    block: list[str] = []
    start = 0
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # line numbers as editors count
    for number, line in enumerate([*lines, ""], 1):  # the "" ends the last block
        if line.strip():
            start = start if block else number
            block.append(line)
        elif block:
            rows.append((f"line {start}", {"text": "\n".join(block)}))
            block = []
    if not rows:
        raise UserError(f"{path} is empty; it has no text")
    return rows

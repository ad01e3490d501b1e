"""Instruction -> Python code data: python_codes_25k and stdlib_docstrings, as rows {"question", "answer"}.

python_codes_25k (flytech/python-codes-25k, one "train" split of 24,813 rows) comes from data.sources' chain:
an explicit path; $LORALAB_DATA_DIR/python_codes_25k/ or $LORALAB_DATA_DIR/python_codes_25k_excerpt/ (*.jsonl;
the shared excerpt has the first 356 rows only); the Hugging Face hub. question = instruction, plus "\\n" + input when the
input is not empty; answer = output without its Markdown code fence. Every output of the excerpt is exactly
"```python\\n<code>\\n```" with nothing before or after; outputs with text around a fenced block keep only the
first block, outputs without a fence are kept whole. Kept as the source has them: inputs that are mostly filler
("Setting up your daily to-do list..."; empty in 21 rows), and code that is not valid Python (88 of the 356
excerpt answers do not parse on Python 3.11, 78 on 3.12+: quotes nested in same-quote strings, shell commands
in python fences). The source has one split: train/validation/test are made 80/10/10 by content hash
(splits.hash_split), keeping rows with the same question or answer together.

stdlib_docstrings needs no download (an explicit path, then $LORALAB_DATA_DIR/stdlib_docstrings/, then this
offline build): (docstring -> function source) pairs of the running Python's standard
library, built with `ast` once and cached as JSON lines under cache_dir()/datasets/stdlib_docstrings/, keyed by
the Python version. question = the docstring (inspect.cleandoc) + a blank line + the def line(s); answer = the
function's source (decorators included) without its docstring, dedented. CPython 3.11.7 gives 3,845 pairs
in about 5 s on one core (3.10: 3,812; 3.12: 3,691; 3.13: 3,554); later loads read the cache.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import re
import sys
import sysconfig
import textwrap
import time
import tokenize
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from loralab.data.sources import OFFLINE, Files, Loaded, Provenance, Read, Sources, load_rows
from loralab.data.splits import explicit_files, hash_split
from loralab.data.tables import read_table
from loralab.errors import UserError
from loralab.files import cache_dir, write_lines_atomically

CODES_HUB_ID = "flytech/python-codes-25k"
CODES_COLUMNS = ("instruction", "input", "output")
CODES_FOLDERS = ("python_codes_25k", "python_codes_25k_excerpt")
CODES_FULL_ROWS = 24_813
HASH_SPLIT = "own 80/10/10 hash split"

STDLIB_FORMAT = 1  # bump when the pairs change: it is part of the cache file name
STDLIB_MIN_DOC_CHARS = 30
STDLIB_LINES = (3, 60)  # source span in lines (decorators to last line, docstring included), inclusive
STDLIB_SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "lib-dynload",
}


# ---------------------------------------------------------------------------------------------- shared


def _question_answer_keys(row: dict) -> list[str]:
    return ["q:" + row["question"], "a:" + row["answer"]]


def _rows_from(
    files: list[Path], columns: tuple[str, ...], convert: Callable[[Path, list[dict]], list[dict]]
) -> list[dict]:
    rows: list[dict] = []
    for file in files:
        rows.extend(convert(file, read_table(file, columns)))
    return rows


def _pick(rows: list[dict], split: str, seed: str, presplit: bool) -> Read:
    """`rows` as they are when they already are one split, else their share of the 80/10/10 hash split; with
    the total they were taken from and a note saying so."""
    chosen = rows if presplit else hash_split(rows, _question_answer_keys, seed)[split]
    if not chosen:
        raise UserError(f"{seed}/{split} is empty ({len(rows)} rows in all); use a larger data file")
    return (chosen, None, "") if presplit else (chosen, len(rows), HASH_SPLIT)


# ---------------------------------------------------------------------------------------------- python_codes_25k


def strip_code_fence(text: str) -> str:
    """Code of a Markdown answer: the content of a surrounding ```python (or bare ```) fence, stripped.

    Text before or after a fenced block is dropped (the first block wins); an unclosed opening fence is dropped;
    text without a fence is returned stripped.
    """
    stripped = text.strip()
    whole = re.fullmatch(r"```[ \t]*[\w+#.-]*[ \t]*\n(.*?)\n?[ \t]*```", stripped, re.DOTALL)
    if whole is None:
        whole = re.search(
            r"(?m)^[ \t]*```[ \t]*[\w+#.-]*[ \t]*\n(.*?)\n[ \t]*```[ \t]*$", stripped, re.DOTALL
        )
    if whole is not None:
        code = whole.group(1)
    elif stripped.startswith("```"):
        code = stripped.partition("\n")[2]
    else:
        code = stripped
    return textwrap.dedent(code).strip()


def codes_rows(path: Path | str, rows: list[dict]) -> list[dict]:
    """Rows {"question", "answer", "instruction", "input"} from instruction/input/output records.

    Rows whose instruction or code is empty are dropped.
    """
    out = []
    for number, row in enumerate(rows, 1):
        instruction, given, output = row["instruction"], row["input"], row["output"]
        given = "" if given is None else given
        if not all(isinstance(v, str) for v in (instruction, given, output)):
            raise UserError(f"{path}, row {number}: instruction, input and output must be text; fix that row")
        instruction, given = instruction.strip(), given.strip()
        answer = strip_code_fence(output)
        if not instruction or not answer:
            continue
        question = f"{instruction}\n{given}" if given else instruction
        out.append({"question": question, "answer": answer, "instruction": instruction, "input": given})
    if not out:
        raise UserError(f"{path} has no row with both an instruction and code; check the file")
    return out


def load_python_codes_25k(split: str, path: str | Path | None = None) -> Loaded:
    """`split` of python_codes_25k as rows {"question", "answer", "instruction", "input"}, and where from."""
    sources = Sources(
        "python_codes_25k",
        files_at=explicit_files,
        files_in=_codes_in_data_dir,
        read=_read_codes,
        wanted="python_codes_25k_excerpt/*.jsonl",
        hub=_codes_from_hub,
        hub_id=CODES_HUB_ID,
        missing="{dataset}",  # the source has one split: the whole dataset is what is missing
    )
    return load_rows(sources, split, path)


def _codes_in_data_dir(root: Path, split: str) -> Files | str:
    for folder in CODES_FOLDERS:
        files = sorted((root / folder).glob("*.jsonl"))
        if files:
            return files, False
    return "; ".join(f"no *.jsonl in {root / folder}" for folder in CODES_FOLDERS)


def _read_codes(files: list[Path], split: str, presplit: bool) -> Read:
    rows = _rows_from(files, CODES_COLUMNS, codes_rows)
    chosen, total, note = _pick(rows, split, "python_codes_25k", presplit)
    if all(file.parent.name == "python_codes_25k_excerpt" for file in files):
        note += f"; an excerpt: {len(rows):,} of the {CODES_FULL_ROWS:,} rows"
    return chosen, total, note


def _codes_from_hub(split: str) -> Read:
    return _pick(codes_rows(CODES_HUB_ID, _codes_hub_records()), split, "python_codes_25k", False)


def _codes_hub_records() -> list[dict]:
    # imported here: datasets takes seconds to import and only the hub step needs it (`loralab --help`
    # and runs on local data stay fast)
    import datasets

    dataset = datasets.load_dataset(CODES_HUB_ID, split="train")
    return [{c: record[c] for c in CODES_COLUMNS} for record in dataset]


# ---------------------------------------------------------------------------------------------- stdlib_docstrings


def stdlib_root() -> Path:
    """The folder of the running Python's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_cache_file() -> Path:
    """cache_dir()/datasets/stdlib_docstrings/v<format>-<implementation>-<version>.jsonl."""
    version = f"{platform.python_implementation().lower()}-{platform.python_version()}"
    return cache_dir() / "datasets" / "stdlib_docstrings" / f"v{STDLIB_FORMAT}-{version}.jsonl"


def stdlib_files(root: Path) -> list[Path]:
    """Library .py files under `root`, sorted by relative path; no tests, idlelib, site-packages or configs."""
    files = []
    for folder, dirs, names in os.walk(root):
        relative = Path(folder).relative_to(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in STDLIB_SKIP_DIRS and not (relative == Path(".") and d.startswith("config-"))
        )
        for name in sorted(names):
            if name.endswith(".py") and not name.startswith(("test_", "_sysconfigdata")):
                files.append(Path(folder) / name)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def build_stdlib_pairs(root: Path | None = None) -> list[dict]:
    """All (docstring -> function) pairs of the standard library at `root`, in a stable order.

    Public functions and methods (of public classes, also under module-level if/try) whose cleaned docstring
    has at least 30 characters, whose source (decorators to last line, docstring included) spans 3-60 lines and
    whose code is more than a stub (pass, ..., raise NotImplementedError). A question seen before is skipped.
    """
    root = stdlib_root() if root is None else Path(root)
    pairs, seen, ids = [], set(), set()
    for file in stdlib_files(root):
        module = ".".join(file.relative_to(root).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        try:
            with tokenize.open(file) as handle:
                text = handle.read()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(text, filename=str(file))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        lines = text.split("\n")
        for qualname, node in _public_functions(tree.body, ""):
            pair = _stdlib_pair(lines, node)
            if pair is not None and pair["question"] not in seen:
                seen.add(pair["question"])
                ident = f"{module}:{qualname}"
                ident = f"{ident}@{node.lineno}" if ident in ids else ident  # one per platform variant
                ids.add(ident)
                pairs.append({"id": ident, **pair})
    return pairs


def _public_functions(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, ast.FunctionDef]]:
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not node.name.startswith("_"):
                yield prefix + node.name, node
        elif isinstance(node, ast.ClassDef):
            if not node.name.startswith("_"):
                yield from _public_functions(node.body, f"{prefix}{node.name}.")
        elif isinstance(node, ast.If):
            yield from _public_functions(node.body + node.orelse, prefix)
        elif isinstance(node, ast.Try):
            handlers = [stmt for handler in node.handlers for stmt in handler.body]
            yield from _public_functions(node.body + handlers + node.orelse + node.finalbody, prefix)


def _stdlib_pair(lines: list[str], node: ast.FunctionDef) -> dict | None:
    """{"question", "answer"} for one function, or None when it does not qualify."""
    doc = ast.get_docstring(node, clean=True)
    if doc is None or len(doc) < STDLIB_MIN_DOC_CHARS or len(node.body) < 2 or _is_stub(node.body[1:]):
        return None
    docnode = node.body[0]
    before = lines[docnode.lineno - 1].encode()[: docnode.col_offset].decode(errors="replace")
    after = lines[docnode.end_lineno - 1].encode()[docnode.end_col_offset :].decode(errors="replace").strip()
    if before.strip() or (after and not after.startswith("#")):
        return None  # the docstring shares a line with other code
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    if not STDLIB_LINES[0] <= node.end_lineno - first + 1 <= STDLIB_LINES[1]:
        return None
    head = lines[node.lineno - 1 : docnode.lineno - 1]
    while head and (not head[-1].strip() or head[-1].lstrip().startswith("#")):
        head = head[:-1]  # comments between the def line and the docstring belong to the body
    body = lines[docnode.end_lineno : node.end_lineno]
    while body and not body[0].strip():
        body = body[1:]
    header = _dedent(head, node.col_offset)
    code = _dedent(lines[first - 1 : docnode.lineno - 1] + body, node.col_offset)
    if not header:
        return None
    try:
        ast.parse(code)
    except SyntaxError:
        return None
    return {"question": f"{doc}\n\n{header}", "answer": code}


def _is_stub(body: list[ast.stmt]) -> bool:
    if len(body) != 1:
        return False
    stmt = body[0]
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and stmt.value.value is Ellipsis:
        return True
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        target = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(target, ast.Name) and target.id == "NotImplementedError"
    return False


def _dedent(lines: list[str], width: int) -> str:
    """Lines without the first `width` characters of indentation (lines with less are kept: string contents)."""
    out = [line[width:] if line[:width].isspace() or not line[:width] else line for line in lines]
    return "\n".join(line.rstrip() for line in out).strip("\n")


def stdlib_pairs() -> tuple[list[dict], Path, float | None]:
    """The cached pairs of this Python's standard library (built when missing): pairs, cache file, build seconds."""
    file = stdlib_cache_file()
    if file.is_file():
        try:
            return read_table(file, ["id", "question", "answer"]), file, None
        except UserError:
            pass  # unreadable cache: build it again
    print(f"loralab: building stdlib_docstrings from {stdlib_root()} (one time, ~5 s)...", file=sys.stderr)
    start = time.perf_counter()
    pairs = build_stdlib_pairs()
    seconds = time.perf_counter() - start
    if not pairs:
        raise UserError(
            f"no Python sources found in {stdlib_root()}; install this Python's standard library .py files "
            "or pass a data path"
        )
    file.parent.mkdir(parents=True, exist_ok=True)
    write_lines_atomically(file, pairs)
    return pairs, file, seconds


def _stdlib_rows(path: Path, rows: list[dict]) -> list[dict]:
    out = []
    for number, row in enumerate(rows, 1):
        question, answer = row["question"], row["answer"]
        if not (
            isinstance(question, str) and isinstance(answer, str) and question.strip() and answer.strip()
        ):
            raise UserError(f"{path}, row {number}: question and answer must be non-empty text; fix that row")
        out.append({"question": question, "answer": answer, "id": str(row.get("id", number))})
    return out


def load_stdlib_docstrings(split: str, path: str | Path | None = None) -> Loaded:
    """`split` of stdlib_docstrings as rows {"question", "answer", "id"}, and where they came from."""
    sources = Sources(
        "stdlib_docstrings",
        files_at=explicit_files,
        files_in=_stdlib_in_data_dir,
        read=_read_stdlib,
        wanted="stdlib_docstrings/*.jsonl",
        offline=_stdlib_built,
    )
    return load_rows(sources, split, path)


def _stdlib_in_data_dir(root: Path, split: str) -> Files | str:
    folder = root / "stdlib_docstrings"
    return explicit_files(folder, split) if folder.is_dir() else f"{folder} not found"


def _read_stdlib(files: list[Path], split: str, presplit: bool) -> Read:
    return _pick(
        _rows_from(files, ("question", "answer"), _stdlib_rows), split, "stdlib_docstrings", presplit
    )


def _stdlib_built(split: str) -> Loaded:
    """The split of the pairs built from this Python's standard library (cached)."""
    pairs, file, seconds = stdlib_pairs()
    rows, total, note = _pick(_stdlib_rows(file, pairs), split, "stdlib_docstrings", False)
    built = f"built in {seconds:.1f} s, " if seconds is not None else ""
    note = (
        f"docstring->function pairs from the Python {platform.python_version()} standard library at "
        f"{stdlib_root()} ({built}cached in {file}; {note})"
    )
    return rows, Provenance("stdlib_docstrings", split, OFFLINE, str(file), len(rows), total, note=note)


if __name__ == "__main__":  # python -m loralab.data.code_sources: build and describe the stdlib pairs
    start = time.perf_counter()
    built = build_stdlib_pairs()
    print(f"{len(built):,} pairs in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(json.dumps(built[0], indent=2))

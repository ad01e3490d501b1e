"""python_codes_25k (on the real 356-row excerpt) and stdlib_docstrings (built from this Python's library)."""

import ast
import csv
import json
import random
import time

import pytest

from loralab.data import code_sources
from loralab.data.code_sources import (
    build_stdlib_pairs,
    load_python_codes_25k,
    load_stdlib_docstrings,
    stdlib_cache_file,
    strip_code_fence,
)
from loralab.errors import UserError

SPLITS = ("train", "validation", "test")
EXCERPT = "python_codes_25k_excerpt/python_codes_25k_first356.jsonl"


@pytest.fixture
def excerpt(shared_data):
    return shared_data / EXCERPT


def raw_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def load_all(loader, path=None):
    """{split: (rows, the line describing where they came from)}."""
    return {split: described(loader(split, path)) for split in SPLITS}


def described(loaded):
    rows, provenance = loaded
    return rows, provenance.describe()


# ---------------------------------------------------------------------------------------------- python_codes_25k


def test_excerpt_splits_are_80_10_10_disjoint_and_complete(shared_data, monkeypatch):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    loaded = load_all(load_python_codes_25k)
    sizes = {split: len(rows) for split, (rows, _) in loaded.items()}
    assert sizes == {"train": 285, "validation": 35, "test": 36}
    questions = [{row["question"] for row in rows} for rows, _ in loaded.values()]
    answers = [{row["answer"] for row in rows} for rows, _ in loaded.values()]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not questions[i] & questions[j] and not answers[i] & answers[j]
    assert sum(len(q) for q in questions) == 356
    for split, (_, source) in loaded.items():
        assert source.startswith(f"python_codes_25k/{split} from ") and "\n" not in source
        assert "an excerpt: 356 of the 24,813 rows" in source and "80/10/10" in source
    assert load_all(load_python_codes_25k) == loaded  # deterministic


def test_split_does_not_depend_on_row_order(excerpt, tmp_path):
    rows = raw_rows(excerpt)
    random.Random(7).shuffle(rows)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for split in SPLITS:
        original = {row["question"] for row in load_python_codes_25k(split, excerpt)[0]}
        assert {row["question"] for row in load_python_codes_25k(split, shuffled)[0]} == original


def test_fences_are_stripped_from_every_real_row(excerpt):
    raw = raw_rows(excerpt)
    assert all(r["output"].startswith("```python\n") and r["output"].endswith("\n```") for r in raw)
    rows = [row for split in SPLITS for row in load_python_codes_25k(split, excerpt)[0]]
    assert len(rows) == 356
    assert not any("```" in row["answer"] for row in rows)
    by_instruction = {row["instruction"]: row for row in rows}
    first = by_instruction["Help me set up my daily to-do list!"]
    assert first["answer"] == raw[0]["output"][len("```python\n") : -len("\n```")]
    assert first["answer"].startswith("tasks = []\nwhile True:\n    task = input(")
    assert first["answer"].endswith("print(f'Your to-do list for today: {tasks}')")
    # indentation inside the code is kept
    assert all(row["answer"] == row["answer"].strip() for row in rows)
    assert sum("\n    " in row["answer"] for row in rows) > 100


def test_question_includes_input_when_present(excerpt):
    raw = {r["instruction"]: r for r in raw_rows(excerpt)}
    rows = [row for split in SPLITS for row in load_python_codes_25k(split, excerpt)[0]]
    with_input = [row for row in rows if raw[row["instruction"]]["input"]]
    assert len(with_input) == 335
    for row in with_input:
        assert row["question"] == f"{row['instruction']}\n{raw[row['instruction']]['input']}"
    clone = next(row for row in rows if row["instruction"] == "Clone a GitHub repository")
    assert clone["question"] == "Clone a GitHub repository" and clone["input"] == ""


@pytest.mark.parametrize(
    "text,code",
    [
        ("```python\nx = 1\n```", "x = 1"),
        ("```\nx = 1\n```", "x = 1"),
        ("  ```py\n    x = 1\n    y = 2\n```  ", "x = 1\ny = 2"),
        ("Here you go:\n```python\nx = 1\n```\nThis sets x.", "x = 1"),
        ("```python\ns = '```'\n```", "s = '```'"),
        ("```python\nx = 1\n", "x = 1"),
        ("x = 1", "x = 1"),
        ("```python\nif x:\n    y()\n```", "if x:\n    y()"),
    ],
)
def test_strip_code_fence(text, code):
    assert strip_code_fence(text) == code


def test_csv_file_and_presplit_folder(excerpt, tmp_path):
    raw = raw_rows(excerpt)
    table = tmp_path / "codes.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["instruction", "input", "output", "text"])
        writer.writeheader()
        writer.writerows(raw)
    assert load_python_codes_25k("test", table)[0] == load_python_codes_25k("test", excerpt)[0]

    folder = tmp_path / "presplit"
    folder.mkdir()
    for split, part in zip(SPLITS, (raw[:10], raw[10:13], raw[13:15]), strict=True):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    rows, source = described(load_python_codes_25k("validation", folder))
    assert [row["instruction"] for row in rows] == [r["instruction"] for r in raw[10:13]]
    assert source == f"python_codes_25k/validation from {folder / 'validation.jsonl'} (3 rows)"
    (folder / "test.jsonl").unlink()
    with pytest.raises(UserError, match="has split files but no test.jsonl"):
        load_python_codes_25k("test", folder)


def test_bad_inputs_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="not found; check the path"):
        load_python_codes_25k("train", tmp_path / "missing.jsonl")
    no_output = tmp_path / "no_output.jsonl"
    no_output.write_text(json.dumps({"instruction": "a", "input": ""}) + "\n")
    with pytest.raises(UserError, match="missing column\\(s\\) 'output'"):
        load_python_codes_25k("train", no_output)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        load_python_codes_25k("train", empty)
    blank = tmp_path / "blank.jsonl"
    blank.write_text(json.dumps({"instruction": " ", "input": "", "output": "```python\n```"}) + "\n")
    with pytest.raises(UserError, match="no row with both an instruction and code"):
        load_python_codes_25k("train", blank)
    with pytest.raises(UserError, match="unknown split 'dev'"):
        load_python_codes_25k("dev")
    monkeypatch.setenv("LORALAB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as caught:
        load_python_codes_25k("train")
    message = str(caught.value)
    assert "\n" not in message and "no python_codes_25k data found" in message
    assert "HF_HUB_OFFLINE is set" in message and "python_codes_25k_excerpt/*.jsonl" in message


# ---------------------------------------------------------------------------------------------- stdlib_docstrings


@pytest.fixture(scope="module")
def stdlib_build():
    start = time.perf_counter()
    pairs = build_stdlib_pairs()
    return pairs, time.perf_counter() - start


def test_stdlib_build_is_deterministic(stdlib_build):
    pairs, _ = stdlib_build
    assert build_stdlib_pairs() == pairs


def test_stdlib_pairs_are_sane(stdlib_build):
    pairs, seconds = stdlib_build
    assert 2_500 <= len(pairs) <= 6_000, len(pairs)
    assert seconds < 30
    assert len({p["question"] for p in pairs}) == len(pairs) == len({p["id"] for p in pairs})
    for pair in pairs:
        module, qualname = pair["id"].split(":")
        parts = module.split(".")
        assert not {"test", "tests", "idlelib"} & set(parts) and not parts[-1].startswith("test_"), module
        assert not any(name.startswith("_") for name in qualname.split("@")[0].split("."))
        tree = ast.parse(pair["answer"])  # every answer is valid Python on its own
        assert len(tree.body) == 1 and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef))
        assert ast.get_docstring(tree.body[0]) is None  # the docstring is in the question only
        doc, _, header = pair["question"].rpartition("\n\n")
        assert len(doc) >= 30 and header.startswith(("def ", "async def ")) and header in pair["answer"]
    by_id = {p["id"]: p for p in pairs}
    dumps = by_id["json:dumps"]
    assert dumps["question"].startswith("Serialize ``obj`` to a JSON formatted ``str``.")
    assert dumps["answer"].startswith("def dumps(obj, *, skipkeys=False,")
    assert '"""' not in dumps["answer"]


def test_stdlib_loader_caches_and_splits(stdlib_build, tmp_path, monkeypatch):
    pairs, _ = stdlib_build
    monkeypatch.setenv("LORALAB_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LORALAB_DATA_DIR", raising=False)
    builds = []

    def counting_build(root=None):
        builds.append(root)
        return pairs

    monkeypatch.setattr(code_sources, "build_stdlib_pairs", counting_build)
    rows, source = described(load_stdlib_docstrings("train"))
    assert builds == [None] and "built in" in source and stdlib_cache_file().is_file()
    assert str(stdlib_cache_file()).startswith(str(tmp_path))
    loaded = load_all(load_stdlib_docstrings)
    assert builds == [None]  # later loads read the cache
    assert loaded["train"][0] == rows
    ids = [{row["id"] for row in rows} for rows, _ in loaded.values()]
    n = len(pairs)
    targets = [round(n * 0.8), round(n * 0.9) - round(n * 0.8), n - round(n * 0.9)]
    assert all(abs(len(s) - t) <= 5 for s, t in zip(ids, targets, strict=True))  # groups of equal answers
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert set().union(*ids) == {p["id"] for p in pairs}
    for split, (_, line) in loaded.items():
        assert line.startswith(f"stdlib_docstrings/{split}: ") and "standard library" in line
    assert set(loaded["test"][0][0]) == {"question", "answer", "id"}

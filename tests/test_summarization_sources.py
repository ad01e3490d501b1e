"""cnn_dailymail and xsum from the real FRANK samples in shared/data, and the errors of bad summarization data."""

import csv
import json
import random

import pytest

from loralab.data.summarization_sources import clean_text, load_cnn_dailymail, load_summarization, load_xsum
from loralab.errors import UserError

SPLITS = ("train", "validation", "test")
FOLDER = "summarization_frank_cnndm_xsum"


def raw_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def load_all(loader, path=None):
    """{split: (rows, the line describing where they came from)}."""
    return {split: described(loader(split, path)) for split in SPLITS}


def described(loaded):
    rows, provenance = loaded
    return rows, provenance.describe()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize(
    "loader,sample,sizes",
    [
        (load_cnn_dailymail, "cnn_dailymail_test_sample.jsonl", {"train": 105, "validation": 75, "test": 70}),
        (load_xsum, "xsum_test_sample.jsonl", {"train": 106, "validation": 74, "test": 71}),
    ],
)
def test_frank_sample_splits(shared_data, monkeypatch, loader, sample, sizes):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    raw = raw_rows(shared_data / FOLDER / sample)
    loaded = load_all(loader)
    assert {split: len(rows) for split, (rows, _) in loaded.items()} == sizes
    ids = {split: [row["id"] for row in rows] for split, (rows, _) in loaded.items()}
    assert sorted(sum(ids.values(), [])) == sorted(r["id"] for r in raw)  # every row once
    assert set(ids["validation"]) == {r["id"] for r in raw if r["frank_split"] == "validation"}
    for rows, source in loaded.values():
        assert all(set(row) == {"document", "summary", "id"} for row in rows)
        assert all(row["document"].strip() and row["summary"].strip() for row in rows)
        assert "\n" not in source and str(shared_data / FOLDER / sample) in source
        assert "FRANK sample" in source and "tiny" in source and "upstream test split" in source
    assert load_all(loader, shared_data / FOLDER / sample) == loaded  # an explicit path: the same
    assert load_all(loader, shared_data / FOLDER) == loaded  # the FRANK folder too
    assert load_all(loader) == loaded  # deterministic


def test_cnn_fields_map_article_and_highlights(shared_data):
    raw = {r["id"]: r for r in raw_rows(shared_data / FOLDER / "cnn_dailymail_test_sample.jsonl")}
    rows, _ = load_cnn_dailymail("validation", shared_data / FOLDER / "cnn_dailymail_test_sample.jsonl")
    for row in rows:
        assert row["document"] == raw[row["id"]]["article"]
        assert row["summary"] == raw[row["id"]]["highlights"]  # PTB tokens kept as the source has them
    assert any(" 's " in row["summary"] for row in rows)


def test_xsum_backslash_apostrophes_are_undone_and_nothing_else(shared_data):
    path = shared_data / FOLDER / "xsum_test_sample.jsonl"
    raw = {r["id"]: r for r in raw_rows(path)}
    assert sum("\\'" in r["summary"] for r in raw.values()) == 71
    rows = [row for split in SPLITS for row in load_xsum(split, path)[0]]
    assert not any("\\" in row["summary"] for row in rows)
    for row in rows:
        assert row["summary"] == raw[row["id"]]["summary"].replace("\\'", "'")
        assert row["document"] == raw[row["id"]]["document"]
    by_id = {row["id"]: row for row in rows}
    assert by_id["10138849"]["summary"].startswith("``maverick''is a word")
    # the two rows FRANK assigns to no split are train or test rows, never validation
    unassigned = [i for i, r in raw.items() if r["frank_split"] is None]
    validation = {row["id"] for row in load_xsum("validation", path)[0]}
    assert len(unassigned) == 2 and not validation & set(unassigned)


def test_split_does_not_depend_on_row_order(shared_data, tmp_path):
    raw = raw_rows(shared_data / FOLDER / "cnn_dailymail_test_sample.jsonl")
    random.Random(3).shuffle(raw)
    shuffled = write_jsonl(tmp_path / "shuffled.jsonl", raw)
    original = shared_data / FOLDER / "cnn_dailymail_test_sample.jsonl"
    for split in SPLITS:
        expected = {row["id"] for row in load_cnn_dailymail(split, original)[0]}
        assert {row["id"] for row in load_cnn_dailymail(split, shuffled)[0]} == expected


def test_file_without_frank_split_is_hash_split_80_10_10(shared_data, tmp_path):
    raw = raw_rows(shared_data / FOLDER / "xsum_test_sample.jsonl")
    table = tmp_path / "xsum.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["document", "summary"])
        writer.writeheader()
        writer.writerows({"document": r["document"], "summary": r["summary"]} for r in raw)
    loaded = load_all(load_xsum, table)
    assert [len(rows) for rows, _ in loaded.values()] == [201, 25, 25]
    documents = [{row["document"] for row in rows} for rows, _ in loaded.values()]
    assert len(set().union(*documents)) == 251
    assert "own 80/10/10 hash split" in loaded["test"][1]


def test_presplit_copy_in_data_dir_wins_over_the_sample(shared_data, tmp_path, monkeypatch):
    raw = raw_rows(shared_data / FOLDER / "cnn_dailymail_test_sample.jsonl")
    (tmp_path / "cnn_dailymail").mkdir()
    for split, part in zip(SPLITS, (raw[:5], raw[5:8], raw[8:10]), strict=True):
        write_jsonl(tmp_path / "cnn_dailymail" / f"{split}.jsonl", part)
    monkeypatch.setenv("LORALAB_DATA_DIR", str(tmp_path))
    rows, source = described(load_cnn_dailymail("validation"))
    assert [row["id"] for row in rows] == [r["id"] for r in raw[5:8]]
    assert (
        source == f"cnn_dailymail/validation from {tmp_path / 'cnn_dailymail' / 'validation.jsonl'} (3 rows)"
    )


def test_generic_document_summary_columns_and_split_template(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [{"document": "d", "summary": "s"}])
    rows, source = described(load_cnn_dailymail("test", f"{tmp_path}/{{split}}.jsonl"))
    assert rows == [{"document": "d", "summary": "s", "id": "1"}]
    assert source == f"cnn_dailymail/test from {tmp_path / 'test.jsonl'} (1 rows)"


def test_bad_inputs_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="not found; check the path"):
        load_xsum("train", tmp_path / "missing.jsonl")
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"text": "a", "label": 1}])
    with pytest.raises(
        UserError, match="needs columns 'article' and 'highlights'.*columns present: 'label', 'text'"
    ):
        load_cnn_dailymail("train", wrong)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        load_xsum("train", empty)
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"document": "d", "summary": " "}])
    with pytest.raises(UserError, match="row 1: document and summary must be non-empty text"):
        load_xsum("train", blank)
    with pytest.raises(UserError, match="unknown split 'dev'"):
        load_xsum("dev")
    with pytest.raises(UserError, match="unknown summarization dataset 'bbc'"):
        load_summarization("bbc", "train")
    monkeypatch.setenv("LORALAB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as caught:
        load_cnn_dailymail("test")
    message = str(caught.value)
    assert "\n" not in message and "no cnn_dailymail/test data found" in message
    assert "HF_HUB_OFFLINE is set" in message and f"{FOLDER}/cnn_dailymail_test_sample.jsonl" in message


@pytest.mark.parametrize(
    "text,cleaned",
    [
        (
            "Gary Locke will be confirmed as Kilmarnock boss on Friday .",
            "gary locke will be confirmed as kilmarnock boss on friday",
        ),
        ("Locke 's ` gold digger '", "locke s gold digger"),
        ("Locke's “gold digger”!", "locke s gold digger"),
        ("``maverick''is a word", "maverick is a word"),
        ("  Tabs\tand\nnewlines ", "tabs and newlines"),
        ("", ""),
    ],
)
def test_clean_text(text, cleaned):
    assert clean_text(text) == cleaned
    assert clean_text(cleaned) == cleaned

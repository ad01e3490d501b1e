"""Data sources: table reading, rotten_tomatoes from each source in order, and the user-facing errors."""

import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
import types
from collections import Counter

import huggingface_hub.constants
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loralab import hub
from loralab.data import sentiment_sources
from loralab.data.sentiment_sources import load_rotten_tomatoes
from loralab.data.tables import read_table
from loralab.errors import UserError

ROWS = [
    {"text": "a fine film", "label": 1},
    {"text": "a dull, long film", "label": 0},
    {"text": "fun", "label": 1},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path, rows, sep=","):
    lines = [sep.join(rows[0])] + [
        sep.join(f'"{v}"' if sep in str(v) else str(v) for v in r.values()) for r in rows
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def user_error(func, *args) -> str:
    with pytest.raises(UserError) as info:
        func(*args)
    message = str(info.value)
    assert "\n" not in message and message
    return message


@pytest.fixture
def no_sources(monkeypatch):
    """No LORALAB_DATA_DIR and no hub, so only explicit paths (or the vader fallback) can answer."""
    monkeypatch.delenv("LORALAB_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------------------------------------- read_table


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".parquet"])
def test_read_table_formats(tmp_path, suffix):
    rows = [dict(r, extra=i) for i, r in enumerate(ROWS)]
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, rows)
    elif suffix == ".json":
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    elif suffix in (".csv", ".tsv"):
        write_csv(path, rows, "\t" if suffix == ".tsv" else ",")
    else:
        write_parquet(path, rows)
    got = read_table(path, ["text", "label"])
    assert [r["text"] for r in got] == [r["text"] for r in ROWS]
    assert [int(r["label"]) for r in got] == [r["label"] for r in ROWS]
    assert all("extra" in r for r in got)  # other columns are kept


def test_read_table_missing_file(tmp_path):
    message = user_error(read_table, tmp_path / "nope.jsonl", ["text"])
    assert "nope.jsonl not found" in message and "check the path" in message


def test_read_table_bad_extension(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("text\tlabel\n", encoding="utf-8")
    message = user_error(read_table, path, ["text"])
    assert "'.txt'" in message
    assert all(s in message for s in (".jsonl", ".json", ".csv", ".tsv", ".parquet"))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_read_table_missing_columns_lists_present(tmp_path, suffix):
    rows = [{"sentence": "good", "label": 1, "id": 7}]
    path = tmp_path / f"data{suffix}"
    {".jsonl": write_jsonl, ".csv": write_csv, ".parquet": write_parquet}[suffix](path, rows)
    message = user_error(read_table, path, ["text", "label"])
    missing, present = message.split("columns present:")
    assert "'text'" in missing and "'label'" not in missing
    assert all(f"'{c}'" in present for c in ("sentence", "label", "id"))


def test_read_table_missing_column_in_later_jsonl_line(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [ROWS[0], {"text": "no label"}])
    message = user_error(read_table, path, ["text", "label"])
    assert "line 2" in message and "'label'" in message


@pytest.mark.parametrize(
    "name, content", [("a.jsonl", ""), ("b.csv", ""), ("c.csv", "text,label\n"), ("d.json", "[]")]
)
def test_read_table_empty(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert "is empty" in user_error(read_table, path, ["text", "label"])


def test_read_table_unparsable_jsonl_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "ok", "label": 1}\n\n{"text": "broken", "label": \n', encoding="utf-8")
    message = user_error(read_table, path, ["text", "label"])
    assert str(path) in message and "line 3" in message


def test_read_table_csv_line_with_too_many_fields(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\ngood,1\nbad, really,0\n", encoding="utf-8")
    assert "line 3" in user_error(read_table, path, ["text", "label"])


# ---------------------------------------------------------------------------------------------- rotten_tomatoes


def test_data_dir_source_gives_hf_split_sizes(shared_data, monkeypatch):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    monkeypatch.setattr(
        sentiment_sources, "_hub_rows", lambda split: pytest.fail("hub must not be consulted")
    )
    sizes = {"train": 8530, "validation": 1066, "test": 1066}
    texts = {}
    for split, size in sizes.items():
        rows, description = load_rotten_tomatoes(split)
        assert len(rows) == size
        assert all(set(r) == {"text", "label"} and type(r["label"]) is int and r["text"] for r in rows)
        assert Counter(r["label"] for r in rows) == {0: size // 2, 1: size // 2}
        file = shared_data / "rotten_tomatoes" / f"{split}.jsonl"
        assert description.describe() == f"rotten_tomatoes/{split} from {file} ({size:,} rows)"
        texts[split] = {r["text"] for r in rows}
    test_rows, _ = load_rotten_tomatoes("test")
    assert test_rows[0]["text"].startswith("lovingly photographed in the manner of a golden book")
    assert test_rows[0]["label"] == 1 and test_rows[-1]["label"] == 0
    assert not texts["train"] & texts["test"] and not texts["validation"] & texts["test"]


def test_explicit_directory(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))  # an explicit path wins over it
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    write_csv(tmp_path / "validation.csv", ROWS[:2])
    write_parquet(tmp_path / "test.parquet", ROWS[1:])
    for split, expected, file in [
        ("train", ROWS, "train.jsonl"),
        ("validation", ROWS[:2], "validation.csv"),
        ("test", ROWS[1:], "test.parquet"),
    ]:
        rows, description = load_rotten_tomatoes(split, tmp_path)
        assert rows == expected  # csv labels come back as ints too
        assert (
            description.describe()
            == f"rotten_tomatoes/{split} from {tmp_path / file} ({len(expected):,} rows)"
        )


def test_explicit_split_template(tmp_path, no_sources):
    write_jsonl(tmp_path / "rt_train.jsonl", ROWS)
    write_jsonl(tmp_path / "rt_test.jsonl", ROWS[:1])
    template = str(tmp_path / "rt_{split}.jsonl")
    assert load_rotten_tomatoes("train", template)[0] == ROWS
    assert load_rotten_tomatoes("test", template)[0] == ROWS[:1]
    message = user_error(load_rotten_tomatoes, "validation", template)  # no fall-through to other sources
    assert "rt_validation.jsonl not found" in message


def test_explicit_single_file_serves_every_split(tmp_path, no_sources):
    path = write_csv(tmp_path / "reviews.csv", ROWS)
    for split in ("train", "validation", "test"):
        rows, description = load_rotten_tomatoes(split, path)
        assert rows == ROWS and str(path) in description.describe()


def test_explicit_path_that_does_not_work_is_an_error(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    assert "not found" in user_error(load_rotten_tomatoes, "test", tmp_path / "missing.jsonl")
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    message = user_error(load_rotten_tomatoes, "test", tmp_path)
    assert str(tmp_path) in message and "test.jsonl" in message


@pytest.mark.parametrize("label", [2, -1, "pos", None, 0.5, True])
def test_bad_label(tmp_path, no_sources, label):
    path = write_jsonl(tmp_path / "data.jsonl", [ROWS[0], {"text": "meh", "label": label}])
    message = user_error(load_rotten_tomatoes, "train", path)
    assert "line 2" in message and "label" in message and "0 (negative) or 1 (positive)" in message


def test_bad_label_in_csv(tmp_path, no_sources):
    path = tmp_path / "data.csv"
    path.write_text("text,label\ngood,1\nbad,negative\n", encoding="utf-8")
    assert "'negative'" in user_error(load_rotten_tomatoes, "train", path)


def test_unknown_split(tmp_path):
    message = user_error(load_rotten_tomatoes, "dev", tmp_path)
    assert "'dev'" in message and "train, validation, test" in message


def test_hub_source_used_when_it_answers(no_sources, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "skip_reason", lambda library=None: None)
    calls = []

    def load_dataset(name, split):
        calls.append((name, split))
        return {"text": ["great", "awful"], "label": [1, 0]}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    rows, description = load_rotten_tomatoes("validation")
    assert calls == [("rotten_tomatoes", "validation")]
    assert rows == [{"text": "great", "label": 1}, {"text": "awful", "label": 0}]
    assert description.describe() == "rotten_tomatoes/validation from the Hugging Face hub (2 rows)"


def test_hub_probe_is_fast_when_unreachable(monkeypatch):
    for var in hub.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read once, at its import
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    start = time.monotonic()
    reason = hub.skip_reason("datasets")
    assert reason is not None and "unreachable" in reason
    assert time.monotonic() - start < hub.PROBE_TIMEOUT_S + 1.5
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert hub.skip_reason("datasets") == "HF_DATASETS_OFFLINE is set"
    assert hub.skip_reason("transformers") is not None and "unreachable" in hub.skip_reason("transformers")


def test_nothing_works_lists_what_was_tried(no_sources, monkeypatch):
    def no_pip(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(sentiment_sources, "_vader_split_file", no_pip)
    monkeypatch.setitem(sys.modules, "datasets", None)  # any hub attempt would fail on import
    message = user_error(load_rotten_tomatoes, "test")
    assert "LORALAB_DATA_DIR not set" in message
    assert "Hugging Face hub skipped (HF_HUB_OFFLINE is set)" in message
    assert "vaderSentiment" in message and "no network" in message
    assert message.endswith(
        "set LORALAB_DATA_DIR to a folder holding rotten_tomatoes/test.jsonl or pass a data path"
    )


def test_data_dir_without_the_file_falls_through(tmp_path, monkeypatch):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(
        sentiment_sources, "_vader_split_file", lambda split: write_jsonl(tmp_path / "v.jsonl", ROWS)
    )
    rows, description = load_rotten_tomatoes("train")
    assert rows == ROWS and "vaderSentiment" in description.describe()


# ---------------------------------------------------------------------------------------------- vader fallback

VADER_TOTAL, VADER_ZERO, VADER_DUPLICATES = 10_605, 37, 2


def vader_env(monkeypatch, cache):
    monkeypatch.delenv("LORALAB_DATA_DIR", raising=False)
    monkeypatch.setenv("LORALAB_CACHE_DIR", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def load_all():
    return {split: load_rotten_tomatoes(split) for split in ("train", "validation", "test")}


@pytest.fixture(scope="module")
def vader(tmp_path_factory):
    """The first load from an empty cache: one pip download from PyPI."""
    cache = tmp_path_factory.mktemp("cache")
    runs = []
    real_run = subprocess.run
    with pytest.MonkeyPatch.context() as mp:
        vader_env(mp, cache)
        mp.setattr(subprocess, "run", lambda *a, **k: runs.append(a[0]) or real_run(*a, **k))
        loaded = load_all()
    assert len(runs) == 1 and "download" in runs[0]
    return cache, loaded


def snippet_ratings(sdist):
    """An independent read of the ground-truth file: [(rating, text)] for every line."""
    with tarfile.open(sdist) as outer:
        inner_bytes = outer.extractfile(
            "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
        ).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        raw = inner.extractfile("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt").read().decode("utf-8")
    lines = [line.split("\t") for line in raw.splitlines() if line]
    return [(float(rating), text) for _, rating, text in lines]


def test_vader_counts_add_up(vader):
    cache, loaded = vader
    ratings = snippet_ratings(cache / "downloads" / "vaderSentiment-3.3.2.tar.gz")
    assert len(ratings) == VADER_TOTAL
    assert sum(r == 0 for r, _ in ratings) == VADER_ZERO
    nonzero = {text: r for r, text in ratings if r != 0}
    assert len(nonzero) == VADER_TOTAL - VADER_ZERO - VADER_DUPLICATES  # duplicate texts kept once
    sizes = {split: len(rows) for split, (rows, _) in loaded.items()}
    assert sizes == {"train": 8452, "validation": 1057, "test": 1057}
    assert sum(sizes.values()) == len(nonzero)
    for rows, _ in loaded.values():
        assert all(r["label"] == int(nonzero[r["text"]] > 0) for r in rows)
    labels = Counter(r["label"] for rows, _ in loaded.values() for r in rows)
    assert labels == {1: 5241, 0: 5325}


def test_vader_splits_disjoint_and_described(vader):
    _, loaded = vader
    texts = {split: {r["text"] for r in rows} for split, (rows, _) in loaded.items()}
    assert sum(len(t) for t in texts.values()) == sum(len(rows) for rows, _ in loaded.values())
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    for split, (rows, provenance) in loaded.items():
        description = provenance.describe()
        assert description.startswith(f"rotten_tomatoes/{split} stand-in: {len(rows):,} ")
        assert "vaderSentiment 3.3.2" in description and "not the HF split" in description


def test_vader_deterministic_without_second_download(vader, monkeypatch):
    cache, first = vader
    vader_env(monkeypatch, cache)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"unexpected subprocess {a}"))
    assert load_all() == first
    cached = cache / "datasets" / "rotten_tomatoes_vader" / "test.jsonl"
    cached.write_text(
        "".join(cached.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8"
    )
    assert load_rotten_tomatoes("test")[0] == first["test"][0][:-1]  # read from the cached jsonl splits
    shutil.rmtree(cache / "datasets")
    assert load_all() == first  # re-parsed from the cached sdist, same shuffle
    folder = cache / "datasets" / "rotten_tomatoes_vader"
    assert sorted(p.name for p in folder.iterdir()) == ["test.jsonl", "train.jsonl", "validation.jsonl"]
    assert sorted(p.name for p in (cache / "downloads").iterdir()) == ["vaderSentiment-3.3.2.tar.gz"]


# ---------------------------------------------------------------------------------------------- the chain


def kind_location_rows_origin(provenance):
    return provenance.kind, provenance.location, provenance.rows, provenance.origin


def test_chain_order_path_then_data_dir_then_hub_then_stand_in(tmp_path, monkeypatch):
    """Each source wins over every later one; each answer says, as fields, which source it was."""
    explicit = write_jsonl(tmp_path / "explicit.jsonl", ROWS[:1])
    root = tmp_path / "data"
    (root / "rotten_tomatoes").mkdir(parents=True)
    in_data_dir = write_jsonl(root / "rotten_tomatoes" / "train.jsonl", ROWS[:2])
    stand_in = write_jsonl(tmp_path / "vader_train.jsonl", ROWS)
    hub_calls = []

    def load_dataset(name, split):
        hub_calls.append((name, split))
        return {"text": ["great", "awful", "fine", "meh"], "label": [1, 0, 1, 0]}

    monkeypatch.setenv("LORALAB_DATA_DIR", str(root))
    monkeypatch.setattr(hub, "skip_reason", lambda library=None: None)
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setattr(sentiment_sources, "_vader_split_file", lambda split: stand_in)

    rows, provenance = load_rotten_tomatoes("train", explicit)
    assert rows == ROWS[:1] and hub_calls == []
    assert kind_location_rows_origin(provenance) == ("path", str(explicit), 1, "files")

    rows, provenance = load_rotten_tomatoes("train")
    assert rows == ROWS[:2] and hub_calls == []
    assert kind_location_rows_origin(provenance) == ("data_dir", str(in_data_dir), 2, "files")

    in_data_dir.unlink()
    rows, provenance = load_rotten_tomatoes("train")
    assert len(rows) == 4 and hub_calls == [("rotten_tomatoes", "train")]
    assert kind_location_rows_origin(provenance) == ("hub", "rotten_tomatoes", 4, "hub")

    monkeypatch.setattr(hub, "skip_reason", lambda library=None: "HF_HUB_OFFLINE is set")
    rows, provenance = load_rotten_tomatoes("train")
    assert rows == ROWS and len(hub_calls) == 1
    assert kind_location_rows_origin(provenance) == ("offline", str(stand_in), 3, "offline")
    assert provenance.stand_in and provenance.split == "train" and provenance.dataset == "rotten_tomatoes"
    record = provenance.as_dict()
    assert json.loads(json.dumps(record)) == record  # ready for summary.json
    assert record["kind"] == "offline" and record["description"] == str(provenance) == provenance.describe()


def test_chain_lists_what_it_tried_in_order_and_stops_at_the_first_answer(tmp_path, monkeypatch):
    from loralab.data.sources import Provenance, Sources, load_rows

    calls = []

    def files_in(root, split):
        calls.append("data_dir")
        return f"nothing in {root}"

    def from_hub(split):
        calls.append("hub")
        raise ConnectionError("connection reset\nmore detail")

    def offline(split):
        calls.append("offline")
        raise OSError("no network")

    def read(files, split, presplit):
        raise AssertionError("no files should be read")

    sources = Sources("toy", files_at=lambda path, split: pytest.fail("no path was given"), files_in=files_in,
                      read=read, wanted="toy/{split}.jsonl", hub=from_hub, hub_id="someone/toy",
                      offline=offline, offline_name="the toy stand-in")  # fmt: skip
    monkeypatch.setenv("LORALAB_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(hub, "skip_reason", lambda library=None: None)
    message = user_error(load_rows, sources, "test")
    assert calls == ["data_dir", "hub", "offline"]
    assert message == (
        f"no toy/test data found (tried: nothing in {tmp_path}; Hugging Face hub failed (connection reset); "
        "the toy stand-in failed (no network)); set LORALAB_DATA_DIR to a folder holding toy/test.jsonl or "
        "pass a data path"
    )

    def hub_rows(split):
        calls.append("hub")
        return [{"x": 1}, {"x": 2}], 20, "own 80/10/10 hash split"

    calls.clear()
    monkeypatch.setattr(hub, "skip_reason", lambda library=None: "HF_HUB_OFFLINE is set")
    assert "Hugging Face hub skipped (HF_HUB_OFFLINE is set)" in user_error(load_rows, sources, "test")
    assert calls == ["data_dir", "offline"]  # the probe said no: the hub itself is not called

    calls.clear()
    monkeypatch.setattr(hub, "skip_reason", lambda library=None: None)
    sources = Sources("toy", files_at=sources.files_at, files_in=files_in, read=read, wanted="",
                      hub=hub_rows, hub_id="someone/toy", hub_config="v2", offline=offline)  # fmt: skip
    rows, provenance = load_rows(sources, "validation")
    assert rows == [{"x": 1}, {"x": 2}] and calls == ["data_dir", "hub"]
    assert provenance == Provenance("toy", "validation", "hub", "someone/toy", 2, 20, "v2",
                                    "own 80/10/10 hash split")  # fmt: skip
    assert str(provenance) == (
        "toy/validation from the Hugging Face hub someone/toy (2 rows of 20; own 80/10/10 hash split)"
    )

"""data.datasets: any dataset by hub id, file or folder, with split names mapped and missing splits cut from
train; on the shared real data where it exists (banking77, oasst_en_100, tiny_shakespeare), on files written
here for the other formats, and on the hub through a stand-in load_dataset and a real offline datasets cache."""

from __future__ import annotations

import json
import os
import random
import shutil

import pytest

from loralab import hub
from loralab.data import datasets as ds_module
from loralab.data.datasets import DataSpec, is_local, load_table
from loralab.data.sources import HUB, PATH
from loralab.data.tables import read_text_blocks
from loralab.errors import UserError

SPLITS = ("train", "validation", "test")


@pytest.fixture(autouse=True)
def fresh_cache():
    ds_module._cached_local.cache_clear()
    ds_module._cached_hub.cache_clear()
    yield
    ds_module._cached_local.cache_clear()
    ds_module._cached_hub.cache_clear()


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    """datasets writes what it prepares from a folder under tmp_path, not under the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def real(name: str):
    root = os.environ.get("LORALAB_DATA_DIR")
    if not root or not os.path.isdir(os.path.join(root, name)):
        pytest.skip(f"LORALAB_DATA_DIR/{name} not available")
    return os.path.join(root, name)


def all_splits(spec: DataSpec, group_key=None) -> dict:
    return {split: load_table(spec, split, group_key) for split in SPLITS}


def error(spec: DataSpec, split: str = "train") -> str:
    with pytest.raises(UserError) as caught:
        load_table(spec, split)
    message = str(caught.value)
    assert "\n" not in message
    return message


def write_jsonl(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


# ------------------------------------------------------------------------------------------------ real data


def test_banking77_folder_derives_validation_from_train(capsys):
    tables = all_splits(DataSpec(real("banking77")))
    train, validation, test = (tables[s] for s in SPLITS)
    assert (len(train.rows), len(validation.rows), len(test.rows)) == (9003, 1000, 3080)
    assert train.columns == ("text", "category") and train.class_names == {}
    assert test.provenance.total is None and test.provenance.location.endswith("test.jsonl")
    note = validation.provenance.note
    assert note == "validation derived from train: 10% by content hash, seed 0, duplicates kept on one side"
    assert validation.provenance.total == 10003 and validation.provenance.kind == PATH
    assert "validation cut from it" in train.provenance.note and train.provenance.total == 10003
    print(validation.provenance)
    assert "1,000 rows of 10,003; validation derived from train" in capsys.readouterr().out
    texts = {split: {row["text"] for row in tables[split].rows} for split in SPLITS}
    assert not texts["train"] & texts["validation"] and not texts["validation"] & texts["test"]
    assert not texts["train"] & texts["test"]


def test_banking77_split_is_deterministic_and_independent_of_row_order(tmp_path):
    first = all_splits(DataSpec(real("banking77")))
    ds_module._cached_local.cache_clear()
    again = all_splits(DataSpec(real("banking77")))
    assert all(first[s].rows == again[s].rows for s in SPLITS)
    folder = real("banking77")
    with open(os.path.join(folder, "train.jsonl"), encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    random.Random(3).shuffle(rows)
    write_jsonl(tmp_path / "train.jsonl", rows)
    shutil.copy(os.path.join(folder, "test.jsonl"), tmp_path / "test.jsonl")
    shuffled = {s: load_table(DataSpec(str(tmp_path)), s) for s in ("train", "validation")}
    for split in ("train", "validation"):
        assert sorted(r["text"] for r in shuffled[split].rows) == sorted(r["text"] for r in first[split].rows)
    other_seed = load_table(DataSpec(real("banking77"), seed=1), "validation")
    assert {r["text"] for r in other_seed.rows} != {r["text"] for r in first["validation"].rows}


def test_oasst_one_file_group_key_keeps_trees_on_one_side():
    spec = DataSpec(os.path.join(real("oasst_en_100"), "messages.jsonl"))
    by_content = all_splits(spec)
    assert [len(by_content[s].rows) for s in SPLITS] == [320, 40, 40]  # 80/10/10 of the one file
    assert "validation and test cut from it" in by_content["train"].provenance.note

    def trees(tables):
        return {s: {row["message_tree_id"] for row in tables[s].rows} for s in SPLITS}

    leaked = trees(by_content)  # sibling conversations share their first turns: the content key splits trees
    assert leaked["train"] & (leaked["validation"] | leaked["test"])
    kept = trees(all_splits(spec, lambda row: [row["message_tree_id"]]))
    assert not kept["train"] & kept["validation"] and not kept["train"] & kept["test"]
    assert not kept["validation"] & kept["test"]
    assert sum(len(v) for v in kept.values()) == 96


def test_tiny_shakespeare_text_blocks():
    spec = DataSpec(os.path.join(real("tiny_shakespeare"), "input.txt"))
    tables = all_splits(spec)
    assert tables["train"].columns == ("text",)
    total = tables["train"].provenance.total
    assert total == sum(len(tables[s].rows) for s in SPLITS) == 7222
    everything = [row["text"] for s in SPLITS for row in tables[s].rows]
    assert "First Citizen:\nBefore we proceed any further, hear me speak." in everything
    assert all(text.strip() and "\n\n" not in text for text in everything)


# ------------------------------------------------------------------------------------------------ local formats


def test_read_text_blocks_line_numbers_and_line_endings(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_bytes(b"\r\none\r\ntwo\r\n\r\n  \r\nthree\r\n")
    assert read_text_blocks(path) == [("line 2", {"text": "one\ntwo"}), ("line 6", {"text": "three"})]
    (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(UserError, match="has no text"):
        read_text_blocks(tmp_path / "blank.txt")


def test_folder_of_csv_tsv_parquet_split_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "train.csv").write_text('text,label\nhello,1\n"a, b",0\n', encoding="utf-8")
    (tmp_path / "validation.tsv").write_text("text\tlabel\nbye\t0\n", encoding="utf-8")
    pq.write_table(
        pa.table({"text": ["x", "y"], "label": [1, 0], "extra": [None, 2.5]}), tmp_path / "test.parquet"
    )
    tables = all_splits(DataSpec(str(tmp_path)))
    assert tables["train"].rows == [{"text": "hello", "label": "1"}, {"text": "a, b", "label": "0"}]
    assert tables["validation"].rows == [{"text": "bye", "label": "0"}]
    assert tables["test"].rows[1] == {"text": "y", "label": 0, "extra": 2.5}
    assert tables["test"].columns == ("text", "label", "extra")
    assert all(tables[s].provenance.total is None and not tables[s].provenance.note for s in SPLITS)


def test_split_template_with_mapped_names(tmp_path):
    write_jsonl(tmp_path / "d" / "train" / "part.jsonl", [{"q": i} for i in range(20)])
    write_jsonl(tmp_path / "d" / "dev" / "part.jsonl", [{"q": 100}])
    spec = DataSpec(str(tmp_path / "d" / "{split}" / "part.jsonl"), splits=(("validation", "dev"),))
    assert load_table(spec, "validation").rows == [{"q": 100}]
    assert load_table(spec, "validation").provenance.note == "the data's 'dev' split"
    test = load_table(spec, "test")
    assert test.provenance.note.startswith("test derived from train: 10%") and len(test.rows) == 2
    assert len(load_table(spec, "train").rows) == 18
    assert "no file matches" in error(DataSpec(str(tmp_path / "none" / "{split}.jsonl")))


def test_splits_mapping_dev_to_validation(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}"} for i in range(30)])
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "d0"}, {"text": "d1"}])
    mapped = load_table(DataSpec(str(tmp_path), splits=(("validation", "dev"),)), "validation")
    assert [r["text"] for r in mapped.rows] == ["d0", "d1"] and mapped.provenance.location.endswith(
        "dev.jsonl"
    )
    unmapped = load_table(DataSpec(str(tmp_path)), "validation")  # dev is not taken without being named
    assert all(r["text"].startswith("t") for r in unmapped.rows)
    assert (
        "the data also has 'dev': to use one, set splits = {validation = \"dev\"}" in unmapped.provenance.note
    )


def test_data_path_replaces_the_hub_id(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "skip_reason", lambda library: pytest.fail("the hub was asked"))
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}"} for i in range(10)])
    table = load_table(DataSpec("someone/data", data_path=str(tmp_path / "train.jsonl")), "train")
    assert table.provenance.dataset == "someone/data" and table.provenance.kind == PATH
    assert len(table.rows) == 8
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "d"}])
    unnamed = load_table(DataSpec("", data_path=str(tmp_path), splits={"validation": "dev"}), "validation")
    assert unnamed.provenance.dataset == tmp_path.name and unnamed.provenance.note == "the data's 'dev' split"


def test_save_to_disk_dataset_dict_and_dataset_with_class_labels(tmp_path):
    import datasets

    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    data = datasets.Dataset.from_dict(
        {"text": [f"s{i}" for i in range(20)], "label": [i % 2 for i in range(20)]}, features=features
    )
    datasets.DatasetDict(train=data, validation=data.select([0, 1]), test=data.select([2])).save_to_disk(
        tmp_path / "dd"
    )
    tables = all_splits(DataSpec(str(tmp_path / "dd")))
    assert tables["validation"].rows == [{"text": "s0", "label": 0}, {"text": "s1", "label": 1}]
    assert all(tables[s].class_names == {"label": ("neg", "pos")} for s in SPLITS)
    assert tables["train"].provenance.location == str(tmp_path / "dd" / "train")
    data.save_to_disk(tmp_path / "one")
    one = all_splits(DataSpec(str(tmp_path / "one")))
    assert [len(one[s].rows) for s in SPLITS] == [16, 2, 2]
    assert one["test"].class_names == {"label": ("neg", "pos")} and isinstance(
        one["test"].rows[0]["label"], int
    )


def test_folder_of_hub_style_parquet_files(tmp_path, datasets_cache):
    import datasets

    data = datasets.Dataset.from_dict({"text": [f"r{i}" for i in range(10)], "label": list(range(10))})
    (tmp_path / "repo" / "data").mkdir(parents=True)
    data.to_parquet(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet")
    data.select([0]).to_parquet(tmp_path / "repo" / "data" / "test-00000-of-00001.parquet")
    (tmp_path / "repo" / "README.md").write_text("# a dataset\n", encoding="utf-8")
    tables = all_splits(DataSpec(str(tmp_path / "repo")))
    assert tables["test"].rows == [{"text": "r0", "label": 0}]
    assert len(tables["train"].rows) + len(tables["validation"].rows) == 10
    assert tables["validation"].provenance.total == 10


def test_folder_with_one_data_file_is_that_file():
    folder = real("tiny_shakespeare")  # input.txt and PROVENANCE.md: blocks, as for the file itself
    table = load_table(DataSpec(folder), "validation")
    assert table.provenance.location == os.path.join(folder, "input.txt") and table.provenance.total == 7222


def test_folder_the_datasets_library_cannot_read(tmp_path, datasets_cache):
    write_jsonl(tmp_path / "data" / "a.jsonl", [{"x": 1}])
    write_jsonl(tmp_path / "data" / "b.jsonl", [{"y": "text"}])
    message = error(DataSpec(str(tmp_path / "data")))
    assert (
        "has no split files (train.jsonl" in message
        and "put split files there or pass one data file" in message
    )
    assert "An error occurred while generating the dataset: " in message  # and then the cause, not only that
    (tmp_path / "empty").mkdir()
    assert "doesn't contain any data files" in error(DataSpec(str(tmp_path / "empty")))


# ------------------------------------------------------------------------------------------------ caching


def test_source_read_once_fresh_rows_and_reread_after_change(tmp_path, monkeypatch):
    from loralab.data import local_data

    reads = []
    real_read = local_data.read_located_table
    monkeypatch.setattr(local_data, "read_located_table", lambda *a: reads.append(a) or real_read(*a))
    path = tmp_path / "all.jsonl"
    write_jsonl(path, [{"text": f"t{i}"} for i in range(50)])
    tables = all_splits(DataSpec(str(path)))
    assert len(reads) == 1
    tables["train"].rows[0]["text"] = "changed"
    tables["train"].rows.clear()
    assert (
        load_table(DataSpec(str(path)), "train").rows == all_splits(DataSpec(str(path)))["train"].rows != []
    )
    assert "changed" not in {r["text"] for r in load_table(DataSpec(str(path)), "train").rows}
    assert len(reads) == 1
    write_jsonl(path, [{"text": f"new{i}"} for i in range(60)])
    os.utime(path, ns=(1, 1))
    assert load_table(DataSpec(str(path)), "train").provenance.total == 60 and len(reads) == 2


# ------------------------------------------------------------------------------------------------ errors


def test_is_local():
    assert is_local("data/train.jsonl") and is_local("./mydata") and is_local("~/x") and is_local("/abs")
    assert is_local("data/{split}.csv") and is_local("notes.txt")
    assert not is_local("user/name") and not is_local("rotten_tomatoes") and not is_local("")


def test_missing_file_and_unsupported_type(tmp_path):
    message = error(DataSpec(str(tmp_path / "nope.jsonl")))
    assert "nope.jsonl not found" in message and "check the path" in message
    (tmp_path / "data.xml").write_text("<a/>", encoding="utf-8")
    assert "unsupported file type '.xml'" in error(DataSpec(str(tmp_path / "data.xml")))


def test_unknown_split_name_lists_the_data_splits(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a"}])
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "b"}])
    message = error(DataSpec(str(tmp_path), splits=(("validation", "valid"),)), "validation")
    assert (
        "no split 'valid'" in message
        and "'dev', 'train'" in message
        and "set splits = {validation" in message
    )
    assert "unknown split 'eval'" in error(DataSpec(str(tmp_path), splits=(("eval", "dev"),)))
    both = error(DataSpec(str(tmp_path), splits=(("validation", "dev"), ("test", "dev"))))
    assert "validation and test both read the data's split 'dev'" in both


def test_missing_train(tmp_path):
    write_jsonl(tmp_path / "validation.jsonl", [{"text": "a"}])
    write_jsonl(tmp_path / "test.jsonl", [{"text": "b"}])
    message = error(DataSpec(str(tmp_path)), "test")
    assert "has no train split" in message and "'test', 'validation'" in message
    assert 'splits = {train = "test"}' in message


def test_empty_splits(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "tiny.jsonl", [{"text": "a"}, {"text": "b"}])
    message = error(DataSpec(str(tmp_path / "tiny.jsonl")), "validation")
    assert (
        "validation cut from the 'train' split" in message
        and "is empty" in message
        and "only 2 rows" in message
    )
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "train.csv").write_text("text,label\n", encoding="utf-8")
    assert "empty" in error(DataSpec(str(tmp_path / "folder")))
    import datasets

    empty = datasets.Dataset.from_dict(
        {"text": []}, features=datasets.Features({"text": datasets.Value("string")})
    )
    loaded = datasets.DatasetDict(train=datasets.Dataset.from_dict({"text": ["a", "b"]}), test=empty)
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: loaded)
    monkeypatch.setattr(hub, "offline_flag", lambda library: "HF_HUB_OFFLINE")
    message = error(DataSpec("user/name"), "test")
    assert (
        message.startswith("the 'test' split of user/name has no rows")
        and "(the data has 'train', 'test')" in message
    )


# ------------------------------------------------------------------------------------------------ the hub


class FakeHub:
    """Stands in for datasets.load_dataset: records the calls, returns a DatasetDict (train 40 rows, dev 3)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, path, name=None, revision=None, **kwargs):
        import datasets

        self.calls.append((path, name, revision, kwargs))
        labels = datasets.ClassLabel(names=["a", "b", "c"])
        features = datasets.Features({"text": datasets.Value("string"), "label": labels})
        train = datasets.Dataset.from_dict(
            {"text": [f"t{i}" for i in range(40)], "label": [i % 3 for i in range(40)]}, features=features
        )
        return datasets.DatasetDict(train=train, dev=train.select([0, 1, 2]))


def test_hub_load_passes_config_and_revision_once(monkeypatch):
    import datasets

    fake = FakeHub()
    monkeypatch.setattr(datasets, "load_dataset", fake)
    monkeypatch.setattr(hub, "offline_flag", lambda library: "HF_HUB_OFFLINE")
    spec = DataSpec("user/name", dataset_config="cfg", revision="v1", splits=(("validation", "dev"),))
    tables = all_splits(spec)
    assert fake.calls == [("user/name", "cfg", "v1", {})]
    assert [len(tables[s].rows) for s in SPLITS] == [36, 3, 4]
    validation = tables["validation"].provenance
    assert validation.kind == HUB and validation.location == "user/name@v1" and validation.hub_config == "cfg"
    assert "the Hugging Face hub user/name@v1" in str(validation)
    assert tables["test"].class_names == {"label": ("a", "b", "c")}
    assert tables["test"].provenance.note.startswith("test derived from train: 10%")


def test_unreachable_hub_fails_at_once_with_the_fix(monkeypatch):
    import datasets

    fake = FakeHub()
    monkeypatch.setattr(datasets, "load_dataset", fake)
    monkeypatch.setattr(hub, "offline_flag", lambda library: None)
    monkeypatch.setattr(hub, "skip_reason", lambda library: "https://huggingface.co unreachable: no route")
    message = error(DataSpec("user/name"))
    assert fake.calls == []
    assert "cannot load user/name from the Hugging Face hub (https://huggingface.co unreachable" in message
    assert 'dataset = "path/to/file.jsonl"' in message and "data_path" in message


def test_hub_failure_is_one_line(monkeypatch):
    import datasets

    def fail(*args, **kwargs):
        raise FileNotFoundError("Dataset 'user/typo' doesn't exist on the Hub\nor cannot be accessed.")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    monkeypatch.setattr(hub, "offline_flag", lambda library: "HF_DATASETS_OFFLINE")
    message = error(DataSpec("user/typo", revision="main"))
    assert (
        "cannot load user/typo at revision 'main' from the Hugging Face hub (Dataset 'user/typo'" in message
    )
    assert "HF_DATASETS_OFFLINE is set, so only the local cache was looked in" in message
    assert 'dataset = "path/to/file.jsonl"' in message


def test_hub_id_answered_from_a_real_offline_cache(tmp_path, monkeypatch):
    """A datasets cache laid out as a hub download leaves it (user___name/default/VERSION/HASH), made here from
    parquet files; with the offline flag set, load_dataset("someuser/tinyset") answers from it."""
    import datasets
    from datasets.packaged_modules.parquet.parquet import Parquet

    data = datasets.Dataset.from_dict({"text": [f"c{i}" for i in range(10)], "label": [i % 2 for i in range(10)]},
                                      features=datasets.Features({"text": datasets.Value("string"),
                                                                  "label": datasets.ClassLabel(names=["no", "yes"])}))  # fmt: skip
    files = {}
    for split, rows in (("train", data), ("test", data.select([0, 1]))):
        rows.to_parquet(tmp_path / f"{split}.parquet")
        files[split] = [str(tmp_path / f"{split}.parquet")]
    cache = tmp_path / "cache"
    builder = Parquet(
        cache_dir=str(cache), dataset_name="someuser___tinyset", data_files=files, hash="abc123"
    )
    builder.download_and_prepare()
    (config_dir,) = (cache / "someuser___tinyset").iterdir()
    config_dir.rename(config_dir.with_name("default"))  # a hub dataset's configuration folder is its name
    for arrow in cache.glob("someuser___tinyset/default/*/*/*.arrow"):
        arrow.rename(arrow.with_name(arrow.name.replace("someuser___", "")))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    test = load_table(DataSpec("someuser/tinyset"), "test")
    assert test.rows == [{"text": "c0", "label": 0}, {"text": "c1", "label": 1}]
    assert test.class_names == {"label": ("no", "yes")} and test.provenance.kind == HUB
    assert len(load_table(DataSpec("someuser/tinyset"), "validation").rows) == 1
    message = error(DataSpec("someuser/tinyset", dataset_config="other"))
    assert "configuration 'other'" in message and "Couldn't find cache for someuser/tinyset" in message

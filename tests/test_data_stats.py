"""`loralab data stats`: counts and token averages on the real shared data, and its errors (exit code 2)."""

import shutil

import pytest

from loralab.cli import main
from loralab.data import code_sources
from loralab.data.code_sources import load_python_codes_25k
from loralab.data.stats import DATASETS, dataset_stats, format_stats
from loralab.errors import UserError
from loralab.models.loading import load_tokenizer

EXCERPT = "python_codes_25k_excerpt/python_codes_25k_first356.jsonl"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("smollm2-135m")


@pytest.fixture(autouse=True)
def data_dir(shared_data, monkeypatch):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return shared_data


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_row(text, label):
    """The cells of the table line that starts with `label`."""
    line = next(line for line in text.splitlines() if line.startswith(label + "  "))
    return line[len(label) :].split()


def test_python_codes_stats_count_the_excerpt(tokenizer):
    stats = dataset_stats("python_codes_25k", tokenizer)
    everything = stats["splits"]["all"]
    assert everything["entries"] == 356 and everything["unique questions"] == 356
    assert everything["unique instructions"] == 356 and everything["unique inputs"] == 336
    assert everything["unique answers"] == 351
    assert [stats["splits"][s]["entries"] for s in ("train", "validation", "test")] == [285, 35, 36]
    rows, _ = load_python_codes_25k("test")
    prompt = sum(len(tokenizer(r["question"], add_special_tokens=False)["input_ids"]) for r in rows) / len(
        rows
    )
    answer = sum(len(tokenizer(r["answer"], add_special_tokens=False)["input_ids"]) for r in rows) / len(rows)
    assert stats["splits"]["test"]["avg prompt tokens"] == pytest.approx(prompt)
    assert stats["splits"]["test"]["avg answer tokens"] == pytest.approx(answer)
    assert 10 < prompt < 40 and 30 < answer < 150


def test_cli_prints_the_table(capsys):
    code, out, err = run_cli(capsys, "data", "stats", "python_codes_25k")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("python_codes_25k (tokens: smollm2-135m")
    assert lines[1].split() == ["train", "validation", "test", "all"]
    assert table_row(out, "entries") == ["285", "35", "36", "356"]
    assert table_row(out, "unique inputs")[-1] == "336"
    assert table_row(out, "unique answers")[-1] == "351"
    assert len(table_row(out, "avg prompt tokens")) == 4 and len(table_row(out, "avg answer tokens")) == 4
    assert any(line.startswith("test: python_codes_25k/test from ") for line in lines)


def test_cli_with_data_path_and_tokenizer_option(capsys, data_dir):
    code, out, _ = run_cli(
        capsys,
        "data",
        "stats",
        "python_codes_25k",
        "--tokenizer",
        "smollm2-135m",
        f"--data_path={data_dir / EXCERPT}",
    )
    assert code == 0 and table_row(out, "entries") == ["285", "35", "36", "356"]
    assert f"from {data_dir / EXCERPT}" in out


def test_summarization_and_sentiment_stats(capsys):
    code, out, _ = run_cli(capsys, "data", "stats", "xsum")
    assert code == 0
    assert table_row(out, "entries") == ["106", "74", "71", "251"]
    assert table_row(out, "unique summaries") == ["106", "74", "71", "251"]
    assert "unique inputs" not in out and "FRANK sample" in out
    code, out, _ = run_cli(capsys, "data", "stats", "rotten_tomatoes")
    assert code == 0
    assert table_row(out, "entries") == ["8,530", "1,066", "1,066", "10,662"]
    assert table_row(out, "unique labels") == ["2", "2", "2", "2"]
    assert table_row(out, "avg answer tokens") == ["1.0", "1.0", "1.0", "1.0"]


def test_stdlib_stats_on_a_small_library(tokenizer, tmp_path, monkeypatch):
    # the whole library is built and checked in test_code_sources; here a few real modules suffice
    library = tmp_path / "lib"
    shutil.copytree(code_sources.stdlib_root() / "json", library / "json")
    for name in ("textwrap.py", "fnmatch.py", "shlex.py"):
        shutil.copy(code_sources.stdlib_root() / name, library / name)
    monkeypatch.setattr(code_sources, "stdlib_root", lambda: library)
    monkeypatch.setenv("LORALAB_CACHE_DIR", str(tmp_path / "cache"))
    pairs = code_sources.build_stdlib_pairs(library)
    modules = {pair["id"].split(":")[0].split(".")[0] for pair in pairs}
    assert 15 <= len(pairs) <= 100 and modules == {"json", "textwrap", "fnmatch", "shlex"}
    stats = dataset_stats("stdlib_docstrings", tokenizer)
    everything = stats["splits"]["all"]
    assert everything["entries"] == everything["unique questions"] == len(pairs)
    assert sum(stats["splits"][s]["entries"] for s in ("train", "validation", "test")) == len(pairs)
    assert 20 < everything["avg prompt tokens"] < 400 and 20 < everything["avg answer tokens"] < 400
    assert "unique answers" in format_stats(stats) and str(library) in format_stats(stats)


def test_one_file_for_every_split_is_counted_once(tokenizer, data_dir):
    stats = dataset_stats("rotten_tomatoes", tokenizer, data_dir / "rotten_tomatoes" / "test.jsonl")
    assert [stats["splits"][s]["entries"] for s in ("train", "validation", "test", "all")] == [1066] * 4


def test_a_dataset_that_is_not_built_in_needs_its_task(capsys):
    code, out, err = run_cli(capsys, "data", "stats", "imdb")
    assert code == 2 and out == ""
    assert err.strip().startswith("loralab: error: say which task reads imdb: add --task=classification")
    with pytest.raises(UserError, match=f"unknown dataset 'imdb'; choose one of {', '.join(DATASETS)}"):
        dataset_stats("imdb", "smollm2-135m")


def test_bad_data_path_and_extra_arguments_exit_2(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "data", "stats", "cnn_dailymail", "--data_path", str(tmp_path / "none.jsonl")
    )
    assert code == 2 and err.startswith("loralab: error: ") and "not found; check the path" in err
    code, _, err = run_cli(capsys, "data", "stats", "xsum", "--rnak=4")
    assert code == 2 and "unknown config key 'rnak'; did you mean 'rank'?" in err
    with pytest.raises(SystemExit) as caught:
        main(["data"])
    assert caught.value.code == 2

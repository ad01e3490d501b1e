"""Your own data: the task families on the real shared datasets (banking77, oasst, gpteacher, ropes,
tiny_shakespeare), their one-line errors before any model loads, `loralab data preview`, and short real runs
of each family on a tiny model (CLI, exit codes, run files)."""

import csv
import json
from pathlib import Path

import pytest

from loralab.cli import main
from loralab.config import load_config
from loralab.data.splits import SPLITS
from loralab.errors import UserError
from loralab.tasks import get_task

SMALL = ["--max_train_samples=48", "--max_eval_samples=8", "--max_test_samples=8", "--max_steps=2",
         "--eval_every=2", "--batch_size=8", "--max_length=64", "--report_to=[]"]  # fmt: skip


def load(*overrides: str):
    config = load_config(None, list(overrides))
    return get_task(config.task).load_data(config, SPLITS)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# --- classification -------------------------------------------------------------------------------------------


def test_banking77_labels_come_from_the_data_and_validation_is_cut_from_train(shared_data):
    data = load("--task=classification", f"--dataset={shared_data / 'banking77'}", "--columns=label=category")
    words = data.config.label_words
    assert len(words) == 77 and words == sorted(words) and "card_arrival" in words
    assert data.notes[0].startswith("label words from the data's distinct labels, sorted (77): ")
    assert [len(data.rows[s]) for s in SPLITS] == [9003, 1000, 3080]
    assert "validation derived from train" in data.sources["validation"].note
    texts = {s: {r["text"] for r in data.rows[s]} for s in SPLITS}
    assert not texts["train"] & texts["validation"] and not texts["train"] & texts["test"]
    raw = [json.loads(line) for line in (shared_data / "banking77" / "test.jsonl").read_text().splitlines()]
    assert [words[r["label"]] for r in data.rows["test"]] == [r["category"] for r in raw]
    assert data.config.max_new_tokens == max(map(len, words)) + 2


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_label_words_name_string_labels_in_order_and_refuse_others(tmp_path):
    rows = [{"sentence": f"text {i}", "y": ["bad", "good"][i % 2]} for i in range(40)]
    file = write_csv(tmp_path / "d.csv", rows)
    data = load("--task=classification", f"--dataset={file}", "--columns=text=sentence,label=y",
                "--label_words=good,bad")  # fmt: skip
    assert data.config.label_words == ["good", "bad"]
    assert {(r["text"], r["label"]) for r in data.rows["train"]} <= {
        (f"text {i}", i % 2 == 0) for i in range(40)
    }
    with pytest.raises(UserError, match=r"label 'bad' is not one of the 2 label words \(yes, no\)"):
        load("--task=classification", f"--dataset={file}", "--columns=text=sentence,label=y",
             "--label_words=yes,no")  # fmt: skip


def test_missing_columns_and_unnamed_numbers_are_one_line_errors(tmp_path):
    file = write_csv(tmp_path / "d.csv", [{"sentence": f"t {i}", "y": i % 3} for i in range(30)])
    with pytest.raises(UserError) as caught:
        load("--task=classification", f"--dataset={file}")
    message = str(caught.value)
    assert "has no column 'text' for the task's text; columns present: 'sentence', 'y'" in message
    assert "set columns = {text = " in message and "\n" not in message
    with pytest.raises(UserError, match="labels of .* are numbers without names; set label_words"):
        load("--task=classification", f"--dataset={file}", "--columns=text=sentence,label=y")
    jsonl = tmp_path / "n.jsonl"
    jsonl.write_text("".join(json.dumps({"text": f"t {i}", "label": i % 3}) + "\n" for i in range(30)))
    data = load("--task=classification", f"--dataset={jsonl}", "--label_words=a,b,c")
    assert {r["label"] for r in data.rows["train"]} == {0, 1, 2}
    with pytest.raises(UserError, match="label 2 is not one of the 2 label words"):
        load("--task=classification", f"--dataset={jsonl}", "--label_words=a,b")


def test_a_datasets_class_label_names_the_label_words(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["sad", "happy"])}
    )
    rows = {"text": [f"t {i}" for i in range(30)], "label": [i % 2 for i in range(30)]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    data = load("--task=classification", f"--dataset={tmp_path / 'saved'}")
    assert data.config.label_words == ["sad", "happy"] and data.notes[0].startswith(
        "label words from the data's label names"
    )


# --- instruction ------------------------------------------------------------------------------------------------


def test_the_four_instruction_formats_read_the_real_files(shared_data):
    messages = load("--task=instruction", f"--dataset={shared_data / 'oasst_en_100' / 'messages.jsonl'}",
                    "--split_by=message_tree_id")  # fmt: skip
    sharegpt = load("--task=instruction", f"--dataset={shared_data / 'oasst_en_100' / 'sharegpt.jsonl'}",
                    "--split_by=message_tree_id")  # fmt: skip
    assert messages.notes == ["rows read as messages (detected)"] and sharegpt.notes == [
        "rows read as sharegpt (detected)"
    ]
    for split in SPLITS:
        assert [r["messages"] for r in messages.rows[split]] == [r["messages"] for r in sharegpt.rows[split]]
    raw = [
        json.loads(line)
        for line in (shared_data / "oasst_en_100" / "messages.jsonl").read_text().splitlines()
    ]
    trees = {s: {json.dumps(r["messages"][0]) for r in messages.rows[s]} for s in SPLITS}
    assert not trees["train"] & trees["test"] and sum(len(messages.rows[s]) for s in SPLITS) == len(raw)
    assert any(len(r["messages"]) > 2 for r in messages.rows["train"])  # multi-turn rows are kept whole
    alpaca = load(
        "--task=instruction",
        f"--dataset={shared_data / 'gpteacher_codegen_instruct' / 'codegen-instruct.jsonl'}",
    )
    assert alpaca.notes == ["rows read as alpaca (detected)"]
    first = alpaca.rows["train"][0]["messages"]
    assert [t["role"] for t in first] == ["user", "assistant"]
    ropes = load(
        "--task=instruction",
        f"--dataset={shared_data / 'ropes_t0_prompt_completion' / 'ropes_prompt_completion.jsonl'}",
    )
    assert ropes.notes == ["rows read as prompt_completion (detected)"]


def test_an_undetectable_format_lists_the_columns(tmp_path):
    file = tmp_path / "q.jsonl"
    file.write_text("".join(json.dumps({"question": f"q{i}", "reply": f"a{i}"}) + "\n" for i in range(20)))
    with pytest.raises(UserError, match="'question', 'reply'"):
        load("--task=instruction", f"--dataset={file}")
    data = load("--task=instruction", f"--dataset={file}", "--columns=prompt=question,completion=reply")
    assert data.rows["train"][0]["messages"][0]["content"].startswith("q")


# --- text and summarization -----------------------------------------------------------------------------------


def test_tiny_shakespeare_is_packed_into_rows_of_max_length(shared_data):
    from loralab.models.loading import load_tokenizer

    data = load(
        "--task=text", f"--dataset={shared_data / 'tiny_shakespeare' / 'input.txt'}", "--max_length=128"
    )
    tokenizer = load_tokenizer("smollm2-135m")
    rows = data.rows["validation"]
    chunks = get_task("text").examples(data.config, tokenizer, rows)
    stream = [
        t
        for r in rows
        for t in tokenizer(r["text"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ]
    assert [t for c in chunks for t in c.input_ids] == stream[: sum(len(c) for c in chunks)]
    assert (
        all(len(c) <= 128 and c.n_prompt == 1 for c in chunks)
        and len(stream) - sum(len(c) for c in chunks) <= 1
    )


def test_summarization_columns_map_any_names(tmp_path):
    rows = [{"article": f"Article number {i}. It is long.", "highlights": f"Summary {i}."} for i in range(30)]
    file = write_csv(tmp_path / "news.csv", rows)
    data = load("--task=summarization", f"--dataset={file}", "--columns=document=article,summary=highlights")
    assert all(r["summary"].startswith("Summary") for s in SPLITS for r in data.rows[s])
    assert sum(len(data.rows[s]) for s in SPLITS) == 30


# --- runs, preview, and errors before the model loads ----------------------------------------------------------


def test_each_family_trains_and_evaluates_on_a_tiny_model(tmp_path, tiny_llama_folder, shared_data, capsys):
    runs = {
        "classification": [f"--dataset={shared_data / 'banking77'}", "--columns=label=category"],
        "likelihood": [
            "--task=classification",
            f"--dataset={shared_data / 'banking77'}",
            "--columns=label=category",
            "--score_by=likelihood",
            "--chat_template=auto",
        ],  # fmt: skip
        "instruction": [
            f"--dataset={shared_data / 'oasst_en_100' / 'messages.jsonl'}",
            "--max_new_tokens=4",
            "--metrics=exact_match,token_f1,chrf",
        ],  # fmt: skip
        "text": [f"--dataset={shared_data / 'tiny_shakespeare' / 'input.txt'}"],
    }
    for name, extra in runs.items():
        task = [] if name == "likelihood" else [f"--task={name}"]
        out = tmp_path / name
        code, stdout, err = run_cli(capsys, "train", f"--model={tiny_llama_folder}", f"--out_dir={out}", *task,
                                    *extra, *SMALL)  # fmt: skip
        assert code == 0, err
        summary = json.loads((out / "summary.json").read_text())
        metrics = summary["metrics"]
        if name in ("classification", "likelihood"):
            assert len(metrics["confusion"]["matrix"]) == 77 and (out / "confusion.png").is_file()
            chat = "the tokenizer's chat template" if name == "likelihood" else "plain template"
            assert f"prompt format: {chat}" in err
        if name == "likelihood":
            assert metrics["invalid_rate"] == 0  # a label word is always picked
        if name == "instruction":
            assert {"exact_match", "token_f1", "chrf", "empty_rate"} <= set(metrics)
        if name == "text":
            assert metrics["perplexity"] > 1 and not (out / "predictions.jsonl").exists()
        code, stdout, err = run_cli(capsys, "eval", str(out))
        assert code == 0 and stdout.startswith("test "), err


def test_bad_data_fails_before_the_model_loads_and_keeps_the_earlier_run(tmp_path, monkeypatch, capsys):
    import loralab.training.setup as setup

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "summary.json").write_text("{}")
    monkeypatch.setattr(setup, "load_base", lambda *a: pytest.fail("the model loaded"))
    file = write_csv(tmp_path / "d.csv", [{"sentence": f"t {i}", "y": "a"} for i in range(30)])
    code, _, err = run_cli(capsys, "train", "--task=classification", f"--dataset={file}", f"--out_dir={out}",
                           "--overwrite", "--columns=text=sentence")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "has no column 'label'" in err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "summary.json"]


def test_data_preview_shows_what_trains(tmp_path, shared_data, capsys):
    config = tmp_path / "b77.toml"
    config.write_text(
        f'task = "classification"\ndataset = "{shared_data / "banking77"}"\ncolumns = {{label = "category"}}\n'
        'chat_template = "auto"\nsystem_prompt = "Name the intent."\n'
    )
    code, out, err = run_cli(capsys, "data", "preview", str(config), "--n", "2")
    assert code == 0, err
    assert out.count("--- example") == 2 and "<|im_start|>system\nName the intent.<|im_end|>" in out
    trained = [line for line in out.splitlines() if "⟦" in line and "mark the tokens" not in line]
    assert trained == ["⟦card_arrival<|im_end|>⟧"] * 2  # the first rows of banking77's train file
    assert "reach max_length = 256" in out
    code, out, err = run_cli(capsys, "data", "stats", str(config))
    assert code == 0 and "entries" in out and "9,003" in out


def test_a_required_chat_template_the_tokenizer_lacks_fails_before_the_model_loads(
    tmp_path, tiny_llama_folder, shared_data, monkeypatch, capsys
):
    import shutil

    import loralab.training.setup as setup

    model = tmp_path / "no_template"
    shutil.copytree(tiny_llama_folder, model)
    (model / "chat_template.jinja").unlink()
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    monkeypatch.setattr(setup, "load_base", lambda *a: pytest.fail("the model loaded"))
    args = ["train", f"--model={model}", "--task=classification", f"--dataset={shared_data / 'banking77'}",
            "--columns=label=category", f"--out_dir={tmp_path / 'run'}", *SMALL]  # fmt: skip
    code, _, err = run_cli(capsys, *args, "--chat_template=tokenizer")
    assert code == 2 and "this tokenizer has no chat template; set chat_template = " in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("preset", ["rotten_tomatoes", "code_qa", "cnn_dailymail"])
def test_the_presets_encode_their_rows_as_before_the_families(preset):
    """The examples of every preset, token for token, as loralab made them before (prompt + " " + answer + EOS
    in the plain template, cut by encode_example's rule)."""
    from loralab.data.chat import PromptFormat
    from loralab.data.encoding import encode_example
    from loralab.models.loading import load_tokenizer
    from loralab.training.examples import encode_rows
    from loralab.training.kinds import get_kind

    config = load_config(None, [f"--task={preset}", "--max_length=96"])
    task = get_task(preset)
    data = task.load_data(config, ("validation",))
    rows = data.rows["validation"][:120]
    tokenizer = load_tokenizer("smollm2-135m")
    fmt = PromptFormat(data.config.template)
    got = encode_rows(task, get_kind("causal"), tokenizer, fmt, data.config, rows, "validation")
    space = "" if config.template[-1].isspace() else " "
    for row, example in zip(rows, got, strict=True):
        text, answer = task.input_text(data.config, row), task.answer(data.config, row)
        before = encode_example(tokenizer, config.template, text, space + answer, 96)
        assert (example.input_ids, example.n_prompt) == (before.input_ids, before.n_prompt)

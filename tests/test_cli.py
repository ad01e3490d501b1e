"""Bad input on the command line: one line on stderr naming problem and fix, exit code 2, nothing touched."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from loralab.cli import main
from loralab.config import RunConfig, field_help
from loralab.config.describe import default_of

DEMO = "configs/rotten_tomatoes_lora.toml"


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("loralab: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err  # progress lines may come before it
    assert "Traceback" not in err
    for needle in needles:
        assert needle in errors[0]


@pytest.mark.parametrize(
    "override,needle",
    [
        ("--rnak=4", "unknown config key 'rnak'"),
        ("--rank=four", "--rank must be an integer"),
        ("--rank=0", "r must be a positive integer"),
        ("--alpha=-1", "alpha must be a positive number"),
        ("--dropout=1.5", "dropout must be in [0, 1)"),
        ("--method=prefix", "method must be one of"),
    ],
)
def test_bad_config_values(capsys, tmp_path, override, needle):
    out_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", DEMO, override, f"--out_dir={out_dir}")
    assert_user_error(code, err, needle)
    assert not out_dir.exists()


def test_missing_dataset_file_and_columns(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", DEMO, f"--data_path={tmp_path / 'nope'}", f"--out_dir={out_dir}")
    assert_user_error(code, err, "nope")
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "validation", "test"):
        (data / f"{split}.jsonl").write_text(json.dumps({"review": "fine", "stars": 1}) + "\n")
    code, _, err = run_cli(capsys, "train", DEMO, f"--data_path={data}", f"--out_dir={out_dir}")
    assert_user_error(code, err, "text", "review")
    assert not out_dir.exists()


def test_empty_dataset(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "validation", "test"):
        (data / f"{split}.jsonl").write_text("")
    code, _, err = run_cli(capsys, "train", DEMO, f"--data_path={data}", f"--out_dir={tmp_path / 'run'}")
    assert_user_error(code, err, "empty")


def test_unknown_model_name(capsys, tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    out_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", DEMO, "--model=no-such-model-xyz", f"--out_dir={out_dir}")
    assert_user_error(code, err, "unknown model 'no-such-model-xyz'", "smollm2-135m")
    assert not (out_dir / "config.json").exists()


def test_existing_run_is_not_overwritten(capsys, tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "config.json").write_text('{"precious": true}')
    (out_dir / "summary.json").write_text('{"accuracy": 0.9}')
    code, _, err = run_cli(capsys, "train", DEMO, f"--out_dir={out_dir}")
    assert_user_error(code, err, "already holds a run", "--overwrite", "--resume")
    assert (out_dir / "config.json").read_text() == '{"precious": true}'
    assert (out_dir / "summary.json").read_text() == '{"accuracy": 0.9}'


def test_resume_needs_a_run_and_eval_needs_a_run_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", DEMO, "--resume", f"--out_dir={tmp_path / 'none'}")
    assert_user_error(code, err, "nothing to resume")
    code, _, err = run_cli(capsys, "eval", str(tmp_path))
    assert_user_error(code, err, "not a loralab run folder")
    code, _, err = run_cli(capsys, "eval")
    assert_user_error(code, err, "RUN_DIR or --model")


def test_real_process_exit_code_and_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run(
        [sys.executable, "-m", "loralab", "train", str(tmp_path / "missing.toml")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"loralab: error: config file {tmp_path / 'missing.toml'} "
                                                  "not found; pass an existing .toml file (see configs/)"]  # fmt: skip


def test_help_lists_every_key(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for key in ("rank", "alpha", "target_modules", "max_train_samples", "patience", "top_k"):
        assert f"  {key} = " in out


def test_train_help_shows_each_key_with_its_help_under_its_section(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    positions = []
    for item in dataclasses.fields(RunConfig):
        if "section" in item.metadata:
            positions.append(out.index(f"\n{item.metadata['section']}:\n"))
        positions.append(out.index(f"\n  {item.name} = {json.dumps(default_of(item))}"))
        assert " ".join(field_help(item).split()) in flat, item.name
    assert positions == sorted(positions)  # in declaration order, each key under its own section


def test_help_and_a_bad_config_load_no_torch(tmp_path):
    """The CLI imports each command's layers inside the command, and loralab's API on first use: `--help`, a
    bad flag and a bad config are answered without loading torch or transformers."""
    bad = tmp_path / "bad.toml"
    bad.write_text("rank = -1\n")
    code = (
        "import sys\nfrom loralab.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['train', sys.argv[1]], ['train', sys.argv[1], '--x=1']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True)
    assert "HEAVY []" in done.stderr, done.stderr[-2000:]
    assert "LoRA rank" in done.stderr and "usage: loralab" in done.stdout


def test_the_api_loads_on_first_use():
    code = (
        "import sys, loralab\nassert 'torch' not in sys.modules\n"
        "from loralab import LoRAConfig, apply_lora\nimport loralab.lora as lora\n"
        "assert apply_lora is lora.apply_lora and 'torch' in sys.modules\n"
        "assert set(loralab.__all__) <= set(dir(loralab)) and set(lora.__all__) <= set(dir(lora))\n"
        "try:\n    loralab.no_such_name\nexcept AttributeError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "module 'loralab' has no attribute 'no_such_name'" in done.stdout

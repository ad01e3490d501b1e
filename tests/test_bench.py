"""loralab compare / sweep / report: one run per method or grid point, a report with every run, failures kept."""

import json

import pytest

from loralab.cli import main
from loralab.errors import UserError
from loralab.reporting.compare import compare_configs, parse_grid, split_overrides, sweep_configs
from loralab.reporting.report import write_report

DEMO = "configs/rotten_tomatoes_lora.toml"
ALL = "lora,full,last_layers,prompt_tuning,qlora"


@pytest.fixture(autouse=True)
def offline_shared_data(monkeypatch, shared_data):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_overrides_for_one_run_and_for_all():
    shared, own = split_overrides(
        ["--lr=1e-3", "--full.lr=5e-5", "--qlora.rank=4"], ["lora", "full", "qlora"]
    )
    assert shared == ["--lr=1e-3"] and own == {"lora": [], "full": ["--lr=5e-5"], "qlora": ["--rank=4"]}
    with pytest.raises(UserError, match="not one of the runs"):
        split_overrides(["--dora.lr=1"], ["lora"])


def test_compare_configs_differ_only_in_method_and_folder(tmp_path):
    runs = compare_configs(DEMO, ["lora", "full"], [f"--out_dir={tmp_path}", "--full.lr=5e-5"])
    (_, lora), (_, full) = runs
    assert (lora.method, full.method) == ("lora", "full")
    assert (lora.out_dir, full.out_dir) == (str(tmp_path / "lora"), str(tmp_path / "full"))
    assert (lora.lr, full.lr) == (1e-3, 5e-5)  # the config's lr, and full's own
    assert compare_configs(DEMO, ["lora"], [])[0][1].out_dir == "runs/rotten_tomatoes_lora_compare/lora"
    with pytest.raises(UserError, match="--methods"):
        compare_configs(DEMO, ["lora", "dora"], [])


def test_sweep_grid_with_constant_alpha_over_rank(tmp_path):
    runs = sweep_configs(DEMO, ["rank=8,16", "lr=1e-4,5e-4"], [f"--out_dir={tmp_path}"], alpha_over_rank=4)
    assert [name for name, _ in runs] == ["rank=8_lr=1e-4", "rank=8_lr=5e-4", "rank=16_lr=1e-4",
                                          "rank=16_lr=5e-4"]  # fmt: skip
    assert [(c.rank, c.alpha, c.lr) for _, c in runs] == [(8, 32.0, 1e-4), (8, 32.0, 5e-4), (16, 64.0, 1e-4),
                                                          (16, 64.0, 5e-4)]  # fmt: skip
    for bad, message in [(["rank"], "key=value1"), (["rank=8", "rank=16"], "one --grid"),
                         (["rnak=8"], "did you mean 'rank'")]:  # fmt: skip
        with pytest.raises(UserError, match=message):
            sweep_configs(DEMO, bad, [f"--out_dir={tmp_path}"])
    with pytest.raises(UserError, match="alpha from rank"):
        sweep_configs(DEMO, ["alpha=8,16"], [], alpha_over_rank=2)
    assert parse_grid(["lr=1e-4, 5e-4"]) == [("lr", ["1e-4", "5e-4"])]


def test_compare_all_methods_reports_each_keeps_failures_and_reuses_runs(tmp_path, tiny_llama_folder, capsys):
    parent = tmp_path / "cmp"
    args = [
        "compare",
        DEMO,
        f"--methods={ALL}",
        f"--model={tiny_llama_folder}",
        f"--out_dir={parent}",
        "--max_train_samples=32",
        "--max_eval_samples=16",
        "--max_test_samples=16",
        "--max_steps=2",
        "--eval_every=2",
        "--batch_size=8",
        "--max_length=64",
        "--n_virtual_tokens=4",
        "--last_layers.n_layers=9",
    ]  # fmt: skip (last_layers fails: the tiny model has 4 blocks)
    assert main(args) == 0
    out = capsys.readouterr()
    report = (parent / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| run")]
    assert [row.split(" | ")[0][2:] for row in rows] == ALL.split(",")
    failed = next(row for row in rows if row.startswith("| last_layers"))
    assert "**failed**: n_layers is 9 but the model has 4 blocks" in failed
    assert "last_layers failed" in out.err
    for name in ("val_loss.png", "train_loss.png", "metric.png", "cost_quality.png"):
        assert (parent / name).stat().st_size > 5000
    assert "<table>" in (parent / "report.html").read_text()
    summaries = {
        m: json.loads((parent / m / "summary.json").read_text()) for m in ALL.split(",") if m != "last_layers"
    }
    assert summaries["full"]["trainable_params"] == summaries["full"]["total_params"]
    assert summaries["prompt_tuning"]["trainable_params"] == 4 * 16
    assert summaries["qlora"]["trainable_params"] == summaries["lora"]["trainable_params"]
    assert summaries["qlora"]["quantization"]["ratio_to_fp32"] <= 0.16
    lora_row = next(row for row in rows if row.startswith("| lora"))
    assert f"{summaries['lora']['trainable_params']:,}" in lora_row and "rank=8, alpha=16.0" in lora_row

    # the same command again: finished runs are reused, the failed one is retried (and fixed here)
    assert main([*args[:-1], "--last_layers.n_layers=1"]) == 0
    err = capsys.readouterr().err
    assert err.count("finished earlier, reusing") == 4 and "last_layers: training" in err
    assert "**failed**" not in (parent / "report.md").read_text()
    # a changed setting does not silently reuse an old run
    assert main([*args[:-1], "--last_layers.n_layers=1", "--lr=0.5"]) == 2
    assert "with a different lr" in capsys.readouterr().err

    assert main(["report", str(parent / "lora"), str(parent / "full"), f"--out={tmp_path / 'rep'}"]) == 0
    rebuilt = (tmp_path / "rep" / "report.md").read_text()
    assert "| lora |" in rebuilt and "| full |" in rebuilt and "| qlora |" not in rebuilt


def test_settings_show_zero_but_not_off_flags():
    from loralab.reporting.report import _settings

    config = {"method": "last_layers", "n_layers": 0, "train_head": True, "train_embeddings": False,
              "train_layer_norms": False, "lr": 5e-3}  # fmt: skip
    assert _settings(config) == "n_layers=0, train_head=True, lr=0.005"


def test_report_refuses_folders_that_are_not_runs(tmp_path):
    with pytest.raises(UserError, match="not a loralab run folder"):
        write_report([tmp_path], tmp_path)
    assert main(["report", str(tmp_path)]) == 2

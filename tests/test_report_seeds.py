"""compare/sweep --seeds and the report's intervals, seed spreads and paired tests, on run folders written
here (what `loralab train` leaves behind), without training."""

import json

import numpy as np
import pytest

from loralab.cli import main
from loralab.config import load_config
from loralab.errors import UserError
from loralab.evaluation.scores import classification_statistics
from loralab.evaluation.uncertainty import save_statistics, with_intervals
from loralab.reporting.compare import compare_configs, parse_methods, parse_seeds, sweep_configs, with_seeds
from loralab.reporting.groups import group_name
from loralab.reporting.report import write_report

DEMO = "configs/rotten_tomatoes_lora.toml"


def test_seeds_repeat_every_run_and_keep_the_data_fixed(tmp_path):
    runs = with_seeds(compare_configs(DEMO, ["lora", "full"], [f"--out_dir={tmp_path}"]), [0, 1, 2])
    assert [name for name, _ in runs] == [f"{m}_seed={s}" for m in ("lora", "full") for s in (0, 1, 2)]
    assert [c.seed for _, c in runs] == [0, 1, 2] * 2
    assert {c.subset_seed for _, c in runs} == {0}  # same subsets and test examples for every seed
    assert runs[4][1].out_dir == str(tmp_path / "full_seed=1")
    swept = with_seeds(sweep_configs(DEMO, ["rank=4,8"], [f"--out_dir={tmp_path}", "--seed=5"]), [1, 2])
    assert [name for name, _ in swept] == ["rank=4_seed=1", "rank=4_seed=2", "rank=8_seed=1", "rank=8_seed=2"]
    assert {c.subset_seed for _, c in swept} == {5}
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ("", "a", "1,1", "-1"):
        with pytest.raises(UserError, match="--seeds"):
            parse_seeds(bad)
    assert group_name("lora_seed=12") == "lora" and group_name("rank=8") == "rank=8"


def test_named_runs_of_one_method(tmp_path):
    assert parse_methods("lora, pissa:lora,full") == [("lora", "lora"), ("pissa", "lora"), ("full", "full")]
    runs = compare_configs(DEMO, parse_methods("lora,r4:lora"), [f"--out_dir={tmp_path}", "--r4.rank=4"])
    assert [(n, c.method, c.rank) for n, c in runs] == [("lora", "lora", 8), ("r4", "lora", 4)]
    with pytest.raises(UserError, match="twice"):
        compare_configs(DEMO, parse_methods("lora,lora"), [])
    with pytest.raises(UserError, match="--methods"):
        compare_configs(DEMO, parse_methods("x:dora"), [])


def fake_run(folder, method, seed, right, resamples=400):
    """A finished classification run folder whose predictions are right where `right` is True."""
    config = load_config(DEMO, [f"--method={method}", f"--seed={seed}", f"--out_dir={folder}"])
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    expected = [i % 2 for i in range(len(right))]
    predicted = [e if r else 1 - e for e, r in zip(expected, right, strict=True)]
    statistics = classification_statistics(expected, predicted, 2, examples="same test set")
    metrics = {name: s.value() for name, s in statistics.items()} | {"n": len(right)}
    summary = {
        "method": method, "trainable_params": 1000, "total_params": 100000, "trainable_percent": 1.0,
        "peak_memory_mb": 500.0, "time_per_epoch_s": 10.0, "best_val_loss": 0.3,
        "metrics": with_intervals(metrics, statistics, resamples, seed),
    }  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "val_loss": 1 / (s + 1 + seed)}) + "\n" for s in (0, 5, 10))
    )
    save_statistics(folder / "test_statistics.safetensors", statistics)
    return folder


def test_report_over_seeds_gives_spreads_per_seed_values_and_paired_tests(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    folders = []
    for seed in (0, 1, 2):
        good = rng.random(n) < 0.88
        poor = good & (rng.random(n) < 0.85)  # loses ~13% of what good gets right
        folders += [
            fake_run(tmp_path / f"lora_seed={seed}", "lora", seed, good),
            fake_run(tmp_path / f"prompt_tuning_seed={seed}", "prompt_tuning", seed, poor),
        ]
    path = write_report(folders, tmp_path / "report")
    report = path.read_text()
    lora_row = next(line for line in report.splitlines() if line.startswith("| lora |"))
    assert " ± " in lora_row and "| 3 |" in lora_row  # mean ± std over 3 seeds
    assert "## Per seed" in report and report.count("| lora | ") == 4  # the row and its 3 seeds
    statement = next(line for line in report.splitlines() if line.startswith("- lora vs prompt_tuning"))
    assert "3 seeds paired by seed" in statement and "Significant at 5% in every seed" in statement
    assert "McNemar exact" in statement and "lora has the higher accuracy" in statement
    html = (tmp_path / "report" / "report.html").read_text()
    assert "3 seeds paired by seed" in html and html.count("data:image/png;base64,") == 4


def test_one_seed_shows_intervals_and_says_when_a_difference_is_noise(tmp_path):
    rng = np.random.default_rng(1)
    right = rng.random(200) < 0.8
    other = right.copy()
    other[np.flatnonzero(right)[:2]] = False  # two examples apart: noise at 200 examples
    folders = [fake_run(tmp_path / "lora", "lora", 0, right), fake_run(tmp_path / "full", "full", 0, other)]
    assert main(["report", *map(str, folders), f"--out={tmp_path / 'rep'}"]) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    lora_row = next(line for line in report.splitlines() if line.startswith("| lora |"))
    accuracy = right.mean()
    assert f"{accuracy:.4f} [" in lora_row and "## Per seed" not in report
    statement = next(line for line in report.splitlines() if line.startswith("- lora vs full"))
    assert "Not distinguishable at this test size" in statement and "test examples to show" in statement


def test_seeds_that_agree_in_direction_but_not_all_in_significance_say_so():
    from loralab.evaluation.paired import Comparison, format_p
    from loralab.reporting.groups import Group, _seeds_statement

    def seed(a_value, b_value, p):
        return Comparison("accuracy", "a", "b", a_value, b_value, None, p, "McNemar exact", 1066, None)

    a, b = Group("alone", []), Group("distilled", [])
    same_way = [seed(0.71, 0.73, 0.0498), seed(0.71, 0.73, 0.125), seed(0.73, 0.78, 8.3e-05)]
    text = _seeds_statement(a, b, "accuracy", same_way)
    assert "distilled is ahead in every seed, significantly at 5% in 2 of 3 seeds" in text
    assert "p = 0.0498, 0.12, 8.3e-05" in text  # 0.0498 is not rounded up to the line it is below
    both_ways = [seed(0.71, 0.75, 0.01), seed(0.74, 0.72, 0.3), seed(0.73, 0.73, 1.0)]
    assert "not a consistent difference" in _seeds_statement(a, b, "accuracy", both_ways)
    assert [format_p(p) for p in (0.0498, 0.05, 0.0504, 0.13, 0.04996)] == [
        "0.0498",
        "0.05",
        "0.05",
        "0.13",
        "0.04996",
    ]

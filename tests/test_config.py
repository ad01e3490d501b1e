"""Config: TOML then --key=value overrides, type-checked, with one-line errors."""

import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from loralab.config import CHOICES, TASK_DEFAULTS, RunConfig, field_help, load_config, registries
from loralab.errors import UserError


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_toml_then_overrides(tmp_path):
    path = write(tmp_path, 'rank = 4\nalpha = 8\ntarget_modules = ["q_proj", "v_proj"]\nlr = 2e-4\n')
    config = load_config(path, ["--rank=16", "--use_rslora=true", "--label_words=bad,good", "--max-steps=7"])
    assert config.rank == 16 and config.alpha == 8.0 and config.use_rslora is True and config.max_steps == 7
    assert config.target_modules == ["q_proj", "v_proj"] and config.label_words == ["bad", "good"]
    lora = config.lora_config()
    assert lora.r == 16 and lora.scaling == pytest.approx(8 / 4)
    assert load_config(None, ["--target_modules=q_proj,v_proj"]).target_modules == ["q_proj", "v_proj"]
    assert load_config(None, [r"--target_modules=.*\.(q|v)_proj"]).target_modules == r".*\.(q|v)_proj"
    assert load_config(None, ['--target_modules=["q"]']).target_modules == ["q"]


def test_shipped_demo_config_loads():
    config = load_config("configs/rotten_tomatoes_lora.toml")
    assert isinstance(config, RunConfig) and config.model == "smollm2-135m" and config.max_test_samples == 0


@pytest.mark.parametrize(
    "toml,overrides,message",
    [
        ("rnak = 4\n", [], "unknown config key 'rnak'; did you mean 'rank'"),
        ("", ["--learning_rate=1"], "unknown config key 'learning_rate'"),
        ('rank = "eight"\n', [], "'rank' must be an integer"),
        ("", ["--rank=eight"], "--rank must be an integer"),
        ("", ["--use_rslora=maybe"], "--use_rslora must be true or false"),
        ("rank = 0\n", [], "rank r must be a positive integer"),
        ("", ["--rank=-2"], "rank r must be a positive integer"),
        ("alpha = 0\n", [], "alpha must be a positive number"),
        ("dropout = 1.0\n", [], "dropout must be in [0, 1)"),
        ("dropout = -0.1\n", [], "dropout must be in [0, 1)"),
        ('bias = "some"\n', [], "bias must be one of"),
        ('method = "magic"\n', [], "method must be one of lora"),
        ("batch_size = 0\n", [], "batch_size must be > 0"),
        ('template = "no placeholder"\n', [], "template must contain {text}"),
        ("epochs = 0\n", [], "set epochs > 0 or max_steps > 0"),
        ("rank = 4\nrank = 5\n", [], "not valid TOML"),
        ("", ["rank=4"], "must look like --key=value"),
    ],
)
def test_bad_config_is_a_one_line_user_error(tmp_path, toml, overrides, message):
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, toml), overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("path", sorted(Path("configs").rglob("*.toml")), ids=str)
def test_every_shipped_config_loads(path):
    assert isinstance(load_config(path), RunConfig)


def test_experiment_targets_select_what_the_reference_adapted():
    import tiny_models
    from loralab.lora import apply_lora

    gpt2 = apply_lora(
        tiny_models.make("gpt2"), load_config("configs/experiments/01_gpt2_sentiment_lora.toml").lora_config()
    )
    assert sorted(gpt2.lora_target_names) == [
        f"transformer.h.{i}.attn.{m}" for i in (0, 1) for m in ("c_attn", "c_proj")
    ]
    t5 = apply_lora(
        tiny_models.make("t5"), load_config("configs/experiments/02_t5_code_qa_lora.toml").lora_config()
    )
    assert sorted(t5.lora_target_names) == [
        f"decoder.block.{i}.layer.0.SelfAttention.{m}" for i in (0, 1) for m in ("q", "v")
    ]


# ---------------------------------------------------------------------------------------------------------------
# The config documents itself; its choices and task defaults come from the registries that own them
# ---------------------------------------------------------------------------------------------------------------


def test_every_field_has_help_and_the_first_field_starts_a_section():
    items = dataclasses.fields(RunConfig)
    assert items[0].metadata.get("section")
    for item in items:
        assert isinstance(item.metadata.get("help"), str) and item.metadata["help"].strip(), item.name
        assert "\n" not in item.metadata["help"], item.name
    sections = [item.metadata["section"] for item in items if "section" in item.metadata]
    assert len(sections) == len(set(sections)) >= 5


def test_choices_are_the_registries_names():
    from loralab.data.builtin import BUILTIN
    from loralab.data.formats import FORMATS
    from loralab.evaluation.metrics import METRIC_NAMES
    from loralab.evaluation.sandbox.supervisor import LEVELS
    from loralab.lora.config import BIAS_MODES, INIT_MODES
    from loralab.methods import METHODS
    from loralab.tasks import FAMILIES
    from loralab.tasks.presets import PRESETS
    from loralab.training.kinds import KINDS

    assert CHOICES["method"] == tuple(METHODS)
    assert CHOICES["task"] == (*FAMILIES, *PRESETS) == tuple(TASK_DEFAULTS)
    assert tuple(BUILTIN) == registries.BUILTIN_DATASETS
    assert CHOICES["format"] == ("auto", *FORMATS) and registries.METRIC_NAMES == METRIC_NAMES
    assert CHOICES["bias"] == BIAS_MODES and CHOICES["init"] == INIT_MODES
    assert CHOICES["model_kind"] == ("auto", *KINDS)
    assert CHOICES["code_eval_isolation"] == LEVELS


def test_task_defaults_are_the_family_modules_own_with_the_presets_over_them():
    from loralab.tasks.presets import PRESETS

    for task, defaults in TASK_DEFAULTS.items():
        family = PRESETS.get(task, {}).get("family", task)
        module = importlib.import_module(f"loralab.tasks.{family}")
        preset = {k: v for k, v in PRESETS.get(task, {}).items() if k != "family"}
        assert defaults == module.DEFAULTS | preset
        assert registries.ROLES[family] == module.ROLES
        config = load_config(
            None,
            [f"--task={task}", "--dataset=my.jsonl"] if not defaults.get("dataset") else [f"--task={task}"],
        )
        for key, value in defaults.items():
            assert getattr(config, key) == value or not value, (task, key)


def test_help_lists_each_keys_choices_and_task_defaults():
    helps = {item.name: field_help(item) for item in dataclasses.fields(RunConfig)}
    for key, allowed in CHOICES.items():
        listed = helps[key].split("one of: ", 1)[1].split(";")[0]
        assert listed.split(", ") == [choice or '""' for choice in allowed], key
    for task, defaults in TASK_DEFAULTS.items():
        for key, value in defaults.items():
            if value:
                assert f"{task}: {json.dumps(value)}" in helps[key], (task, key)


def test_config_imports_none_of_the_layers_whose_registries_it_reads():
    code = "import sys, loralab.config; print(sorted(m for m in sys.modules if m.startswith('loralab.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for layer in ("methods", "tasks", "training", "evaluation", "data", "models"):
        assert f"'loralab.{layer}" not in loaded, loaded


def test_a_registry_that_is_not_a_literal_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "__init__.py").write_text('TASKS = {"a": a.TASK}\nNAMES = tuple(TASKS)\n')
    (tmp_path / "tasks" / "a.py").write_text('from typing import Literal\nLevel = Literal["x", "y"]\n')
    monkeypatch.setattr(registries, "PACKAGE", tmp_path)
    registries._top_level.cache_clear()
    try:
        assert registries.keys("loralab.tasks", "TASKS") == ("a",)
        assert registries.literal("loralab.tasks.a", "Level") == ("x", "y")
        with pytest.raises(RuntimeError, match="NAMES must be a literal"):
            registries.literal("loralab.tasks", "NAMES")
        with pytest.raises(RuntimeError, match="assigns no DEFAULTS"):
            registries.literal("loralab.tasks.a", "DEFAULTS")
        with pytest.raises(RuntimeError, match="Level must be a dict"):
            registries.keys("loralab.tasks.a", "Level")
    finally:
        registries._top_level.cache_clear()

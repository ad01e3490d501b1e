"""Config: TOML then --key=value overrides, type-checked, with one-line errors."""

from pathlib import Path

import pytest

from loralab.config import RunConfig, load_config
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

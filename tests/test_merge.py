"""Merging adapters (lora/merge.py, `loralab merge`): linear merges are exact at the default rank, the SVD
truncation error is what the SVD really loses, ties / dare / dare_ties equal peft's add_weighted_adapter where
the definitions match, DARE's drop is random at the right rate and unbiased, and the CLI writes a run folder that
loralab and peft load, or refuses bad input with exit code 2 and leaves nothing behind."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

import tiny_models
from loralab import LoRAConfig, apply_lora, load_adapter, save_adapter
from loralab.cli import main
from loralab.config import load_config, read_run_config
from loralab.errors import UserError
from loralab.files import write_json_atomically
from loralab.lora import lora_layers, merge
from loralab.lora.merge import (
    HOWS,
    combine,
    drop_and_rescale,
    elect_and_mean,
    low_rank,
    merge_adapters,
    read_adapter,
    trim,
)
from loralab.lora.merge import save_merged as save_merged_adapter
from loralab.training import merge_runs
from loralab.training.run_model import load_for_inference

A_CONFIG = LoRAConfig(r=2, alpha=4, target_modules=["q_proj", "v_proj"])
B_CONFIG = LoRAConfig(r=3, alpha=6, target_modules=["v_proj", "o_proj"], use_rslora=True)
llama = lambda: tiny_models.make("llama")  # noqa: E731
IDS = torch.tensor([[5, 17, 30, 48, 9, 70, 3], [11, 3, 8, 90, 64, 2, 40]])


def trained_like(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every LoRA factor a non-trivial value, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=gen) * 0.3)
    return model


def save(tmp_path, name: str, config: LoRAConfig, seed: int, make=lambda: tiny_models.make("llama")):
    folder = tmp_path / name
    save_adapter(trained_like(apply_lora(make(), config), seed), folder)
    return folder


def deltas(model_factory, folder) -> dict[str, torch.Tensor]:
    """Per layer ΔW of an adapter folder, read through loralab's own layers (not merge.py)."""
    model = load_adapter(model_factory(), folder)
    return {name: layer.delta_weight().detach().clone() for name, layer in lora_layers(model)}


def with_deltas(model: torch.nn.Module, weighted: list[tuple[float, dict]]) -> torch.nn.Module:
    """The base model with Σ w_i·ΔW_i added into its weights."""
    with torch.no_grad():
        for weight, delta in weighted:
            for name, d in delta.items():
                model.get_submodule(name).weight += weight * d
    return model


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


def merged_deltas(merged) -> dict[str, torch.Tensor]:
    """ΔW per layer of a MergedAdapter (alpha = r, so scaling 1)."""
    assert merged.config.scaling == 1.0
    t, p = merged.tensors, "base_model.model."
    return {name: t[f"{p}{name}.lora_B.weight"] @ t[f"{p}{name}.lora_A.weight"] for name in merged.errors}


@pytest.fixture
def two(tmp_path):
    return save(tmp_path, "a", A_CONFIG, 1), save(tmp_path, "b", B_CONFIG, 2)


def peft_merge(two, weights, combination, **kwargs) -> dict[str, torch.Tensor]:
    """ΔW per layer of peft's add_weighted_adapter of the two adapters."""
    model = PeftModel.from_pretrained(tiny_models.make("llama"), two[0], adapter_name="a")
    model.load_adapter(two[1], adapter_name="b")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # density 1: "no pruning will be performed"
        model.add_weighted_adapter(["a", "b"], weights, "m", combination_type=combination, **kwargs)
    found = {}
    for name, module in model.base_model.model.named_modules():
        if hasattr(module, "lora_A") and "m" in module.lora_A:
            found[name] = module.get_delta_weight("m").detach()
    return found


def assert_close(ours: dict, theirs: dict, tol: float = 1e-5) -> None:
    assert ours.keys() == theirs.keys()
    for name in ours:
        scale = max(theirs[name].abs().max().item(), 1.0)
        assert (ours[name] - theirs[name]).abs().max().item() <= tol * scale, name


def test_linear_merge_at_the_default_rank_is_the_exact_weighted_sum(two, tmp_path):
    adapters = [read_adapter(f) for f in two]
    merged = merge_adapters(adapters, [0.7, -0.4], "linear")
    assert merged.config.r == 5  # v_proj carries both: 2 + 3
    assert merged.relative_error < 1e-6 and max(e["relative_error"] for e in merged.errors.values()) < 1e-6
    save_merged_adapter(merged, tmp_path / "m")
    expected = with_deltas(tiny_models.make("llama"), [(0.7, deltas(llama, two[0]))])
    expected = with_deltas(expected, [(-0.4, deltas(llama, two[1]))])
    ours = logits(load_adapter(tiny_models.make("llama"), tmp_path / "m"))
    assert (ours - logits(expected)).abs().max().item() < 1e-5
    assert (ours - logits(tiny_models.make("llama"))).abs().max().item() > 1e-2  # it changed something
    # peft's "cat" is the same exact merge
    assert_close(merged_deltas(merged), peft_merge(two, [0.7, -0.4], "cat"))


def test_linear_merge_below_the_sum_of_ranks_reports_what_the_svd_loses(two):
    adapters = [read_adapter(f) for f in two]
    merged = merge_adapters(adapters, [1.0, 0.5], "linear", rank=2)
    exact = {n: d for n, d in merge_adapters(adapters, [1.0, 0.5], "linear").errors.items()}
    full = merged_deltas(merge_adapters(adapters, [1.0, 0.5], "linear"))
    ours = merged_deltas(merged)
    for name, delta in full.items():
        U, S, Vh = torch.linalg.svd(delta.double())
        best = (U[:, :2] * S[:2]) @ Vh[:2]  # Eckart–Young: the best rank-2 approximation
        assert (ours[name].double() - best).abs().max().item() < 1e-5
        actual = (delta.double() - ours[name].double()).norm() / delta.double().norm()
        assert abs(merged.errors[name]["relative_error"] - actual.item()) < 1e-5
        assert exact[name]["relative_error"] < 1e-6
    assert merged.errors["model.layers.0.self_attn.v_proj"]["relative_error"] > 0.01  # rank 5 cut to 2
    assert merged.errors["model.layers.0.self_attn.q_proj"]["relative_error"] < 1e-6  # rank 2 already
    assert_close(ours, peft_merge(two, [1.0, 0.5], "svd", svd_rank=2))


@pytest.mark.parametrize("exact_up_to", [1024, 64], ids=["exact", "randomized"])
def test_low_rank_is_the_truncated_svd_and_reports_its_true_error(monkeypatch, exact_up_to):
    monkeypatch.setattr(merge, "EXACT_UP_TO", exact_up_to)  # layers wider than this take the randomized SVD
    shape = (300, 200)
    gen = torch.Generator().manual_seed(0)
    planted = torch.randn(shape[0], 12, generator=gen) @ torch.randn(12, shape[1], generator=gen)
    delta = trim(planted, 0.3) + 0.01 * torch.randn(shape, generator=gen)  # sparse: full rank, as ties makes
    B, A, lost, norm = low_rank(delta, 8)
    assert B.shape == (shape[0], 8) and A.shape == (8, shape[1])
    S = torch.linalg.svdvals(delta.double())
    optimum = S[8:].square().sum().sqrt().item()
    actual = (delta.double() - B @ A).norm().item()
    assert abs(lost - actual) <= 1e-6 * norm and abs(norm - S.square().sum().sqrt().item()) <= 1e-6 * norm
    assert optimum <= actual <= optimum * (1 + 1e-4)  # Eckart–Young: no rank-8 matrix is closer
    assert torch.allclose(B.norm(dim=0), A.norm(dim=1))  # balanced: √σ on each side


def test_ties_by_hand():
    t1 = torch.tensor([[3.0, -1.0], [0.5, 2.0]])
    t2 = torch.tensor([[-2.0, -2.0], [1.0, -0.1]])
    # trim to the top half: [[3, 0], [0, 2]] and [[-2, -2], [0, 0]]; sums [[1, -2], [0, 2]]: + elected
    # at [1, 0], where no value is left, so 0
    assert torch.equal(
        combine([t1, t2], "ties", 0.5, torch.Generator()), torch.tensor([[3.0, -2.0], [0.0, 2.0]])
    )
    # no trim: sums [[1, -3], [1.5, 1.9]], entries of the elected sign averaged
    assert torch.equal(elect_and_mean([t1, t2]), torch.tensor([[3.0, -1.5], [0.75, 2.0]]))
    # a sum of 0 elects +; zeros never count
    assert torch.equal(
        elect_and_mean([torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0])]), torch.tensor([1.0, 0.0])
    )


@pytest.mark.parametrize("rank", [32, 4])
def test_ties_equals_peft_ties_svd_with_equal_weights(two, rank):
    merged = merge_adapters([read_adapter(f) for f in two], [0.8, 0.8], "ties", density=0.3, rank=rank)
    theirs = peft_merge(two, [0.8, 0.8], "ties_svd", density=0.3, svd_rank=rank, svd_full_matrices=False)
    assert_close(merged_deltas(merged), theirs)
    if rank == 4:
        assert merged.relative_error > 0.01  # a sparse ΔW is not low rank: the report says what is lost


def test_dare_with_density_one_is_linear_and_equals_peft(two):
    adapters = [read_adapter(f) for f in two]
    dare = merged_deltas(merge_adapters(adapters, [0.6, 0.9], "dare", density=1.0, rank=32))
    linear = merged_deltas(merge_adapters(adapters, [0.6, 0.9], "linear", rank=32))
    assert_close(dare, linear)
    theirs = peft_merge(two, [0.6, 0.9], "dare_linear_svd", density=1.0, svd_rank=32, svd_full_matrices=False)
    assert_close(dare, theirs)
    dare_ties = merge_adapters(adapters, [0.6, 0.6], "dare_ties", density=1.0, rank=32)
    theirs = peft_merge(two, [0.6, 0.6], "dare_ties_svd", density=1.0, svd_rank=32, svd_full_matrices=False)
    assert_close(merged_deltas(dare_ties), theirs)


def test_dare_drops_at_the_right_rate_rescales_and_is_unbiased():
    ones = torch.ones(300, 300)
    dropped = drop_and_rescale(ones, 0.3, torch.Generator().manual_seed(0))
    kept = dropped != 0
    n = ones.numel()
    assert abs(kept.float().mean().item() - 0.3) < 4 * (0.3 * 0.7 / n) ** 0.5
    assert torch.allclose(dropped[kept], torch.full_like(dropped[kept], 1 / 0.3))
    again = drop_and_rescale(ones, 0.3, torch.Generator().manual_seed(0))
    other = drop_and_rescale(ones, 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(dropped, again) and not torch.equal(dropped, other)
    # the mean of many dare merges tends to the linear merge
    gen = torch.Generator().manual_seed(3)
    taus = [torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)]
    mean = sum(combine(taus, "dare", 0.5, gen) for _ in range(4000)) / 4000
    linear = taus[0] + taus[1]
    spread = (taus[0].square() + taus[1].square()).sqrt() / 4000**0.5  # std of the mean at density 0.5
    assert ((mean - linear).abs() <= 5 * spread + 1e-6).all()


def test_dare_merges_are_seeded(two):
    adapters = [read_adapter(f) for f in two]
    one, again, other = (merge_adapters(adapters, [1, 1], "dare", 0.5, seed=s).tensors for s in (7, 7, 8))
    assert all(torch.equal(one[k], again[k]) for k in one)
    assert any(not torch.equal(one[k], other[k]) for k in one)


def test_read_adapter_refuses_dora_biases_and_whole_modules(tmp_path):
    for name, config in [
        ("dora", LoRAConfig(r=2, target_modules=["q_proj"], use_dora=True)),
        ("saved", LoRAConfig(r=2, target_modules=["q_proj"], modules_to_save=["model.norm"])),
    ]:
        with pytest.raises(UserError, match="DoRA|whole modules"):
            read_adapter(save(tmp_path, name, config, 0))
    gpt2 = save(
        tmp_path, "gpt2", LoRAConfig(r=2, target_modules=["c_attn"]), 0, lambda: tiny_models.make("gpt2")
    )
    llama = save(tmp_path, "llama", LoRAConfig(r=2, target_modules=["q_proj"]), 0)
    merged = merge_adapters([read_adapter(gpt2), read_adapter(llama)], [1, 1])  # disjoint layers: a union
    assert len(merged.errors) == 2 + 2
    assert merged.config.target_modules.startswith("^(")  # they differ: a regex of exactly those layers


# --- the CLI on run folders -------------------------------------------------------------------------------


def make_run(tmp_path, folder, name: str, config: LoRAConfig, seed: int, *extra: str):
    """A run folder as `loralab train` leaves it (config.json + adapter/), without training."""
    run = tmp_path / name
    run.mkdir()
    settings = load_config(None, [f"--model={folder}", f"--out_dir={run}", *extra])
    write_json_atomically(run / "config.json", settings.to_dict())
    model = trained_like(apply_lora(AutoModelForCausalLM.from_pretrained(folder), config), seed)
    save_adapter(model, run / "adapter", base_model_name=str(folder))
    return run


@pytest.fixture
def runs(tmp_path, tiny_llama_folder):
    return (make_run(tmp_path, tiny_llama_folder, "run_a", A_CONFIG, 1),
            make_run(tmp_path, tiny_llama_folder, "run_b", B_CONFIG, 2))  # fmt: skip


def test_cli_merge_writes_a_run_that_eval_generate_and_peft_load(runs, tmp_path, tiny_llama_folder, capsys):
    out = tmp_path / "merged"
    argv = ["merge", str(runs[0]), str(runs[1]), "--how", "ties", "--density", "0.5", "--weights", "0.6,0.6"]
    assert main([*argv, "--rank", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rank 4" in printed and "SVD truncation error" in printed
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "config.json", "merge.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged.")]  # no scratch left
    record = json.loads((out / "merge.json").read_text())
    assert record["how"] == "ties" and record["weights"] == [0.6, 0.6] and record["density"] == 0.5
    assert record["runs"] == [str(r) for r in runs] and record["rank"] == 4 and len(record["layers"]) == 12

    config = read_run_config(out / "config.json")
    assert config.rank == 4 and config.out_dir == str(out)
    model, *_ = load_for_inference(config, out)  # what `loralab eval` and `generate` load
    ours = logits(model)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_folder), out / "adapter")
    assert (ours - logits(peft)).abs().max().item() < 1e-5
    base = logits(AutoModelForCausalLM.from_pretrained(tiny_llama_folder))
    assert (ours - base).abs().max().item() > 1e-3
    assert main(["generate", str(out), "--prompt", "Hello", "--max_new_tokens=2"]) == 0


def test_cli_linear_merge_is_exact_and_overwrite_replaces(runs, tmp_path, tiny_llama_folder, capsys):
    out = tmp_path / "merged"
    out.mkdir()  # an empty folder may be the target
    assert main(["merge", str(runs[0]), str(runs[1]), "--weights", "0.5", "-0.25", "--out", str(out)]) == 0
    assert json.loads((out / "merge.json").read_text())["relative_error"] < 1e-6
    model, *_ = load_for_inference(read_run_config(out / "config.json"), out)
    factory = lambda: AutoModelForCausalLM.from_pretrained(tiny_llama_folder)  # noqa: E731
    expected = with_deltas(factory(), [(0.5, deltas(factory, runs[0] / "adapter"))])
    expected = with_deltas(expected, [(-0.25, deltas(factory, runs[1] / "adapter"))])
    assert (logits(model) - logits(expected)).abs().max().item() < 1e-5
    assert main(["merge", str(runs[0]), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["merge", str(runs[0]), "--out", str(out), "--overwrite", "--rank", "1"]) == 0
    assert json.loads((out / "merge.json").read_text())["rank"] == 1


BAD = {
    "weights count": (["--weights", "1,2,3"], "3 --weights for 2 runs"),
    "weight not a number": (["--weights", "1", "x"], "'x' is not a number"),
    "density above 1": (["--how", "ties", "--density", "1.5"], "--density must be in (0, 1]"),
    "density 0": (["--how", "dare", "--density", "0"], "--density must be in (0, 1]"),
    "density with linear": (["--density", "0.5"], "--density applies to ties"),
    "rank 0": (["--rank", "0"], "--rank must be a positive integer"),
    "an override": (["--lr=1e-3"], "takes no overrides"),
    "unknown how": (["--how", "mean"], "invalid choice"),
}


def exit_code(argv: list[str]) -> int:
    """main's exit code; argparse's own errors (a bad choice) leave by SystemExit(2)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_options_exit_2_and_write_nothing(runs, tmp_path, capsys, case):
    extra, message = BAD[case]
    out = tmp_path / "merged"
    assert exit_code(["merge", str(runs[0]), str(runs[1]), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]


def test_bad_runs_exit_2_and_write_nothing(runs, tmp_path, tiny_llama_folder, capsys):
    folder = tiny_llama_folder
    dora = make_run(tmp_path, folder, "dora", LoRAConfig(r=2, target_modules=["q_proj"], use_dora=True), 3)
    prompt = make_run(tmp_path, folder, "prompt", A_CONFIG, 4, "--method=prompt_tuning")
    other = make_run(tmp_path, folder, "other", A_CONFIG, 5, "--model=smollm2-135m")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    capsys.readouterr()  # the runs' loading messages
    cases = [
        ([dora], "DoRA adapter"),
        ([prompt], "is a prompt_tuning run"),
        ([other], "merge adapters of one base model"),
        ([tmp_path / "missing"], "not a loralab run folder"),
        ([runs[1], "--out", str(tmp_path / "taken")], "holds files already"),
        ([runs[1], "--out", str(runs[0] / "inside")], "overlaps the run"),
    ]
    for extra, message in cases:
        out = tmp_path / "merged"
        argv = ["merge", str(runs[0]), *map(str, extra)]
        assert main(argv if "--out" in argv else [*argv, "--out", str(out)]) == 2, message
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (message, err)
        assert not out.exists() and not (runs[0] / "inside").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith((".merged", ".taken"))]
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_the_cli_offers_the_merges_the_library_has():
    assert merge_runs.HOWS == HOWS

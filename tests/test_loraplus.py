"""LoRA+ (Hayou et al. 2024): the B matrices learn at lr × loraplus_lr_ratio, in their own AdamW parameter group
that keeps its ratio through the schedule and through a checkpoint and resume."""

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import tiny_models
from loralab import LoRAConfig, apply_lora
from loralab.cli import main
from loralab.config import load_config
from loralab.training.checkpoint import load_checkpoint, save_checkpoint
from loralab.training.distributed import World
from loralab.training.loop import train_step
from loralab.training.schedule import Schedule
from loralab.training.setup import TrainState, param_groups


def lora_model(init: str = "kaiming") -> torch.nn.Module:
    torch.manual_seed(0)
    config = LoRAConfig(r=2, alpha=4, init=init, target_modules=["q_proj", "v_proj"])
    return apply_lora(tiny_models.make("llama").train(), config)


def test_b_matrices_get_their_own_group_with_the_ratio():
    config = LoRAConfig(r=2, target_modules=["c_attn", "c_fc"], bias="all", modules_to_save=["ln_f"])
    model = apply_lora(tiny_models.make("gpt2"), config)
    names = {id(p): n for n, p in model.named_parameters()}
    rest, b_group = param_groups(model, 16.0)
    assert b_group["lr_ratio"] == 16.0 and rest["lr_ratio"] == 1.0
    assert {names[id(p)].rsplit(".", 1)[-1] for p in b_group["params"]} == {"lora_B"}
    assert len(b_group["params"]) == 4  # c_attn and c_fc of two blocks
    others = {names[id(p)] for p in rest["params"]}
    assert any(n.endswith("lora_A") for n in others) and any(n.endswith("attn.c_proj.bias") for n in others)
    assert "transformer.ln_f.weight" in others  # trained in full: lr (peft: every 1-D parameter at B's)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(rest["params"]) + len(b_group["params"]) == len(trainable)
    assert [g["lr_ratio"] for g in param_groups(model, 1.0)] == [1.0]  # off: one group, as without LoRA+
    full = tiny_models.make("llama").train()
    assert len(param_groups(full, 16.0)) == 1  # no lora_B: nothing to scale


def fake_run(model: torch.nn.Module, ratio: float) -> SimpleNamespace:
    """What train_step reads of a Run: one training row of random tokens, a constant schedule."""
    config = load_config(None, ["--lr=0.01", "--lr_schedule=constant", "--warmup_ratio=0"])
    ids = torch.randint(2, tiny_models.VOCAB, (1, 8), generator=torch.Generator().manual_seed(3))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(param_groups(model, ratio), lr=config.lr)

    def loss_sum(model, batch):
        logits = model(input_ids=batch["input_ids"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
        return loss, labels.numel()

    return SimpleNamespace(
        model=model, config=config, state=TrainState(), params=params, optimizer=optimizer,
        schedule=Schedule(per_step=1, steps_per_epoch=10, total_steps=10, warmup=0),
        collate_train=lambda rows, pad: rows[0], train_set=[{"input_ids": ids, "labels": ids}], pad_id=0,
        world=World(), loss_sum=loss_sum, device=torch.device("cpu"), out=None, log=print,
    )  # fmt: skip


def test_the_loop_sets_each_groups_lr_and_b_moves_ratio_times_as_far():
    moved = {}
    for ratio in (1.0, 4.0):
        model = lora_model()
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        run = fake_run(model, ratio)
        train_step(run, [[0]])
        assert [g["lr"] for g in run.optimizer.param_groups] == ([0.01] if ratio == 1 else [0.01, 0.04])
        moved[ratio] = {n: p.detach() - before[n] for n, p in model.named_parameters() if p.requires_grad}
    for name, change in moved[4.0].items():
        if name.endswith("lora_B"):  # B = 0 at the start: B alone gets a gradient in the first step
            assert change.abs().max() > 0
            assert torch.allclose(change, 4 * moved[1.0][name], rtol=1e-4, atol=1e-9), name
        else:
            assert torch.allclose(change, moved[1.0][name]), name


@pytest.mark.parametrize("init", ["kaiming", "pissa"])
def test_optimizer_groups_survive_a_checkpoint_round_trip(tmp_path, init):
    model = lora_model(init)
    run = fake_run(model, 8.0)
    for _ in range(2):
        train_step(run, [[0]])
    save_checkpoint(tmp_path / "checkpoint", model, run.optimizer, {"step": 2})
    for _ in range(2):
        train_step(run, [[0]])
    straight = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    again = lora_model(init)  # a resumed run: prepare() again (pissa: the same residual), then the checkpoint
    resumed = fake_run(again, 8.0)
    assert load_checkpoint(tmp_path / "checkpoint", again, resumed.optimizer) == {"step": 2}
    assert [g["lr_ratio"] for g in resumed.optimizer.param_groups] == [1.0, 8.0]
    first = resumed.optimizer.state_dict()["state"]
    assert len(first) == len(resumed.params) and all("exp_avg" in s for s in first.values())
    for _ in range(2):
        train_step(resumed, [[0]])
    for name, param in again.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, straight[name]), name


def test_a_resumed_loraplus_pissa_run_ends_with_the_adapter_of_an_uninterrupted_one(
    tmp_path, tiny_llama_folder, shared_data, monkeypatch
):
    monkeypatch.setenv("LORALAB_DATA_DIR", str(shared_data))
    # a constant lr: the lr of a step does not depend on max_steps, so 2 steps then 3 equal 3 straight
    run = ["train", "configs/rotten_tomatoes_lora.toml", f"--model={tiny_llama_folder}", "--init=pissa",
           "--loraplus_lr_ratio=16", "--rank=4", "--max_train_samples=24", "--max_eval_samples=4",
           "--max_test_samples=4", "--eval_every=2", "--batch_size=8", "--max_length=48", "--report_to=",
           "--lr_schedule=constant", "--warmup_ratio=0"]  # fmt: skip
    assert main([*run, "--max_steps=3", f"--out_dir={tmp_path / 'straight'}"]) == 0
    assert main([*run, "--max_steps=2", f"--out_dir={tmp_path / 'resumed'}"]) == 0
    assert main([*run, "--max_steps=3", f"--out_dir={tmp_path / 'resumed'}", "--resume"]) == 0
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert [g["lr_ratio"] for g in state["param_groups"]] == [1.0, 16.0]
    a = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

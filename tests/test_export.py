"""`loralab export`: a run's merged model as a plain transformers folder, loaded without loralab."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from loralab.cli import main
from loralab.config import config_from_dict
from loralab.training.run_model import load_for_inference

SMALL = ["--max_train_samples=32", "--max_eval_samples=8", "--max_test_samples=8", "--max_steps=2",
         "--eval_every=0", "--batch_size=8", "--max_length=48", "--lr=5e-2"]  # fmt: skip
IDS = [[1, 17, 305, 2048, 99, 7, 4000, 12], [3, 3, 9, 800, 1024, 5, 6, 2]]

# Runs in a fresh interpreter where importing loralab fails: the folder must stand on transformers alone.
PLAIN_LOAD = """
import sys, json, torch
sys.modules["loralab"] = None
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, ids = sys.argv[1], json.loads(sys.argv[2])
model = AutoModelForCausalLM.from_pretrained(folder).eval()
AutoTokenizer.from_pretrained(folder)
with torch.no_grad():
    print(json.dumps(model(input_ids=torch.tensor(ids)).logits.tolist()))
"""


def train_run(tmp_path, tiny_llama_folder, *extra: str):
    out = tmp_path / "run"
    args = ["train", "configs/rotten_tomatoes_lora.toml", f"--model={tiny_llama_folder}", f"--out_dir={out}",
            *SMALL, *extra]  # fmt: skip
    assert main(args) == 0
    return out


def loralab_logits(run) -> torch.Tensor:
    config = config_from_dict(json.loads((run / "config.json").read_text()))
    model, *_ = load_for_inference(config, run)
    with torch.no_grad():
        return model(input_ids=torch.tensor(IDS)).logits


def plain_transformers_logits(folder) -> torch.Tensor:
    out = subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(folder), json.dumps(IDS)], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return torch.tensor(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "extra",
    [[], ["--lora_variant=dora", "--target_modules=q_proj,v_proj"], ["--method=qlora"]],
    ids=["lora", "dora", "qlora"],
)
def test_exported_folder_loads_in_plain_transformers_with_the_same_logits(
    tmp_path, tiny_llama_folder, capsys, extra
):
    run = train_run(tmp_path, tiny_llama_folder, *extra)
    folder = tmp_path / "exported"
    assert main(["export", str(run), "--to", str(folder)]) == 0
    assert "exported" in capsys.readouterr().out
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    ours, theirs = loralab_logits(run), plain_transformers_logits(folder)
    assert (ours - theirs).abs().max().item() <= 1e-5
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_llama_folder)(input_ids=torch.tensor(IDS)).logits
    assert (theirs - base).abs().max().item() > 1e-3  # the adapter really is in the exported weights


def test_export_refuses_an_existing_folder_and_soft_prompts(tmp_path, tiny_llama_folder, capsys):
    run = train_run(tmp_path, tiny_llama_folder, "--method=prompt_tuning", "--n_virtual_tokens=4")
    capsys.readouterr()
    assert main(["export", str(run), "--to", str(tmp_path / "out")]) == 2
    assert "cannot export a prompt_tuning run" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert main(["export", str(run), "--to", str(taken)]) == 2
    assert "exists; pick a new folder or pass --overwrite" in capsys.readouterr().err
    assert (taken / "keep.txt").read_text() == "mine"
    assert main(["export", str(tmp_path / "nope"), "--to", str(tmp_path / "x")]) == 2
    assert "not a loralab run folder" in capsys.readouterr().err

"""A malicious pickle planted where loralab expects an adapter or a checkpoint is refused, never executed."""

import pickle

import pytest
import torch

import tiny_models
from loralab import LoRAConfig, apply_lora, load_adapter, save_adapter
from loralab.errors import UserError
from loralab.training.checkpoint import load_checkpoint, save_checkpoint


class Payload:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path, marker) -> None:
    path.write_bytes(pickle.dumps(Payload(marker)))


def test_a_pickle_in_place_of_adapter_weights_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    model = apply_lora(tiny_models.make("llama"), LoRAConfig(r=2, target_modules=["q_proj"]))
    save_adapter(model, tmp_path / "adapter")
    plant(tmp_path / "adapter" / "adapter_model.safetensors", marker)
    with pytest.raises(UserError, match="is not a valid safetensors file.*save the adapter again"):
        load_adapter(tiny_models.make("llama"), tmp_path / "adapter")
    (tmp_path / "adapter" / "adapter_model.safetensors").unlink()  # only a pickled .bin left, as torch saves
    plant(tmp_path / "adapter" / "adapter_model.bin", marker)
    with pytest.raises(UserError, match="has no adapter_model.safetensors"):
        load_adapter(tiny_models.make("llama"), tmp_path / "adapter")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["weights.safetensors", "optimizer.safetensors"])
def test_a_pickle_in_place_of_a_checkpoint_file_is_refused_not_run(tmp_path, name):
    marker = tmp_path / "pwned"
    model = apply_lora(tiny_models.make("llama"), LoRAConfig(r=2, target_modules=["q_proj"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    save_checkpoint(tmp_path / "checkpoint", model, optimizer, {"step": 1})
    plant(tmp_path / "checkpoint" / name, marker)
    with pytest.raises(UserError, match=f"{name} is not a valid safetensors file.*without --resume"):
        load_checkpoint(tmp_path / "checkpoint", model, optimizer)
    assert not marker.exists()

import contextlib
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    path = Path(os.environ.get("LORALAB_DATA_DIR", SHARED_DATA))
    if not (path / "rotten_tomatoes").is_dir():
        pytest.fail(f"shared data not found at {path}; set LORALAB_DATA_DIR to ../shared/data")
    return path


@pytest.fixture
def interrupt_after_checkpoint(monkeypatch):
    """A context manager: inside it, training stops with KeyboardInterrupt right after saving the checkpoint of
    step `step`, as a Ctrl-C there would; outside it, checkpoints are saved as usual."""
    import loralab.training.loop as loop

    real_save = loop.save_checkpoint

    @contextlib.contextmanager
    def interrupting(step: int):
        def save_then_die(directory, model, optimizer, state):
            real_save(directory, model, optimizer, state)
            if state["step"] == step:
                raise KeyboardInterrupt

        monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
        try:
            yield
        finally:
            monkeypatch.setattr(loop, "save_checkpoint", real_save)

    return interrupting


@pytest.fixture(scope="session")
def tiny_llama_folder(tmp_path_factory) -> Path:
    """A tiny random 4-block Llama (hidden size 16) with the bundled SmolLM2 tokenizer: a local model folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from loralab.models.loading import load_tokenizer

    folder = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

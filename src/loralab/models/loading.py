"""Load a model and its tokenizer by name: a bundled model, a local folder, a .gguf file or a hub id.

Bundled models come from bundled.py; folders and GGUF files are read by reading.py; hub ids go through hub.py's
reachability probe first. Imports models/*, hub.py, files.py and errors.py.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoTokenizer,
    EncoderDecoderModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from loralab.errors import UserError, short_reason
from loralab.files import read_json
from loralab.hub import offline_flag, unreachable_reason
from loralab.models.bundled import (
    BUNDLED,
    BUNDLED_ENCODER_DECODERS,
    BUNDLED_FOLDERS,
    bundled_dir,
    bundled_names,
    load_bundled,
)
from loralab.models.reading import (
    Head,
    from_pretrained,
    quiet_progress,
    quiet_transformers,
    read_folder,
    read_gguf,
)


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
        model, tokenizer = load_bundled(BUNDLED[name], dtype, head)
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
        raise UserError(
            f"cannot load the tokenizer of {name!r} ({short_reason(exc)}); check the model"
        ) from exc
    offline = offline_flag("transformers") is not None
    if not offline and (reason := unreachable_reason()) is not None:
        raise _unknown(name, reason)
    try:
        return AutoTokenizer.from_pretrained(name, **trust, **({"local_files_only": True} if offline else {}))
    except (OSError, ValueError, KeyError) as exc:
        if _needs_remote_code(exc):
            raise _remote_code_error(name) from None
        reason = "offline (HF_HUB_OFFLINE) and not in the local hub cache" if offline else short_reason(exc)
        raise _unknown(name, reason) from exc


REMOTE_CODE_FILES = ("config.json", "tokenizer_config.json")


def check_remote_code(folder: Path, trust_remote_code: bool) -> None:
    """UserError when the model folder ships Python code (an "auto_map" in its config files) and the user has
    not opted in with trust_remote_code; nothing of the folder is imported before this check."""
    if trust_remote_code:
        return
    for name in REMOTE_CODE_FILES:
        try:
            settings = read_json(folder / name, "JSON", "")
        except UserError:
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


def _load_encoder_decoder(
    folder: Path, dtype: torch.dtype, head: Head
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """BERT2BERT from one encoder folder: the decoder copy gains causal masks and random cross-attention."""

    if head.kind not in ("auto", "seq2seq"):
        raise UserError(
            f"this bundled model is an encoder-decoder; use model_kind seq2seq (or auto), not {head.kind}"
        )
    with quiet_progress(), quiet_transformers():
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


def _load_folder(
    path: Path, dtype: torch.dtype, head: Head, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    check_remote_code(path, trust_remote_code)
    try:
        return read_folder(path, dtype, head, trust_remote_code)
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise UserError(
            f"cannot load the model folder {str(path)!r} ({short_reason(exc)}); "
            "it needs what save_pretrained writes: config.json, weights and tokenizer files"
        ) from exc


def _load_gguf_file(
    path: Path, dtype: torch.dtype, head: Head
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    try:
        return read_gguf(path, dtype, head)
    except (OSError, ValueError, KeyError, NotImplementedError) as exc:
        raise UserError(
            f"cannot load the GGUF file {str(path)!r} ({short_reason(exc)}); "
            "transformers supports GGUF files of common architectures (llama, gemma, qwen, t5, ...)"
        ) from exc


def _unknown(name: str, reason: str) -> UserError:
    bundled = ", ".join(bundled_names())
    return UserError(
        f"unknown model {name!r}: not a bundled model ({bundled}), a local folder or a .gguf file, "
        f"and the Hugging Face hub could not load it ({reason})"
    )


def _load_hub(
    name: str, dtype: torch.dtype, head: Head, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:

    if name.startswith((".", "/", "~", "\\")) or name.lower().endswith(".gguf"):
        raise _unknown(name, "it is a path, and no such file or folder exists")
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise _unknown(name, "not a valid hub id") from None
    offline = offline_flag("transformers") is not None
    if not offline and (reason := unreachable_reason()) is not None:
        raise _unknown(name, reason)
    kwargs = {"trust_remote_code": trust_remote_code} | ({"local_files_only": True} if offline else {})
    try:
        config = AutoConfig.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        if _needs_remote_code(exc):
            raise _remote_code_error(name) from None
        reason = "offline (HF_HUB_OFFLINE) and not in the local hub cache" if offline else short_reason(exc)
        raise _unknown(name, reason) from exc
    try:
        model = from_pretrained(name, config, dtype, head, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        if _needs_remote_code(exc):
            raise _remote_code_error(name) from None
        raise UserError(
            f"hub model {name!r} has a config but its weights or tokenizer did not load ({short_reason(exc)}); "
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

"""Reading tensor files: safetensors only, never pickle, so a file planted where loralab expects weights cannot
run code; one that is missing or not valid safetensors is a one-line error saying what to do, not a traceback."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from loralab.errors import UserError


def read_tensors(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file at `path`; UserError (ending in `fix`) if it is missing or corrupt."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise UserError(f"{path} is missing; {fix}") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a valid safetensors file ({exc}); {fix}") from None

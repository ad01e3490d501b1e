"""The name of a module inside a model: the one helper for "which name does this embedding / head have?".

Imports nothing (a model is anything with torch's `named_modules()`); every layer may import it.
"""

from __future__ import annotations


def module_name(model, module) -> str | None:
    """The full name of `module` inside `model` ("model.embed_tokens"; "" for the model itself), or None when
    `module` is None or not part of `model`. A module registered twice has its first name."""
    if module is None:
        return None
    return next((name for name, candidate in model.named_modules() if candidate is module), None)

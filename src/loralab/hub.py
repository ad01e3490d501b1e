"""The one answer to "may we use the Hugging Face hub now?": an offline flag set in the environment, or a
quick probe of the endpoint. Models and datasets both ask here before they try the hub, because the hub
libraries retry an unreachable server for tens of seconds before giving up.

Imports nothing of loralab but errors (and huggingface_hub for its endpoint and offline setting).
"""

from __future__ import annotations

import os
import threading
import urllib.request

from huggingface_hub import constants

from loralab.errors import short_reason

# Set to 1/true/yes/on, these mean offline: HF_HUB_OFFLINE for everything, and each library's own flag for
# what that library loads (transformers: models and tokenizers; datasets: datasets), as the libraries read them.
LIBRARY_OFFLINE_VARS = {"transformers": "TRANSFORMERS_OFFLINE", "datasets": "HF_DATASETS_OFFLINE"}
OFFLINE_VARS = ("HF_HUB_OFFLINE", *LIBRARY_OFFLINE_VARS.values())
PROBE_TIMEOUT_S = 3.0


def offline_flag(library: str) -> str | None:
    """The name of the offline flag that is set for `library` ("transformers" or "datasets"), read now
    (huggingface_hub reads its own once, at import)."""
    for var in ("HF_HUB_OFFLINE", LIBRARY_OFFLINE_VARS[library]):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return var
    return "HF_HUB_OFFLINE" if constants.HF_HUB_OFFLINE else None


def endpoint() -> str:
    """The hub's address: $HF_ENDPOINT, else huggingface_hub's (https://huggingface.co)."""
    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def unreachable_reason(timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """One request to the endpoint, no retries: None when it answers with success, else why not. The request
    runs in a thread so that a hanging DNS lookup is bounded too."""
    url = endpoint()
    outcome: list[str | None] = [f"no answer in {timeout_s:g} s"]

    def probe() -> None:
        try:
            urllib.request.urlopen(url, timeout=timeout_s).close()
            outcome[0] = None
        except Exception as exc:  # noqa: BLE001 - HTTPError (a captive portal's 404), URLError, timeouts, bad URL
            outcome[0] = short_reason(getattr(exc, "reason", None) or exc, 80)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s + 1)
    return None if outcome[0] is None else f"{url} unreachable: {outcome[0]}"


def skip_reason(library: str) -> str | None:
    """Why the hub will not be tried now for `library` (see offline_flag): "HF_HUB_OFFLINE is set",
    "... unreachable: ...", else None."""
    flag = offline_flag(library)
    if flag is not None:
        return f"{flag} is set"
    return unreachable_reason()

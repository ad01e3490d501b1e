"""SIGINT / SIGTERM while training: finish the step under way, save a checkpoint, exit saying how to resume.

A second signal while the first is being handled stops at once (KeyboardInterrupt), for a user who does not
want to wait. Under torchrun the ranks agree on stopping after the same step (one all-reduce per step).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from loralab.training import distributed


class StopRequests:
    """The signals received so far."""

    def __init__(self) -> None:
        self.signals: list[int] = []

    def handle(self, signum: int, frame: object) -> None:
        if self.signals:
            raise KeyboardInterrupt
        self.signals.append(signum)

    def pending(self, world: distributed.World, device: torch.device) -> int:
        """The signal to stop for (0: none), the same on every rank."""
        return int(distributed.max_value(float(self.signals[0] if self.signals else 0), world, device))


@contextmanager
def stop_on_signals() -> Iterator[StopRequests]:
    """Inside the block SIGINT and SIGTERM only record a request (main thread only; elsewhere nothing changes)."""
    requests = StopRequests()
    if threading.current_thread() is not threading.main_thread():
        yield requests
        return
    previous = {sig: signal.signal(sig, requests.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requests
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

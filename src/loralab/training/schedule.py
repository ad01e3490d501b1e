"""How many optimizer steps a run takes, which batches make each step, and the learning rate at each step.

Both are functions of the config and the step alone, so a resumed run needs no saved scheduler: an epoch's
batch order is a function of the seed and the epoch, the learning rate one of the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loralab.config import RunConfig
from loralab.data.encoding import batch_order


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warmup to 1 over `warmup` steps, then constant, linear or cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Schedule:
    per_step: int  # micro-batches per optimizer step, over all ranks
    steps_per_epoch: int
    total_steps: int
    warmup: int

    @classmethod
    def of(cls, n_rows: int, config: RunConfig, world_size: int) -> Schedule:
        """The schedule of `n_rows` training rows in batches of config.batch_size, grad_accum × world_size of
        them per step, for max_steps steps or else `epochs` epochs."""
        micro_batches = math.ceil(n_rows / config.batch_size)
        per_step = config.grad_accum * world_size
        steps_per_epoch = math.ceil(micro_batches / per_step)
        total_steps = config.max_steps or config.epochs * steps_per_epoch
        return cls(per_step, steps_per_epoch, total_steps, int(config.warmup_ratio * total_steps))

    def lr(self, step: int, config: RunConfig) -> float:
        """The learning rate of optimizer step `step` (counted from 0)."""
        return config.lr * lr_factor(step, self.total_steps, self.warmup, config.lr_schedule)

    def epoch(self, lengths: list[int], config: RunConfig, epoch: int) -> list[list[list[int]]]:
        """Epoch `epoch` as its optimizer steps, each a list of micro-batches of row indices (`lengths`: the
        rows' token counts, for group_by_length)."""
        batches = batch_order(lengths, config.batch_size, config.seed + epoch, config.group_by_length)
        return [batches[i : i + self.per_step] for i in range(0, len(batches), self.per_step)]

"""Data-parallel training under torchrun: one process per device, each on its share of every step's batches.

    torchrun --nproc_per_node=N -m loralab train CONFIG      (gloo on CPU, nccl on CUDA)

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK. Every rank holds the whole model (rank 0's trainable weights
are broadcast at the start, so all begin equal) and the whole dataset, and builds the same batch order; an
optimizer step takes grad_accum × world_size micro-batches, rank r running micro-batches r, r + W, ... The loss
of each micro-batch is divided by the target tokens of the whole step (every rank can count them), and after
backward the gradients of the trainable parameters (only those) are summed over the ranks in one flat
all-reduce. So W processes compute the same gradient as one process running all the step's micro-batches in
turn, and take the same optimizer step. The all-reduce is explicit rather than torch's
DistributedDataParallel wrapper: the loss functions call the model itself, and LoRA's few megabytes of
gradients gain nothing from overlapping communication with backward. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that writes files and logs."""
        return self.rank == 0


def init(device: torch.device) -> tuple[World, torch.device]:
    """The world this process belongs to (a single process without torchrun) and its device; starts the
    process group under torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(), device
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def my_share(micro_batches: list, world: World) -> list:
    """The micro-batches of one optimizer step that this rank runs."""
    return micro_batches[world.rank :: world.size]


def sum_gradients(params: list[torch.nn.Parameter], extra: torch.Tensor, world: World) -> torch.Tensor:
    """Sum every parameter's gradient and `extra` (e.g. the step's loss) over the ranks, in one all-reduce;
    returns the summed `extra`."""
    if world.size == 1:
        return extra
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [extra.reshape(-1).to(grads[0].dtype)])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
        offset += g.numel()
    return flat[offset:].view_as(extra).to(extra.dtype)


def broadcast_from_main(tensors: list[torch.Tensor], world: World) -> None:
    """Overwrite these tensors on every rank with rank 0's values."""
    if world.size == 1:
        return
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)


def shared_value(value: float, world: World, device: torch.device) -> float:
    """Rank 0's value of a number every rank computed (e.g. a validation loss that decides early stopping)."""
    if world.size == 1:
        return value
    holder = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(holder, src=0)
    return float(holder.item())


def max_value(value: float, world: World, device: torch.device) -> float:
    """The largest of the ranks' values (e.g. whether any rank received a stop signal)."""
    if world.size == 1:
        return value
    holder = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(holder, op=dist.ReduceOp.MAX)
    return float(holder.item())


def finish(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()

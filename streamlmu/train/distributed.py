"""Distributed data parallel under ``torchrun``: who am I, and how the replicas talk.

``torchrun --nproc_per_node=N`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
without them training runs as a single process (world size 1) and every
helper here is a no-op. The backend is NCCL when CUDA is present, gloo on CPU.
"""
from __future__ import annotations

import gc
import hashlib
import os
from typing import NamedTuple

import torch
import torch.distributed as dist
# Imported before any process group exists: this module's functions take ``group.WORLD`` as a default argument,
# so importing it later (DistributedDataParallel does) pins the default group for good, and its threads outlive
# destroy_process_group().
import torch.distributed.nn  # noqa: F401
from torch import nn


class World(NamedTuple):
    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world() -> World:
    """Join the process group that ``torchrun`` describes in the environment (or run alone)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(0, 1, torch.device("cpu"))
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cpu")
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return World(dist.get_rank(), dist.get_world_size(), device)


def close_world(world: World, together: bool = True) -> None:
    """Leave the process group; ``together`` waits for every rank first. A rank leaving on an error passes
    ``together=False``, since the others may never reach the barrier.

    Call it once the DDP wrapper is gone: the group's worker threads are joined only when its last owner lets
    go, and a worker still releasing a finished collective after Python began shutting down aborts the process
    ("terminate called without an active exception")."""
    if world.distributed and dist.is_initialized():
        if together:
            dist.barrier()
        gc.collect()  # owners of the group caught in reference cycles
        dist.destroy_process_group()


def sum_over_ranks(values: list[float], world: World) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64)."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_buffers(model: nn.Module, world: World) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts them before each forward, but the last forward of an epoch
    leaves each rank with statistics of its own batch.
    """
    if world.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def parameter_digest(model: nn.Module) -> str:
    """SHA-1 of every parameter and buffer, in order: equal digests mean identical replicas."""
    h = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def gather_strings(text: str, world: World) -> list[str]:
    """``text`` from every rank, in rank order."""
    if not world.distributed:
        return [text]
    out: list[str | None] = [None] * world.size
    dist.all_gather_object(out, text)
    return [str(s) for s in out]

"""Data-parallel training with ``torch.distributed`` (DDP), as started by ``torchrun``.

One process per device; each sees its own shard of every epoch (``DistributedSampler``), gradients
are averaged by DistributedDataParallel, only rank 0 logs and writes checkpoints. With one process
(no ``WORLD_SIZE`` > 1 in the environment) everything here is a no-op.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from voslab.utils import select_device

__all__ = ["Context", "process_group", "is_main_process", "wrap", "mean_over_ranks", "gather"]


@dataclass
class Context:
    """This process's place in the job: ``world_size`` processes, this one ``rank``, on ``device``."""

    world_size: int = 1
    rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@contextlib.contextmanager
def process_group(device: str | torch.device = "auto") -> Iterator[Context]:
    """Pick the device; under ``torchrun`` (WORLD_SIZE > 1) also join the process group (nccl on
    CUDA, gloo on CPU) and leave it at the end if this call created it."""
    chosen = select_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield Context(device=chosen)
        return
    if chosen.type == "cuda":
        chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(chosen)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    try:
        yield Context(dist.get_world_size(), dist.get_rank(), chosen)
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def is_main_process() -> bool:
    """True on rank 0 of a ``torchrun`` job (and in any single-process run)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


class _DDP(DistributedDataParallel):
    """DDP whose unknown attributes fall through to the wrapped model (``model.cfg`` keeps working).

    A training step must still *call* the model (``model(...)``) so that gradients are synced.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(model: nn.Module, ctx: Context) -> nn.Module:
    """``model`` itself with one process; a DistributedDataParallel wrapper with several."""
    if ctx.world_size == 1:
        return model
    return _DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def mean_over_ranks(values: torch.Tensor, ctx: Context) -> torch.Tensor:
    """The element-wise mean of a CPU tensor over all processes."""
    if ctx.world_size > 1:
        values = values.to(ctx.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values = values.cpu() / ctx.world_size
    return values


def gather(obj: Any, ctx: Context) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order."""
    if ctx.world_size == 1:
        return [obj]
    objects: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(objects, obj)
    return objects

"""Multi-process training on PyTorch's own engine: torchrun + DistributedDataParallel.

``torchrun --nproc-per-node N -m fcnseg train ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; :func:`process_group` reads them and joins the process group (NCCL on GPUs,
gloo on CPUs). Without them everything runs in one process, unchanged.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fcnseg.train.device import select_device


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world`` and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


@contextmanager
def process_group(device: str = "auto") -> Iterator[Context]:
    """Join the process group torchrun describes (if any) and pick this rank's device.

    Leaves the group on exit only if this call created it: a group the caller
    set up before (e.g. a test harness or a larger program) stays usable.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = select_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    created = world > 1 and not dist.is_initialized()
    if created:
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo",
            timeout=datetime.timedelta(minutes=30),
        )
    if dist.is_initialized():  # the caller's group, or ours: it says where we stand
        rank, world = dist.get_rank(), dist.get_world_size()
    try:
        yield Context(rank, world, dev)
    finally:
        if created:
            dist.destroy_process_group()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a no-op in one process), on the device the backend needs."""
    if dist.is_available() and dist.is_initialized():
        device = value.device
        if dist.get_backend() == "nccl":
            value = value.to("cuda")
        value = value.clone()
        dist.all_reduce(value)
        value = value.to(device)
    return value

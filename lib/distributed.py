"""Multi-process training with torch.distributed, launched by torchrun.

    torchrun --nproc_per_node=4 scripts/train.py --preset streethazards

torchrun starts one process per GPU and describes the job in the environment (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``); `init_from_env` joins the process
group. Everything else asks torch.distributed for the rank, so the same code runs unchanged in a
single process, where every helper below is a no-op.

What changes with N processes: each trains on its own shard of every epoch
(`train_sampler`), gradients are averaged by DistributedDataParallel, validation runs on disjoint
shards (`ShardSampler`) whose loss sums and metric states are summed across processes
(`all_reduce_sum_`, `reduce_metric_`), and only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler

from lib.utils import pick_device

__all__ = [
    "ShardSampler",
    "all_gather_object",
    "all_reduce_sum_",
    "all_true",
    "barrier",
    "broadcast_object",
    "cleanup",
    "init_from_env",
    "is_distributed",
    "is_main",
    "rank",
    "reduce_metric_",
    "train_sampler",
    "world_size",
]


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the process that prints and writes files."""
    return rank() == 0


def init_from_env(*, device: str = "auto", timeout_minutes: int = 60) -> torch.device:
    """Join the process group torchrun describes in the environment; return this process's device.

    Without torchrun (no ``WORLD_SIZE`` in the environment, or 1) nothing is initialised and the
    device is `lib.utils.pick_device(device)`. With it, process ``LOCAL_RANK`` gets GPU
    ``LOCAL_RANK`` and the NCCL backend when CUDA is available (and `device` is not "cpu"), else the
    CPU and the gloo backend.

    Args:
        device: RunConfig.device ("auto", "cuda", "cpu", ...).
        timeout_minutes: how long a collective waits for a slow rank before failing (rank 0 alone
            writes checkpoints, so this must exceed the time of one save).
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return pick_device(device)
    if dist.is_initialized():
        raise RuntimeError("the process group is already initialised; call init_from_env once per process")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not device.startswith("cpu")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible: "
                "use --nproc_per_node <= the number of GPUs"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=timeout_minutes)
    )
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def cleanup() -> None:
    """Leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes, in place; returns it (unchanged in a single process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def reduce_metric_(metric: Any) -> Any:
    """Sum every state tensor of a `lib.metrics` metric over processes, in place; returns it.

    The metrics expose their states as ``state_tensors`` precisely so that summing them gives the
    state of the union of the data.
    """
    for tensor in metric.state_tensors.values():
        all_reduce_sum_(tensor)
    return metric


def all_true(flag: bool, *, device: torch.device | str = "cpu") -> bool:
    """True when `flag` is true in every process (so that all ranks take the same branch)."""
    if not is_distributed():
        return bool(flag)
    value = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value.item() == 0.0


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` in every process (picklable objects)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's `obj`, indexed by rank (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def train_sampler(dataset: Dataset, *, seed: int, rank: int, world_size: int) -> DistributedSampler:
    """This process's shard of a shuffled epoch: ``permutation(seed + epoch)[rank::world_size]``.

    The permutation depends only on the seed and the epoch (call ``set_epoch`` before each epoch),
    so every process agrees on it and a resumed run gets the same order without saved state. With
    ``world_size`` processes of batch ``b`` each, step ``k`` of all processes together covers
    exactly the images that step ``k`` of one process with batch ``world_size * b`` covers.
    """
    return DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of a dataset, in order, without padding.

    For evaluation: the shards are disjoint and cover the dataset exactly once, so summed metric
    states equal those of a single-process pass (DistributedSampler would repeat images to make the
    shards equal in length and count them twice).
    """

    def __init__(self, dataset: Dataset, *, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.indices = range(rank, len(dataset), world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

"""Data-parallel training under ``torchrun``: what :func:`utils.train.fit` does when it runs in several
processes.

``torchrun --nproc_per_node=N script.py`` starts the script N times with the environment variables
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. Inside, ``fit``
(chapter 16 explains it):

* joins the process group (NCCL on CUDA, gloo on CPU), with a timeout on every collective
  (``COURSE_DDP_TIMEOUT`` seconds, default 600), so that a dead peer ends the job instead of hanging it;
* wraps the model in ``DistributedDataParallel`` (gradients are averaged across processes during
  the backward pass) and gives the training loader a ``DistributedSampler`` (each process sees a
  different 1/N of every epoch; ``set_epoch`` reshuffles each epoch). The loader's ``batch_size``
  is per process: the global batch is N times larger;
* seeds each process with ``seed + rank`` (its own dropout and augmentation), evaluates a disjoint
  shard of the validation set in each process and adds up the sums (exact metrics, no padding);
* shows the progress bar and writes checkpoints on rank 0 only, and takes every decision (early
  stopping) on rank 0 and broadcasts it, so that no process waits in a collective the others skipped.

Outside ``torchrun`` every function here is a no-op for a single process.
"""

from __future__ import annotations

import atexit
import datetime
import math
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

__all__ = [
    "ShardSampler",
    "all_gather_objects",
    "all_reduce_sums",
    "average_gradients",
    "barrier",
    "broadcast_object",
    "broadcast_parameters",
    "is_distributed",
    "is_main_process",
    "rank",
    "setup",
    "shard_loader",
    "world_size",
    "wrap_model",
]


def _env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside ``torchrun``)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 outside ``torchrun``)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0, the process that prints, draws the progress bar and writes files."""
    return rank() == 0


def timeout() -> datetime.timedelta:
    """How long a collective waits for the other processes: ``COURSE_DDP_TIMEOUT`` seconds (600)."""
    seconds = float(os.environ.get("COURSE_DDP_TIMEOUT", "600"))
    if not seconds > 0:
        raise ValueError(f"COURSE_DDP_TIMEOUT must be a positive number of seconds, got {seconds}")
    return datetime.timedelta(seconds=seconds)


def setup(device: torch.device) -> bool:
    """Join the process group that ``torchrun`` describes in the environment; True when there is one.

    Does nothing outside ``torchrun`` (``WORLD_SIZE`` unset or 1), or when the group already exists.
    The backend is NCCL for a CUDA device and gloo otherwise.
    """
    if _env_world_size() <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {missing} are not set: launch the "
                f"script with torchrun, which sets them"
            )
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout())
        atexit.register(_cleanup)
    return is_distributed()


def _cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel(model)``: the first forward broadcasts rank 0's weights to every process."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )


def broadcast_parameters(model: nn.Module) -> None:
    """Give every process rank 0's weights and buffers (for a model that is not wrapped in DDP)."""
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, src=0)


def average_gradients(params: list[torch.Tensor]) -> None:
    """Replace every gradient by its mean over the processes (what DDP does during the backward pass)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_sums(
    sums: dict[str, tuple[Any, float]], device: torch.device
) -> dict[str, tuple[float, float]]:
    """Add up ``name -> (sum, count)`` over the processes; names missing in a process count as zero."""
    names = sorted(set().union(*all_gather_objects(sorted(sums))))
    flat = torch.zeros(2 * len(names), dtype=torch.float64, device=device)
    for i, name in enumerate(names):
        if name in sums:
            s, c = sums[name]
            flat[2 * i] = s.to(device, torch.float64) if isinstance(s, torch.Tensor) else float(s)
            flat[2 * i + 1] = float(c)
    dist.all_reduce(flat)
    values = flat.tolist()
    return {name: (values[2 * i], values[2 * i + 1]) for i, name in enumerate(names)}


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` in a single process); objects must pickle."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait until every process gets here (nothing in a single process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` in every process (``obj`` itself in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------
class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + N, rank + 2N, ...`` of a dataset of ``length``: disjoint shards, no padding.

    For evaluation, where every sample must count once (``DistributedSampler`` repeats a few to give
    every process the same number).
    """

    def __init__(self, length: int, num_replicas: int, rank: int) -> None:
        self.length, self.num_replicas, self.rank = length, num_replicas, rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return max(0, math.ceil((self.length - self.rank) / self.num_replicas))


def shard_loader(loader: Any, *, train: bool, seed: int, name: str) -> tuple[DataLoader, Sampler | None]:
    """``loader`` rebuilt so that each process reads its own part: ``(new_loader, sampler)``.

    Training: a ``DistributedSampler`` (shuffled when the loader shuffled, with ``seed``; its
    ``set_epoch`` must be called every epoch). Evaluation: a :class:`ShardSampler`. Batch size,
    ``collate_fn``, workers, pinning, ``drop_last`` and the generator are kept. A loader that already
    has a ``DistributedSampler`` is used as it is.
    """
    if not isinstance(loader, DataLoader):
        raise TypeError(
            f"under torchrun, {name} must be a torch.utils.data.DataLoader, which fit gives a "
            f"DistributedSampler; got {type(loader).__name__}"
        )
    if isinstance(loader.sampler, DistributedSampler):
        return loader, loader.sampler
    if isinstance(loader.dataset, IterableDataset):
        raise TypeError(
            f"under torchrun, {name} reads an IterableDataset, which fit cannot split between "
            f"processes: split it yourself by torch.distributed.get_rank()"
        )
    if (
        loader.batch_sampler is None
        or type(loader.batch_sampler) is not BatchSampler
        or not isinstance(loader.sampler, (RandomSampler, SequentialSampler))
    ):
        raise TypeError(
            f"under torchrun, {name} has a sampler of its own ({type(loader.sampler).__name__}); "
            f"build it with a torch.utils.data.DistributedSampler and fit will use that"
        )
    if train:
        sampler: Sampler = DistributedSampler(
            loader.dataset,
            num_replicas=world_size(),
            rank=rank(),
            shuffle=isinstance(loader.sampler, RandomSampler),
            seed=seed,
            drop_last=loader.drop_last,
        )
    else:
        sampler = ShardSampler(len(loader.dataset), world_size(), rank())
    workers = loader.num_workers
    rebuilt = DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context if workers > 0 else None,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if workers > 0 else None,
        persistent_workers=loader.persistent_workers if workers > 0 else False,
        pin_memory_device=loader.pin_memory_device,
    )
    return rebuilt, sampler

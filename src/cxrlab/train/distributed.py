"""Distributed data parallel (``torchrun --nproc-per-node N -m cxrlab train ...``).

torchrun sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; cxrlab then joins a
process group (NCCL on CUDA, gloo on CPU), shards each epoch's shuffled order
across ranks (every rank gets the same number of batches), wraps the model in
``DistributedDataParallel``, and gathers validation predictions from all ranks
back into the original order, so no sample is counted twice or lost.  Only
rank 0 writes files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return world()[0] == 0


def setup() -> torch.device | None:
    """Join the process group when launched by torchrun; return this rank's device (or None)."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return None
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)  # also on later calls: DDP needs the index
    return torch.device("cpu")


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds a cache), the others after it is done."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def shard(order: torch.Tensor, batch_size: int) -> torch.Tensor:
    """This rank's part of an epoch order: equal length on every rank (wraps around to pad)."""
    rank, size = world()
    if size == 1:
        return order
    per = -(-len(order) // size)
    padded = torch.cat([order, order[: per * size - len(order)]]) if per * size > len(order) else order
    return padded[rank::size]


def gather_rows(local: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """Assemble a full (n, ...) array from each rank's ``local`` values for ``rows``."""
    rank, size = world()
    if size == 1:
        out = np.empty((n, *local.shape[1:]), local.dtype)
        out[rows] = local
        return out
    parts: list = [None] * size
    dist.all_gather_object(parts, (rows, local))
    out = np.empty((n, *local.shape[1:]), local.dtype)
    seen = np.zeros(n, dtype=np.int64)
    for r, v in parts:
        out[r] = v
        seen[r] += 1
    if not (seen == 1).all():
        raise RuntimeError(f"gathered predictions cover {int((seen == 1).sum())} of {n} rows exactly once")
    return out

"""Sharding a sweep over the ranks of a torch.distributed job; rank 0 gathers and writes.

    torchrun --nproc_per_node 4 -m benchmarks.quality --problem gm-vp-eps     # gloo on CPU, nccl on GPUs

Several nodes work the usual torchrun way (``--nnodes``, ``--rdzv-endpoint``). Without a launcher (no
``WORLD_SIZE`` in the environment) everything runs in one process. Cells are dealt round-robin in their
enumeration order, so every rank knows every cell's index and the gathered result is in the same order
as a single-process run; each cell's result depends only on the cell (its own seeds), so the sharded
sweep reproduces the single-process numbers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> str:
        """The device this rank should use: its local GPU under nccl, else the CPU."""
        return f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"


def init(backend: str | None = None) -> World:
    """Join the torch.distributed job torchrun started, if any (gloo on CPU, nccl when CUDA is available)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def shard(items: Sequence[T], world: World) -> list[tuple[int, T]]:
    """This rank's share of ``items`` as (index, item) pairs: round-robin, so costs spread evenly."""
    return [(i, item) for i, item in enumerate(items) if i % world.size == world.rank]


def gather(indexed: list[tuple[int, T]], world: World) -> list[T] | None:
    """All ranks' (index, result) pairs on rank 0, in index order; None on the other ranks."""
    if world.size == 1:
        return [r for _, r in sorted(indexed, key=lambda p: p[0])]
    parts: list | None = [None] * world.size if world.is_main else None
    dist.gather_object(indexed, parts, dst=0)
    if not world.is_main:
        return None
    merged = [pair for part in parts for pair in part]
    return [r for _, r in sorted(merged, key=lambda p: p[0])]


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def finish(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def main(argv=None) -> int:
    """This module is a library (sharding a benchmark sweep over the ranks of a torch.distributed job): it runs nothing, and refuses any argument."""
    from .common import library_main

    return library_main(__spec__.name if __spec__ is not None else __name__,
                        "sharding a benchmark sweep over the ranks of a torch.distributed job", argv)


if __name__ == "__main__":
    raise SystemExit(main())

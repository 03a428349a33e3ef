"""Training on several processes with torch.distributed (DDP): NCCL on GPUs, gloo on CPUs.

    torchrun --nproc_per_node=2 my_script.py     # each process: rank, world = setup()

`train` does the rest by itself when a process group is up: it wraps the model in DDP, gives
each process its rows of every global batch (`shard`), averages the logged loss over the
processes, and lets rank 0 alone write the checkpoint, which resumes on any number of processes.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

import torch
import torch.distributed as dist


def setup(backend: str | None = None) -> tuple[int, int]:
    """Join the process group that torchrun describes in the environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT); returns (rank, world_size). Outside torchrun: (0, 1)."""
    if "RANK" not in os.environ:
        return 0, 1
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist.get_rank(), dist.get_world_size()


def finish() -> None:
    """End a successful run of this process in a group: wait for the other ranks, leave the
    group, and exit at once. Skipping the interpreter's teardown matters: gloo's threads now and
    then abort it (SIGABRT), failing a run that had succeeded. Never returns."""
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def leave() -> None:
    """Leave the process group after an error (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main_on_processes(body: Callable[[int, int], None]) -> int:
    """Run `body(rank, world_size)` in this process: joined to torchrun's group when launched
    by torchrun (then left cleanly, see `finish`), alone otherwise. Returns 0 (an exit code)."""
    rank, world = setup()
    try:
        body(rank, world)
    except BaseException:
        leave()
        raise
    if dist.is_available() and dist.is_initialized():
        finish()
    return 0


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process's group; (0, 1) when no group is up."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(batch: Any, rank: int, world: int) -> Any:
    """This process's rows of a global batch: rows [rank * B/world, (rank + 1) * B/world) of
    every tensor (in tuples, lists and dicts alike); B must divide evenly among the processes."""
    if world == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        n = len(batch)
        if n % world:
            raise ValueError(f"the global batch of {n} rows must divide evenly among {world} "
                             "processes: choose a batch size that is a multiple of the process count")
        return batch[rank * n // world:(rank + 1) * n // world]
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(b, rank, world) for b in batch)
    if isinstance(batch, dict):
        return {k: shard(v, rank, world) for k, v in batch.items()}
    return batch

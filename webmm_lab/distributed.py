"""Training on several processes with torch.distributed (DDP): NCCL on GPUs, gloo on CPUs.

    torchrun --nproc_per_node=2 my_script.py     # each process: rank, world = setup()

`gathered_equals_full_batch()` runs the course's check of the contrastive loss across
processes: 2 gloo processes on the CPU, each with half of a batch, gather their features and
must reproduce the single-process full-batch loss and gradients.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from .contrastive import LOGIT_SCALE_INIT, clip_loss


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


class _TwoTowers(nn.Module):
    """A minimal image/text pair of encoders with a learned logit scale, for the check."""

    def __init__(self, d_image: int = 12, d_text: int = 10, dim: int = 8):
        super().__init__()
        self.image = nn.Linear(d_image, dim)
        self.text = nn.Linear(d_text, dim)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def loss(self, images: torch.Tensor, texts: torch.Tensor, gather: bool) -> torch.Tensor:
        return clip_loss(self.image(images), self.text(texts), self.logit_scale, gather=gather)


def _data(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 12, generator=g), torch.randn(batch, 10, generator=g)


def _worker(rank: int, world: int, init_file: str, out_file: str, batch: int, seed: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(seed)
        model = _TwoTowers()
        images, texts = _data(batch, seed)
        n = batch // world
        local = slice(rank * n, (rank + 1) * n)
        loss = model.loss(images[local], texts[local], gather=True)
        loss.backward()
        for p in model.parameters():                 # what DDP does: average the gradients
            dist.all_reduce(p.grad)
            p.grad /= world
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        mean_loss /= world
        if rank == 0:
            torch.manual_seed(seed)
            reference = _TwoTowers()
            full = reference.loss(images, texts, gather=False)
            full.backward()
            grad_diff = max((p.grad - q.grad).abs().max().item()
                            for p, q in zip(model.parameters(), reference.parameters()))
            torch.save({"loss_diff": abs(mean_loss.item() - full.item()), "grad_diff": grad_diff,
                        "loss": full.item()}, out_file)
    except BaseException:
        leave()
        raise
    finish()


def gathered_equals_full_batch(world_size: int = 2, batch: int = 16, seed: int = 0) -> dict[str, float]:
    """Run the contrastive loss on `world_size` gloo processes, each with batch/world_size rows,
    features gathered with gradients; return the largest differences from one process computing
    the full batch: {"loss_diff", "grad_diff", "loss"}."""
    if batch % world_size:
        raise ValueError(f"batch {batch} must divide evenly among {world_size} processes")
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = str(Path(tmp) / "init"), str(Path(tmp) / "result.pt")
        mp.spawn(_worker, args=(world_size, init_file, out_file, batch, seed), nprocs=world_size)
        return torch.load(out_file, weights_only=True)

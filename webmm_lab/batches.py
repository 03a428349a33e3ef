"""Batch functions for the training loop: `batch_fn(step) -> batch`, each drawn from a random
generator that depends only on (seed, step), so that a resumed run draws exactly the batches an
uninterrupted one would (and repeats it bit for bit on the CPU).

    batch_fn = random_batches(images, labels, batch_size=64, seed=0)   # random rows
    batch_fn = window_batches([ids], batch_size=16, block_size=64)     # windows of token streams
    g = step_generator(seed, step)                                     # for batch functions of your own
"""
from __future__ import annotations

from typing import Callable

import torch


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random generator of one training step: it depends only on (seed, step), so a resumed
    run draws exactly the batches an uninterrupted one would."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def random_batches(*tensors: torch.Tensor, batch_size: int, seed: int = 0) -> Callable[[int], tuple]:
    """A `batch_fn` drawing `batch_size` random rows of `tensors`; the draw depends only on step."""
    n = len(tensors[0])
    if any(len(t) != n for t in tensors):
        raise ValueError(f"tensors have different lengths {[len(t) for t in tensors]}")

    def batch_fn(step: int) -> tuple:
        g = step_generator(seed, step)
        idx = torch.randint(n, (batch_size,), generator=g)
        return tuple(t[idx] for t in tensors)
    return batch_fn


def window_batches(streams: list[torch.Tensor], batch_size: int, block_size: int,
                   weights: list[float] | None = None, seed: int = 0) -> Callable[[int], tuple]:
    """A `batch_fn` for language models: random windows of `block_size + 1` tokens from 1-D
    token streams, each row drawn from stream i with probability weights[i]; returns
    (inputs, targets), both (batch_size, block_size), targets shifted by one."""
    weights = torch.tensor(weights or [1.0] * len(streams), dtype=torch.float)
    for s in streams:
        if s.dim() != 1 or len(s) <= block_size + 1:
            raise ValueError(f"each stream must be 1-D and longer than block_size + 1 = "
                             f"{block_size + 1}, got shape {tuple(s.shape)}")
    offsets = torch.arange(block_size + 1)

    def batch_fn(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = step_generator(seed, step)
        which = torch.multinomial(weights, batch_size, replacement=True, generator=g)   # (B,)
        rows = torch.empty(batch_size, block_size + 1, dtype=streams[0].dtype)
        for i, s in enumerate(streams):
            sel = (which == i).nonzero().flatten()
            starts = torch.randint(len(s) - block_size - 1, (len(sel),), generator=g)
            rows[sel] = s[starts[:, None] + offsets]                                     # (b, T+1)
        return rows[:, :-1], rows[:, 1:]
    return batch_fn

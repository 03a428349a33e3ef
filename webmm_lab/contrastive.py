"""Contrastive losses: SimCLR's InfoNCE (NT-Xent) over two views of the same images.

Both this and CLIP's loss (notebook 07) are the same idea: L2-normalise embeddings, take all
dot products divided by a temperature, and read each row as a classification whose correct
class is the matching pair. They share `similarity_logits`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity_logits(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """Cosine similarities of every row of `a` (N, D) with every row of `b` (M, D), divided by
    the temperature: (N, M)."""
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent loss for N positive pairs (z1[i], z2[i]), each (N, D).

    Every one of the 2N embeddings must pick its partner out of the 2N - 1 others (itself is
    excluded); the loss is the mean cross-entropy. With random embeddings it is about ln(2N - 1).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"expected two (N, D) tensors of the same shape, got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    n = z1.shape[0]
    if n < 2:
        raise ValueError("info_nce needs a batch of at least 2 pairs: the other pairs are the "
                         f"negatives (got N={n})")
    z = torch.cat([z1, z2])                                         # (2N, D)
    logits = similarity_logits(z, z, temperature)                   # (2N, 2N)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))           # never pick yourself
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)  # i <-> i + N
    return F.cross_entropy(logits, targets)

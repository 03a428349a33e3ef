"""Contrastive losses: SimCLR's InfoNCE (NT-Xent) over two views of the same images, and
CLIP's symmetric image-text loss, which can gather features across processes.

Both this and CLIP's loss (notebook 07) are the same idea: L2-normalise embeddings, take all
dot products divided by a temperature, and read each row as a classification whose correct
class is the matching pair. They share `similarity_logits`.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F


def similarity_logits(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """Cosine similarities of every row of `a` (N, D) with every row of `b` (M, D), divided by
    the temperature: (N, M)."""
    if isinstance(temperature, (int, float)) and temperature <= 0:   # tensors: no device sync
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
    targets = torch.arange(2 * n, device=z.device).roll(n)            # (2N,): i <-> i + N, made on the device
    return F.cross_entropy(logits, targets)


# --- CLIP (notebook 07): images against captions -------------------------------------------

LOGIT_SCALE_INIT = math.log(1 / 0.07)   # CLIP's initial temperature 0.07
LOGIT_SCALE_MAX = math.log(100)         # the learned scale is clamped to at most 100


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (n, D) from every process, in rank order: (world * n, D). Gradients flow
    back to the process that produced each row. Without torch.distributed, returns `x`."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather
    with warnings.catch_warnings():     # deprecated for a private API; still the autograd-aware one
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x))


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
              gather: bool = True) -> torch.Tensor:
    """CLIP's symmetric contrastive loss for matching rows of `image` and `text` (n, D).

    logits = exp(logit_scale) · normalised image · normalised textᵀ; each row (an image choosing
    its caption) and each column (a caption choosing its image) is a cross-entropy. Under
    torch.distributed (gather=True) the local rows are scored against the columns of every
    process, so the negatives are the whole global batch; averaging this loss over processes
    (as DDP averages gradients) equals the full-batch loss.
    """
    if image.shape != text.shape or image.dim() != 2:
        raise ValueError(f"expected image and text features of the same (n, D) shape, got "
                         f"{tuple(image.shape)} and {tuple(text.shape)}")
    all_image, all_text = (gather_with_grad(image), gather_with_grad(text)) if gather else (image, text)
    if len(all_image) < 2:
        raise ValueError("clip_loss needs a batch of at least 2 pairs: the other pairs are the "
                         f"negatives (got {len(all_image)})")
    offset = dist.get_rank() * len(image) if len(all_image) > len(image) else 0
    temperature = logit_scale.exp().reciprocal()
    per_image = similarity_logits(image, all_text, temperature)          # (n, N)
    per_text = similarity_logits(text, all_image, temperature)           # (n, N)
    labels = torch.arange(len(image), device=image.device) + offset
    return (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2


@torch.no_grad()
def clamp_logit_scale(logit_scale: torch.Tensor) -> None:
    """Clamp the learned log-scale to [0, ln 100] in place (call after every optimizer step)."""
    logit_scale.clamp_(0, LOGIT_SCALE_MAX)


def chunked_clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                      chunk: int) -> torch.Tensor:
    """`clip_loss` on consecutive chunks of `chunk` pairs, averaged. The same examples and the
    same optimizer steps as the full batch, but each softmax sees only chunk - 1 negatives: the
    fair way to measure what the size of the softmax alone is worth (notebook 07)."""
    if chunk < 2 or len(image) % chunk:
        raise ValueError(f"chunk must be >= 2 and divide the batch of {len(image)}, got {chunk}")
    losses = [clip_loss(i, t, logit_scale, gather=False)
              for i, t in zip(image.split(chunk), text.split(chunk))]
    return torch.stack(losses).mean()

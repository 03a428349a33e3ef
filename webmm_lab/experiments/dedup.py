"""De-duplication (notebook 08): near-copies of an image found among thousands.

    removed = near_duplicates(web.images)      # (n,) bool: a near-copy of an earlier image
    score_dedup(removed, web)                  # recall of the planted copies, false removals

A perceptual hash (`phash`, pHash's DCT algorithm in torch) works on large photos but not on
32 x 32 images shifted by two pixels. `near_duplicates` works in two stages, as large-scale
de-duplicators do: it retrieves candidate pairs by colour histograms (cheap, position-free)
and verifies each candidate by aligning the two images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.images import unit_float
from ..data.web import WebPairs

def _dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix (n, n): row k is the k-th cosine."""
    k, i = torch.arange(n)[:, None].float(), torch.arange(n)[None].float()
    m = torch.cos(torch.pi * (2 * i + 1) * k / (2 * n)) * (2 / n) ** 0.5
    m[0] /= 2 ** 0.5
    return m


def phash(images: torch.Tensor, keep: int = 8) -> torch.Tensor:
    """Perceptual hashes (n, keep * keep - 1) bool, as pHash computes them: the 2-D DCT of the
    grey image, its lowest keep x keep frequencies but the constant one, each above or below
    their median. Two near-copies of a large photo differ in a few bits."""
    grey = unit_float(images).mean(1)                                              # (n, R, R)
    D = _dct_matrix(grey.shape[-1])
    f = (D @ grey @ D.T)[:, :keep, :keep].flatten(1)[:, 1:]                        # (n, keep^2 - 1)
    return f > f.median(1, keepdim=True).values


def colour_histograms(images: torch.Tensor, bins: int = 8, blur: int = 4) -> torch.Tensor:
    """(n, bins**3): the square root of each image's colour histogram (RGB cube cut into bins**3
    cells), after a `blur` x `blur` box blur that averages the noise away. Where things are
    does not enter it, so shifts and crops barely change it."""
    x = F.avg_pool2d(unit_float(images), blur, stride=1)                           # (n, 3, R', R')
    q = (x.clamp(0, 0.999) * bins).long()
    cell = ((q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]).flatten(1)                # (n, R'^2)
    return torch.zeros(len(x), bins ** 3).scatter_add_(1, cell, torch.ones(cell.shape)).sqrt()


def blurred_pixels(images: torch.Tensor, size: int = 8) -> torch.Tensor:
    """(n, 3 * size * size): each image averaged down to size x size pixels, the cheapest
    descriptor a sceptic would try: a thumbnail, which keeps where things are."""
    return F.adaptive_avg_pool2d(unit_float(images), size).flatten(1)


def all_pairs(n: int) -> torch.Tensor:
    """(n (n - 1) / 2, 2) long: every pair (i, j), i < j, of n items: brute force's candidates."""
    return torch.triu_indices(n, n, offset=1).T


def _earlier_within(close_fn, n: int, chunk: int = 1024) -> torch.Tensor:
    removed = torch.zeros(n, dtype=torch.bool)
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(n, start + chunk))
        close = close_fn(rows) & (torch.arange(n)[None] < rows[:, None])           # (r, n): earlier ones
        removed[rows] = close.any(1)
    return removed


def dedup_by_hash(bits: torch.Tensor, max_distance: int) -> torch.Tensor:
    """(n,) bool, True = remove: an image whose hash is within `max_distance` bits (Hamming)
    of an earlier image's. The first of every group of near-copies is kept."""
    b = bits.float()
    return _earlier_within(lambda r: (b[r] @ (1 - b).T + (1 - b[r]) @ b.T) <= max_distance, len(b))


def dedup_by_embedding(embeddings: torch.Tensor, threshold: float) -> torch.Tensor:
    """(n,) bool, True = remove: an item whose cosine similarity with an earlier item is at
    least `threshold`. The first of every group of near-copies is kept."""
    e = F.normalize(embeddings.float(), dim=1)
    return _earlier_within(lambda r: e[r] @ e.T >= threshold, len(e))


def candidate_pairs(embeddings: torch.Tensor, threshold: float, chunk: int = 1024) -> torch.Tensor:
    """(m, 2) long: every pair (i, j), i < j, whose embeddings' cosine similarity is at least
    `threshold`."""
    e = F.normalize(embeddings.float(), dim=1)
    out = []
    for start in range(0, len(e), chunk):
        sim = e[start:start + chunk] @ e.T                                         # (r, n)
        i, j = (sim >= threshold).nonzero().T
        i = i + start
        out.append(torch.stack([i[i < j], j[i < j]], 1))
    return torch.cat(out)


def aligned_distance(images: torch.Tensor, pairs: torch.Tensor, max_shift: int = 2,
                     chunk: int = 4096) -> torch.Tensor:
    """(m,): for each pair (i, j), the mean absolute difference of the two images (3x3 box-
    blurred) over their centre, at the best relative shift of up to `max_shift` pixels either
    way: about 0 for a shifted copy, small for a noised or cropped one."""
    x = F.avg_pool2d(unit_float(images), 3, stride=1, padding=1)                   # (n, 3, R, R)
    m, R = max_shift, x.shape[-1]
    out = []
    for p in pairs.split(chunk):
        a = x[p[:, 0], :, 2 * m:R - 2 * m, 2 * m:R - 2 * m]                         # (c, 3, R-4m, R-4m)
        b = x[p[:, 1]]                                                              # (c, 3, R, R)
        d = torch.stack([(a - b[..., 2 * m + dy:R - 2 * m + dy, 2 * m + dx:R - 2 * m + dx]).abs().mean((1, 2, 3))
                         for dy in range(-m, m + 1) for dx in range(-m, m + 1)])    # (shifts, c)
        out.append(d.min(0).values)
    return torch.cat(out) if out else torch.zeros(0)


def remove_later(pairs: torch.Tensor, distances: torch.Tensor, verify: float, n: int) -> torch.Tensor:
    """(n,) bool, True = remove: the later image of every pair whose distance is <= `verify`."""
    removed = torch.zeros(n, dtype=torch.bool)
    removed[pairs[distances <= verify, 1]] = True
    return removed


def near_duplicates(images: torch.Tensor, retrieve: float = 0.95, verify: float = 0.08) -> torch.Tensor:
    """(n,) bool, True = remove, in two stages as large-scale de-duplicators work: candidate
    pairs by `colour_histograms` (cosine >= `retrieve`: cheap, position-free, generous), then
    each candidate verified by `aligned_distance` (<= `verify`; notebook 08 chooses its own on a
    validation web, from a grid this default sits in); the later image of every verified pair
    is removed."""
    pairs = candidate_pairs(colour_histograms(images), retrieve)
    return remove_later(pairs, aligned_distance(images, pairs), verify, len(images))


def score_dedup(removed: torch.Tensor, web: WebPairs) -> dict[str, float]:
    """A de-duplicator's recall: the share of planted (original, copy) pairs of which it removes
    one (either copy will do: neither is the better on the web), and its false removals: the
    share of images outside every planted pair that it removes."""
    dup = (web.source >= 0).nonzero().flatten()
    pair = torch.zeros(len(web), dtype=torch.bool)
    pair[dup], pair[web.source[dup]] = True, True
    caught = removed[dup] | removed[web.source[dup]]
    return {"recall": 100 * caught.float().mean().item() if len(dup) else 100.0,
            "false removals": 100 * (removed & ~pair).sum().item() / max(1, (~pair).sum().item()),
            "removed": int(removed.sum())}


__all__ = ["phash", "colour_histograms", "blurred_pixels", "all_pairs", "dedup_by_hash", "dedup_by_embedding", "candidate_pairs", "aligned_distance", "remove_later", "near_duplicates", "score_dedup"]

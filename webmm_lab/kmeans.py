"""k-means in torch, and a colour palette built on it.

    km = kmeans(points, k=512, seed=0)        # points (N, D) -> KMeans: centres (k, D), ids (N,)
    pal = Palette.fit(images, k=16)           # images (N, C, H, W) in [0, 1]
    ids = pal.encode(images)                  # (N, H, W): the nearest colour of every pixel
    back = pal.decode(ids)                    # (N, C, H, W): each id replaced by its colour

Image GPT (notebook 03) reads images through a 9-bit palette (512 colours) found this way, so
that a pixel is one token; notebooks 05 and 06 start their codebooks from k-means centres.
Lloyd's algorithm: k-means++ initialisation, then alternate an assign step (nearest centre) and
an update step (mean of the members). A cluster left empty takes the point that is farthest
from its centre, so no centre is wasted. Runs on whatever device `points` are on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .ids import check_ids


def nearest(points: torch.Tensor, centres: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """For every point (N, D): the index of its nearest centre (K, D), and the squared
    distance to it: (N,) long, (N,) float. Computed in chunks of rows to bound memory."""
    if points.dim() != 2 or centres.dim() != 2 or points.shape[1] != centres.shape[1]:
        raise ValueError(f"points (N, D) and centres (K, D) must agree on D, got "
                         f"{tuple(points.shape)} and {tuple(centres.shape)}")
    c2 = centres.pow(2).sum(1)                                             # (K,)
    ids, dist = [], []
    for x in points.split(chunk):
        d, i = torch.addmm(c2, x, centres.T, alpha=-2).min(1)              # |c|^2 - 2 x.c: (n, K)
        ids.append(i)
        dist.append((d + x.pow(2).sum(1)).clamp_min(0))                    # + |x|^2: (n,)
    return torch.cat(ids), torch.cat(dist)


def kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k-means++ initial centres (k, D): the first a random point, each next one a point drawn
    with probability proportional to its squared distance from the centres chosen so far."""
    n = len(points)
    gen_device = generator.device if generator is not None else "cpu"
    first = torch.randint(n, (1,), generator=generator, device=gen_device).item()
    centres = [points[first]]
    d2 = (points - points[first]).pow(2).sum(1)                            # (N,)
    for _ in range(1, k):
        weights = d2 if d2.sum() > 0 else torch.ones_like(d2)             # all covered: uniform
        i = torch.multinomial(weights.to(gen_device), 1, generator=generator).item()
        centres.append(points[i])
        d2 = torch.minimum(d2, (points - points[i]).pow(2).sum(1))
    return torch.stack(centres)                                            # (k, D)


def kmeans_step(points: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Lloyd step. Assign every point to its nearest centre, move every centre to the mean
    of its points; a centre left without points moves onto the point farthest from its own
    centre (the farthest for the first empty centre, the next farthest for the second, ...).

    Returns the new centres (K, D), the assignment (N,) and the squared distances (N,) of the
    points to the centres they were assigned to (before the move)."""
    k = len(centres)
    ids, d2 = nearest(points, centres)
    sums = torch.zeros_like(centres).index_add_(0, ids, points)           # (K, D)
    counts = torch.bincount(ids, minlength=k)                              # (K,)
    new = sums / counts.clamp_min(1).unsqueeze(1).to(points.dtype)
    empty = (counts == 0).nonzero().flatten()
    if len(empty):
        far = d2.topk(min(len(empty), len(points))).indices                # farthest first
        new[empty[:len(far)]] = points[far]
    return new, ids, d2


@dataclass
class KMeans:
    """The result of `kmeans`: centres (K, D), each point's cluster (N,), and the mean squared
    distance of the points to their centres after every step."""
    centres: torch.Tensor
    ids: torch.Tensor
    inertia: list[float] = field(default_factory=list)


def kmeans(points: torch.Tensor, k: int, iters: int = 50, seed: int = 0, tol: float = 1e-5) -> KMeans:
    """Cluster `points` (N, D) into `k` clusters: k-means++ then up to `iters` Lloyd steps,
    stopping early once the mean squared distance improves by less than a fraction `tol`.
    The same seed gives the same centres."""
    if points.dim() != 2:
        raise ValueError(f"points must be (N, D), got shape {tuple(points.shape)}; "
                         "for images use Palette.fit or images.permute(0, 2, 3, 1).reshape(-1, C)")
    if not 1 <= k <= len(points):
        raise ValueError(f"k must be between 1 and the number of points ({len(points)}), got {k}")
    points = points.float()
    gen = torch.Generator(device=points.device).manual_seed(seed)
    centres = kmeans_plus_plus(points, k, gen)
    inertia: list[float] = []
    for _ in range(iters):
        centres, ids, d2 = kmeans_step(points, centres)
        inertia.append(d2.mean().item())
        if len(inertia) > 1 and inertia[-2] - inertia[-1] <= tol * inertia[-2]:
            break
    ids, d2 = nearest(points, centres)
    inertia.append(d2.mean().item())
    return KMeans(centres, ids, inertia)


def pixels_of(images: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) as a list of pixels (N*H*W, C)."""
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    return images.permute(0, 2, 3, 1).reshape(-1, images.shape[1])


@dataclass
class Palette:
    """A fixed set of colours (K, C), ordered dark to light: every pixel becomes the id of its
    nearest colour, and an id becomes its colour again."""
    colours: torch.Tensor

    @classmethod
    def fit(cls, images: torch.Tensor, k: int, seed: int = 0, max_pixels: int = 200_000,
            iters: int = 50) -> "Palette":
        """k-means on (a random sample of at most `max_pixels` of) the pixels of `images`
        (N, C, H, W) in [0, 1]. Fewer distinct colours than `k` are an error."""
        pixels = pixels_of(images).float()
        if len(pixels) > max_pixels:
            g = torch.Generator(device=pixels.device).manual_seed(seed)
            pixels = pixels[torch.randperm(len(pixels), generator=g, device=pixels.device)[:max_pixels]]
        distinct = len(torch.unique(pixels, dim=0))
        if distinct < k:
            raise ValueError(f"the images have {distinct} distinct colours, fewer than k={k}; "
                             f"choose k <= {distinct}")
        centres = kmeans(pixels, k, iters=iters, seed=seed).centres
        return cls(centres[centres.mean(1).argsort()])                     # dark to light

    def __len__(self) -> int:
        return len(self.colours)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> colour ids (N, H, W)."""
        if images.dim() != 4 or images.shape[1] != self.colours.shape[1]:
            raise ValueError(f"images must be (N, {self.colours.shape[1]}, H, W) for this "
                             f"{self.colours.shape[1]}-channel palette, got {tuple(images.shape)}")
        N, _, H, W = images.shape
        ids, _ = nearest(pixels_of(images).float(), self.colours.to(images.device))
        return ids.view(N, H, W)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Colour ids (..., H, W) -> images (..., C, H, W)."""
        if ids.dtype not in (torch.int64, torch.int32) or ids.dim() < 2:
            raise ValueError(f"ids must be integer colour ids (..., H, W), got {ids.dtype} "
                             f"of shape {tuple(ids.shape)}")
        check_ids(ids, len(self), "colour ids")
        return self.colours.to(ids.device)[ids].movedim(-1, -3)            # (..., C, H, W)

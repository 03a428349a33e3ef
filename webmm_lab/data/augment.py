"""Image augmentations for contrastive learning, batched on the tensor (no Python loop over
images), and deterministic for a given torch.Generator.

    gen = torch.Generator().manual_seed(0)
    v1, v2 = two_views(images, gen)     # two random augmentations of every image, (B, C, H, W)

The random part (`sample_params`) is separate from the deterministic part (`affine`,
`jitter`), so a test or a lab can check each on its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..batches import step_generator


@dataclass(kw_only=True)
class AugmentConfig:
    """How strong each augmentation is. Ranges are symmetric around 'no change'."""
    rotate_deg: float = 15.0         # rotation in [-r, r] degrees
    scale: tuple[float, float] = (0.8, 1.15)  # zoom factor (>1 enlarges the digit)
    shift: float = 0.15              # translation in [-s, s] of the image width
    shear: float = 0.15              # shear factor in [-s, s]
    contrast: tuple[float, float] = (0.6, 1.0)
    noise: float = 0.05              # std of added Gaussian noise
    erase: float = 0.25              # probability of blanking a random 1/4-size patch


def sample_params(n: int, gen: torch.Generator, cfg: AugmentConfig = AugmentConfig()) -> dict[str, torch.Tensor]:
    """Draw the random parameters of `n` augmentations, each a tensor of shape (n,)."""
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)
    return {"angle": u(-cfg.rotate_deg, cfg.rotate_deg) * math.pi / 180,
            "scale": u(*cfg.scale), "tx": u(-cfg.shift, cfg.shift) * 2, "ty": u(-cfg.shift, cfg.shift) * 2,
            "shear": u(-cfg.shear, cfg.shear), "contrast": u(*cfg.contrast),
            "erase": (torch.rand(n, generator=gen) < cfg.erase).float(),
            "erase_x": torch.rand(n, generator=gen), "erase_y": torch.rand(n, generator=gen)}


def affine(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor,
           ty: torch.Tensor, shear: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate by `angle` (radians), zoom by `scale`, shear, then shift by (tx, ty) in [-1, 1]
    image coordinates, each (B,); bilinear resampling, zeros outside. (B, C, H, W) -> same."""
    if x.dim() != 4:
        raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
    b = x.shape[0]
    shear = torch.zeros_like(angle) if shear is None else shear
    cos, sin = angle.cos(), angle.sin()
    # grid_sample maps output coordinates to input ones, so build the inverse transform:
    # input = R(-angle) @ Shear(-shear) @ (output - t) / scale
    a = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)   # (B, 2, 2)
    sh = torch.stack([torch.stack([torch.ones_like(shear), -shear], -1),
                      torch.stack([torch.zeros_like(shear), torch.ones_like(shear)], -1)], -2)
    m = (a @ sh) / scale.view(b, 1, 1)                                                  # (B, 2, 2)
    t = torch.stack([tx, ty], -1).unsqueeze(-1)                                         # (B, 2, 1)
    theta = torch.cat([m, -m @ t], dim=-1).to(x.dtype)                                  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)                     # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def jitter(x: torch.Tensor, contrast: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Scale intensities by `contrast` (B,), add `noise` (same shape as x), clamp to [0, 1]."""
    return (x * contrast.view(-1, *[1] * (x.dim() - 1)) + noise).clamp(0, 1)


def erase(x: torch.Tensor, on: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    """Blank a half-width, half-height patch at relative position (cx, cy) where `on` is 1."""
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    y0 = (cy * (h - h // 2 + 1)).floor().view(b, 1, 1)
    x0 = (cx * (w - w // 2 + 1)).floor().view(b, 1, 1)
    patch = (ys >= y0) & (ys < y0 + h // 2) & (xs >= x0) & (xs < x0 + w // 2)          # (B, H, W)
    return x * ~(patch & on.bool().view(b, 1, 1)).unsqueeze(1)


def augment(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """One random augmentation of each image in `x` (B, C, H, W), values in [0, 1]."""
    p = {k: v.to(x.device) for k, v in sample_params(len(x), gen, cfg).items()}
    noise = (torch.randn(x.shape, generator=gen) * cfg.noise).to(x.device)
    x = affine(x, p["angle"], p["scale"], p["tx"], p["ty"], p["shear"])
    x = erase(x, p["erase"], p["erase_x"], p["erase_y"])
    return jitter(x, p["contrast"], noise)


def two_views(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig = AugmentConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent augmentations of every image: SimCLR's positive pairs."""
    return augment(x, gen, cfg), augment(x, gen, cfg)


def soften(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Images (B, C, H, W) in [0, 1] randomly blurred (a 3x3 box blur mixed in by a random share
    per image) and noised (Gaussian, a random std up to 0.05 per image): renders made to look
    like a tokenizer's decoded images, for the models that read those (notebook 06)."""
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)   # (B, C, H, W)
    mix = torch.rand(len(x), 1, 1, 1, generator=gen)
    noise = 0.05 * torch.rand(len(x), 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return (x + mix * (blur - x) + noise).clamp(0, 1)


def labelled_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int = 0,
                     cfg: AugmentConfig | None = AugmentConfig()):
    """A `batch_fn(step)` for supervised training: `batch_size` random labelled images, each
    augmented (pass cfg=None for none). The draw depends only on (seed, step)."""
    def batch_fn(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = step_generator(seed, step)
        idx = torch.randint(len(images), (min(batch_size, len(images)),), generator=gen)
        x = images[idx] if cfg is None else augment(images[idx], gen, cfg)
        return x, labels[idx]
    return batch_fn


def view_pair_batches(images: torch.Tensor, batch_size: int, seed: int = 0,
                      cfg: AugmentConfig = AugmentConfig()):
    """A `batch_fn(step)` for contrastive pre-training: two views of `batch_size` random
    images (no labels). The draw depends only on (seed, step)."""
    def batch_fn(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = step_generator(seed, step)
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        return two_views(images[idx], gen, cfg)
    return batch_fn

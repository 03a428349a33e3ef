"""Linear probes: how good are frozen features? Fit a logistic regression on them.

    feats = embed(encoder, images)                     # (N, D), no gradients
    feats = hog_features(images)                       # or features engineered by hand (HOG)
    probe = fit_linear_probe(feats[train], y[train])   # standardise + L2-regularised softmax
    acc = probe_accuracy(probe, feats[test], y[test])
    probe, wd = fit_linear_probe_cv(feats[train], y[train])   # its L2 weight chosen by 5-fold CV
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .device import evaluating


def embed(encoder: nn.Module, images: torch.Tensor, batch_size: int = 1024,
          device: torch.device | str | None = None) -> torch.Tensor:
    """Features of `images` (N, C, H, W) from `encoder` in eval mode, on the CPU: (N, D)."""
    with evaluating(encoder) as own:
        device = device or own
        return torch.cat([encoder(images[i:i + batch_size].to(device)).float().cpu()
                          for i in range(0, len(images), batch_size)])


def hog_features(images: torch.Tensor, cell: int = 2, block: int = 2, orientations: int = 9,
                 chunk: int = 4096) -> torch.Tensor:
    """Histograms of oriented gradients (Dalal and Triggs, 2005), the engineered features of the
    years before deep learning: gradient orientations counted in cells of `cell` x `cell`
    pixels, normalised in blocks of `block` x `block` cells (L2, clipped at 0.2, L2 again).
    Images (N, C, H, W) in [0, 1] (channels averaged to grey) -> (N, D) float. The default is
    Dalal and Triggs' design (8-pixel cells, 2 x 2 blocks) scaled to 8 x 8 images.

    The same numbers as scikit-image's `hog` (its defaults but these sizes; a test compares
    them), for a whole batch at once instead of one image at a time: `chunk` images at a time."""
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if h // cell < block or w // cell < block:
        raise ValueError(f"{h} x {w} images are too small for blocks of {block} x {block} cells of "
                         f"{cell} pixels: they need at least {block * cell} x {block * cell}")
    grey = images.float().mean(1).cpu().numpy()                                     # (N, H, W) float32
    return torch.cat([_hog(grey[i:i + chunk], cell, block, orientations) for i in range(0, len(grey), chunk)])


def _hog(grey: np.ndarray, cell: int, block: int, orientations: int) -> torch.Tensor:
    """`hog_features` of a batch of grey images (n, H, W), float32, in scikit-image's arithmetic."""
    n, h, w = grey.shape
    rows, cols = h // cell, w // cell
    g_row, g_col = np.zeros_like(grey), np.zeros_like(grey)                   # 0 on the border
    g_row[:, 1:-1] = grey[:, 2:] - grey[:, :-2]                               # central differences
    g_col[:, :, 1:-1] = grey[:, :, 2:] - grey[:, :, :-2]
    g_row, g_col = g_row.astype(np.float64), g_col.astype(np.float64)
    to_cells = lambda a: (a[:, :rows * cell, :cols * cell].reshape(n, rows, cell, cols, cell)
                          .transpose(0, 1, 3, 2, 4).reshape(n, rows, cols, cell * cell))
    magnitude = to_cells(np.hypot(g_col, g_row))                             # (n, rows, cols, cell*cell)
    angle = to_cells(np.rad2deg(np.arctan2(g_row, g_col)) % 180)             # unsigned, in [0, 180)
    edges = (180.0 / orientations * np.arange(orientations + 1)).astype(np.float32).astype(np.float64)
    bins = np.searchsorted(edges, angle, side="right") - 1                   # edges[b] <= angle < edges[b+1]
    votes = bins[..., None] == np.arange(orientations)                       # (n, rows, cols, cell*cell, o)
    hist = np.zeros((n, rows, cols, orientations), np.float32)
    for k in range(cell * cell):            # each cell's sum in float32, pixel by pixel, as scikit-image
        hist = (hist + votes[..., k, :] * magnitude[..., k, None]).astype(np.float32)
    hist = (hist / np.float32(cell * cell)).astype(np.float64)               # the mean vote per pixel
    b_rows, b_cols = rows - block + 1, cols - block + 1
    blocks = np.stack([hist[:, r:r + b_rows, c:c + b_cols] for r in range(block) for c in range(block)], 3)
    eps = 1e-5                                                               # (n, b_rows, b_cols, block^2, o)
    blocks = blocks / np.sqrt((blocks ** 2).sum((3, 4), keepdims=True) + eps ** 2)
    blocks = np.minimum(blocks, 0.2)                                         # L2-Hys: clip, normalise again
    blocks = blocks / np.sqrt((blocks ** 2).sum((3, 4), keepdims=True) + eps ** 2)
    return torch.from_numpy(blocks.astype(np.float32).reshape(n, -1))


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None,
                     weight_decay: float = 1e-2, steps: int = 200) -> nn.Module:
    """A softmax classifier on standardised features, fitted by L-BFGS (full batch): the
    features are frozen, only this linear layer learns. Returned as one `nn.Linear` on the raw
    features, the standardisation folded into its weights."""
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    n_classes = n_classes or int(labels.max()) + 1
    mean, std = features.mean(0), features.std(0, unbiased=False) + 1e-6
    linear = nn.Linear(features.shape[1], n_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    x = (features - mean) / std
    opt = torch.optim.LBFGS(linear.parameters(), lr=1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(linear(x), labels) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss
    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():              # W((x - mean) / std) + b = (W / std) x + (b - (W / std) mean)
        linear.weight /= std
        linear.bias -= linear.weight @ mean
    return linear.requires_grad_(False)


def fit_linear_probe_cv(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None,
                        weight_decays: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1), folds: int = 5,
                        seed: int = 0) -> tuple[nn.Module, float]:
    """The linear probe at its best: its L2 weight chosen by `folds`-fold cross-validation on
    these training rows only (never the test set), then fitted on all of them. Returns the probe
    and the chosen weight decay. A linear classifier as a baseline should be this one, not one
    left at an arbitrary regularisation."""
    if folds < 2 or len(features) < folds:
        raise ValueError(f"need folds >= 2 and at least {folds} rows, got {folds} folds, {len(features)} rows")
    n_classes = n_classes or int(labels.max()) + 1
    parts = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed)).chunk(folds)
    scores = {}
    for wd in weight_decays:
        accs = []
        for part in parts:
            keep = torch.ones(len(features), dtype=torch.bool)
            keep[part] = False
            probe = fit_linear_probe(features[keep], labels[keep], n_classes, weight_decay=wd)
            accs.append(probe_accuracy(probe, features[part], labels[part]))
        scores[wd] = sum(accs) / len(accs)
    best = max(weight_decays, key=lambda wd: scores[wd])
    return fit_linear_probe(features, labels, n_classes, weight_decay=best), best


@torch.no_grad()
def probe_accuracy(probe: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of `features` the probe classifies as `labels`."""
    return (probe(features).argmax(-1) == labels).float().mean().item()

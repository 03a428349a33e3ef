"""Small plotting helpers the notebooks need again and again: image grids, training curves, piano rolls."""
from __future__ import annotations

import math
import textwrap
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def image_grid(images: torch.Tensor | np.ndarray, titles: Sequence[str] | None = None,
               ncols: int = 8, size: float = 1.2, cmap: str = "gray", suptitle: str | None = None,
               title_size: float = 8, wrap: int | None = None, below: bool = False):
    """Show images (N, H, W), (N, 1, H, W) or (N, 3, H, W) with values in [0, 1] in a grid.

    `titles` (labels, captions) go above the images, or under them with `below`; `wrap` breaks
    them into lines of at most that many characters. Returns the figure.
    """
    x = torch.as_tensor(images).detach().float().cpu()
    if x.dim() == 3:
        x = x.unsqueeze(1)                                  # (N, 1, H, W)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, H, W) or (N, 1|3, H, W), got {tuple(x.shape)}")
    n = len(x)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    lines = 1
    if titles is not None:
        titles = [textwrap.fill(str(t), wrap) if wrap else str(t) for t in titles]
        lines = max(t.count("\n") + 1 for t in titles)
    extra = 0.2 + 0.15 * lines * title_size / 8 if titles is not None else 0.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + extra)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = x[i].permute(1, 2, 0).clamp(0, 1).numpy()    # (H, W, C)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap=cmap, vmin=0, vmax=1,
                  interpolation="nearest")
        if titles is not None and below:
            ax.text(0.5, -0.03, titles[i], transform=ax.transAxes, ha="center", va="top",
                    fontsize=title_size)
        elif titles is not None:
            ax.set_title(titles[i], fontsize=title_size, pad=2)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over `window` points (shorter at the start), same length as `values`."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0 or window <= 1:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_curve(history, ax=None, smooth: int = 20, title: str | None = None):
    """Training loss of a `History` (raw faint, smoothed bold) and its evaluations as markers."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(history.steps, history.loss, color="C0", alpha=0.25, lw=0.8)
    ax.plot(history.steps, moving_average(history.loss, smooth), color="C0", label="train loss")
    keys = sorted({k for e in history.evals for k in e if k != "step"})
    loss_keys = [k for k in keys if "loss" in k]
    other = [k for k in keys if k not in loss_keys]
    for i, k in enumerate(loss_keys):
        pts = [(e["step"], e[k]) for e in history.evals if k in e]
        ax.plot(*zip(*pts), "o-", color=f"C{i + 1}", label=k, ms=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if other:
        ax2 = ax.twinx()
        for i, k in enumerate(other):
            pts = [(e["step"], e[k]) for e in history.evals if k in e]
            ax2.plot(*zip(*pts), "s--", color=f"C{i + 1 + len(loss_keys)}", label=k, ms=4)
        ax2.set_ylabel(", ".join(other))
        ax2.legend(loc="center right", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    return ax


INSTRUMENT_COLOURS = ("#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd")   # soprano .. fiddle


def piano_roll(notes: np.ndarray, names: Sequence[str], ax=None, title: str | None = None,
               steps_per_beat: int = 4, legend: bool = True):
    """Notes (n, 4) of (onset, duration, instrument, pitch) as bars, one colour per instrument
    (`names[i]` in the legend), time in beats; one `broken_barh` call per instrument and pitch.
    Each bar has a thin white edge, so that a note repeated at once reads as two bars."""
    notes = np.asarray(notes).reshape(-1, 4)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    for i, name in enumerate(names):
        mine = notes[notes[:, 2] == i]
        if len(mine):
            bars = np.stack([mine[:, 0], mine[:, 1]], 1) / steps_per_beat            # (n, 2) start, width
            for pitch in np.unique(mine[:, 3]):
                ax.broken_barh(bars[mine[:, 3] == pitch], (pitch - 0.4, 0.8),
                               facecolor=INSTRUMENT_COLOURS[i % len(INSTRUMENT_COLOURS)],
                               edgecolor="white", linewidth=0.8, label=name)
    handles, labels = ax.get_legend_handles_labels()
    if legend and handles:
        seen = dict(zip(labels, handles))
        ax.legend(seen.values(), seen.keys(), fontsize=7, loc="upper right", ncol=len(seen))
    if len(notes):
        ax.set_ylim(notes[:, 3].min() - 2, notes[:, 3].max() + 3)
        ax.set_xlim(0, (notes[:, 0] + notes[:, 1]).max() / steps_per_beat)
    ax.set_xlabel("beat (quarter notes)")
    ax.set_ylabel("MIDI pitch")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.2)
    return ax

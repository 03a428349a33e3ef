"""Notebook 06's judge: a reader of images with one classification head per attribute, a
different network from CLIP's image tower, so that it can grade what DALL·E draws and what CLIP
picks.

    judge = Judge({"colour": 8, "shape": 6}, resolution=32)
    colour_logits, shape_logits = judge(images)     # (B, 3, 32, 32) -> [(B, 8), (B, 6)]

What it reads, how it is trained and what it grades: `webmm_lab.experiments.dalle_judge`.
"""
from __future__ import annotations

import torch
from torch import nn


class Judge(nn.Module):
    """Strided convolutions (no pooling: where things are matters) and an MLP with one linear
    head per attribute, `heads` = {name: classes}. Unlike CLIP's image tower it keeps the
    layout, and it never sees text."""

    def __init__(self, heads: dict[str, int], resolution: int = 32, width: int = 32):
        super().__init__()
        if resolution % 4:
            raise ValueError(f"the judge halves the image twice: resolution must be a multiple of 4, got {resolution}")
        self.sizes = list(heads.values())
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),                          # (B, w, R, R)
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),        # (B, 2w, R/2, R/2)
            nn.Conv2d(2 * width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),    # (B, 2w, R/4, R/4)
            nn.Flatten(), nn.Linear(2 * width * (resolution // 4) ** 2, 256), nn.ReLU())   # (B, 256)
        self.heads = nn.Linear(256, sum(self.sizes))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of each head, in the order `heads` named them: [(B, classes), ...]."""
        return list(self.heads(self.net(x)).split(self.sizes, dim=1))

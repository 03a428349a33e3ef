"""A small convolutional encoder for handwritten digits (8x8 or 28x28), and the heads around it.

    enc = ConvEncoder(in_channels=1, width=32)     # (B, 1, H, W) -> (B, 4*width) features
    clf = nn.Sequential(enc, nn.Linear(enc.out_dim, 10))
    proj = projection_head(enc.out_dim, 64)         # SimCLR's MLP head on top of the features
"""
from __future__ import annotations

import torch
from torch import nn


def conv_block(c_in: int, c_out: int, norm: str = "batch") -> nn.Sequential:
    """3x3 convolution, normalisation, ReLU: the unit every layer of the encoder is made of.

    norm="batch" (BatchNorm) mixes statistics across the batch; norm="group" (GroupNorm, 4
    groups) normalises each image alone, so the features of one example never depend on the
    others: what a contrastive model trained on several processes needs (notebook 07)."""
    if norm not in ("batch", "group"):
        raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")
    layer = nn.BatchNorm2d(c_out) if norm == "batch" else nn.GroupNorm(min(4, c_out), c_out)
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), layer, nn.ReLU(inplace=True))


class ConvEncoder(nn.Module):
    """Four conv blocks with one 2x downsampling, then global average pooling.

    Works at any resolution >= 4x4; on 8x8 digits the receptive field covers the whole image.
    """

    def __init__(self, in_channels: int = 1, width: int = 32, norm: str = "batch"):
        super().__init__()
        self.out_dim = 4 * width
        self.net = nn.Sequential(
            conv_block(in_channels, width, norm),        # (B, w, H, W)
            conv_block(width, 2 * width, norm),          # (B, 2w, H, W)
            nn.MaxPool2d(2),                             # (B, 2w, H/2, W/2)
            conv_block(2 * width, 4 * width, norm),      # (B, 4w, H/2, W/2)
            conv_block(4 * width, 4 * width, norm),      # (B, 4w, H/2, W/2)
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),       # (B, 4w)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"ConvEncoder expects images (B, C, H, W), got shape {tuple(x.shape)}")
        return self.net(x)


def projection_head(d_in: int, d_out: int = 64, d_hidden: int | None = None) -> nn.Sequential:
    """SimCLR's projection head: Linear -> BatchNorm -> ReLU -> Linear. The contrastive loss is
    applied to its output; the features before it are the ones that transfer."""
    d_hidden = d_hidden or d_in
    return nn.Sequential(nn.Linear(d_in, d_hidden, bias=False), nn.BatchNorm1d(d_hidden),
                         nn.ReLU(inplace=True), nn.Linear(d_hidden, d_out))

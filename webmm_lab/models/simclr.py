"""SimCLR (Chen et al., 2020): an encoder and a projection head; the contrastive loss
(webmm_lab.models.contrastive.info_nce) compares the projections of two views of each image.

    model = SimCLR(ConvEncoder(1, 16), proj_dim=64)
    z1, z2 = model(view1, view2)          # (B, proj_dim) each
    loss = info_nce(z1, z2, temperature=0.5)
After pre-training, `model.encoder` gives the features used downstream.
"""
from __future__ import annotations

import torch
from torch import nn

from .cnn import projection_head


class SimCLR(nn.Module):
    """Encoder + projection head, applied to both views."""

    def __init__(self, encoder: nn.Module, proj_dim: int = 64):
        super().__init__()
        self.encoder = encoder
        self.head = projection_head(encoder.out_dim, proj_dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # one pass over both views: batch norm sees the whole 2B batch, as in SimCLR
        z = self.head(self.encoder(torch.cat([x1, x2])))   # (2B, proj_dim)
        return z[: len(x1)], z[len(x1):]

"""A small Vision Transformer (Dosovitskiy et al., 2020) as CLIP uses it: the image cut into
patches, a class token in front, LayerNorm before and after the transformer, and the class
token's final state as the image feature.

    enc = ViT(image_size=32, patch=4, width=64, layers=2, heads=2)
    feats = enc(images)                  # (B, 3, 32, 32) -> (B, 64) = (B, enc.out_dim)

The blocks are GPT's (webmm_lab.models.gpt.Block) without the causal mask: every patch sees
every other.
"""
from __future__ import annotations

import torch
from torch import nn

from .gpt import Block, GPTConfig


class ViT(nn.Module):
    """Patchify -> [class] + patches + positions -> ln_pre -> blocks -> ln_post on [class]."""

    def __init__(self, image_size: int = 32, patch: int = 4, width: int = 64, layers: int = 2,
                 heads: int = 2, in_channels: int = 3):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of patch {patch}")
        self.image_size, self.out_dim = image_size, width
        n = (image_size // patch) ** 2
        self.patchify = nn.Conv2d(in_channels, width, patch, stride=patch, bias=False)
        self.cls = nn.Parameter(torch.randn(width) * 0.02)
        self.pos = nn.Parameter(torch.randn(n + 1, width) * 0.02)
        self.ln_pre = nn.LayerNorm(width)
        cfg = GPTConfig(vocab_size=1, block_size=n + 1, n_layer=layers, n_head=heads, n_embd=width,
                        causal=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(layers))
        self.ln_post = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"ViT expects images (B, C, {self.image_size}, {self.image_size}), "
                             f"got shape {tuple(x.shape)}")
        p = self.patchify(x).flatten(2).transpose(1, 2)                  # (B, n, C)
        cls = self.cls.expand(len(x), 1, -1)                             # (B, 1, C)
        h = self.ln_pre(torch.cat([cls, p], dim=1) + self.pos)           # (B, n + 1, C)
        for block in self.blocks:
            h = block(h)
        return self.ln_post(h[:, 0])                                     # (B, C)

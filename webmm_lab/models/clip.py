"""CLIP (Radford et al., 2021): an image encoder and a text encoder mapped into one embedding
space, trained so that matching image-caption pairs have the largest dot products.

    model = CLIP(ConvEncoder(3, 32), GPT(GPTConfig(vocab_size=V, block_size=32)), embed_dim=64)
    img = model.encode_image(images)                 # (B, D), unit length
    txt = model.encode_text(ids, lengths)            # (B, D): the feature at each caption's last
                                                     # token, the end-of-text marker
    loss = clip_loss(img, txt, model.logit_scale)    # webmm_lab.models.contrastive

Zero-shot classification: `zero_shot_weights` embeds "a photo of a {}"-style templates for each
class name, averages them, and `logits = image_embeddings @ weights` picks a class.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..ids import check_lengths
from .contrastive import LOGIT_SCALE_INIT
from .gpt import GPT


class CLIP(nn.Module):
    """Two towers, linear projections to `embed_dim`, and a learned logit scale."""

    def __init__(self, image_encoder: nn.Module, text_encoder: GPT, embed_dim: int = 64):
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_proj = nn.Linear(image_encoder.out_dim, embed_dim, bias=False)
        self.text_proj = nn.Linear(text_encoder.cfg.n_embd, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings (B, D) of images (B, C, H, W)."""
        return F.normalize(self.image_proj(self.image_encoder(images)), dim=-1)

    def encode_text(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings (B, D) of captions: ids (B, T), padded after each caption's
        end-of-text token at position lengths - 1. The causal mask means padding never affects
        the feature read there."""
        check_lengths(lengths, 1, ids.shape[1], "lengths")                    # on the CPU (see ids)
        h = self.text_encoder.features(ids)                                   # (B, T, C)
        last = h[torch.arange(len(ids), device=ids.device), lengths - 1]      # (B, C)
        return F.normalize(self.text_proj(last), dim=-1)

    def forward(self, images: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor):
        return self.encode_image(images), self.encode_text(ids, lengths)


@torch.no_grad()
def zero_shot_weights(encode_texts: Callable[[list[str]], torch.Tensor], classnames: list[str],
                      templates: list[str]) -> torch.Tensor:
    """Zero-shot classifier (D, n_classes): for each class, embed every template filled with its
    name, normalise, average over templates, normalise again (CLIP's prompt ensembling).

    encode_texts(list of strings) -> (n, D) embeddings.
    """
    if not templates or not all("{}" in t for t in templates):
        raise ValueError(f"every template needs a '{{}}' for the class name, got {templates!r}")
    texts = [t.format(name) for name in classnames for t in templates]            # one call: C * n_t texts
    emb = F.normalize(encode_texts(texts), dim=-1).view(len(classnames), len(templates), -1)   # (C, n_t, D)
    return F.normalize(emb.mean(1), dim=-1).T                                       # (D, C)


class TinyCLIP(nn.Module):
    """Two small towers with CLIP's interface, small enough to check gradients exactly (lab 08's
    GradCache check): images (n, 3, 4, 4) through an MLP, text as the mean embedding of each
    caption's first `lengths` ids (n, T); forward -> (image features, text features), (n, dim)
    each, unit length, and a learned `logit_scale`."""

    def __init__(self, vocab: int = 20, dim: int = 8):
        super().__init__()
        self.image = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16), nn.Tanh(), nn.Linear(16, dim))
        self.embed = nn.Embedding(vocab, dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, images: torch.Tensor, ids: torch.Tensor,
                lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = (torch.arange(ids.shape[1]) < lengths[:, None]).float()[..., None]      # (n, T, 1)
        text = (self.embed(ids) * keep).sum(1) / lengths[:, None].float()
        return (F.normalize(self.image(images), dim=-1), F.normalize(text, dim=-1))

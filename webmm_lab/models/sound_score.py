"""Notebook 05's pair of towers for CLIP's loss between sound and score: what is heard (mel
bands over time) and what is written (a piano roll's pitches over time) into one space.

    model = SoundScore(seed=0)
    sound, score = model(mels, rolls)    # (B, 64, frames), (B, 61, steps) -> (B, 64) each, unit length
    clip_loss(sound, score, model.logit_scale)

The training and retrieval around it: `webmm_lab.experiments.sound_score`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .contrastive import LOGIT_SCALE_INIT


class SoundScore(nn.Module):
    """Two small towers into one embedding space: 1-D convolutions over time reading the mel
    bands (sound) or the roll's pitches (score) as channels, so both see pitch; each averaged
    over time, projected and normalised; a learned logit scale, as CLIP's."""

    def __init__(self, n_mels: int = 64, pitches: int = 61, width: int = 64, dim: int = 64,   # pitches: MIDI 36..96
                 seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.sound = nn.Sequential(                                             # (B, n_mels, frames)
            nn.Conv1d(n_mels, width, 5, padding=2), nn.GELU(),
            nn.Conv1d(width, width, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv1d(width, width, 5, stride=2, padding=2), nn.GELU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(width, dim))       # (B, dim)
        self.score = nn.Sequential(                                             # (B, pitches, steps)
            nn.Conv1d(pitches, width, 3, padding=1), nn.GELU(),
            nn.Conv1d(width, width, 3, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(width, dim))       # (B, dim)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def forward(self, mels: torch.Tensor, rolls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-length embeddings of sounds (B, n_mels, frames) and of scores (B, pitches, steps)."""
        return F.normalize(self.sound(mels), dim=-1), F.normalize(self.score(rolls), dim=-1)

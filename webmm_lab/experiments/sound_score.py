"""One loss, two other modalities (notebook 05): CLIP's contrastive loss between rendered sound
and its score, the talk's "every modality the web has" with the course's own two.

    mels = log_mels(audio.waves)                            # (n, 64, frames): what is heard
    rolls = score_rolls(audio.names, seconds=4.0)           # (n, 61, 24): what is written
    model = SoundScore(seed=0)
    train_sound_score(model, mels, rolls, steps=300)        # the course's loop, CLIP's loss
    top1 = retrieval_top1(model, mels, rolls, names, candidates=16)   # find each clip's score

A clip and its score are a pair; the other pairs of the batch are the negatives, as in CLIP. At
test time a clip of a held-out piece must pick its own score among 16 (15 of other pieces):
chance is 1 in 16.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.music import GRID, load_music
from ..device import evaluating
from ..models.contrastive import LOGIT_SCALE_INIT, clip_loss
from ..train import History, step_generator, train

LOW, HIGH = 36, 96                       # the pitches a roll keeps (the course's voices)


def log_mels(waves: np.ndarray | torch.Tensor, sample_rate: int = 16_000, n_mels: int = 64,
             hop: int = 256) -> torch.Tensor:
    """Log-mel spectrograms (n, n_mels, frames) of mono clips (n, samples), each normalised to
    zero mean and unit variance (loudness is not the score's business)."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=hop, n_mels=n_mels)
    m = (mel(torch.as_tensor(waves).float()) + 1e-6).log()                     # (n, n_mels, frames)
    return (m - m.mean((1, 2), keepdim=True)) / (m.std((1, 2), keepdim=True) + 1e-6)


def score_rolls(names: list[str], seconds: float, tempo: float = 90) -> torch.Tensor:
    """Piano rolls (n, HIGH - LOW + 1, steps) of the first `seconds` of each named piece: 1 where
    a note sounds, on the sixteenth-note grid (steps = seconds at `tempo` quarter notes a minute)."""
    pieces = {p.name: p for p in load_music("all").pieces}
    missing = [n for n in names if n not in pieces]
    if missing:
        raise KeyError(f"no piece named {missing[0]!r} in the music corpus")
    steps = int(round(seconds * tempo / 60 * GRID))
    rolls = torch.zeros(len(names), HIGH - LOW + 1, steps)
    for i, name in enumerate(names):
        notes = pieces[name].notes
        notes = notes[(notes[:, 0] < steps) & (notes[:, 3] >= LOW) & (notes[:, 3] <= HIGH)]
        for onset, dur, _, pitch in notes.tolist():
            rolls[i, pitch - LOW, onset:min(steps, onset + dur)] = 1.0
    return rolls


class SoundScore(nn.Module):
    """Two small towers into one embedding space: 1-D convolutions over the mel frames, 2-D
    convolutions over the piano roll, each average-pooled, projected and normalised; a learned
    logit scale, as CLIP's."""

    def __init__(self, n_mels: int = 64, width: int = 64, dim: int = 64, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.sound = nn.Sequential(                                             # (B, n_mels, T)
            nn.Conv1d(n_mels, width, 5, padding=2), nn.GELU(),
            nn.Conv1d(width, width, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv1d(width, width, 5, stride=2, padding=2), nn.GELU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(width, dim))       # (B, dim)
        self.score = nn.Sequential(                                             # (B, 1, pitches, steps)
            nn.Conv2d(1, width // 2, 3, padding=1), nn.GELU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, dim))       # (B, dim)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def forward(self, mels: torch.Tensor, rolls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-length embeddings of sounds (B, n_mels, T) and of scores (B, pitches, steps)."""
        return (F.normalize(self.sound(mels), dim=-1), F.normalize(self.score(rolls[:, None]), dim=-1))


def train_sound_score(model: SoundScore, mels: torch.Tensor, rolls: torch.Tensor, steps: int = 300,
                      batch: int = 64, lr: float = 2e-3, seed: int = 0, progress: bool = True) -> History:
    """The course's loop with CLIP's loss on random batches of (sound, score) pairs."""
    def batch_fn(step: int):
        idx = torch.randint(len(mels), (min(batch, len(mels)),), generator=step_generator(seed, step))
        return mels[idx], rolls[idx]
    return train(model, lambda m, b: clip_loss(*m(*b), m.logit_scale, gather=False), batch_fn,
                 steps=steps, lr=lr, seed=seed, progress=progress)


def distractors(names: list[str], candidates: int = 16, seed: int = 0) -> list[torch.Tensor]:
    """For each clip, `candidates - 1` clips of other pieces (one rendering per piece: the
    renderings of a piece share its score), drawn at random; the same draws for every reader."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for name in names:
        firsts = {m: j for j, m in enumerate(names) if m != name}
        pool = torch.tensor(list(firsts.values()))
        if len(pool) < candidates - 1:
            raise ValueError(f"{len(pool)} other pieces cannot make {candidates - 1} distractors")
        out.append(pool[torch.randperm(len(pool), generator=g)[:candidates - 1]])
    return out


def retrieval_top1(model: SoundScore, mels: torch.Tensor, rolls: torch.Tensor, names: list[str],
                   candidates: int = 16, seed: int = 0) -> float:
    """Share (%) of clips whose own score CLIP ranks first among `candidates` scores: its own and
    candidates - 1 drawn at random from other pieces (never another rendering of its own)."""
    with evaluating(model):
        a, b = model(mels, rolls)                                                   # (n, D), (n, D)
        sim = a @ b.T                                                               # (n, n)
    picks = distractors(names, candidates, seed)
    return 100 * float(np.mean([bool(sim[i, i] > sim[i, p].max()) for i, p in enumerate(picks)]))


def label_only_top1(labels: list[int] | np.ndarray, names: list[str], candidates: int = 16,
                    seed: int = 0) -> float:
    """The expected top-1 (%) of a reader that knows only each clip's label (its genre, say)
    and picks at random among the candidates that share it, on the same candidates as
    `retrieval_top1` with the same seed: the mean of 1 / (1 + distractors with the clip's label)."""
    labels = np.asarray(labels)
    picks = distractors(names, candidates, seed)
    return 100 * float(np.mean([1 / (1 + int((labels[p.numpy()] == labels[i]).sum()))
                                for i, p in enumerate(picks)]))

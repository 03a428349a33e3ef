"""One loss, two other modalities (notebook 05): CLIP's contrastive loss between rendered sound
and its score, the talk's "every modality the web has" with the course's own two.

    mels = log_mels(audio.waves)                            # (n, 64, frames): what is heard
    rolls = score_rolls(audio.names, seconds=4.0)           # (n, 61, 24): what is written
    pieces = piece_ids(audio.names)                         # (n,): which clips share a score
    model = SoundScore(seed=0)
    train_sound_score(model, mels, rolls, pieces, steps=300)   # random 2 s windows, CLIP's loss
    r = retrieval(model, mels, rolls, pieces, genres)       # each window finds its own score

A window of a clip and the same seconds of its score are a pair; the other pairs of the batch
are the negatives, as in CLIP. A batch holds one rendering of each piece it draws, so no
"negative" is another rendering of the same score. Both towers see pitch: the sound tower
reads the mel bands as channels, the score tower the roll's pitches as channels, and both
pool over time only. At test time a window of a held-out piece must pick its own score among
16 windows, the 15 others drawn from other pieces of the same genre: a reader that knows the
genre alone is at chance, 1 in 16.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..batches import step_generator
from ..data.music import GRID, load_music
from ..device import evaluating
from ..models.contrastive import clip_loss
from ..models.sound_score import SoundScore
from ..train import History, train

LOW, HIGH = 36, 96                       # the pitches a roll keeps (the course's voices)
WINDOW = 12                              # sixteenths per window: 2 s at 90 bpm


def log_mels(waves: np.ndarray | torch.Tensor, sample_rate: int = 16_000, n_mels: int = 64,
             hop: int = 256) -> torch.Tensor:
    """Log-mel spectrograms (n, n_mels, frames) of mono clips (n, samples), each normalised to
    zero mean and unit variance (loudness is not the score's business)."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=hop, n_mels=n_mels)
    m = (mel(torch.as_tensor(waves).float()) + 1e-6).log()                     # (n, n_mels, frames)
    return (m - m.mean((1, 2), keepdim=True)) / (m.std((1, 2), keepdim=True) + 1e-6)


def frames_per_step(tempo: float = 90, sample_rate: int = 16_000, hop: int = 256) -> float:
    """Mel frames per sixteenth note (10.4 at 90 bpm, 16 kHz, hop 256)."""
    return sample_rate / hop * 60 / tempo / GRID


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


def piece_ids(names: list[str]) -> torch.Tensor:
    """(n,) long: the same id for clips of the same piece (its renderings share a score)."""
    return torch.from_numpy(np.unique(np.asarray(names), return_inverse=True)[1].reshape(-1)).long()


def cut(mels: torch.Tensor, rolls: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor,
        steps: int = WINDOW, fps: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of `steps` sixteenths from clips `rows` (B,) at sixteenths `starts` (B,), one
    gather each: sounds (B, n_mels, steps * fps) and scores (B, pitches, steps)."""
    fps = fps or frames_per_step()
    if int((starts + steps).max()) > rolls.shape[-1]:
        raise ValueError(f"a window of {steps} sixteenths from {int(starts.max())} runs past the "
                         f"clips' {rolls.shape[-1]}")
    frames = int(round(steps * fps))
    f0 = (starts * fps).round().long().clamp(max=mels.shape[-1] - frames)            # (B,)
    t = f0[:, None] + torch.arange(frames)                                          # (B, frames)
    s = starts[:, None] + torch.arange(steps)                                       # (B, steps)
    return mels[rows[:, None], :, t].transpose(1, 2), rolls[rows[:, None], :, s].transpose(1, 2)


def pitch_template(harmonics: int = 10, floor: float = 1e-2, n_mels: int = 64, sample_rate: int = 16_000,
                   n_fft: int = 1024) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The sceptic's reader, with no training: it knows the physics of a note instead. Each
    pitch of a roll becomes `harmonics` partials of amplitude 1/k in the mel bands; a window of
    score predicts the log of its pitches' summed power, a window of sound is its mean log-mel;
    each is centred over the bands and normalised. Returns a function (mels, rolls) -> (sound
    embeddings (B, n_mels), score embeddings (B, n_mels)), as `SoundScore.forward`."""
    import torchaudio.functional as AF

    bins = n_fft // 2 + 1
    f0 = 440 * 2 ** ((torch.arange(LOW, HIGH + 1).float() - 69) / 12)                 # (pitches,) Hz
    power = torch.zeros(len(f0), bins)
    for k in range(1, harmonics + 1):
        b = (k * f0 / (sample_rate / 2) * (bins - 1)).round().long()                  # each partial's bin
        ok = b < bins
        power[ok, b[ok]] += 1 / k ** 2
    template = power @ AF.melscale_fbanks(bins, 0.0, sample_rate / 2, n_mels, sample_rate)   # (pitches, n_mels)

    def embed(mels: torch.Tensor, rolls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heard = mels.mean(-1)                                                           # (B, n_mels)
        written = (rolls.mean(-1) @ template + floor).log()                             # (B, n_mels)
        return tuple(F.normalize(x - x.mean(1, keepdim=True), dim=1) for x in (heard, written))
    return embed


def pair_batches(mels: torch.Tensor, rolls: torch.Tensor, pieces: torch.Tensor, batch: int = 32,
                 window: int = WINDOW, seed: int = 0) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """A `batch_fn`: `batch` different pieces (fewer if there are fewer), one random rendering of
    each, a random window of `window` sixteenths cut from its sound and its score (`cut`)."""
    order = torch.argsort(pieces, stable=True)
    per = torch.bincount(pieces)
    if not bool((per == per[0]).all()):
        raise ValueError("every piece needs the same number of renderings (load_audio renders each "
                         f"in every timbre); got {per.tolist()}")
    rows_of = order.view(len(per), int(per[0]))                                 # (pieces, renderings)
    B = min(batch, len(per))

    def batch_fn(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = step_generator(seed, step)
        chosen = torch.randperm(len(per), generator=g)[:B]
        rows = rows_of[chosen, torch.randint(rows_of.shape[1], (B,), generator=g)]
        starts = torch.randint(rolls.shape[-1] - window + 1, (B,), generator=g)
        return cut(mels, rolls, rows, starts, window)
    return batch_fn


def train_sound_score(model: SoundScore, mels: torch.Tensor, rolls: torch.Tensor, pieces: torch.Tensor,
                      steps: int = 300, batch: int = 32, window: int = WINDOW, lr: float = 2e-3,
                      seed: int = 0, progress: bool = True) -> History:
    """The course's loop with CLIP's loss on `pair_batches`."""
    return train(model, lambda m, b: clip_loss(*m(*b), m.logit_scale, gather=False),
                 pair_batches(mels, rolls, pieces, batch, window, seed), steps=steps, lr=lr, seed=seed,
                 progress=progress)


def window_starts(steps: int, window: int = WINDOW) -> tuple[int, ...]:
    """Where the test windows of a clip of `steps` sixteenths start: every half window (0, 6, 12
    for a 4 s clip)."""
    return tuple(range(0, steps - window + 1, window // 2))


def piece_genres(pieces: torch.Tensor, genres: torch.Tensor) -> torch.Tensor:
    """(number of pieces,) long: each piece's genre, from its clips' piece ids and genres (n,)."""
    return torch.full((int(pieces.max()) + 1,), -1, dtype=torch.long).scatter(0, pieces, genres.long())


def candidates(pieces: torch.Tensor, genres: torch.Tensor, starts: tuple[int, ...], n: int = 16,
               same_genre: bool = True, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The test's questions. Queries are every clip's window at every start (clip-major); the
    scores are every piece's window at every start. Returns (truth (Q,), the index of each
    query's own score; distractors (Q, n - 1), scores of other pieces, of the same genre with
    `same_genre`, drawn at random with the same draws for every reader)."""
    piece_genre, S = piece_genres(pieces, genres), len(starts)
    P = len(piece_genre)
    q_piece = pieces.repeat_interleave(S)                                           # (Q,)
    truth = q_piece * S + torch.arange(S).repeat(len(pieces))                       # (Q,)
    s_piece = torch.arange(P).repeat_interleave(S)                                  # (P * S,)
    allowed = q_piece[:, None] != s_piece[None]                                     # (Q, P * S)
    if same_genre:
        allowed &= piece_genre[q_piece][:, None] == piece_genre[s_piece][None]
    if int(allowed.sum(1).min()) < n - 1:
        raise ValueError(f"only {int(allowed.sum(1).min())} windows of other pieces to draw {n - 1} "
                         "distractors from; use fewer candidates or more pieces")
    keys = torch.rand(allowed.shape, generator=torch.Generator().manual_seed(seed)).masked_fill(~allowed, -1)
    return truth, keys.topk(n - 1, dim=1).indices


def retrieval(model: SoundScore | Callable, mels: torch.Tensor, rolls: torch.Tensor, pieces: torch.Tensor,
              genres: torch.Tensor, n: int = 16, same_genre: bool = True, seed: int = 0) -> dict[str, float]:
    """Each test window (`window_starts`) picks a score among `n` (`candidates`), read by a
    SoundScore or any function (mels, rolls) -> embeddings (`pitch_template`). Returns "top1"
    (%: its own score ranked first; ties are misses) and "genre only" (%: the expected top-1 of
    a reader that knows each clip's genre and guesses among the candidates of that genre)."""
    starts = window_starts(rolls.shape[-1])
    truth, picks = candidates(pieces, genres, starts, n, same_genre, seed)
    S = len(starts)
    first = torch.full((int(pieces.max()) + 1,), len(pieces)).scatter_reduce(
        0, pieces, torch.arange(len(pieces)), "amin")                               # a clip of each piece
    start_t = torch.tensor(starts)
    q_rows, q_starts = torch.arange(len(pieces)).repeat_interleave(S), start_t.repeat(len(pieces))
    s_rows, s_starts = first.repeat_interleave(S), start_t.repeat(len(first))
    with evaluating(model) if isinstance(model, nn.Module) else nullcontext(), torch.no_grad():
        a, _ = model(*cut(mels, rolls, q_rows, q_starts))                           # (Q, D)
        _, b = model(*cut(mels, rolls, s_rows, s_starts))                           # (P * S, D)
        sim = a @ b.T                                                               # (Q, P * S)
    own = sim.gather(1, truth[:, None])[:, 0]
    top1 = (own > sim.gather(1, picks).max(1).values).float().mean().item()
    q_genre = genres.long().repeat_interleave(S)
    same = (piece_genres(pieces, genres)[picks // S] == q_genre[:, None]).sum(1)    # (Q,)
    return {"top1": 100 * top1, "genre only": 100 * (1 / (1 + same.float())).mean().item()}

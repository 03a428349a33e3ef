"""Judging generated music (notebook 04): a style judge on statistics of a note list that name
neither its instruments nor its key, and measures a listener would check.

    notes, styles = excerpts(pieces, notes=48)                  # real excerpts, re-timed to 0
    judge = train_style_judge(notes, styles)                    # logistic regression
    judge_styles(judge, generated)                              # ["bach", "folk", ...]
    one_at_a_time(notes), seconds_of(notes)                     # a voice sings one note at a time

A note list is an (n, 4) array of (onset, duration, instrument, pitch), times in sixteenths.
"""
from __future__ import annotations

import numpy as np

from ..data.music import GRID, Piece

FEATURE_GROUPS = ("pitch classes", "intervals", "rhythm", "texture")


def style_features(notes: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of a note list that describe style without naming its instruments or its
    key: the pitch-class histogram (12) rotated so that the most common pitch class comes
    first (a transposed piece gives the same features), melodic intervals within each
    instrument (-12..12 clipped, 25), durations and onsets within the beat (rhythm, 8 + 4),
    notes per onset and pitch spread (texture, 6). Each group sums or scales to order 1."""
    notes = np.asarray(notes).reshape(-1, 4)
    n = max(1, len(notes))
    pc = np.bincount(notes[:, 3] % 12, minlength=12) / n
    pc = np.roll(pc, -int(pc.argmax()))                                 # relative to the commonest
    iv = []
    for i in np.unique(notes[:, 2]):
        p = notes[notes[:, 2] == i]
        iv.append(np.clip(np.diff(p[:, 3]), -12, 12))
    iv = np.concatenate(iv) if iv else np.zeros(0, dtype=int)
    ivh = np.bincount(iv + 12, minlength=25) / max(1, len(iv))
    dur = np.bincount(np.minimum(np.log2(notes[:, 1]).astype(int), 7), minlength=8)[:8] / n
    beat = np.bincount(notes[:, 0] % GRID, minlength=GRID) / n
    onsets, per = np.unique(notes[:, 0], return_counts=True)
    poly = np.bincount(np.minimum(per, 5), minlength=6)[1:6] / max(1, len(onsets))
    spread = [(notes[:, 3].std() if len(notes) else 0) / 12]
    return {"pitch classes": pc, "intervals": ivh, "rhythm": np.concatenate([dur, beat]),
            "texture": np.concatenate([poly, spread])}


def feature_matrix(note_lists: list[np.ndarray], groups=FEATURE_GROUPS) -> np.ndarray:
    """Stack `style_features` of many note lists, keeping the given groups: (N, F)."""
    return np.stack([np.concatenate([style_features(n)[g] for g in groups]) for n in note_lists])


def excerpts(pieces: list[Piece], notes: int, per_piece: int = 3, seed: int = 0) -> tuple[list, list]:
    """Random excerpts of `notes` consecutive notes from each piece (the whole piece if shorter),
    re-timed to start at 0: what a judge of short generated pieces trains on. Returns (note
    lists, style names)."""
    rng = np.random.default_rng(seed)
    out, styles = [], []
    for p in pieces:
        for _ in range(per_piece):
            a = int(rng.integers(0, max(1, len(p.notes) - notes + 1)))
            c = p.notes[a: a + notes].copy()
            c[:, 0] -= c[0, 0]
            out.append(c)
            styles.append(p.style)
    return out, styles


def train_style_judge(note_lists: list[np.ndarray], styles: list[str], groups=FEATURE_GROUPS):
    """A logistic-regression judge of style on `style_features` (scikit-learn pipeline)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    judge = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    judge.fit(feature_matrix(note_lists, groups), styles)
    judge.groups = tuple(groups)
    return judge


def judge_styles(judge, note_lists: list[np.ndarray]) -> list[str]:
    """The judge's style for each note list."""
    return list(judge.predict(feature_matrix(note_lists, judge.groups)))


def one_at_a_time(notes: np.ndarray) -> float:
    """The fraction of notes that overlap no other note of the same instrument: a voice of a
    chorale sings one note at a time, so real chorales score 1 (or nearly)."""
    notes = np.asarray(notes).reshape(-1, 4)
    if not len(notes):
        return 1.0
    on, end, inst = notes[:, 0], notes[:, 0] + notes[:, 1], notes[:, 2]
    clash = (inst[:, None] == inst[None, :]) & (on[:, None] < end[None, :]) & (on[None, :] < end[:, None])
    np.fill_diagonal(clash, False)
    return float(1 - clash.any(1).mean())


def seconds_of(notes: np.ndarray, tempo: float = 90) -> float:
    """A note list's length in seconds at `tempo` quarter notes per minute."""
    notes = np.asarray(notes).reshape(-1, 4)
    return float((notes[:, 0] + notes[:, 1]).max() / GRID * 60 / tempo) if len(notes) else 0.0


__all__ = ["FEATURE_GROUPS", "style_features", "feature_matrix", "excerpts", "train_style_judge",
           "judge_styles", "one_at_a_time", "seconds_of"]

"""Scores as tokens (notebook 04): MuseNet's kind of encoding, and windows of it to train on.

    tok = MusicTokenizer()
    ids = tok.encode(notes)                       # notes (n, 4): onset, duration, instrument, pitch
    notes, stats = tok.decode(ids)                # back; stats["hanging"] = notes left open
    tok.prefix("bach", ["soprano", "alto"])       # [style, +/- flag per instrument, <start>]
    batch_fn = music_batches(tok, seqs, shifts, block=256, batch=32)   # random windows, transposed
    x, y = music_windows(tok, seqs, block=256)    # every token scored once, for a validation loss

A sequence: [style, +/-soprano, +/-alto, +/-tenor, +/-bass, +/-fiddle, <start>, events..., <end>].
Events, in time order: `wait:N` moves time on by N sixteenths; at each time the notes sound in
instrument then pitch order, each as `instrument:pitch` followed by `dur:N`. `musenet_form`
writes MuseNet's own note-on/note-off form for comparison, `musenet_decode` reads it back.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..batches import step_generator
from .music import INSTRUMENTS, MAX_DUR, STYLES

PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def pitch_name(midi: int) -> str:
    """MIDI pitch -> scientific name, e.g. 60 -> 'C4'."""
    return f"{PITCH_NAMES[midi % 12]}{midi // 12 - 1}"


class MusicTokenizer:
    """The vocabulary of the encoding and the two directions, notes <-> token ids.

    Ids: <start>, <end>, one per style, +inst / -inst per instrument, one per
    (instrument, pitch) with pitch in [low, high], dur:1..max_dur, wait:1..max_wait.
    """

    def __init__(self, styles=STYLES, instruments=INSTRUMENTS, low: int = 36, high: int = 96,
                 max_dur: int = MAX_DUR, max_wait: int = 32):
        self.styles, self.instruments = tuple(styles), tuple(instruments)
        self.low, self.high, self.max_dur, self.max_wait = low, high, max_dur, max_wait
        self.n_pitch = high - low + 1
        self.vocab = (["<start>", "<end>"] + [f"style:{s}" for s in self.styles]
                      + [f"{sign}{i}" for i in self.instruments for sign in "+-"]
                      + [f"{i}:{pitch_name(p)}" for i in self.instruments for p in range(low, high + 1)]
                      + [f"dur:{d}" for d in range(1, max_dur + 1)]
                      + [f"wait:{w}" for w in range(1, max_wait + 1)])
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.start, self.end = 0, 1
        self.style0 = 2
        self.flag0 = self.style0 + len(self.styles)
        self.note0 = self.flag0 + 2 * len(self.instruments)
        self.dur0 = self.note0 + len(self.instruments) * self.n_pitch     # id of dur:1
        self.wait0 = self.dur0 + max_dur                                  # id of wait:1
        self.prefix_len = 2 + len(self.instruments)                       # style, flags, <start>

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def names(self, ids) -> list[str]:
        """Token ids -> their names."""
        return [self.vocab[int(i)] for i in ids]

    def ids(self, names: list[str]) -> list[int]:
        """Token names -> ids; an unknown name is an error that says what exists."""
        for n in names:
            if n not in self.index:
                raise KeyError(f"unknown token {n!r}; tokens look like 'style:bach', '+soprano', "
                               f"'soprano:C4', 'dur:4', 'wait:2' (see .vocab)")
        return [self.index[n] for n in names]

    def prefix(self, style: str, instruments: list[str]) -> list[int]:
        """The conditioning: [style, one flag per instrument, <start>]."""
        if style not in self.styles:
            raise ValueError(f"unknown style {style!r}; choose from {', '.join(self.styles)}")
        for i in instruments:
            if i not in self.instruments:
                raise ValueError(f"unknown instrument {i!r}; choose from {', '.join(self.instruments)}")
        flags = [f"{'+' if i in instruments else '-'}{i}" for i in self.instruments]
        return self.ids([f"style:{style}", *flags, "<start>"])

    def is_note(self, ids: torch.Tensor | np.ndarray):
        return (ids >= self.note0) & (ids < self.dur0)

    def is_dur(self, ids: torch.Tensor | np.ndarray):
        return (ids >= self.dur0) & (ids < self.wait0)

    def encode(self, notes: np.ndarray) -> np.ndarray:
        """Notes (n, 4) of (onset, duration, instrument, pitch), any order -> event token ids:
        for each onset, `wait:N` tokens up to it (N <= max_wait each), then each note there as
        instrument:pitch and dur:N. Vectorised; no <start>, <end> or prefix."""
        notes = np.asarray(notes, dtype=np.int64).reshape(-1, 4)
        notes = notes[np.lexsort((notes[:, 3], notes[:, 2], notes[:, 0]))]
        onset, dur, inst, pitch = notes.T
        bad = (pitch < self.low) | (pitch > self.high) | (dur < 1) | (dur > self.max_dur) | \
              (inst < 0) | (inst >= len(self.instruments)) | (onset < 0)
        if bad.any():
            raise ValueError(f"note {notes[bad][0].tolist()} is outside the encoding: pitch in "
                             f"[{self.low}, {self.high}], duration in [1, {self.max_dur}], instrument "
                             f"in [0, {len(self.instruments)})")
        gap = np.diff(onset, prepend=0)                                   # (n,) steps since previous onset
        waits = -(-gap // self.max_wait)                                  # (n,) wait tokens before each note
        count = waits + 2
        first = np.cumsum(count) - count                                  # (n,) where each note's tokens start
        out = np.empty(int(count.sum()), dtype=np.int64)
        owner = np.repeat(np.arange(len(notes)), waits)                   # (W,) the note each wait precedes
        k = np.arange(len(owner)) - np.repeat(np.cumsum(waits) - waits, waits)   # (W,) 0.. within the run
        last = k == waits[owner] - 1
        value = np.where(last, gap[owner] - self.max_wait * (waits[owner] - 1), self.max_wait)
        out[first[owner] + k] = self.wait0 + value - 1
        out[first + waits] = self.note0 + inst * self.n_pitch + pitch - self.low
        out[first + waits + 1] = self.dur0 + dur - 1
        return out

    def decode(self, ids) -> tuple[np.ndarray, dict]:
        """Token ids (any sequence, maybe malformed) -> notes (n, 4) and counts. Reads up to the
        first <end>; ignores the prefix and anything out of place. A note without its duration
        is closed at the next wait (1 step if none follows): `stats['hanging']` counts them."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        stop = np.flatnonzero(ids == self.end)
        ids = ids[: stop[0]] if len(stop) else ids
        is_wait = (ids >= self.wait0) & (ids < self.wait0 + self.max_wait)
        step = np.where(is_wait, ids - self.wait0 + 1, 0)
        time = np.cumsum(step) - step                                     # (T,) time at each token
        at = np.flatnonzero(self.is_note(ids))                           # (n,) note positions
        nxt = np.append(ids, -1)[at + 1]
        has_dur = self.is_dur(nxt)
        wait_pos = np.flatnonzero(is_wait)
        closing = np.ones(len(at), dtype=np.int64)                       # 1 step if no wait follows
        if len(wait_pos):
            after = np.searchsorted(wait_pos, at)                        # the first wait after each note
            found = after < len(wait_pos)
            closing[found] = step[wait_pos[after[found]]]
        dur = np.where(has_dur, nxt - self.dur0 + 1, closing)
        rel = ids[at] - self.note0
        notes = np.stack([time[at], dur, rel // self.n_pitch, rel % self.n_pitch + self.low], 1)
        stats = {"notes": len(at), "with_duration": int(has_dur.sum()), "hanging": int((~has_dur).sum())}
        return notes.reshape(-1, 4).astype(np.int64), stats


def pitch_number(name: str) -> int:
    """Scientific name -> MIDI pitch, e.g. 'C4' -> 60, 'D#-1' -> 3 (the inverse of `pitch_name`)."""
    letters = name.rstrip("-0123456789")
    if letters not in PITCH_NAMES or name[len(letters):] in ("", "-"):
        raise ValueError(f"not a pitch name: {name!r} (names look like 'C4', 'F#3', 'A-1')")
    return PITCH_NAMES.index(letters) + 12 * (int(name[len(letters):]) + 1)


def musenet_decode(tokens: list[str], instruments=INSTRUMENTS) -> tuple[np.ndarray, int]:
    """MuseNet's note-on/note-off form (as `musenet_form` writes it) -> (notes (n, 4), hanging).
    A clock moves only on `wait:N`; `inst:vV:pitch` with V > 0 starts a note, with V = 0 ends
    the earliest sounding note of that instrument and pitch (an unmatched note-off is ignored).
    A note never ended is 'hanging': it is closed at the last event's time (at least 1 step)
    and counted, which is what a model that forgets its note-offs leaves behind."""
    now, rows, sounding = 0, [], {}
    for t in tokens:
        if t.startswith("wait:"):
            now += int(t[5:])
            continue
        inst, vol, pitch = t.split(":")
        key = (instruments.index(inst), pitch_number(pitch))
        if int(vol[1:]) > 0:
            sounding.setdefault(key, []).append(now)
        elif sounding.get(key):
            start = sounding[key].pop(0)
            rows.append((start, now - start, *key))
    hanging = [(start, max(1, now - start), *key) for key, starts in sounding.items() for start in starts]
    notes = np.array(rows + hanging, dtype=np.int64).reshape(-1, 4)
    return notes[np.lexsort((notes[:, 3], notes[:, 2], notes[:, 1], notes[:, 0]))], len(hanging)


def musenet_form(notes: np.ndarray, instruments=INSTRUMENTS, velocity: int = 80) -> list[str]:
    """Notes -> MuseNet's own form, for comparison: note-on `instrument:v80:pitch`, note-off
    `instrument:v0:pitch`, and `wait:N` between event times. Shown, not trained on."""
    events = []
    for onset, dur, inst, pitch in np.asarray(notes).tolist():
        events.append((onset + dur, 0, inst, pitch))                        # offs sort before ons
        events.append((onset, 1, inst, pitch))
    out, now = [], 0
    for t, on, inst, pitch in sorted(events):
        if t > now:
            out.append(f"wait:{t - now}")
            now = t
        out.append(f"{instruments[inst]}:v{velocity if on else 0}:{pitch_name(pitch)}")
    return out


def music_batches(tok: MusicTokenizer, seqs: list[np.ndarray], shifts: torch.Tensor, block: int,
                  batch: int, seed: int = 0) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """A `batch_fn` for `train` from whole sequences (prefix, events, <end>) and each one's
    allowed transpositions `shifts` (N, 2) = (lo, hi) semitones: each row the prefix of a random
    sequence, then a window of its events starting at a note or a wait, transposed by a random
    k in [lo, hi]; targets are the next tokens, the prefix and anything after <end> ignored
    (-1). Inputs and targets (batch, block). Vectorised per batch."""
    P = tok.prefix_len
    W = block + 1 - P                                                 # event tokens per row, +1 target
    L = max(len(s) for s in seqs) - P + W
    events = torch.full((len(seqs), L), tok.end, dtype=torch.long)      # (N, L) padded with <end>
    valid = torch.zeros(len(seqs), L, dtype=torch.bool)                 # real tokens (not padding)
    for i, s in enumerate(seqs):
        events[i, : len(s) - P] = torch.from_numpy(s[P:])
        valid[i, : len(s) - P] = True
    prefixes = torch.tensor(np.stack([s[:P] for s in seqs]))             # (N, P)
    starts = (valid & ~tok.is_dur(events) & (events != tok.end)).nonzero()   # (S, 2) sequence, position
    offsets = torch.arange(W)

    def batch_fn(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = step_generator(seed, step)
        pick = starts[torch.randint(len(starts), (batch,), generator=g)]  # (B, 2)
        row, pos = pick[:, 0], pick[:, 1]
        win = events[row[:, None], pos[:, None] + offsets]               # (B, W)
        real = valid[row[:, None], pos[:, None] + offsets]
        lo, hi = shifts[row, 0], shifts[row, 1]
        k = lo + (torch.rand(batch, generator=g) * (hi - lo + 1)).long().clamp(max=hi - lo)
        win = torch.where(tok.is_note(win), win + k[:, None], win)       # stays in the instrument
        seq = torch.cat([prefixes[row], win], 1)                          # (B, block + 1)
        scored = torch.cat([torch.zeros(batch, P, dtype=torch.bool), real], 1)   # events and <end>
        targets = torch.where(scored, seq, torch.full_like(seq, -1))
        return seq[:, :-1], targets[:, 1:]
    return batch_fn


def music_windows(tok: MusicTokenizer, seqs: list[np.ndarray], block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sequence (prefix, events, <end>) cut into windows of `block` tokens, each with the
    sequence's prefix, overlapping by a token or two so that every event token and <end> is a
    target exactly once and no window starts on a duration: inputs and targets (M, block),
    -1 = ignored."""
    P = tok.prefix_len
    W = block + 1 - P
    xs, ys = [], []
    for s in seqs:
        pre, ev = s[:P], s[P:]
        a, done = 0, 0                                                  # done: events scored so far
        while done < len(ev):
            chunk = ev[a: a + W]
            pad = np.full(W - len(chunk), -1)
            target = chunk.copy()
            target[: done - a] = -1                                     # scored by an earlier window
            xs.append(np.concatenate([pre, chunk, pad])[:-1])
            ys.append(np.concatenate([np.full(P, -1), target, pad])[1:])
            done = a + len(chunk)
            a = done - 2 if tok.is_dur(ev[done - 1]) else done - 1      # never start on a duration
    x = torch.tensor(np.stack(xs))
    return torch.where(x < 0, tok.end, x), torch.tensor(np.stack(ys))

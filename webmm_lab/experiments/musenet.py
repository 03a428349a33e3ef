"""MuseNet in miniature (notebook 04): scores as sequences of tokens, a style and the
instruments first, then notes with their durations and waits; the course's GPT learns them.

    setup = MuseSetup()
    data = MuseData.build(setup)                   # tokenizer, token streams, transposition ranges
    model = build_musenet(setup, data)
    history = train_musenet(model, data, setup)    # the course's loop
    data.val_loss(model), data.bigram_loss()
    seqs = compose(model, data.tok, "bach", ["soprano", "alto", "tenor", "bass"], n=4)
    notes, stats = data.tok.decode(seqs[0])        # (n, 4) notes; stats["hanging"] = notes left open

A sequence: [style, +/-soprano, +/-alto, +/-tenor, +/-bass, +/-fiddle, <start>, events..., <end>].
The five flags say which instruments play (a fixed-length form of MuseNet's instrument list).
Events, in time order: `wait:N` moves time on by N sixteenths; at each time the notes sound
in instrument then pitch order, each as `instrument:pitch` followed by `dur:N`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.music import INSTRUMENTS, MAX_DUR, STYLES, MusicSet, Piece, load_music
from ..device import evaluating, seed_everything
from ..models.gpt import GPT, GPTConfig
from ..train import History, step_generator, train
from .gpt import bigram_loss, lm_loss, unigram_loss

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


@dataclass
class MuseSetup:
    """Everything that defines a MuseNet run (notebook 04's profiles fill it in)."""
    block: int = 256               # context, prefix included
    layers: int = 4
    heads: int = 4
    width: int = 128
    batch: int = 32
    steps: int = 1200
    lr: float = 2e-3
    dropout: float = 0.1
    transpose: int = 5             # random transposition by up to this many semitones each way
    max_pieces: int | None = None  # per split, for the smoke profile
    seed: int = 0                  # model initialisation and batch order (data fixed)


@dataclass
class MuseData:
    """The splits, the tokenizer, and every piece as (prefix, event tokens) with the
    transpositions that keep it inside each instrument's range in the training set."""
    setup: MuseSetup
    tok: MusicTokenizer
    train_set: MusicSet
    val_set: MusicSet
    test_set: MusicSet
    ranges: dict[str, tuple[int, int]]             # instrument -> (lowest, highest) training pitch

    @classmethod
    def build(cls, setup: MuseSetup) -> "MuseData":
        sets = [load_music(s) for s in ("train", "val", "test")]
        if setup.max_pieces:
            sets = [MusicSet(s.pieces[: setup.max_pieces], s.split) for s in sets]
        notes = np.concatenate([p.notes for p in sets[0].pieces])
        ranges = {name: (int(notes[notes[:, 2] == i, 3].min()), int(notes[notes[:, 2] == i, 3].max()))
                  for i, name in enumerate(INSTRUMENTS) if (notes[:, 2] == i).any()}
        return cls(setup, MusicTokenizer(), *sets, ranges)

    def sequence(self, piece: Piece, style: str | None = None) -> np.ndarray:
        """A whole piece as tokens: prefix (its style unless `style` is given), events, <end>."""
        pre = self.tok.prefix(style or piece.style, piece.instruments)
        return np.concatenate([pre, self.tok.encode(piece.notes), [self.tok.end]])

    def shifts(self, piece: Piece) -> tuple[int, int]:
        """The transpositions (lo, hi) in semitones that keep every note of `piece` inside its
        instrument's training range, limited to +-setup.transpose."""
        lo, hi = -self.setup.transpose, self.setup.transpose
        for i in set(piece.notes[:, 2].tolist()):
            p = piece.notes[piece.notes[:, 2] == i, 3]
            rlo, rhi = self.ranges.get(INSTRUMENTS[i], (int(p.min()), int(p.max())))
            lo, hi = max(lo, rlo - int(p.min())), min(hi, rhi - int(p.max()))
        return min(lo, 0), max(hi, 0)

    def batches(self, batch: int | None = None, seed: int | None = None):
        """A `batch_fn` for `train`: each row the prefix of a random training piece, then a
        window of its events starting at a note or a wait, randomly transposed; targets are the
        next tokens, the prefix and anything after <end> ignored (-1). Vectorised per batch."""
        batch = batch or self.setup.batch
        seed = self.setup.seed if seed is None else seed
        P = self.tok.prefix_len
        W = self.setup.block + 1 - P                                      # event tokens per row, +1 target
        seqs = [self.sequence(p) for p in self.train_set.pieces]
        L = max(len(s) for s in seqs) - P + W
        events = torch.full((len(seqs), L), self.tok.end, dtype=torch.long)   # (N, L) padded with <end>
        valid = torch.zeros(len(seqs), L, dtype=torch.bool)                   # real tokens (not padding)
        for i, s in enumerate(seqs):
            events[i, : len(s) - P] = torch.from_numpy(s[P:])
            valid[i, : len(s) - P] = True
        prefixes = torch.tensor(np.stack([s[:P] for s in seqs]))               # (N, P)
        shifts = torch.tensor([self.shifts(p) for p in self.train_set.pieces]) # (N, 2)
        is_dur = self.tok.is_dur(events)
        starts = (valid & ~is_dur & (events != self.tok.end)).nonzero()      # (S, 2) piece, position
        offsets = torch.arange(W)

        def batch_fn(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            g = step_generator(seed, step)
            pick = starts[torch.randint(len(starts), (batch,), generator=g)]  # (B, 2)
            piece, pos = pick[:, 0], pick[:, 1]
            win = events[piece[:, None], pos[:, None] + offsets]             # (B, W)
            real = valid[piece[:, None], pos[:, None] + offsets]
            lo, hi = shifts[piece, 0], shifts[piece, 1]
            k = lo + (torch.rand(batch, generator=g) * (hi - lo + 1)).long().clamp(max=hi - lo)
            win = torch.where(self.tok.is_note(win), win + k[:, None], win)   # stays in the instrument
            seq = torch.cat([prefixes[piece], win], 1)                        # (B, block + 1)
            scored = torch.cat([torch.zeros(batch, P, dtype=torch.bool), real], 1)   # events and <end>
            targets = torch.where(scored, seq, torch.full_like(seq, -1))
            return seq[:, :-1], targets[:, 1:]
        return batch_fn

    def windows(self, pieces: list[Piece], style: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every piece cut into windows, each with the piece's prefix (with `style` instead of the
        piece's own, if given), overlapping by a token or two so that every event token and
        <end> is a target exactly once: inputs and targets (M, block), -1 = ignored."""
        P = self.tok.prefix_len
        W = self.setup.block + 1 - P
        xs, ys = [], []
        for p in pieces:
            s = self.sequence(p, style)
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
                a = done - 2 if self.tok.is_dur(ev[done - 1]) else done - 1    # never start on a duration
        x = torch.tensor(np.stack(xs))
        return torch.where(x < 0, self.tok.end, x), torch.tensor(np.stack(ys))

    def loss_sum(self, model: GPT, pieces: list[Piece], style: str | None = None,
                 batch: int = 64) -> tuple[float, int]:
        """Summed cross-entropy (nats) over every event token of `pieces` and their <end>s, and
        how many tokens that is."""
        x, y = self.windows(pieces, style)
        total = 0.0
        with evaluating(model) as dev:
            for i in range(0, len(x), batch):
                logits = model(x[i: i + batch].to(dev))[0]
                total += torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(),
                                                           y[i: i + batch].to(dev).flatten(),
                                                           ignore_index=-1, reduction="sum").item()
        return total, int((y >= 0).sum())

    def val_loss(self, model: GPT) -> float:
        """Mean cross-entropy (nats per token) on the validation pieces."""
        total, count = self.loss_sum(model, self.val_set.pieces)
        return total / count

    def wrong_style_loss(self, model: GPT) -> float:
        """Validation loss with every piece given each of the other styles' tokens instead of its
        own (the mean over all such pairs)."""
        total, count = 0.0, 0
        for style in self.tok.styles:
            others = [p for p in self.val_set.pieces if p.style != style]
            if others:
                t, c = self.loss_sum(model, others, style)
                total, count = total + t, count + c
        return total / count

    def streams(self, pieces: list[Piece]) -> torch.Tensor:
        """Pieces as one stream [<start>, events, <end>, <start>, ...] (for n-gram baselines)."""
        P = self.tok.prefix_len
        return torch.tensor(np.concatenate([self.sequence(p)[P - 1:] for p in pieces]))

    def bigram_loss(self) -> float:
        """A bigram model (add-one) counted on the training pieces, on the validation pieces."""
        return bigram_loss(self.streams(self.train_set.pieces), self.streams(self.val_set.pieces),
                           self.tok.vocab_size)

    def unigram_loss(self) -> float:
        """A unigram model (add-one) of the training tokens, on the validation tokens."""
        train_ids, val_ids = self.streams(self.train_set.pieces), self.streams(self.val_set.pieces)
        return unigram_loss(train_ids[1:], val_ids[1:], self.tok.vocab_size)


def build_musenet(setup: MuseSetup, data: MuseData) -> GPT:
    """The course's GPT sized by the setup (initialised from setup.seed)."""
    seed_everything(setup.seed)
    return GPT(GPTConfig(data.tok.vocab_size, setup.block, n_layer=setup.layers, n_head=setup.heads,
                         n_embd=setup.width, dropout=setup.dropout))


def train_musenet(model: GPT, data: MuseData, setup: MuseSetup, *, run: str | None = None,
                  evals: int = 4, device=None, progress: bool = True,
                  stop_after: int | None = None) -> History:
    """Train on the course's loop, the validation loss measured `evals` times."""
    return train(model, lm_loss, data.batches(), steps=setup.steps, lr=setup.lr, run=run,
                 eval_fn=lambda m: {"val_loss": data.val_loss(m)},
                 eval_every=max(1, setup.steps // evals), seed=setup.seed, device=device,
                 progress=progress, stop_after=stop_after, setup=setup)


def compose(model: GPT, tok: MusicTokenizer, style: str, instruments: list[str], n: int = 4,
            length: int | None = None, temperature: float = 1.0, top_p: float | None = 0.95,
            seed: int = 0) -> torch.Tensor:
    """Sample `n` pieces for a style and instrumentation in one batched, KV-cached call:
    token ids (n, prefix + length), each to be read up to its first <end>. Conditioning tokens
    are never sampled after the prefix."""
    pre = torch.tensor(tok.prefix(style, instruments)).repeat(n, 1)            # (n, P)
    length = length or model.cfg.block_size - pre.shape[1]
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    return model.generate(pre.to(gen.device), length, temperature=temperature, top_p=top_p,
                          stop_token=tok.end, suppress=[tok.start, *range(tok.style0, tok.note0)],
                          generator=gen).cpu()


def grammar(tok: MusicTokenizer, seqs: torch.Tensor) -> dict:
    """How well sampled sequences keep the grammar: notes, those followed by a duration, and
    the fraction followed by one."""
    total = {"notes": 0, "with_duration": 0, "hanging": 0}
    for s in seqs:
        for k, v in tok.decode(s)[1].items():
            total[k] += v
    total["fraction"] = total["with_duration"] / max(1, total["notes"])
    return total


__all__ = ["MusicTokenizer", "musenet_form", "musenet_decode", "pitch_number", "MuseSetup", "MuseData", "build_musenet",
           "train_musenet", "compose", "grammar", "pitch_name"]

"""Checks for lab 04: the MuseNet-style encoder (notes -> token names with durations and
waits), its decoder (token names -> notes, closing every note left open, stopping at <end>),
and a decoder of MuseNet's own note-on/note-off form that counts the notes left hanging."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..data.music import sort_notes
from ..experiments.musenet import MusicTokenizer, musenet_decode, musenet_form
from . import CheckResult, _report, check_function

TOK = MusicTokenizer()


def _notes(gen: torch.Generator) -> np.ndarray:
    n = int(torch.randint(1, 40, (), generator=gen))
    spread = int(torch.randint(1, 300, (), generator=gen))          # some gaps longer than a wait
    cols = [torch.randint(spread, (n,), generator=gen), torch.randint(1, TOK.max_dur + 1, (n,), generator=gen),
            torch.randint(len(TOK.instruments), (n,), generator=gen),
            torch.randint(TOK.low, TOK.high + 1, (n,), generator=gen)]
    notes = torch.stack(cols, 1).numpy()
    return notes[torch.randperm(n, generator=gen).numpy()]            # in no particular order


def reference_encode(notes: np.ndarray) -> list[str]:
    return TOK.names(TOK.encode(notes))


def reference_decode(tokens: list[str]) -> torch.Tensor:
    return torch.as_tensor(TOK.decode(TOK.ids(tokens))[0], dtype=torch.long)


def check_encode(fn: Callable[[np.ndarray], list[str]], **kw) -> CheckResult:
    """Lab 04: fn(notes (n, 4) of onset, duration, instrument, pitch, any order) -> token names,
    e.g. ['soprano:G4', 'dur:4', 'alto:D#4', 'dur:4', 'wait:4', ...]."""
    return check_function(lambda notes: list(fn(notes.copy())), reference_encode, lambda g: (_notes(g),),
                          name="encode", trials=30,
                          hint="sort by time, then instrument, then pitch; time moves on only by "
                          "wait tokens, and one wait token can carry at most max_wait steps", **kw)


def _tokens(gen: torch.Generator) -> tuple[list[str]]:
    ids = TOK.encode(_notes(gen))
    if torch.rand((), generator=gen) < 0.7:                          # damage it: the model's mistakes
        ids = ids.copy()
        k = int(torch.randint(1, 6, (), generator=gen))
        where = torch.randint(len(ids), (k,), generator=gen).numpy()
        ids[where] = torch.randint(TOK.vocab_size, (k,), generator=gen).numpy()
    if torch.rand((), generator=gen) < 0.5:                          # a sampled piece ends, then goes on
        cut = int(torch.randint(0, len(ids) + 1, (), generator=gen))
        ids = np.concatenate([ids[:cut], [TOK.end], TOK.encode(_notes(gen))])
    return (TOK.names(ids),)


def check_decode(fn: Callable[[list[str]], np.ndarray], **kw) -> CheckResult:
    """Lab 04: fn(token names) -> notes (n, 4) in the order their note tokens appear; stops at
    <end>; ignores tokens out of place; a note without a duration lasts until the next wait
    (1 step if none follows)."""
    wrapped = lambda tokens: torch.as_tensor(np.asarray(fn(list(tokens))).reshape(-1, 4), dtype=torch.long)
    return check_function(wrapped, reference_decode, _tokens, name="decode", trials=60,
                          hint="keep a clock that only wait tokens move; a note token is complete "
                          "when the next token is a duration, and otherwise must still be closed",
                          **kw)


def check_round_trip(encode: Callable, decode: Callable, pieces, verbose: bool = True) -> CheckResult:
    """Lab 04: decode(encode(notes)) gives back every note of real pieces."""
    for p in pieces:
        try:
            back = np.asarray(decode(list(encode(p.notes.copy())))).reshape(-1, 4)
        except NotImplementedError as e:
            return _report(CheckResult("round trip", False, f"not implemented yet ({e})"), verbose)
        if back.shape != p.notes.shape or not np.array_equal(sort_notes(back), p.notes):
            return _report(CheckResult("round trip", False, f"{p.name}: {len(p.notes)} notes in, "
                                       f"{len(back)} out, or different ones"), verbose)
    return _report(CheckResult("round trip", True, f"exact on {len(pieces)} real pieces"), verbose)


def _unclashed(notes: np.ndarray) -> np.ndarray:
    """Drop notes that overlap an earlier note of the same instrument and pitch: note-offs
    cannot tell such notes apart, so no decoder could give them back."""
    keep, free = [], {}
    for row in notes[np.lexsort((notes[:, 3], notes[:, 0]))].tolist():
        key = (row[2], row[3])
        if free.get(key, 0) <= row[0]:
            keep.append(row)
            free[key] = row[0] + row[1]
    return np.array(keep, dtype=np.int64).reshape(-1, 4)


def _musenet_tokens(gen: torch.Generator) -> tuple[list[str]]:
    tokens = musenet_form(_unclashed(_notes(gen)))
    if torch.rand((), generator=gen) < 0.6:                          # a model that forgets note-offs
        offs = [k for k, t in enumerate(tokens) if ":v0:" in t]
        drop = set(torch.randperm(len(offs), generator=gen)[:int(torch.randint(1, 4, (), generator=gen))].tolist())
        tokens = [t for k, t in enumerate(tokens) if k not in {offs[d] for d in drop}]
    return (tokens,)


def reference_musenet_decode(tokens: list[str]) -> tuple[torch.Tensor, int]:
    notes, hanging = musenet_decode(tokens)
    return torch.as_tensor(notes, dtype=torch.long), hanging


def check_musenet_decode(fn: Callable[[list[str]], tuple[np.ndarray, int]], **kw) -> CheckResult:
    """Lab 04: fn(MuseNet-form token names) -> (notes (n, 4) sorted by onset, duration,
    instrument, pitch; the number of hanging notes). A note-off ends the earliest sounding note
    of its instrument and pitch; a note never ended is closed at the last event's time (at
    least 1 step) and counted as hanging."""
    def wrapped(tokens):
        notes, hanging = fn(list(tokens))
        notes = np.asarray(notes).reshape(-1, 4)
        notes = notes[np.lexsort((notes[:, 3], notes[:, 2], notes[:, 1], notes[:, 0]))]
        return torch.as_tensor(notes, dtype=torch.long), int(hanging)
    return check_function(wrapped, reference_musenet_decode, _musenet_tokens, name="musenet_decode",
                          trials=40, hint="time moves only on waits; match each v0 with the note of "
                          "the same instrument and pitch that started first; what is still sounding "
                          "when the tokens run out has hung on", **kw)

"""Checks for lab 04: the MuseNet-style encoder (notes -> token names with durations and
waits), its decoder (token names -> notes, closing every note left open, stopping at <end>),
and a decoder of MuseNet's own note-on/note-off form that counts the notes left hanging.
Each check first runs forced cases (gaps of exactly 32 and 64 steps, a sample ending on a
note, a pitch repeated after a dropped note-off, the one-step floor of a hanging note), then
random inputs from a fixed seed."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..data.music import sort_notes
from ..data.music_tokens import MusicTokenizer, musenet_decode, musenet_form
from . import Case, CheckResult, _report, check_with_cases

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


WAIT_ZERO = ("an extra wait:0 after a gap that is a multiple of 32 steps: such a gap is whole wait:32 "
             "tokens and nothing more (every wait token moves time by 1 to 32 steps)")
ENCODE_CASES = [
    Case("notes at steps 0, 32, 96, 96 and 129, out of order: gaps of exactly 32, 64 and 33",
         (np.array([[96, 8, 0, 60], [0, 4, 0, 67], [129, 2, 2, 55], [32, 4, 1, 62], [96, 8, 3, 48]]),),
         why="A gap of 32 is one wait:32, a gap of 64 two, a gap of 33 wait:32 then wait:1",
         mistakes=[(lambda got: "wait:0" in got, WAIT_ZERO)]),
    Case("a piece whose first note starts at step 64",
         (np.array([[70, 1, 4, 79], [64, 2, 4, 76]]),),
         why="The clock starts at 0, so the first note waits too: wait:32, wait:32",
         mistakes=[(lambda got: "wait:0" in got, WAIT_ZERO)]),
]


def check_encode(fn: Callable[[np.ndarray], list[str]], **kw) -> CheckResult:
    """Lab 04: fn(notes (n, 4) of onset, duration, instrument, pitch, any order) -> token names,
    e.g. ['soprano:G4', 'dur:4', 'alto:D#4', 'dur:4', 'wait:4', ...]."""
    return check_with_cases(lambda notes: list(fn(notes.copy())), reference_encode, ENCODE_CASES,
                            lambda g: (_notes(g),), name="encode", trials=30,
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


def _has_row(notes: torch.Tensor, row: list[int]) -> bool:
    return row in notes.tolist()


DECODE_CASES = [
    Case("a sample that ends on a note token: soprano:C4 dur:4 wait:4 alto:E4",
         (["soprano:C4", "dur:4", "wait:4", "alto:E4"],),
         why="A note with no duration after it is closed: it lasts until the next wait, or 1 step if none follows",
         mistakes=[(lambda got: (got[:, 1] == 0).any(), "a note at the very end without a duration lasts 1 step, "
                    "not 0"),
                   (lambda got: len(got) < 2, "a note without its duration was dropped: close it instead")]),
    Case("a note without its duration before another note: tenor:G3 bass:C3 dur:2 wait:6 tenor:A3 dur:1",
         (["tenor:G3", "bass:C3", "dur:2", "wait:6", "tenor:A3", "dur:1"],),
         why="The tenor:G3 token has no duration of its own, so it lasts until the next wait: 6 steps",
         mistakes=[(lambda got: _has_row(got, [0, 2, 2, 55]), "a duration belongs only to the note right before "
                    "it: tenor:G3 took bass:C3's dur:2")]),
]


def check_decode(fn: Callable[[list[str]], np.ndarray], **kw) -> CheckResult:
    """Lab 04: fn(token names) -> notes (n, 4) in the order their note tokens appear; stops at
    <end>; ignores tokens out of place; a note without a duration lasts until the next wait
    (1 step if none follows)."""
    wrapped = lambda tokens: torch.as_tensor(np.asarray(fn(list(tokens))).reshape(-1, 4), dtype=torch.long)
    return check_with_cases(wrapped, reference_decode, DECODE_CASES, _tokens, name="decode", trials=60,
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


MUSENET_CASES = [
    Case("C4 struck twice, the first note-off dropped: soprano:v80:C4 wait:4 soprano:v80:C4 wait:4 "
         "soprano:v0:C4 alto:v80:E4 wait:4 alto:v0:E4",
         (["soprano:v80:C4", "wait:4", "soprano:v80:C4", "wait:4", "soprano:v0:C4", "alto:v80:E4", "wait:4",
           "alto:v0:E4"],),
         why="The note-off ends the C4 struck first (0 to 8); the second one hangs until the last event (4 to 12)",
         mistakes=[(lambda got: _has_row(got[0], [4, 4, 0, 60]), "a note-off closed the latest sounding note of "
                    "that instrument and pitch, not the earliest"),
                   (lambda got: _has_row(got[0], [4, 1, 0, 60]), "a hanging note was closed after 1 step: it "
                    "lasts until the time of the last event")]),
    Case("a sample that ends on a note-on: bass:v80:C3 wait:6 bass:v0:C3 tenor:v80:G3",
         (["bass:v80:C3", "wait:6", "bass:v0:C3", "tenor:v80:G3"],),
         why="The tenor:G3 note-on is the last event: the note hangs, and a hanging note lasts at least 1 step",
         mistakes=[(lambda got: (got[0][:, 1] == 0).any(), "a note that starts at the last event was closed "
                    "with 0 steps: a hanging note lasts at least 1 step"),
                   (lambda got: got[1] == 0, "the note still sounding when the tokens run out was not counted "
                    "as hanging")]),
    Case("the same pitch on two instruments: soprano:v80:C4 alto:v80:C4 wait:2 alto:v0:C4 wait:2 soprano:v0:C4",
         (["soprano:v80:C4", "alto:v80:C4", "wait:2", "alto:v0:C4", "wait:2", "soprano:v0:C4"],),
         mistakes=[(lambda got: _has_row(got[0], [0, 2, 0, 60]), "a note-off ended a note of another instrument: "
                    "match the instrument and the pitch")]),
    Case("note-offs with nothing to end, and a volume other than 80: alto:v0:D4 alto:v64:D4 wait:2 alto:v0:D4 "
         "alto:v0:D4", (["alto:v0:D4", "alto:v64:D4", "wait:2", "alto:v0:D4", "alto:v0:D4"],),
         why="Any volume above 0 starts a note; a note-off with nothing sounding to end is ignored"),
]


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
    return check_with_cases(wrapped, reference_musenet_decode, MUSENET_CASES, _musenet_tokens,
                            name="musenet_decode", trials=40, hint="time moves only on waits; match each "
                            "v0 with the note of the same instrument and pitch that started first; what is "
                            "still sounding when the tokens run out has hung on", **kw)

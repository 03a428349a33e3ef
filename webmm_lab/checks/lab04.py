"""Checks for lab 04: the MuseNet-style encoder (notes -> token names with durations and
waits) and decoder (token names -> notes, closing every note left open)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..data.music import sort_notes
from ..experiments.musenet import MusicTokenizer
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
    return (TOK.names(ids),)


def check_decode(fn: Callable[[list[str]], np.ndarray], **kw) -> CheckResult:
    """Lab 04: fn(token names) -> notes (n, 4) in the order their note tokens appear; stops at
    <end>; ignores tokens out of place; a note without a duration lasts until the next wait
    (1 step if none follows)."""
    wrapped = lambda tokens: torch.as_tensor(np.asarray(fn(list(tokens))).reshape(-1, 4), dtype=torch.long)
    return check_function(wrapped, reference_decode, _tokens, name="decode", trials=40,
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

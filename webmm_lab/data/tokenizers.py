"""Tokenizers: characters, and byte-level BPE learned merge by merge (GPT-2's scheme).

    tok = CharTokenizer.from_text(corpus)         # one token per character seen in `corpus`
    bpe = BPETokenizer.train(corpus, vocab_size=512)
    ids = bpe.encode("Any text, even 한국어")      # list[int]; bpe.decode(ids) gives it back exactly

BPE starts from the 256 byte values (so every string can be encoded, nothing is ever dropped)
and repeatedly merges the most frequent adjacent pair into a new token. As in GPT-2, text is
first split into chunks (words with their leading space, numbers, punctuation, whitespace) and
merges never cross a chunk boundary. Merging is vectorised with numpy: one pass per merge.
"""
from __future__ import annotations

import re
from typing import Iterable

import numpy as np
import torch

# GPT-2's pre-tokenisation: contractions, letters, digits, other symbols (each with an optional
# leading space), whitespace. [^\W\d_] is Python's "letter"; the last branch catches any character
# the others miss, so the chunks always join back into the text.
CHUNK = re.compile(r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+|[\s\S]""")


class CharTokenizer:
    """One token per character of a fixed alphabet. Unknown characters are an error, never
    silently dropped."""

    def __init__(self, chars: Iterable[str]):
        self.chars = sorted(set(chars))
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, *texts: str) -> "CharTokenizer":
        """The alphabet of every character in `texts`."""
        return cls(set().union(*map(set, texts)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            unknown = sorted({c for c in text if c not in self.stoi})
            raise ValueError(f"characters not in this tokenizer's alphabet: {unknown!r:.200}; build "
                             "it from text that contains them, or use the byte-level BPETokenizer") from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def merge_pair(ids: np.ndarray, chunk: np.ndarray, pair: tuple[int, int], new_id: int,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Replace every non-overlapping occurrence (left to right) of `pair` inside one chunk by
    `new_id`. `ids` and `chunk` (the chunk number of every token) are 1-D arrays of equal length."""
    hit = (ids[:-1] == pair[0]) & (ids[1:] == pair[1]) & (chunk[:-1] == chunk[1:])
    pos = np.flatnonzero(hit)
    if len(pos) == 0:
        return ids, chunk
    if pair[0] == pair[1]:                  # "aaa": merge positions 0, 2, 4 ... of each run
        run_start = np.r_[True, np.diff(pos) != 1]
        first = np.maximum.accumulate(np.where(run_start, np.arange(len(pos)), 0))
        pos = pos[(np.arange(len(pos)) - first) % 2 == 0]
    ids = ids.copy()
    ids[pos] = new_id
    keep = np.ones(len(ids), dtype=bool)
    keep[pos + 1] = False
    return ids[keep], chunk[keep]


def _chunks(text: str) -> list[bytes]:
    """The UTF-8 bytes of each pre-tokenisation chunk of `text` (merges never cross chunks)."""
    try:
        return [c.encode("utf-8") for c in CHUNK.findall(text)]
    except UnicodeEncodeError as e:
        raise ValueError(f"text is not valid Unicode ({e.reason} at {e.start}): lone surrogates "
                         "cannot be written as UTF-8 bytes") from None


def _to_arrays(text: str) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of `text` and, for each byte, the number of its pre-tokenisation chunk."""
    chunks = _chunks(text)
    ids = np.frombuffer(b"".join(chunks), dtype=np.uint8).astype(np.int64)
    chunk = np.repeat(np.arange(len(chunks)), [len(c) for c in chunks])
    return ids, chunk


class BPETokenizer:
    """Byte-level byte-pair encoding: 256 byte tokens, then one token per learned merge."""

    def __init__(self, merges: list[tuple[int, int]]):
        self.merges = [tuple(m) for m in merges]
        self.vocab = [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self._rank = {m: r for r, m in enumerate(self.merges)}   # pair -> its merge's rank
        self._chunk_ids: dict[bytes, list[int]] = {}             # each chunk's ids, once computed

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @classmethod
    def train(cls, text: str, vocab_size: int, progress: bool = False) -> "BPETokenizer":
        """Learn `vocab_size - 256` merges from `text`, most frequent pair first."""
        if vocab_size < 256:
            raise ValueError(f"vocab_size must be >= 256 (the byte tokens), got {vocab_size}")
        ids, chunk = _to_arrays(text)
        merges = []
        steps = range(vocab_size - 256)
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc="BPE merges")
        for step in steps:
            same = chunk[:-1] == chunk[1:]
            if not same.any():
                break
            pairs = ids[:-1][same] * (vocab_size + 1) + ids[1:][same]
            values, counts = np.unique(pairs, return_counts=True)
            best = values[np.argmax(counts)]             # ties: the smallest pair, deterministic
            pair = (int(best // (vocab_size + 1)), int(best % (vocab_size + 1)))
            ids, chunk = merge_pair(ids, chunk, pair, 256 + step)
            merges.append(pair)
        return cls(merges)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`: its bytes with every learned merge applied, in the order learned.
        Short texts (captions) go chunk by chunk, each chunk's ids remembered: merges never
        cross chunks, so the result is the same, and a caption's words are encoded once."""
        if len(text) <= 512:
            return [i for piece in _chunks(text) for i in self._encode_chunk(piece)]
        return self._encode_arrays(text)

    def _encode_arrays(self, text: str) -> list[int]:
        """A long text's ids: every merge in the order learned, over the whole text at once."""
        ids, chunk = _to_arrays(text)
        for rank, pair in enumerate(self.merges):
            if len(ids) < 2:
                break
            ids, chunk = merge_pair(ids, chunk, pair, 256 + rank)
        return ids.tolist()

    def _encode_chunk(self, piece: bytes) -> list[int]:
        """One chunk's ids: merge the lowest-ranked pair present, all its occurrences left to
        right, until none is a merge (the same as applying every merge in order: a merge only
        makes pairs that hold its new id, which earlier merges do not)."""
        if piece in self._chunk_ids:
            return self._chunk_ids[piece]
        ids, none = list(piece), len(self.merges)
        while len(ids) > 1:
            r = min(self._rank.get(p, none) for p in zip(ids, ids[1:]))
            if r == none:
                break
            pair, out, i = self.merges[r], [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                    out.append(256 + r)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        self._chunk_ids[piece] = ids
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of token ids (a cut inside a multi-byte character shows as U+FFFD)."""
        try:
            data = b"".join(self.vocab[int(i)] for i in ids)
        except IndexError:
            bad = [int(i) for i in ids if not 0 <= int(i) < self.vocab_size]
            raise ValueError(f"token ids {bad[:10]} are outside this vocabulary of "
                             f"{self.vocab_size}") from None
        return data.decode("utf-8", errors="replace")

    def token_strings(self, ids: Iterable[int]) -> list[str]:
        """Each token as readable text (for showing how a string is split)."""
        return [self.vocab[int(i)].decode("utf-8", errors="replace") for i in ids]


def pad_batch(tokenizer, texts: list[str], end: str | None = None, max_len: int | None = None,
              cache: dict[str, list[int]] | None = None):
    """Token ids of `texts` padded with 0 to the longest (at most `max_len`), and each text's
    length: ((B, T) long, (B,) long). With `end`, that marker is appended to every text (CLIP
    reads its text feature there). A text longer than max_len is a clear error. `cache`, a dict
    kept between calls, remembers each text's ids (captions repeat; BPE encoding is slow)."""
    rows = []
    for t in texts:
        t += end or ""
        if cache is None:
            rows.append(tokenizer.encode(t))
        else:
            if t not in cache:
                cache[t] = tokenizer.encode(t)
            rows.append(cache[t])
    longest = max(len(r) for r in rows) if rows else 0
    if max_len is not None and longest > max_len:
        raise ValueError(f"a text of {longest} tokens exceeds max_len={max_len}: "
                         f"{texts[[len(r) for r in rows].index(longest)]!r:.80}")
    ids = np.zeros((len(rows), longest), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    return torch.from_numpy(ids), torch.tensor([len(r) for r in rows])

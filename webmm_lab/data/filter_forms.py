"""Forms of blocked words that nobody wrote for the filter: generated from Unicode's own data.

A keyword filter is easy to score on the forms its author thought of. Here the forms come from
outside the course: Unicode's table of confusable characters (UTS #39's confusables.txt, as
the `confusable-homoglyphs` package ships it), its full-width letters and its invisible format
characters, applied to blocklist words drawn at random from real English (the words of Python's
documentation), with many words and seeds. The innocent side is drawn the same way: real words
that contain a blocked word or differ from it by one letter, written in the same odd forms.

    test = keyword_test_set(n_words=40, seed=0)
    test.blocklist, test.blocked[:3], test.innocent[:3]       # captions, with the kind of each form
"""
from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

FORMAT_CHARS = ("\u200b", "\u200c", "\u200d", "\u2060", "\u00ad")   # zero-width space ... soft hyphen
TEMPLATES = ("a photo of {} on a table", "{} next to two red circles", "my drawing: {}", "{}!")
KINDS = ("confusable letter", "full width", "format character", "spaced", "case", "combined")


@lru_cache(maxsize=1)
def confusables() -> dict[str, list[str]]:
    """{ASCII letter: the single characters Unicode's confusables table lists for it}, from the
    copy of the table that `confusable-homoglyphs` ships."""
    try:
        import confusable_homoglyphs
    except ImportError:
        raise ImportError("the keyword filter needs Unicode's confusables table: pip install "
                          "confusable-homoglyphs (a dependency of webmm-lab)") from None
    table = json.loads((Path(confusable_homoglyphs.__file__).parent / "confusables.json").read_text("utf-8"))
    return {ch: [h["c"] for h in table.get(ch, []) if len(h["c"]) == 1 and h["c"] != ch]
            for ch in string.ascii_letters}


def full_width(word: str) -> str:
    """ASCII letters as their full-width forms (ｇｒｕｅ)."""
    return "".join(chr(ord(c) - 0x21 + 0xFF01) if "!" <= c <= "~" else c for c in word)


def forms(word: str, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Every confusable of every letter of `word` (one letter swapped per form), the word in
    full width, with a format character inside, spaced, dotted or hyphenated, in other cases,
    and a few forms combining them: [(form, kind)]."""
    table = confusables()
    out = [(word[:i] + h + word[i + 1:], "confusable letter")
           for i, c in enumerate(word) for h in table[c] + table[c.upper()]]
    out.append((full_width(word), "full width"))
    for f in FORMAT_CHARS:
        i = int(rng.integers(1, len(word)))
        out.append((word[:i] + f + word[i:], "format character"))
    out += [(sep.join(word), "spaced") for sep in (" ", ".", "-")]
    out += [(word.upper(), "case"), (word.title(), "case"),
            ("".join(c.upper() if rng.random() < 0.5 else c for c in word), "case")]
    for _ in range(4):
        i, j = (int(v) for v in rng.integers(0, len(word), 2))
        letters = list(word.upper() if rng.random() < 0.5 else word)
        if table[word[i]]:
            letters[i] = str(rng.choice(table[word[i]]))
        letters.insert(max(1, j), str(rng.choice(FORMAT_CHARS)))
        out.append(("".join(letters), "combined"))
    return out


@dataclass
class KeywordTestSet:
    """A random blocklist, captions carrying its words in generated forms (each with its kind),
    and innocent captions carrying near-miss words, plain and in the same forms."""
    blocklist: tuple[str, ...]
    blocked: list[tuple[str, str]]         # (caption, kind of form)
    innocent: list[tuple[str, str]]        # (caption, "plain" or a kind of form)


def lexicon(text: str, lengths: tuple[int, int] = (4, 9)) -> list[str]:
    """The distinct lower-case words of `text` with a length in [lengths[0], lengths[1]), sorted."""
    lo, hi = lengths
    return sorted({w for w in re.findall(r"\b[a-z]+\b", text) if lo <= len(w) < hi})


def near_misses(word: str, words: list[str], most: int = 4) -> list[str]:
    """Real words that are not `word` but look like it: ones that contain it (gruel, gruesome
    for grue) and ones of its length one letter away, at most `most`."""
    plural = {word + "s", word + "es"}                    # a plural of a blocked word is blocked too
    longer = [w for w in words if word in w and w != word and w not in plural]
    close = [w for w in words if len(w) == len(word) and w != word
             and sum(a != b for a, b in zip(w, word)) == 1]
    return (longer + close)[:most]


def keyword_test_set(n_words: int = 40, seed: int = 0, text: str | None = None) -> KeywordTestSet:
    """`n_words` blocklist words drawn at random from the lexicon of `text` (default: Python's
    documentation) among those with near misses, every generated form of each in a caption,
    and their near misses, plain and in generated forms."""
    if text is None:
        from . import load
        text = load("python-docs", split="train").text
    words = lexicon(text)
    rng = np.random.default_rng(seed)
    candidates = [w for w in words if 4 <= len(w) <= 6 and len(set(w)) >= 3 and near_misses(w, words, most=1)]
    if len(candidates) < n_words:
        raise ValueError(f"only {len(candidates)} words of the text have near misses; asked for {n_words}")
    blocklist = tuple(str(w) for w in rng.choice(candidates, n_words, replace=False))
    caption = lambda w: TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(w)
    blocked = [(caption(f), kind) for w in blocklist for f, kind in forms(w, rng)]
    innocent = []
    for w in blocklist:
        for miss in near_misses(w, words):
            if any(miss == b for b in blocklist):
                continue
            innocent.append((caption(miss), "plain"))
            innocent += [(caption(f), kind) for f, kind in forms(miss, rng)[::3]]
    return KeywordTestSet(blocklist, blocked, innocent)

"""Held-out captions for the keyword filter of notebook 08: forms of the blocklist words, and
innocent near-misses, that the mini web's generator (`data/web.py`) never produces.

The generator's blocked forms (case, plural, punctuation, spaced, split and dotted letters) and
the filter were written as a pair, so the filter catches every one of them. These cases were
written afterwards and on their own, from the ways people get words past real filters and the
ways real filters remove innocent text: look-alike letters from other scripts, full-width and
accented letters, invisible characters, Korean (with its particles), leetspeak, words run
together, and innocent words written in the same odd ways. The filter is scored on them; it
is not tuned to them, and the cases it fails stay in the list (notebook 08 shows them).

BLOCKLIST_KO adds a Korean placeholder, "스나크" (snark, written in Hangul), to the filter's
list: a filter for a Korean course must read Hangul. The generator never writes it.
"""
from __future__ import annotations

BLOCKLIST_KO = ("스나크",)

# (caption, should it be blocked?, what the case tests)
FILTER_CASES: list[tuple[str, bool, str]] = [
    # blocked words in forms the generator never writes
    ("a red circle under ＧＲＵＥ", True, "full-width letters"),
    ("ｑｕｉｂ on a green square", True, "full-width letters"),
    ("gruë next to two triangles", True, "an accent on a letter"),
    ("a snärk in the corner", True, "an accent on a letter"),
    ("gru\u0435 on a blue square", True, "a Cyrillic e among Latin letters"),
    ("\u0455nark on the left", True, "a Cyrillic s (looks like a Latin s)"),
    ("qu\u0456b, a blue cross", True, "a Cyrillic i"),
    ("two \u0261rue circles", True, "the Latin script g (U+0261)"),
    ("sn\u200bark above a square", True, "a zero-width space inside the word"),
    ("g\u00adrue", True, "a soft hyphen inside the word"),
    ("빨간 원 옆의 스나크", True, "a Korean blocklist word"),
    ("스나크를 그린 그림", True, "a Korean blocklist word with a particle (를)"),
    ("파란 사각형과 스나크가 있다", True, "a Korean blocklist word with a particle (가)"),
    ("SnArK!!! on a yellow triangle", True, "mixed case with punctuation"),
    ("q-u-i-b on a square", True, "letters joined by hyphens"),
    ("gru3 in a corner", True, "leetspeak: a digit for a letter"),
    ("snark_attack_2024.png", True, "run together in a file name"),
    ("#snarkattack", True, "run together in a hashtag"),
    # innocent captions in the same odd forms
    ("g r u e l for breakfast", False, "an innocent word spaced out"),
    ("q u i b b l e over a square", False, "an innocent word spaced out"),
    ("G.R.U.E.L.", False, "an innocent word dotted"),
    ("Ｇｒｕｅｌ in a bowl", False, "an innocent word in full-width letters"),
    ("a quibbler's circle", False, "an innocent longer word"),
    ("snarling dog, two circles", False, "an innocent longer word"),
    ("스낵과 음료", False, "an innocent Korean word (snack) that begins alike"),
    ("스나이퍼 그림", False, "an innocent Korean word (sniper) that begins alike"),
    ("a grue-some sight", False, "an innocent word (gruesome) hyphenated"),
    ("café au lait circles", False, "an innocent accented word"),
    ("nine squares in a row", False, "ordinary text"),
    ("a i r plane shapes", False, "an innocent word spaced out, with a one-letter word"),
]

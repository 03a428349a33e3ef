"""Sealed check lines: how `webmm-lab grade` knows that a PASS was printed by the course's own
checks during this very run, not copied, typed, or left in the notebook's stored outputs.

The grader makes a random key for each run and writes it to a file that only the grading kernel
may read; `WEBMM_GRADE_KEY_FILE` names the file. The grader's first cell (before any cell of the
student's) imports the checks, and this module takes the key at import: it reads the file, tries
to delete it, and removes the variable from `os.environ`; the grader deletes the file too before
the student's first cell runs. From then on every check line gets a seal, the line's number in
this run and an HMAC-SHA256 of the number and the line under the key:

    PASS softmax: matches the reference on 5 random inputs [sealed 1 3f0c...e9]

Without the key (a student's own Jupyter) nothing is added. What a seal proves, and what it does
not (student code runs in this same process), is in the README, "Grading a class".
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import re
from pathlib import Path

KEY_FILE = "WEBMM_GRADE_KEY_FILE"
SEALED = re.compile(r"^(PASS|FAIL) (.+?): (.*) \[sealed (\d+) ([0-9a-f]{64})\]$")
CHECK_LINE = re.compile(r"^(PASS|FAIL) (.+?): (.*)$")


def take_key() -> bytes | None:
    """The grading key, once: read from the file `WEBMM_GRADE_KEY_FILE` names, which is then
    deleted where this process may, and the variable removed. None when not grading."""
    path = os.environ.pop(KEY_FILE, None)
    if not path:
        return None
    try:
        key = bytes.fromhex(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.unlink(path)
    except OSError:                    # a read-only place: the grader deletes it
        pass
    return key or None


_key = take_key()
_numbers = itertools.count(1)


def grading() -> bool:
    """True inside `webmm-lab grade`, where check lines are sealed."""
    return _key is not None


def digest(key: bytes, number: int, line: str) -> str:
    """The HMAC-SHA256 (hex) of line `number` of a run under that run's key."""
    return hmac.new(key, f"{number}\n{line}".encode(), hashlib.sha256).hexdigest()


def seal(line: str) -> str:
    """`line` (made one line) with its seal when grading; unchanged otherwise."""
    if _key is None:
        return line
    line = " ".join(line.splitlines())
    number = next(_numbers)
    return f"{line} [sealed {number} {digest(_key, number, line)}]"


def unseal(line: str, key: bytes) -> tuple[str, str, str, int] | None:
    """(PASS | FAIL, name, message, number) of a line sealed under `key`, else None (no seal,
    a seal made with another key, or a line changed after it was sealed)."""
    m = SEALED.match(line.strip())
    if not m:
        return None
    result, name, message, number, mac = m.groups()
    plain = f"{result} {name}: {message}"
    if not hmac.compare_digest(mac, digest(key, int(number), plain)):
        return None
    return result, name, message, int(number)

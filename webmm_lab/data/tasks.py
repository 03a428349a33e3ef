"""Small text tasks for few-shot learning, written in GPT-3's format: one demonstration per
line, "input = output". Each task can be told from a single example.

    episode(["upper"] * 3, ["cake", "tree", "blue"])  ->  "cake = CAKE\ntree = TREE\nblue = BLUE\n"

Training uses random letter strings; evaluation uses real English words from the course
corpus that training never shows, so a model must infer the task from the prompt.
"""
from __future__ import annotations

import re
import string

import numpy as np

LETTERS = string.ascii_lowercase


def _shift(word: str) -> str:
    return "".join(LETTERS[(LETTERS.index(c) + 1) % 26] for c in word)


TASKS = {
    "upper": str.upper,                                  # cake = CAKE
    "shift": _shift,                                     # cake = dblf  (each letter +1)
    "first": lambda w: w[0],                             # cake = c
    "double": lambda w: "".join(c * 2 for c in w),       # cake = ccaakkee
}
SEP, END = " = ", "\n"


def demo(task: str, word: str) -> str:
    """One demonstration line of `task` on `word`."""
    return f"{word}{SEP}{TASKS[task](word)}{END}"


def real_words(text: str, length: int = 4) -> list[str]:
    """Distinct lower-case words of `length` letters in `text`, sorted."""
    return sorted(set(re.findall(rf"\b[a-z]{{{length}}}\b", text)))


def random_words(n: int, rng: np.random.Generator, length: int = 4,
                 exclude: set[str] = frozenset()) -> list[str]:
    """`n` random strings of `length` letters, none of them in `exclude`."""
    out = []
    while len(out) < n:
        letters = rng.integers(0, 26, size=(n, length))
        out += [w for w in ("".join(LETTERS[i] for i in row) for row in letters) if w not in exclude]
    return out[:n]


def task_stream(n_chars: int, rng: np.random.Generator, per_episode: int = 8,
                exclude: set[str] = frozenset()) -> str:
    """About `n_chars` of episodes: each `per_episode` demonstrations of one random task on
    random strings, episodes separated by a blank line."""
    names = list(TASKS)
    episodes, total = [], 0
    while total < n_chars:
        task = names[rng.integers(len(names))]
        text = "".join(demo(task, w) for w in random_words(per_episode, rng, exclude=exclude)) + END
        episodes.append(text)
        total += len(text)
    return "".join(episodes)

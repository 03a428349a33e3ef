"""Text corpora that ship with every Python: the documentation's prose and the standard
library's source. Split into pieces (passages of the docs, files of the source) of which every
tenth is validation, so no passage is in both halves. The text varies a little between Python versions; `source` says which."""
from __future__ import annotations

import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TextSet:
    """A corpus split: the text, how many documents it joins, and where it came from."""
    text: str
    documents: int
    name: str
    source: str

    def __len__(self) -> int:
        return len(self.text)


def _split(docs: list[str], split: str, every: int = 10) -> list[str]:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return [d for i, d in enumerate(docs) if (i % every == every - 1) == (split == "val")]


def _passages(docs: list[str], size: int) -> list[str]:
    """Cut documents into passages of about `size` characters at paragraph boundaries."""
    out = []
    for doc in docs:
        current = ""
        for para in doc.split("\n\n"):
            current = f"{current}\n\n{para}" if current else para
            if len(current) >= size:
                out.append(current)
                current = ""
        if current:
            out.append(current)
    return out


def load_python_docs(split: str = "train", passage_chars: int = 3000) -> TextSet:
    """English prose: the help topics of the Python documentation (pydoc_data.topics, ~465k
    chars), cut into passages of ~`passage_chars`; every tenth passage is validation."""
    from pydoc_data.topics import topics

    docs = _passages([topics[k].strip() for k in sorted(topics)], passage_chars)
    part = _split(docs, split)
    return TextSet("\n\n".join(part), len(part), "python-docs",
                   f"pydoc_data.topics of Python {platform.python_version()}")


def load_python_source(split: str = "train", max_chars: int | None = None) -> TextSet:
    """Code: the standard library's .py files (~13M chars; tests and site-packages left out)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py")
                   if not {"site-packages", "test", "tests", "idle_test"} & set(p.relative_to(stdlib).parts))
    part, total = [], 0
    for path in _split(files, split):
        text = path.read_text(encoding="utf-8", errors="replace")
        part.append(text)
        total += len(text)
        if max_chars is not None and total >= max_chars:
            break
    text = "\n\n".join(part)
    return TextSet(text[:max_chars] if max_chars else text, len(part), "python-source",
                   f"standard library of Python {platform.python_version()} ({stdlib})")

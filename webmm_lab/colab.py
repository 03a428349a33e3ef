"""The course's GitHub repository, read from one place: pyproject.toml's Homepage.

Every notebook's Colab badge and install cell, and the README's badges, name that repository.
`webmm-lab colab --repo OWNER/NAME` rewrites all of them (and the Homepage) for a fork, so an
instructor's copy opens its own notebooks in Colab and installs its own package.
"""
from __future__ import annotations

import re
from pathlib import Path

HOMEPAGE = re.compile(r'(Homepage\s*=\s*"https://github\.com/)([\w.-]+/[\w.-]+)(")')
NAME = re.compile(r"^[\w.-]+/[\w.-]+$")
# a repository as GitHub links name it, and as Colab's links do (colab.research.google.com/github/...)
LINK = re.compile(r"(github\.com/|colab\.research\.google\.com/github/)([\w.-]+/[\w.-]+?)(?=\.git\b|[/\"\\)\s]|$)")


def repository(root: Path) -> str:
    """OWNER/NAME of the course's repository, from pyproject.toml's [project.urls] Homepage."""
    m = HOMEPAGE.search((Path(root) / "pyproject.toml").read_text())
    if m is None:
        raise ValueError(f"{root}/pyproject.toml has no Homepage = \"https://github.com/OWNER/NAME\" "
                         "under [project.urls]")
    return m.group(2)


def course_files(root: Path) -> list[Path]:
    """The files that name the repository: README, notebooks, labs and their solutions."""
    root = Path(root)
    return ([root / "README.md"] + sorted((root / "notebooks").glob("*.ipynb"))
            + sorted((root / "labs").glob("*.ipynb")) + sorted((root / "labs" / "solutions").glob("*.ipynb")))


def references(root: Path) -> dict[Path, set[str]]:
    """{file: the OWNER/NAME repositories its GitHub links name}."""
    return {path: {m.group(2) for m in LINK.finditer(path.read_text())} for path in course_files(root)}


def set_repository(root: Path, new: str) -> list[Path]:
    """Point every badge, install cell and the Homepage at `new` (OWNER/NAME); returns the files
    changed."""
    if not NAME.match(new):
        raise ValueError(f"--repo takes OWNER/NAME, as on GitHub, got {new!r}")
    root = Path(root)
    old = repository(root)
    changed = []
    for path in [root / "pyproject.toml"] + course_files(root):
        text = path.read_text()
        updated = LINK.sub(lambda m: m.group(1) + (new if m.group(2) == old else m.group(2)), text)
        if updated != text:
            path.write_text(updated)
            changed.append(path)
    return changed

"""Where the course keeps what it writes: results (claims, executed notebooks), checkpoints, data.

Override with WEBMM_RESULTS and WEBMM_DATA. By default results go to `results/` at the course's
root (the folder holding pyproject.toml, found from the working directory upwards), or to
`./results` outside a checkout (e.g. Colab), and data to `~/.cache/webmm_lab`.
"""
from __future__ import annotations

from pathlib import Path

from .settings import settings


def course_root(start: Path | None = None) -> Path | None:
    """The checkout's root (has pyproject.toml and notebooks/), searching up from `start`."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return None


def results_dir() -> Path:
    """The folder for claims tables and executed notebooks."""
    if settings().results:
        return settings().results
    root = course_root()
    return (root or Path.cwd()) / "results"


def checkpoint_dir() -> Path:
    """The folder for training checkpoints (inside the results folder)."""
    return results_dir() / "checkpoints"


def data_dir() -> Path:
    """The cache for downloaded data sets."""
    return settings().data

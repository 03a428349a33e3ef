"""One loader API for every data set: `load(name, split=...)`.

    from webmm_lab.data import load, available
    digits = load("digits", split="train")       # ImageSet: images (N, 1, 8, 8), labels
    canvas = load("digits-canvas", canvas=12)     # the same digits at random places on 12x12
    docs = load("python-docs", split="val")       # TextSet: text
    hand = load("handwritten")                    # MNIST in the gpu profile, digits otherwise
    photos = load("photos")                       # {name: (3, H, W)}: scikit-image's photographs
    music = load("music", split="train")          # MusicSet: scores from music21's corpus as notes
    audio = load("audio", split="train")          # AudioSet: those scores rendered, one timbre each
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from ..profiles import active_profile, dry_run_cut
from .download import DownloadError, download, sha256_of
from .audio import AudioSet, load_audio
from .music import MusicSet, load_music
from .images import (ImageSet, load_digits, load_digits_on_canvas, load_mnist, load_photos,
                     per_class_subset)
from .text import TextSet, load_python_docs, load_python_source


def load_handwritten(split: str = "train", profile: str | None = None) -> ImageSet:
    """Handwritten digits for the active profile: MNIST on gpu (else its fallback), digits on
    smoke and cpu, which use embedded data only so their results are the same everywhere. A
    dry run keeps the first rows of each split (`profiles.dry_run_cut`)."""
    data = load_mnist(split) if (profile or active_profile()) == "gpu" else load_digits(split)
    images, labels = dry_run_cut(split, data.images, data.labels)
    return replace(data, images=images, labels=labels)


REGISTRY: dict[str, Callable] = {
    "digits": load_digits,
    "digits-canvas": load_digits_on_canvas,
    "mnist": load_mnist,
    "handwritten": load_handwritten,
    "python-docs": load_python_docs,
    "python-source": load_python_source,
    "photos": load_photos,
    "music": load_music,
    "audio": load_audio,
}


def available() -> list[str]:
    """Names of the data sets `load` knows."""
    return sorted(REGISTRY)


def load(name: str, **kwargs):
    """Load data set `name` (see `available()`); keyword arguments go to its loader."""
    if name not in REGISTRY:
        raise KeyError(f"unknown data set {name!r}; available: {', '.join(available())}")
    return REGISTRY[name](**kwargs)


__all__ = ["load", "available", "ImageSet", "TextSet", "DownloadError", "download", "sha256_of",
           "load_digits", "load_digits_on_canvas", "load_mnist", "load_photos", "per_class_subset", "load_handwritten",
           "load_python_docs", "load_python_source", "MusicSet", "load_music",
           "AudioSet", "load_audio"]

"""Token ids and lengths: the range checks that every model, tokenizer and palette shares.

A check reads a value back to the host. On the CPU that is free, and it turns a bad id into a
clear message (where it came from, what to do) instead of an index error deep in an embedding.
On a GPU it makes the host wait for the device, and inside a forward pass that is every
training step; so there the checks run only with WEBMM_DEBUG=1 (`validating`). Ids are made on
the host and checked there once (tokenizers, palettes, `experiments`), and a model trained on a
laptop has run every check already; a bad id on a GPU still fails, as the embedding's
device-side assert: run again with WEBMM_DEBUG=1 (and CUDA_LAUNCH_BLOCKING=1) to see which.
"""
from __future__ import annotations

import torch

from .settings import settings


def validating(t: torch.Tensor) -> bool:
    """Whether value checks on `t` run: always on the CPU (free there), elsewhere only with
    WEBMM_DEBUG=1 (on a GPU a check waits for the device: a sync in every training step)."""
    return t.device.type == "cpu" or settings().debug


def check_ids(ids: torch.Tensor, n: int, what: str = "token ids") -> None:
    """Raise a ValueError if any of `ids` (any shape) lies outside [0, n); empty is fine.
    Skipped off the CPU unless WEBMM_DEBUG=1 (`validating`)."""
    if ids.numel() == 0 or not validating(ids):
        return
    lo, hi = torch.aminmax(ids)                                              # one read, not two
    if lo < 0 or hi >= n:
        raise ValueError(f"{what} must be in [0, {n}), got [{int(lo)}, {int(hi)}]: they come from "
                         f"another vocabulary or codebook than this one's (encode with its own)")


def check_lengths(lengths: torch.Tensor, lo: int, hi: int, what: str = "lengths") -> None:
    """Raise a ValueError if any of `lengths` lies outside [lo, hi]; off the CPU only with
    WEBMM_DEBUG=1 (`validating`)."""
    if lengths.numel() == 0 or not validating(lengths):
        return
    least, most = torch.aminmax(lengths)
    if least < lo or most > hi:
        raise ValueError(f"{what} must be in [{lo}, {hi}], got {lengths.tolist()}")

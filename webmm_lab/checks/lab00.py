"""Checks for lab 00: softmax and cross-entropy by hand."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from . import CheckResult, check_function


def _logits(gen: torch.Generator) -> tuple[torch.Tensor]:
    rows, cols = (int(v) for v in torch.randint(1, 13, (2,), generator=gen))
    scale = float(torch.tensor([1.0, 10.0, 300.0])[torch.randint(3, (), generator=gen)])
    return (torch.randn(rows, cols, generator=gen) * scale,)


def check_softmax(fn: Callable[[torch.Tensor], torch.Tensor], **kw) -> CheckResult:
    """Lab 00: softmax over the last dimension of (N, C) logits, stable for large logits."""
    return check_function(fn, lambda x: torch.softmax(x, dim=-1), _logits, name="softmax",
                          grad=True, hint="exp() of a large logit overflows; a softmax does not "
                          "change when every logit of a row moves by the same amount", **kw)


def _logits_targets(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    (x,) = _logits(gen)
    return x, torch.randint(x.shape[1], (x.shape[0],), generator=gen)


def check_cross_entropy(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], **kw) -> CheckResult:
    """Lab 00: mean cross-entropy of (N, C) logits against (N,) integer targets."""
    return check_function(fn, F.cross_entropy, _logits_targets, name="cross_entropy", grad=True,
                          hint="a row's loss is minus the log-probability of its target; "
                          "compute that log-probability without exp() of large numbers", **kw)

"""Checks for lab 07: CLIP's loss and the zero-shot classifier."""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..models.clip import zero_shot_weights
from ..models.contrastive import clip_loss
from . import CheckResult, _report, check_function


def _clip_inputs(gen: torch.Generator):
    n, d = int(torch.randint(2, 17, (), generator=gen)), int(torch.randint(2, 33, (), generator=gen))
    scale = float(torch.tensor([0.0, 1.0, 2.659, 4.605])[torch.randint(4, (), generator=gen)])
    return (torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen), torch.tensor(scale))


def check_clip_loss(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], **kw) -> CheckResult:
    """Lab 07: fn(image, text, logit_scale) is CLIP's symmetric loss (values, gradients, the
    learned scale), and equals ln(N) when all embeddings are identical."""
    verbose = kw.pop("verbose", True)
    result = check_function(fn, lambda i, t, s: clip_loss(i, t, s, gather=False), _clip_inputs,
                            name="clip_loss", grad=True, verbose=False,
                            hint="two classification problems over one similarity matrix, one in "
                            "each direction; the right caption of image i is caption i", **kw)
    if not result:
        return _report(result, verbose)
    n = 12
    same = torch.ones(n, 5)
    try:
        got = float(fn(same, same, torch.tensor(3.0)))
    except Exception as e:
        return _report(CheckResult("clip_loss", False, f"identical embeddings: raised {e!r}"), verbose)
    if abs(got - math.log(n)) > 1e-4:
        return _report(CheckResult("clip_loss", False, f"identical embeddings: loss {got:.5f}, "
                                   f"expected ln(N) = {math.log(n):.5f}"), verbose)
    return _report(CheckResult("clip_loss", True, result.message + "; ln(N) for identical embeddings"), verbose)


def check_zero_shot_weights(fn: Callable, **kw) -> CheckResult:
    """Lab 07: fn(encode_texts, classnames, templates) -> (D, C) prompt-ensembled classifier."""
    def inputs(gen):
        d = int(torch.randint(2, 9, (), generator=gen))
        table: dict[str, torch.Tensor] = {}
        def encode(texts):                               # a fixed random embedding per text
            for t in texts:
                if t not in table:
                    table[t] = torch.randn(d, generator=gen) * float(torch.rand((), generator=gen) * 3 + 0.1)
            return torch.stack([table[t] for t in texts])
        n_classes, n_templates = (int(v) for v in torch.randint(1, 6, (2,), generator=gen))
        templates = [f"template {j}: {{}}" for j in range(n_templates)]
        return (encode, [f"class{c}" for c in range(n_classes)], templates)
    return check_function(fn, zero_shot_weights, inputs, name="zero_shot_weights",
                          hint="templates of one class should count equally, however long their "
                          "embeddings are; the result has one unit-length column per class", **kw)

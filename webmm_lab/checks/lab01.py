"""Checks for lab 01: augmentations and the InfoNCE loss."""
from __future__ import annotations

from typing import Callable

import torch
from ..data.augment import affine
from ..models.contrastive import info_nce
from . import CheckResult, _report, check_function, check_raises


def _images(gen: torch.Generator) -> torch.Tensor:
    b, h = int(torch.randint(1, 9, (), generator=gen)), int(torch.randint(5, 13, (), generator=gen))
    return torch.rand(b, 1, h, h, generator=gen)


def check_affine(fn: Callable, **kw) -> CheckResult:
    """Lab 01: fn(x, angle, scale, tx, ty) rotates, zooms and shifts a batch like augment.affine."""
    def inputs(gen):
        x = _images(gen)
        b = len(x)
        return (x, (torch.rand(b, generator=gen) - 0.5) * 0.6, 0.8 + 0.4 * torch.rand(b, generator=gen),
                (torch.rand(b, generator=gen) - 0.5) * 0.5, (torch.rand(b, generator=gen) - 0.5) * 0.5)
    return check_function(fn, lambda x, a, s, tx, ty: affine(x, a, s, tx, ty), inputs, name="affine",
                          atol=1e-4, hint="grid_sample wants, for every output pixel, where to read "
                          "in the input: build the inverse transform R(-angle)/scale and the "
                          "offset -M @ t, then F.affine_grid(theta, x.shape, align_corners=False)", **kw)


def check_augment(fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor], verbose: bool = True) -> CheckResult:
    """Lab 01: fn(x, generator) is a random augmentation: same shape and dtype, values in
    [0, 1], repeatable for the same generator seed, different for another, and really changes
    the images."""
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    name = "augment"
    try:
        a = fn(x.clone(), torch.Generator().manual_seed(1))
        b = fn(x.clone(), torch.Generator().manual_seed(1))
        c = fn(x.clone(), torch.Generator().manual_seed(2))
    except NotImplementedError as e:
        return _report(CheckResult(name, False, f"not implemented yet ({e})"), verbose)
    except Exception as e:
        return _report(CheckResult(name, False, f"raised {type(e).__name__}: {e}"), verbose)
    problems = []
    if not isinstance(a, torch.Tensor) or a.shape != x.shape or a.dtype != x.dtype:
        problems.append(f"expected a {x.dtype} tensor of shape {tuple(x.shape)}, got "
                        f"{getattr(a, 'dtype', type(a).__name__)} {tuple(getattr(a, 'shape', ()))}")
    elif a.min() < 0 or a.max() > 1:
        problems.append(f"values outside [0, 1] (min {a.min():.3g}, max {a.max():.3g}): clamp them")
    elif not torch.equal(a, b):
        problems.append("two calls with the same generator seed differ: draw all randomness from "
                        "the generator argument (torch.rand(..., generator=gen))")
    elif torch.equal(a, c):
        problems.append("different generator seeds give the same output: nothing is random")
    elif (a - x).abs().mean() < 0.02:
        problems.append(f"the images barely change (mean |change| {(a - x).abs().mean():.3g})")
    if problems:
        return _report(CheckResult(name, False, problems[0]), verbose)
    return _report(CheckResult(name, True, "right shape, dtype and range; repeatable under a "
                               "seed; different across seeds"), verbose)


def _pairs(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    n, d = int(torch.randint(2, 20, (), generator=gen)), int(torch.randint(2, 33, (), generator=gen))
    tau = float(torch.tensor([0.05, 0.1, 0.5, 1.0])[torch.randint(4, (), generator=gen)])
    return torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen), tau


def check_info_nce(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], **kw) -> CheckResult:
    """Lab 01: fn(z1, z2, temperature) is SimCLR's NT-Xent loss; a batch of 1 is a clear error."""
    verbose = kw.pop("verbose", True)
    result = check_function(fn, info_nce, _pairs, name="info_nce", grad=True, atol=1e-5, rtol=1e-4,
                            hint="normalise rows, stack the 2N embeddings, similarities / "
                            "temperature, mask the diagonal with -inf, target of i is i+N (and "
                            "of i+N is i), mean cross-entropy", verbose=False, **kw)
    if not result:
        return _report(result, verbose)
    one = check_raises(fn, (torch.randn(1, 4), torch.randn(1, 4), 0.5), (ValueError,),
                       name="info_nce with a batch of 1", verbose=False,
                       hint="with one pair there are no negatives: raise ValueError saying so")
    if not one:
        return _report(CheckResult("info_nce", False, f"a batch of 1 pair: {one.message}"), verbose)
    return _report(CheckResult("info_nce", True, result.message + "; a batch of 1 is refused "
                               "with a clear error"), verbose)

"""Checks for lab 01: augmentations, the InfoNCE loss, and a linear probe."""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..data.augment import affine
from ..models.contrastive import info_nce
from ..probe import fit_linear_probe
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
                          atol=1e-4, hint="affine_grid's matrix maps each *output* pixel to where it reads "
                          "in the input: the inverse of the transform you want to apply", **kw)


RANGES = {"angle": (-15 * math.pi / 180, 15 * math.pi / 180), "scale": (0.8, 1.15),
          "tx": (-0.3, 0.3), "ty": (-0.3, 0.3), "contrast": (0.6, 1.0)}   # what the lab's text asks


def check_random_params(fn: Callable[[int, torch.Generator], dict], verbose: bool = True) -> CheckResult:
    """Lab 01: fn(b, generator) draws b augmentations' parameters, each a (b,) tensor, uniform
    over the ranges the lab states (angle in radians), repeatable for a generator seed."""
    name = "random_params"
    try:
        a = fn(20000, torch.Generator().manual_seed(1))
        b = fn(20000, torch.Generator().manual_seed(1))
        c = fn(20000, torch.Generator().manual_seed(2))
    except NotImplementedError as e:
        return _report(CheckResult(name, False, f"not implemented yet ({e})"), verbose)
    except Exception as e:
        return _report(CheckResult(name, False, f"raised {type(e).__name__}: {e}"), verbose)
    if not isinstance(a, dict) or set(a) != set(RANGES):
        return _report(CheckResult(name, False, f"expected a dict with keys {sorted(RANGES)}, got "
                                   f"{sorted(a) if isinstance(a, dict) else type(a).__name__}"), verbose)
    for key, (lo, hi) in RANGES.items():
        v = a[key]
        if not isinstance(v, torch.Tensor) or v.shape != (20000,):
            return _report(CheckResult(name, False, f"{key}: expected a tensor of shape (b,) = (20000,), "
                                       f"got {getattr(v, 'shape', type(v).__name__)}"), verbose)
        width = hi - lo
        if v.min() < lo - 1e-6 or v.max() > hi + 1e-6:
            return _report(CheckResult(name, False, f"{key}: values in [{v.min():.4g}, {v.max():.4g}], "
                                       f"outside the asked range [{lo:.4g}, {hi:.4g}]"
                                       + (" (degrees? angles are in radians)" if key == "angle" else "")), verbose)
        if v.min() > lo + 0.02 * width or v.max() < hi - 0.02 * width or abs(v.mean() - (lo + hi) / 2) > 0.02 * width:
            return _report(CheckResult(name, False, f"{key}: 20,000 draws span [{v.min():.4g}, {v.max():.4g}] "
                                       f"with mean {v.mean():.4g}; uniform over [{lo:.4g}, {hi:.4g}] would "
                                       "fill the range evenly"), verbose)
        if not torch.equal(v, b[key]):
            return _report(CheckResult(name, False, f"{key}: two calls with the same generator seed differ: "
                                       "draw everything from the generator argument"), verbose)
        if torch.equal(v, c[key]):
            return _report(CheckResult(name, False, f"{key}: another generator seed gives the same values"), verbose)
    if len({float(a[k][0]) for k in RANGES}) < 3 or torch.equal(a["tx"], a["ty"]):
        return _report(CheckResult(name, False, "the parameters are copies of one draw: draw each separately"), verbose)
    return _report(CheckResult(name, True, "every parameter uniform over its asked range, repeatable "
                               "under a seed, different across seeds"), verbose)


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
                            hint="every one of the 2N views has exactly one positive, its "
                            "partner, and is never a candidate for itself", verbose=False, **kw)
    if not result:
        return _report(result, verbose)
    one = check_raises(fn, (torch.randn(1, 4), torch.randn(1, 4), 0.5), (ValueError,),
                       name="info_nce with a batch of 1", verbose=False,
                       hint="with one pair there are no negatives: raise ValueError saying so")
    if not one:
        return _report(CheckResult("info_nce", False, f"a batch of 1 pair: {one.message}"), verbose)
    return _report(CheckResult("info_nce", True, result.message + "; a batch of 1 is refused "
                               "with a clear error"), verbose)


def _blobs(gen: torch.Generator, n: int, scales: torch.Tensor, centres: torch.Tensor):
    labels = torch.randint(len(centres), (n,), generator=gen)
    x = centres[labels] + torch.randn(n, centres.shape[1], generator=gen) * 1.5
    return x * scales, labels


def check_linear_probe(fn: Callable[[torch.Tensor, torch.Tensor], Callable], verbose: bool = True) -> CheckResult:
    """Lab 01: fn(features, labels) fits a linear probe and returns probe(features) -> logits
    (N, C). It must classify held-out features about as well as the package's probe, and not
    care about the units of each feature (it standardises with the training statistics)."""
    name = "linear_probe"
    gen = torch.Generator().manual_seed(0)
    d, c = 12, 5
    centres = torch.randn(c, d, generator=gen) * 2
    scales = 10 ** (torch.rand(d, generator=gen) * 4 - 2)         # features in units from 0.01 to 100
    (x, y), (xt, yt) = _blobs(gen, 400, scales, centres), _blobs(gen, 1000, scales, centres)
    try:
        probe = fn(x.clone(), y.clone())
        logits = probe(xt.clone())
        rescaled = fn(x / scales * 1000, y.clone())(xt / scales * 1000)   # the same data in other units
    except NotImplementedError as e:
        return _report(CheckResult(name, False, f"not implemented yet ({e})"), verbose)
    except Exception as e:
        return _report(CheckResult(name, False, f"raised {type(e).__name__}: {e}"), verbose)
    if not isinstance(logits, torch.Tensor) or logits.shape != (1000, c):
        return _report(CheckResult(name, False, f"probe(features) should give logits of shape (N, C) = "
                                   f"(1000, {c}), got {getattr(logits, 'shape', type(logits).__name__)}"), verbose)
    mine = (logits.argmax(1) == yt).float().mean().item()
    ref = (fit_linear_probe(x, y)(xt).argmax(1) == yt).float().mean().item()
    if mine < ref - 0.03:
        return _report(CheckResult(name, False, f"test accuracy {mine:.1%}, the package's probe {ref:.1%}: "
                                   "features in very different units need standardising, with "
                                   "statistics of the training features only"), verbose)
    agree = (rescaled.argmax(1) == logits.argmax(1)).float().mean().item()
    if agree < 0.97:
        return _report(CheckResult(name, False, f"the same data in other units changes {1 - agree:.1%} of the "
                                   "predictions: standardise each feature"), verbose)
    return _report(CheckResult(name, True, f"test accuracy {mine:.1%} (package {ref:.1%}); the units of "
                               "the features do not matter"), verbose)


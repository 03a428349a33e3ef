"""Checks for lab 05: the VQ bottleneck's pieces — nearest code, straight-through estimator,
EMA update of the codebook, restart of dead codes."""
from __future__ import annotations

from typing import Callable

import torch

from ..kmeans import nearest
from ..models.vq import ema_update
from . import CheckResult, _report, check_function


def _vectors(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n, k, d = (int(torch.randint(lo, hi, (), generator=gen)) for lo, hi in ((1, 300), (1, 40), (1, 12)))
    return torch.randn(n, d, generator=gen) * 3, torch.randn(k, d, generator=gen) * 3


def check_nearest_code(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], **kw) -> CheckResult:
    """Lab 05: fn(flat (N, D), codebook (K, D)) -> (N,) long, the index of each vector's
    nearest code (squared Euclidean distance)."""
    def ties_forgiven(x: torch.Tensor, c: torch.Tensor):
        got = fn(x, c)
        if not isinstance(got, torch.Tensor) or got.shape != (len(x),) or got.dtype != torch.long:
            return got                                        # compared as it is: a clear message
        if got.min() < 0 or got.max() >= len(c):
            raise IndexError(f"code indices must be in [0, {len(c)}), got [{int(got.min())}, {int(got.max())}]")
        best, d = nearest(x, c)
        mine = (x - c[got]).pow(2).sum(1)
        return torch.where((mine - d).abs() <= 1e-4 * (1 + d), best, got)   # an exact tie is not a mistake
    return check_function(ties_forgiven, lambda x, c: nearest(x, c)[0], _vectors, name="nearest_code", trials=20,
                          hint="all N x K squared distances at once: expand |x - c|^2 and use one "
                          "matrix product; then the index of the smallest in each row", **kw)


def check_straight_through(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           verbose: bool = True) -> CheckResult:
    """Lab 05: fn(z, q) returns q's values; the gradient reaches z unchanged and q not at all."""
    name = "straight_through"
    gen = torch.Generator().manual_seed(0)
    for trial in range(5):
        shape = tuple(int(s) for s in torch.randint(1, 9, (3,), generator=gen))
        z = torch.randn(shape, generator=gen).requires_grad_(True)
        q = torch.randn(shape, generator=gen).requires_grad_(True)
        upstream = torch.randn(shape, generator=gen)
        try:
            out = fn(z, q)
        except NotImplementedError as e:
            return _report(CheckResult(name, False, f"not implemented yet ({e})"), verbose)
        if not isinstance(out, torch.Tensor) or out.shape != q.shape or not torch.allclose(out, q, atol=1e-6):
            return _report(CheckResult(name, False, "the forward value must be the codes' vectors q"), verbose)
        if not out.requires_grad:
            return _report(CheckResult(name, False, "the output is detached: no gradient reaches the encoder"), verbose)
        (out * upstream).sum().backward()
        if z.grad is None or not torch.allclose(z.grad, upstream, atol=1e-6):
            return _report(CheckResult(name, False, "the gradient must reach z unchanged (as if the "
                                       "quantiser were the identity)"), verbose)
        if q.grad is not None and q.grad.abs().max() > 0:
            return _report(CheckResult(name, False, "the codebook got a gradient through the straight-"
                                       "through path; the EMA updates it, so q must be cut off from it"), verbose)
    return _report(CheckResult(name, True, "values are q, the gradient passes to z only, on 5 random shapes"), verbose)


def _ema_inputs(gen: torch.Generator):
    flat, codebook = _vectors(gen)
    k = len(codebook)
    count = torch.rand(k, generator=gen) * 5
    total = codebook * count[:, None]
    codes = torch.randint(k, (len(flat),), generator=gen)
    return count, total, flat, codes, float(torch.rand((), generator=gen) * 0.5 + 0.5)


def check_ema_update(fn: Callable, **kw) -> CheckResult:
    """Lab 05: fn(count (K,), total (K, D), flat (N, D), codes (N,), decay) -> (count, total),
    the moving averages of how many vectors each code won and of their sum."""
    return check_function(fn, ema_update, _ema_inputs, name="ema_update", trials=20,
                          hint="count every code's vectors and sum them without a loop over codes "
                          "(there are scatter-style tensor operations for this); a code that won "
                          "nothing still decays", **kw)


def check_restart(fn: Callable, verbose: bool = True) -> CheckResult:
    """Lab 05: fn(codebook, count, total, flat, threshold) -> (codebook, count, total, n): codes
    whose count is below threshold move onto vectors of flat, with count = threshold and
    total = threshold * vector; the others are untouched; n is how many moved."""
    name = "restart_dead_codes"
    gen = torch.Generator().manual_seed(1)
    for trial in range(20):
        count, total, flat, _, _ = _ema_inputs(gen)
        codebook = total / count.clamp_min(1e-5)[:, None]
        threshold = float(torch.rand((), generator=gen) * 3)
        before = [t.clone() for t in (codebook, count, total)]
        try:
            out = fn(codebook, count, total, flat, threshold)
        except NotImplementedError as e:
            return _report(CheckResult(name, False, f"not implemented yet ({e})"), verbose)
        except Exception as e:
            return _report(CheckResult(name, False, f"raised {type(e).__name__}: {e}"), verbose)
        if not (isinstance(out, tuple) and len(out) == 4):
            return _report(CheckResult(name, False, "return a tuple (codebook, count, total, n)"), verbose)
        new, c, t, n = out
        dead = before[1] < threshold
        problem = None
        if int(n) != int(dead.sum()):
            problem = f"n = {int(n)}, but {int(dead.sum())} codes had a count below the threshold"
        elif not (torch.equal(new[~dead], before[0][~dead]) and torch.equal(c[~dead], before[1][~dead])
                  and torch.equal(t[~dead], before[2][~dead])):
            problem = "a living code (count >= threshold) was changed: its vector, count or total"
        elif dead.any() and not (new[dead][:, None, :] == flat[None]).all(-1).any(-1).all():
            problem = "a restarted code is not one of the batch's vectors"
        elif 1 < int(dead.sum()) <= len(flat) and len(torch.unique(new[dead], dim=0)) < int(dead.sum()):
            problem = ("two restarted codes landed on the same vector: draw distinct vectors of the "
                       "batch (two identical codes split their vectors and one dies again)")
        elif dead.any() and not (torch.allclose(c[dead], torch.full_like(c[dead], threshold))
                                 and torch.allclose(t[dead], threshold * new[dead], atol=1e-5)):
            problem = "a restarted code needs count = threshold and total = threshold * its vector"
        if problem:
            return _report(CheckResult(name, False, f"{problem} (trial {trial + 1}, {len(count)} codes, "
                                       f"threshold {threshold:.2f})"), verbose)
    return _report(CheckResult(name, True, "dead codes move onto batch vectors with the weight of the "
                               "threshold, living ones stay, on 20 random codebooks"), verbose)

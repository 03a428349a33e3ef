"""Checks for lab 05: the VQ bottleneck's pieces — nearest code, straight-through estimator,
EMA update of the codebook, restart of dead codes.

The nearest code must come without a Python loop and without the (N, K, D) tensor of
differences. Timing code is flaky on a shared machine and torch keeps no peak-memory count on
a CPU, so `_cost` runs the function once on a batch where both show and measures them exactly:
the function calls made from your own code (a profiler that skips the libraries; a loop over
256 codes makes at least 256, a vectorised answer a handful, and the count stops the run as soon
as it passes the limit), and the largest block any tensor operation (seen by a dispatch mode) or
numpy array (seen by tracemalloc) allocated: an (N, K, D) tensor is D = 16 times the N x K
distances. Both are deterministic: the same verdict on every machine.
"""
from __future__ import annotations

import os
import sys
import sysconfig
import tracemalloc
from typing import Callable

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..kmeans import nearest
from ..models.vq import ema_update
from . import CheckResult, _report, check_function

BIG = (2048, 256, 16)          # N, K, D of the cost test
MAX_CALLS = 128                # calls from your code for one batch; a loop over the codes makes >= 256
LIBRARIES = tuple({sysconfig.get_path(p) for p in ("stdlib", "platstdlib", "purelib", "platlib")}
                  | {os.path.dirname(m.__file__) for m in (torch, np)}
                  | {os.path.dirname(__file__), "<frozen", "<string>"})       # code that is not yours


def _vectors(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n, k, d = (int(torch.randint(lo, hi, (), generator=gen)) for lo, hi in ((1, 300), (1, 40), (1, 12)))
    return torch.randn(n, d, generator=gen) * 3, torch.randn(k, d, generator=gen) * 3


class _TooManyCalls(BaseException):
    """Raised by the profiler to stop a loop as soon as it is one (not an Exception, so that a
    loop's own `except Exception` cannot swallow it)."""


class _LargestTensor(TorchDispatchMode):
    """Sees every tensor operation; keeps the largest storage one produced, and its shape."""

    def __init__(self):
        super().__init__()
        self.nbytes, self.shape = 0, ()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() > self.nbytes:
                self.nbytes, self.shape = t.untyped_storage().nbytes(), tuple(t.shape)
        return out


def _cost(fn: Callable, flat: torch.Tensor, codebook: torch.Tensor) -> tuple[int, int, str]:
    """Run fn(flat, codebook) once: (calls made from your own code, counted up to MAX_CALLS + 1,
    the largest block in bytes a tensor operation or a numpy array took, what it was)."""
    calls = 0

    def profile(frame, event, arg):
        nonlocal calls
        if event in ("call", "c_call") and not frame.f_code.co_filename.startswith(LIBRARIES):
            calls += 1
            if calls > MAX_CALLS:
                raise _TooManyCalls
    largest, old, tracing = _LargestTensor(), sys.getprofile(), tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        with largest:
            sys.setprofile(profile)
            try:
                fn(flat, codebook)
            finally:
                sys.setprofile(old)
    except _TooManyCalls:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        if not tracing:
            tracemalloc.stop()
    if peak > largest.nbytes:
        return calls, peak, "a numpy array or Python objects"
    return calls, largest.nbytes, f"a tensor of shape {largest.shape}"


def _too_costly(fn: Callable) -> str | None:
    """Why fn loops in Python or builds the (N, K, D) differences, or None."""
    N, K, D = BIG
    gen = torch.Generator().manual_seed(5)
    with _LargestTensor():                                                     # lazy imports happen here
        fn(torch.randn(3, D, generator=gen), torch.randn(2, D, generator=gen))
    calls, nbytes, what = _cost(fn, torch.randn(N, D, generator=gen), torch.randn(K, D, generator=gen))
    if calls > MAX_CALLS:
        return (f"more than {MAX_CALLS} function calls from your code for one batch of N = {N} vectors and "
                f"K = {K} codes: a Python loop over the vectors or the codes? Compute all N x K distances at once")
    if nbytes > 4 * N * K * 4:
        return (f"your code built {what}, {nbytes / 2**20:.0f} MB, for N = {N}, K = {K}, D = {D}: that is "
                f"the (N, K, D) tensor of differences, D times the N x K distances. Expand |x - c|^2 so "
                "that one (N, D) x (D, K) matrix product does the work")
    return None


def check_nearest_code(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], verbose: bool = True,
                       **kw) -> CheckResult:
    """Lab 05: fn(flat (N, D), codebook (K, D)) -> (N,) long, the index of each vector's
    nearest code (squared Euclidean distance), without a Python loop and without an (N, K, D)
    tensor (see the module's docstring for how that is measured)."""
    def ties_forgiven(x: torch.Tensor, c: torch.Tensor):
        got = fn(x, c)
        if not isinstance(got, torch.Tensor) or got.shape != (len(x),) or got.dtype != torch.long:
            return got                                        # compared as it is: a clear message
        if got.min() < 0 or got.max() >= len(c):
            raise IndexError(f"code indices must be in [0, {len(c)}), got [{int(got.min())}, {int(got.max())}]")
        best, d = nearest(x, c)
        mine = (x - c[got]).pow(2).sum(1)
        return torch.where((mine - d).abs() <= 1e-4 * (1 + d), best, got)   # an exact tie is not a mistake
    kw.setdefault("seed", 0)
    result = check_function(ties_forgiven, lambda x, c: nearest(x, c)[0], _vectors, name="nearest_code",
                            trials=20, verbose=False, hint="all N x K squared distances at once: expand "
                            "|x - c|^2 and use one matrix product; then the index of the smallest in each row",
                            **kw)
    if result:
        try:
            problem = _too_costly(fn)
        except Exception as e:
            problem = f"on a batch of N, K, D = {BIG} it raised {type(e).__name__}: {e}"
        if problem:
            result = CheckResult("nearest_code", False, problem)
    if result:
        result.message += "; no Python loop and no (N, K, D) tensor on a batch with N, K, D = {}, {}, {}".format(*BIG)
    return _report(result, verbose)


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


AT_THRESHOLD = ("a code whose count equals the threshold was restarted: only a count below the threshold "
                "makes a code dead (<, not <=); a code just restarted sits exactly at the threshold")


def _restart_inputs(gen: torch.Generator):
    """A codebook with counts below, above and (a third of them) exactly at the threshold."""
    count, total, flat, _, _ = _ema_inputs(gen)
    threshold = float(torch.rand((), generator=gen) * 3)          # a float32 value: a count can equal it
    count[::3] = threshold
    return total / count.clamp_min(1e-5)[:, None], count, total, flat, threshold


def _restart_problem(out, before: list[torch.Tensor], flat: torch.Tensor, threshold: float) -> str | None:
    """What is wrong with one restart's output `out`, given the inputs `before` it ran."""
    if not (isinstance(out, tuple) and len(out) == 4):
        return "return a tuple (codebook, count, total, n)"
    new, c, t, n = out
    dead, at = before[1] < threshold, before[1] == threshold
    changed = ~((new == before[0]).all(1) & (c == before[1]) & (t == before[2]).all(1))
    if changed[~dead].any() and at[changed & ~dead].all():
        return AT_THRESHOLD
    if int(n) != int(dead.sum()):
        return f"n = {int(n)}, but {int(dead.sum())} codes had a count below the threshold"
    if changed[~dead].any():
        return "a living code (count >= threshold) was changed: its vector, count or total"
    if dead.any() and not (new[dead][:, None, :] == flat[None]).all(-1).any(-1).all():
        return "a restarted code is not one of the batch's vectors"
    if 1 < int(dead.sum()) <= len(flat) and len(torch.unique(new[dead], dim=0)) < int(dead.sum()):
        return ("two restarted codes landed on the same vector: draw distinct vectors of the "
                "batch (two identical codes split their vectors and one dies again)")
    if dead.any() and not (torch.allclose(c[dead], torch.full_like(c[dead], threshold))
                           and torch.allclose(t[dead], threshold * new[dead], atol=1e-5)):
        return "a restarted code needs count = threshold and total = threshold * its vector"
    return None


def _restart_trials(fn: Callable, trials: int = 20) -> str | None:
    """Restarts on random codebooks from a fixed seed: what is wrong with the first bad one, or None."""
    gen = torch.Generator().manual_seed(1)
    for trial in range(trials):
        codebook, count, total, flat, threshold = _restart_inputs(gen)
        before = [t.clone() for t in (codebook, count, total)]
        problem = _restart_problem(fn(codebook, count, total, flat, threshold), before, flat, threshold)
        if problem:
            return f"{problem} (trial {trial + 1}, {len(count)} codes, threshold {threshold:.2f})"
    return None


def _draws_problem(fn: Callable, draws: int = 200) -> str | None:
    """Why fn's restarts are not distinct rows drawn at random from the whole batch, or None:
    fn restarts 4 dead codes from a batch of 16 rows `draws` times, each time under another
    torch seed."""
    flat = torch.arange(16.0)[:, None].repeat(1, 3)                        # (16, 3): row i is (i, i, i)
    count = torch.tensor([0.1, 5.0] * 4)                                   # codes 0, 2, 4, 6 are dead
    codebook = torch.randn(8, 3, generator=torch.Generator().manual_seed(2))
    picks = []
    for s in range(draws):
        torch.manual_seed(s)
        new = fn(codebook.clone(), count.clone(), codebook * count[:, None], flat.clone(), 1.0)[0]
        match = (new[count < 1][:, None, :] == flat[None]).all(-1)           # (4, 16)
        if not match.any(1).all():
            return "a restarted code is not one of the batch's vectors"
        picks.append(match.float().argmax(1))                              # the row each dead code took
    picks = torch.stack(picks)                                             # (draws, 4)
    if (picks == picks[0]).all():
        return (f"restarts are the same rows every time ({draws} calls, each under another torch seed): "
                "draw them at random from the batch")
    if any(len(set(p)) < 4 for p in picks.tolist()):
        return "two restarted codes landed on the same vector: draw distinct vectors of the batch"
    hits = torch.bincount(picks.flatten(), minlength=16)                   # about draws * 4 / 16 each
    row, expected = int((hits - hits.float().mean()).abs().argmax()), draws * 4 // 16
    if not 0.4 * expected <= hits[row] <= 1.6 * expected:
        return (f"restarts favour some rows of the batch: in {draws} restarts of 4 codes from 16 rows, row {row} "
                f"was drawn {int(hits[row])} times where a uniform draw gives about {expected}: draw from the "
                "whole batch, every row alike")
    return None


def check_restart(fn: Callable, verbose: bool = True) -> CheckResult:
    """Lab 05: fn(codebook, count, total, flat, threshold) -> (codebook, count, total, n): codes
    whose count is below threshold (not at it) move onto distinct random vectors of flat, with
    count = threshold and total = threshold * vector; the others are untouched; n is how many
    moved. Then the draws: 200 calls under 200 torch seeds must pick rows at random, uniformly.
    Every call runs under a fixed torch seed (the same verdict every time); the caller's random
    state is restored afterwards."""
    name = "restart_dead_codes"
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            problem = _restart_trials(fn) or _draws_problem(fn)
    except NotImplementedError as e:
        return _report(CheckResult(name, False, f"not implemented yet ({e})"), verbose)
    except Exception as e:
        return _report(CheckResult(name, False, f"raised {type(e).__name__}: {e}"), verbose)
    if problem:
        return _report(CheckResult(name, False, problem), verbose)
    return _report(CheckResult(name, True, "dead codes (below the threshold, not at it) move onto distinct batch "
                               "vectors drawn at random, with the weight of the threshold, living ones stay, on "
                               "20 random codebooks and 200 seeds"), verbose)

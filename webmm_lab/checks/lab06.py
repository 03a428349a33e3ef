"""Checks for lab 06: DALL·E's pieces — the schedules of the dVAE's temperature and KL weight,
the gumbel-softmax sample with its temperature, the KL term to a uniform prior over the codes
(with logits large enough to underflow a naive log of the softmax), and the attention mask
over [caption, image] tokens. Forced cases come first (the schedules at done < 0, at the ends
of the ramps and past 1; gumbel-softmax at small and large temperatures, and refusing 0 and
negative ones), then random inputs from a fixed seed."""
from __future__ import annotations

from typing import Callable

import torch

from ..models.dalle import ATTENTION_KINDS, attention_mask
from ..models.dvae import DiscreteVAE, gumbel_softmax, kl_to_uniform
from . import Case, CheckResult, _report, check_function, check_raises, check_with_cases


def _logits(gen: torch.Generator) -> torch.Tensor:
    """Random logits (B, K, h, w): channels first, as an encoder gives them."""
    B, K, h, w = (int(torch.randint(lo, hi, (), generator=gen)) for lo, hi in ((1, 4), (2, 20), (1, 5), (1, 5)))
    return torch.randn(B, K, h, w, generator=gen) * 3


def _gumbel_inputs(gen: torch.Generator):
    logits = _logits(gen)
    tau = float(torch.rand((), generator=gen) * 1.9 + 0.05)
    u = torch.rand(logits.shape, generator=gen) * 0.998 + 0.001     # away from 0 and 1
    return logits, tau, u


def _gumbel_case(tau: float) -> Case:
    """Fixed logits and noise at temperature tau; the test says whether the largest value of
    each cell sits at the code with the largest logits + g, as it must for every tau > 0."""
    gen = torch.Generator().manual_seed(60)
    logits, u = torch.randn(2, 7, 3, 3, generator=gen) * 3, torch.rand(2, 7, 3, 3, generator=gen) * 0.998 + 0.001
    winner = (logits - torch.log(-torch.log(u))).argmax(1)                  # (2, 3, 3)
    ranked_wrong = lambda got: not torch.equal(got.argmax(1), winner)
    small = ("Small temperatures are where training ends (DALL·E anneals to 1/16): only tau <= 0 "
             "has no meaning" if tau < 0.1 else "")
    return Case(f"tau = {tau:g}", (logits, tau, u), why=small,
                mistakes=[(ranked_wrong, f"at tau = {tau:g} the largest value is not at the code with the "
                           "largest logits + g, g = -log(-log u): look at the signs; a temperature above 0 "
                           "sharpens or softens the sample but never changes which code wins")])


GUMBEL_CASES = [_gumbel_case(tau) for tau in (1.0, 0.5, 4.0, 1 / 16, 0.01)]
REFUSED = {0.0: "A temperature of 0 divides by 0: raise a ValueError that says so",
           -0.5: "A negative temperature reverses the ranking (the least likely code wins): refuse every "
                 "tau <= 0, not only 0",
           -2.0: "A negative temperature reverses the ranking: refuse every tau <= 0"}


def check_gumbel_softmax(fn: Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor],
                         verbose: bool = True, **kw) -> CheckResult:
    """Lab 06: fn(logits (B, K, h, w), tau, u) -> (B, K, h, w): softmax over the K codes of
    (logits + g) / tau with g = -log(-log u), at large and small temperatures; tau <= 0 (0 and
    negative ones alike) is a ValueError with a message."""
    result = check_with_cases(fn, lambda logits, tau, u: gumbel_softmax(logits, tau, dim=1, u=u), GUMBEL_CASES,
                              _gumbel_inputs, name="gumbel_softmax", trials=10, grad=True, verbose=False,
                              hint="turn the uniform noise into Gumbel noise first; the codes are dimension "
                              "1; where does the temperature act?", **kw)
    logits, _, u = GUMBEL_CASES[0].inputs
    for tau, hint in REFUSED.items():
        if not result:
            break
        bad = check_raises(fn, (logits.clone(), tau, u.clone()), name="gumbel_softmax", verbose=False, hint=hint)
        if not bad:
            result = CheckResult("gumbel_softmax", False, f"tau = {tau:g}: {bad.message}")
    if result:
        result.message += f"; refuses tau = {', '.join(f'{t:g}' for t in REFUSED)}"
    return _report(result, verbose)


def _schedule_inputs(gen: torch.Generator):
    r = lambda lo, hi: float(lo + (hi - lo) * torch.rand((), generator=gen))
    return dict(done=r(-0.05, 1.05), tau_start=r(0.5, 2.0), tau_end=r(0.02, 0.3),
                anneal_over=r(0.2, 1.0), kl_weight=r(0.0, 7.0), kl_warmup=r(0.01, 0.5))


def _reference_schedule(done, tau_start, tau_end, anneal_over, kl_weight, kl_warmup):
    d = DiscreteVAE(4, 4, 4, tau_start=tau_start, tau_end=tau_end, anneal_over=anneal_over,
                    kl_weight=kl_weight, kl_warmup=kl_warmup)
    return tuple(torch.tensor(v, dtype=torch.float64) for v in d.schedule(done))


DALLE_LIKE = dict(tau_start=1.0, tau_end=1 / 16, anneal_over=0.8, kl_weight=6.6, kl_warmup=0.1)


def _schedule_case(done: float) -> Case:
    """The schedule at `done` with DALL·E-like settings; outside [0, 1] the clamp is what shows."""
    if done < 0:
        why, test = ("Clamp done to [0, 1]: before training tau is tau_start and the KL weight 0",
                     lambda got: float(got[1]) < 0 or float(got[0]) > DALLE_LIKE["tau_start"])
        mistakes = [(test, f"done = {done:g} was not clamped to [0, 1]: before training tau must be tau_start "
                     "and the KL weight 0")]
    elif done > 1:
        why, test = ("Clamp done to [0, 1]: past the end tau stays at tau_end and the KL weight at kl_weight",
                     lambda got: float(got[0]) < DALLE_LIKE["tau_end"] or float(got[1]) > DALLE_LIKE["kl_weight"])
        mistakes = [(test, f"done = {done:g} was not clamped to [0, 1]: past the end tau must stay at tau_end "
                     "and the KL weight at kl_weight")]
    else:
        why, mistakes = "", []
    settings = ", ".join(f"{k} = {v:g}" for k, v in DALLE_LIKE.items())
    return Case(f"done = {done:g} with {settings}", dict(done=done, **DALLE_LIKE), why=why, mistakes=mistakes)


SCHEDULE_CASES = [_schedule_case(d) for d in (0.0, 0.05, 0.1, 0.4, 0.8, 1.0, -0.5, -0.01, 1.5, 3.0)]


def check_schedule(fn: Callable[..., tuple[float, float]], **kw) -> CheckResult:
    """Lab 06: fn(done, tau_start, tau_end, anneal_over, kl_weight, kl_warmup) -> (tau, kl):
    the temperature falls geometrically from tau_start to tau_end over the first `anneal_over`
    of training and then stays; the KL weight rises linearly from 0 to kl_weight over the first
    `kl_warmup` and then stays. `done` is the share of training done (clamp it to [0, 1]): the
    forced cases include done < 0 and done > 1 every time."""
    wrapped = lambda **a: tuple(torch.tensor(float(v), dtype=torch.float64) for v in fn(**a))
    return check_with_cases(wrapped, _reference_schedule, SCHEDULE_CASES, _schedule_inputs, name="schedule",
                            trials=40, atol=1e-6, rtol=1e-5,
                            hint="geometric means equal ratios for equal steps of training; check "
                            "done = 0, the end of each ramp, and beyond it", **kw)


def _kl_logits(gen: torch.Generator) -> tuple[torch.Tensor]:
    logits = _logits(gen)
    if torch.rand((), generator=gen) < 0.5:           # confident cells: softmax(...).log() underflows
        logits = logits * 100
    return (logits,)


def check_kl_to_uniform(fn: Callable[[torch.Tensor], torch.Tensor], **kw) -> CheckResult:
    """Lab 06: fn(logits (B, K, h, w)) -> scalar: KL(softmax(logits) || uniform over K), averaged
    over the grid cells of every image; half the trials have logits scaled by 100, where the
    softmax of some codes underflows to 0 and a naive log gives -inf or nan."""
    return check_function(fn, kl_to_uniform, _kl_logits, name="kl_to_uniform", trials=12,
                          grad=True, hint="KL(q || p) = sum_k q_k (log q_k - log p_k) with p_k = 1/K at "
                          "every cell, then the mean over cells; log_softmax is the stable way to log q", **kw)


def _describe(pos: int, text_len: int, grid: int) -> str:
    if pos < text_len:
        return f"caption token {pos}"
    j = pos - text_len
    return f"image token {j} (row {j // grid}, column {j % grid})"


def check_attention_mask(fn: Callable[[int, int, str, int], torch.Tensor], verbose: bool = True) -> CheckResult:
    """Lab 06: fn(text_len, grid, kind, kernel) -> (T, T) bool with T = text_len + grid**2,
    True where query position i may attend to key position j, for every kind in ATTENTION_KINDS."""
    name = "attention_mask"
    gen = torch.Generator().manual_seed(6)
    for trial in range(24):
        kind = ATTENTION_KINDS[trial % len(ATTENTION_KINDS)]
        L, G, k = (int(torch.randint(lo, hi, (), generator=gen)) for lo, hi in ((1, 7), (1, 6), (1, 3)))
        want = attention_mask(L, G, kind, kernel=k)
        try:
            got = fn(L, G, kind, k)
        except NotImplementedError as e:
            return _report(CheckResult(name, False, f"not implemented yet ({e})"), verbose)
        except Exception as e:
            return _report(CheckResult(name, False, f"{kind!r} mask raised {type(e).__name__}: {e}"), verbose)
        where = f"(kind {kind!r}, text_len {L}, grid {G}, kernel {k})"
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return _report(CheckResult(name, False, f"expected a tensor of shape {tuple(want.shape)}, got "
                                       f"{shape} {where}"), verbose)
        if got.dtype != torch.bool:
            return _report(CheckResult(name, False, f"expected dtype torch.bool (True = may attend), got "
                                       f"{got.dtype} {where}"), verbose)
        if not torch.equal(got, want):
            q, j = (int(i) for i in (got != want).nonzero()[0])
            verb = "may" if got[q, j] else "may not"
            return _report(CheckResult(name, False, f"in yours {_describe(q, L, G)} {verb} attend to "
                                       f"{_describe(j, L, G)}; the reference says the opposite {where}"), verbose)
    return _report(CheckResult(name, True, f"matches the reference for every kind ({', '.join(ATTENTION_KINDS)}) "
                               "on 24 random sizes"), verbose)

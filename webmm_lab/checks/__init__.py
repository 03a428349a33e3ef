"""Checks for the labs: compare a student's function with the package's reference on forced
edge cases (`Case`: the inputs where an off-by-one, a `<=` for `<`, a missing clamp or a wrong
sign shows) and on random inputs from a fixed seed, and print PASS or a specific FAIL (shape,
dtype, worst value difference, the mistake a case recognises, hint). This file holds the
machinery; each lab's checks live in labNN.py beside it. Under `webmm-lab grade` every line
printed here carries a seal (see webmm_lab/seal.py).

    from webmm_lab.checks.lab00 import check_softmax
    check_softmax(my_softmax)   # PASS softmax: matches torch.softmax on 5 random inputs ...
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..seal import seal


@dataclass
class CheckResult:
    """The outcome of one check; truthy when it passed."""
    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.message}"


def _report(result: CheckResult, verbose: bool) -> CheckResult:
    if verbose:
        print(seal(str(result)))
    return result


def _clone(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().clone().requires_grad_(x.requires_grad)
    if isinstance(x, (tuple, list)):
        return type(x)(_clone(v) for v in x)
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return x


def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _tensors(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    return []


def _call(fn: Callable, inputs: Any) -> Any:
    return fn(**inputs) if isinstance(inputs, dict) else fn(*inputs)


def compare_outputs(got: Any, want: Any, atol: float, rtol: float, what: str = "output") -> str | None:
    """None if `got` matches `want`, else a sentence saying how it differs."""
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"{what}: expected a {type(want).__name__} of {len(want)} items, got {got!r:.80}"
        for i, (g, w) in enumerate(zip(got, want)):
            if (msg := compare_outputs(g, w, atol, rtol, f"{what}[{i}]")) is not None:
                return msg
        return None
    if not isinstance(want, torch.Tensor):
        return None if got == want else f"{what}: expected {want!r}, got {got!r}"
    if not isinstance(got, torch.Tensor):
        return f"{what}: expected a tensor, got {type(got).__name__}"
    if got.shape != want.shape:
        return f"{what}: wrong shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    if got.dtype != want.dtype:
        return f"{what}: wrong dtype {got.dtype}, expected {want.dtype}"
    g, w = got.detach().double(), want.detach().double()
    if not torch.isfinite(g).all() and torch.isfinite(w).all():
        bad = tuple(int(i) for i in (~torch.isfinite(g)).nonzero()[0])
        return f"{what}: non-finite value {g[bad].item()} at index {bad} (overflow? try subtracting the max)"
    g_inf, w_inf = ~torch.isfinite(g), ~torch.isfinite(w)
    odd = (g_inf != w_inf) | (g_inf & w_inf & (g.nan_to_num(0, 1, -1) != w.nan_to_num(0, 1, -1)))
    if odd.any():                # e.g. a logit masked with -inf in one and not the other
        where = tuple(int(i) for i in odd.nonzero()[0])
        return (f"{what}: {int(odd.sum())} entries differ in being inf/nan, first at index {where}: "
                f"yours {g[where].item():.6g}, reference {w[where].item():.6g}")
    g, w = g.masked_fill(g_inf, 0), w.masked_fill(w_inf, 0)
    diff = (g - w).abs()
    tol = atol + rtol * w.abs()
    if (diff > tol).any():
        worst = tuple(int(i) for i in (diff == diff.max()).nonzero()[0])
        return (f"{what}: values differ; worst |difference| {diff.max().item():.3g} at index "
                f"{worst}: yours {g[worst].item():.6g}, reference {w[worst].item():.6g}")
    return None


def check_function(student: Callable, reference: Callable, make_inputs: Callable[[torch.Generator], Any],
                   *, name: str, trials: int = 5, atol: float = 1e-5, rtol: float = 1e-4,
                   grad: bool = False, hint: str = "", seed: int | None = None,
                   verbose: bool = True) -> CheckResult:
    """Compare `student(*inputs)` with `reference(*inputs)` on `trials` fresh random inputs.

    make_inputs(generator) returns a tuple (positional) or dict (keyword) of arguments. With
    `grad=True` the gradients with respect to floating-point inputs must match too.
    """
    seed = int(torch.randint(2**31 - 1, ())) if seed is None else seed
    gen = torch.Generator().manual_seed(seed)
    for trial in range(trials):
        inputs = make_inputs(gen)
        if grad:
            for t in _tensors(inputs):
                if t.is_floating_point():
                    t.requires_grad_(True)
        mine, ref = _clone(inputs), _clone(inputs)
        try:
            got = _call(student, mine)
        except NotImplementedError as e:
            return _report(CheckResult(name, False, f"not implemented yet ({e})"), verbose)
        except Exception as e:
            return _report(CheckResult(name, False, f"raised {type(e).__name__}: {e}. "
                                       f"{'Hint: ' + hint if hint else ''}".strip()), verbose)
        want = _call(reference, ref)
        msg = compare_outputs(got, want, atol, rtol)
        if msg is None and grad:
            w_outs = _tensors(want)
            weights = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in w_outs]
            g_outs = _tensors(got)
            if not all(o.requires_grad for o in g_outs):
                msg = "output is detached from the inputs: gradients cannot flow (avoid .detach(), .item(), numpy)"
            else:
                sum((o * w).sum() for o, w in zip(g_outs, weights)).backward()
                sum((o * w).sum() for o, w in zip(w_outs, weights)).backward()
                for i, (a, b) in enumerate(zip(_tensors(mine), _tensors(ref))):
                    if b.grad is not None and msg is None:
                        got_grad = a.grad if a.grad is not None else torch.zeros_like(b.grad)
                        msg = compare_outputs(got_grad, b.grad, atol * 10, rtol * 10,
                                              f"gradient of input {i}")
        if msg is not None:
            shapes = ", ".join(str(tuple(t.shape)) for t in _tensors(inputs))
            text = f"{msg} (trial {trial + 1}, input shapes {shapes}, seed {seed})"
            return _report(CheckResult(name, False, text + (f". Hint: {hint}" if hint else "")), verbose)
    return _report(CheckResult(name, True, f"matches the reference on {trials} random inputs"
                               + (" (values and gradients)" if grad else "")), verbose)


@dataclass
class Case:
    """A forced input: `what` it is (said in a FAIL), its arguments (a tuple, or a dict of
    keywords), `why` it is there (said when it fails), and `mistakes`: pairs (test, sentence)
    where test(your output) recognises a known wrong implementation and the sentence names it."""
    what: str
    inputs: Any
    why: str = ""
    mistakes: Sequence[tuple[Callable[[Any], bool], str]] = ()

    def named_mistake(self, got: Any) -> str | None:
        """The sentence of the first mistake whose test recognises `got`, if any."""
        for test, sentence in self.mistakes:
            try:
                if test(got):
                    return sentence
            except Exception:                    # an output of another shape: not this mistake
                continue
        return None


def failed_case(student: Callable, reference: Callable, cases: Sequence[Case], *,
                atol: float = 1e-5, rtol: float = 1e-4, hint: str = "") -> str | None:
    """None if `student` matches `reference` on every case, else what went wrong on the first
    case that fails: the mistake it recognises, or the case, the difference and why it matters
    (the case's `why`, else the hint)."""
    for case in cases:
        why = case.why or (f"Hint: {hint}" if hint else "")
        try:
            got = _call(student, _clone(case.inputs))
        except NotImplementedError as e:
            return f"not implemented yet ({e})"
        except Exception as e:
            return f"{case.what}: raised {type(e).__name__}: {e}. {why}".strip()
        msg = compare_outputs(got, _call(reference, _clone(case.inputs)), atol, rtol)
        if msg is not None:
            named = case.named_mistake(got)
            return f"{named} ({case.what}; {msg})" if named else f"{case.what}: {msg}. {why}".strip()
    return None


def check_with_cases(student: Callable, reference: Callable, cases: Sequence[Case],
                     make_inputs: Callable[[torch.Generator], Any], *, name: str, seed: int | None = 0,
                     verbose: bool = True, **kw) -> CheckResult:
    """`failed_case` on the forced cases, then `check_function` on random inputs from `seed`
    (fixed by default: the verdict does not depend on luck)."""
    problem = failed_case(student, reference, cases, atol=kw.get("atol", 1e-5), rtol=kw.get("rtol", 1e-4),
                          hint=kw.get("hint", ""))
    if problem is not None:
        return _report(CheckResult(name, False, problem), verbose)
    result = check_function(student, reference, make_inputs, name=name, seed=seed, verbose=False, **kw)
    if result:
        result.message = result.message.replace(" on ", f" on {len(cases)} edge cases and ", 1)
    return _report(result, verbose)


def check_raises(student: Callable, inputs: Any, errors: tuple[type[BaseException], ...] = (ValueError,),
                 *, name: str, hint: str = "", verbose: bool = True) -> CheckResult:
    """PASS if `student(*inputs)` raises one of `errors` with a message (a clear error)."""
    try:
        _call(student, inputs)
    except NotImplementedError as e:
        return _report(CheckResult(name, False, f"not implemented yet ({e})"), verbose)
    except errors as e:
        if str(e).strip():
            return _report(CheckResult(name, True, f"raises {type(e).__name__}: {e}"), verbose)
        return _report(CheckResult(name, False, f"raises {type(e).__name__} with no message; "
                                   "say what is wrong and what to do"), verbose)
    except Exception as e:
        return _report(CheckResult(name, False, f"raised {type(e).__name__} ({e}); expected "
                                   f"{' or '.join(x.__name__ for x in errors)}"), verbose)
    return _report(CheckResult(name, False, f"returned normally; expected "
                               f"{' or '.join(x.__name__ for x in errors)}. {hint}".strip()), verbose)

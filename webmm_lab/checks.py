"""Checks for the labs: compare a student's function with the package's reference on fresh
random inputs, and print PASS or a specific FAIL (shape, dtype, worst value difference, hint).

    check_softmax(my_softmax)   # PASS softmax: matches torch.softmax on 5 random inputs ...
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F


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
        print(result)
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


# ---------------------------------------------------------------------------------------------
# Lab 00: softmax and cross-entropy by hand

def _logits(gen: torch.Generator) -> tuple[torch.Tensor]:
    rows, cols = (int(v) for v in torch.randint(1, 13, (2,), generator=gen))
    scale = float(torch.tensor([1.0, 10.0, 300.0])[torch.randint(3, (), generator=gen)])
    return (torch.randn(rows, cols, generator=gen) * scale,)


def check_softmax(fn: Callable[[torch.Tensor], torch.Tensor], **kw) -> CheckResult:
    """Lab 00: softmax over the last dimension of (N, C) logits, stable for large logits."""
    return check_function(fn, lambda x: torch.softmax(x, dim=-1), _logits, name="softmax",
                          grad=True, hint="exp(x - max) / sum over the last dim; keepdim=True "
                          "keeps the shapes broadcastable", **kw)


def _logits_targets(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    (x,) = _logits(gen)
    return x, torch.randint(x.shape[1], (x.shape[0],), generator=gen)


def check_cross_entropy(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], **kw) -> CheckResult:
    """Lab 00: mean cross-entropy of (N, C) logits against (N,) integer targets."""
    return check_function(fn, F.cross_entropy, _logits_targets, name="cross_entropy", grad=True,
                          hint="log-softmax via logsumexp, pick each row's target entry, "
                          "average the negatives", **kw)


# ---------------------------------------------------------------------------------------------
# Lab 01: augmentations and the InfoNCE loss

def _images(gen: torch.Generator) -> torch.Tensor:
    b, h = int(torch.randint(1, 9, (), generator=gen)), int(torch.randint(5, 13, (), generator=gen))
    return torch.rand(b, 1, h, h, generator=gen)


def check_affine(fn: Callable, **kw) -> CheckResult:
    """Lab 01: fn(x, angle, scale, tx, ty) rotates, zooms and shifts a batch like augment.affine."""
    from .augment import affine

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
    from .contrastive import info_nce

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


# ---------------------------------------------------------------------------------------------
# Lab 02: causal self-attention, a BPE merge step, top-p sampling

def reference_attention(x: torch.Tensor, w_qkv: torch.Tensor, b_qkv: torch.Tensor,
                        w_proj: torch.Tensor, b_proj: torch.Tensor, n_head: int) -> torch.Tensor:
    """The package's CausalSelfAttention with the given weights (nn.Linear layout: (out, in))."""
    from .models.gpt import CausalSelfAttention, GPTConfig

    attn = CausalSelfAttention(GPTConfig(vocab_size=1, n_head=n_head, n_embd=x.shape[-1]))
    with torch.no_grad():
        attn.qkv.weight.copy_(w_qkv), attn.qkv.bias.copy_(b_qkv)
        attn.proj.weight.copy_(w_proj), attn.proj.bias.copy_(b_proj)
    return attn(x)


def _attention_inputs(gen: torch.Generator):
    b, t = (int(v) for v in torch.randint(1, 6, (2,), generator=gen))
    t = 2 * t + 1                                     # odd lengths
    n_head, hs = int(torch.randint(1, 4, (), generator=gen)), int(torch.randint(2, 6, (), generator=gen))
    c = n_head * hs
    r = lambda *s: torch.randn(*s, generator=gen) * 0.5
    return (r(b, t, c), r(3 * c, c), r(3 * c), r(c, c), r(c), n_head)


def check_attention(fn: Callable, **kw) -> CheckResult:
    """Lab 02: multi-head causal self-attention, fn(x, w_qkv, b_qkv, w_proj, b_proj, n_head),
    equal to the package's and blind to the future."""
    verbose = kw.pop("verbose", True)
    result = check_function(fn, reference_attention, _attention_inputs, name="attention", atol=1e-5,
                            grad=True, verbose=False, hint="qkv = x @ w_qkv.T + b_qkv; split into "
                            "heads (B, nh, T, hs); scores / sqrt(hs); mask s > t with -inf; softmax; "
                            "weights @ v; merge heads; project", **kw)
    if not result:
        return _report(result, verbose)
    gen = torch.Generator().manual_seed(kw.get("seed") or 0)
    x, *weights = _attention_inputs(gen)
    t = x.shape[1] // 2
    later = x.clone()
    later[:, t:] += torch.randn(later[:, t:].shape, generator=gen)
    with torch.no_grad():
        leak = (fn(x, *weights) - fn(later, *weights))[:, :t].abs().max().item()
    if leak > 1e-6:
        return _report(CheckResult("attention", False, f"position < {t} changed by {leak:.3g} when only "
                                   f"positions >= {t} changed: the mask lets the past see the future"), verbose)
    return _report(CheckResult("attention", True, result.message + "; no position sees the future"), verbose)


def _merge_inputs(gen: torch.Generator):
    n, v = int(torch.randint(0, 30, (), generator=gen)), int(torch.randint(2, 5, (), generator=gen))
    ids = torch.randint(v, (n,), generator=gen).tolist()
    pair = tuple(torch.randint(v, (2,), generator=gen).tolist())
    return (ids, pair, 99)


def check_merge(fn: Callable[[list[int], tuple[int, int], int], list[int]], **kw) -> CheckResult:
    """Lab 02: one BPE merge step on a list of ids (non-overlapping, left to right)."""
    import numpy as np

    from .tokenizers import merge_pair

    def reference(ids, pair, new_id):
        out, _ = merge_pair(np.array(ids, dtype=np.int64), np.zeros(len(ids), dtype=np.int64), pair, new_id)
        return out.tolist()
    return check_function(fn, reference, _merge_inputs, name="merge", trials=50,
                          hint="walk left to right; when ids[i], ids[i+1] == pair, emit new_id and "
                          "skip two, else emit ids[i] and skip one ('aaa' -> 'Za', not 'ZZ')", **kw)


def _logits_p(gen: torch.Generator):
    b, v = int(torch.randint(1, 5, (), generator=gen)), int(torch.randint(2, 40, (), generator=gen))
    p = float(torch.rand((), generator=gen) * 0.98 + 0.01)
    return (torch.randn(b, v, generator=gen) * 2, p)


def check_top_p(fn: Callable[[torch.Tensor, float], torch.Tensor], **kw) -> CheckResult:
    """Lab 02: nucleus filtering: keep the smallest set of top tokens with probability >= p."""
    from .models.sampling import top_p_filter

    return check_function(fn, top_p_filter, _logits_p, name="top_p", trials=20,
                          hint="sort descending, softmax, cumulative sum; drop a token when the mass "
                          "*before* it already reaches p; scatter the mask back; fill with -inf", **kw)


# ---------------------------------------------------------------------------------------------
# Lab 07: CLIP's loss and the zero-shot classifier

def _clip_inputs(gen: torch.Generator):
    n, d = int(torch.randint(2, 17, (), generator=gen)), int(torch.randint(2, 33, (), generator=gen))
    scale = float(torch.tensor([0.0, 1.0, 2.659, 4.605])[torch.randint(4, (), generator=gen)])
    return (torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen), torch.tensor(scale))


def check_clip_loss(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], **kw) -> CheckResult:
    """Lab 07: fn(image, text, logit_scale) is CLIP's symmetric loss (values, gradients, the
    learned scale), and equals ln(N) when all embeddings are identical."""
    from .contrastive import clip_loss

    verbose = kw.pop("verbose", True)
    result = check_function(fn, lambda i, t, s: clip_loss(i, t, s, gather=False), _clip_inputs,
                            name="clip_loss", grad=True, verbose=False,
                            hint="normalise rows; logits = exp(logit_scale) * image @ text.T; "
                            "labels 0..N-1; mean of the cross-entropies of logits and logits.T", **kw)
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
    from .models.clip import zero_shot_weights

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
                          hint="per class: embed each filled template, normalise each, average, "
                          "normalise again; stack the classes as columns (D, C)", **kw)

"""Checks for lab 08: the keyword filter, the embedding de-duplicator and the CLIP-score filter,
each checked on a freshly built mini web (its planted ground truth; the de-duplicator's rule also
against the package's on random embeddings), and GradCache, whose gradients must equal the
whole batch's."""
from __future__ import annotations

from typing import Callable

import torch

from ..data.web import BLOCKLIST, build_web
from ..experiments.dedup import colour_histograms, dedup_by_embedding
from ..experiments.web import choose_threshold, full_batch_gradients, max_difference, score_filter
from ..models.clip import TinyCLIP
from ..models.contrastive import clip_loss
from . import CheckResult, _report


def _failed(name: str, verbose: bool, message: str) -> CheckResult:
    return _report(CheckResult(name, False, message), verbose)


def _call(name: str, verbose: bool, fn: Callable, *args):
    try:
        return fn(*args), None
    except NotImplementedError as e:
        return None, _failed(name, verbose, f"not implemented yet ({e})")
    except Exception as e:
        return None, _failed(name, verbose, f"raised {type(e).__name__}: {e}")


def _bool_mask(name: str, verbose: bool, out, n: int):
    if not isinstance(out, torch.Tensor) or out.shape != (n,) or out.dtype != torch.bool:
        shape = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
        return _failed(name, verbose, f"return a (n,) = ({n},) bool tensor, True = remove; got {shape}")
    return None


def check_keyword_filter(fn: Callable[[list[str], tuple[str, ...]], torch.Tensor], verbose: bool = True) -> CheckResult:
    """Lab 08: fn(captions, blocklist) -> (n,) bool, True = blocked. On a fresh mini web it must
    catch at least 95 % of the blocked pairs (every form) and remove at most 2 % of the clean
    captions that carry near-miss words, and at most 1 % of the other clean captions."""
    name = "keyword_filter"
    web = build_web(1500, seed=int(torch.randint(1000, ())))
    out, bad = _call(name, verbose, fn, web.captions, BLOCKLIST)
    if bad is not None:
        return bad
    if (bad := _bool_mask(name, verbose, out, len(web))) is not None:
        return bad
    truth = web.mask("blocked")
    s = score_filter(out, truth)
    missed = [(web.form[i], web.captions[i]) for i in (truth & ~out).nonzero().flatten().tolist()]
    near = 100 * out[web.near_miss].float().mean().item()
    other = 100 * out[~truth & ~web.near_miss].float().mean().item()
    if s["recall"] < 95:
        forms = sorted({f for f, _ in missed})
        return _failed(name, verbose, f"caught {s['recall']:.1f}% of the blocked pairs (need 95%); missed forms "
                       f"{forms}, e.g. {missed[0][1]!r}")
    if near > 2:
        example = next(web.captions[i] for i in (out & web.near_miss).nonzero().flatten().tolist())
        return _failed(name, verbose, f"removed {near:.1f}% of the clean captions with near-miss words (at most 2%), "
                       f"e.g. {example!r}: match whole words, not pieces of words")
    if other > 1:
        example = next(web.captions[i] for i in (out & ~truth & ~web.near_miss).nonzero().flatten().tolist())
        return _failed(name, verbose, f"removed {other:.1f}% of the other clean captions, e.g. {example!r}")
    return _report(CheckResult(name, True, f"recall {s['recall']:.1f}% of {int(truth.sum())} blocked pairs, "
                               f"{near:.1f}% of near-miss captions removed, on a fresh mini web"), verbose)


def check_dedup(fn: Callable[[torch.Tensor, float], torch.Tensor], verbose: bool = True) -> CheckResult:
    """Lab 08: fn(embeddings (n, d), threshold) -> (n,) bool, True = remove: an item whose cosine
    similarity with an earlier item is at least `threshold` (the first of every group kept).
    Checked on random embeddings with planted near-copies, against the package's rule."""
    name = "dedup"
    gen = torch.Generator().manual_seed(8)
    web = build_web(400, seed=int(torch.randint(1000, ())))          # a fresh mini web, last trial
    for trial in range(11):
        n, d = int(torch.randint(5, 300, (), generator=gen)), int(torch.randint(2, 24, (), generator=gen))
        base = torch.randn(n, d, generator=gen) * (1 + 4 * torch.rand(n, 1, generator=gen))  # lengths vary
        copies = torch.randint(n, (n // 4,), generator=gen)
        emb = torch.cat([base, base[copies] * 2 + 0.05 * torch.randn(len(copies), d, generator=gen)])
        emb = emb[torch.randperm(len(emb), generator=gen)]
        threshold = float(0.9 + 0.09 * torch.rand((), generator=gen))
        if trial == 10:                                                 # the web's images, as notebook 08
            emb, threshold = colour_histograms(web.images), 0.96
        out, bad = _call(name, verbose, fn, emb.clone(), threshold)
        if bad is not None:
            return bad
        if (bad := _bool_mask(name, verbose, out, len(emb))) is not None:
            return bad
        want = dedup_by_embedding(emb, threshold)
        if not torch.equal(out, want):
            i = int((out != want).nonzero()[0])
            e = torch.nn.functional.normalize(emb, dim=1)
            best = (e[:i] @ e[i]).max().item() if i else float("nan")
            what = "removed" if out[i] else "kept"
            return _failed(name, verbose, f"item {i} {what}, but its largest cosine similarity with an earlier item is "
                           f"{best:.4f} (threshold {threshold:.4f}; trial {trial + 1}, {len(emb)} items). Compare "
                           "directions (cosine), not raw dot products, and only with earlier items")
    return _report(CheckResult(name, True, "removes exactly the items close to an earlier one, on 10 random sets "
                               "with planted copies and a fresh mini web's images"), verbose)


def check_clip_score_filter(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[float, torch.Tensor]],
                            verbose: bool = True) -> CheckResult:
    """Lab 08: fn(val_scores (m,), val_bad (m,) bool, scores (n,)) -> (threshold, removed (n,)
    bool): the threshold that classifies the most validation pairs right (bad below it), then
    every pair scoring below it removed."""
    name = "clip_score_filter"
    gen = torch.Generator().manual_seed(9)
    webs = [build_web(400, seed=int(torch.randint(1000, ()))) for _ in range(2)]   # fresh mini webs
    for trial in range(10):
        def draw(web):     # a score per pair: wrong pairs (mismatched, boilerplate) score lower
            bad = web.mask("mismatched", "boilerplate")
            k = int(torch.randint(20, len(web), (), generator=gen))
            bad = bad[torch.randperm(len(web), generator=gen)[:k]]
            return torch.where(bad, 0.2, 0.6) + 0.15 * torch.randn(k, generator=gen), bad
        val_scores, val_bad = draw(webs[0])
        scores, _ = draw(webs[1])
        n = len(scores)
        out, bad = _call(name, verbose, fn, val_scores.clone(), val_bad.clone(), scores.clone())
        if bad is not None:
            return bad
        if not (isinstance(out, tuple) and len(out) == 2):
            return _failed(name, verbose, "return a tuple (threshold, removed)")
        threshold, removed = float(out[0]), out[1]
        if (bad := _bool_mask(name, verbose, removed, n)) is not None:
            return bad
        right = lambda t: ((val_scores < t) == val_bad).float().mean().item()
        best = right(choose_threshold(val_scores, val_bad))
        if right(threshold) < best - 1e-9:
            return _failed(name, verbose, f"threshold {threshold:.3f} sorts {100 * right(threshold):.1f}% of the validation "
                           f"pairs right, but {100 * best:.1f}% is possible (trial {trial + 1}); try every score as a threshold")
        if not torch.equal(removed, scores < threshold):
            return _failed(name, verbose, "removed must be exactly the pairs scoring below the threshold")
    return _report(CheckResult(name, True, "the best validation threshold, applied, on 10 random score sets"), verbose)


def check_grad_cache(fn: Callable, verbose: bool = True) -> CheckResult:
    """Lab 08: fn(model, batch (images, ids, lengths), k) -> the gradients (a list, in the order
    of model.parameters()) of CLIP's loss over the WHOLE batch, computed k micro-batches at a
    time as GradCache does. They must equal the whole batch's gradients to 1e-5, the logit
    scale's included."""
    name = "grad_cache"
    gen = torch.Generator().manual_seed(10)
    for trial in range(8):
        torch.manual_seed(int(torch.randint(10_000, (), generator=gen)))
        model = TinyCLIP()
        k = int(torch.randint(2, 5, (), generator=gen))
        n = k * int(torch.randint(2, 9, (), generator=gen))
        lengths = torch.randint(1, 6, (n,), generator=gen)
        batch = (torch.randn(n, 3, 4, 4, generator=gen), torch.randint(20, (n, 5), generator=gen), lengths)
        want = full_batch_gradients(model, lambda m, b: clip_loss(*m(*b), m.logit_scale), batch)
        got, bad = _call(name, verbose, fn, model, batch, k)
        if bad is not None:
            return bad
        got = list(got) if isinstance(got, (list, tuple)) else None
        if got is None or len(got) != len(want) or any(g is None or g.shape != w.shape for g, w in zip(got, want)):
            return _failed(name, verbose, f"return a list of {len(want)} gradients, one per parameter of the model "
                           "(in the order of model.parameters()), each of that parameter's shape")
        diff = max_difference(got, want)
        if diff > 1e-5:
            names = [p for p, _ in model.named_parameters()]
            worst = max(range(len(want)), key=lambda i: (got[i] - want[i]).abs().max().item())
            return _failed(name, verbose, f"gradients differ from the whole batch's by up to {diff:.2e} (worst: "
                           f"{names[worst]}; trial {trial + 1}, batch {n} in {k} micro-batches). Hint: the loss "
                           "must see every micro-batch's features at once; only the second pass needs a graph")
    return _report(CheckResult(name, True, "equals the whole batch's gradients (logit scale included) on 8 random "
                               "batches and splits"), verbose)

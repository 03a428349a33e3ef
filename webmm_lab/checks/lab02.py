"""Checks for lab 02: causal self-attention, a BPE merge step, top-p sampling."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..data.tokenizers import merge_pair
from ..metrics import bigram_loss
from ..models.gpt import CausalSelfAttention, GPTConfig
from ..models.sampling import top_p_filter
from . import CheckResult, _report, check_function


def reference_attention(x: torch.Tensor, w_qkv: torch.Tensor, b_qkv: torch.Tensor,
                        w_proj: torch.Tensor, b_proj: torch.Tensor, n_head: int) -> torch.Tensor:
    """The package's CausalSelfAttention with the given weights (nn.Linear layout: (out, in))."""
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
                            grad=True, verbose=False, hint="PyTorch's linear layers compute x @ W.T + b; "
                            "each head attends within its own slice of the channels; compare your "
                            "shapes with the docstring at every step", **kw)
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
    def reference(ids, pair, new_id):
        out, _ = merge_pair(np.array(ids, dtype=np.int64), np.zeros(len(ids), dtype=np.int64), pair, new_id)
        return out.tolist()
    return check_function(fn, reference, _merge_inputs, name="merge", trials=50,
                          hint="merges never overlap: once two ids merged, neither can take part "
                          "in another merge ('aaa' -> 'Za', not 'ZZ')", **kw)


def _logits_p(gen: torch.Generator):
    b, v = int(torch.randint(1, 5, (), generator=gen)), int(torch.randint(2, 40, (), generator=gen))
    p = float(torch.rand((), generator=gen) * 0.98 + 0.01)
    return (torch.randn(b, v, generator=gen) * 2, p)


def check_top_p(fn: Callable[[torch.Tensor, float], torch.Tensor], **kw) -> CheckResult:
    """Lab 02: nucleus filtering: keep the smallest set of top tokens with probability >= p."""
    return check_function(fn, top_p_filter, _logits_p, name="top_p", trials=20,
                          hint="decide in sorted order, answer in the original order; the most "
                          "likely token always stays, even when its probability alone exceeds p", **kw)


def _bigram_inputs(gen: torch.Generator):
    v = int(torch.randint(2, 12, (), generator=gen))
    n, m = (int(x) for x in torch.randint(2, 300, (2,), generator=gen))
    skew = torch.rand(v, generator=gen) ** 3 + 1e-3              # some tokens rare, some pairs unseen
    draw = lambda k: torch.multinomial(skew, k, replacement=True, generator=gen)
    return (draw(n), draw(m), v)


def check_bigram_loss(fn: Callable[[torch.Tensor, torch.Tensor, int], float], **kw) -> CheckResult:
    """Lab 02: fn(train_ids, val_ids, vocab_size) is the validation cross-entropy (nats per
    token) of an add-one-smoothed bigram model counted from train_ids."""
    return check_function(lambda *a: torch.tensor(float(fn(*a)), dtype=torch.float64),
                          lambda *a: torch.tensor(bigram_loss(*a), dtype=torch.float64), _bigram_inputs,
                          name="bigram_loss", trials=20, atol=1e-4,
                          hint="pairs never seen in training still need a probability above zero, "
                          "and each row of probabilities must sum to one", **kw)


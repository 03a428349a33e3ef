"""Baselines that learn nothing but counts or lookups: what a sceptic tries first against a
trained model. Each takes tensors and returns one number.

    kneser_ney_loss(train_ids, val_ids, vocab_size, n=5)    # nats per token, an n-gram model
    nearest_neighbour_accuracy(train_x, train_y, test_x, test_y)   # 1-NN on the features as given
"""
from __future__ import annotations

import torch

from .ids import check_ids


def lookup(table: torch.Tensor, values: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """The value of each query among the sorted unique keys `table` with their `values` (a
    count, say), 0 where a query is not a key: a binary search, so only the keys that occur
    are stored."""
    idx = torch.searchsorted(table, queries).clamp(max=len(table) - 1)
    return torch.where(table[idx] == queries, values[idx], torch.zeros_like(values[idx]))


def kneser_ney_loss(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int, n: int = 5,
                    discount: float = 0.75) -> float:
    """Mean cross-entropy (nats per token) on `val_ids` of an n-gram model counted from
    `train_ids` with interpolated Kneser-Ney smoothing (Chen & Goodman, 1998): the strongest
    counting baseline. The highest order uses counts; each lower order counts how many distinct
    tokens precede an n-gram (its continuations), and every order gives `discount` of each count
    to the order below. The first n - 1 validation tokens are not scored."""
    V = vocab_size
    if n < 1 or V ** n >= 2 ** 62:
        raise ValueError(f"n = {n} with {V} tokens: n must be >= 1 and vocab_size ** n < 2 ** 62")
    if len(train_ids) < n or len(val_ids) < n:
        raise ValueError(f"a {n}-gram model needs at least {n} training and {n} validation tokens")
    check_ids(train_ids, V)
    check_ids(val_ids, V)

    def codes(ids: torch.Tensor, k: int) -> torch.Tensor:           # (len - k + 1,) k-grams as integers
        out = torch.zeros(len(ids) - k + 1, dtype=torch.long)
        for j in range(k):
            out = out * V + ids[j:len(ids) - k + 1 + j].long()
        return out

    grams = {k: torch.unique(codes(train_ids, k), return_counts=True) for k in range(1, n + 1)}
    N_val = len(val_ids) - n + 1
    p = torch.full((N_val,), 1.0 / V, dtype=torch.float64)                           # order 0: uniform
    for k in range(1, n + 1):
        g, c = grams[k]                                                              # k-grams, counts
        if k < n:                                                   # continuation counts: distinct left tokens
            g, c = torch.unique(grams[k + 1][0] % V ** k, return_counts=True)
        ctx, inv = torch.unique(g // V, return_inverse=True)                          # contexts of length k - 1
        tot = torch.zeros(len(ctx), dtype=torch.float64).index_add_(0, inv, c.double())
        types = torch.bincount(inv, minlength=len(ctx)).double()
        q = codes(val_ids, k)[n - k:]                                                 # (N_val,) k-grams ending at each target
        t = lookup(ctx, tot, q // V)
        seen = t > 0
        lam = discount * lookup(ctx, types, q // V) / t.clamp(min=1)
        here = (lookup(g, c.double(), q) - discount).clamp(min=0) / t.clamp(min=1)
        p = torch.where(seen, here + lam * p, p)
    return -p.log().mean().item()


def nearest_neighbour_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                               test_y: torch.Tensor, chunk: int = 1024) -> float:
    """Test accuracy of the 1-nearest-neighbour classifier (Euclidean distance on the features as
    given): each test example takes the label of its closest training example. No training,
    no parameters: the sceptic's first baseline for any classifier."""
    if train_x.dim() != 2 or test_x.dim() != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {tuple(train_x.shape)} "
                         f"and {tuple(test_x.shape)}: flatten images first")
    nearest = torch.cat([torch.cdist(t.float(), train_x.float()).argmin(1)         # (chunk,)
                         for t in test_x.split(chunk)])
    return (train_y[nearest] == test_y).float().mean().item()


"""How the course measures: the mean loss of a model over many batches, and the baselines that
learn nothing but counts or lookups, what a sceptic tries first against a trained model. Each
baseline takes tensors and returns one number.

    with evaluating(model) as device:                        # webmm_lab.device
        mean_loss((model(x.to(device), y.to(device))[1], (y >= 0).sum()) for x, y in windows)
    unigram_loss(train_ids, val_ids, vocab_size)             # nats per token: how common each token is
    bigram_loss(train_ids, val_ids, vocab_size)              # ... and which follows which
    kneser_ney_loss(train_ids, val_ids, vocab_size, n=5)     # ... an n-gram model, the strongest counter
    nearest_neighbour_accuracy(train_x, train_y, test_x, test_y)   # 1-NN on the features as given
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .ids import check_ids
from .kmeans import nearest


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy of a batch (inputs, targets): a `loss_fn` for `train`."""
    return model(*batch)[1]


def mean_loss(losses: Iterable[tuple[torch.Tensor, torch.Tensor | int]]) -> float | tuple[float, ...]:
    """The mean of many batches' losses, each weighted by what it scored: `losses` yields (the
    batch's mean loss, a scalar or a (k,) tensor of k losses, and how many tokens or rows it
    scored; at least one in all). Summed in float64 on the device, read back once at the end; a
    tuple for k losses."""
    total, count = 0.0, 0
    for loss, n in losses:
        total = total + loss.detach().double() * n
        count = count + n
    if isinstance(count, int) and count == 0:
        raise ValueError("no losses to average: the evaluation set gave no batches")
    mean = (total / count).cpu()
    return mean.item() if mean.dim() == 0 else tuple(mean.tolist())


def lookup(table: torch.Tensor, values: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """The value of each query among the sorted unique keys `table` with their `values` (a
    count, say), 0 where a query is not a key: a binary search, so only the keys that occur
    are stored."""
    idx = torch.searchsorted(table, queries).clamp(max=len(table) - 1)
    return torch.where(table[idx] == queries, values[idx], torch.zeros_like(values[idx]))


def bigram_loss(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int) -> float:
    """Mean cross-entropy (nats per token) on `val_ids` of a bigram model counted from
    `train_ids` with add-one smoothing: P(b | a) = (count(a, b) + 1) / (count(a) + V)."""
    if min(len(train_ids), len(val_ids)) < 2:
        raise ValueError("a bigram model needs at least 2 training and 2 validation tokens")
    counts = torch.ones(vocab_size, vocab_size)                               # (V, V), add-one
    counts.index_put_((train_ids[:-1], train_ids[1:]), torch.ones(len(train_ids) - 1), accumulate=True)
    logp = (counts / counts.sum(1, keepdim=True)).log()                       # (V, V)
    return -logp[val_ids[:-1], val_ids[1:]].mean().item()


def unigram_loss(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int) -> float:
    """Mean cross-entropy (nats per token) on `val_ids` (any shape) of a unigram model counted
    from `train_ids` with add-one smoothing, P(b) = (count(b) + 1) / (N + V): the loss of a
    model that knows how common each token is and nothing else."""
    if val_ids.numel() == 0:
        raise ValueError("a unigram model needs at least 1 validation token")
    check_ids(train_ids, vocab_size)
    check_ids(val_ids, vocab_size)
    counts = torch.bincount(train_ids.flatten(), minlength=vocab_size).float() + 1   # (V,), add-one
    return -(counts / counts.sum()).log()[val_ids.flatten()].mean().item()


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
    closest = nearest(test_x.float(), train_x.float(), chunk=chunk)[0]                # (N_test,)
    return (train_y[closest] == test_y).float().mean().item()


"""The vector-quantisation bottleneck of VQ-VAE (van den Oord et al. 2017) as Jukebox uses it:
nearest code, straight-through gradient, commitment loss, codebook kept by exponential moving
averages (no gradient), started from k-means on the first batch, and dead codes restarted.

    vq = VectorQuantizer(codebook_size=128, dim=64)
    out = vq(z)              # z (B, D, T) or (B, D, H, W): channels first, any grid
    out.quantized            # same shape as z; its gradient flows straight through to z
    out.codes                # (B, T) or (B, H, W) long: the discrete tokens
    out.commit_loss          # beta * ||z - sg(code)||^2: keeps the encoder near its codes
    vq.decode(out.codes)     # back to (B, D, ...) vectors

The pieces are plain functions too (lab 05 asks for them): `straight_through`, `ema_update`,
`restart_dead_codes`; the nearest code is `webmm_lab.kmeans.nearest`. Notebook 05 quantises
1-D audio latents with it, notebook 06 2-D image latents.

Nothing in a training step reads a value back to the host (a GPU would wait for it): code
counts are scatter-adds (not `bincount`, which syncs on CUDA), restarts are chosen with tensor
operations, and whether the codebook is started is kept on the host (`_started`).

Under torchrun each process sees part of the batch, yet the codebook is a buffer, not a
parameter, so DDP does not keep it in step. As Jukebox's bottleneck does, each process counts
its batch's codes (K,) and sums their vectors (K, D), these are summed over processes
(`all_reduce`: one process with the whole batch, up to the order of float sums), and every
process takes the same EMA step; restart vectors are drawn by each process from its own batch
and rank 0's are broadcast. The k-means start, made once, is from every process's first batch
(gathered) and is rank 0's, broadcast. So every process keeps the same codebook, and after
the start it is never broadcast.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from ..ids import check_ids
from ..kmeans import kmeans, nearest


@dataclass
class VQOutput:
    quantized: torch.Tensor       # (B, D, *grid): z + sg(code - z), the codes' vectors going forward
    codes: torch.Tensor           # (B, *grid) long
    commit_loss: torch.Tensor     # scalar: beta * the mean squared distance from z to its (frozen) code
    perplexity: torch.Tensor      # scalar: exp(entropy of this batch's code use); K if all used evenly
    used: torch.Tensor            # scalar: fraction of the codebook used by this batch


def code_counts(codes: torch.Tensor, K: int) -> torch.Tensor:
    """How many of `codes` (any shape, long) name each of K codes: (K,) float. A scatter-add,
    as `torch.bincount(codes, minlength=K)` counts, without its read-back of the largest code on
    a GPU."""
    codes = codes.flatten()                                                    # (N,)
    ones = torch.ones(len(codes), device=codes.device)
    return torch.zeros(K, device=codes.device).index_add_(0, codes, ones)     # (K,)


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of code use from counts (K,): K when every code is used evenly, 1 for one code."""
    p = counts.float() / counts.sum()
    return torch.exp(-(p * p.clamp_min(1e-10).log()).sum())


def straight_through(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Forward: the code vectors q; backward: the gradient passes to z unchanged (q gets none)."""
    return z + (q - z).detach()


def ema_update(count: torch.Tensor, total: torch.Tensor, flat: torch.Tensor, codes: torch.Tensor,
               decay: float, *, reduce: Callable[[torch.Tensor], None] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One moving-average step of the codebook's statistics: count (K,) of vectors per code and
    total (K, D), their sum, from this batch's vectors flat (N, D) assigned to codes (N,):
    count <- decay * count + (1 - decay) * n_k,   total <- decay * total + (1 - decay) * sum_k.
    The codes are then total / count: each the running mean of the vectors it wins.

    reduce, if given, is applied in place to the batch's n_k (K,) and sum_k (K, D) before they
    enter the averages: under torchrun `dist.all_reduce`, which sums them over processes."""
    n = code_counts(codes, count.shape[0]).to(count.dtype)                      # (K,)
    s = torch.zeros_like(total).index_add_(0, codes, flat.to(total.dtype))     # (K, D)
    if reduce is not None:
        reduce(n)
        reduce(s)
    return decay * count + (1 - decay) * n, decay * total + (1 - decay) * s


def restart_dead_codes(codebook: torch.Tensor, count: torch.Tensor, total: torch.Tensor,
                       flat: torch.Tensor, threshold: float, generator: torch.Generator | None = None,
                       *, share: Callable[[torch.Tensor], None] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes whose moving count fell below `threshold` are moved onto random vectors of this
    batch flat (N, D), distinct ones while the batch has enough (as Jukebox's restarts draw
    from a shuffled batch), with count = threshold and total = threshold * vector (a fresh
    code with the weight of a barely living one). Returns (codebook, count, total, how many,
    a 0-dim tensor).

    Tensor operations only, so that a GPU never waits for the host to learn how many died: the
    i-th dead code (in index order) takes the i-th vector of a random permutation of the batch
    (past N of them, a uniform draw), and `torch.where` keeps the living codes. The draws are
    made whether or not a code died.

    share, if given, is applied in place to the drawn vectors (K, D) before they replace dead
    codes: under torchrun a broadcast of rank 0's, so that every process restarts its codes
    on the same vectors."""
    K, N = count.shape[0], flat.shape[0]
    dead = count < threshold                                                   # (K,)
    rank = (dead.cumsum(0) - 1).clamp_min(0)                                   # (K,): i for the i-th dead
    perm = torch.randperm(N, generator=generator, device=flat.device)          # (N,)
    pick = perm[rank.clamp_max(N - 1)]                                         # (K,)
    if K > N:                                          # more codes than vectors: repeats past the N-th
        extra = torch.randint(N, (K,), generator=generator, device=flat.device)
        pick = torch.where(rank < N, pick, extra)
    fresh = flat[pick].to(codebook.dtype)                                      # (K, D)
    if share is not None:
        share(fresh)
    codebook = torch.where(dead[:, None], fresh, codebook)
    count = torch.where(dead, torch.full_like(count, threshold), count)
    total = torch.where(dead[:, None], threshold * fresh, total)
    return codebook, count, total, dead.sum()


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def tile(flat: torch.Tensor, n: int) -> torch.Tensor:
    """At least n vectors (N', D) from `flat` (N, D): the vectors, then copies of them nudged by
    noise of std 0.01 / sqrt(D), so that k-means can place n distinct centres. Jukebox's
    bottleneck does this when the first batch has fewer vectors than codes."""
    if len(flat) == 0:
        raise ValueError("no vectors to start the codebook from: the first batch is empty")
    copies = flat.repeat(-(-n // len(flat)), 1)                                 # (N * reps, D)
    noise = torch.randn_like(copies) * 0.01 / flat.shape[1] ** 0.5
    noise[:len(flat)] = 0                                                        # the originals as they are
    return copies + noise


def _gather(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) on each process -> (world * N, ...), the processes' rows in rank order."""
    parts = [torch.empty_like(x) for _ in range(_world())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class VectorQuantizer(nn.Module):
    """K codes of dimension D, learned by EMA; see the module docstring.

    beta: weight of the commitment loss (the paper: 0.25; Jukebox 0.02).
    decay: the EMA's memory (0.99: about the last 100 batches).
    restart_threshold: restart a code whose moving count falls below this (Jukebox: 1.0);
        0 turns restarts off (the ablation: codes that stop winning stay dead).
    """

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, decay: float = 0.99,
                 restart_threshold: float = 1.0, init_kmeans_iters: int = 10):
        super().__init__()
        self.codebook_size, self.dim, self.beta, self.decay = codebook_size, dim, beta, decay
        self.restart_threshold, self.init_kmeans_iters = restart_threshold, init_kmeans_iters
        self.register_buffer("codebook", torch.randn(codebook_size, dim))     # (K, D)
        self.register_buffer("count", torch.ones(codebook_size))               # (K,)
        self.register_buffer("total", self.codebook.clone())                   # (K, D)
        self.register_buffer("initialised", torch.tensor(False))
        self.register_buffer("restarts", torch.tensor(0))                      # restarts so far
        self._started = False         # `initialised`, as the host last read it (see `_is_started`)

    def _flatten(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() < 3 or z.shape[1] != self.dim:
            raise ValueError(f"expected (B, {self.dim}, ...) channels-first latents, got {tuple(z.shape)}")
        return z.movedim(1, -1).reshape(-1, self.dim)                          # (N, D)

    @torch.no_grad()
    def init_from(self, flat: torch.Tensor) -> None:
        """Start the codebook at k-means centres of `flat` (N, D); with fewer than K vectors,
        of `tile(flat, K)`."""
        if len(flat) < self.codebook_size:
            flat = tile(flat, self.codebook_size)
        centres = kmeans(flat.float(), self.codebook_size, iters=self.init_kmeans_iters).centres
        self.codebook.copy_(centres)
        self.count.fill_(1.0)
        self.total.copy_(centres)
        self.initialised.fill_(True)
        self._started = True

    def _is_started(self) -> bool:
        """Whether the codebook has been started, read from the `initialised` buffer until it
        is (a read that waits for a GPU), then from the host; loading a state dict reads it
        again once."""
        if not self._started:
            self._started = bool(self.initialised)
        return self._started

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._started = False

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (B, *grid) of latents z (B, D, *grid)."""
        return nearest(self._flatten(z).float(), self.codebook)[0].view(z.shape[0], *z.shape[2:])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors (B, D, *grid) of codes (B, *grid)."""
        check_ids(codes, self.codebook_size, "codes")
        return self.codebook[codes].movedim(-1, 1)

    def forward(self, z: torch.Tensor) -> VQOutput:
        flat = self._flatten(z)                                                # (N, D)
        if self.training and not self._is_started():
            self.init_from(flat.detach() if _world() == 1 else _gather(flat.detach()))
            self._from_rank_0()
        codes, _ = nearest(flat.detach().float(), self.codebook)               # (N,)
        q = self.codebook[codes].to(flat.dtype)                                # (N, D)
        commit = self.beta * (flat - q.detach()).pow(2).mean()
        if self.training:
            self._update(flat.detach().float(), codes)
        n = code_counts(codes, self.codebook_size)                             # (K,)
        quantized = straight_through(flat, q).view(*z.shape[:1], *z.shape[2:], self.dim).movedim(-1, 1)
        return VQOutput(quantized, codes.view(z.shape[0], *z.shape[2:]), commit, perplexity(n),
                        (n > 0).float().mean())

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        """The EMA step and restarts from this process's vectors flat (N, D) and codes (N,);
        under torchrun with every process's counts and sums and rank 0's restart vectors."""
        reduce = share = None
        if _world() > 1:                                    # the same step on every process
            reduce, share = dist.all_reduce, lambda fresh: dist.broadcast(fresh, src=0)
        count, total = ema_update(self.count, self.total, flat, codes, self.decay, reduce=reduce)
        codebook = total / count.clamp_min(1e-5)[:, None]   # a dead code's ratio stays put: both decay
        if self.restart_threshold > 0:                      # no process asks whether any code died
            codebook, count, total, n = restart_dead_codes(codebook, count, total, flat,
                                                           self.restart_threshold, share=share)
            self.restarts += n
        self.codebook.copy_(codebook)
        self.count.copy_(count)
        self.total.copy_(total)

    def _from_rank_0(self) -> None:
        """Every process takes rank 0's codebook, count and total (its random k-means start)."""
        if _world() > 1:
            for buffer in (self.codebook, self.count, self.total):
                dist.broadcast(buffer, src=0)

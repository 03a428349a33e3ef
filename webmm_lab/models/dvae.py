"""Image tokenizers for DALL·E (notebook 06): an image becomes a grid of discrete codes and back.

Two kinds with one interface. DALL·E's discrete VAE: the encoder gives logits over K codes at
every cell of the grid; training decodes a gumbel-softmax sample of them (a relaxed one-hot whose
temperature is annealed from 1 towards 1/16) and adds a KL term to the uniform prior with its
weight warmed up; tokens are the argmax. The VQ-VAE: the encoder gives a vector per cell and
notebook 05's bottleneck (`vq.VectorQuantizer`: nearest code, EMA, restarts) snaps it to a code.

    dvae = DiscreteVAE(codebook_size=128)          # 32x32 images -> 8x8 codes (4x down)
    out = dvae(images, done=0.3)                   # the share of training done drives the schedules
    out.loss, out.mse, out.reg                     # reg: the KL (dVAE) or commitment (VQ) term
    codes = dvae.encode(images)                    # (B, 8, 8) long
    recon = dvae.decode(codes)                     # (B, 3, 32, 32) in [0, 1]
    vq = VQTokenizer(codebook_size=128)            # the same calls

The paper reconstructs with a logit-Laplace likelihood, whose support is bounded like pixel
values; here the decoder's output is the image itself and the loss the mean squared error (what
the VQ tokenizer uses too, so the two compare fairly); decoded images are clamped to [0, 1]. A
sigmoid on the output would bound it, but most pixels are black: the sigmoid saturates there
and its vanishing gradient stalls training at an all-black image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ids import check_ids
from .vq import VectorQuantizer, code_counts, perplexity


class ResBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))): shape kept."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # (B, w, H, W) -> (B, w, H, W)
        return x + self.net(x)


def image_encoder(width: int, out: int, downs: int = 2) -> nn.Sequential:
    """(B, 3, H, W) -> (B, out, H / 2**downs, W / 2**downs): stride-2 convolutions and residual blocks."""
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1)]
    for _ in range(downs):
        layers += [nn.Conv2d(width, width, 4, stride=2, padding=1), ResBlock(width)]
    return nn.Sequential(*layers, nn.ReLU(), nn.Conv2d(width, out, 1))


def image_decoder(width: int, dim: int, ups: int = 2) -> nn.Sequential:
    """(B, dim, h, w) -> (B, 3, h * 2**ups, w * 2**ups) pixels: the encoder in reverse."""
    layers: list[nn.Module] = [nn.Conv2d(dim, width, 3, padding=1)]
    for _ in range(ups):
        layers += [ResBlock(width), nn.ConvTranspose2d(width, width, 4, stride=2, padding=1)]
    return nn.Sequential(*layers, nn.ReLU(), nn.Conv2d(width, 3, 3, padding=1))


def gumbel_softmax(logits: torch.Tensor, tau: float, dim: int = 1,
                   generator: torch.Generator | None = None, u: torch.Tensor | None = None) -> torch.Tensor:
    """A relaxed one-hot sample: softmax((logits + g) / tau) along `dim`, g ~ Gumbel(0, 1)
    (g = -log(-log u), u uniform). As tau -> 0 it approaches a one-hot sample of softmax(logits).
    u: the uniform noise, logits' shape (default: drawn here, from `generator`)."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if u is None:
        u = torch.rand(logits.shape, generator=generator, device=logits.device)
    elif u.shape != logits.shape:
        raise ValueError(f"u must have the logits' shape {tuple(logits.shape)}, got {tuple(u.shape)}")
    u = u.clamp(1e-9, 1 - 1e-9)
    g = -torch.log(-torch.log(u))
    return F.softmax((logits + g) / tau, dim=dim)


def kl_to_uniform(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean over grid cells of KL(q || uniform over K) = sum_k q_k log q_k + log K, where
    q = softmax(logits) along `dim` (K = logits.shape[dim]). 0 when q is uniform, log K one-hot."""
    logq = F.log_softmax(logits.float(), dim=dim)
    return (logq.exp() * logq).sum(dim).mean() + math.log(logits.shape[dim])


def anneal(done: float, start: float, end: float, over: float) -> float:
    """Exponential interpolation from `start` to `end` over the first `over` of training."""
    t = min(1.0, max(0.0, done) / over) if over > 0 else 1.0
    return start * (end / start) ** t


@dataclass
class TokenizerOutput:
    loss: torch.Tensor        # scalar: mse + the weighted regulariser
    recon: torch.Tensor       # (B, 3, H, W): the decoder's output (clamp to [0, 1] to show it)
    mse: torch.Tensor         # scalar
    reg: torch.Tensor         # scalar: KL to uniform (dVAE) or commitment (VQ), unweighted
    codes: torch.Tensor       # (B, h, w) long: argmax (dVAE) or nearest (VQ) codes
    perplexity: torch.Tensor  # scalar: exp(entropy) of this batch's code use


class _Tokenizer(nn.Module):
    """What both tokenizers share: input checks and the code grid's size."""
    downs: int

    def _check(self, x: torch.Tensor) -> None:
        f = 2 ** self.downs
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"expected RGB images (B, 3, H, W) with H and W multiples of {f}, got "
                             f"{tuple(x.shape)}")

    def grid(self, resolution: int) -> int:
        """Codes per side for images of `resolution` pixels per side."""
        return resolution // 2 ** self.downs

    def _out(self, x, recon, reg, codes, weight) -> TokenizerOutput:
        mse = F.mse_loss(recon.float(), x.float())
        n = code_counts(codes, self.codebook_size)                               # (K,): no sync
        return TokenizerOutput(mse + weight * reg, recon, mse, reg, codes, perplexity(n))


class DiscreteVAE(_Tokenizer):
    """DALL·E's dVAE. Schedules follow `done` (the share of training done): the gumbel
    temperature falls from tau_start to tau_end over the first `anneal_over`, the KL weight
    rises linearly from 0 to kl_weight over the first `kl_warmup`."""

    def __init__(self, codebook_size: int = 128, width: int = 32, dim: int = 64, downs: int = 2,
                 tau_start: float = 1.0, tau_end: float = 1 / 16, anneal_over: float = 0.8,
                 kl_weight: float = 0.01, kl_warmup: float = 0.1):
        super().__init__()
        self.codebook_size, self.downs = codebook_size, downs
        self.tau_start, self.tau_end, self.anneal_over = tau_start, tau_end, anneal_over
        self.kl_weight, self.kl_warmup = kl_weight, kl_warmup
        self.encoder = image_encoder(width, codebook_size, downs)                # -> (B, K, h, w)
        self.codebook = nn.Embedding(codebook_size, dim)                        # (K, D)
        self.decoder = image_decoder(width, dim, downs)

    def schedule(self, done: float) -> tuple[float, float]:
        """(temperature, KL weight) at `done` in [0, 1]."""
        kl = self.kl_weight * min(1.0, max(0.0, done) / self.kl_warmup) if self.kl_warmup > 0 else self.kl_weight
        return anneal(done, self.tau_start, self.tau_end, self.anneal_over), kl

    def forward(self, x: torch.Tensor, done: float = 1.0) -> TokenizerOutput:
        self._check(x)
        logits = self.encoder(x)                                                # (B, K, h, w)
        tau, weight = self.schedule(done)
        if self.training:
            soft = gumbel_softmax(logits.float(), tau, dim=1)                   # (B, K, h, w)
        else:                                                                   # what tokens decode to
            soft = F.one_hot(logits.argmax(1), self.codebook_size).movedim(-1, 1).float()
        z = torch.einsum("bkhw,kd->bdhw", soft.to(self.codebook.weight.dtype), self.codebook.weight)
        return self._out(x, self.decoder(z), kl_to_uniform(logits), logits.argmax(1), weight)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (B, h, w): the argmax of the encoder's logits."""
        self._check(x)
        return self.encoder(x).argmax(1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] from codes (B, h, w)."""
        _check_codes(codes, self.codebook_size)
        return self.decoder(self.codebook(codes).movedim(-1, 1)).clamp(0, 1)


class VQTokenizer(_Tokenizer):
    """A VQ-VAE on images with notebook 05's bottleneck (EMA codebook, k-means start, restarts)."""

    def __init__(self, codebook_size: int = 128, width: int = 32, dim: int = 64, downs: int = 2,
                 beta: float = 0.25, restart_threshold: float = 1.0):
        super().__init__()
        self.codebook_size, self.downs = codebook_size, downs
        self.encoder = image_encoder(width, dim, downs)                         # -> (B, D, h, w)
        self.vq = VectorQuantizer(codebook_size, dim, beta=beta, restart_threshold=restart_threshold)
        self.decoder = image_decoder(width, dim, downs)

    def forward(self, x: torch.Tensor, done: float = 1.0) -> TokenizerOutput:
        self._check(x)
        out = self.vq(self.encoder(x))                                          # quantized (B, D, h, w)
        return self._out(x, self.decoder(out.quantized), out.commit_loss / self.vq.beta, out.codes,
                         self.vq.beta)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (B, h, w): the nearest code of each cell's vector."""
        self._check(x)
        return self.vq.encode(self.encoder(x))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] from codes (B, h, w)."""
        _check_codes(codes, self.codebook_size)
        return self.decoder(self.vq.decode(codes)).clamp(0, 1)


def _check_codes(codes: torch.Tensor, K: int) -> None:
    if codes.dim() != 3 or codes.dtype != torch.long:
        raise ValueError(f"codes must be a (B, h, w) long tensor, got {tuple(codes.shape)} {codes.dtype}")
    check_ids(codes, K, "codes")

"""Jukebox's VQ-VAE in miniature: raw audio -> discrete codes at three levels -> audio.

    vqvae = VQVAE(hops=(8, 32, 128), width=32, dim=64, codebook_size=128)
    out = vqvae(x)                     # x (B, 1, T), T a multiple of 128
    out.recons[i]                      # (B, 1, T): level i's decoder from level i's codes alone
    out.codes[i]                       # (B, T / hops[i]) long
    codes = vqvae.encode(x)            # [(B, T/8), (B, T/32), (B, T/128)]
    audio = vqvae.decode(codes[2], level=2)
    up = Upsampler(GPTConfig(vocab_size=128 + 1, block_size=512 + 1), upper_vocab=128, ratio=4, n_labels=6)
    loss = up(middle, top, labels)     # middle (B, L), top (B, L / 4), labels (B, n) ids
    middle = up.generate(top, labels)  # sampled (B, L)

As in Jukebox (Dhariwal et al. 2020, section 3), each level is a separate VQ-VAE with its own
encoder, bottleneck and decoder, all reading the raw audio: the bottom level keeps the most
detail (hop 8), the top the least (hop 128), and no level's decoder sees another's codes, so
each level must carry its own picture of the music. Encoders are strided 1-D convolutions
(4x then 2x steps), each followed by a stack of dilated residual convolutions that widens the
receptive field; decoders mirror them with transposed convolutions. The loss of a level is
L2 on the waveform + a multi-resolution spectral loss (`spectral_loss`) + the commitment loss.
To generate, a prior (the course's GPT) samples top codes; an `Upsampler` samples the level
below, conditioned on the codes above it and on the labels (genre, artist).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .gpt import GPT, GPTConfig
from .vq import VectorQuantizer


def strides_for(hop: int) -> list[int]:
    """Down-sampling steps that multiply to `hop`: 4s, then one 2 if needed (8 -> [4, 2])."""
    if hop < 2 or hop & (hop - 1):
        raise ValueError(f"hop must be a power of two >= 2, got {hop}")
    strides = []
    while hop >= 4:
        strides.append(4)
        hop //= 4
    return strides + ([2] if hop == 2 else [])


class ResStack(nn.Module):
    """Residual 1-D convolutions with dilations 1, 3, 9: receptive field 27 steps, length kept."""

    def __init__(self, width: int, dilations: tuple[int, ...] = (1, 3, 9)):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv1d(width, width, 3, padding=d, dilation=d),
                          nn.ReLU(), nn.Conv1d(width, width, 1))
            for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # (B, w, L) -> (B, w, L)
        for layer in self.layers:
            x = x + layer(x)
        return x


def encoder(hop: int, width: int, dim: int) -> nn.Sequential:
    """(B, 1, T) -> (B, dim, T / hop). A stride-s step is a kernel-2s convolution with
    padding s/2, so each step divides the length exactly."""
    layers: list[nn.Module] = [nn.Conv1d(1, width, 3, padding=1)]
    for s in strides_for(hop):
        layers += [nn.Conv1d(width, width, 2 * s, stride=s, padding=s // 2), ResStack(width)]
    return nn.Sequential(*layers, nn.ReLU(), nn.Conv1d(width, dim, 3, padding=1))


def decoder(hop: int, width: int, dim: int) -> nn.Sequential:
    """(B, dim, T / hop) -> (B, 1, T): the encoder in reverse, with transposed convolutions."""
    layers: list[nn.Module] = [nn.Conv1d(dim, width, 3, padding=1)]
    for s in reversed(strides_for(hop)):
        layers += [ResStack(width), nn.ConvTranspose1d(width, width, 2 * s, stride=s, padding=s // 2)]
    return nn.Sequential(*layers, nn.ReLU(), nn.Conv1d(width, 1, 3, padding=1))


def magnitudes(x: torch.Tensor, n_fft: int, normalized: bool = False) -> torch.Tensor:
    """STFT magnitudes (N, n_fft // 2 + 1, frames) of signals x (N, T): hop n_fft / 4, a Hann
    window, centred with reflection (torchaudio's `Spectrogram(power=1)`); `normalized` divides
    by the window's norm. The window is made on x's device: no copy from the host in a step."""
    window = torch.hann_window(n_fft, device=x.device)                         # (n_fft,)
    spec = torch.stft(x, n_fft, hop_length=n_fft // 4, window=window, center=True, pad_mode="reflect",
                      onesided=True, return_complex=True)                      # (N, F, frames)
    if normalized:
        spec = spec / window.pow(2.0).sum().sqrt()
    return spec.abs()


def spectral_loss(x: torch.Tensor, y: torch.Tensor, n_ffts: tuple[int, ...] = (128, 512, 2048)) -> torch.Tensor:
    """Multi-resolution spectral loss: the mean squared difference of STFT magnitudes of
    x and y (B, 1, T) or (B, T), averaged over FFT sizes (hop n_fft / 4, Hann window; frames
    normalised by the window's norm, so every size weighs alike). Zero for identical signals;
    it ignores phase, which the ear mostly does too."""
    x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    sizes = [n for n in n_ffts if n < 2 * x.shape[-1]] or [min(n_ffts)]   # a size needs T > n_fft / 2
    if min(sizes) >= 2 * x.shape[-1]:
        raise ValueError(f"signals of {x.shape[-1]} samples are too short for an FFT of {min(sizes)}")
    total = x.new_zeros(())
    for n_fft in sizes:
        total = total + F.mse_loss(magnitudes(x.float(), n_fft, True), magnitudes(y.float(), n_fft, True))
    return total / len(sizes)


@torch.no_grad()
def spectral_convergence(x: torch.Tensor, y: torch.Tensor, n_fft: int = 512) -> torch.Tensor:
    """|| |STFT(x)| - |STFT(y)| ||_F / || |STFT(x)| ||_F per clip (B,), x the reference:
    0 is a perfect reconstruction, 1 what silence scores."""
    sx = magnitudes(x.reshape(-1, x.shape[-1]).float(), n_fft)
    sy = magnitudes(y.reshape(-1, y.shape[-1]).float(), n_fft)
    return (sx - sy).flatten(1).norm(dim=1) / sx.flatten(1).norm(dim=1).clamp_min(1e-8)


@dataclass
class VQVAEOutput:
    recons: list[torch.Tensor]        # per level (B, 1, T)
    codes: list[torch.Tensor]         # per level (B, T / hop)
    loss: torch.Tensor                # scalar: the sum over levels of L2 + spectral + commitment
    parts: dict[str, torch.Tensor]    # each level's terms and codebook use, detached scalars: convert
                                      # (.item()) where they are logged, so a training step never waits


class VQVAE(nn.Module):
    """Separate VQ-VAEs, one per hop (bottom first), trained together; see the module docstring.

    codebook_size: one K for every level, or one per level (a level's batch must hold several
        times K vectors per step, or the EMA counts of rarely chosen codes hover near the
        restart threshold and restarts churn).
    spectral_weight: weight of `spectral_loss` beside the waveform's L2.
    restart_threshold: passed to every level's VectorQuantizer (0: no restarts).
    """

    def __init__(self, hops: tuple[int, ...] = (8, 32, 128), width: int = 32, dim: int = 64,
                 codebook_size: int | tuple[int, ...] = 128, beta: float = 0.02,
                 spectral_weight: float = 1.0, restart_threshold: float = 1.0):
        super().__init__()
        self.hops, self.spectral_weight = tuple(hops), spectral_weight
        sizes = (codebook_size,) * len(hops) if isinstance(codebook_size, int) else tuple(codebook_size)
        if len(sizes) != len(hops):
            raise ValueError(f"one codebook size per hop: got {len(sizes)} sizes for hops {self.hops}")
        self.encoders = nn.ModuleList(encoder(h, width, dim) for h in hops)
        self.quantizers = nn.ModuleList(VectorQuantizer(k, dim, beta=beta, restart_threshold=restart_threshold)
                                        for k in sizes)
        self.decoders = nn.ModuleList(decoder(h, width, dim) for h in hops)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"audio must be (B, 1, T), got shape {tuple(x.shape)}")
        hop = max(self.hops)
        if x.shape[-1] < hop or x.shape[-1] % hop:
            raise ValueError(f"T = {x.shape[-1]} samples must be a positive multiple of the largest "
                             f"hop {hop}: crop or pad the audio to {max(hop, x.shape[-1] // hop * hop)} samples")

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        self._check(x)
        recons, codes, parts = [], [], {}
        loss = x.new_zeros(())
        for i, (enc, vq, dec) in enumerate(zip(self.encoders, self.quantizers, self.decoders)):
            out = vq(enc(x))                                               # (B, D, T/hop)
            recon = dec(out.quantized)                                     # (B, 1, T)
            l2 = F.mse_loss(recon, x)
            spec = spectral_loss(recon, x)
            loss = loss + l2 + self.spectral_weight * spec + out.commit_loss
            recons.append(recon)
            codes.append(out.codes)
            parts[f"l2_{i}"], parts[f"spec_{i}"] = l2.detach(), spec.detach()
            parts[f"used_{i}"] = out.used.detach()
        return VQVAEOutput(recons, codes, loss, parts)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every level's codes for audio x (B, 1, T): [(B, T / hop) for each hop]."""
        self._check(x)
        return [vq.encode(enc(x)) for enc, vq in zip(self.encoders, self.quantizers)]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, level: int) -> torch.Tensor:
        """Audio (B, 1, L * hop) from one level's codes (B, L), by that level's decoder."""
        if codes.dim() != 2:
            raise ValueError(f"codes must be (B, L), got shape {tuple(codes.shape)}")
        return self.decoders[level](self.quantizers[level].decode(codes))


class Upsampler(nn.Module):
    """Jukebox's upsampler: a GPT over one level's codes (B, L), conditioned through `extra` on
    the codes of the level above (B, L / ratio) and on label ids (B, n_cond) (genre, artist).

    The upper codes are embedded, mixed with their neighbours by a small convolution (so each
    position sees a little of the music around it), repeated `ratio` times to this level's rate,
    and added to every position with the labels' embeddings. The GPT reads [<start>, c_0 ..
    c_{L-2}] and predicts c_0 .. c_{L-1}: its vocabulary is the codebook plus <start>, so
    cfg.vocab_size = K + 1; it trains on windows of up to cfg.block_size - 1 codes.
    """

    def __init__(self, cfg: GPTConfig, upper_vocab: int, ratio: int, n_labels: int):
        super().__init__()
        self.gpt, self.ratio, self.start = GPT(cfg), ratio, cfg.vocab_size - 1
        d = cfg.n_embd
        self.upper = nn.Embedding(upper_vocab, d)
        self.mix = nn.Conv1d(d, d, 3, padding=1)
        self.labels = nn.Embedding(n_labels, d)

    def condition(self, upper: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, L / ratio) upper codes, (B, n) labels -> the extra embedding (B, L, d)."""
        e = self.upper(upper).transpose(1, 2)                              # (B, d, Lu)
        e = (e + self.mix(F.gelu(e))).repeat_interleave(self.ratio, dim=2)  # (B, d, L)
        return e.transpose(1, 2) + self.labels(labels).sum(1, keepdim=True)  # (B, L, d)

    def forward(self, codes: torch.Tensor, upper: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean next-code cross-entropy of codes (B, L) given upper (B, L / ratio) and labels."""
        if codes.shape[1] != upper.shape[1] * self.ratio:
            raise ValueError(f"codes ({codes.shape[1]}) must be {self.ratio}x as long as the upper "
                             f"codes ({upper.shape[1]})")
        start = torch.full_like(codes[:, :1], self.start)
        inputs = torch.cat([start, codes[:, :-1]], dim=1)                  # (B, L)
        return self.gpt(inputs, codes, extra=self.condition(upper, labels))[1]

    @torch.no_grad()
    def generate(self, upper: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                 top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sampled codes (B, L) for upper codes (B, L / ratio). A sequence longer than the
        context is sampled in windows, as Jukebox samples its upsamplers: each window after the
        first starts from the last half of the one before (KV-cached within a window)."""
        window = (self.gpt.cfg.block_size - 1) // self.ratio * self.ratio   # codes per window
        L = upper.shape[1] * self.ratio
        start = torch.full((len(upper), 1), self.start, dtype=torch.long, device=upper.device)
        out = start[:, :0]
        while out.shape[1] < L:
            keep = 0 if out.shape[1] == 0 else window // 2 // self.ratio * self.ratio
            s = out.shape[1] - keep                                          # window start (codes)
            e = min(L, s + window)
            extra = self.condition(upper[:, s // self.ratio: e // self.ratio], labels)   # (B, e - s, d)
            prompt = torch.cat([start, out[:, s:]], dim=1)                   # (B, 1 + keep)
            new = self.gpt.generate(prompt, e - s - keep, temperature=temperature, top_p=top_p,
                                    suppress=[self.start], generator=generator, extra=extra)
            out = torch.cat([out, new[:, 1 + keep:]], dim=1)
        return out

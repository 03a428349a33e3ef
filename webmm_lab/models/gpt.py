"""A decoder-only transformer in the style of GPT-2/3, for text and, later, pixels, music,
audio codes and image tokens.

    cfg = GPTConfig.preset("nano", vocab_size=96, block_size=128)
    model = GPT(cfg)
    logits, loss = model(idx, targets)                 # idx, targets: (B, T) token ids
    out = model.generate(prompt, max_new_tokens=200, temperature=0.8, top_p=0.9)

Faithful to GPT-2: pre-LayerNorm blocks, GELU MLP of width 4·d, learned positions, the output
head tied to the token embedding, residual projections initialised with std 0.02/sqrt(2·L),
attention through F.scaled_dot_product_attention. Other data layouts plug in without forking:
`pos` gives custom position ids (e.g. row-major pixels, several streams), `extra` adds any
embedding of shape (B, T, d) (2-D positions, conditioning on a genre or a caption).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..device import evaluating
from ..ids import check_ids
from .sampling import sample_next

PRESETS = {  # name: (n_layer, n_head, n_embd)
    "nano": (2, 2, 64),
    "micro": (3, 4, 128),
    "mini": (4, 4, 192),
    "small": (6, 6, 384),
    "medium": (8, 8, 512),
}


@dataclass(kw_only=True)
class GPTConfig:
    vocab_size: int
    block_size: int = 128       # the longest sequence (the context)
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    dropout: float = 0.0
    bias: bool = True
    causal: bool = True         # False: every position sees every other (the ViT of models/vit.py)

    @classmethod
    def preset(cls, name: str, vocab_size: int, block_size: int = 128, **kw) -> "GPTConfig":
        """A named size: nano, micro, mini, small, medium (see PRESETS)."""
        if name not in PRESETS:
            raise KeyError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        n_layer, n_head, n_embd = PRESETS[name]
        return cls(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd, **kw)


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to `max_len`."""

    def __init__(self, cfg: GPTConfig, batch: int, max_len: int, device, dtype):
        shape = (batch, cfg.n_head, max_len, cfg.n_embd // cfg.n_head)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.length = 0          # tokens stored (the same for every layer)
        self.max_len = max_len


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd {cfg.n_embd} is not divisible by n_head {cfg.n_head}")
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.proj.residual = True  # scaled init, see GPT._init
        self.dropout = cfg.dropout
        self.causal = cfg.causal

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)                             # (B, T, C) each
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)   # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)   # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)   # (B, nh, T, hs)
        mask, causal = None, self.causal
        if cache is not None:
            start = cache.length
            cache.k[layer][:, :, start:start + T] = k
            cache.v[layer][:, :, start:start + T] = v
            k = cache.k[layer][:, :, :start + T]                          # (B, nh, P+T, hs)
            v = cache.v[layer][:, :, :start + T]
            if start > 0:   # new token t sees all past tokens and the new ones up to itself
                causal = False
                if T > 1:
                    mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and T > 1,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = self.proj(y.transpose(1, 2).contiguous().view(B, T, C))       # (B, T, C)
        return F.dropout(y, self.dropout, self.training) if self.dropout else y


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.proj.residual = True
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(F.gelu(self.fc(x)))
        return F.dropout(y, self.dropout, self.training) if self.dropout else y


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)      # token embedding
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)      # learned positions
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.head.weight = self.wte.weight                       # weight tying
        self.apply(self._init)

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * self.cfg.n_layer) if getattr(module, "residual", False) else 0.02
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, 0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters; without the token and position embeddings by default (as Kaplan et al.)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() - self.wpe.weight.numel() if non_embedding else n

    def hidden_states(self, idx: torch.Tensor, pos: torch.Tensor | None = None,
                      extra: torch.Tensor | None = None, cache: KVCache | None = None) -> list[torch.Tensor]:
        """The residual stream for token ids `idx` (B, T) after the embeddings and after every
        block, then the final ln_f output: n_layer + 2 tensors (B, T, n_embd). The last is what
        the output head reads; the others are what a probe by layer reads (notebook 03).

        pos:   position ids (T,) or (B, T); default: 0..T-1, offset by what `cache` holds.
        extra: an embedding (B, T, n_embd) added to token + position embeddings.
        """
        if idx.dim() != 2:
            raise ValueError(f"idx must be (B, T) token ids, got shape {tuple(idx.shape)}")
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if pos is None:
            if start + T > self.cfg.block_size:
                raise ValueError(f"sequence of {start + T} tokens is longer than the context "
                                 f"block_size={self.cfg.block_size}")
            pos = torch.arange(start, start + T, device=idx.device)          # (T,)
        if start == 0:                                                       # decode steps feed back sampled ids
            check_ids(idx, self.cfg.vocab_size)
        x = self.wte(idx) + self.wpe(pos)                                    # (B, T, C)
        if extra is not None:
            x = x + extra
        states = [x]
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
            states.append(x)                                                 # (B, T, C)
        if cache is not None:
            cache.length += T
        states.append(self.ln_f(x))                                          # (B, T, C)
        return states

    def features(self, idx: torch.Tensor, pos: torch.Tensor | None = None,
                 extra: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """The final hidden states (B, T, n_embd) for token ids `idx` (B, T), after ln_f: what
        the output head reads, and what a text encoder or a linear probe uses. The arguments
        are those of `hidden_states`."""
        return self.hidden_states(idx, pos, extra, cache)[-1]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                pos: torch.Tensor | None = None, extra: torch.Tensor | None = None,
                cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) for token ids `idx` (B, T), and the mean cross-entropy against
        `targets` (B, T) if given (-1 marks positions to ignore). See `features` for the rest."""
        logits = self.head(self.features(idx, pos, extra, cache))            # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1),
                                   ignore_index=-1)
        return logits, loss

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for `batch` sequences of up to `max_len` (default: the context)."""
        p = self.wte.weight
        return KVCache(self.cfg, batch, max_len or self.cfg.block_size, p.device, p.dtype)

    @torch.inference_mode()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, stop_token: int | None = None,
                 use_cache: bool = True, truncate: bool = False, suppress: list[int] | None = None,
                 generator: torch.Generator | None = None, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Continue `idx` (B, T) by up to `max_new_tokens` sampled tokens: (B, T + new).

        temperature=0 is greedy. With `stop_token`, stops once every row has produced it.
        Ids in `suppress` are never produced (e.g. a start-of-image token).
        A prompt longer than the context is an error unless `truncate=True` (keep its end).
        With the KV cache, prompt + new tokens must fit in the context; without it, the model
        slides over the last block_size tokens.
        extra: (B, T + max_new_tokens - 1, n_embd), the `extra` embedding of every position that
        will be fed in (a Jukebox upsampler's view of the level above); not with truncate.
        """
        if idx.dim() != 2:
            raise ValueError(f"prompt must be (B, T) token ids, got shape {tuple(idx.shape)}")
        if extra is not None and (extra.dim() != 3 or extra.shape[0] != idx.shape[0]
                                  or extra.shape[1] < idx.shape[1] + max_new_tokens - 1 or truncate):
            raise ValueError(f"extra must be (B={idx.shape[0]}, >= {idx.shape[1] + max_new_tokens - 1}, "
                             f"n_embd) for a prompt of {idx.shape[1]} and {max_new_tokens} new tokens "
                             f"(and not with truncate), got {tuple(extra.shape)}")
        bs = self.cfg.block_size
        if idx.shape[1] > bs:
            if not truncate:
                raise ValueError(f"prompt of {idx.shape[1]} tokens is longer than the context "
                                 f"({bs}); shorten it or pass truncate=True to keep its last {bs}")
            idx = idx[:, -bs:]
        if use_cache and idx.shape[1] + max_new_tokens > bs:
            raise ValueError(f"prompt ({idx.shape[1]}) + max_new_tokens ({max_new_tokens}) exceeds "
                             f"the context ({bs}) with the KV cache; generate fewer tokens, or pass "
                             "use_cache=False to slide the context window")
        cache = self.new_cache(idx.shape[0], idx.shape[1] + max_new_tokens) if use_cache else None
        with evaluating(self):
            return self._decode(idx, cache, max_new_tokens, temperature, top_k, top_p, stop_token,
                                suppress, generator, extra)

    def _decode(self, idx, cache, max_new_tokens, temperature, top_k, top_p, stop_token, suppress,
                generator, extra=None):
        bs = self.cfg.block_size
        done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        step_input = idx
        for _ in range(max_new_tokens):
            if cache is None:
                step_input = idx[:, -bs:]                                   # slide the window
            now = idx.shape[1]
            ex = None if extra is None else extra[:, now - step_input.shape[1]: now]
            logits = self(step_input, cache=cache, extra=ex)[0][:, -1]      # (B, vocab)
            if suppress:
                logits[:, suppress] = float("-inf")
            nxt = sample_next(logits, temperature, top_k, top_p, generator)   # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)
            step_input = nxt
            if stop_token is not None:
                done |= nxt.squeeze(1) == stop_token
                if done.all():
                    break
        return idx

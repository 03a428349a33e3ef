"""DALL·E's transformer (Ramesh et al., 2021): one GPT over [caption tokens, image tokens].

    model = DALLE(text_vocab=400, text_len=24, codebook_size=128, grid=8, n_layer=3, n_head=4, n_embd=128)
    text = model.pad_text(ids, lengths)            # (B, L): padding is a token per position
    text_loss, image_loss = model(text, codes)     # codes (B, 8, 8) from an image tokenizer
    loss = model.weighted_loss(text_loss, image_loss)   # the paper's 1/8 caption + 7/8 image
    codes = model.generate(text, temperature=1.0)  # (B, 8, 8): one batched KV-cached call

Vocabulary: [0, V) caption tokens (BPE), [V, V + L) one padding token per caption position,
[V + L, V + L + K) image codes. Every logit at a text position that names an image code is
masked out, and vice versa (`modality_mask`): an image position never predicts a text token.
Image tokens get a row and a column embedding (added through the GPT's `extra`) on top of the
learned positions. The paper's model uses sparse attention (row, column and convolutional
masks, `attention_mask`) to afford 1280 tokens; this one's sequence is short, so it stays dense.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ids import check_ids, check_lengths
from .gpt import GPT, GPTConfig

ATTENTION_KINDS = ("dense", "row", "column", "conv")


def attention_mask(text_len: int, grid: int, kind: str = "dense", kernel: int = 1) -> torch.Tensor:
    """Which positions each position may attend to: (T, T) bool, T = text_len + grid**2, True =
    allowed. Captions attend causally among themselves; every image token sees the whole caption,
    and among image tokens (raster order, causal) sees:
      dense   every earlier image token
      row     itself and the `grid` tokens before it: its row so far, the end of the row above
              and the token directly above it (Sparse Transformer's strided pattern, stride `grid`)
      column  the earlier tokens of its column
      conv    earlier tokens within `kernel` rows and columns of it (a causal 2-D neighbourhood)."""
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"kind must be one of {ATTENTION_KINDS}, got {kind!r}")
    L, N = text_len, grid * grid
    T = L + N
    mask = torch.ones(T, T, dtype=torch.bool).tril()                       # causal everywhere
    j = torch.arange(N)
    row, col = j // grid, j % grid
    delta = j[:, None] - j[None, :]                                        # (N, N) query - key
    image = {"dense": torch.ones(N, N, dtype=torch.bool),
             "row": delta <= grid,
             "column": delta % grid == 0,
             "conv": ((row[:, None] - row[None, :]).abs() <= kernel)
                     & ((col[:, None] - col[None, :]).abs() <= kernel)}[kind]
    mask[L:, L:] &= image
    return mask


class DALLE(nn.Module):
    """The course's GPT with DALL·E's vocabulary, positions and modality masking."""

    def __init__(self, *, text_vocab: int, text_len: int, codebook_size: int, grid: int,
                 n_layer: int = 3, n_head: int = 4, n_embd: int = 128, dropout: float = 0.0,
                 text_weight: float = 1 / 8):
        super().__init__()
        if not 0 <= text_weight <= 1:
            raise ValueError(f"text_weight is the caption loss's share of the training loss, in "
                             f"[0, 1]; got {text_weight}")
        self.text_weight = text_weight                                       # the paper's: 1/8
        self.text_vocab, self.text_len, self.codebook_size, self.grid = text_vocab, text_len, codebook_size, grid
        self.image_offset = text_vocab + text_len                           # first image code's id
        vocab = self.image_offset + codebook_size
        self.gpt = GPT(GPTConfig(vocab_size=vocab, block_size=text_len + grid * grid, n_layer=n_layer, n_head=n_head,
                                 n_embd=n_embd, dropout=dropout))
        self.row = nn.Embedding(grid, n_embd)
        self.col = nn.Embedding(grid, n_embd)
        nn.init.normal_(self.row.weight, 0.0, 0.02)
        nn.init.normal_(self.col.weight, 0.0, 0.02)
        allowed = torch.zeros(text_len + grid * grid, vocab, dtype=torch.bool)   # (T, vocab)
        allowed[:text_len - 1, :self.image_offset] = True      # positions that predict caption tokens
        allowed[text_len - 1:, self.image_offset:] = True      # positions that predict image codes
        self.register_buffer("allowed", allowed, persistent=False)

    def pad_text(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Caption ids (B, T <= text_len) with lengths (B,) -> (B, text_len), each position after
        a caption's end filled with that position's own padding token (V + position)."""
        B, T = ids.shape
        if T > self.text_len:
            raise ValueError(f"captions of up to {self.text_len} tokens fit, got {T}")
        check_lengths(lengths, 0, self.text_len,
                      f"caption lengths (captions of up to {self.text_len} tokens fit)")
        check_ids(ids, self.text_vocab, "caption token ids")
        pos = torch.arange(self.text_len, device=ids.device)
        out = (self.text_vocab + pos).repeat(B, 1)                           # (B, L) all padding
        keep = pos[None, :T] < lengths[:, None].to(ids.device)               # (B, T)
        out[:, :T] = torch.where(keep, ids, out[:, :T])
        return out

    def image_extra(self, B: int, T: int, device) -> torch.Tensor:
        """(B, T, C): row + column embeddings at input positions that hold image tokens, 0 at
        caption positions (position text_len + j holds image token j)."""
        j = torch.arange(T, device=device) - self.text_len                   # (T,)
        is_image = (j >= 0)[:, None]
        j = j.clamp_min(0)
        e = self.row(j // self.grid) + self.col(j % self.grid)               # (T, C)
        return (e * is_image).expand(B, T, -1)

    def masked_logits(self, text: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Logits (B, T - 1, vocab) of every next token of [text, codes], -inf where the next
        token's modality forbids an id. text (B, L) from `pad_text`; codes (B, grid, grid)."""
        seq = self._sequence(text, codes)[:, :-1]                            # (B, T - 1)
        logits = self.gpt(seq, extra=self.image_extra(*seq.shape, seq.device))[0]
        return logits.masked_fill(~self.allowed[:seq.shape[1]], float("-inf"))

    def forward(self, text: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(caption loss, image loss): mean cross-entropies of the next caption tokens and of
        the image codes; `weighted_loss` makes them the training loss."""
        L = self.text_len
        logits = self.masked_logits(text, codes).float()                     # (B, T - 1, vocab)
        targets = self._sequence(text, codes)[:, 1:]                         # (B, T - 1)
        text_loss = F.cross_entropy(logits[:, :L - 1].flatten(0, 1), targets[:, :L - 1].flatten())
        image_loss = F.cross_entropy(logits[:, L - 1:].flatten(0, 1), targets[:, L - 1:].flatten())
        return text_loss, image_loss

    def weighted_loss(self, text_loss: torch.Tensor, image_loss: torch.Tensor) -> torch.Tensor:
        """The training loss: text_weight * caption loss + (1 - text_weight) * image loss. The
        paper weighs them 1/8 and 7/8: the caption is there to condition the image."""
        return self.text_weight * text_loss + (1 - self.text_weight) * image_loss

    def _sequence(self, text: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        if text.dim() != 2 or text.shape[1] != self.text_len:
            raise ValueError(f"text must be (B, {self.text_len}) from pad_text, got {tuple(text.shape)}")
        if codes.dim() != 3 or codes.shape[1:] != (self.grid, self.grid):
            raise ValueError(f"codes must be (B, {self.grid}, {self.grid}), got {tuple(codes.shape)}")
        check_ids(codes, self.codebook_size, "codes")
        return torch.cat([text, codes.flatten(1) + self.image_offset], dim=1)   # (B, L + N)

    @torch.inference_mode()
    def generate(self, text: torch.Tensor, prefix: torch.Tensor | None = None, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True) -> torch.Tensor:
        """Image codes (B, grid, grid) for captions `text` (B, L), in one batched KV-cached call.
        prefix: the first image codes (B, P) in raster order, given (an image prompt: the top
        rows of an image); the model draws the rest. Caption ids are never sampled.
        use_cache=False recomputes every earlier position at every step (for comparison)."""
        B, N = text.shape[0], self.grid * self.grid
        prompt = text if prefix is None else torch.cat([text, prefix + self.image_offset], 1)
        new = N - (prompt.shape[1] - self.text_len)
        extra = self.image_extra(B, self.text_len + N - 1, text.device)
        out = self.gpt.generate(prompt, new, temperature=temperature, top_k=top_k, generator=generator,
                                suppress=list(range(self.image_offset)), extra=extra, use_cache=use_cache)
        return (out[:, self.text_len:] - self.image_offset).view(B, self.grid, self.grid)

"""MuseNet in miniature (notebook 04): scores as sequences of tokens (`webmm_lab.data.music_tokens`:
a style and the instruments first, then notes with their durations and waits); the course's GPT
learns them.

    setup = MuseSetup()
    data = MuseData.build(setup)                   # tokenizer, token streams, transposition ranges
    model = build_musenet(setup, data)
    history = train_musenet(model, data, setup)    # the course's loop
    data.val_loss(model), data.bigram_loss()
    seqs = compose(model, data.tok, "bach", ["soprano", "alto", "tenor", "bass"], n=4)
    notes, stats = data.tok.decode(seqs[0])        # (n, 4) notes; stats["hanging"] = notes left open
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.music import INSTRUMENTS, MusicSet, Piece, load_music
from ..data.music_tokens import MusicTokenizer, music_batches, music_windows
from ..device import evaluating, seed_everything
from ..metrics import bigram_loss, lm_loss, mean_loss, unigram_loss
from ..models.gpt import GPT, GPTConfig
from ..train import History, train


@dataclass(kw_only=True)
class MuseSetup:
    """Everything that defines a MuseNet run (notebook 04's profiles fill it in)."""
    block: int = 256               # context, prefix included
    layers: int = 4
    heads: int = 4
    width: int = 128
    batch: int = 32
    steps: int = 1200
    lr: float = 2e-3
    dropout: float = 0.1
    transpose: int = 5             # random transposition by up to this many semitones each way
    max_pieces: int | None = None  # per split, for the smoke profile
    seed: int = 0                  # model initialisation and batch order (data fixed)


@dataclass
class MuseData:
    """The splits, the tokenizer, and every piece as (prefix, event tokens) with the
    transpositions that keep it inside each instrument's range in the training set."""
    setup: MuseSetup
    tok: MusicTokenizer
    train_set: MusicSet
    val_set: MusicSet
    test_set: MusicSet
    ranges: dict[str, tuple[int, int]]             # instrument -> (lowest, highest) training pitch

    @classmethod
    def build(cls, setup: MuseSetup) -> "MuseData":
        sets = [load_music(s) for s in ("train", "val", "test")]
        if setup.max_pieces:
            sets = [MusicSet(s.pieces[: setup.max_pieces], s.split) for s in sets]
        notes = np.concatenate([p.notes for p in sets[0].pieces])
        ranges = {name: (int(notes[notes[:, 2] == i, 3].min()), int(notes[notes[:, 2] == i, 3].max()))
                  for i, name in enumerate(INSTRUMENTS) if (notes[:, 2] == i).any()}
        return cls(setup, MusicTokenizer(), *sets, ranges)

    def sequence(self, piece: Piece, style: str | None = None) -> np.ndarray:
        """A whole piece as tokens: prefix (its style unless `style` is given), events, <end>."""
        pre = self.tok.prefix(style or piece.style, piece.instruments)
        return np.concatenate([pre, self.tok.encode(piece.notes), [self.tok.end]])

    def shifts(self, piece: Piece) -> tuple[int, int]:
        """The transpositions (lo, hi) in semitones that keep every note of `piece` inside its
        instrument's training range, limited to +-setup.transpose."""
        lo, hi = -self.setup.transpose, self.setup.transpose
        for i in set(piece.notes[:, 2].tolist()):
            p = piece.notes[piece.notes[:, 2] == i, 3]
            rlo, rhi = self.ranges.get(INSTRUMENTS[i], (int(p.min()), int(p.max())))
            lo, hi = max(lo, rlo - int(p.min())), min(hi, rhi - int(p.max()))
        return min(lo, 0), max(hi, 0)

    def batches(self, batch: int | None = None, seed: int | None = None):
        """A `batch_fn` for `train`: random windows of the training pieces, each after its
        piece's prefix and randomly transposed within `shifts` (`music_batches`)."""
        return music_batches(self.tok, [self.sequence(p) for p in self.train_set.pieces],
                             torch.tensor([self.shifts(p) for p in self.train_set.pieces]),
                             self.setup.block, batch or self.setup.batch,
                             self.setup.seed if seed is None else seed)

    def windows(self, pieces: list[Piece], style: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every piece (with `style` instead of its own, if given) cut into windows of the
        setup's block that score each event token and <end> once (`music_windows`)."""
        return music_windows(self.tok, [self.sequence(p, style) for p in pieces], self.setup.block)

    def losses(self, model: GPT, pieces: list[Piece], style: str | None = None, batch: int = 64):
        """(mean loss, tokens scored) of each batch of `windows`, for `mean_loss`: every event
        token of `pieces` and their <end>s scored once."""
        x, y = self.windows(pieces, style)
        device = next(model.parameters()).device
        return ((model(a.to(device), b.to(device))[1], (b >= 0).sum()) for a, b in zip(x.split(batch), y.split(batch)))

    def val_loss(self, model: GPT) -> float:
        """Mean cross-entropy (nats per token) on the validation pieces."""
        with evaluating(model):
            return mean_loss(self.losses(model, self.val_set.pieces))

    def wrong_style_loss(self, model: GPT) -> float:
        """Validation loss with every piece given each of the other styles' tokens instead of its
        own (the mean over all such pairs)."""
        pairs = []
        with evaluating(model):
            for style in self.tok.styles:
                others = [p for p in self.val_set.pieces if p.style != style]
                if others:
                    pairs += self.losses(model, others, style)
            return mean_loss(pairs)

    def streams(self, pieces: list[Piece]) -> torch.Tensor:
        """Pieces as one stream [<start>, events, <end>, <start>, ...] (for n-gram baselines)."""
        P = self.tok.prefix_len
        return torch.tensor(np.concatenate([self.sequence(p)[P - 1:] for p in pieces]))

    def bigram_loss(self) -> float:
        """A bigram model (add-one) counted on the training pieces, on the validation pieces."""
        return bigram_loss(self.streams(self.train_set.pieces), self.streams(self.val_set.pieces),
                           self.tok.vocab_size)

    def unigram_loss(self) -> float:
        """A unigram model (add-one) of the training tokens, on the validation tokens."""
        train_ids, val_ids = self.streams(self.train_set.pieces), self.streams(self.val_set.pieces)
        return unigram_loss(train_ids[1:], val_ids[1:], self.tok.vocab_size)


def build_musenet(setup: MuseSetup, data: MuseData) -> GPT:
    """The course's GPT sized by the setup (initialised from setup.seed)."""
    seed_everything(setup.seed)
    return GPT(GPTConfig(vocab_size=data.tok.vocab_size, block_size=setup.block, n_layer=setup.layers,
                         n_head=setup.heads,
                         n_embd=setup.width, dropout=setup.dropout))


def train_musenet(model: GPT, data: MuseData, setup: MuseSetup, *, run: str | None = None,
                  evals: int = 4, device=None, progress: bool = True,
                  stop_after: int | None = None) -> History:
    """Train on the course's loop, the validation loss measured `evals` times."""
    return train(model, lm_loss, data.batches(), steps=setup.steps, lr=setup.lr, run=run,
                 eval_fn=lambda m: {"val_loss": data.val_loss(m)},
                 eval_every=max(1, setup.steps // evals), seed=setup.seed, device=device,
                 progress=progress, stop_after=stop_after, setup=setup)


def compose(model: GPT, tok: MusicTokenizer, style: str, instruments: list[str], n: int = 4,
            length: int | None = None, temperature: float = 1.0, top_p: float | None = 0.95,
            seed: int = 0) -> torch.Tensor:
    """Sample `n` pieces for a style and instrumentation in one batched, KV-cached call:
    token ids (n, prefix + length), each to be read up to its first <end>. Conditioning tokens
    are never sampled after the prefix."""
    pre = torch.tensor(tok.prefix(style, instruments)).repeat(n, 1)            # (n, P)
    length = length or model.cfg.block_size - pre.shape[1]
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    return model.generate(pre.to(gen.device), length, temperature=temperature, top_p=top_p,
                          stop_token=tok.end, suppress=[tok.start, *range(tok.style0, tok.note0)],
                          generator=gen).cpu()


def grammar(tok: MusicTokenizer, seqs: torch.Tensor) -> dict:
    """How well sampled sequences keep the grammar: notes, those followed by a duration, and
    the fraction followed by one."""
    total = {"notes": 0, "with_duration": 0, "hanging": 0}
    for s in seqs:
        for k, v in tok.decode(s)[1].items():
            total[k] += v
    total["fraction"] = total["with_duration"] / max(1, total["notes"])
    return total


__all__ = ["MuseSetup", "MuseData", "build_musenet", "train_musenet", "compose", "grammar"]

"""Image GPT in miniature (notebook 03): images through a k-means colour palette, read as
sequences of pixel tokens in raster order, the course's GPT trained to predict the next pixel,
completions of the bottom half, and linear probes on the features of every layer.

    setup = IgptSetup(data="digits", colours=8)
    data = IgptData.build(setup)                 # palette, token sequences, labels
    model = build_igpt(setup, data)
    history = train_igpt(model, data, setup)     # the course's loop
    data.bits_per_token(model), data.unigram_bits()
    ids = complete(model, data.test_seq[:4], rows=4, samples=5)     # (4, 5, H, W) colour ids
    feats = layer_features(model, data.train_seq)                   # n_layer + 2 of (N, width)
    acc = probe_by_layer(feats, data.train_labels, layer_features(model, data.test_seq), data.test_labels)

A sequence is [start, p_0, p_1, ..., p_{HW-1}]: a start-of-image token (the last id,
`start_id(vocab_size)`, after the colours) and then the pixels row by row. The model reads the
first HW tokens and predicts the last HW: the target of every position is the next pixel.

Why the start is a vocabulary id, where the paper keeps a learned vector outside the
vocabulary: notebook 03 reuses notebook 02's GPT unchanged, and an embedding row is a learned
vector, so the model's inputs are the paper's. What differs is one output logit that no target
asks for; it costs `suppress=[start]` when sampling and a slice when reading the colours'
probabilities. A vector outside the vocabulary would cost a second input path through the GPT,
its KV cache and `generate`, which every other notebook shares.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import random_batches
from ..data import load
from ..data.images import paste
from ..data.world import SHAPES, render, sample_scenes
from ..device import evaluating, seed_everything
from ..ids import check_ids
from ..kmeans import Palette
from ..metrics import lm_loss, lookup, mean_loss, unigram_loss
from ..models.cnn import ConvEncoder
from ..models.gpt import GPT, GPTConfig
from ..probe import fit_linear_probe, probe_accuracy
from ..train import History, train

SOURCES = ("digits", "canvas", "world", "mnist")


@dataclass(kw_only=True)
class IgptSetup:
    """Everything that defines an Image GPT run (notebook 03's profiles fill it in)."""
    data: str = "canvas"           # canvas (8x8 digits at random places on a resolution x
                                   # resolution canvas), digits (8x8 grey, aligned), world
                                   # (coloured shapes on textured backgrounds, shape labels)
                                   # or mnist (28x28 grey)
    resolution: int = 12           # canvas and world: image side in pixels
    world_images: int = 6000       # world only: training scenes (a quarter as many for test)
    colours: int = 8               # palette size (iGPT: 512, a 9-bit palette)
    layers: int = 6
    heads: int = 4
    width: int = 64
    batch: int = 64
    steps: int = 1500
    lr: float = 3e-3
    dropout: float = 0.0
    seed: int = 0                  # model initialisation and batch order (data and palette fixed)


def start_id(vocab_size: int) -> int:
    """The start-of-image token's id: the last of the vocabulary (the colours are 0 .. V - 2)."""
    return vocab_size - 1


def to_sequence(ids: torch.Tensor, start: int) -> torch.Tensor:
    """Colour ids (N, H, W) -> sequences (N, 1 + H*W): the start token, then the pixels row by row."""
    if ids.dim() != 3:
        raise ValueError(f"ids must be (N, H, W) colour ids, got shape {tuple(ids.shape)}")
    first = torch.full((len(ids), 1), start, dtype=ids.dtype, device=ids.device)
    return torch.cat([first, ids.flatten(1)], dim=1)                          # (N, 1 + HW)


def shift(seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences (N, 1 + HW) -> inputs (N, HW) and targets (N, HW): each position's target is
    the next token."""
    return seq[:, :-1], seq[:, 1:]


def from_sequence(seq: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sequences (N, 1 + H*W) with their start token -> colour ids (N, H, W)."""
    if seq.dim() != 2 or seq.shape[1] != 1 + height * width:
        raise ValueError(f"expected sequences (N, {1 + height * width}) for {height}x{width} "
                         f"images, got shape {tuple(seq.shape)}")
    return seq[:, 1:].reshape(-1, height, width)


@dataclass
class IgptData:
    """Real images and labels, the palette fitted on the training images, and every image as a
    token sequence."""
    setup: IgptSetup
    palette: Palette
    train_images: torch.Tensor     # (N, C, H, W) in [0, 1]
    train_labels: torch.Tensor     # (N,)
    test_images: torch.Tensor      # (M, C, H, W)
    test_labels: torch.Tensor      # (M,)
    classes: list[str]
    source: str
    train_seq: torch.Tensor        # (N, 1 + HW) token ids
    test_seq: torch.Tensor         # (M, 1 + HW)

    @classmethod
    def build(cls, setup: IgptSetup) -> "IgptData":
        """Load the setup's images, fit the palette on the training pixels (seed 0: the same
        palette for every run), and encode both splits."""
        if setup.data not in SOURCES:
            raise ValueError(f"unknown data {setup.data!r}; choose from {', '.join(SOURCES)}")
        if setup.data == "world":
            n_test = max(1, setup.world_images // 4)
            train_scenes = sample_scenes(setup.world_images, seed=1, objects=SHAPES)
            test_scenes = sample_scenes(n_test, seed=2, objects=SHAPES)
            images = [render(s, setup.resolution, background="noise", seed=seed)
                      for s, seed in ((train_scenes, 1), (test_scenes, 2))]
            labels = [torch.tensor([SHAPES.index(s.obj) for s in scenes])
                      for scenes in (train_scenes, test_scenes)]
            classes, source = list(SHAPES), (f"the synthetic world: shapes on textured backgrounds, "
                                             f"{setup.resolution}x{setup.resolution} colour")
        else:
            name = {"digits": "digits", "canvas": "digits-canvas", "mnist": "handwritten"}[setup.data]
            extra = {"canvas": setup.resolution} if setup.data == "canvas" else {}
            train_set, test_set = load(name, split="train", **extra), load(name, split="test", **extra)
            images = [train_set.images, test_set.images]
            labels = [train_set.labels, test_set.labels]
            classes, source = train_set.classes, train_set.source
        palette = Palette.fit(images[0], setup.colours, seed=0)
        seqs = [to_sequence(palette.encode(x), start_id(len(palette) + 1)) for x in images]
        return cls(setup, palette, images[0], labels[0], images[1], labels[1], classes, source, *seqs)

    @property
    def vocab_size(self) -> int:
        """The colours and the start token."""
        return len(self.palette) + 1

    @property
    def start(self) -> int:
        return start_id(self.vocab_size)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the images."""
        return tuple(self.train_images.shape[-2:])

    def batches(self, batch: int | None = None, seed: int | None = None):
        """batch_fn(step) -> (inputs, targets), each (B, HW): random training images."""
        draw = random_batches(self.train_seq, batch_size=batch or self.setup.batch,
                              seed=self.setup.seed if seed is None else seed)
        return lambda step: shift(draw(step)[0])

    def bits_per_token(self, model: GPT, seq: torch.Tensor | None = None, batch: int = 256) -> float:
        """Mean cross-entropy of the next pixel, in bits per pixel token, on `seq` (default: the
        test images)."""
        seq = self.test_seq if seq is None else seq
        with evaluating(model) as device:
            return mean_loss((model(*shift(chunk.to(device)))[1], len(chunk))
                             for chunk in seq.split(batch)) / math.log(2)

    def unigram_bits(self) -> float:
        """Bits per pixel token on the test images of the baseline that ignores every other
        pixel: each colour's frequency in the training images (add-one smoothed)."""
        return unigram_loss(self.train_seq[:, 1:], self.test_seq[:, 1:], len(self.palette)) / math.log(2)


    def neighbour_bits(self) -> float:
        """Bits per pixel token on the test images of the cheapest model that reads the image
        as an image: each colour's count given the pixel's left, upper and upper-left
        neighbours in the training images (add-one smoothed; outside the image counts as a
        colour of its own). What Image GPT's loss must beat to show it learned more than
        local texture."""
        return neighbour_loss(self.train_seq[:, 1:], self.test_seq[:, 1:], len(self.palette),
                              self.shape) / math.log(2)


def neighbour_loss(train_ids: torch.Tensor, test_ids: torch.Tensor, vocab_size: int,
                   shape: tuple[int, int]) -> float:
    """Mean cross-entropy (nats per pixel) on `test_ids` (M, H*W) of a counting model over the
    left, upper and upper-left neighbours of each pixel, from `train_ids` (N, H*W), row-major
    images of `shape` (H, W), add-one smoothed. Only the contexts and pairs the training
    images hold are counted (sorted keys, looked up by binary search): a table of every
    context would need (V + 1)^3 x V counts, 276 GB at 512 colours."""
    H, W = shape
    V = vocab_size
    check_ids(train_ids, V)
    check_ids(test_ids, V)

    def contexts(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = F.pad(ids.view(-1, H, W), (1, 0, 1, 0), value=V)                   # (N, H+1, W+1)
        left, up, upleft = img[:, 1:, :-1], img[:, :-1, 1:], img[:, :-1, :-1]    # (N, H, W) each
        ctx = (left * (V + 1) + up) * (V + 1) + upleft
        return ctx.flatten(), ids.flatten()

    ctx, y = contexts(train_ids)
    pairs, pair_n = torch.unique(ctx * V + y, return_counts=True)                # sorted keys, counts
    seen, seen_n = torch.unique(ctx, return_counts=True)
    ctx, y = contexts(test_ids)
    n_pair, n_ctx = lookup(pairs, pair_n, ctx * V + y), lookup(seen, seen_n, ctx)
    logp = ((n_pair + 1).float() / (n_ctx + V).float()).log()                    # add-one: (M*H*W,)
    return -logp.mean().item()


def build_igpt(setup: IgptSetup, data: IgptData) -> GPT:
    """A GPT over the palette's colours plus the start token, with a context of one whole
    image and its start token (initialised from setup.seed)."""
    seed_everything(setup.seed)
    H, W = data.shape
    return GPT(GPTConfig(vocab_size=data.vocab_size, block_size=1 + H * W, n_layer=setup.layers, n_head=setup.heads,
                         n_embd=setup.width, dropout=setup.dropout))


def train_igpt(model: GPT, data: IgptData, setup: IgptSetup, *, run: str | None = None,
               evals: int = 5, device: torch.device | str | None = None, progress: bool = True,
               stop_after: int | None = None, probe: bool = False) -> History:
    """Train on the course's loop to predict the next pixel (notebook 02's `lm_loss`), with the
    test loss measured `evals` times, in nats like the training loss (see `train` for `run` and
    `stop_after`). With `probe`, each evaluation also fits the linear probe on every layer's
    features and records the best layer's test accuracy ("probe"): the paper's relation of
    generative loss and probe accuracy, read off the checkpoints of one run."""
    def evaluate(m: GPT) -> dict[str, float]:
        out = {"test_loss": data.bits_per_token(m) * math.log(2)}
        if probe:
            train_f, test_f = layer_features(m, data.train_seq), layer_features(m, data.test_seq)
            out["probe"] = max(probe_by_layer(train_f, data.train_labels, test_f, data.test_labels,
                                              len(data.classes)))
        return out
    return train(model, lm_loss, data.batches(), steps=setup.steps, lr=setup.lr, run=run,
                 eval_fn=evaluate, eval_every=max(1, setup.steps // evals), seed=setup.seed,
                 device=device, progress=progress, stop_after=stop_after, setup=setup)


@torch.no_grad()
def complete(model: GPT, seq: torch.Tensor, rows: int, samples: int = 4, temperature: float = 1.0,
             top_p: float | None = None, seed: int = 0, batch: int = 1024) -> torch.Tensor:
    """Complete images from their top `rows` rows: `samples` completions of each sequence in
    `seq` (N, 1 + HW), sampled together with the KV cache (in calls of at most `batch`
    sequences, which bounds the cache's memory). Returns colour ids (N, samples, H, W); the
    given rows are copied unchanged, the start token is never sampled; the same seed and batch
    give the same samples."""
    n_pixels = seq.shape[1] - 1
    side = int(round(n_pixels ** 0.5))
    if side * side != n_pixels:
        raise ValueError(f"sequences of {n_pixels} pixels are not square images")
    if not 0 <= rows < side:
        raise ValueError(f"rows must be in [0, {side}), got {rows}")
    device = next(model.parameters()).device
    start = start_id(model.cfg.vocab_size)
    prompt = seq[:, :1 + rows * side].repeat_interleave(samples, dim=0).to(device)  # (N*s, 1 + r*W)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = torch.cat([model.generate(p, n_pixels - rows * side, temperature=temperature, top_p=top_p,
                                    suppress=[start], generator=gen).cpu()
                     for p in prompt.split(batch)])                            # (N*s, 1 + HW)
    return out[:, 1:].reshape(len(seq), samples, side, side)


@torch.no_grad()
def next_pixel_probs(model: GPT, seq: torch.Tensor, row: int) -> torch.Tensor:
    """The model's probabilities for every pixel of row `row`, each given the true pixels
    before it: (N, W, colours)."""
    device = next(model.parameters()).device
    side = int(round((seq.shape[1] - 1) ** 0.5))
    logits = model(shift(seq.to(device))[0])[0]                                # (N, HW, vocab)
    probs = logits[:, row * side:(row + 1) * side, :-1].float().softmax(-1)   # (N, W, colours)
    return probs.cpu()


def layer_features(model: GPT, seq: torch.Tensor, batch: int = 256) -> list[torch.Tensor]:
    """Image GPT's probe features of whole images `seq` (N, 1 + HW), as the paper takes them
    (Chen et al., 2020, section 3.2): each layer's residual stream through the layer norm that
    reads it (block l's first one, ln_f after the last block), averaged over every position. One
    (N, width) tensor for the embeddings and for each block's output: n_layer + 1 in all, the
    last the final layer norm's output."""
    norms = [block.ln_1 for block in model.blocks] + [model.ln_f]
    pooled = [[] for _ in norms]
    with evaluating(model) as device:
        for chunk in seq.split(batch):
            states = model.hidden_states(chunk.to(device))[:-1]                # n_layer + 1 (b, T, C)
            for i, (norm, h) in enumerate(zip(norms, states)):
                pooled[i].append(norm(h).float().mean(1).cpu())
    return [torch.cat(p) for p in pooled]


def layer_names(n_layer: int) -> list[str]:
    """The names of `layer_features`' layers: 'emb', 'block 1', ..., 'block L (final LN)'."""
    return ["emb"] + [f"block {i}" for i in range(1, n_layer)] + [f"block {n_layer} (final LN)"]


def aligned_pixels(images: torch.Tensor) -> torch.Tensor:
    """The raw pixels after moving each image's bounding box of non-zero pixels to the top-left
    corner: (N, C, H, W) -> (N, C*H*W). A hand-made cure for digits placed anywhere on a
    canvas, with no learning and no labels."""
    N, C, H, W = images.shape
    ink = images.abs().sum(1) > 0                                               # (N, H, W)
    top = torch.where(ink.any(2).any(1), ink.any(2).float().argmax(1), 0)       # (N,) first inked row
    left = torch.where(ink.any(1).any(1), ink.any(1).float().argmax(1), 0)      # (N,) first inked column
    rows = torch.arange(H)[None, :] + top[:, None]                              # (N, H)
    cols = torch.arange(W)[None, :] + left[:, None]                             # (N, W)
    inside = (rows < H)[:, :, None] & (cols < W)[:, None, :]                    # (N, H, W)
    n = torch.arange(N)[:, None, None]
    moved = images[n, :, rows.clamp(max=H - 1)[:, :, None], cols.clamp(max=W - 1)[:, None, :]]   # (N, H, W, C)
    return (moved * inside[..., None]).permute(0, 3, 1, 2).flatten(1)


def local_patterns(images: torch.Tensor, thresholds: tuple[float, ...] = (0.0, 0.4)) -> torch.Tensor:
    """A bag of local patterns: for each threshold, the share of every 3x3 binary pattern of
    pixels above it, counted over all positions (zero-padded): (N, 512 * len(thresholds)).
    Hand-made features that ignore where a stroke is and keep what it looks like."""
    grey = images.float().mean(1, keepdim=True)                                 # (N, 1, H, W)
    weights = 2 ** torch.arange(9.0)                                            # a 9-bit code per patch
    out = []
    for t in thresholds:
        patches = F.unfold((grey > t).float(), 3, padding=1)                    # (N, 9, H*W)
        codes = (patches * weights[None, :, None]).sum(1).long()                # (N, H*W) in 0..511
        hist = torch.zeros(len(images), 512).scatter_add_(1, codes, torch.ones_like(codes, dtype=torch.float))
        out.append(hist / codes.shape[1])
    return torch.cat(out, 1)


def probe_by_layer(train_feats: list[torch.Tensor], train_labels: torch.Tensor,
                   test_feats: list[torch.Tensor], test_labels: torch.Tensor,
                   n_classes: int | None = None) -> list[float]:
    """Test accuracy of a linear probe fitted on each layer's training features (the lists of
    `layer_features`, layer by layer): one accuracy per layer."""
    if len(train_feats) != len(test_feats):
        raise ValueError(f"{len(train_feats)} layers of training features but {len(test_feats)} of test features")
    return [probe_accuracy(fit_linear_probe(a, train_labels, n_classes), b, test_labels)
            for a, b in zip(train_feats, test_feats)]


def raw_pixel_probe(data: IgptData, n_classes: int | None = None,
                    train_idx: torch.Tensor | None = None) -> float:
    """Test accuracy of the same linear probe on the raw pixels of the same images (flattened,
    in [0, 1]): the baseline a sceptic names first for learned features. `train_idx`: fit on
    those training images only (few labels)."""
    x = data.train_images.flatten(1)
    y = data.train_labels
    if train_idx is not None:
        x, y = x[train_idx], y[train_idx]
    return probe_accuracy(fit_linear_probe(x, y, n_classes or len(data.classes)),
                          data.test_images.flatten(1), data.test_labels)


def mean_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)): mean absolute difference per pixel between every row of a (N, D) and of
    b (M, D), images flattened."""
    return torch.cdist(a.float(), b.float(), p=1) / a.shape[1]


def completion_spread(samples: torch.Tensor, real: torch.Tensor, real_labels: torch.Tensor,
                      train: torch.Tensor) -> dict[str, float]:
    """Mode collapse and memorisation, on lower halves as grey values (flattened):
    samples (N, s, D), the completions of N images; real (N, D) those images' true lower halves
    with their labels; train (M, D) the training images' lower halves.
    "samples": mean distance between two completions of one image; "same class": between two
    real images of the same class (how varied the truth is); "nearest train, samples" and
    "nearest train, real": mean distance from a completion, and from a real test image, to the
    nearest training image (a model that memorised would sit closer than real images do)."""
    N, s, D = samples.shape
    d = torch.stack([mean_distance(x, x) for x in samples])                   # (N, s, s)
    within = (d.sum((1, 2)) / (s * (s - 1))).mean().item()
    r = mean_distance(real, real)                                             # (N, N)
    same = (real_labels[:, None] == real_labels[None, :]) & ~torch.eye(N, dtype=torch.bool)
    between = (r[same].mean()).item()
    near_s = mean_distance(samples.reshape(N * s, D), train).min(1).values.mean().item()
    near_r = mean_distance(real, train).min(1).values.mean().item()
    return {"samples": within, "same class": between, "nearest train, samples": near_s,
            "nearest train, real": near_r}


def same_place_spread(real: torch.Tensor, real_labels: torch.Tensor, labels: torch.Tensor,
                      top: torch.Tensor, left: torch.Tensor, canvas: int,
                      lower: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Mode collapse's fair reference on a canvas: for each image i (its label labels[i], its
    digit pasted at (top[i], left[i])), the mean distance between the lower halves of two real
    digits of its class pasted at that same place; averaged over the images. `real` (M, C, h, w)
    are unplaced digits with `real_labels` (M,); `lower` maps canvases (n, C, canvas, canvas) to
    lower halves (n, D) as the completions are measured."""
    spreads = []
    for i, c in enumerate(labels.tolist()):
        members = real[real_labels == c]                                          # (m, C, h, w)
        m = len(members)
        if m < 2:
            raise ValueError(f"class {c} has {m} real digit(s): two are needed to measure a spread")
        placed = paste(members, canvas, top[i].expand(m), left[i].expand(m))      # (m, C, canvas, canvas)
        halves = lower(placed)                                                    # (m, D)
        spreads.append(mean_distance(halves, halves).sum() / (m * (m - 1)))
    return torch.stack(spreads).mean().item()


def train_digit_judge(images: torch.Tensor, labels: torch.Tensor, n_classes: int, steps: int = 400,
                      width: int = 16, seed: int = 0, progress: bool = True) -> nn.Module:
    """A small convolutional classifier trained on whole real images: it judges which class a
    completed image shows, independently of the GPT."""
    seed_everything(seed)
    encoder = ConvEncoder(images.shape[1], width)
    judge = nn.Sequential(encoder, nn.Linear(encoder.out_dim, n_classes))
    train(judge, lambda m, b: F.cross_entropy(m(b[0]), b[1]),
          random_batches(images, labels, batch_size=64, seed=seed), steps=steps, lr=3e-3,
          seed=seed, progress=progress)
    return judge.eval()


def judge_classes(judge: nn.Module, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The judge's class for each image (N, C, H, W): (N,)."""
    with evaluating(judge) as device:
        return torch.cat([judge(x.to(device)).argmax(-1).cpu() for x in images.split(batch)])

"""Notebook 06's judge and reranking: a reader of generated images that never saw CLIP, the
tokenizers' report, CLIP's scores of samples, and the diagnostics of reranking.

    judge = build_judge(setup); train_judge(judge, setup)        # reads colour, shape, count, glyphs
    report = tokenizer_report(tok, judge, *validation_set(setup))  # codes used, recognised
    s = sample_and_judge(model, tok, world, judge, clip, captions, scenes, n=16)
    s.rates(("colour", "shape"))                                  # % right: random sample, CLIP's top-1

The judge is a different network from CLIP's image tower (strided convolutions read by an MLP,
no pooling) trained on freshly drawn scenes with their attributes, so it can grade what the
generator draws and what CLIP picks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..batches import step_generator
from ..data.augment import soften
from ..data.world import (
    COLOURS,
    SHAPES,
    SIGN_LETTERS,
    Scene,
    caption,
    object_name,
    render,
    sample_panels,
    sample_scenes,
    sample_signs,
)
from ..device import evaluating, seed_everything
from ..models.clip import CLIP
from ..models.dalle import DALLE
from ..models.dvae import DiscreteVAE, VQTokenizer
from ..models.judge import Judge
from ..models.vq import perplexity
from ..train import History, train
from .dalle import DalleSetup, DalleWorld, decode_codes, draw, encode_images, text_batch

# ------------------------------------------------------------------ the judge

HEADS = {"layout": 3, "colour": len(COLOURS), "shape": len(SHAPES), "count": 3,
         "glyph 1": len(SIGN_LETTERS), "glyph 2": len(SIGN_LETTERS), "bottom": len(SHAPES),
         "bottom style": 2}


def judge_labels(scenes: list[Scene]) -> torch.Tensor:
    """(n, len(HEADS)) long: each scene's attributes as the judge's heads read them, -1 where a
    head does not apply (no count on a sign, no glyphs on shapes)."""
    colours, layouts = list(COLOURS), ["objects", "word", "panels"]
    rows = []
    for s in scenes:
        r = dict.fromkeys(HEADS, -1)
        r["layout"], r["colour"] = layouts.index(s.layout), colours.index(s.colour)
        if s.layout == "word":
            if len(s.obj) != 2 or any(ch not in SIGN_LETTERS for ch in s.obj):
                raise ValueError(f"the judge reads two-glyph signs of {SIGN_LETTERS}, got {s.obj!r}")
            r["glyph 1"], r["glyph 2"] = SIGN_LETTERS.index(s.obj[0]), SIGN_LETTERS.index(s.obj[1])
        else:
            r["shape"] = SHAPES.index(s.obj)
        if s.layout == "objects":
            r["count"] = s.count - 1
        if s.layout == "panels":
            r["bottom"], r["bottom style"] = SHAPES.index(s.bottom_shape), int(s.style == "outline")
        rows.append(list(r.values()))
    return torch.tensor(rows)


def judge_training_scenes(n: int, seed: int = 0) -> list[Scene]:
    """Every pair (held-out ones too: the judge must read them), signs, and two-panel scenes
    with any bottom shape, filled or outline."""
    k = n // 5
    return (sample_scenes(n - 2 * k, seed=seed + 100) + sample_signs(k, seed=seed + 101)
            + sample_panels(k, seed=seed + 102, same=False))


def build_judge(setup: DalleSetup) -> Judge:
    seed_everything(setup.seed + 7)
    return Judge(HEADS, setup.resolution, setup.judge.width)


def train_judge(judge: Judge, setup: DalleSetup, *, run: str | None = None, device=None,
                progress: bool = True) -> History:
    """Train on `judge_training_scenes` (softened), every head's cross-entropy summed."""
    scenes = judge_training_scenes(setup.judge.scenes, seed=setup.seed)
    images, labels = render(scenes, setup.resolution), judge_labels(scenes)

    def batch_fn(step: int):
        g = step_generator(setup.seed + 7, step)
        idx = torch.randint(len(images), (setup.judge.batch,), generator=g)
        return soften(images[idx], g), labels[idx]

    def loss_fn(m, batch):
        x, y = batch
        return sum(F.cross_entropy(logits, y[:, i], ignore_index=-1) for i, logits in enumerate(m(x)))
    return train(judge, loss_fn, batch_fn, steps=setup.judge.steps, lr=2e-3, seed=setup.seed,
                 run=run, device=device, progress=progress, setup=setup)


def read(judge: Judge, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The judge's reading (n, len(HEADS)) of images (n, 3, R, R)."""
    with evaluating(judge) as device:
        return torch.cat([torch.stack([h.argmax(1) for h in judge(x.to(device))], 1).cpu()
                          for x in images.split(batch)])


def agreement(reading: torch.Tensor, labels: torch.Tensor, heads: tuple[str, ...] | None = None) -> torch.Tensor:
    """(n,) bool: the reading matches the labels on `heads` (default: every head that applies)."""
    cols = [list(HEADS).index(h) for h in heads] if heads else list(range(len(HEADS)))
    r, y = reading[:, cols], labels[:, cols]
    return ((r == y) | (y < 0)).all(1)


def describe(reading: torch.Tensor) -> list[str]:
    """Each reading as words: "2 red circles", "sign KA, white", "circle / outline square"."""
    colours, out = list(COLOURS), []
    for r in reading.tolist():
        d = dict(zip(HEADS, r))
        colour = colours[d["colour"]]
        if d["layout"] == 1:
            out.append(f"sign {SIGN_LETTERS[d['glyph 1']]}{SIGN_LETTERS[d['glyph 2']]}, {colour}")
        elif d["layout"] == 2:
            style = "outline " if d["bottom style"] else "filled "
            out.append(f"{colour} {SHAPES[d['shape']]} / {style}{SHAPES[d['bottom']]}")
        else:
            shape = Scene(SHAPES[d["shape"]], colour)
            out.append(f"{d['count'] + 1} {colour} {object_name(shape, plural=d['count'] > 0)}")
    return out



@torch.no_grad()
def tokenizer_report(tok: DiscreteVAE | VQTokenizer, judge: Judge, images: torch.Tensor,
                     scenes: list[Scene]) -> dict[str, float]:
    """How well `tok` serves as DALL·E's tokenizer on held-out images: "used" (% of the codebook
    the images use), "perplexity" of that use, "mse" of the argmax/nearest-code reconstructions,
    "recognised" (% of reconstructions the judge reads entirely right) and "judge on originals"."""
    codes = encode_images(tok, images)
    recon = decode_codes(tok, codes)
    n = torch.bincount(codes.flatten(), minlength=tok.codebook_size)
    labels = judge_labels(scenes)
    return {"used": (n > 0).float().mean().item() * 100,
            "perplexity": perplexity(n).item(),
            "mse": F.mse_loss(recon, images).item(),
            "recognised": agreement(read(judge, recon), labels).float().mean().item() * 100,
            "judge on originals": agreement(read(judge, images), labels).float().mean().item() * 100}


def choose_tokenizer(reports: dict[str, dict[str, float]]) -> str:
    """The tokenizer whose reconstructions the judge recognises most often (then: more codes used)."""
    return max(reports, key=lambda k: (round(reports[k]["recognised"], 1), reports[k]["used"]))


def clip_scores(clip: CLIP | list[CLIP], world: DalleWorld, images: torch.Tensor,
                captions: list[str]) -> torch.Tensor:
    """(len(captions), n): CLIP's similarity of each caption's n images (as `draw` returns them).
    Given several CLIPs (an ensemble), the sum of their similarities."""
    if isinstance(clip, (list, tuple)):
        return sum(clip_scores(c, world, images, captions) for c in clip)
    with evaluating(clip) as device:
        img = torch.cat([clip.encode_image(x.to(device)) for x in images.split(512)])   # (len * n, D)
        txt = world.encode_texts(clip, captions)                                        # (len, D)
        img = img.view(len(captions), -1, img.shape[-1])
        return torch.einsum("cnd,cd->cn", img, txt).cpu()


def rerank_gain(correct: torch.Tensor, scores: torch.Tensor) -> tuple[float, float]:
    """correct (C, n) bool: which samples the judge finds right. Returns (% right of a random
    sample: the mean, % right of CLIP's top-1 per caption)."""
    top = scores.argmax(1)
    return (correct.float().mean().item() * 100,
            correct[torch.arange(len(correct)), top].float().mean().item() * 100)


def panel_agreement(reading: torch.Tensor) -> torch.Tensor:
    """(n,) bool: the judge reads two panels with the same shape on the top and, on the bottom,
    as an outline drawing (what "the exact same shape on the top and as an outline drawing on
    the bottom" asks, whichever shape the model chose)."""
    h = list(HEADS)
    return ((reading[:, h.index("layout")] == 2) & (reading[:, h.index("shape")] == reading[:, h.index("bottom")])
            & (reading[:, h.index("bottom style")] == 1))


@dataclass
class Samples:
    """`n` generated images for each of C captions, read by the judge and scored by CLIP."""
    captions: list[str]
    images: torch.Tensor      # (C * n, 3, R, R), caption by caption
    reading: torch.Tensor     # (C * n, len(HEADS)): what the judge sees
    labels: torch.Tensor      # (C * n, len(HEADS)): what the captions ask for (-1: not asked)
    scores: torch.Tensor      # (C, n): CLIP's similarity of each image with its caption
    seconds: float            # the sampling time (one batched KV-cached call per 512 sequences)

    @property
    def n(self) -> int:
        return self.scores.shape[1]

    def right(self, heads: tuple[str, ...] | None = None) -> torch.Tensor:
        """(C, n) bool: the judge's reading matches the caption on `heads` (None: everything asked;
        ("panels",): the two panels agree, see `panel_agreement`)."""
        if heads == ("panels",):
            ok = panel_agreement(self.reading)
        else:
            ok = agreement(self.reading, self.labels, heads)
        return ok.view(len(self.captions), self.n)

    def rates(self, heads: tuple[str, ...] | None = None) -> tuple[float, float]:
        """(% right of a random sample, % right of CLIP's top-1 of n) on `heads`."""
        return rerank_gain(self.right(heads), self.scores)

    def mismatched(self, heads: tuple[str, ...]) -> float:
        """% of samples whose reading matches the next caption's ask on `heads` (each caption's
        samples scored against another caption): what a generator that ignored its caption
        would score."""
        other = self.labels.view(len(self.captions), self.n, -1).roll(1, 0).flatten(0, 1)
        return 100 * agreement(self.reading, other, heads).float().mean().item()

    def best_first(self) -> torch.Tensor:
        """(C, n): each caption's sample indices (into images, 0..C*n-1), CLIP's best first."""
        order = self.scores.argsort(1, descending=True)
        return order + self.n * torch.arange(len(self.captions))[:, None]


def sample_and_judge(model: DALLE, tok: DiscreteVAE | VQTokenizer, world: DalleWorld, judge: Judge,
                     clip: CLIP | list[CLIP], captions: list[str], scenes: list[Scene] | None = None, n: int = 8,
                     temperature: float = 1.0, seed: int = 0, prefix: torch.Tensor | None = None) -> Samples:
    """Draw `n` images per caption, read them with the judge and score them with CLIP. `scenes`
    (one per caption) says what each caption asks for; without them nothing is asked (labels -1).
    prefix (len(captions), P): the first image codes of each caption's samples, given (`draw`)."""
    if scenes is not None and len(scenes) != len(captions):
        raise ValueError(f"give one scene per caption: {len(scenes)} scenes, {len(captions)} captions")
    t0 = time.perf_counter()
    images, _ = draw(model, tok, world, captions, n=n, prefix=prefix, temperature=temperature, seed=seed)
    seconds = time.perf_counter() - t0
    labels = (judge_labels(scenes) if scenes is not None
              else torch.full((len(captions), len(HEADS)), -1)).repeat_interleave(n, 0)
    return Samples(list(captions), images, read(judge, images), labels,
                   clip_scores(clip, world, images, captions), seconds)


# ------------------------------------------------------------------ diagnostics of reranking

def clip_shape_reading(clip: CLIP | list[CLIP], world: DalleWorld, images: torch.Tensor, scenes: list[Scene],
                       batch: int = 512) -> torch.Tensor:
    """(n,) CLIP's shape for each image of a one-shape scene: the shape whose caption (the
    scene's own caption with only the shape changed) CLIP scores highest (several CLIPs: their
    summed scores). The same question the judge's shape head answers, put to CLIP."""
    return shape_scores(clip, world, images, scenes, batch).argmax(1)


def shape_scores(clip: CLIP | list[CLIP], world: DalleWorld, images: torch.Tensor, scenes: list[Scene],
                 batch: int = 512) -> torch.Tensor:
    """(n, len(SHAPES)): CLIP's similarity of each image with its scene's caption, the shape
    changed to each of SHAPES in turn (summed over several CLIPs)."""
    if isinstance(clip, (list, tuple)):
        return sum(shape_scores(c, world, images, scenes, batch) for c in clip)
    from dataclasses import replace
    with evaluating(clip) as device:
        captions = [caption(replace(s, obj=shape), np.random.default_rng(0)) for s in scenes for shape in SHAPES]
        unique = list(dict.fromkeys(captions))                  # N samples of a caption share its texts
        where = {c: i for i, c in enumerate(unique)}
        emb = torch.cat([world.encode_texts(clip, unique[i:i + 4096]) for i in range(0, len(unique), 4096)])
        txt = emb[torch.tensor([where[c] for c in captions])].view(len(scenes), len(SHAPES), -1)   # (n, 6, D)
        img = torch.cat([clip.encode_image(x.to(device)) for x in images.split(batch)])     # (n, D)
        return torch.einsum("nd,nkd->nk", img, txt.to(device)).cpu()


@torch.no_grad()
def resample_codes(model: DALLE, world: DalleWorld, codes: torch.Tensor, scenes: list[Scene], share: float,
                   seed: int = 0, batch: int = 256) -> torch.Tensor:
    """Generator-like codes with approximately known labels: each of the scenes' codes (n, grid,
    grid) replaced, with probability `share`, by a draw from the model's distribution at that
    cell given the scene's caption and the true codes before it (one teacher-forced pass, no
    sampling loop). Decoded, they look as the model draws; the scene's labels are kept, but a
    redrawn picture may show another shape, so the more codes are drawn, the less the labels
    are to be trusted."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    text = text_batch(model, world, [caption(s, rng) for s in scenes])                 # (n, L)
    with evaluating(model) as device:
        logits = torch.cat([model.masked_logits(t.to(device), c.to(device))[:, model.text_len - 1:].float().cpu()
                            for t, c in zip(text.split(batch), codes.split(batch))])   # (n, grid², vocab)
    drawn = torch.multinomial(logits.softmax(-1).flatten(0, 1), 1, generator=g).view(len(codes), -1)
    drawn = (drawn - model.image_offset).view_as(codes)                                # image ids only
    return torch.where(torch.rand(codes.shape, generator=g) < share, drawn, codes)


def bootstrap_interval(correct: torch.Tensor, scores: torch.Tensor, draws: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """A 95 % bootstrap interval of CLIP's top-1 minus a random sample (points), resampling the
    captions: correct (C, n) bool, scores (C, n)."""
    g = torch.Generator().manual_seed(seed)
    top = correct[torch.arange(len(correct)), scores.argmax(1)].float()            # (C,)
    gain = 100 * (top - correct.float().mean(1))                                    # (C,)
    idx = torch.randint(len(gain), (draws, len(gain)), generator=g)
    means = gain[idx].mean(1)
    return means.quantile(0.025).item(), means.quantile(0.975).item()


__all__ = ["HEADS", "judge_labels", "judge_training_scenes", "build_judge", "train_judge", "read",
           "agreement", "describe", "tokenizer_report", "choose_tokenizer", "clip_scores", "rerank_gain",
           "panel_agreement", "Samples", "sample_and_judge", "clip_shape_reading", "shape_scores", "resample_codes",
           "bootstrap_interval"]

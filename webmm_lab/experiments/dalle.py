"""DALL·E in miniature (notebook 06): captions -> image tokens -> images, reranked by CLIP.

    setup = DalleSetup()
    world = build_world(setup)                      # scenes, signs, two-panel scenes; a BPE of captions
    judge = build_judge(setup); train_judge(judge, setup)       # reads colour, shape, count, glyphs
    tok = build_tokenizer(setup, "dvae"); train_tokenizer(tok, world, setup)
    report = tokenizer_report(tok, judge, *validation_set(setup))   # codes used, recognised
    codes = encode_images(tok, world.images)        # (n, grid, grid)
    model = build_dalle(setup, world); train_dalle(model, world, codes, setup)
    images = draw(model, tok, world, ["two white squares"], n=8)   # (8, 3, R, R)
    clip = build_clip(clip_setup(setup), world); train_clip(clip, world, clip_setup(setup))
    order = rerank(clip, world, images, "two white squares")        # best first

The CLIP is notebook 07's recipe (`experiments.clip`) trained on this world's scenes and captions;
the judge is a different network (strided convolutions read by an MLP, no pooling) trained on
freshly drawn scenes with their attributes, so it can grade what the generator draws.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.world import (COLOURS, PANEL_TEMPLATES, SHAPES, SIGN_LETTERS, SIGN_TEMPLATES, TEMPLATES, Scene,
                          caption, render, sample_panels, sample_scenes, sample_signs)
from ..data.augment import soften
from ..data.tokenizers import BPETokenizer
from ..device import seed_everything
from ..models.clip import CLIP
from ..models.dalle import DALLE
from ..models.dvae import DiscreteVAE, VQTokenizer
from ..train import History, step_generator, train
from .clip import END, ClipSetup, ClipWorld, held_out_pairs

TOKENIZERS = ("dvae", "vq")


@dataclass
class DalleSetup:
    """Everything that defines a run of notebook 06 (its profiles fill it in)."""
    objects: int = 9000            # training scenes of 1-3 shapes (held-out pairs never among them)
    signs: int = 1500              # two-glyph words ("a white sign that says KA")
    panels: int = 1500             # a shape on the top, the same as an outline on the bottom
    resolution: int = 32
    held_out: int = 10             # (shape, colour) pairs never captioned in training (as notebook 07)
    codebook: int = 128            # K image codes
    tok_width: int = 32
    tok_dim: int = 64
    tok_steps: int = 600           # steps matter more than batch: 600 x 32 beat 300 x 64 (colours)
    tok_batch: int = 32
    tok_lr: float = 4e-3
    kl_weight: float = 3e-4        # the dVAE's KL weight after warm-up (chosen on validation: 3e-4 of 0-0.05)
    vocab: int = 512               # BPE of the captions (it stops early when every word is a token)
    text_len: int = 18             # caption tokens, padded per position (the longest caption: 18)
    layers: int = 3
    heads: int = 4
    width: int = 128
    steps: int = 900
    batch: int = 32
    lr: float = 2e-3
    clip_steps: int = 450          # notebook 07's recipe, on softened images (see DalleWorld)
    clip_batch: int = 128
    judge_scenes: int = 6000
    judge_width: int = 24
    judge_steps: int = 500
    judge_batch: int = 64
    seed: int = 0

    @property
    def grid(self) -> int:
        return self.resolution // 4


def clip_setup(setup: DalleSetup) -> ClipSetup:
    """Notebook 07's CLIP settings for this world (its pool is `build_world`'s scenes)."""
    return ClipSetup(pool=setup.objects + setup.signs + setup.panels, resolution=setup.resolution,
                     held_out=setup.held_out, vocab=setup.vocab, context=setup.text_len,
                     steps=setup.clip_steps, batch=setup.clip_batch, seed=setup.seed)


def training_scenes(setup: DalleSetup) -> list[Scene]:
    """Filled shapes of the seen pairs, signs, and two-panel scenes (held-out pairs skipped)."""
    held = held_out_pairs(setup.held_out)
    return (sample_scenes(setup.objects, seed=0, held_out=held) + sample_signs(setup.signs, seed=1)
            + sample_panels(setup.panels, seed=2, held_out=held))


@dataclass
class DalleWorld(ClipWorld):
    """Notebook 07's `ClipWorld` (so its CLIP recipe, `train_clip`, runs on it unchanged) and the
    words its captions use, to answer a caption with words the world never uses. Its batches
    for CLIP are softened as the judge's are: CLIP reranks decoded samples, which are blurrier
    than renders (a prototype CLIP trained on crisp renders read the shapes of decoded images
    about half as often as of renders, and its reranking gained nothing)."""
    words: frozenset[str] = frozenset()

    def batches(self, batch: int | None = None, seed: int | None = None):
        """`ClipWorld.batches`, every image randomly blurred and noised (`augment.soften`)."""
        batch_fn = super().batches(batch, seed)
        seed = self.setup.seed if seed is None else seed

        def softened(step: int):
            images, ids, lengths = batch_fn(step)
            return soften(images, step_generator(seed + 11, step)), ids, lengths
        return softened


def build_world(setup: DalleSetup) -> DalleWorld:
    """The training scenes as uint8 images with a BPE tokenizer of their captions."""
    scenes = training_scenes(setup)
    images = torch.cat([(render(scenes[i:i + 5000], setup.resolution) * 255).round().to(torch.uint8)
                        for i in range(0, len(scenes), 5000)])
    rng = np.random.default_rng(99)
    sample = rng.choice(len(scenes), min(5000, len(scenes)), replace=False)
    text = "\n".join(caption(scenes[i], rng) + END for i in sample)
    return DalleWorld(clip_setup(setup), scenes, images, BPETokenizer.train(text, setup.vocab),
                      words=caption_words())


def caption_words() -> frozenset[str]:
    """Every word the captions of this notebook's scenes use: the captions of a fixed sample of
    shapes, signs and panels under every template (the same for every setup, however small)."""
    scenes = sample_scenes(600, seed=11, styles=("filled", "outline")) + sample_panels(20, seed=12)
    templates = {"objects": TEMPLATES, "word": SIGN_TEMPLATES, "panels": PANEL_TEMPLATES}
    text = " ".join(caption(s, template=t) for s in scenes + sample_signs(1, seed=13) for t in templates[s.layout])
    return frozenset(re.findall(r"\w+", text))


def unknown_words(world: DalleWorld, text: str) -> list[str]:
    """The words of `text` (any script: Hangul is a word too) that no caption of this world
    uses, in order, without repeats. A sign's word (two capitals of SIGN_LETTERS) is known."""
    def known(w: str) -> bool:
        return w in world.words or (len(w) == 2 and all(ch in SIGN_LETTERS for ch in w))
    return list(dict.fromkeys(w for w in re.findall(r"\w+", text) if not known(w)))


def prompt_scenes(setup: DalleSetup, kind: str, n: int, seed: int = 0) -> list[Scene]:
    """Scenes never in training: "seen" (1-3 shapes of seen pairs), "held-out" (the held-out
    pairs), "signs", "panels" (the same shape as an outline on the bottom)."""
    held = held_out_pairs(setup.held_out)
    seed = 5000 + 10 * seed
    if kind == "seen":
        return sample_scenes(n, seed=seed, held_out=held)
    if kind == "held-out":
        return sample_scenes(n, seed=seed + 1, held_out=held, split="test")
    if kind == "signs":
        return sample_signs(n, seed=seed + 2)
    if kind == "panels":
        return sample_panels(n, seed=seed + 3, held_out=held)
    raise ValueError(f"unknown test set {kind!r}; choose seen, held-out, signs or panels")


def validation_set(setup: DalleSetup, n: int = 600) -> tuple[torch.Tensor, list[Scene]]:
    """Images and scenes to choose the tokenizer on: 70 % shapes, 15 % signs, 15 % panels."""
    held = held_out_pairs(setup.held_out)
    k = n * 15 // 100
    scenes = (sample_scenes(n - 2 * k, seed=7000, held_out=held) + sample_signs(k, seed=7001)
              + sample_panels(k, seed=7002, held_out=held))
    return render(scenes, setup.resolution), scenes


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


class Judge(nn.Module):
    """Strided convolutions (no pooling: where things are matters) and an MLP with one linear
    head per attribute. Unlike CLIP's image tower it keeps the layout, and it never sees text."""

    def __init__(self, resolution: int = 32, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),                          # (B, w, R, R)
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),        # (B, 2w, R/2, R/2)
            nn.Conv2d(2 * width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),    # (B, 2w, R/4, R/4)
            nn.Flatten(), nn.Linear(2 * width * (resolution // 4) ** 2, 256), nn.ReLU())   # (B, 256)
        self.heads = nn.Linear(256, sum(HEADS.values()))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of each head, in HEADS' order: [(B, classes), ...]."""
        return list(self.heads(self.net(x)).split(list(HEADS.values()), dim=1))


def judge_training_scenes(n: int, seed: int = 0) -> list[Scene]:
    """Every pair (held-out ones too: the judge must read them), signs, and two-panel scenes
    with any bottom shape, filled or outline."""
    k = n // 5
    return (sample_scenes(n - 2 * k, seed=seed + 100) + sample_signs(k, seed=seed + 101)
            + sample_panels(k, seed=seed + 102, same=False))


def build_judge(setup: DalleSetup) -> Judge:
    seed_everything(setup.seed + 7)
    return Judge(setup.resolution, setup.judge_width)


def train_judge(judge: Judge, setup: DalleSetup, *, run: str | None = None, device=None,
                progress: bool = True) -> History:
    """Train on `judge_training_scenes` (softened), every head's cross-entropy summed."""
    scenes = judge_training_scenes(setup.judge_scenes, seed=setup.seed)
    images, labels = render(scenes, setup.resolution), judge_labels(scenes)

    def batch_fn(step: int):
        g = step_generator(setup.seed + 7, step)
        idx = torch.randint(len(images), (setup.judge_batch,), generator=g)
        return soften(images[idx], g), labels[idx]

    def loss_fn(m, batch):
        x, y = batch
        return sum(F.cross_entropy(logits, y[:, i], ignore_index=-1) for i, logits in enumerate(m(x)))
    return train(judge, loss_fn, batch_fn, steps=setup.judge_steps, lr=2e-3, seed=setup.seed,
                 run=run, device=device, progress=progress, setup=setup)


@torch.no_grad()
def read(judge: Judge, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The judge's reading (n, len(HEADS)) of images (n, 3, R, R)."""
    judge.eval()
    device = next(judge.parameters()).device
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
            out.append(f"{d['count'] + 1} {colour} {SHAPES[d['shape']]}{'s' if d['count'] else ''}")
    return out


# ------------------------------------------------------------------ the image tokenizer

def build_tokenizer(setup: DalleSetup, kind: str) -> DiscreteVAE | VQTokenizer:
    """A dVAE (DALL·E's) or a VQ-VAE (notebook 05's bottleneck), 4x down, `codebook` codes."""
    if kind not in TOKENIZERS:
        raise ValueError(f"kind must be one of {TOKENIZERS}, got {kind!r}")
    seed_everything(setup.seed)
    if kind == "dvae":
        return DiscreteVAE(setup.codebook, setup.tok_width, setup.tok_dim, kl_weight=setup.kl_weight)
    return VQTokenizer(setup.codebook, setup.tok_width, setup.tok_dim)


def train_tokenizer(tok: DiscreteVAE | VQTokenizer, world: DalleWorld, setup: DalleSetup, *,
                    run: str | None = None, device=None, progress: bool = True) -> History:
    """The course's loop on random training images; `progress` (step / steps) drives the
    dVAE's temperature and KL schedules."""
    steps = setup.tok_steps

    def batch_fn(step: int):
        idx = torch.randint(len(world.images), (setup.tok_batch,), generator=step_generator(setup.seed, step))
        return world.images[idx].float() / 255, torch.tensor(step / steps)
    return train(tok, lambda m, b: m(b[0], b[1].item()).loss, batch_fn, steps=steps, lr=setup.tok_lr,
                 weight_decay=0.0, seed=setup.seed, run=run, device=device, progress=progress,
                 setup=setup)


@torch.no_grad()
def encode_images(tok: DiscreteVAE | VQTokenizer, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Codes (n, grid, grid) of images (n, 3, R, R), float in [0, 1] or uint8."""
    tok.eval()
    device = next(tok.parameters()).device
    return torch.cat([tok.encode(_float(x).to(device)).cpu() for x in images.split(batch)])


@torch.no_grad()
def decode_codes(tok: DiscreteVAE | VQTokenizer, codes: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Images (n, 3, R, R) in [0, 1] of codes (n, grid, grid)."""
    tok.eval()
    device = next(tok.parameters()).device
    return torch.cat([tok.decode(c.to(device)).float().cpu() for c in codes.split(batch)])


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x


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
    p = n.float() / n.sum()
    return {"used": (n > 0).float().mean().item() * 100,
            "perplexity": torch.exp(-(p * p.clamp_min(1e-10).log()).sum()).item(),
            "mse": F.mse_loss(recon, images).item(),
            "recognised": agreement(read(judge, recon), labels).float().mean().item() * 100,
            "judge on originals": agreement(read(judge, images), labels).float().mean().item() * 100}


def choose_tokenizer(reports: dict[str, dict[str, float]]) -> str:
    """The tokenizer whose reconstructions the judge recognises most often (then: more codes used)."""
    return max(reports, key=lambda k: (round(reports[k]["recognised"], 1), reports[k]["used"]))


# ------------------------------------------------------------------ the transformer

def build_dalle(setup: DalleSetup, world: DalleWorld) -> DALLE:
    seed_everything(setup.seed)
    return DALLE(world.tokenizer.vocab_size, setup.text_len, setup.codebook, setup.grid,
                 setup.layers, setup.heads, setup.width)


def text_batch(model: DALLE, world: DalleWorld, captions: list[str]) -> torch.Tensor:
    """Captions -> (B, text_len) ids padded per position (each ends in the END marker)."""
    ids, lengths = world.tokens(captions)
    return model.pad_text(ids, lengths)


def weighted_loss(text_loss: torch.Tensor, image_loss: torch.Tensor) -> torch.Tensor:
    """The paper's weighting: 1/8 caption, 7/8 image."""
    return text_loss / 8 + 7 * image_loss / 8


@torch.no_grad()
def dalle_losses(model: DALLE, world: DalleWorld, codes: torch.Tensor, scenes: list[Scene],
                 batch: int = 256) -> tuple[float, float]:
    """Mean (caption loss, image loss) over scenes with their codes (n, grid, grid), one caption each."""
    model.eval()
    device = next(model.parameters()).device
    rng = np.random.default_rng(0)
    text = text_batch(model, world, [caption(s, rng) for s in scenes])
    losses = [model(t.to(device), c.to(device)) for t, c in zip(text.split(batch), codes.split(batch))]
    w = torch.tensor([len(c) for c in codes.split(batch)], dtype=torch.float)
    return tuple((torch.tensor([l[i].item() for l in losses]) * w).sum().item() / w.sum().item() for i in (0, 1))


def unigram_loss(train_codes: torch.Tensor, val_codes: torch.Tensor, K: int) -> float:
    """Cross-entropy (nats) of val codes under the training codes' frequencies (add-one smoothed):
    the loss of a model that knows how common each code is and nothing else."""
    p = (torch.bincount(train_codes.flatten(), minlength=K).float() + 1)
    p = p / p.sum()
    return -p.log()[val_codes.flatten()].mean().item()


def train_dalle(model: DALLE, world: DalleWorld, codes: torch.Tensor, setup: DalleSetup, *,
                val: tuple[torch.Tensor, list[Scene]] | None = None, run: str | None = None,
                device=None, progress: bool = True) -> History:
    """The course's loop: random scenes with a fresh random caption each, loss 1/8 caption +
    7/8 image; with `val` = (codes, scenes), the validation losses every quarter."""
    def batch_fn(step: int):
        g = step_generator(setup.seed, step)
        idx = torch.randint(len(world.scenes), (setup.batch,), generator=g)
        rng = np.random.default_rng([setup.seed, step])
        return text_batch(model, world, [caption(world.scenes[i], rng) for i in idx.tolist()]), codes[idx]

    def eval_fn(m):
        text, image = dalle_losses(m, world, *val)
        return {"val caption": text, "val image": image}
    return train(model, lambda m, b: weighted_loss(*m(*b)), batch_fn, steps=setup.steps, lr=setup.lr,
                 seed=setup.seed, run=run, device=device, progress=progress, setup=setup,
                 eval_fn=eval_fn if val else None, eval_every=max(1, setup.steps // 4))


@torch.no_grad()
def draw(model: DALLE, tok: DiscreteVAE | VQTokenizer, world: DalleWorld, captions: list[str],
         n: int = 8, prefix: torch.Tensor | None = None, temperature: float = 1.0, seed: int = 0,
         batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` samples of every caption: (images (len * n, 3, R, R), codes (len * n, grid, grid)),
    caption by caption. prefix (len(captions), P): the first image codes of each caption's
    samples, given (an image prompt). Batched KV-cached calls of up to `batch` sequences."""
    unknown = [w for c in captions for w in unknown_words(world, c)]
    if unknown:
        raise ValueError(f"this world never uses the words {list(dict.fromkeys(unknown))}; describe "
                         "shapes, colours, counts, signs or panels in lower case as its captions do "
                         f"(\"two white squares\", \"a white sign that says {SIGN_LETTERS[:2]}\")")
    device = next(model.parameters()).device
    text = text_batch(model, world, captions).repeat_interleave(n, 0).to(device)
    pre = None if prefix is None else prefix.repeat_interleave(n, 0).to(device)
    g = torch.Generator(device).manual_seed(seed)
    codes = torch.cat([model.generate(t, None if pre is None else pre[i:i + batch], temperature, generator=g).cpu()
                       for i, t in zip(range(0, len(text), batch), text.split(batch))])
    return decode_codes(tok, codes), codes


@torch.no_grad()
def clip_scores(clip: CLIP, world: DalleWorld, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """(len(captions), n): CLIP's similarity of each caption's n images (as `draw` returns them)."""
    clip.eval()
    device = next(clip.parameters()).device
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

    def best_first(self) -> torch.Tensor:
        """(C, n): each caption's sample indices (into images, 0..C*n-1), CLIP's best first."""
        order = self.scores.argsort(1, descending=True)
        return order + self.n * torch.arange(len(self.captions))[:, None]


def sample_and_judge(model: DALLE, tok: DiscreteVAE | VQTokenizer, world: DalleWorld, judge: Judge,
                     clip: CLIP, captions: list[str], scenes: list[Scene] | None = None, n: int = 8,
                     temperature: float = 1.0, seed: int = 0) -> Samples:
    """Draw `n` images per caption, read them with the judge and score them with CLIP. `scenes`
    (one per caption) says what each caption asks for; without them nothing is asked (labels -1)."""
    if scenes is not None and len(scenes) != len(captions):
        raise ValueError(f"give one scene per caption: {len(scenes)} scenes, {len(captions)} captions")
    t0 = time.perf_counter()
    images, _ = draw(model, tok, world, captions, n=n, temperature=temperature, seed=seed)
    seconds = time.perf_counter() - t0
    labels = (judge_labels(scenes) if scenes is not None
              else torch.full((len(captions), len(HEADS)), -1)).repeat_interleave(n, 0)
    return Samples(list(captions), images, read(judge, images), labels,
                   clip_scores(clip, world, images, captions), seconds)


__all__ = ["DalleSetup", "DalleWorld", "TOKENIZERS", "HEADS", "clip_setup", "training_scenes", "build_world",
           "caption_words", "unknown_words", "prompt_scenes", "validation_set", "judge_labels", "Judge",
           "judge_training_scenes", "build_judge", "train_judge", "read", "agreement",
           "describe", "build_tokenizer", "train_tokenizer", "encode_images", "decode_codes",
           "tokenizer_report", "choose_tokenizer", "build_dalle", "text_batch", "weighted_loss",
           "dalle_losses", "unigram_loss", "train_dalle", "draw", "clip_scores", "rerank_gain",
           "panel_agreement", "Samples", "sample_and_judge"]

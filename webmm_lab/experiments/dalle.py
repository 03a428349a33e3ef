"""DALL·E in miniature (notebook 06): captions -> image tokens -> images, reranked by CLIP.

    setup = DalleSetup()
    world = build_world(setup)                      # scenes, signs, two-panel scenes; a BPE of captions
    judge = build_judge(setup); train_judge(judge, setup)       # reads colour, shape, count, glyphs
    tok = build_tokenizer(setup, "dvae"); train_tokenizer(tok, world, setup)
    report = tokenizer_report(tok, judge, *validation_set(setup))   # codes used, recognised
    codes = encode_images(tok, world.images)        # (n, grid, grid)
    model = build_dalle(setup, world); train_dalle(model, world, codes, setup)
    images, codes = draw(model, tok, world, ["two white squares"], n=8)   # (8, 3, R, R), (8, grid, grid)
    clip = build_clip(clip_setup(setup), world); train_clip(clip, world, clip_setup(setup))
    scores = clip_scores(clip, world, images, ["two white squares"])   # (1, 8): CLIP's reranking (dalle_judge)

The CLIP is notebook 07's recipe (`experiments.clip`) trained on this world's scenes and captions;
the judge is a different network (strided convolutions read by an MLP, no pooling) trained on
freshly drawn scenes with their attributes, so it can grade what the generator draws.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..batches import step_generator
from ..data.augment import soften
from ..data.images import unit_float
from ..data.world import (PANEL_TEMPLATES, SIGN_LETTERS, SIGN_TEMPLATES, TEMPLATES, Scene, caption, render,
                          sample_panels, sample_scenes, sample_signs)
from ..device import evaluating, seed_everything
from ..metrics import mean_loss
from ..models.dalle import DALLE
from ..models.dvae import DiscreteVAE, VQTokenizer
from ..train import History, train
from .clip import ClipSetup, ClipWorld, held_out_pairs

TOKENIZERS = ("dvae", "vq")


@dataclass(kw_only=True)
class TokenizerSetup:
    """The image tokenizer's own settings (its codebook and grid are DalleSetup's: the
    transformer reads the same codes)."""
    width: int = 32
    dim: int = 64
    steps: int = 600               # steps matter more than batch: 600 x 32 beat 300 x 64 (colours)
    batch: int = 32
    lr: float = 4e-3
    kl_weight: float = 3e-4        # the dVAE's KL weight after warm-up (chosen on validation: 3e-4 of 0-0.05)


@dataclass(kw_only=True)
class JudgeSetup:
    """The judge's settings (`dalle_judge`): a reader trained on fresh scenes, never on samples."""
    scenes: int = 6000
    width: int = 24
    steps: int = 800               # its shape reading of decoded images improves with steps (notebook 06, section 5)
    batch: int = 64


@dataclass(kw_only=True)
class DalleSetup:
    """Everything that defines a run of notebook 06 (its profiles fill it in): the captioned
    world and the transformer here; the tokenizer, the CLIP that reranks and the judge nested.
    The world's fields are set here once; `clip_setup` gives CLIP the same world."""
    objects: int = 9000            # training scenes of 1-3 shapes (held-out pairs never among them)
    signs: int = 1500              # two-glyph words ("a white sign that says KA")
    panels: int = 1500             # a shape on the top, the same as an outline on the bottom
    resolution: int = 32
    held_out: int = 10             # (shape, colour) pairs never captioned in training (as notebook 07)
    vocab: int = 512               # BPE of the captions (it stops early when every word is a token)
    text_len: int = 18             # caption tokens, padded per position (the longest caption: 18)
    codebook: int = 128            # K image codes, the tokenizer's and the transformer's
    downs: int = 2                 # the tokenizer's stride-2 steps: a code per 2**downs x 2**downs pixels
    layers: int = 3
    heads: int = 4
    width: int = 128
    steps: int = 900
    batch: int = 32
    lr: float = 2e-3
    seed: int = 0
    tok: TokenizerSetup = field(default_factory=TokenizerSetup)
    clip: ClipSetup = field(default_factory=lambda: ClipSetup(steps=450, batch=128))   # notebook 07's recipe,
    judge: JudgeSetup = field(default_factory=JudgeSetup)                               # on softened images

    @property
    def grid(self) -> int:
        """Codes per side, as the tokenizer built from this setup computes it (`tok.grid(resolution)`)."""
        return self.resolution // 2 ** self.downs


def clip_setup(setup: DalleSetup) -> ClipSetup:
    """The CLIP that reranks: `setup.clip` (its towers, steps and batch) on this setup's world
    (its pool is `build_world`'s scenes; resolution, held-out pairs, vocabulary, caption length
    and seed are the world's)."""
    return replace(setup.clip, pool=setup.objects + setup.signs + setup.panels, resolution=setup.resolution,
                   held_out=setup.held_out, vocab=setup.vocab, context=setup.text_len, seed=setup.seed)


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
    """The training scenes as uint8 images with a BPE tokenizer of their captions (`ClipWorld.build`)."""
    return DalleWorld.build(clip_setup(setup), training_scenes(setup), caption_sample=5000, words=caption_words())


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


# ------------------------------------------------------------------ the image tokenizer

def build_tokenizer(setup: DalleSetup, kind: str) -> DiscreteVAE | VQTokenizer:
    """A dVAE (DALL·E's) or a VQ-VAE (notebook 05's bottleneck), `2**downs` times down, `codebook` codes."""
    if kind not in TOKENIZERS:
        raise ValueError(f"kind must be one of {TOKENIZERS}, got {kind!r}")
    seed_everything(setup.seed)
    if kind == "dvae":
        return DiscreteVAE(setup.codebook, setup.tok.width, setup.tok.dim, setup.downs, kl_weight=setup.tok.kl_weight)
    return VQTokenizer(setup.codebook, setup.tok.width, setup.tok.dim, setup.downs)


def train_tokenizer(tok: DiscreteVAE | VQTokenizer, world: DalleWorld, setup: DalleSetup, *,
                    run: str | None = None, device=None, progress: bool = True) -> History:
    """The course's loop on random training images; the share of training done (step / steps)
    drives the dVAE's temperature and KL schedules; `progress` shows a progress bar. The share
    rides in the batch as a host number, so a GPU never waits to be told it."""
    steps = setup.tok.steps

    def batch_fn(step: int):
        idx = torch.randint(len(world.images), (setup.tok.batch,), generator=step_generator(setup.seed, step))
        done = float(np.float32(step / steps))    # rounded to float32, as it always was: results repeat
        return world.images[idx].float() / 255, done
    return train(tok, lambda m, b: m(*b).loss, batch_fn, steps=steps, lr=setup.tok.lr,
                 weight_decay=0.0, seed=setup.seed, run=run, device=device, progress=progress,
                 setup=setup)


def encode_images(tok: DiscreteVAE | VQTokenizer, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Codes (n, grid, grid) of images (n, 3, R, R), float in [0, 1] or uint8."""
    with evaluating(tok) as device:
        return torch.cat([tok.encode(unit_float(x).to(device)).cpu() for x in images.split(batch)])


def decode_codes(tok: DiscreteVAE | VQTokenizer, codes: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Images (n, 3, R, R) in [0, 1] of codes (n, grid, grid)."""
    with evaluating(tok) as device:
        return torch.cat([tok.decode(c.to(device)).float().cpu() for c in codes.split(batch)])


# ------------------------------------------------------------------ the transformer

def build_dalle(setup: DalleSetup, world: DalleWorld) -> DALLE:
    seed_everything(setup.seed)
    return DALLE(text_vocab=world.tokenizer.vocab_size, text_len=setup.text_len, codebook_size=setup.codebook,
                 grid=setup.grid,
                 n_layer=setup.layers, n_head=setup.heads, n_embd=setup.width)


def text_batch(model: DALLE, world: DalleWorld, captions: list[str]) -> torch.Tensor:
    """Captions -> (B, text_len) ids padded per position (each ends in the END marker)."""
    ids, lengths = world.tokens(captions)
    return model.pad_text(ids, lengths)


def next_alike(scenes: list[Scene], keep: tuple[str, ...] = ()) -> list[int]:
    """For each scene, the index of the next scene (cyclically) among those equal to it in every
    field named in `keep` (e.g. ("layout", "colour")); with no `keep`, simply the next scene."""
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(scenes):
        groups.setdefault(tuple(getattr(s, k) for k in keep), []).append(i)
    order = list(range(len(scenes)))
    for idx in groups.values():
        for a, b in zip(idx, idx[1:] + idx[:1]):
            order[a] = b
    return order


def dalle_losses(model: DALLE, world: DalleWorld, codes: torch.Tensor, scenes: list[Scene],
                 batch: int = 256, shuffle: bool = False, keep: tuple[str, ...] = ()) -> tuple[float, float]:
    """Mean (caption loss, image loss) over scenes with their codes (n, grid, grid), one caption
    each. With shuffle, every image gets the caption of the next scene instead of its own (the
    baseline that says how much the caption tells the model about the image); with `keep`, of
    the next scene that agrees with it on those fields (`next_alike`): how much the rest of the
    caption tells."""
    with evaluating(model) as device:
        rng = np.random.default_rng(0)
        captions = [caption(s, rng) for s in scenes]
        if shuffle:
            captions = [captions[j] for j in next_alike(scenes, keep)]          # another scene's caption
        text = text_batch(model, world, captions)
        return mean_loss((torch.stack(model(t.to(device), c.to(device))), len(c))      # (2,): caption, image
                         for t, c in zip(text.split(batch), codes.split(batch)))


def train_dalle(model: DALLE, world: DalleWorld, codes: torch.Tensor, setup: DalleSetup, *,
                val: tuple[torch.Tensor, list[Scene]] | None = None, run: str | None = None,
                device=None, progress: bool = True) -> History:
    """The course's loop: random scenes with a fresh random caption each, the model's
    `weighted_loss` (1/8 caption + 7/8 image); with `val` = (codes, scenes), the validation
    losses every quarter."""
    def batch_fn(step: int):
        g = step_generator(setup.seed, step)
        idx = torch.randint(len(world.scenes), (setup.batch,), generator=g)
        rng = np.random.default_rng([setup.seed, step])
        return text_batch(model, world, [caption(world.scenes[i], rng) for i in idx.tolist()]), codes[idx]

    def eval_fn(m):
        text, image = dalle_losses(m, world, *val)
        return {"val caption loss": text, "val image loss": image}
    return train(model, lambda m, b: model.weighted_loss(*m(*b)), batch_fn, steps=setup.steps, lr=setup.lr,
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


__all__ = ["DalleSetup", "TokenizerSetup", "JudgeSetup", "DalleWorld", "TOKENIZERS", "clip_setup", "training_scenes",
           "build_world", "caption_words", "unknown_words", "prompt_scenes", "validation_set", "build_tokenizer",
           "train_tokenizer", "encode_images", "decode_codes", "build_dalle", "text_batch", "next_alike",
           "dalle_losses", "train_dalle", "draw"]

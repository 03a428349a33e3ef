"""A mini web (notebook 08): image / alt-text pairs from the synthetic world, as the web has them.

    web = build_web(6000, seed=0)            # a WebPairs: images, captions, and the truth of each
    web.kind[i]                              # "right", "mismatched", "boilerplate", "blocked", "duplicate"
    web.source[i]                            # for a duplicate, the index of the pair it copies (else -1)
    web.summary()                            # how many of each kind

The mixture is fixed, never tuned: 40 % right captions, 25 % mismatched (another scene's
caption), 15 % boilerplate ("IMG_2041.jpg", "click to enlarge"), 5 % blocked (a right caption
with a word of BLOCKLIST in a varied form: case, plural, punctuation, spaced or split letters)
and 15 % near-duplicates of right pairs (the same image shifted by a pixel or two, noised, or
cropped and resized, with a fresh caption of the same scene). A quarter of the right captions
carry a NEAR_MISSES word, which a keyword filter must let through.

BLOCKLIST holds harmless placeholder words, invented for the course ("grue", "quib", "snark"):
they stand in for the unsafe terms a real blocklist holds, which a course should not print.
Every image has its own textured background (`render(..., background="noise")`), as photos do,
so two different pairs never share an image by chance; a near-duplicate shares its original's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .world import Scene, caption, render, sample_scenes

KINDS = ("right", "mismatched", "boilerplate", "blocked", "duplicate")
MIXTURE = {"right": 0.40, "mismatched": 0.25, "boilerplate": 0.15, "blocked": 0.05, "duplicate": 0.15}
BLOCKLIST = ("grue", "quib", "snark")          # placeholders for unsafe words (see the docstring)
NEAR_MISSES = ("gruel", "gruesome", "grueling", "quibble", "quibbles", "snarky", "snarkily", "snarl")
BLOCKED_FORMS = ("lower", "upper", "title", "plural", "punctuation", "spaced", "split", "dotted")
BOILERPLATE = ["IMG_{n4}.jpg", "DSC{n5}.JPG", "click to enlarge", "image", "photo {k} of {m}", "untitled",
               "thumbnail", "share this", "screenshot {n4}-{k}", "{n4}.png", "see more", "view full size"]
DUPLICATE_EDITS = ("shift", "noise", "crop")


def blocked_form(word: str, form: str, rng: np.random.Generator) -> str:
    """`word` written in one of BLOCKED_FORMS: "GRUE", "Grue", "grues", "grue!!", "g r u e",
    "gr ue", "g.r.u.e"."""
    if form == "lower":
        return word
    if form == "upper":
        return word.upper()
    if form == "title":
        return word.title()
    if form == "plural":
        return word + ("es" if word.endswith(("s", "x", "ch")) else "s")
    if form == "punctuation":
        return str(rng.choice(["#", "*", "", "("])) + word + str(rng.choice(["!", "!!", "?", ".", ")", ":"]))
    if form == "spaced":
        return " ".join(word)
    if form == "split":
        cut = int(rng.integers(1, len(word)))
        return word[:cut] + str(rng.choice([" ", "-", "_"])) + word[cut:]
    if form == "dotted":
        return ".".join(word)
    raise ValueError(f"unknown form {form!r}; forms are {BLOCKED_FORMS}")


def boilerplate(rng: np.random.Generator) -> str:
    """An alt text that says nothing about the image."""
    text = BOILERPLATE[rng.integers(len(BOILERPLATE))]
    m = int(rng.integers(2, 30))
    return text.format(n4=f"{rng.integers(10000):04d}", n5=f"{rng.integers(100000):05d}",
                       k=int(rng.integers(1, m)), m=m)


def edit_duplicate(image: torch.Tensor, edit: str, g: torch.Generator) -> torch.Tensor:
    """A near-duplicate of `image` (3, R, R): "shift" by 1-2 pixels (edges repeated), "noise"
    (Gaussian, std 0.03-0.06), or "crop" (a random 88-97 % square, resized back)."""
    R = image.shape[-1]
    x = image[None]
    if edit == "shift":
        dx, dy = (int(v) * int(s) for v, s in zip(torch.randint(1, 3, (2,), generator=g),
                                                   torch.randint(0, 2, (2,), generator=g) * 2 - 1))
        x = F.pad(x, (2, 2, 2, 2), mode="replicate")[..., 2 + dy:2 + dy + R, 2 + dx:2 + dx + R]
    elif edit == "noise":
        x = x + (0.03 + 0.03 * torch.rand((), generator=g)) * torch.randn(x.shape, generator=g)
    elif edit == "crop":
        side = int(R * (0.88 + 0.09 * torch.rand((), generator=g)))
        top, left = (int(v) for v in torch.randint(0, R - side + 1, (2,), generator=g))
        x = F.interpolate(x[..., top:top + side, left:left + side], size=(R, R), mode="bilinear",
                          align_corners=False)
    else:
        raise ValueError(f"unknown edit {edit!r}; edits are {DUPLICATE_EDITS}")
    return x[0].clamp(0, 1)


@dataclass
class WebPairs:
    """Image / alt-text pairs and the ground truth of each (what the filters are scored against)."""
    images: torch.Tensor      # (n, 3, R, R) uint8
    captions: list[str]
    kind: list[str]           # one of KINDS per pair
    scenes: list[Scene]       # what each image shows
    source: torch.Tensor      # (n,) long: a duplicate's original, -1 for the others
    near_miss: torch.Tensor   # (n,) bool: a right caption carrying a NEAR_MISSES word
    form: list[str]           # a blocked pair's BLOCKED_FORMS entry, a duplicate's edit, else ""

    def __len__(self) -> int:
        return len(self.captions)

    def mask(self, *kinds: str) -> torch.Tensor:
        """(n,) bool: the pairs of these kinds."""
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown kinds {sorted(unknown)}; kinds are {KINDS}")
        return torch.tensor([k in kinds for k in self.kind])

    def subset(self, keep: torch.Tensor) -> "WebPairs":
        """The pairs where `keep` (n,) bool is True (duplicates' sources re-indexed, -1 if gone)."""
        idx = keep.nonzero().flatten()
        new = torch.full((len(self),), -1, dtype=torch.long)
        new[idx] = torch.arange(len(idx))
        source = torch.where(self.source[idx] >= 0, new[self.source[idx].clamp_min(0)], -1)
        pick = idx.tolist()
        return WebPairs(self.images[idx], [self.captions[i] for i in pick], [self.kind[i] for i in pick],
                        [self.scenes[i] for i in pick], source, self.near_miss[idx], [self.form[i] for i in pick])

    def summary(self) -> dict[str, int]:
        """How many pairs of each kind."""
        return {k: self.kind.count(k) for k in KINDS}


def build_web(n: int = 6000, seed: int = 0, resolution: int = 32,
              held_out: set[tuple[str, str]] = frozenset()) -> WebPairs:
    """`n` pairs in MIXTURE's proportions, shuffled; scenes of 1-3 shapes, never a `held_out`
    (shape, colour) pair; deterministic for `seed`."""
    counts = {k: int(round(n * p)) for k, p in MIXTURE.items()}
    counts["right"] += n - sum(counts.values())
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    n_base = n - counts["duplicate"]
    scenes = sample_scenes(n_base, seed=seed + 1, held_out=held_out)
    images = render(scenes, resolution, background="noise", seed=seed + 2)          # (n_base, 3, R, R)
    kinds = [k for k in KINDS if k != "duplicate" for _ in range(counts[k])]
    captions, near, forms = [], [], []
    for s, kind in zip(scenes, kinds):
        text, miss, form = caption(s, rng), False, ""
        if kind == "right" and rng.random() < 0.25:
            word = str(rng.choice(NEAR_MISSES))
            text, miss = (f"{text}, {word}" if rng.random() < 0.5 else f"{word}: {text}"), True
        elif kind == "mismatched":
            while True:                                    # another scene, another pair
                other = scenes[rng.integers(len(scenes))]
                if (other.obj, other.colour) != (s.obj, s.colour):
                    break
            text = caption(other, rng)
        elif kind == "boilerplate":
            text = boilerplate(rng)
        elif kind == "blocked":
            form = BLOCKED_FORMS[rng.integers(len(BLOCKED_FORMS))]
            word = blocked_form(str(rng.choice(BLOCKLIST)), form, rng)
            text = f"{text} {word}" if rng.random() < 0.5 else f"{word} {text}"
        captions.append(text), near.append(miss), forms.append(form)
    right = [i for i, k in enumerate(kinds) if k == "right"]
    originals = rng.choice(right, counts["duplicate"], replace=False)
    dups = []
    for i in originals.tolist():
        edit = DUPLICATE_EDITS[rng.integers(len(DUPLICATE_EDITS))]
        dups.append(edit_duplicate(images[i], edit, g))
        captions.append(caption(scenes[i], rng)), near.append(False), forms.append(edit)
    all_images = torch.cat([images, torch.stack(dups)]) if dups else images
    kinds += ["duplicate"] * len(dups)
    source = torch.cat([torch.full((n_base,), -1), torch.as_tensor(originals, dtype=torch.long)])
    order = torch.randperm(n, generator=g)                                             # shuffle
    inverse = torch.empty(n, dtype=torch.long)
    inverse[order] = torch.arange(n)
    source = torch.where(source[order] >= 0, inverse[source[order].clamp_min(0)], -1)
    pick = order.tolist()
    all_scenes = scenes + [scenes[i] for i in originals.tolist()]
    return WebPairs((all_images[order] * 255).round().to(torch.uint8), [captions[i] for i in pick],
                    [kinds[i] for i in pick], [all_scenes[i] for i in pick], source,
                    torch.tensor(near)[order], [forms[i] for i in pick])


def clean_pairs(n: int, seed: int, resolution: int = 32, held_out: set[tuple[str, str]] = frozenset(),
                split: str = "train", objects: list[str] | None = None) -> tuple[torch.Tensor, list[str], list[Scene]]:
    """`n` right pairs, not from the web (a curated seed set, validation or test): images (n, 3,
    R, R) uint8 on textured backgrounds as the web's, captions, scenes. split="test": only
    `held_out` pairs; `objects`: only these shapes."""
    scenes = sample_scenes(n, seed=seed, held_out=held_out, split=split, objects=objects)
    rng = np.random.default_rng(seed)
    images = render(scenes, resolution, background="noise", seed=seed + 1)
    return (images * 255).round().to(torch.uint8), [caption(s, rng) for s in scenes], scenes


__all__ = ["KINDS", "MIXTURE", "BLOCKLIST", "NEAR_MISSES", "BLOCKED_FORMS", "BOILERPLATE", "DUPLICATE_EDITS",
           "blocked_form", "boilerplate", "edit_duplicate", "WebPairs", "build_web", "clean_pairs"]

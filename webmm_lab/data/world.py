"""The synthetic captioned world: images of coloured shapes and glyphs, with captions.

No real image-caption pairs ship offline, so CLIP (notebook 07) and DALL·E (notebook 06) learn
from this generated world instead. Every scene is a group of 1-3 identical objects:

    scenes = sample_scenes(1000, seed=0, held_out={("triangle", "purple")})
    images = render(scenes, resolution=32)               # (N, 3, 32, 32) floats in [0, 1]
    captions = [caption(s, rng) for s in scenes]         # "two small red circles on the left"

Attributes: shape (six shapes, or a glyph: a digit or capital letter drawn from a font that
matplotlib ships), colour, size, count, position, style (filled or outline) and font.
Two more layouts serve DALL·E (notebook 06): a "sign" with a short word (two glyphs side by
side: `Scene("OK", "white", layout="word")`, "a white sign that says OK") and two panels, a
filled shape on the top and a shape (`bottom`, default the same) in `style` on the bottom
(`Scene("circle", "red", layout="panels", style="outline")`).
`held_out` pairs (object, colour) never appear in a training split, for zero-shot tests; shift
variants for robustness: `style="outline"` everywhere ("sketches"), held-out fonts, and noisy
backgrounds (`render(..., background="noise")`). Deterministic for a seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

SHAPES = ["circle", "square", "triangle", "diamond", "cross", "hexagon"]
GLYPHS = list("0123456789ABCDEFGHJKLMNPRSTUVWXYZ")
COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.75, 0.2), "blue": (0.15, 0.3, 0.95),
           "yellow": (0.95, 0.9, 0.1), "purple": (0.6, 0.15, 0.8), "orange": (1.0, 0.55, 0.05),
           "cyan": (0.1, 0.85, 0.9), "white": (0.95, 0.95, 0.95)}
FONTS = {"sans": "DejaVuSans.ttf", "bold sans": "DejaVuSans-Bold.ttf", "serif": "DejaVuSerif.ttf",
         "bold serif": "DejaVuSerif-Bold.ttf", "mono": "DejaVuSansMono.ttf"}
HELD_OUT_FONTS = {"italic serif": "DejaVuSerif-Italic.ttf", "stix": "STIXGeneral.ttf"}
SIZES = {"small": 0.16, "large": 0.27}          # object radius as a fraction of the image width
POSITIONS = ["left", "right", "top", "bottom", "middle"]
NUMBERS = {1: "one", 2: "two", 3: "three"}
LAYOUTS = ("objects", "word", "panels")
SIGN_LETTERS = "ACEHKLNTX"       # the glyphs of signs: distinct at 32x32 in the sans font


@dataclass(frozen=True)
class Scene:
    """One image: `count` copies of an object (a shape or a glyph) in one colour."""
    obj: str                 # a SHAPE name or a GLYPH character
    colour: str
    size: str = "large"
    count: int = 1
    position: str = "middle"
    style: str = "filled"    # or "outline"
    font: str = "sans"       # glyphs only
    layout_seed: int = 0     # where exactly the copies go
    layout: str = "objects"  # or "word" (obj: the glyphs of a sign) or "panels"
    bottom: str = ""         # panels: the bottom panel's shape ("" = the same as the top's)

    @property
    def is_glyph(self) -> bool:
        return self.obj in GLYPHS

    @property
    def bottom_shape(self) -> str:
        """The bottom panel's shape (panels only)."""
        return self.bottom or self.obj


def sample_scenes(n: int, seed: int = 0, objects: list[str] | None = None,
                  colours: list[str] | None = None, held_out: set[tuple[str, str]] = frozenset(),
                  split: str = "train", fonts: list[str] | None = None,
                  styles: tuple[str, ...] = ("filled",), max_count: int = 3) -> list[Scene]:
    """`n` random scenes. split="train" never yields an (object, colour) pair in `held_out`;
    split="test" yields only those pairs (the zero-shot test set)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    objects = objects or SHAPES
    colours = colours or list(COLOURS)
    fonts = fonts or list(FONTS)
    pairs = [(o, c) for o in objects for c in colours if ((o, c) in held_out) == (split == "test")]
    if not pairs:
        raise ValueError(f"no (object, colour) pairs left for split {split!r}")
    rng = np.random.default_rng(seed)
    scenes = []
    for i in range(n):
        obj, colour = pairs[rng.integers(len(pairs))]
        count = int(rng.integers(1, max_count + 1))
        scenes.append(Scene(obj, colour, size=str(rng.choice(list(SIZES) if count == 1 else ["small"])),
                            count=count, position="middle" if count > 1 else str(rng.choice(POSITIONS)),
                            style=str(rng.choice(styles)), font=str(rng.choice(fonts)),
                            layout_seed=int(rng.integers(2**31))))
    return scenes


def sample_signs(n: int, seed: int = 0, colours: list[str] | None = None, length: int = 2,
                 letters: str = SIGN_LETTERS) -> list[Scene]:
    """`n` signs: a word of `length` random `letters` in one colour, in the sans font."""
    colours = colours or list(COLOURS)
    rng = np.random.default_rng(seed)
    return [Scene("".join(rng.choice(list(letters), length)), str(rng.choice(colours)), layout="word",
                  layout_seed=int(rng.integers(2**31))) for _ in range(n)]


def sample_panels(n: int, seed: int = 0, colours: list[str] | None = None, same: bool = True,
                  held_out: set[tuple[str, str]] = frozenset()) -> list[Scene]:
    """`n` two-panel scenes: a filled shape on the top and, on the bottom, the same shape as an
    outline drawing (same=True, what DALL·E's captions describe) or a random shape in a random
    style (same=False: what a judge must learn to tell apart). Pairs in `held_out` are skipped."""
    colours = colours or list(COLOURS)
    pairs = [(o, c) for o in SHAPES for c in colours if (o, c) not in held_out]
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(n):
        obj, colour = pairs[rng.integers(len(pairs))]
        bottom = obj if same else str(rng.choice(SHAPES))
        style = "outline" if same else str(rng.choice(["filled", "outline"]))
        scenes.append(Scene(obj, colour, size="small", style=style, layout="panels",
                            bottom="" if bottom == obj else bottom, layout_seed=int(rng.integers(2**31))))
    return scenes


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which points (u, v), in units of the object's radius, lie inside `shape`."""
    au, av = np.abs(u), np.abs(v)
    if shape == "circle":
        return u * u + v * v <= 1
    if shape == "square":
        return np.maximum(au, av) <= 0.8
    if shape == "triangle":                       # apex up (v grows downwards)
        return (v <= 0.75) & (au <= (v + 0.95) * 0.55)
    if shape == "diamond":
        return au + av <= 1
    if shape == "cross":
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if shape == "hexagon":
        return np.maximum(0.866 * au + 0.5 * av, av) <= 0.9
    raise ValueError(f"unknown shape {shape!r}; shapes are {SHAPES}")


@lru_cache(maxsize=None)
def _glyph_path(char: str, font: str):
    import matplotlib
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    fonts = {**FONTS, **HELD_OUT_FONTS}
    if font not in fonts:
        raise ValueError(f"unknown font {font!r}; fonts are {sorted(fonts)}")
    file = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / fonts[font]
    path = TextPath((0, 0), char, size=1, prop=FontProperties(fname=file))
    ext = path.get_extents()
    centre, half = (ext.x0 + ext.x1) / 2, max(ext.width, ext.height) / 2
    cy = (ext.y0 + ext.y1) / 2
    return path, centre, cy, half


@lru_cache(maxsize=4096)
def _mask(obj: str, radius_px: int, style: str, font: str) -> np.ndarray:
    """A boolean (2r+1, 2r+1) mask of one object, cached."""
    r = radius_px
    grid = (np.arange(2 * r + 1) - r + 0.0) / max(r, 1)                    # pixel centres in radii
    u, v = np.meshgrid(grid, grid)                                          # (2r+1, 2r+1)

    def fill(scale: float) -> np.ndarray:
        if obj in GLYPHS:
            path, cx, cy, half = _glyph_path(obj, font)
            pts = np.stack([cx + u.ravel() / scale * half * 1.05, cy - v.ravel() / scale * half * 1.05], 1)
            return path.contains_points(pts).reshape(u.shape)
        return _inside(obj, u / scale, v / scale)

    inside = fill(1.0)
    if style == "outline":
        width = max(1.0, 0.18 * r) / max(r, 1)                              # about 1-2 pixels
        inside &= ~fill(1.0 - 2 * width) if obj not in GLYPHS else _edge(inside)
    elif style != "filled":
        raise ValueError(f"style must be 'filled' or 'outline', got {style!r}")
    return inside


def _edge(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` next to a pixel outside it (the outline of a glyph)."""
    p = np.pad(mask, 1)
    interior = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return ~interior


def _centres(scene: Scene, res: int, r: int) -> list[tuple[int, int]]:
    """Pixel centres of the scene's copies, kept inside the image and apart from each other."""
    rng = np.random.default_rng(scene.layout_seed)
    lo, hi = r, res - 1 - r
    if scene.count == 1:
        mid = (lo + hi) // 2
        third = (hi - lo) // 3
        x, y = {"left": (lo + third // 2, mid), "right": (hi - third // 2, mid),
                "top": (mid, lo + third // 2), "bottom": (mid, hi - third // 2),
                "middle": (mid, mid)}[scene.position]
        jitter = rng.integers(-1, 2, size=2)
        return [(int(np.clip(x + jitter[0], lo, hi)), int(np.clip(y + jitter[1], lo, hi)))]
    for _ in range(200):                       # rejection sampling: copies must not overlap
        pts = rng.integers(lo, hi + 1, size=(scene.count, 2))
        d = np.abs(pts[:, None] - pts[None]).max(-1) + np.eye(scene.count, dtype=int) * res
        if d.min() > 2 * r + 1:
            return [tuple(map(int, p)) for p in pts]
    raise ValueError(f"cannot place {scene.count} {scene.size} objects apart at {res}x{res}")


def _pieces(s: Scene, res: int) -> list[tuple[np.ndarray, tuple[int, int], int]]:
    """(mask, centre, radius) of every object a scene draws."""
    jitter = np.random.default_rng(s.layout_seed).integers(-1, 2, size=2)
    if s.layout == "objects":
        r = max(2, round(SIZES[s.size] * res))
        return [(_mask(s.obj, r, s.style, s.font), c, r) for c in _centres(s, res, r)]
    if s.layout == "word":
        if not s.obj or any(ch not in GLYPHS for ch in s.obj):
            raise ValueError(f"a sign's word must be glyphs from {''.join(GLYPHS)}, got {s.obj!r}")
        r = min(round(0.2 * res), (res - 2) // (2 * len(s.obj)))       # glyphs side by side
        left = res // 2 - len(s.obj) * (r + 1) + r + 1 + int(jitter[0])
        y = res // 2 + int(jitter[1])
        return [(_mask(ch, r, "filled", "sans"), (left + k * (2 * r + 2), y), r)
                for k, ch in enumerate(s.obj)]
    if s.layout == "panels":
        r = max(2, round(SIZES["small"] * res))
        x = res // 2 + int(jitter[0])
        return [(_mask(s.obj, r, "filled", s.font), (x, res // 4), r),
                (_mask(s.bottom_shape, r, s.style, s.font), (x, 3 * res // 4), r)]
    raise ValueError(f"layout must be one of {LAYOUTS}, got {s.layout!r}")


def render(scenes: list[Scene], resolution: int = 32, background: str = "black",
           seed: int = 0) -> torch.Tensor:
    """Images (N, 3, resolution, resolution) in [0, 1]. background: "black", or "noise" (a
    random textured background, a distribution shift)."""
    if background not in ("black", "noise"):
        raise ValueError(f"background must be 'black' or 'noise', got {background!r}")
    out = np.zeros((len(scenes), resolution, resolution, 3), dtype=np.float32)
    if background == "noise":
        rng = np.random.default_rng(seed)
        coarse = rng.random((len(scenes), resolution // 4 + 1, resolution // 4 + 1, 3)) * 0.45
        out += np.repeat(np.repeat(coarse, 4, 1), 4, 2)[:, :resolution, :resolution]
        out += rng.normal(0, 0.06, out.shape).astype(np.float32)
    for i, s in enumerate(scenes):
        for mask, (x, y), r in _pieces(s, resolution):
            out[i, y - r:y + r + 1, x - r:x + r + 1][mask] = COLOURS[s.colour]
    return torch.from_numpy(out.clip(0, 1)).permute(0, 3, 1, 2).contiguous()


def object_name(scene: Scene, plural: bool = False) -> str:
    """'circle' / 'circles', 'letter K' / 'letters K', 'digit 7'."""
    if scene.is_glyph:
        kind = "digit" if scene.obj.isdigit() else "letter"
        return f"{kind}{'s' if plural else ''} {scene.obj}"
    return scene.obj + ("es" if plural and scene.obj.endswith("ss") else "s" if plural else "")


TEMPLATES = [
    "{count} {colour} {object}",
    "a photo of {count} {colour} {object}",
    "{count} {size} {colour} {object}",
    "there {be} {count} {colour} {object}",
    "{count} {colour} {object} {where}",
    "an image with {count} {colour} {object}",
]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def caption(scene: Scene, rng: np.random.Generator | None = None, template: str | None = None) -> str:
    """A caption for `scene` from a random template (or the given one). Captions name the object,
    colour and count; some also the size or the position; outline scenes are "outline drawings";
    glyphs name their font ("two red letters K in bold serif")."""
    rng = rng or np.random.default_rng(0)
    if scene.layout != "objects":
        return _layout_caption(scene, rng, template)
    if template is None:
        options = [t for t in TEMPLATES if not (scene.is_glyph and "{where}" in t)]
        template = options[rng.integers(len(options))]
    obj = object_name(scene, plural=scene.count > 1)
    first = scene.size if template.startswith("{count} {size}") else scene.colour
    count = _a(first).split()[0] if scene.count == 1 else NUMBERS[scene.count]
    words = {"count": count, "colour": scene.colour, "size": scene.size, "object": obj,
             "be": "is" if scene.count == 1 else "are",
             "where": "in the middle" if scene.position == "middle" else f"on the {scene.position}"}
    text = template.format(**words)
    if scene.style == "outline":
        text = f"an outline drawing of {NUMBERS[scene.count] if scene.count > 1 else _a(scene.colour).split()[0]} {scene.colour} {obj}"
    if scene.is_glyph:
        text += f" in {scene.font}"
    return text


SIGN_TEMPLATES = ["{a_colour} sign that says {word}", "the word {word} in {colour}",
                  "{colour} letters spelling {word}"]
PANEL_TEMPLATES = ["the exact same shape on the top and as an outline drawing on the bottom",
                   "a {colour} {object} on the top and the same {object} as an outline drawing on the bottom"]


def _layout_caption(scene: Scene, rng: np.random.Generator, template: str | None) -> str:
    if scene.layout == "word":
        template = template or SIGN_TEMPLATES[rng.integers(len(SIGN_TEMPLATES))]
        return template.format(colour=scene.colour, a_colour=_a(scene.colour), word=scene.obj)
    if scene.layout != "panels":
        raise ValueError(f"layout must be one of {LAYOUTS}, got {scene.layout!r}")
    if scene.bottom_shape != scene.obj or scene.style != "outline":
        raise ValueError("only panels with the same shape as an outline on the bottom have captions")
    template = template or PANEL_TEMPLATES[rng.integers(len(PANEL_TEMPLATES))]
    return template.format(colour=scene.colour, object=scene.obj)

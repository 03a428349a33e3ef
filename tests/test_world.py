import numpy as np
import pytest
import torch

from webmm_lab.data.world import (COLOURS, GLYPHS, SHAPES, Scene, caption, render, sample_scenes)

HELD = {("triangle", "purple"), ("circle", "green")}


def test_deterministic_for_a_seed():
    a, b = sample_scenes(50, seed=3), sample_scenes(50, seed=3)
    assert a == b and sample_scenes(50, seed=4) != a
    assert torch.equal(render(a, 32), render(b, 32))
    assert [caption(s, np.random.default_rng(1)) for s in a] == [caption(s, np.random.default_rng(1)) for s in b]


def test_held_out_pairs_never_appear_in_training_and_only_in_test():
    train = sample_scenes(3000, seed=0, held_out=HELD)
    assert not {(s.obj, s.colour) for s in train} & HELD
    test = sample_scenes(200, seed=0, held_out=HELD, split="test")
    assert {(s.obj, s.colour) for s in test} == HELD
    rng = np.random.default_rng(0)
    texts = [caption(s, rng) for s in train]
    assert not any("purple triangle" in t or "green circle" in t for t in texts)


@pytest.mark.parametrize("resolution", [32, 64])
def test_pixels_match_the_caption(resolution):
    """Every caption's colour is the only colour in its image, and the object count is right."""
    from scipy.ndimage import label
    scenes = sample_scenes(300, seed=1, objects=SHAPES + GLYPHS[:5], styles=("filled", "outline"))
    images = render(scenes, resolution)
    assert images.shape == (300, 3, resolution, resolution) and images.min() >= 0 and images.max() <= 1
    palette = torch.tensor(list(COLOURS.values()))                          # (K, 3)
    names = list(COLOURS)
    rng = np.random.default_rng(0)
    for scene, img in zip(scenes, images):
        text = caption(scene, rng)
        lit = img.sum(0) > 0                                                 # (H, W)
        colours = img[:, lit].T.unique(dim=0)                               # (k, 3)
        assert len(colours) == 1, "one colour per scene"
        name = names[int((palette - colours[0]).abs().sum(1).argmin())]
        assert name == scene.colour and f" {name} " in f" {text} "
        if scene.style == "filled" and not scene.is_glyph:                   # glyphs may have parts
            _, n = label(lit.numpy())
            assert n == scene.count, (scene, n)
        word = {1: None, 2: "two", 3: "three"}[scene.count]
        assert word is None or word in text.split()


def test_shift_variants():
    scenes = sample_scenes(20, seed=2, objects=["square"])
    filled = render(scenes, 32)
    outline = render([Scene(**{**s.__dict__, "style": "outline"}) for s in scenes], 32)
    assert (outline.sum(1) > 0).sum() < 0.7 * (filled.sum(1) > 0).sum()
    noisy = render(scenes, 32, background="noise")
    assert (noisy.sum(1) > 0).float().mean() > 0.9 and not torch.equal(noisy, filled)
    k = render([Scene("K", "red", font="stix")], 32)
    assert (k.sum(1) > 0).sum() > 10
    with pytest.raises(ValueError, match="unknown font"):
        render([Scene("K", "red", font="comic")], 32)
    with pytest.raises(ValueError, match="background"):
        render(scenes, 32, background="grass")


def test_captions_read_naturally():
    assert caption(Scene("circle", "orange"), template="{count} {colour} {object}") == "an orange circle"
    assert caption(Scene("K", "red", count=2, size="small", font="bold serif"),
                   template="{count} {colour} {object}") == "two red letters K in bold serif"
    assert caption(Scene("square", "blue", style="outline")) == "an outline drawing of a blue square"
    assert caption(Scene("circle", "red", position="left"), template="{count} {colour} {object} {where}") \
        == "a red circle on the left"

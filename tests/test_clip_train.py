"""CLIP on the synthetic world: data pipeline, chunked loss, zero-shot prediction, the new
model pieces (ViT, GroupNorm encoder, non-causal blocks). `webmm-lab train clip` under torchrun
is tested in test_distributed.py."""
from dataclasses import replace

import pytest
import torch

from webmm_lab.experiments.clip import (END, PAIRS, ClipSetup, ClipWorld, build_clip, eval_scenes,
                                        eval_set, gallery, held_out_pairs, predict, seen_classes, train_clip)
from webmm_lab.models.contrastive import chunked_clip_loss, clip_loss
from webmm_lab.models.cnn import ConvEncoder
from webmm_lab.models.gpt import GPT, GPTConfig
from webmm_lab.models.vit import ViT
from webmm_lab.plots import image_grid
from webmm_lab.data.tokenizers import CharTokenizer, pad_batch

SMALL = ClipSetup(pool=300, steps=3, batch=16, vocab=300)


@pytest.fixture(scope="module")
def world():
    return ClipWorld.build(SMALL)


def test_chunked_loss_is_the_mean_of_per_chunk_losses():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(12, 5, generator=g), torch.randn(12, 5, generator=g)
    scale = torch.tensor(2.0)
    expected = torch.stack([clip_loss(img[i:i + 4], txt[i:i + 4], scale) for i in (0, 4, 8)]).mean()
    assert torch.allclose(chunked_clip_loss(img, txt, scale, 4), expected)
    assert torch.allclose(chunked_clip_loss(img, txt, scale, 12), clip_loss(img, txt, scale))
    with pytest.raises(ValueError, match="divide"):
        chunked_clip_loss(img, txt, scale, 5)


def test_world_keeps_held_out_pairs_out_and_outlines_to_their_shapes(world):
    held = held_out_pairs(SMALL.held_out)
    assert held == held_out_pairs(SMALL.held_out) and len(held) == 10
    assert not {(s.obj, s.colour) for s in world.scenes} & held
    assert {s.obj for s in world.scenes if s.style == "outline"} <= set(SMALL.outline_shapes)
    assert world.images.dtype == torch.uint8 and world.images.shape == (300, 3, 32, 32)
    assert len(seen_classes(SMALL)) == len(PAIRS) - 10


def test_batches_are_deterministic_and_captions_end_with_the_marker(world):
    a, b = world.batches()(5), world.batches()(5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    images, ids, lengths = a
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32 and images.max() <= 1
    end = world.tokenizer.encode(END)[0]
    assert (ids[torch.arange(16), lengths - 1] == end).all()
    assert not torch.equal(world.batches()(6)[0], images)
    imgs, labels = world.label_batches()(5)
    assert torch.equal(imgs, images)            # the same images as CLIP's batch of that step
    assert labels.shape == (16,) and int(labels.max()) < len(PAIRS)


def test_eval_sets_are_what_they_say():
    held = held_out_pairs(SMALL.held_out)
    assert {(s.obj, s.colour) for s in eval_scenes(SMALL, "held-out", 50)} <= held
    sketch = eval_scenes(SMALL, "sketch", 50)
    assert all(s.style == "outline" and s.obj not in SMALL.outline_shapes for s in sketch)
    assert all((s.obj, s.colour) not in held for s in sketch)
    noise, labels = eval_set(SMALL, "noise", 8)
    clean, _ = eval_set(SMALL, "seen", 8)
    assert (noise == 0).float().mean() < 0.2 < (clean == 0).float().mean()   # texture, not black
    assert [PAIRS[i] for i in labels] == [(s.obj, s.colour) for s in eval_scenes(SMALL, "noise", 8)]
    with pytest.raises(ValueError, match="unknown eval set"):
        eval_scenes(SMALL, "photos", 5)


def test_training_runs_and_predictions_stay_in_the_allowed_classes(world):
    model = build_clip(SMALL, world)
    history = train_clip(model, world, SMALL, device="cpu", progress=False)
    assert len(history.loss) == 3 and "logit scale" in history.evals[-1]
    assert history.evals[-1]["logit scale"] <= 100
    images, _ = eval_set(SMALL, "seen", 10)
    allowed = [0, 5, 7]
    assert set(predict(model, world, images, classes=allowed).tolist()) <= set(allowed)
    both = ["a {}", "a photo of a {}"]
    best = predict(model, world, images, both)
    assert best.shape == (10,)
    # each class's weights do not depend on the others: the winner among all 48 classes still
    # wins against any one rival
    for i, c in enumerate(best.tolist()):
        rival = (c + 1 + i) % 48
        assert predict(model, world, images[i:i + 1], both, classes=[rival, c]).item() == c
    # the run's own batch size, not the world's (16 does not split into chunks of 3)
    train_clip(build_clip(SMALL, world), world, replace(SMALL, batch=6, chunk=3, steps=1),
               device="cpu", progress=False)


def test_pad_batch_cache_gives_the_same_ids():
    tok = CharTokenizer.from_text("abc |")
    cache = {}
    first = pad_batch(tok, ["ab", "c"], end="|", cache=cache)
    again = pad_batch(tok, ["ab", "c"], end="|", cache=cache)
    plain = pad_batch(tok, ["ab", "c"], end="|")
    assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(first, again, plain))
    assert set(cache) == {"ab|", "c|"}


def test_vit_sees_every_patch_and_checks_its_input():
    vit = ViT(image_size=16, patch=4, width=16, layers=2, heads=2)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    out = vit(x)
    assert out.shape == (2, 16) and vit.out_dim == 16
    (out[0] * torch.randn(16)).sum().backward()          # (a plain sum of a LayerNorm output is 0)
    assert x.grad[0, :, -4:, -4:].abs().sum() > 0        # the class token reads the last patch
    assert x.grad[1].abs().sum() == 0                     # and never another image
    with pytest.raises(ValueError, match="16, 16"):
        vit(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="multiple"):
        ViT(image_size=30, patch=4)


def test_non_causal_blocks_let_early_positions_see_later_ones():
    torch.manual_seed(0)
    for causal in (True, False):
        model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=16, causal=causal))
        ids = torch.randint(10, (1, 8))
        changed = ids.clone()
        changed[0, -1] = (ids[0, -1] + 1) % 10
        same_prefix = torch.allclose(model.features(ids)[0, :-1], model.features(changed)[0, :-1])
        assert same_prefix == causal


def test_group_norm_encoder_treats_each_image_alone():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    for norm, alone in (("group", True), ("batch", False)):
        enc = ConvEncoder(3, 8, norm).train()
        assert torch.allclose(enc(x)[:2], enc(x[:2]), atol=1e-5) == alone
    with pytest.raises(ValueError, match="norm"):
        ConvEncoder(3, 8, "layer")


def test_gallery_puts_captions_under_the_images():
    from webmm_lab.data.world import sample_scenes
    fig = gallery(sample_scenes(4, seed=0), resolution=32, ncols=4)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(texts) == 4 and all(texts)
    fig = image_grid(torch.rand(2, 3, 8, 8), ["a long caption to wrap", "b"], wrap=10)
    assert "\n" in fig.axes[0].get_title()


def test_clip_benchmark_reports_every_part():
    from webmm_lab.tools.bench import bench_clip
    r = bench_clip(batch=8, device=torch.device("cpu"), repeat=2)
    assert set(r) == {"batch", "image tower", "text tower", "step", "total"}
    assert all(v > 0 for v in r.values()) and r["total"] >= r["step"]


def test_logit_scale_and_norms_get_no_weight_decay(world):
    from webmm_lab.train import param_groups
    model = build_clip(SMALL, world)
    decay, no_decay = param_groups(model, 0.1)
    assert any(p is model.logit_scale for p in no_decay["params"])
    assert not any(p is model.logit_scale for p in decay["params"])
    assert all(p.dim() >= 2 for p in decay["params"]) and no_decay["weight_decay"] == 0


def test_the_one_attribute_reader_guesses_among_the_candidates_sharing_it():
    from webmm_lab.experiments.clip import PAIRS, one_attribute_reader
    cands = {("circle", "red"), ("square", "red"), ("square", "blue")}
    label = lambda pair: PAIRS.index(pair)
    labels = torch.tensor([label(("circle", "red")), label(("square", "blue"))])
    assert one_attribute_reader(labels, cands, "colour") == pytest.approx(100 * (1 / 2 + 1) / 2)
    assert one_attribute_reader(labels, cands, "shape") == pytest.approx(100 * (1 + 1 / 2) / 2)
    with pytest.raises(ValueError, match="candidate pairs"):
        one_attribute_reader(torch.tensor([label(("cross", "green"))]), cands, "colour")
    with pytest.raises(ValueError, match="'colour' or 'shape'"):
        one_attribute_reader(labels, cands, "size")

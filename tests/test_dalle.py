"""Notebook 06's pieces: the world's signs and panels, the image tokenizers (gumbel-softmax,
KL to uniform, dVAE and VQ), DALL·E's transformer (padding, modality masking, attention
masks, sampling), the judge and the caption check."""
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from webmm_lab.data.world import (COLOURS, SIGN_LETTERS, Scene, caption, render,
                                  sample_panels, sample_scenes, sample_signs)
from webmm_lab.experiments.clip import ClipSetup, ClipWorld, held_out_pairs
from webmm_lab.experiments.dalle import (DalleSetup, JudgeSetup, TokenizerSetup, build_dalle, build_tokenizer,
                                         build_world, clip_setup, draw, next_alike, prompt_scenes, text_batch,
                                         training_scenes, unknown_words, validation_set)
from webmm_lab.experiments.dalle_judge import (HEADS, agreement, build_judge, choose_tokenizer, describe,
                                               judge_labels, panel_agreement, rerank_gain, sample_and_judge,
                                               tokenizer_report)
from webmm_lab.metrics import unigram_loss
from webmm_lab.models.dalle import DALLE, attention_mask
from webmm_lab.models.dvae import DiscreteVAE, VQTokenizer, gumbel_softmax, kl_to_uniform

TINY = DalleSetup(objects=300, signs=60, panels=60, codebook=16, layers=1, heads=2, width=32, steps=2,
                  tok=TokenizerSetup(width=8, dim=8, steps=2), clip=ClipSetup(steps=2),
                  judge=JudgeSetup(scenes=100, steps=2))


@pytest.fixture(scope="module")
def world():
    return build_world(TINY)


# ------------------------------------------------------------------ the world's new layouts

def test_signs_and_panels_draw_what_their_captions_say():
    from scipy.ndimage import label
    rng = np.random.default_rng(0)
    signs = sample_signs(40, seed=3)
    for s, img in zip(signs, render(signs, 32)):
        text = caption(s, rng)
        assert s.obj in text and s.colour in text and set(s.obj) <= set(SIGN_LETTERS)
        lit = img.sum(0) > 0
        assert torch.allclose(img[:, lit].T.unique(dim=0), torch.tensor([COLOURS[s.colour]]))
        left, right = lit[:, :16].sum(), lit[:, 16:].sum()          # one glyph on each side
        assert left > 10 and right > 10
    panels = sample_panels(40, seed=4)
    for s, img in zip(panels, render(panels, 32)):
        text = caption(s, rng)
        assert "top" in text and "outline" in text and s.style == "outline" and s.bottom_shape == s.obj
        lit = img.sum(0) > 0
        top, bottom = lit[:16], lit[16:]
        assert label(top.numpy())[1] == 1 and top.sum() > bottom.sum() > 0   # filled above, outline below
        if s.obj in text.split():
            assert s.colour in text


def test_panels_with_another_bottom_have_no_caption_and_bad_words_are_errors():
    odd = Scene("circle", "red", layout="panels", bottom="square", style="filled")
    assert odd.bottom_shape == "square"
    with pytest.raises(ValueError, match="only panels"):
        caption(odd)
    with pytest.raises(ValueError, match="glyphs"):
        render([Scene("O!", "red", layout="word")], 32)
    with pytest.raises(ValueError, match="layout"):
        render([Scene("circle", "red", layout="collage")], 32)


def test_held_out_pairs_are_never_in_the_training_captions():
    held = held_out_pairs(TINY.held_out)
    scenes = training_scenes(DalleSetup(objects=3000, signs=10, panels=500))
    assert not {(s.obj, s.colour) for s in scenes if s.layout != "word"} & held
    rng = np.random.default_rng(0)
    text = "\n".join(caption(s, rng) for s in scenes)
    for shape, colour in held:
        assert not re.search(rf"\b{colour} (small |large )?{shape}", text)
    assert {(s.obj, s.colour) for s in prompt_scenes(TINY, "held-out", 50)} <= held


def test_unknown_words_are_named(world):
    assert unknown_words(world, "two white squares") == []
    assert unknown_words(world, "an armchair in the shape of an avocado") == ["armchair", "avocado"]
    assert unknown_words(world, "빨간 원 두 개, red") == ["빨간", "원", "두", "개"]          # Hangul is words too
    assert unknown_words(world, "a white sign that says XT") == []                      # any sign word
    assert unknown_words(world, "Two white squares on the left") == ["Two"]             # captions are lower case
    model = build_dalle(TINY, world)
    tok = build_tokenizer(TINY, "vq")
    with pytest.raises(ValueError, match="avocado"):
        draw(model, tok, world, ["a green avocado"], n=1)


# ------------------------------------------------------------------ tokenizers

def test_gumbel_softmax_is_a_distribution_that_sharpens_and_samples_the_softmax():
    logits = torch.tensor([[2.0, 0.0, -1.0]]).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    soft = gumbel_softmax(logits, tau=1.0, dim=1, generator=g)
    assert torch.allclose(soft.sum(1), torch.ones(20000))
    hard = gumbel_softmax(logits, tau=0.01, dim=1, generator=g)
    assert (hard.max(1).values > 0.99).float().mean() > 0.95              # nearly one-hot
    freq = torch.bincount(hard.argmax(1), minlength=3).float() / 20000
    assert torch.allclose(freq, logits[0].softmax(0), atol=0.02)           # samples of softmax(logits)
    with pytest.raises(ValueError):
        gumbel_softmax(logits, tau=0.0)


def test_kl_to_uniform_is_zero_for_uniform_and_log_k_for_one_hot():
    assert abs(kl_to_uniform(torch.zeros(2, 8, 3, 3)).item()) < 1e-6
    one_hot = torch.full((2, 8, 3, 3), -1e4)
    one_hot[:, 2] = 0
    assert abs(kl_to_uniform(one_hot).item() - math.log(8)) < 1e-4


@pytest.mark.parametrize("cls", [DiscreteVAE, VQTokenizer])
def test_tokenizers_shapes_and_argmax_tokens_decode_to_images(cls):
    tok = cls(codebook_size=16, width=8, dim=8)
    x = render(sample_signs(4) + sample_panels(4), 32)
    out = tok(x, done=0.5)
    assert out.recon.shape == x.shape and out.codes.shape == (8, 8, 8) and out.loss.ndim == 0
    out.loss.backward()
    tok.eval()
    codes = tok.encode(x)
    assert codes.shape == (8, 8, 8) and codes.dtype == torch.long and 0 <= codes.min() and codes.max() < 16
    img = tok.decode(codes)
    assert img.shape == (8, 3, 32, 32) and 0 <= img.min() and img.max() <= 1
    assert torch.allclose(img, tok(x).recon.clamp(0, 1), atol=1e-5)     # eval forward decodes the tokens
    with pytest.raises(ValueError, match="RGB"):
        tok.encode(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="codes"):
        tok.decode(torch.full((1, 8, 8), 16))


def test_dvae_schedules_anneal_the_temperature_and_warm_up_the_kl():
    d = DiscreteVAE(16, 8, 8, tau_start=1.0, tau_end=1 / 16, anneal_over=0.5, kl_weight=0.2, kl_warmup=0.1)
    assert d.schedule(0.0) == (1.0, 0.0)
    tau, kl = d.schedule(0.05)
    assert 1 / 16 < tau < 1 and abs(kl - 0.1) < 1e-9
    assert d.schedule(0.5) == pytest.approx((1 / 16, 0.2)) and d.schedule(1.0) == pytest.approx((1 / 16, 0.2))


def test_tokenizer_report_and_choice(world):
    judge = build_judge(TINY)
    x, scenes = validation_set(TINY, n=40)
    report = tokenizer_report(build_tokenizer(TINY, "dvae"), judge, x, scenes)
    assert set(report) == {"used", "perplexity", "mse", "recognised", "judge on originals"}
    assert 0 < report["used"] <= 100 and 1 <= report["perplexity"] <= 16
    assert choose_tokenizer({"dvae": {"recognised": 12.0, "used": 90.0},
                             "vq": {"recognised": 65.0, "used": 100.0}}) == "vq"
    assert choose_tokenizer({"dvae": {"recognised": 65.0, "used": 100.0},
                             "vq": {"recognised": 65.0, "used": 80.0}}) == "dvae"


# ------------------------------------------------------------------ the transformer

def test_attention_masks():
    L, G = 3, 4
    dense = attention_mask(L, G)
    assert torch.equal(dense, torch.ones(L + G * G, L + G * G, dtype=torch.bool).tril())
    for kind in ("row", "column", "conv"):
        m = attention_mask(L, G, kind)
        assert not (m & ~dense).any()                           # never sees the future
        assert m[L:, :L].all() and not m[:L, L:].any()          # images see the caption, not vice versa
        assert m.diagonal().all()
    col = attention_mask(L, G, "column")[L:, L:]
    assert col[5].nonzero().flatten().tolist() == [1, 5]        # token 5 (row 1, col 1) sees token 1 above it
    row = attention_mask(L, G, "row")[L:, L:]
    assert row[5].nonzero().flatten().tolist() == [1, 2, 3, 4, 5]  # itself and the G before it (1: above)
    conv = attention_mask(L, G, "conv")[L:, L:]
    assert conv[5].nonzero().flatten().tolist() == [0, 1, 2, 4, 5]
    with pytest.raises(ValueError):
        attention_mask(L, G, "strided")


def small_dalle():
    torch.manual_seed(0)
    return DALLE(text_vocab=20, text_len=5, codebook_size=7, grid=3, n_layer=1, n_head=2, n_embd=16)


def test_another_scene_alike_is_the_next_that_agrees_on_the_kept_fields():
    scenes = [Scene("circle", "red"), Scene("square", "blue"), Scene("cross", "red"), Scene("hexagon", "green"),
              Scene("square", "red")]
    assert next_alike(scenes) == [1, 2, 3, 4, 0]                  # no field kept: simply the next scene
    assert next_alike(scenes, ("colour",)) == [2, 1, 4, 3, 0]     # reds cycle; a lone colour keeps its own
    assert next_alike(scenes, ("layout", "colour")) == next_alike(scenes, ("colour",))


def test_pad_text_puts_a_padding_token_per_position():
    m = small_dalle()
    ids = torch.tensor([[3, 4, 5], [6, 0, 0]])
    out = m.pad_text(ids, torch.tensor([3, 1]))
    assert out.tolist() == [[3, 4, 5, 23, 24], [6, 21, 22, 23, 24]]
    with pytest.raises(ValueError, match="caption token"):
        m.pad_text(torch.tensor([[25]]), torch.tensor([1]))


def test_an_image_position_never_predicts_a_text_token():
    m = small_dalle()
    text = m.pad_text(torch.tensor([[1, 2]]), torch.tensor([2])).repeat(2, 1)
    codes = torch.randint(7, (2, 3, 3))
    logits = m.masked_logits(text, codes)                      # (2, 5 + 9 - 1, 32)
    assert logits.shape == (2, 13, 32)
    assert torch.isinf(logits[:, 4:, :25]).all() and torch.isfinite(logits[:, 4:, 25:]).all()
    assert torch.isinf(logits[:, :4, 25:]).all() and torch.isfinite(logits[:, :4, :25]).all()
    text_loss, image_loss = m(text, codes)
    assert text_loss > 0 and abs(image_loss.item() - math.log(7)) < 0.5    # near uniform over 7 codes at init
    out = m.generate(text, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 3) and out.min() >= 0 and out.max() < 7
    with pytest.raises(ValueError, match="codes"):
        m(text, torch.randint(7, (2, 2, 2)))


def test_generation_keeps_an_image_prompt_and_matches_the_uncached_model():
    m = small_dalle()
    text = m.pad_text(torch.tensor([[1, 2, 3]]), torch.tensor([3]))
    prefix = torch.tensor([[4, 5, 6]])                          # the top row, given
    out = m.generate(text, prefix=prefix, temperature=0)
    assert out[0, 0].tolist() == [4, 5, 6]
    # greedy decoding with the cache equals the argmax of the full model's logits, token by token
    logits = m.masked_logits(text, out)
    assert torch.equal(logits[0, 5 + 2:].argmax(-1) - 25, out.flatten()[3:])


def test_judge_labels_and_readings():
    scenes = [Scene("circle", "red", count=2, size="small"), Scene("KA", "white", layout="word"),
              Scene("square", "blue", layout="panels", style="outline")]
    y = judge_labels(scenes)
    assert y.shape == (3, len(HEADS))
    assert describe(y.clamp_min(0)) == ["2 red circles", "sign KA, white", "blue square / outline square"]
    crosses = judge_labels([Scene("cross", "green", count=3, size="small"), Scene("cross", "green")])
    assert describe(crosses) == ["3 green crosses", "1 green cross"]
    assert agreement(y, y).all()
    wrong = y.clone()
    wrong[0, list(HEADS).index("glyph 1")] = 3                 # a head that does not apply
    assert agreement(wrong, y).all()
    wrong[0, list(HEADS).index("count")] = 0
    assert agreement(wrong, y).tolist() == [False, True, True]
    assert agreement(wrong, y, ("colour", "shape")).all()


def test_rerank_gain_and_unigram():
    correct = torch.tensor([[True, False, False, False], [False, False, True, False]])
    scores = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.0, 0.5, 0.2, 0.1]])
    assert rerank_gain(correct, scores) == (25.0, 50.0)
    codes = torch.tensor([0, 0, 0, 1]).view(1, 2, 2)
    assert abs(unigram_loss(codes, codes, 2) - (-(3 * math.log(4 / 6) + math.log(2 / 6)) / 4)) < 1e-6


def test_world_captions_fit_the_model(world):
    model = build_dalle(TINY, world)
    rng = np.random.default_rng(0)
    captions = [caption(s, rng) for s in world.scenes]
    text = text_batch(model, world, captions)
    assert text.shape == (len(world.scenes), TINY.text_len)
    from webmm_lab.experiments.clip import END
    for row, c in zip(text[:50], captions):             # each row: the caption's ids, then paddings
        ids = row[row < model.text_vocab].tolist()
        assert world.tokenizer.decode(ids) == c + END
        assert (row[len(ids):] == model.text_vocab + torch.arange(len(ids), TINY.text_len)).all()


def test_clip_batches_are_softened_renders_with_their_captions(world):
    raw = ClipWorld.batches(world, 16, seed=3)(5)
    soft = world.batches(16, seed=3)(5)
    assert torch.equal(raw[1], soft[1]) and torch.equal(raw[2], soft[2])       # same captions
    assert soft[0].shape == raw[0].shape and 0 <= soft[0].min() and soft[0].max() <= 1
    assert not torch.equal(raw[0], soft[0]) and (soft[0] - raw[0]).abs().mean() < 0.05
    assert torch.equal(world.batches(16, seed=3)(5)[0], soft[0])              # a step's batch is fixed


def test_samples_are_judged_and_ranked(world):
    model, tok = build_dalle(TINY, world), build_tokenizer(TINY, "vq")
    judge = build_judge(TINY)
    from webmm_lab.experiments.clip import build_clip
    clip = build_clip(clip_setup(TINY), world)
    scenes = prompt_scenes(TINY, "seen", 3) + prompt_scenes(TINY, "panels", 2)
    captions = [caption(s) for s in scenes]
    s = sample_and_judge(model, tok, world, judge, clip, captions, scenes, n=4, seed=0)
    assert s.images.shape == (20, 3, 32, 32) and s.scores.shape == (5, 4) and s.n == 4
    assert s.reading.shape == s.labels.shape == (20, len(HEADS))
    assert torch.equal(s.labels[::4], judge_labels(scenes))
    order = s.best_first()
    assert sorted(order[1].tolist()) == [4, 5, 6, 7]
    assert (s.scores.flatten()[order].diff(dim=1) <= 0).all()                 # best first
    right = s.right(("colour",))
    random_, top = s.rates(("colour",))
    assert right.shape == (5, 4) and random_ == pytest.approx(right.float().mean().item() * 100)
    assert top == pytest.approx(right[torch.arange(5), s.scores.argmax(1)].float().mean().item() * 100)
    unasked = sample_and_judge(model, tok, world, judge, clip, captions[:1], n=2)
    assert (unasked.labels == -1).all() and unasked.right().all()             # nothing asked, nothing wrong
    with pytest.raises(ValueError, match="one scene per caption"):
        sample_and_judge(model, tok, world, judge, clip, captions, scenes[:2], n=2)


def test_an_ensemble_sums_scores_and_resampled_codes_keep_the_rest(world):
    from webmm_lab.experiments.clip import build_clip
    from webmm_lab.experiments.dalle_judge import clip_scores, clip_shape_reading, resample_codes, shape_scores
    model = build_dalle(TINY, world)
    clips = [build_clip(replace(clip_setup(TINY), seed=k), world) for k in (0, 1)]
    scenes = prompt_scenes(TINY, "seen", 4)
    images = render(scenes, TINY.resolution)
    captions = [caption(s) for s in scenes]
    assert torch.allclose(clip_scores(clips, world, images, captions),
                          sum(clip_scores(c, world, images, captions) for c in clips))
    both = shape_scores(clips, world, images, scenes)
    assert both.shape == (4, 6) and torch.equal(clip_shape_reading(clips, world, images, scenes), both.argmax(1))
    codes = torch.randint(TINY.codebook, (4, TINY.grid, TINY.grid), generator=torch.Generator().manual_seed(0))
    assert torch.equal(resample_codes(model, world, codes, scenes, 0.0), codes)          # nothing drawn
    drawn = resample_codes(model, world, codes, scenes, 1.0, seed=1)
    assert drawn.shape == codes.shape and 0 <= drawn.min() and drawn.max() < TINY.codebook   # image codes only
    assert not torch.equal(drawn, codes) and torch.equal(drawn, resample_codes(model, world, codes, scenes, 1.0, seed=1))
    half = resample_codes(model, world, codes, scenes, 0.5, seed=2)
    assert 0.2 < (half != codes).float().mean() < 0.8


def test_panel_agreement_reads_the_two_panels():
    scenes = [Scene("square", "blue", layout="panels", style="outline"),
              Scene("square", "blue", layout="panels", style="filled", bottom="circle"),
              Scene("square", "blue", layout="panels", style="filled"),
              Scene("square", "blue", count=2, size="small")]
    y = judge_labels(scenes).clamp_min(0)
    assert panel_agreement(y).tolist() == [True, False, False, False]


def test_soften_blurs_and_noises_within_range():
    from webmm_lab.data.augment import soften
    x = render(sample_scenes(8, seed=1), 32)
    a = soften(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, soften(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, soften(x, torch.Generator().manual_seed(1)))


def test_sampling_without_the_cache_gives_the_same_greedy_codes():
    m = small_dalle()
    text = m.pad_text(torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([3, 2]))
    assert torch.equal(m.generate(text, temperature=0), m.generate(text, temperature=0, use_cache=False))


def test_dalle_benchmark_reports_training_and_sampling():
    from webmm_lab.tools.bench import bench_dalle
    r = bench_dalle(batch=2, device=torch.device("cpu"), repeat=1)
    assert set(r) == {"step", "cached", "uncached"} and all(v > 0 for v in r.values())


@pytest.mark.parametrize("downs", [1, 2, 3])
@pytest.mark.parametrize("kind", ["vq", "dvae"])
def test_the_setup_grid_is_the_tokenizers(kind, downs):
    setup = replace(TINY, downs=downs)
    tok = build_tokenizer(setup, kind)
    codes = tok.encode(torch.rand(2, 3, setup.resolution, setup.resolution))
    assert setup.grid == tok.grid(setup.resolution) == codes.shape[-1] == setup.resolution // 2 ** downs


def test_samples_scored_against_another_caption_are_what_an_ignored_caption_scores():
    from webmm_lab.experiments.dalle_judge import Samples
    colour = list(HEADS).index("colour")
    labels = torch.full((3 * 2, len(HEADS)), -1)
    labels[:, colour] = torch.tensor([0, 0, 1, 1, 2, 2])          # 3 captions asking colours 0, 1, 2
    reading = labels.clone()                                        # a generator that obeys every caption
    s = Samples(["a", "b", "c"], torch.zeros(6, 3, 4, 4), reading, labels, torch.zeros(3, 2), 0.0)
    assert s.rates(("colour",))[0] == 100.0 and s.mismatched(("colour",)) == 0.0
    s.reading[:, colour] = 1                                         # one that always draws colour 1
    assert s.rates(("colour",))[0] == pytest.approx(100 / 3) and s.mismatched(("colour",)) == pytest.approx(100 / 3)

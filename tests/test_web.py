"""Notebook 08's pieces: the mini web (its ground truth is what it says), the filters (precision
and recall on planted cases), tar shards (round trip), gradient accumulation and GradCache."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from webmm_lab.data.shards import ShardError, read_shards, write_shards
from webmm_lab.data.web import (BLOCKED_FORMS, BLOCKLIST, KINDS, MIXTURE, NEAR_MISSES, blocked_form, build_web,
                                clean_pairs, edit_duplicate)
from webmm_lab.experiments.clip import ClipSetup, build_clip, held_out_pairs
from webmm_lab.experiments.dedup import (aligned_distance, candidate_pairs, colour_histograms,
                                         dedup_by_embedding, dedup_by_hash, near_duplicates, phash,
                                         score_dedup)
from webmm_lab.experiments.web import (PairWorld, accumulated_gradients, candidate_words, choose_threshold,
                                       contrastive_loss, distillation_loss, full_batch_gradients,
                                       grad_cache_gradients, keyword_filter, max_difference, pair_scores,
                                       relative_difference, score_filter, search_templates, training_flops)
from webmm_lab.models.contrastive import clip_loss


@pytest.fixture(scope="module")
def web():
    return build_web(1200, seed=5, held_out=held_out_pairs(10))


def test_the_mixture_is_the_fixed_one_and_the_truth_is_what_it_says(web):
    counts = web.summary()
    assert sum(counts.values()) == 1200 and list(counts) == list(KINDS)
    assert all(abs(counts[k] - 1200 * MIXTURE[k]) <= 1 for k in KINDS)
    held = held_out_pairs(10)
    assert not {(s.obj, s.colour) for s in web.scenes} & held
    for i in range(len(web)):
        kind, text, s = web.kind[i], web.captions[i].lower(), web.scenes[i]
        if kind in ("right", "duplicate", "blocked"):
            assert s.colour in text and s.obj in text, (kind, text, s)
        if kind == "mismatched":
            assert not (s.colour in text and s.obj in text), text
        if kind == "boilerplate":
            assert not any(c in text for c in ("red", "green", "blue", "circle", "square"))
        if kind == "duplicate":
            src = int(web.source[i])
            assert web.kind[src] == "right" and web.scenes[src] == s
            assert aligned_distance(web.images, torch.tensor([[src, i]]))[0] < 0.1      # a near-copy
        else:
            assert web.source[i] == -1
        assert web.near_miss[i] == (kind == "right" and any(w in text for w in NEAR_MISSES))
    blocked = [web.captions[i] for i in range(len(web)) if web.kind[i] == "blocked"]
    assert {web.form[i] for i in range(len(web)) if web.kind[i] == "blocked"} == set(BLOCKED_FORMS)
    assert build_web(300, seed=5).captions == build_web(300, seed=5).captions
    assert blocked


def test_subset_keeps_the_truth_aligned(web):
    keep = torch.arange(len(web)) % 3 != 0
    sub = web.subset(keep)
    assert len(sub) == int(keep.sum())
    for i in (sub.source >= 0).nonzero().flatten().tolist():
        assert sub.scenes[int(sub.source[i])] == sub.scenes[i] and sub.kind[int(sub.source[i])] == "right"


@pytest.mark.parametrize("form", BLOCKED_FORMS)
def test_every_blocked_form_is_caught_and_near_misses_pass(form):
    rng = np.random.default_rng(0)
    for word in BLOCKLIST:
        for where in ("{} two red circles", "two red circles {}", "a {} photo"):
            text = where.format(blocked_form(word, form, rng))
            assert keyword_filter([text])[0], text
    clean = [f"{w}: two red circles" for w in NEAR_MISSES] + [f"a gruesome green square, {w}" for w in NEAR_MISSES]
    assert not keyword_filter(clean).any()
    assert not keyword_filter(["IMG_0042.jpg", "a photo of a red square", "g r e e n"]).any()
    assert "grue" in candidate_words(["g", "r", "u", "e", "a", "photo"])


def test_keyword_filter_on_the_web(web):
    s = score_filter(keyword_filter(web.captions), web.mask("blocked"))
    assert s["recall"] >= 95 and s["precision"] >= 95
    assert not keyword_filter([web.captions[i] for i in web.near_miss.nonzero().flatten().tolist()]).any()


def test_score_filter_counts():
    s = score_filter(torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool), torch.tensor([1, 0, 1, 0, 0], dtype=torch.bool))
    assert s["precision"] == pytest.approx(100 / 3) and s["recall"] == 50 and s["false removals"] == pytest.approx(200 / 3)


def test_dedup_rules_and_scores(web):
    e = torch.tensor([[1.0, 0], [2.0, 0.01], [0, 1], [0.01, 3]])
    assert dedup_by_embedding(e, 0.99).tolist() == [False, True, False, True]
    bits = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 1], [0, 0, 1, 1]], dtype=torch.bool)
    assert dedup_by_hash(bits, 1).tolist() == [False, True, False]
    pairs = candidate_pairs(e, 0.99)
    assert pairs.tolist() == [[0, 1], [2, 3]]
    removed = near_duplicates(web.images)
    s = score_dedup(removed, web)
    assert s["recall"] >= 95 and s["false removals"] <= 1
    # the score counts a planted pair caught whichever copy goes
    dup = (web.source >= 0).nonzero().flatten()
    only_originals = torch.zeros(len(web), dtype=torch.bool)
    only_originals[web.source[dup]] = True
    assert score_dedup(only_originals, web)["recall"] == 100 and score_dedup(only_originals, web)["false removals"] == 0
    assert phash(web.images).shape == (len(web), 63) and colour_histograms(web.images).shape == (len(web), 512)


def test_aligned_distance_sees_through_a_shift():
    x, _, _ = clean_pairs(4, seed=1)
    g = torch.Generator().manual_seed(0)
    shifted = torch.stack([(edit_duplicate(im.float() / 255, "shift", g) * 255).round().to(torch.uint8) for im in x])
    both = torch.cat([x, shifted])
    d = aligned_distance(both, torch.tensor([[0, 4], [1, 5], [0, 1], [2, 3]]))
    assert (d[:2] < 0.02).all() and (d[2:] > 0.05).all()
    with pytest.raises(ValueError):
        edit_duplicate(x[0].float(), "mirror", g)


def test_shards_round_trip(tmp_path, web):
    paths = write_shards(web.images[:250], web.captions[:250], tmp_path, per_shard=100)
    assert [p.name for p in paths] == ["web-000000.tar", "web-000001.tar", "web-000002.tar"]
    back = list(read_shards(paths))
    assert len(back) == 250
    assert all(torch.equal(a, b) and t == c for (a, t), b, c in zip(back, web.images, web.captions))
    write_shards(web.images[:50], web.captions[:50], tmp_path, per_shard=100)      # no stale shards left
    assert len(list(tmp_path.glob("web-*.tar"))) == 1
    with pytest.raises(FileNotFoundError, match="write_shards"):
        list(read_shards([tmp_path / "missing.tar"]))
    with pytest.raises(ValueError, match="uint8"):
        write_shards(web.images[:2].float(), web.captions[:2], tmp_path)


def test_a_corrupt_shard_or_image_names_the_file_and_what_to_do(tmp_path, web):
    import io
    import tarfile
    paths = write_shards(web.images[:20], web.captions[:20], tmp_path, per_shard=10)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 3])                         # truncated mid-file
    with pytest.raises(ShardError, match=f"shard {paths[1]} is corrupt or truncated.*write_shards"):
        list(read_shards(paths))
    bad = tmp_path / "bad-000000.tar"
    with tarfile.open(bad, "w") as tar:
        for name, payload in [("00000001.png", b"not a png"), ("00000001.txt", b"a red circle")]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(ShardError, match=f"sample 00000001 in shard {bad}: its image or caption is corrupt"):
        list(read_shards([bad]))


def test_accumulation_equals_a_big_batch_for_cross_entropy_only():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 5))
    x, y = torch.randn(64, 8), torch.randint(5, (64,))
    ce = lambda m, b: F.cross_entropy(m(b[0]), b[1])
    assert max_difference(accumulated_gradients(mlp, ce, (x, y), 4), full_batch_gradients(mlp, ce, (x, y))) < 1e-6
    with pytest.raises(ValueError, match="micro-batches"):
        accumulated_gradients(mlp, ce, (x, y), 5)

    setup = ClipSetup(norm="group", width=4, text_width=16, text_layers=1, embed_dim=8)
    images, texts, _ = clean_pairs(32, seed=2)
    world = PairWorld.build(setup, images, texts)
    model = build_clip(setup, world)
    ids, lengths = world.tokens(texts)
    batch = (images.float() / 255, ids, lengths)
    loss = lambda m, b: clip_loss(*m(*b), m.logit_scale)
    full = full_batch_gradients(model, loss, batch)
    assert relative_difference(accumulated_gradients(model, loss, batch, 4), full) > 0.05
    assert max_difference(grad_cache_gradients(model, batch, 4), full) < 1e-5


def test_pair_world_trains_clip_and_scores_pairs():
    from webmm_lab.experiments.clip import train_clip
    setup = ClipSetup(steps=3, batch=16, width=4, text_width=16, text_layers=1, embed_dim=8)
    images, texts, _ = clean_pairs(40, seed=3)
    world = PairWorld.build(setup, images, texts)
    images_b, ids, lengths = world.batches()(0)
    assert images_b.shape == (16, 3, 32, 32) and ids.shape[0] == 16
    model = build_clip(setup, world)
    train_clip(model, world, setup, progress=False)
    s = pair_scores(model, world, images, texts, batch=16)
    with torch.no_grad():
        img = model.eval().encode_image(images.float() / 255)
        txt = world.encode_texts(model, texts)
    by_hand = torch.nn.functional.cosine_similarity(img, txt)          # each image with its own caption
    assert s.shape == (40,) and torch.allclose(s, by_hand, atol=1e-5)
    assert contrastive_loss(model, world, images, texts, batch=16) > 0
    with pytest.raises(ValueError, match="at least"):
        contrastive_loss(model, world, images[:5], texts[:5], batch=16)
    with pytest.raises(ValueError, match="captions"):
        PairWorld.build(setup, images, texts[:3])


def test_threshold_search_and_template_search():
    scores = torch.tensor([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    bad = torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.bool)
    t = choose_threshold(scores, bad)
    assert ((scores < t) == bad).all()
    target = "a photo of {}"
    def score(tpl):                       # words matching the target's, counted from its end
        a, b = tpl.split()[::-1], target.split()[::-1]
        return next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b))) - 0.1 * len(a)
    ranked = search_templates(score, ["a", "photo", "of"], beam=3, length=3)
    assert ranked[0][0] == target and ranked == sorted(ranked, key=lambda kv: -kv[1])


def test_distillation_loss_and_flops():
    t = torch.randn(4, 6)
    assert distillation_loss(t, t).abs() < 1e-6 and distillation_loss(torch.zeros(4, 6), t) > 0
    lin = nn.Linear(10, 20, bias=False)
    flops = training_flops(lin, lambda m, b: m(b).sum(), torch.randn(8, 10, requires_grad=True))
    assert flops == 3 * 2 * 8 * 10 * 20                        # forward, and two products backward


def test_the_keyword_filter_reads_unicode_korean_and_spares_spaced_innocent_words():
    from webmm_lab.experiments.web import normalise
    assert normalise("ＧＲＵＥ") == "grue" and normalise("gruë") == "grue" and normalise("gru\u0435") == "grue"
    assert normalise("sn\u200bark") == "snark" and normalise("스나크") == "스나크"
    blocked = ["ｑｕｉｂ here", "a \u0455nark", "스나크를 그린 그림", "파란 사각형과 스나크가", "g r u e a red circle"]
    innocent = ["g r u e l", "q u i b b l e", "G.R.U.E.L.", "스낵과 음료", "스나이퍼", "a i r plane"]
    assert keyword_filter(blocked).all() and not keyword_filter(innocent).any()


def test_the_hand_written_filter_cases_are_a_regression_test_with_the_failures_notebook_08_names():
    from webmm_lab.data.filter_cases import FILTER_CASES
    from webmm_lab.experiments.web import score_keyword_cases
    scores = score_keyword_cases(keyword_filter)
    blocked = sum(b for _, b, _ in FILTER_CASES)
    caught = keyword_filter([c for c, b, _ in FILTER_CASES if b]).sum().item()
    spared_wrongly = keyword_filter([c for c, b, _ in FILTER_CASES if not b]).sum().item()
    assert scores["recall"] == pytest.approx(100 * caught / blocked)
    assert scores["false removals"] == pytest.approx(100 * spared_wrongly / (len(FILTER_CASES) - blocked))
    assert {c for c, *_ in scores["failures"]} == {c for c, b, _ in FILTER_CASES
                                                   if keyword_filter([c]).item() != b}
    # what notebook 08 says keyword filters cannot do: leetspeak, words run together, a hyphen
    assert {"gru3 in a corner", "#snarkattack", "a grue-some sight"} <= {c for c, *_ in scores["failures"]}


def test_forms_come_from_unicodes_confusables_table():
    import numpy as np
    from webmm_lab.data.filter_forms import KINDS, confusables, forms, full_width, near_misses
    table = confusables()
    assert "\u0435" in table["e"] and "\u0415" in table["E"]          # Cyrillic е and Е
    out = forms("grue", np.random.default_rng(0))
    swapped = [f for f, kind in out if kind == "confusable letter"]
    assert len(swapped) == sum(len(table[c]) + len(table[c.upper()]) for c in "grue")
    assert "gru\u0435" in swapped and ("ｇｒｕｅ", "full width") in out and full_width("ab") == "ａｂ"
    assert {kind for _, kind in out} == set(KINDS)
    assert near_misses("grue", ["gruel", "grues", "true", "grue", "glue", "blue"]) == ["gruel", "true", "glue"]


def test_the_filter_reads_unicodes_look_alikes_and_the_baselines_do_less():
    from webmm_lab.data.filter_forms import KeywordTestSet
    from webmm_lab.experiments.web import (block_nothing, exact_word_filter, nfkc_filter, normalise,
                                           score_keyword_test, substring_filter)
    assert normalise("GRU\u0415!") == "grue!" and normalise("\u0261rue") == "grue"   # capital Cyrillic Е, script g
    assert normalise("g r u e l") == "g r u e l"                                     # ASCII letters keep theirs
    caps = ["GRUE here", "ｇｒｕｅ here", "gru\u0435 here", "gruel here"]
    assert exact_word_filter(caps, ("grue",)).tolist() == [True, False, False, False]
    assert substring_filter(caps, ("grue",)).tolist() == [True, False, False, True]
    assert nfkc_filter(caps, ("grue",)).tolist() == [True, True, False, False]
    assert keyword_filter(caps, ("grue",)).tolist() == [True, True, True, False]
    test = KeywordTestSet(("grue",), [(c, "k") for c in caps[:3]], [(caps[3], "plain")])
    scores = score_keyword_test(keyword_filter, test)
    assert (scores["caught"], scores["removed"], scores["J"]) == (100.0, 0.0, 100.0)
    assert score_keyword_test(block_nothing, test)["J"] == 0.0
    assert score_keyword_test(substring_filter, test)["J"] == pytest.approx(100 / 3 - 100)


def test_the_dedup_baselines_a_thumbnail_and_every_pair():
    from webmm_lab.experiments.dedup import all_pairs, blurred_pixels
    assert all_pairs(4).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    thumbs = blurred_pixels(images, size=4)
    assert thumbs.shape == (3, 48) and 0 <= thumbs.min() and thumbs.max() <= 1
    assert torch.allclose(thumbs[0, :16].view(4, 4)[0, 0], images[0, 0, :4, :4].float().mean() / 255)

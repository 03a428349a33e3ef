"""Every measured quantity a notebook reports, against a hand computation on a small case:
models whose logits are set by hand, sequences whose notes are counted by hand, so that a
wrong formula (a wrong base, a wrong average, a wrong weighting) fails."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F


class FixedLM(nn.Module):
    """A 'language model' that predicts the same distribution `p` at every position:
    forward(x, y) -> (logits (B, T, V), mean cross-entropy) as the course's GPT returns them."""

    def __init__(self, p: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(p.log())

    def forward(self, x, y=None):
        logits = self.logits.expand(*x.shape, -1)
        loss = None if y is None else F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1)
        return logits, loss


# ------------------------------------------------------------------ notebook 03

@pytest.fixture(scope="module")
def igpt_data():
    from webmm_lab.experiments.igpt import IgptData, IgptSetup
    return IgptData.build(IgptSetup(data="digits", colours=4))


def test_bits_per_token_is_the_mean_surprise_in_bits_over_every_test_pixel(igpt_data):
    start = igpt_data.start
    seq = torch.tensor([[start, 0, 1, 1], [start, 2, 2, 2], [start, 0, 0, 3]] * 3)[:7]   # (7, 1 + 3)
    p = torch.tensor([0.4, 0.3, 0.2, 0.05, 0.05])               # 4 colours and the start token
    targets = seq[:, 1:].flatten()
    by_hand = -(p[targets].log2()).mean().item()
    got = igpt_data.bits_per_token(FixedLM(p), seq, batch=3)     # chunks of 3, 3 and 1 images
    assert got == pytest.approx(by_hand, rel=1e-6)


def test_unigram_bits_counts_training_colours_with_add_one(igpt_data):
    start = igpt_data.start
    data = replace(igpt_data, train_seq=torch.tensor([[start, 0, 0, 1], [start, 0, 2, 0]]),
                   test_seq=torch.tensor([[start, 0, 1, 3]]))
    # training counts of colours 0..3: 4, 1, 1, 0 -> add-one 5, 2, 2, 1 of 10
    by_hand = -(math.log2(5 / 10) + math.log2(2 / 10) + math.log2(1 / 10)) / 3
    assert data.unigram_bits() == pytest.approx(by_hand, rel=1e-6)


# ------------------------------------------------------------------ notebook 04

class StyleReader(nn.Module):
    """Logits 0 for every token but <start>, which gets `boost[style]` of the row's style token
    (the first input token): every target's loss is then log(V - 1 + e^boost), by hand."""

    def __init__(self, tok, boost):
        super().__init__()
        self.tok, self.boost = tok, torch.tensor(boost)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x, y=None):
        logits = torch.zeros(*x.shape, self.tok.vocab_size)
        logits[..., self.tok.start] = self.boost[x[:, 0] - self.tok.style0][:, None]
        logits = logits + self.dummy
        loss = None if y is None else F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1)
        return logits, loss                                       # as the course's GPT: -1 ignored


def test_wrong_style_loss_averages_every_piece_under_every_other_style():
    from webmm_lab.experiments.musenet import MuseData, MuseSetup
    data = MuseData.build(MuseSetup(max_pieces=6, block=64))
    tok, V = data.tok, data.tok.vocab_size
    boost = [0.0, 1.0, 3.0]                                       # one per style
    model = StyleReader(tok, boost)
    loss_of = [math.log(V - 1 + math.exp(b)) for b in boost]
    counts = {p.name: len(data.sequence(p)) - tok.prefix_len for p in data.val_set.pieces}   # events + <end>
    total = sum(counts[p.name] * loss_of[s] for p in data.val_set.pieces
                for s, style in enumerate(tok.styles) if style != p.style)
    n = sum(counts[p.name] * (len(tok.styles) - 1) for p in data.val_set.pieces)
    assert data.wrong_style_loss(model) == pytest.approx(total / n, rel=1e-5)
    own = sum(counts[p.name] * loss_of[tok.styles.index(p.style)] for p in data.val_set.pieces)
    assert data.val_loss(model) == pytest.approx(own / sum(counts.values()), rel=1e-5)


def test_grammar_counts_notes_with_and_without_their_duration():
    from webmm_lab.data.music_tokens import MusicTokenizer
    from webmm_lab.experiments.musenet import grammar
    tok = MusicTokenizer()
    good = tok.ids(["soprano:C5", "dur:4", "wait:4", "alto:C4", "dur:2", "<end>", "bass:C3"])
    bad = tok.ids(["soprano:C5", "alto:C4", "dur:2", "wait:2", "tenor:C4", "wait:1", "bass:C3"])
    stats = grammar(tok, torch.tensor([good, bad]))
    # good: 2 notes, each with its duration (the bass after <end> is never read); bad: 4 notes,
    # alto with its duration; soprano (followed by a note), tenor (by a wait) and bass (last) hang
    assert stats["notes"] == 6 and stats["with_duration"] == 3 and stats["hanging"] == 3
    assert stats["fraction"] == pytest.approx(3 / 6)


# ------------------------------------------------------------------ notebook 05

def test_evaluate_levels_measures_reconstruction_and_code_use_by_hand():
    from webmm_lab.experiments.jukebox import evaluate_levels
    from webmm_lab.models.vqvae import spectral_convergence

    class Out:
        def __init__(self, recons, codes):
            self.recons, self.codes = recons, codes

    class Fake(nn.Module):
        """Two levels: level 0 reconstructs exactly, level 1 returns half the signal; codes are
        fixed per clip so their use can be counted by hand."""
        hops = (8, 32)

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))
            self.quantizers = [type("Q", (), {"codebook_size": 4})(), type("Q", (), {"codebook_size": 8})()]

        def forward(self, x):
            n = len(x)
            return Out([x.clone(), x / 2], [torch.zeros(n, 2, dtype=torch.long),
                                            torch.arange(2 * n).view(n, 2) % 3])

    x = torch.randn(5, 1, 1024)
    out = evaluate_levels(Fake(), x, batch=2)
    assert out["sc"][0] == pytest.approx(0.0, abs=1e-6)
    assert out["sc"][1] == pytest.approx(spectral_convergence(x, x / 2).mean().item(), rel=1e-5)
    assert out["used"].tolist() == pytest.approx([1 / 4, 3 / 8])       # code 0 of 4; codes 0-2 of 8
    counts = np.array([5, 3, 2])            # level 1, batches of 2, 2, 1 clips: 0120 0120 01
    p = counts / counts.sum()
    assert out["perplexity"][0] == pytest.approx(1.0)
    assert out["perplexity"][1] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-5)


# ------------------------------------------------------------------ notebook 06

def test_dalle_weighted_loss_is_one_eighth_caption_seven_eighths_image():
    from webmm_lab.models.dalle import DALLE
    model = DALLE(text_vocab=20, text_len=5, codebook_size=7, grid=3, n_layer=1, n_head=2, n_embd=16)
    weighted_loss = model.weighted_loss
    assert weighted_loss(torch.tensor(8.0), torch.tensor(0.0)).item() == 1.0
    assert weighted_loss(torch.tensor(0.0), torch.tensor(8.0)).item() == 7.0
    assert weighted_loss(torch.tensor(2.0), torch.tensor(4.0)).item() == pytest.approx(2 / 8 + 28 / 8)
    x = torch.tensor(1.2345678)                          # bit for bit the old text / 8 + 7 * image / 8
    assert weighted_loss(x, x * 3.3).item() == (x / 8 + 7 * (x * 3.3) / 8).item()
    assert DALLE(text_vocab=20, text_len=5, codebook_size=7, grid=3, n_layer=1, n_head=2, n_embd=16,
                 text_weight=0.5).weighted_loss(
        torch.tensor(2.0), torch.tensor(4.0)).item() == 3.0
    with pytest.raises(ValueError, match="text_weight"):
        DALLE(text_vocab=20, text_len=5, codebook_size=7, grid=3, n_layer=1, n_head=2, n_embd=16, text_weight=8)


def test_dalle_losses_of_an_untrained_uniform_model_are_log_vocabularies():
    from webmm_lab.experiments.dalle import DalleSetup, build_dalle, build_world, dalle_losses
    setup = DalleSetup(objects=60, signs=12, panels=12, codebook=16, layers=1, heads=2, width=32)
    world = build_world(setup)
    model = build_dalle(setup, world)
    with torch.no_grad():
        model.gpt.head.weight.zero_()          # tied to the embeddings: every logit is 0, every
                                               # allowed token of a position equally likely
    scenes = world.scenes[:7]
    codes = torch.randint(setup.codebook, (7, 8, 8))
    text, image = dalle_losses(model, world, codes, scenes, batch=3)
    assert image == pytest.approx(math.log(setup.codebook), rel=1e-5)
    assert text == pytest.approx(math.log(model.image_offset), rel=1e-5)   # text ids and paddings


def test_clip_scores_are_each_captions_dot_products_with_its_own_images():
    from webmm_lab.experiments.dalle_judge import clip_scores

    class Fake(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def encode_image(self, x):                      # (B, 3, R, R) -> (B, 2), unit rows
            return F.normalize(torch.stack([x.mean((1, 2, 3)), 1 - x.mean((1, 2, 3))], 1), dim=-1)

    class World:
        def encode_texts(self, clip, texts):
            return F.normalize(torch.tensor([[1.0, 0.0] if t == "bright" else [0.0, 1.0] for t in texts]), dim=-1)

    images = torch.stack([torch.full((3, 4, 4), v) for v in (0.9, 0.1, 0.5, 0.2, 0.8, 0.3)])
    s = clip_scores(Fake(), World(), images, ["bright", "dark"])           # 3 images each
    img = Fake().encode_image(images)
    assert s.shape == (2, 3)
    assert torch.allclose(s[0], img[:3, 0]) and torch.allclose(s[1], img[3:, 1])


# ------------------------------------------------------------------ notebook 08

def test_remove_later_removes_the_later_image_of_each_verified_pair():
    from webmm_lab.experiments.dedup import remove_later
    pairs = torch.tensor([[0, 3], [1, 2], [2, 5], [0, 4]])
    distances = torch.tensor([0.01, 0.2, 0.05, 0.08])
    assert remove_later(pairs, distances, 0.05, 6).tolist() == [False, False, False, True, False, True]
    assert remove_later(pairs, distances, 0.08, 6).nonzero().flatten().tolist() == [3, 4, 5]
    assert not remove_later(pairs[:0], distances[:0], 0.08, 6).any()


def test_the_wrong_label_and_shuffled_code_baselines_change_only_what_they_say():
    from webmm_lab.experiments.jukebox import CodeSet, JukeboxSetup, prior_loss, upsampler_loss

    setup = JukeboxSetup(prior_len=4, up_len=8, codebook=(16, 16, 8))
    K, G = setup.codebook[-1], len(setup.genres)
    top = torch.arange(3 * 8).view(3, 8) % K                       # 3 clips, 8 top codes each
    mid = torch.arange(3 * 32).view(3, 32) % 16
    codes = CodeSet({"val": [None, mid, top]}, {"val": torch.tensor([0, 1, 2])}, {"val": torch.tensor([2, 0, 1])},
                    {"val": ["p", "q", "r"]})
    seen = []

    class Prior(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x, y):
            seen.append(x[:, :2].clone())
            return None, (x[:, 0] == K).float().mean() + self.w   # depends on the genre tokens only

    prior_loss(Prior(), codes, setup, shift_genre=1)
    genre_tok, artist_tok = seen[-1][:, 0] - K, seen[-1][:, 1] - K - G
    assert genre_tok.tolist() == [1, 2, 0] and artist_tok.tolist() == [2, 0, 1]   # artist kept
    prior_loss(Prior(), codes, setup, shift_labels=1)
    assert (seen[-1][:, 0] - K).tolist() == [1, 2, 0] and (seen[-1][:, 1] - K - G).tolist() == [0, 1, 2]

    uppers = []

    class Up(nn.Module):
        ratio = 4

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, lower, upper, labels):
            uppers.append((lower.clone(), upper.clone(), labels.clone()))
            return (lower[:, ::4] == upper).float().mean() + self.w  # 1 where the codes belong together

    # two pieces, each rendered by two artists, clip by clip as the audio set orders them
    top4, mid4 = torch.arange(4 * 8).view(4, 8) % K, torch.arange(4 * 32).view(4, 32) % 16
    codes = CodeSet({"val": [None, mid4, top4]}, {"val": torch.tensor([0, 0, 1, 1])},
                    {"val": torch.tensor([0, 1, 0, 1])}, {"val": ["a", "a", "b", "b"]})
    upsampler_loss(Up(), codes, setup, 1)
    aligned = uppers[-1]
    for upper_from, donors in (("another piece", [2, 3, 0, 1]), ("same piece", [1, 0, 3, 2])):
        upsampler_loss(Up(), codes, setup, 1, upper_from=upper_from)
        swapped = uppers[-1]
        assert torch.equal(swapped[0], aligned[0]) and torch.equal(swapped[2], aligned[2])  # same codes, labels
        assert torch.equal(swapped[1], aligned[1][donors])         # the donor clip's upper codes
    with pytest.raises(ValueError, match="upper_from"):
        upsampler_loss(Up(), codes, setup, 1, upper_from="shuffled")


def test_dalle_losses_with_shuffled_captions_pair_each_image_with_the_next_scenes_caption():
    from webmm_lab.experiments import dalle as D

    seen = []

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, text, codes):
            seen.append(text.clone())
            return text.float().mean() + self.w, codes.float().mean() + self.w

    world = type("W", (), {})()
    captions_seen = []

    def fake_text_batch(model, world, captions):
        captions_seen.append(list(captions))
        return torch.arange(len(captions))[:, None]
    scenes = [f"scene {i}" for i in range(5)]
    import unittest.mock as mock
    with mock.patch.object(D, "text_batch", fake_text_batch), \
            mock.patch.object(D, "caption", lambda s, rng=None: f"caption of {s}"):
        D.dalle_losses(Model(), world, torch.zeros(5, 2, 2, dtype=torch.long), scenes)
        D.dalle_losses(Model(), world, torch.zeros(5, 2, 2, dtype=torch.long), scenes, shuffle=True)
    own, other = captions_seen
    assert own == [f"caption of scene {i}" for i in range(5)]
    assert other == own[1:] + own[:1] and all(a != b for a, b in zip(own, other))


def test_the_bootstrap_interval_of_the_reranking_gain_brackets_it():
    from webmm_lab.experiments.dalle_judge import bootstrap_interval
    g = torch.Generator().manual_seed(0)
    correct = torch.rand(200, 8, generator=g) < 0.4
    scores = torch.rand(200, 8, generator=g) + correct.float()       # CLIP prefers right samples
    top = correct[torch.arange(200), scores.argmax(1)].float().mean()
    gain = 100 * (top - correct.float().mean()).item()
    lo, hi = bootstrap_interval(correct, scores)
    assert lo < gain < hi and hi - lo < 20
    same = torch.ones(200, 8, dtype=torch.bool)                        # every sample right: no gain
    assert bootstrap_interval(same, scores) == (0.0, 0.0)


def test_hog_features_count_gradient_orientations_per_cell():
    from webmm_lab.probe import hog_features
    x = torch.zeros(2, 1, 8, 8)
    x[0, :, :, 4:] = 1.0                      # a vertical edge: horizontal gradients
    x[1, :, 4:, :] = 1.0                      # a horizontal edge: vertical gradients
    f = hog_features(x, cell=4, block=1, orientations=4)          # 2 x 2 cells x 4 bins
    assert f.shape == (2, 16)
    bins = f.view(2, 4, 4).sum(1)                                  # summed over cells: (2, orientations)
    assert bins[0].argmax() != bins[1].argmax()                    # the two edges fall in other bins
    assert torch.equal(hog_features(x * 0), torch.zeros(2, hog_features(x).shape[1]))   # no gradient, no features
    with pytest.raises(ValueError, match="N, C, H, W"):
        hog_features(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="too small"):
        hog_features(torch.zeros(1, 1, 6, 6), cell=4, block=2)


@pytest.mark.parametrize("shape, cell, block, orientations", [((30, 1, 8, 8), 2, 2, 9), ((20, 3, 28, 28), 2, 2, 9),
                                                              ((10, 1, 30, 29), 3, 3, 7), ((10, 3, 32, 32), 8, 2, 12)])
def test_hog_features_are_scikit_images_numbers_for_a_whole_batch(shape, cell, block, orientations):
    import numpy as np
    from skimage.feature import hog
    from webmm_lab.probe import hog_features
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    x[: len(x) // 2] = (x[: len(x) // 2] > 0.5).float()        # flat areas, straight edges: angles on bin edges
    ref = np.stack([hog(im, orientations=orientations, pixels_per_cell=(cell, cell), cells_per_block=(block, block))
                    for im in x.mean(1).numpy()])
    assert torch.equal(hog_features(x, cell, block, orientations, chunk=7), torch.tensor(ref, dtype=torch.float32))


def test_accuracy_coverage_answers_the_most_confident_first():
    from webmm_lab.experiments.clip import accuracy_coverage
    correct = torch.tensor([True, False, True, True, False])
    confidence = torch.tensor([0.9, 0.2, 0.8, 0.1, 0.7])
    coverage, acc = accuracy_coverage(correct, confidence)
    assert coverage.tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    # answered in the order 0.9 (right), 0.8 (right), 0.7 (wrong), 0.2 (wrong), 0.1 (right)
    assert acc.tolist() == pytest.approx([1.0, 1.0, 2 / 3, 2 / 4, 3 / 5])


def test_confidence_is_the_probability_of_the_chosen_class():
    from webmm_lab.experiments.clip import ClipSetup, ClipWorld, build_clip, eval_set, predict, predict_with_confidence
    setup = ClipSetup(pool=200, steps=1, batch=16, vocab=300)
    world = ClipWorld.build(setup)
    model = build_clip(setup, world)
    images, _ = eval_set(setup, "seen", 12)
    pred, conf = predict_with_confidence(model, world, images, classes=[3, 9, 20])
    assert torch.equal(pred, predict(model, world, images, classes=[3, 9, 20]))
    p = conf["probability"]
    assert ((p >= 1 / 3 - 1e-6) & (p <= 1)).all()                 # the largest of 3 probabilities
    assert ((conf["margin"] >= 0) & (conf["margin"] <= p)).all()
    assert ((conf["similarity"] >= -1 - 1e-5) & (conf["similarity"] <= 1 + 1e-5)).all()   # a cosine


def test_score_rolls_mark_every_sounding_note_and_windows_line_up():
    from webmm_lab.data.music import load_music
    from webmm_lab.experiments.sound_score import LOW, cut, frames_per_step, score_rolls
    piece = load_music("all").pieces[0]
    roll = score_rolls([piece.name], seconds=4.0)[0]                   # 24 sixteenths at 90 bpm
    assert roll.shape == (61, 24)
    onset, dur, _, pitch = next(n for n in piece.notes.tolist() if n[0] < 24 and LOW <= n[3] <= 96)
    assert roll[pitch - LOW, onset:min(24, onset + dur)].all()
    sounding = {(p - LOW, t) for o, d, _, p in piece.notes.tolist() if LOW <= p <= 96
                for t in range(o, min(24, o + d)) if t < 24}
    assert int(roll.sum()) == len(sounding)
    with pytest.raises(KeyError, match="no piece"):
        score_rolls(["nowhere/none"], 4.0)

    fps = frames_per_step()                                             # 16 kHz, hop 256, 90 bpm
    assert fps == pytest.approx(16000 / 256 / 6)
    mels = torch.arange(251.0).expand(3, 64, 251).clone() + 1000 * torch.arange(3.0)[:, None, None]
    rolls = torch.arange(24.0).expand(3, 61, 24).clone() + 1000 * torch.arange(3.0)[:, None, None]
    sound, score = cut(mels, rolls, torch.tensor([2, 0]), torch.tensor([6, 12]), steps=12)
    assert score.shape == (2, 61, 12) and sound.shape == (2, 64, round(12 * fps))
    assert torch.equal(score[0, 5], 2000 + torch.arange(6.0, 18)) and torch.equal(score[1, 0], torch.arange(12.0, 24))
    assert sound[0, 3, 0] == 2000 + round(6 * fps) and sound[1, 0, -1] == round(12 * fps) + 124   # 125 frames on
    with pytest.raises(ValueError, match="runs past"):
        cut(mels, rolls, torch.tensor([0]), torch.tensor([13]), steps=12)


def _sound_score_set(pieces: int = 10, renderings: int = 3):
    """Clips whose every mel frame and roll step hold their piece id: (mels, rolls, piece ids)."""
    from webmm_lab.experiments.sound_score import piece_ids
    names = [f"p{i // renderings}" for i in range(pieces * renderings)]
    ids = piece_ids(names)
    return ids.float()[:, None, None].expand(-1, 64, 251).clone(), ids.float()[:, None, None].expand(-1, 61, 24).clone(), ids


def test_retrieval_is_scored_by_hand_among_other_pieces_of_the_genre():
    from webmm_lab.experiments.sound_score import candidates, retrieval, window_starts
    from webmm_lab.models.sound_score import SoundScore
    mels, rolls, pieces = _sound_score_set()
    genres = pieces // 5                                               # two genres of 5 pieces

    class Oracle(SoundScore):                                           # reads the piece off both sides
        def forward(self, mels, rolls):
            return F.one_hot(mels[:, 0, 0].long(), 10).float(), F.one_hot(rolls[:, 0, 0].long(), 10).float()

    class Blind(SoundScore):                                            # every score looks the same
        def forward(self, mels, rolls):
            return torch.ones(len(mels), 4) / 2, torch.ones(len(rolls), 4) / 2
    assert window_starts(24) == (0, 6, 12) and window_starts(12) == (0,)
    r = retrieval(Oracle(), mels, rolls, pieces, genres, n=8)
    assert r == {"top1": 100.0, "genre only": pytest.approx(100 / 8)}   # within a genre the genre tells nothing
    assert retrieval(Blind(), mels, rolls, pieces, genres, n=8)["top1"] == 0.0   # ties are misses
    with pytest.raises(ValueError, match="distractors"):
        retrieval(Oracle(), mels, rolls, pieces, genres, n=14)         # 4 other pieces x 3 windows = 12
    truth, picks = candidates(pieces, genres, (0, 6, 12), n=8, same_genre=True, seed=3)
    q_piece = pieces.repeat_interleave(3)
    assert torch.equal(truth // 3, q_piece) and torch.equal(truth % 3, torch.arange(3).repeat(30))
    assert ((picks // 3) != q_piece[:, None]).all() and (genres[picks // 3 * 3] == genres[q_piece * 3][:, None]).all()
    assert len({tuple(p) for p in picks.tolist()}) > 30                # drawn, not one fixed list
    truth, picks = candidates(pieces, genres, (0, 6, 12), n=8, same_genre=False, seed=3)
    same = (genres[picks // 3 * 3] == genres[q_piece * 3][:, None]).sum(1).float()
    any_genre = retrieval(Oracle(), mels, rolls, pieces, genres, n=8, same_genre=False, seed=3)
    assert any_genre["genre only"] == pytest.approx(100 * (1 / (1 + same)).mean().item())


def test_a_pair_batch_holds_each_piece_once():
    from webmm_lab.experiments.sound_score import pair_batches
    mels, rolls, pieces = _sound_score_set()
    fn = pair_batches(mels, rolls, pieces, batch=8, window=12, seed=0)
    seen = set()
    for step in range(20):
        sound, score = fn(step)
        assert sound.shape == (8, 64, 125) and score.shape == (8, 61, 12)
        ids = score[:, 0, 0].long()
        assert len(set(ids.tolist())) == 8 and torch.equal(ids, sound[:, 0, 0].long())   # pairs match
        seen |= set(ids.tolist())
    assert seen == set(range(10))
    assert pair_batches(mels, rolls, pieces, batch=64)(0)[1].shape[0] == 10            # at most one per piece
    with pytest.raises(ValueError, match="same number of renderings"):
        pair_batches(mels[:-1], rolls[:-1], pieces[:-1])


def test_kneser_ney_sums_to_one_and_matches_counting_by_hand():
    from collections import Counter

    from webmm_lab.metrics import bigram_loss
    from webmm_lab.metrics import kneser_ney_loss
    g = torch.Generator().manual_seed(0)
    V, n, D = 5, 3, 0.75
    train_ids = torch.randint(V, (400,), generator=g) * (torch.rand(400, generator=g) < 0.7)   # skewed counts
    for h in ([0, 1], [4, 4], [3, 0]):                              # seen and unseen contexts
        p = [math.exp(-kneser_ney_loss(train_ids, torch.tensor(h + [c]), V, n, D)) for c in range(V)]
        assert sum(p) == pytest.approx(1, abs=1e-9)

    t = train_ids.tolist()                                           # the textbook recursion, by hand
    cnt = {k: Counter(tuple(t[i:i + k]) for i in range(len(t) - k + 1)) for k in range(1, n + 1)}
    cont = {k: Counter(gram[1:] for gram in cnt[k + 1]) for k in range(1, n)}

    def prob(h, c, k):
        if k == 0:
            return 1 / V
        src = cnt[k] if k == n else cont[k]
        ctx = tuple(h[len(h) - k + 1:]) if k > 1 else ()
        rows = {gram: m for gram, m in src.items() if gram[:-1] == ctx}
        tot = sum(rows.values())
        if tot == 0:
            return prob(h, c, k - 1)
        return max(rows.get(ctx + (c,), 0) - D, 0) / tot + D * len(rows) / tot * prob(h, c, k - 1)

    val = torch.randint(V, (30,), generator=g).tolist()
    by_hand = -np.mean([math.log(prob(val[i - n + 1:i], val[i], n)) for i in range(n - 1, len(val))])
    assert kneser_ney_loss(train_ids, torch.tensor(val), V, n, D) == pytest.approx(by_hand, rel=1e-9)
    # with n = 2 it is a smoothed bigram model: close to add-one counting on plenty of text
    assert abs(kneser_ney_loss(train_ids, torch.tensor(val), V, 2) - bigram_loss(train_ids, torch.tensor(val), V)) < 0.1
    with pytest.raises(ValueError, match="at least 3"):
        kneser_ney_loss(train_ids, torch.tensor([1, 2]), V, 3)


def test_resampling_keeps_what_the_lower_rate_can_hold_and_drops_the_rest():
    from webmm_lab.experiments.jukebox import resampled
    from webmm_lab.models.vqvae import spectral_convergence
    t = torch.arange(16384) / 16000
    low, high = torch.sin(2 * math.pi * 440 * t)[None, None], torch.sin(2 * math.pi * 3000 * t)[None, None]
    assert resampled(low, 8).shape == low.shape
    assert spectral_convergence(low, resampled(low, 8)).item() < 0.05          # 440 Hz < 1 kHz: kept
    assert spectral_convergence(high, resampled(high, 8)).item() > 0.95        # 3 kHz > 1 kHz: gone


def test_the_pitch_template_hears_which_note_sounds():
    from webmm_lab.data.audio import render
    from webmm_lab.experiments.sound_score import LOW, log_mels, pitch_template
    pitches = [43, 50, 57, 60, 64, 67, 71, 76]
    waves = np.stack([render(np.array([[0, 24, 0, p]]), timbres="organ", max_seconds=4.0)[:64000] for p in pitches])
    rolls = torch.zeros(len(pitches), 61, 24)
    rolls[torch.arange(len(pitches)), torch.tensor(pitches) - LOW] = 1.0
    a, b = pitch_template()(log_mels(waves), rolls)
    assert a.shape == b.shape == (len(pitches), 64)
    assert torch.equal((a @ b.T).argmax(1), torch.arange(len(pitches)))      # each sound picks its own note
    assert torch.allclose(a.norm(dim=1), torch.ones(len(pitches)))


def test_mean_loss_weighs_each_batch_by_what_it_scored():
    from webmm_lab.metrics import mean_loss
    batches = [(torch.tensor(1.0), 3), (torch.tensor(4.0), torch.tensor(1)), (torch.tensor(2.0), 0)]
    assert mean_loss(batches) == pytest.approx((3 * 1.0 + 1 * 4.0) / 4)          # not (1 + 4 + 2) / 3
    pairs = mean_loss([(torch.tensor([1.0, 2.0]), 1), (torch.tensor([3.0, 6.0]), 3)])
    assert pairs == pytest.approx((2.5, 5.0))                                      # k losses: a tuple
    with pytest.raises(ValueError, match="no losses"):
        mean_loss([])


def test_a_gpt_validation_loss_is_the_mean_over_every_token_of_its_windows():
    from webmm_lab.device import evaluating
    from webmm_lab.metrics import mean_loss
    from webmm_lab.models.gpt import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8))
    x, y = torch.randint(11, (5, 8)), torch.randint(11, (5, 8))
    y[0, :6] = -1                                                                  # row 0 scores 2 tokens
    with evaluating(model):
        by_token = F.cross_entropy(model(x)[0].flatten(0, 1), y.flatten(), ignore_index=-1).item()
        batched = mean_loss((model(a, b)[1], (b >= 0).sum()) for a, b in zip(x.split(2), y.split(2)))
    assert batched == pytest.approx(by_token, rel=1e-6)

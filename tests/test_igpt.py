import math
import pytest
import torch

from webmm_lab.experiments.igpt import (IgptData, IgptSetup, build_igpt, complete, from_sequence,
                                        layer_features, layer_names, next_pixel_probs, probe_by_layer, shift,
                                        to_sequence)
from webmm_lab.models.gpt import GPT, GPTConfig


@pytest.fixture(scope="module")
def digits():
    setup = IgptSetup(data="digits", resolution=8, colours=4, layers=2, heads=2, width=16, steps=5)
    data = IgptData.build(setup)
    return setup, data, build_igpt(setup, data)


def test_the_canvas_data_place_every_digit_somewhere_on_a_larger_image():
    from webmm_lab.data import load
    from webmm_lab.experiments.igpt import raw_pixel_probe
    setup = IgptSetup(data="canvas", resolution=12, colours=4)
    data = IgptData.build(setup)
    assert data.shape == (12, 12) and data.train_seq.shape[1] == 145
    digits = load("digits", split="test").images
    found = [any(torch.equal(data.test_images[i, :, r:r + 8, c:c + 8], digits[i])
                 for r in range(5) for c in range(5)) for i in range(40)]
    assert all(found)                                           # each digit, whole, at one place
    starts = {tuple((data.test_images[i, 0] > 0).nonzero().min(0).values.tolist()) for i in range(40)}
    assert len(starts) > 10                                     # and not always the same place
    assert raw_pixel_probe(data) < 0.5                          # raw pixels no longer read them well


def test_sequence_round_trip_and_shift():
    ids = torch.randint(7, (5, 3, 4))
    seq = to_sequence(ids, start=7)
    assert seq.shape == (5, 13) and (seq[:, 0] == 7).all()
    assert torch.equal(seq[:, 1:5], ids[:, 0])                 # raster order: the first row first
    assert torch.equal(from_sequence(seq, 3, 4), ids)
    x, y = shift(seq)
    assert torch.equal(x[:, 1:], y[:, :-1]) and x[0, 0] == 7 and torch.equal(y, ids.flatten(1))
    with pytest.raises(ValueError, match="expected sequences"):
        from_sequence(seq, 4, 4)


def test_digits_data_round_trip(digits):
    setup, data, _ = digits
    assert data.vocab_size == 5 and data.start == 4
    assert data.train_seq.shape == (len(data.train_images), 65)
    ids = data.palette.encode(data.test_images)
    assert torch.equal(from_sequence(data.test_seq, 8, 8), ids)
    assert torch.equal(data.palette.encode(data.palette.decode(ids)), ids)
    assert 1.0 < data.unigram_bits() < 2.0                    # 4 colours: at most 2 bits


def test_completions_keep_the_given_rows_and_never_sample_the_start(digits):
    _, data, model = digits
    seq = data.test_seq[:3]
    out = complete(model, seq, rows=3, samples=4, temperature=2.0, batch=5)
    truth = from_sequence(seq, 8, 8)
    assert out.shape == (3, 4, 8, 8)
    assert torch.equal(out[:, :, :3], truth[:, None, :3].expand(-1, 4, -1, -1))
    assert out.max() < data.start                             # colours only
    assert not torch.equal(out[:, 0], out[:, 1])              # samples differ at temperature 2
    assert torch.equal(out, complete(model, seq, rows=3, samples=4, temperature=2.0, batch=5))  # seeded


def test_suppressed_token_is_never_generated():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=3, block_size=40, n_layer=1, n_head=1, n_embd=8))
    with torch.no_grad():
        model.head.weight[2] += 5.0                           # token 2 would win almost always
    out = model.generate(torch.zeros(8, 1, dtype=torch.long), 30, temperature=1.0, suppress=[2])
    assert (out != 2).all()


def test_next_pixel_probs_match_the_model(digits):
    _, data, model = digits
    p = next_pixel_probs(model, data.test_seq[:2], row=5)
    assert p.shape == (2, 8, 4) and torch.allclose(p.sum(-1), torch.ones(2, 8))
    logits = model(shift(data.test_seq[:1])[0])[0][0, 5 * 8 + 3, :4]
    assert torch.allclose(p[0, 3], logits.softmax(-1), atol=1e-5)


def test_layer_features_pool_every_layer(digits):
    _, data, model = digits
    seq = data.test_seq[:6]
    feats = layer_features(model, seq, batch=4)
    assert len(feats) == model.cfg.n_layer + 1 == 3 and all(f.shape == (6, 16) for f in feats)
    emb = model.wte(seq) + model.wpe(torch.arange(65))                          # (6, 65, 16)
    with torch.no_grad():                                                       # the paper's n^0
        assert torch.allclose(feats[0], model.blocks[0].ln_1(emb).mean(1), atol=1e-5)
        assert torch.allclose(feats[-1], model.features(seq).mean(1), atol=1e-5)   # ln_f's output
    assert layer_names(2) == ["emb", "block 1", "block 2 (final LN)"]


def test_probe_by_layer_reads_labels(digits):
    _, data, model = digits
    idx = torch.arange(400)
    train_feats = [f[idx] for f in layer_features(model, data.train_seq)]
    acc = probe_by_layer(train_feats, data.train_labels[idx], layer_features(model, data.test_seq),
                         data.test_labels, 10)
    assert len(acc) == 3 and all(0 <= a <= 1 for a in acc)
    # the probe reads what the features hold: the same probe on features of shuffled labels
    # is near chance, on the true labels well above it
    shuffled = data.train_labels[idx][torch.randperm(400, generator=torch.Generator().manual_seed(0))]
    chance = probe_by_layer(train_feats[:1], shuffled, layer_features(model, data.test_seq)[:1],
                            data.test_labels, 10)[0]
    assert chance < 0.2 and acc[0] > chance + 0.1


def test_unknown_data_is_an_error():
    with pytest.raises(ValueError, match="unknown data"):
        IgptData.build(IgptSetup(data="cifar"))


def test_world_colour_path():
    setup = IgptSetup(data="world", resolution=32, world_images=40, colours=32, layers=1, heads=1,
                      width=8)
    data = IgptData.build(setup)
    assert data.train_images.shape == (40, 3, 32, 32) and data.test_images.shape == (10, 3, 32, 32)
    assert data.palette.colours.shape == (32, 3) and data.vocab_size == 33
    assert set(data.train_labels.tolist()) <= set(range(len(data.classes)))
    model = build_igpt(setup, data)
    out = complete(model, data.test_seq[:2], rows=30, samples=2)
    assert out.shape == (2, 2, 32, 32) and data.palette.decode(out).shape == (2, 2, 3, 32, 32)


def test_the_neighbour_counting_model_reads_local_texture():
    from webmm_lab.metrics import unigram_loss
    from webmm_lab.experiments.igpt import neighbour_loss
    g = torch.Generator().manual_seed(0)
    # vertical stripes of random colours: each pixel is its upper neighbour, so counts given the
    # neighbours predict every pixel below the first row, and colour frequencies alone cannot
    rows = torch.randint(0, 4, (200, 1, 6), generator=g).expand(200, 5, 6).reshape(200, 30)
    train, test = rows[:150], rows[150:]
    assert neighbour_loss(train, test, 4, (5, 6)) < 0.4 * unigram_loss(train, test, 4)
    # colours drawn independently: the neighbours tell nothing, both models near log 4
    noise = torch.randint(0, 4, (400, 30), generator=g)
    assert abs(neighbour_loss(noise[:300], noise[300:], 4, (5, 6)) - math.log(4)) < 0.15
    with pytest.raises(ValueError):
        neighbour_loss(train, test + 4, 4, (5, 6))                 # an id outside the palette


def test_the_neighbour_counts_equal_a_full_table_and_fit_512_colours():
    import torch.nn.functional as F
    from webmm_lab.experiments.igpt import neighbour_loss
    g = torch.Generator().manual_seed(0)
    V, H, W = 5, 4, 6
    train, test = torch.randint(0, V, (300, H * W), generator=g), torch.randint(0, V, (40, H * W), generator=g)
    train[:150] = train[:150].view(150, H, W)[:, :1].expand(150, H, W).reshape(150, -1)   # some repeated contexts

    def contexts(ids):                                   # the left, upper and upper-left colours
        img = F.pad(ids.view(-1, H, W), (1, 0, 1, 0), value=V)
        return ((img[:, 1:, :-1] * (V + 1) + img[:, :-1, 1:]) * (V + 1) + img[:, :-1, :-1]).flatten(), ids.flatten()
    counts = torch.ones((V + 1) ** 3, V)                 # every context's row, add-one
    counts.index_put_(contexts(train), torch.ones(train.numel()), accumulate=True)
    table = -(counts / counts.sum(1, keepdim=True)).log()[contexts(test)].mean().item()
    assert neighbour_loss(train, test, V, (H, W)) == table
    big = torch.randint(0, 512, (64, 32 * 32), generator=g)          # the gpu profile's palette
    assert abs(neighbour_loss(big[:48], big[48:], 512, (32, 32)) - math.log(512)) < 0.05


def test_hand_made_baselines_move_digits_to_the_corner_and_count_local_patterns():
    from webmm_lab.experiments.igpt import aligned_pixels, local_patterns
    img = torch.zeros(2, 1, 5, 5)
    img[0, 0, 2:4, 3] = 1.0                                   # a stroke at rows 2-3, column 3
    img[1, 0, 0:2, 0] = 1.0                                   # the same stroke, in the corner
    a = aligned_pixels(img)
    assert a.shape == (2, 25) and torch.equal(a[0], a[1]) and a[0].sum() == 2
    assert torch.equal(aligned_pixels(torch.zeros(1, 1, 3, 3)), torch.zeros(1, 9))    # blank stays blank
    away = torch.zeros(2, 1, 6, 6)
    away[0, 0, 1:3, 1] = 1.0
    away[1, 0, 2:4, 3] = 1.0                                  # the same stroke elsewhere, off the border
    p = local_patterns(away)
    assert p.shape == (2, 1024) and torch.allclose(p.sum(1), torch.full((2,), 2.0))  # shares per threshold
    assert torch.equal(p[0], p[1])                            # where a stroke is does not matter


def test_the_same_place_spread_compares_digits_of_a_class_at_one_position():
    from webmm_lab.data.images import canvas_positions, load_digits, load_digits_on_canvas, paste
    from webmm_lab.experiments.igpt import same_place_spread
    digits, placed = load_digits("test"), load_digits_on_canvas("test", canvas=12)
    top, left = canvas_positions(len(digits), (8, 8), 12, seed=1)
    assert torch.equal(paste(digits.images, 12, top, left), placed.images)     # the positions the data used
    flat = lambda x: x[:, 0, 6:].flatten(1)
    at_own = same_place_spread(digits.images, digits.labels, digits.labels[:20], top[:20], left[:20], 12, flat)
    same = digits.labels[:, None] == digits.labels[None, :]
    anywhere = torch.cdist(flat(placed.images), flat(placed.images), p=1)[same & ~torch.eye(len(same), dtype=bool)]
    assert 0 < at_own < anywhere.mean() / flat(placed.images).shape[1]        # position no longer counts
    with pytest.raises(ValueError, match="two are needed"):
        same_place_spread(digits.images[:1], digits.labels[:1], digits.labels[:1], top[:1], left[:1], 12, flat)

import math

import pytest
import torch
import torch.nn.functional as F

from webmm_lab.data.augment import AugmentConfig, affine, augment, erase, jitter, sample_params, two_views
from webmm_lab.models.contrastive import info_nce, similarity_logits
from webmm_lab.models.cnn import ConvEncoder, projection_head
from webmm_lab.probe import embed, fit_linear_probe, probe_accuracy


def direct_nt_xent(z1, z2, tau):
    """NT-Xent written straight from the SimCLR paper, one anchor at a time."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        sims = torch.stack([z[i] @ z[k] / tau for k in range(n2) if k != i])
        total = total - (z[i] @ z[j] / tau - torch.logsumexp(sims, 0))
    return total / n2


@pytest.mark.parametrize("n, d, tau", [(2, 3, 0.5), (7, 16, 0.1), (16, 8, 1.0)])
def test_info_nce_equals_the_formula(n, d, tau):
    g = torch.Generator().manual_seed(n)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert torch.allclose(info_nce(z1, z2, tau), direct_nt_xent(z1, z2, tau), atol=1e-5)


def test_info_nce_is_symmetric_in_the_views_and_scale_free():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    assert torch.allclose(info_nce(z1, z2), info_nce(z2, z1), atol=1e-6)
    assert torch.allclose(info_nce(z1, z2), info_nce(3 * z1, 0.5 * z2), atol=1e-6)
    perm = torch.randperm(9, generator=g)
    assert torch.allclose(info_nce(z1, z2), info_nce(z1[perm], z2[perm]), atol=1e-6)


def test_info_nce_starts_near_ln_2n_minus_1_and_rewards_alignment():
    n = 256
    z1, z2 = torch.randn(n, 128), torch.randn(n, 128)
    assert info_nce(z1, z2, 0.5).item() == pytest.approx(math.log(2 * n - 1), rel=0.02)
    assert info_nce(z1, z1 + 0.01 * z2, 0.1) < 0.1  # perfectly matched views: near zero


def test_info_nce_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        info_nce(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="same shape"):
        info_nce(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="temperature must be positive"):
        similarity_logits(torch.randn(2, 3), torch.randn(2, 3), 0.0)


def test_affine_identity_and_shift():
    x = torch.rand(3, 1, 8, 8)
    zero, one = torch.zeros(3), torch.ones(3)
    assert torch.allclose(affine(x, zero, one, zero, zero), x, atol=1e-5)
    shifted = affine(x, zero, one, torch.full((3,), 0.25), zero)   # a quarter of [-1, 1] = 1 pixel
    assert torch.allclose(shifted[..., 1:], x[..., :-1], atol=1e-5)
    assert torch.all(shifted[..., 0] == 0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        affine(x[0], zero, one, zero, zero)


def test_erase_blanks_a_quarter_and_jitter_clamps():
    x = torch.ones(2, 1, 8, 8)
    out = erase(x, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0]))
    assert out[0].sum() == 64 - 16 and out[1].sum() == 64
    y = jitter(x, torch.tensor([0.5, 1.0]), torch.full_like(x, 0.8))
    assert y.max() <= 1 and y.min() >= 0 and torch.allclose(y[0], torch.ones(1, 8, 8))


def test_augment_keeps_shape_and_range_and_repeats_under_a_seed():
    x = torch.rand(32, 1, 8, 8)
    a = augment(x, torch.Generator().manual_seed(5))
    b = augment(x, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and a.dtype == x.dtype and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b)
    v1, v2 = two_views(x, torch.Generator().manual_seed(5))
    assert torch.equal(v1, a) and not torch.equal(v1, v2)
    none = AugmentConfig(rotate_deg=0, scale=(1, 1), shift=0, shear=0, contrast=(1, 1), noise=0, erase=0)
    assert torch.allclose(augment(x, torch.Generator(), none), x, atol=1e-5)
    p = sample_params(1000, torch.Generator().manual_seed(0))
    assert p["angle"].abs().max() <= math.radians(15) and 0.15 < p["erase"].mean() < 0.35


def test_encoder_and_probe():
    enc = ConvEncoder(1, 8)
    x = torch.rand(40, 1, 8, 8)
    assert enc(x).shape == (40, enc.out_dim) and enc(torch.rand(2, 1, 28, 28)).shape == (2, 32)
    assert projection_head(enc.out_dim, 16)(enc(x)).shape == (40, 16)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        enc(torch.rand(8, 8))
    feats = embed(enc, x)
    assert feats.shape == (40, 32) and not feats.requires_grad and enc.training
    # linearly separable features: the probe finds them
    y = torch.arange(40) % 4
    f = F.one_hot(y, 4).float() * 3 + 0.1 * torch.randn(40, 4)
    probe = fit_linear_probe(f, y)
    assert probe_accuracy(probe, f, y) == 1.0
    with pytest.raises(ValueError, match="labels"):
        fit_linear_probe(f, y[:5])


def test_the_cross_validated_probe_chooses_its_weight_decay_on_held_out_folds(monkeypatch):
    import webmm_lab.probe as probe_module
    calls = []

    def fake_fit(features, labels, n_classes=None, weight_decay=1e-2, steps=200):
        calls.append((len(features), weight_decay))
        return weight_decay                     # the "probe" remembers its weight decay

    # held-out accuracy peaks at weight decay 1e-2; the rows scored are never the rows fitted
    monkeypatch.setattr(probe_module, "fit_linear_probe", fake_fit)
    monkeypatch.setattr(probe_module, "probe_accuracy", lambda wd, f, y: 1 - abs(math.log10(wd) + 2))
    f, y = torch.randn(50, 3), torch.arange(50) % 2
    probe, wd = probe_module.fit_linear_probe_cv(f, y, weight_decays=(1e-4, 1e-2, 1.0), folds=5)
    assert wd == 1e-2 and probe == 1e-2
    assert calls[:15] == [(40, w) for w in (1e-4, 1e-2, 1.0) for _ in range(5)]   # 4/5 of the rows
    assert calls[-1] == (50, 1e-2)                                                  # then all of them
    with pytest.raises(ValueError, match="folds >= 2"):
        probe_module.fit_linear_probe_cv(f[:3], y[:3])


def test_nearest_neighbour_takes_the_label_of_the_closest_training_example():
    from webmm_lab.metrics import nearest_neighbour_accuracy
    train_x = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    train_y = torch.tensor([0, 1, 2])
    test_x = torch.tensor([[1.0, 1.0], [9.0, 2.0], [1.0, 8.0], [6.0, 0.0]])
    assert nearest_neighbour_accuracy(train_x, train_y, test_x, torch.tensor([0, 1, 2, 1]), chunk=3) == 1.0
    assert nearest_neighbour_accuracy(train_x, train_y, test_x, torch.tensor([0, 1, 2, 0])) == 0.75
    with pytest.raises(ValueError, match="flatten"):
        nearest_neighbour_accuracy(torch.zeros(3, 1, 2, 2), train_y, torch.zeros(1, 4), train_y[:1])

import pytest
import torch

from webmm_lab.kmeans import Palette, kmeans, kmeans_plus_plus, kmeans_step, nearest


def blobs(seed=0, n=200):
    g = torch.Generator().manual_seed(seed)
    true = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    labels = torch.arange(4).repeat_interleave(n)
    return true, true[labels] + 0.3 * torch.randn(4 * n, 2, generator=g), labels


def test_nearest_matches_cdist():
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(500, 3, generator=g), torch.randn(7, 3, generator=g)
    ids, d2 = nearest(x, c, chunk=64)
    ref = torch.cdist(x, c).pow(2)
    assert torch.equal(ids, ref.argmin(1))
    assert torch.allclose(d2, ref.min(1).values, atol=1e-4)


def test_kmeans_recovers_well_separated_clusters():
    true, x, labels = blobs()
    km = kmeans(x, 4, seed=0)
    order = torch.cdist(true, km.centres).argmin(1)            # the found centre nearest each true one
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    assert (km.centres[order] - true).abs().max() < 0.1
    assert torch.equal(order[labels], km.ids)                  # every point in its own blob's cluster
    assert all(a >= b - 1e-6 for a, b in zip(km.inertia, km.inertia[1:]))   # never gets worse


def test_kmeans_is_deterministic_for_a_seed():
    _, x, _ = blobs(seed=3)
    a, b = kmeans(x, 6, seed=5), kmeans(x, 6, seed=5)
    assert torch.equal(a.centres, b.centres) and torch.equal(a.ids, b.ids)
    assert not torch.equal(kmeans(x, 6, seed=6).centres, a.centres)


def test_empty_cluster_takes_the_farthest_point():
    x = torch.tensor([[0.0], [0.1], [5.0], [5.2], [9.0]])
    centres = torch.tensor([[0.0], [5.0], [100.0], [200.0]])   # the last two win no point
    new, ids, d2 = kmeans_step(x, centres)
    assert ids.tolist() == [0, 0, 1, 1, 1]
    assert torch.allclose(new[:2], torch.tensor([[0.05], [19.2 / 3]]))
    # farthest from the centres they were assigned to: 9.0 (4 from 5.0), then 5.2 (0.2 from 5.0)
    assert new[2].item() == 9.0 and new[3].item() == pytest.approx(5.2)
    assert torch.equal(d2.argsort(descending=True)[:2], torch.tensor([4, 3]))
    assert len(torch.unique(new)) == 4                         # no centre left unused


def test_kmeans_plus_plus_picks_distinct_points_when_it_can():
    _, x, _ = blobs()
    c = kmeans_plus_plus(x, 4, torch.Generator().manual_seed(0))
    assert len(torch.unique(torch.cdist(c, torch.tensor([[0.0, 0], [10, 0], [0, 10], [10, 10]])).argmin(1))) == 4


def test_kmeans_rejects_bad_input():
    with pytest.raises(ValueError, match="points must be"):
        kmeans(torch.rand(2, 3, 4), 2)
    with pytest.raises(ValueError, match="k must be"):
        kmeans(torch.rand(5, 2), 6)


def test_palette_round_trip_and_order():
    g = torch.Generator().manual_seed(0)
    colours = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.1, 0.8], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    ids = torch.randint(4, (6, 5, 5), generator=g)
    images = colours[ids].permute(0, 3, 1, 2) + 0.01 * torch.randn(6, 3, 5, 5, generator=g)
    pal = Palette.fit(images, 4)
    assert (pal.colours.mean(1).diff() >= 0).all()                         # dark to light
    back = pal.decode(pal.encode(images))
    assert back.shape == images.shape and (back - images).abs().max() < 0.05
    assert torch.equal(pal.encode(pal.decode(pal.encode(images))), pal.encode(images))


def test_palette_errors_say_what_to_do():
    pal = Palette(torch.rand(4, 1))
    with pytest.raises(ValueError, match="1-channel"):
        pal.encode(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        pal.decode(torch.tensor([[[0, 4]]]))
    with pytest.raises(ValueError, match="distinct colours"):
        Palette.fit(torch.zeros(2, 1, 4, 4), 3)

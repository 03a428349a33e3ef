"""Notebook 05's pieces: the VQ bottleneck, the three-level VQ-VAE, the spectral loss, the
upsampler, the rendered audio set and the priors' token layout."""
import numpy as np
import pytest
import torch

from webmm_lab.data.audio import load_audio
from webmm_lab.experiments.jukebox import (CodeSet, JukeboxData, JukeboxSetup, build_prior,
                                           build_upsampler, prior_loss, prior_tokens, sample_top,
                                           tokens_per_minute)
from webmm_lab.models.gpt import GPTConfig
from webmm_lab.models.vq import VectorQuantizer, ema_update, restart_dead_codes, straight_through, tile
from webmm_lab.models.vqvae import VQVAE, Upsampler, spectral_convergence, spectral_loss, strides_for


def test_ema_update_matches_a_hand_computation():
    count = torch.tensor([2.0, 1.0, 0.5])
    total = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    flat = torch.tensor([[1.0, 1.0], [3.0, 1.0], [0.0, 4.0]])
    codes = torch.tensor([0, 0, 1])                  # code 0 wins two vectors, code 1 one, code 2 none
    c, t = ema_update(count, total, flat, codes, decay=0.9)
    assert torch.allclose(c, torch.tensor([0.9 * 2 + 0.1 * 2, 0.9 * 1 + 0.1 * 1, 0.9 * 0.5]))
    assert torch.allclose(t, torch.tensor([[0.9 * 2 + 0.1 * 4, 0.1 * 2], [0.0, 0.9 + 0.4], [0.9, 0.9]]))


def test_the_quantizer_applies_the_ema_step_and_keeps_dead_codes_in_place_without_restarts():
    vq = VectorQuantizer(3, 2, decay=0.9, restart_threshold=0.0)
    vq.initialised.fill_(True)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 5.0]]))
    vq.total.copy_(vq.codebook)
    z = torch.tensor([[1.0, 1.0], [2.0, 0.0], [9.0, 11.0]]).T[None]       # (1, 2, 3): three vectors
    out = vq(z)
    assert out.codes.tolist() == [[0, 0, 1]]
    # code 0: count 0.9 + 0.2 = 1.1, total 0.1 * (3, 1) -> (0.3/1.1, 0.1/1.1); code 1: 0.9*10 + 0.1*(9, 11)
    assert torch.allclose(vq.codebook[0], torch.tensor([0.3, 0.1]) / 1.1)
    assert torch.allclose(vq.codebook[1], torch.tensor([9.9, 10.1]) / 1.0)
    assert torch.allclose(vq.codebook[2], torch.tensor([-10.0, 5.0]))     # dead, but where it was
    assert out.used.item() == pytest.approx(2 / 3)


def test_restarts_move_dead_codes_onto_batch_vectors():
    torch.manual_seed(0)
    codebook = torch.tensor([[0.0, 0.0], [100.0, 100.0]])
    count, total = torch.tensor([5.0, 0.2]), codebook * torch.tensor([[5.0], [0.2]])
    flat = torch.randn(50, 2)
    new, c, t, n = restart_dead_codes(codebook, count, total, flat, threshold=1.0)
    assert n == 1 and torch.equal(new[0], codebook[0])
    assert (new[1] == flat).all(1).any()                                  # one of the batch's vectors
    assert c[1] == 1.0 and torch.allclose(t[1], new[1])
    vq = VectorQuantizer(16, 2)
    vq.train()
    far = torch.randn(2, 2, 64) * 0.1 + 50                               # the first batch: far away
    vq(far)
    near = torch.randn(2, 2, 64)                                          # data moves: codes would die
    for _ in range(300):
        vq(near)
    assert vq.restarts.item() > 0
    assert vq(near).used.item() > 0.5                                     # revived, in use again


@pytest.mark.parametrize("shape", [(2, 8, 16), (2, 8, 4, 5)])
def test_quantizer_works_on_1d_and_2d_grids_and_passes_gradients_straight_through(shape):
    torch.manual_seed(0)
    vq = VectorQuantizer(32, 8)
    z = torch.randn(*shape, requires_grad=True)
    out = vq(z)
    assert out.quantized.shape == z.shape and out.codes.shape == (shape[0], *shape[2:])
    assert torch.allclose(out.quantized, vq.decode(out.codes))           # the codes' vectors going forward
    (out.quantized * torch.arange(z.numel()).view(shape)).sum().backward()
    assert torch.equal(z.grad, torch.arange(z.numel()).view(shape).float())   # gradient unchanged
    n = torch.bincount(out.codes.flatten(), minlength=32).float()
    p = n[n > 0] / n.sum()
    assert out.perplexity.item() == pytest.approx((-(p * p.log()).sum()).exp().item(), rel=1e-4)
    q = torch.randn(3, 4, requires_grad=True)
    x = torch.randn(3, 4, requires_grad=True)
    straight_through(x, q).sum().backward()
    assert q.grad is None or not q.grad.any()
    with pytest.raises(ValueError, match="channels-first"):
        vq(torch.randn(2, 7, 16))
    with pytest.raises(ValueError, match=r"codes must be in \[0, 32\)"):
        vq.decode(torch.tensor([[40]]))


def test_a_first_batch_with_fewer_vectors_than_codes_is_tiled_with_noise():
    torch.manual_seed(0)
    z = torch.randn(1, 4, 10)                                      # 10 vectors, 64 codes
    vq = VectorQuantizer(64, 4)
    vq.init_from(z[0].T)
    assert len(torch.unique(vq.codebook, dim=0)) == 64             # 64 distinct codes
    near = torch.cdist(vq.codebook, z[0].T).min(1).values          # each code near one of the vectors
    assert near.max() < 0.05
    vq = VectorQuantizer(64, 4)
    out = vq(z)                                                    # the first training batch starts it
    assert bool(vq.initialised) and torch.isfinite(vq.codebook).all()
    assert (out.quantized - z).abs().max() < 0.05
    flat = z[0].T
    tiled = tile(flat, 64)
    assert len(tiled) >= 64 and torch.equal(tiled[:10], flat)      # the originals first, as they are
    with pytest.raises(ValueError, match="first batch is empty"):
        tile(flat[:0], 64)


@pytest.mark.parametrize("T", [128, 384, 4096])
def test_code_lengths_are_exactly_t_over_each_hop(T):
    torch.manual_seed(0)
    model = VQVAE(width=8, dim=8, codebook_size=4)
    out = model(torch.randn(4, 1, T))
    assert [c.shape[1] for c in out.codes] == [T // 8, T // 32, T // 128]
    assert all(r.shape == (4, 1, T) for r in out.recons)
    assert [c.shape[1] for c in model.encode(torch.randn(1, 1, T))] == [T // 8, T // 32, T // 128]
    assert model.decode(out.codes[1], 1).shape == (4, 1, T)


@pytest.mark.parametrize("T", [100, 129, 255, 64])
def test_lengths_that_are_not_a_multiple_of_the_largest_hop_are_a_clear_error(T):
    with pytest.raises(ValueError, match="multiple of the largest hop 128"):
        VQVAE(width=8, dim=8, codebook_size=4)(torch.randn(1, 1, T))


def test_strides_multiply_to_the_hop():
    assert strides_for(8) == [4, 2] and strides_for(32) == [4, 4, 2] and strides_for(128) == [4, 4, 4, 2]
    assert strides_for(16) == [4, 4]
    with pytest.raises(ValueError):
        strides_for(12)


def test_spectral_loss_is_zero_for_identical_signals_and_positive_otherwise():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 4096)
    assert spectral_loss(x, x).item() == 0
    assert spectral_loss(x, x + 0.01 * torch.randn_like(x)).item() > 0
    assert spectral_loss(x, torch.zeros_like(x)).item() > spectral_loss(x, 0.5 * x).item()
    assert torch.allclose(spectral_convergence(x, torch.zeros_like(x)), torch.ones(2))
    assert torch.allclose(spectral_convergence(x, x), torch.zeros(2))


def test_a_phase_shifted_tone_costs_little_spectral_loss_but_much_l2():
    t = torch.arange(4096) / 16000
    a, b = torch.sin(2 * torch.pi * 440 * t), torch.cos(2 * torch.pi * 440 * t)
    assert spectral_loss(a, b).item() < 0.1 * spectral_loss(a, torch.zeros_like(a)).item()
    assert torch.mean((a - b) ** 2).item() > 0.9


def test_generate_with_extra_matches_the_uncached_model():
    torch.manual_seed(0)
    up = Upsampler(GPTConfig(17, 33, n_layer=1, n_head=2, n_embd=16), upper_vocab=16, ratio=4, n_labels=5)
    upper, labels = torch.randint(16, (3, 8)), torch.tensor([[0, 3], [1, 4], [2, 3]])
    out = up.generate(upper, labels, temperature=0)                       # greedy, KV-cached
    assert out.shape == (3, 32) and out.max() < 16
    extra = up.condition(upper, labels)
    start = torch.full((3, 1), 16)
    slow = up.gpt.generate(start, 32, temperature=0, use_cache=False, extra=extra, suppress=[16])
    assert torch.equal(out, slow[:, 1:])
    assert up(out, upper, labels).item() > 0
    with pytest.raises(ValueError, match="extra must be"):
        up.gpt.generate(start, 32, extra=extra[:, :10])
    with pytest.raises(ValueError, match="4x as long"):
        up(out[:, :30], upper, labels)


def test_a_long_sequence_is_upsampled_in_overlapping_windows():
    torch.manual_seed(0)
    up = Upsampler(GPTConfig(17, 17, n_layer=1, n_head=2, n_embd=16), upper_vocab=16, ratio=4, n_labels=5)
    upper, labels = torch.randint(16, (2, 10)), torch.tensor([[0, 3], [1, 4]])
    out = up.generate(upper, labels, temperature=0)                       # 40 codes, windows of 16
    assert out.shape == (2, 40) and out.max() < 16
    assert torch.equal(out[:, :16], up.generate(upper[:, :4], labels, temperature=0))
    # the second window starts from the last 8 codes of the first, over top codes 2..5
    prompt = torch.cat([torch.full((2, 1), 16), out[:, 8:16]], 1)
    second = up.gpt.generate(prompt, 8, temperature=0, extra=up.condition(upper[:, 2:6], labels), suppress=[16])
    assert torch.equal(out[:, 16:24], second[:, 9:])


def test_prior_tokens_put_labels_first_and_predict_every_code():
    codes = torch.tensor([[5, 6, 7]])
    x, y = prior_tokens(codes, torch.tensor([1]), torch.tensor([2]), K=10, n_genres=3)
    assert x.tolist() == [[11, 15, 5, 6]] and y.tolist() == [[-1, 5, 6, 7]]


def test_rendered_audio_is_cached_and_a_corrupt_cache_is_rendered_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WEBMM_DATA", str(tmp_path))
    a = load_audio("val", per_style=1, seconds=0.5, progress=False)
    assert a.waves.shape == (9, 8000) and a.waves.dtype == np.float32
    assert sorted(set(zip(a.style.tolist(), a.timbre.tolist()))) == [(g, t) for g in range(3) for t in range(3)]
    cache = next((tmp_path / "audio").glob("*.npz"))
    b = load_audio("val", per_style=1, seconds=0.5, progress=False)
    assert np.abs(a.waves - b.waves).max() < 1e-4
    cache.write_bytes(b"not a zip file")
    c = load_audio("val", per_style=1, seconds=0.5, progress=False)
    assert "unusable" in capsys.readouterr().out and np.abs(a.waves - c.waves).max() < 1e-4
    np.savez(cache, pcm=np.zeros((9, 4000), np.int16), style=a.style, timbre=a.timbre,
             names=np.array(a.names))                            # readable, but half the length
    d = load_audio("val", per_style=1, seconds=0.5, progress=False)
    assert "expected int16 (clips, 8000)" in capsys.readouterr().out and np.abs(a.waves - d.waves).max() < 1e-4
    np.savez(cache, pcm=(a.waves * 32767).astype(np.float32), style=a.style, timbre=a.timbre,
             names=np.array(a.names))                            # the wrong dtype
    load_audio("val", per_style=1, seconds=0.5, progress=False)
    assert "unusable" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "audio").iterdir()] == [cache.name]    # no temporary files
    with pytest.raises(ValueError, match="unknown timbre"):
        load_audio("val", timbres=("kazoo",))


def test_the_audio_cache_follows_the_renderers_version(tmp_path, monkeypatch):
    from webmm_lab.data import audio
    monkeypatch.setenv("WEBMM_DATA", str(tmp_path))
    load_audio("val", per_style=1, seconds=0.25, progress=False)
    monkeypatch.setattr(audio, "RENDERER_VERSION", audio.RENDERER_VERSION + 1)
    load_audio("val", per_style=1, seconds=0.25, progress=False)
    assert len(list((tmp_path / "audio").glob("*.npz"))) == 2           # a new key, a new render


def test_the_whole_pipeline_runs_on_tiny_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBMM_DATA", str(tmp_path))
    setup = JukeboxSetup(per_genre=1, eval_per_genre=1, seconds=1.024, width=8, dim=8, codebook=(16, 16, 8),
                         prior_len=8, up_len=16, prior_layers=1, prior_heads=2, prior_width=16)
    data = JukeboxData.build(setup, progress=False)
    from webmm_lab.experiments.jukebox import build_vqvae
    vqvae = build_vqvae(setup)
    vqvae(data.crops(8, 1024, 0)(0))                                       # initialise the codebooks
    codes = CodeSet.encode(vqvae, data)
    assert [c.shape[1] for c in codes.codes["train"]] == [2048, 512, 128]
    prior = build_prior(setup)
    assert np.isfinite(prior_loss(prior, codes, setup)) and prior_loss(prior, codes, setup, shift_labels=1) > 0
    top = sample_top(prior, setup, torch.tensor([0, 2]), torch.tensor([1, 0]))
    assert top.shape == (2, 8) and top.max() < 8
    up = build_upsampler(setup)
    mid = up.generate(top, torch.tensor([[0, 4], [2, 3]]))                # 32 codes in windows of 16
    assert mid.shape == (2, 32) and mid.max() < 16
    assert vqvae.decode(mid, 1).shape == (2, 1, 32 * 32)
    assert tokens_per_minute((8, 32, 128), 16000) == [120000, 30000, 7500]


def test_vqvae_parts_are_detached_tensors_not_host_floats():
    model = VQVAE(hops=(8, 32), width=8, dim=8, codebook_size=16)
    out = model(torch.randn(2, 1, 256))
    assert set(out.parts) == {f"{k}_{i}" for k in ("l2", "spec", "used") for i in range(2)}
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in out.parts.values())


def _vq_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Train a VectorQuantizer for a few steps on this process's rows of each batch."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save(_train_vq(rank, world), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _train_vq(rank: int = 0, world: int = 1, steps: int = 6) -> dict:
    torch.manual_seed(0)                                                 # the same start everywhere
    vq = VectorQuantizer(16, 4, restart_threshold=0.995)              # a code that wins nothing once restarts
    data = torch.Generator().manual_seed(1)
    for _ in range(steps):
        z = torch.randn(8, 4, 6, generator=data) * torch.rand(1, 4, 1, generator=data) * 3   # (8, D, T)
        n = len(z) // world
        vq(z[rank * n:(rank + 1) * n])
    return {"codebook": vq.codebook, "count": vq.count, "restarts": vq.restarts}


@pytest.mark.slow
def test_two_gloo_processes_keep_one_codebook_equal_to_one_process_on_the_whole_batch(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_vq_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    one = _train_vq()
    assert one["restarts"] > 0                                           # the test exercises restarts
    assert torch.equal(a["codebook"], b["codebook"]) and torch.equal(a["count"], b["count"])
    assert torch.allclose(a["codebook"], one["codebook"], atol=1e-5)
    assert torch.allclose(a["count"], one["count"], atol=1e-5) and a["restarts"] == one["restarts"]

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
    up = Upsampler(GPTConfig(vocab_size=17, block_size=33, n_layer=1, n_head=2, n_embd=16), upper_vocab=16, ratio=4,
                   n_labels=5)
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
    up = Upsampler(GPTConfig(vocab_size=17, block_size=17, n_layer=1, n_head=2, n_embd=16), upper_vocab=16, ratio=4,
                   n_labels=5)
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


def _update_before(state: dict, flat: torch.Tensor, codes: torch.Tensor, decay: float,
                   threshold: float) -> dict:
    """`VectorQuantizer._update` on one process as it was before the statistics were all-reduced
    (issue 39), frozen: the EMA step, total / count, then the restarts, as plain tensor code."""
    K, N = len(state["count"]), len(flat)
    n = torch.zeros(K).index_add_(0, codes, torch.ones(N))                             # (K,)
    s = torch.zeros_like(state["total"]).index_add_(0, codes, flat)                   # (K, D)
    count = decay * state["count"] + (1 - decay) * n
    total = decay * state["total"] + (1 - decay) * s
    codebook = total / count.clamp_min(1e-5)[:, None]
    dead = count < threshold                                                          # (K,)
    rank = (dead.cumsum(0) - 1).clamp_min(0)
    pick = torch.randperm(N)[rank.clamp_max(N - 1)]                                   # (K,)
    if K > N:
        pick = torch.where(rank < N, pick, torch.randint(N, (K,)))
    fresh = flat[pick]                                                                # (K, D)
    return {"codebook": torch.where(dead[:, None], fresh, codebook),
            "count": torch.where(dead, torch.full_like(count, threshold), count),
            "total": torch.where(dead[:, None], threshold * fresh, total),
            "restarts": state["restarts"] + dead.sum()}


def test_one_process_keeps_the_codebook_bit_for_bit_as_before_with_restarts():
    from webmm_lab.kmeans import nearest
    torch.manual_seed(0)
    data = torch.Generator().manual_seed(1)
    centres = torch.randn(3, 4, generator=data) * 4                      # 3 clusters for 24 codes: codes die

    def batch():                                                          # (2, D, 32)
        flat = centres[torch.randint(3, (64,), generator=data)] + 0.3 * torch.randn(64, 4, generator=data)
        return flat.view(2, 32, 4).movedim(-1, 1)
    vq = VectorQuantizer(24, 4, decay=0.9)
    vq.init_from(batch().movedim(1, -1).reshape(-1, 4))
    state = {k: getattr(vq, k).clone() for k in ("codebook", "count", "total", "restarts")}
    restarted = []
    for step in range(12):
        z = batch()
        rng = torch.get_rng_state()
        out = vq(z)
        after = torch.get_rng_state()
        torch.set_rng_state(rng)                                          # the same draws for the reference
        flat = z.movedim(1, -1).reshape(-1, 4)                            # (64, D)
        codes = nearest(flat, state["codebook"])[0]
        assert torch.equal(out.codes.flatten(), codes), step
        state = _update_before(state, flat, codes, 0.9, 1.0)
        assert torch.equal(torch.get_rng_state(), after), step
        for k, v in state.items():
            assert torch.equal(getattr(vq, k), v), (step, k)
        restarted.append(state["restarts"].item())
    assert len(set(restarted)) >= 4 and restarted[-1] > 3                 # restarts on several steps


def test_the_hooks_for_processes_sum_the_statistics_and_share_the_restart_vectors():
    torch.manual_seed(0)
    count, total = torch.tensor([0.2, 2.0, 0.5, 3.0, 1.5]), torch.randn(5, 2)
    flat, codes = torch.randn(12, 2), torch.randint(5, (12,))
    doubled = ema_update(count, total, flat, codes, 0.9, reduce=lambda t: t.mul_(2))   # two processes alike
    whole = ema_update(count, total, flat.repeat(2, 1), codes.repeat(2), 0.9)          # one with both batches
    assert all(torch.allclose(a, b) for a, b in zip(doubled, whole))
    plain = ema_update(count, total, flat, codes, 0.9)
    kept = ema_update(count, total, flat, codes, 0.9, reduce=lambda t: None)            # one process
    assert all(torch.equal(a, b) for a, b in zip(kept, plain))
    codebook, dead = total / count[:, None], count < 1.0
    rank_0 = torch.full((5, 2), 7.0)                                      # the vectors rank 0 drew
    new, c, t, n = restart_dead_codes(codebook, count, total, flat, 1.0,
                                      share=lambda fresh: fresh.copy_(rank_0))
    assert n.item() == 2 and (new[dead] == 7).all() and torch.equal(new[~dead], codebook[~dead])
    assert (c[dead] == 1).all() and (t[dead] == 7).all() and torch.equal(t[~dead], total[~dead])


def _vq_batches(steps: int = 6) -> list[torch.Tensor]:
    data = torch.Generator().manual_seed(1)
    return [torch.randn(8, 4, 6, generator=data) * torch.rand(1, 4, 1, generator=data) * 3   # (8, D, T)
            for _ in range(steps)]


def _train_vq(rank: int = 0, world: int = 1, threshold: float = 0.995) -> list[dict]:
    """Train a VectorQuantizer on this process's rows of each batch: its buffers after every step."""
    torch.manual_seed(0)                                                 # the same start everywhere
    vq = VectorQuantizer(16, 4, restart_threshold=threshold)          # 0.995: a code that wins nothing restarts
    steps = []
    for z in _vq_batches():
        n = len(z) // world
        vq(z[rank * n:(rank + 1) * n])
        steps.append({k: getattr(vq, k).clone() for k in ("codebook", "count", "total", "restarts")})
    return steps


def _vq_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Train with restarts off and on, on this process's rows of each batch."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        runs = {"off": _train_vq(rank, world, threshold=0.0), "on": _train_vq(rank, world)}
        torch.save(runs, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _close(a: dict, b: dict) -> bool:
    return all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-6, atol=1e-6) for k in a)


@pytest.mark.slow
def test_two_gloo_processes_keep_one_codebook_as_one_process_on_the_whole_batch_until_a_restart(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_vq_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for run in ("off", "on"):                                           # the same buffers on both, every step
        assert all(torch.equal(x[k], y[k]) for x, y in zip(a[run], b[run]) for k in x), run
    assert all(_close(x, y) for x, y in zip(a["off"], _train_vq(threshold=0.0)))   # summed statistics
    on = a["on"]
    assert on[-1]["restarts"] > 0                                        # the test exercises restarts
    before = [x for x in on if x["restarts"] == 0]
    assert before and all(_close(x, y) for x, y in zip(before, _train_vq()))
    batches, last = _vq_batches(), torch.tensor(0)
    for z, x in zip(batches, on):                                        # restarts land on rank 0's rows
        moved = x["count"] == torch.tensor(0.995)                        # restarted in this step
        assert moved.sum() == x["restarts"] - last
        rows = z[:4].movedim(1, -1).reshape(-1, 4)                       # (4 * T, D): rank 0's vectors
        assert (x["codebook"][moved][:, None] == rows[None]).all(-1).any(-1).all()
        last = x["restarts"]

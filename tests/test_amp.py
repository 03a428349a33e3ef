"""Training under bf16 autocast on the CPU (WEBMM_AMP=bf16), for every model family: the
dtype mismatches a GPU's mixed precision would hit show up here, without a GPU."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from webmm_lab import amp_dtype, autocast, grad_scaler, train
from webmm_lab.batches import random_batches
from webmm_lab.data.augment import view_pair_batches
from webmm_lab.experiments.clip import ClipSetup, ClipWorld, build_clip, eval_set, predict, train_clip
from webmm_lab.models.cnn import ConvEncoder
from webmm_lab.models.contrastive import info_nce
from webmm_lab.models.gpt import GPT, GPTConfig
from webmm_lab.models.simclr import SimCLR
from webmm_lab.models.vit import ViT
from webmm_lab.probe import embed, fit_linear_probe


@pytest.fixture(autouse=True)
def bf16(monkeypatch):
    monkeypatch.setenv("WEBMM_AMP", "bf16")


def fit(model, loss_fn, batch_fn, steps=3, **kw):
    """Train a few steps under bf16 autocast; the weights stay fp32, change, and stay finite."""
    before = [p.detach().clone() for p in model.parameters()]
    history = train(model, loss_fn, batch_fn, steps=steps, lr=1e-3, progress=False, **kw)
    assert all(torch.isfinite(torch.tensor(history.loss)))
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    return history


def test_the_override_chooses_the_precision(monkeypatch):
    assert amp_dtype("cpu") == torch.bfloat16 and not grad_scaler("cpu").is_enabled()
    with autocast("cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    monkeypatch.setenv("WEBMM_AMP", "off")
    assert amp_dtype("cpu") is None
    monkeypatch.setenv("WEBMM_AMP", "fp8")
    with pytest.raises(ValueError, match="bf16, fp16, off"):
        amp_dtype("cpu")


def test_mlp_and_conv_classifiers():
    x, y = torch.rand(64, 1, 8, 8), torch.randint(10, (64,))
    ce = lambda m, b: F.cross_entropy(m(b[0]), b[1])
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    fit(mlp, ce, random_batches(x, y, batch_size=16), eval_fn=lambda m: {"acc": (m(x).argmax(1) == y).float().mean()})
    for norm in ("batch", "group"):
        enc = ConvEncoder(1, 8, norm)
        fit(nn.Sequential(enc, nn.Linear(enc.out_dim, 10)), ce, random_batches(x, y, batch_size=16))


def test_simclr_and_a_probe_on_its_features():
    x, y = torch.rand(64, 1, 8, 8), torch.randint(10, (64,))
    model = SimCLR(ConvEncoder(1, 8), proj_dim=16)
    fit(model, lambda m, b: info_nce(*m(*b), 0.5), view_pair_batches(x, batch_size=16))
    with autocast("cpu"):
        feats = embed(model.encoder, x)
    assert feats.dtype == torch.float32
    fit_linear_probe(feats, y, 10, steps=5)


def test_gpt_trains_and_samples_with_the_kv_cache():
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16))
    ids = torch.randint(20, (32, 17))
    fit(model, lambda m, b: m(b[0][:, :-1], b[0][:, 1:])[1], random_batches(ids, batch_size=8),
        eval_fn=lambda m: {"val": m(ids[:4, :-1], ids[:4, 1:])[1]})
    with torch.no_grad(), autocast("cpu"):
        a = model.generate(ids[:2, :4], 8, temperature=0)
        b = model.generate(ids[:2, :4], 8, temperature=0, use_cache=False)
    assert a.shape == (2, 12) and (a[:, :4] == ids[:2, :4]).all()
    # each token the cached bf16 model chose is the uncached model's best next token on the same
    # prefix, up to bf16 rounding of a near-tie (compared on the generated tokens only)
    with torch.no_grad(), autocast("cpu"):
        logits = model(a[:, :-1])[0].float()                                  # (2, 11, vocab)
    chosen = logits[:, 3:].gather(-1, a[:, 4:, None])[..., 0]                 # (2, 8)
    assert (chosen >= logits[:, 3:].max(-1).values - 0.05).all()
    assert (a[:, 4:] == b[:, 4:]).float().mean() > 0.5


def test_vit_and_clip():
    vit = ViT(image_size=8, patch=4, width=16, layers=1, heads=2)
    x, y = torch.rand(32, 3, 8, 8), torch.randint(5, (32,))
    head = nn.Sequential(vit, nn.Linear(vit.out_dim, 5))
    fit(head, lambda m, b: F.cross_entropy(m(b[0]), b[1]), random_batches(x, y, batch_size=8))
    setup = ClipSetup(pool=200, steps=3, batch=16, vocab=300)
    world = ClipWorld.build(setup)
    for norm in ("batch", "group"):
        s = replace(setup, norm=norm)
        model = build_clip(s, world)
        history = train_clip(model, world, s, eval_fn=lambda m: {"n": 1.0}, progress=False)
        assert all(torch.isfinite(torch.tensor(history.loss)))
        images, _ = eval_set(s, "seen", 32)
        with torch.no_grad():
            full = model.eval().encode_image(images).float()
            with autocast("cpu"):
                half = model.encode_image(images).float()
                low = predict(model, world, images, classes=[5, 17, 30, 41])
        assert F.cosine_similarity(full, half).min() > 0.98                  # bf16 features ~ fp32's
        assert set(low.tolist()) <= {5, 17, 30, 41}
        assert (low == predict(model, world, images, classes=[5, 17, 30, 41])).float().mean() >= 0.9

"""No training step makes the host wait for the device: one step of every model family, trained
by the course's loop on the CPU, while every call that would copy a tensor's value to the host on
a GPU is counted inside the forward pass (the loss function) and the backward pass. On the CPU
these calls are free, so they are counted, not timed; the range checks of ids and lengths, which
run on the CPU only (`webmm_lab.ids.validating`), are switched off as on a GPU. The loop's own
logging (`PendingLosses`) copies the losses every few steps, outside forward and backward.
What this cannot see on a CPU: a tensor made on the host inside a step and copied to the device
(a blocking copy, which waits too) and syncs inside torch's own kernels (`bincount` on CUDA);
the models make their tensors on the device and count codes by scatter-add for that reason."""
import contextlib
import importlib
from types import SimpleNamespace

import pytest
import torch

import webmm_lab.ids
from webmm_lab.batches import window_batches
from webmm_lab.data.augment import view_pair_batches
from webmm_lab.experiments.clip import ClipSetup, ClipWorld, build_clip, train_clip
from webmm_lab.experiments.dalle import (DalleSetup, TokenizerSetup, build_dalle, build_tokenizer, build_world,
                                         encode_images, train_dalle, train_tokenizer)
from webmm_lab.experiments.jukebox import JukeboxSetup, build_vqvae, train_vqvae
from webmm_lab.metrics import lm_loss
from webmm_lab.models.cnn import ConvEncoder
from webmm_lab.models.contrastive import info_nce
from webmm_lab.models.gpt import GPT, GPTConfig
from webmm_lab.models.simclr import SimCLR
from webmm_lab.train import train

loop = importlib.import_module("webmm_lab.train")      # the module (the package exports its function)
HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy")


class HostReads:
    """The host reads of each training step: reads.steps[i] lists step i's, by name."""

    def __init__(self):
        self.steps: list[list[str]] = []
        self.on = False

    @contextlib.contextmanager
    def counting(self):
        was, self.on = self.on, True
        try:
            yield
        finally:
            self.on = was


@pytest.fixture
def reads(monkeypatch, tmp_path):
    """Count host reads inside every training step's loss function and backward pass."""
    monkeypatch.setenv("WEBMM_RESULTS", str(tmp_path))
    monkeypatch.delenv("WEBMM_DEBUG", raising=False)
    monkeypatch.setattr(webmm_lab.ids, "validating", lambda t: False)        # as on a GPU
    found = HostReads()

    def counted(name, original):
        def call(t, *args, **kwargs):
            if found.on:
                found.steps[-1].append(name)
            return original(t, *args, **kwargs)
        return call
    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    backward = torch.Tensor.backward

    def counted_backward(t, *args, **kwargs):
        with found.counting():
            return backward(t, *args, **kwargs)
    monkeypatch.setattr(torch.Tensor, "backward", counted_backward)
    train_step = loop.train_step

    def counted_step(forward, model, loss_fn, *rest):
        def loss(m, batch):
            with found.counting():
                return loss_fn(m, batch)
        found.steps.append([])
        return train_step(forward, model, loss, *rest)
    monkeypatch.setattr(loop, "train_step", counted_step)
    return found


def assert_no_reads(reads: HostReads, steps: int = 2, first_starts_codebooks: bool = False):
    """Every step ran and read nothing back; with `first_starts_codebooks`, the first step
    (which starts a VQ codebook by k-means, once) is not judged."""
    assert len(reads.steps) == steps
    judged = reads.steps[1:] if first_starts_codebooks else reads.steps
    assert all(r == [] for r in judged), reads.steps


def test_gpt(reads):
    gpt = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=16))
    stream = torch.randint(30, (500,))
    train(gpt, lm_loss, window_batches([stream], batch_size=4, block_size=16), steps=2, lr=1e-3,
          progress=False)
    assert_no_reads(reads)


def test_simclr(reads):
    model = SimCLR(ConvEncoder(1, 8), proj_dim=16)
    train(model, lambda m, b: info_nce(*m(*b), 0.5), view_pair_batches(torch.rand(64, 1, 8, 8), batch_size=16),
          steps=2, lr=1e-3, progress=False)
    assert_no_reads(reads)


def test_clip(reads):
    setup = ClipSetup(pool=200, steps=2, batch=16, vocab=300)
    world = ClipWorld.build(setup)
    train_clip(build_clip(setup, world), world, setup, progress=False)
    assert_no_reads(reads)


def test_jukebox_vqvae(reads):
    setup = JukeboxSetup(width=8, dim=8, codebook=(16, 16, 8))
    noise = SimpleNamespace(crops=lambda batch, length, seed: lambda step: torch.randn(batch, 1, 1024))
    train_vqvae(build_vqvae(setup), noise, setup, steps=2, progress=False)
    assert_no_reads(reads, first_starts_codebooks=True)


TINY = DalleSetup(objects=120, signs=20, panels=20, codebook=16, layers=1, heads=2, width=32, steps=2, batch=8,
                  tok=TokenizerSetup(width=8, dim=8, steps=2, batch=8))


@pytest.mark.parametrize("kind", ["dvae", "vq"])
def test_dalle_image_tokenizers(reads, kind):
    images = SimpleNamespace(images=(torch.rand(40, 3, 32, 32) * 255).to(torch.uint8))
    train_tokenizer(build_tokenizer(TINY, kind), images, TINY, progress=False)
    assert_no_reads(reads, first_starts_codebooks=kind == "vq")


def test_dalle_transformer(reads):
    world = build_world(TINY)
    codes = torch.randint(TINY.codebook, (len(world.scenes), TINY.grid, TINY.grid))
    train_dalle(build_dalle(TINY, world), world, codes, TINY, progress=False)
    assert_no_reads(reads)


def test_the_counter_sees_a_read_and_the_checks_still_run_on_the_cpu(reads, monkeypatch):
    """The test itself: a loss that reads back is caught; without the fake, bad ids are still a
    clear error on the CPU; with WEBMM_DEBUG=1 they are checked on a GPU too."""
    model = torch.nn.Linear(3, 1)
    train(model, lambda m, b: m(b).sum() * float(b.sum()), lambda step: torch.ones(2, 3), steps=1,
          lr=1e-3, progress=False)
    assert reads.steps == [["__float__"]]
    monkeypatch.undo()
    gpt = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 30\)"):
        gpt(torch.tensor([[3, 30]]))
    gpu = SimpleNamespace(device=torch.device("cuda"))
    assert not webmm_lab.ids.validating(gpu)
    monkeypatch.setenv("WEBMM_DEBUG", "1")
    assert webmm_lab.ids.validating(gpu)

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from webmm_lab.distributed import finish, leave
from webmm_lab.models.contrastive import LOGIT_SCALE_INIT, LOGIT_SCALE_MAX, clamp_logit_scale, clip_loss


def direct_clip_loss(img, txt, scale):
    """CLIP's pseudo-code (Radford et al., 2021, figure 3), one direction at a time."""
    i, t = F.normalize(img, dim=1), F.normalize(txt, dim=1)
    logits = math.exp(scale) * i @ t.T
    labels = torch.arange(len(img))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@pytest.mark.parametrize("n, d", [(2, 3), (9, 16), (32, 8)])
def test_clip_loss_equals_the_papers_formula(n, d):
    g = torch.Generator().manual_seed(n)
    img, txt = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    scale = torch.tensor(LOGIT_SCALE_INIT)
    assert torch.allclose(clip_loss(img, txt, scale), direct_clip_loss(img, txt, LOGIT_SCALE_INIT), atol=1e-5)


def test_clip_loss_is_ln_n_for_identical_embeddings_and_near_it_at_random_init():
    n = 64
    same = torch.ones(n, 8)
    assert clip_loss(same, same, torch.tensor(2.0)).item() == pytest.approx(math.log(n), rel=1e-5)
    rand = clip_loss(torch.randn(n, 256), torch.randn(n, 256), torch.tensor(0.0))
    assert rand.item() == pytest.approx(math.log(n), rel=0.05)


def test_clip_loss_errors_and_clamp():
    with pytest.raises(ValueError, match="at least 2"):
        clip_loss(torch.randn(1, 4), torch.randn(1, 4), torch.tensor(1.0))
    with pytest.raises(ValueError, match="same"):
        clip_loss(torch.randn(3, 4), torch.randn(3, 5), torch.tensor(1.0))
    s = torch.nn.Parameter(torch.tensor(7.0))
    clamp_logit_scale(s)
    assert s.item() == pytest.approx(LOGIT_SCALE_MAX)
    assert LOGIT_SCALE_INIT == pytest.approx(math.log(1 / 0.07))


# Two gloo processes, each with half a batch, against one process with all of it.

class TwoTowers(nn.Module):
    """A minimal image/text pair of encoders with a learned logit scale."""

    def __init__(self, d_image: int = 12, d_text: int = 10, dim: int = 8):
        super().__init__()
        self.image = nn.Linear(d_image, dim)
        self.text = nn.Linear(d_text, dim)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def loss(self, images, texts, gather: bool):
        return clip_loss(self.image(images), self.text(texts), self.logit_scale, gather=gather)


def pairs(batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 12, generator=g), torch.randn(batch, 10, generator=g)


def _gathered_worker(rank: int, world: int, init_file: str, out_file: str, batch: int, seed: int):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(seed)
        model = TwoTowers()
        images, texts = pairs(batch, seed)
        n = batch // world
        loss = model.loss(images[rank * n:(rank + 1) * n], texts[rank * n:(rank + 1) * n], gather=True)
        loss.backward()
        for p in model.parameters():                 # what DDP does: average the gradients
            dist.all_reduce(p.grad)
            p.grad /= world
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        mean_loss /= world
        if rank == 0:
            torch.manual_seed(seed)
            reference = TwoTowers()
            full = reference.loss(images, texts, gather=False)
            full.backward()
            grad_diff = max((p.grad - q.grad).abs().max().item()
                            for p, q in zip(model.parameters(), reference.parameters()))
            torch.save({"loss_diff": abs(mean_loss.item() - full.item()), "grad_diff": grad_diff,
                        "loss": full.item()}, out_file)
    except BaseException:
        leave()
        raise
    finish()


@pytest.mark.slow
def test_two_gloo_processes_reproduce_the_full_batch_loss_and_gradients(tmp_path):
    mp.spawn(_gathered_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "result.pt"), 16, 0), nprocs=2)
    result = torch.load(tmp_path / "result.pt", weights_only=True)
    assert result["loss_diff"] <= 1e-5 and result["grad_diff"] <= 1e-5, result
    assert result["loss"] > 1.0                        # a real loss, not a trivial zero

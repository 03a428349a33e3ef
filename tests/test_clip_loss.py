import math

import pytest
import torch
import torch.nn.functional as F

from webmm_lab.models.contrastive import LOGIT_SCALE_INIT, LOGIT_SCALE_MAX, clamp_logit_scale, clip_loss
from webmm_lab.experiments.clip import gathered_equals_full_batch


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


@pytest.mark.slow
def test_two_gloo_processes_reproduce_the_full_batch_loss_and_gradients():
    result = gathered_equals_full_batch(world_size=2, batch=16)
    assert result["loss_diff"] <= 1e-5 and result["grad_diff"] <= 1e-5, result
    assert result["loss"] > 1.0                        # a real loss, not a trivial zero

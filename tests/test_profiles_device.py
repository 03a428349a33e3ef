import pytest
import torch

from webmm_lab import autocast, grad_scaler, pick, pick_device, seed_everything
from webmm_lab.profiles import ProfileError, active_profile

SIZES = dict(smoke=dict(steps=2, width=8), cpu=dict(steps=20, width=32), gpu=dict(steps=200, width=256))


def test_pick_returns_the_active_profile(monkeypatch, capsys):
    for name in ("smoke", "cpu", "gpu"):
        monkeypatch.setenv("WEBMM_PROFILE", name)
        cfg = pick(**SIZES)
        assert cfg.profile == name and cfg.steps == SIZES[name]["steps"] and cfg["width"] == SIZES[name]["width"]
    assert "gpu*" in capsys.readouterr().out  # the table marks the active column


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WEBMM_PROFILE", "laptop")
    with pytest.raises(ProfileError, match="smoke, cpu, gpu"):
        active_profile()
    with pytest.raises(ProfileError, match="laptop"):
        pick(**SIZES)


@pytest.mark.parametrize("cuda, expected", [(True, "gpu"), (False, "cpu")])
def test_default_profile_follows_cuda(monkeypatch, cuda, expected):
    monkeypatch.delenv("WEBMM_PROFILE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert active_profile() == expected
    monkeypatch.setenv("WEBMM_PROFILE", " Smoke ")          # set, it wins, however written
    assert active_profile() == "smoke"


def test_every_profile_must_give_every_key():
    with pytest.raises(ValueError, match="every setting"):
        pick(smoke=dict(steps=1), cpu=dict(steps=2, width=3), gpu=dict(steps=3), show=False)


def test_cpu_device_needs_no_amp():
    dev = pick_device("cpu")
    assert dev.type == "cpu"
    with autocast(dev):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
    assert not grad_scaler(dev).is_enabled()


def test_seeding_repeats_exactly():
    seed_everything(3)
    a = torch.randn(5), torch.nn.Linear(4, 4).weight.detach().clone()
    seed_everything(3)
    b = torch.randn(5), torch.nn.Linear(4, 4).weight.detach().clone()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_evaluating_sets_eval_mode_without_gradients_and_restores_each_mode():
    from webmm_lab.device import evaluating
    a, b = torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)
    b.eval()
    with evaluating(a, b) as device:
        assert not a.training and not b.training and not torch.is_grad_enabled()
        assert device == torch.device("cpu")
        assert not a(torch.ones(1, 2)).requires_grad
    assert a.training and not b.training                                     # each back to its own mode
    with pytest.raises(RuntimeError):
        with evaluating(a):
            raise RuntimeError("an error inside")
    assert a.training and torch.is_grad_enabled()


def test_a_model_training_after_an_evaluation_helper_is_in_train_mode_again():
    from webmm_lab.experiments.igpt import judge_classes, layer_features
    from webmm_lab.models.gpt import GPT, GPTConfig
    from webmm_lab.probe import embed
    judge = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.1), torch.nn.Linear(12, 3))
    judge_classes(judge, torch.rand(4, 3, 2, 2))
    embed(judge, torch.rand(4, 3, 2, 2))
    gpt = GPT(GPTConfig(5, 8, n_layer=1, n_head=1, n_embd=8))
    layer_features(gpt, torch.randint(5, (2, 8)))
    gpt.generate(torch.zeros(1, 1, dtype=torch.long), 3)
    assert judge.training and gpt.training

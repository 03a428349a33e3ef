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

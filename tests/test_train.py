import math

import pytest
import torch
from torch import nn

from webmm_lab import random_batches, train
from webmm_lab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from webmm_lab.device import grad_scaler
from webmm_lab.paths import checkpoint_dir
from webmm_lab.train import TrainConfig, lr_at, param_groups, train_step


@pytest.fixture(autouse=True)
def results_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBMM_RESULTS", str(tmp_path))


def make_problem(seed=0):
    """A small regression with dropout (so the RNG state matters for exact resumption)."""
    torch.manual_seed(seed)
    x = torch.randn(256, 6)
    y = (x @ torch.randn(6, 1)).tanh()
    torch.manual_seed(seed + 1)
    model = nn.Sequential(nn.Linear(6, 32), nn.GELU(), nn.Dropout(0.1), nn.LayerNorm(32), nn.Linear(32, 1))
    loss_fn = lambda m, b: nn.functional.mse_loss(m(b[0]), b[1])
    return model, loss_fn, random_batches(x, y, batch_size=32, seed=seed)


KW = dict(steps=60, lr=1e-2, warmup=5, progress=False, device="cpu")


def test_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, lr=1.0, steps=100, warmup=10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))          # monotone after warmup
    assert lr_at(100, lr=1.0, steps=100, warmup=10) == pytest.approx(0.1)


def test_no_weight_decay_on_one_dimensional_parameters():
    model, _, _ = make_problem()
    decay, no_decay = param_groups(model, 0.1)
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert all(p.dim() < 2 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_training_lowers_the_loss():
    model, loss_fn, batches = make_problem()
    h = train(model, loss_fn, batches, **KW)
    assert len(h.loss) == len(h.steps) == len(h.lr) == 60
    assert sum(h.loss[-10:]) < 0.5 * sum(h.loss[:10])


def test_resume_after_interruption_equals_an_uninterrupted_run():
    model_a, loss_fn, batches = make_problem()
    full = train(model_a, loss_fn, batches, **KW)

    model_b, _, _ = make_problem()
    part = train(model_b, loss_fn, batches, run="resume", stop_after=23, **KW)
    assert part.steps[-1] == 22
    state = load_checkpoint(checkpoint_dir() / "smoke" / "resume.pt")
    assert state["step"] == 23

    model_c, _, _ = make_problem(seed=5)             # a fresh process would rebuild the model
    resumed = train(model_c, loss_fn, batches, run="resume", **KW)
    assert resumed.resumed_from == 23
    assert resumed.loss == full.loss                  # bit for bit, every step
    for p, q in zip(model_a.parameters(), model_c.parameters()):
        assert torch.equal(p, q)


def test_a_finished_run_loads_instead_of_training(capsys):
    model, loss_fn, batches = make_problem()
    train(model, loss_fn, batches, run="done", **KW)
    fresh, _, _ = make_problem(seed=9)
    h = train(fresh, loss_fn, batches, run="done", **KW)
    assert "already complete" in capsys.readouterr().out
    assert len(h.loss) == 60
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)


def test_evaluation_runs_periodically_and_at_the_end():
    model, loss_fn, batches = make_problem()
    h = train(model, loss_fn, batches, eval_fn=lambda m: {"val_loss": 1.0, "acc": 0.5},
              eval_every=25, **KW)
    assert [e["step"] for e in h.evals] == [25, 50, 60]
    assert h.last_eval()["acc"] == 0.5


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    model, loss_fn, batches = make_problem()
    path = checkpoint_dir() / "smoke" / "bad.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.*Delete it"):
        train(model, loss_fn, batches, run="bad", **KW)
    good = tmp_path / "x.pt"
    save_checkpoint({"a": torch.ones(3)}, good)
    good.write_bytes(good.read_bytes()[:-40])         # truncated, as after a crash mid-copy
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(good)


def test_mismatched_checkpoint_names_the_difference():
    model, loss_fn, batches = make_problem()
    train(model, loss_fn, batches, run="mm", stop_after=5, **KW)
    wide = nn.Sequential(nn.Linear(6, 64), nn.GELU(), nn.Dropout(0.1), nn.LayerNorm(64), nn.Linear(64, 1))
    with pytest.raises(CheckpointError, match=r"different run \(parameter '0\.(weight|bias)'"):
        train(wide, loss_fn, batches, run="mm", **KW)
    with pytest.raises(CheckpointError, match="setting 'lr'"):
        train(model, loss_fn, batches, run="mm", **{**KW, "lr": 0.5})


def test_a_changed_setup_or_data_set_never_reloads_an_old_model():
    from dataclasses import dataclass

    @dataclass
    class Setup:
        width: int = 32
        temperature: float = 0.5

    model, loss_fn, batches = make_problem()
    train(model, loss_fn, batches, run="fp", stop_after=5, setup=Setup(), **KW)
    with pytest.raises(CheckpointError, match="setting 'setup'.*temperature=0.1"):
        train(model, loss_fn, batches, run="fp", setup=Setup(temperature=0.1), **KW)
    other = make_problem(seed=3)[2]                                  # same shapes, other data
    with pytest.raises(CheckpointError, match="setting 'data'"):
        train(model, loss_fn, other, run="fp", setup=Setup(), **KW)
    assert train(model, loss_fn, batches, run="fp", setup=Setup(), **KW).resumed_from == 5


def test_the_data_digest_ignores_last_bit_noise_but_not_a_changed_value():
    from webmm_lab.checkpoint import data_digest
    x = torch.linspace(0, 1, 100)
    batch = (x, {"ids": torch.arange(5), "name": "a"})
    assert data_digest(batch) == data_digest((x + 1e-7, {"ids": torch.arange(5), "name": "a"}))
    assert data_digest(batch) != data_digest((x, {"ids": torch.arange(5) + 1, "name": "a"}))
    assert data_digest(batch) != data_digest((x * 1.01, {"ids": torch.arange(5), "name": "a"}))


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"w": torch.arange(3)}, path)
    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint({"w": torch.zeros(3)}, path)
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(3))  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]           # no temp file left


def test_ctrl_c_saves_a_checkpoint():
    model, loss_fn, _ = make_problem()
    x = torch.randn(8, 6)
    def batches(step):
        if step == 7:
            raise KeyboardInterrupt
        return x, x[:, :1]
    with pytest.raises(KeyboardInterrupt):
        train(model, loss_fn, batches, run="ctrlc", **KW)
    assert load_checkpoint(checkpoint_dir() / "smoke" / "ctrlc.pt")["step"] == 7


def test_random_batches_depend_only_on_step():
    b = random_batches(torch.arange(100), batch_size=5, seed=1)
    assert torch.equal(b(3)[0], b(3)[0]) and not torch.equal(b(3)[0], b(4)[0])
    with pytest.raises(ValueError, match="different lengths"):
        random_batches(torch.zeros(3), torch.zeros(4), batch_size=2)
    assert math.isfinite(float(b(0)[0].float().mean()))


def test_window_batches_mix_streams_and_shift_targets():
    from webmm_lab.batches import window_batches
    a, b = torch.arange(0, 1000), torch.arange(5000, 6000)
    fn = window_batches([a, b], batch_size=400, block_size=8, weights=[0.25, 0.75], seed=3)
    x, y = fn(0)
    assert x.shape == y.shape == (400, 8) and torch.equal(x[:, 1:], y[:, :-1])
    assert torch.all((x[:, 1:] - x[:, :-1]) == 1)                     # contiguous windows
    from_b = (x[:, 0] >= 5000).float().mean().item()
    assert 0.65 < from_b < 0.85
    assert torch.equal(fn(5)[0], fn(5)[0])
    with pytest.raises(ValueError, match="longer than block_size"):
        window_batches([torch.arange(5)], batch_size=2, block_size=8)


def test_after_step_runs_after_every_optimizer_step():
    from webmm_lab.models.contrastive import LOGIT_SCALE_MAX, clamp_logit_scale
    scale = nn.Parameter(torch.tensor(4.0))
    model = nn.ParameterDict({"s": scale})
    seen = []
    def hook(m):
        clamp_logit_scale(m["s"])
        seen.append(m["s"].item())
    train(model, lambda m, b: -m["s"] * 10, lambda step: None, steps=30, lr=0.5, warmup=0,
          after_step=hook, progress=False, device="cpu")
    assert len(seen) == 30 and max(seen) <= LOGIT_SCALE_MAX + 1e-6 and seen[-1] == pytest.approx(LOGIT_SCALE_MAX)


def test_a_dry_run_trains_a_few_steps_evaluates_and_never_feeds_a_real_run(monkeypatch, capsys):
    model, loss_fn, batches = make_problem()
    monkeypatch.setenv("WEBMM_DRY_RUN", "3")
    history = train(model, loss_fn, batches, run="dry", eval_fn=lambda m: {"one": 1.0}, **KW)
    assert len(history.loss) == 3 and history.last_eval()["step"] == 3
    assert "stopped at step" not in capsys.readouterr().out
    assert (checkpoint_dir() / "smoke-dry-run" / "dry.pt").exists()
    monkeypatch.delenv("WEBMM_DRY_RUN")
    model, loss_fn, batches = make_problem()
    assert len(train(model, loss_fn, batches, run="dry", **KW).loss) == KW["steps"]   # from scratch
    monkeypatch.setenv("WEBMM_DRY_RUN", "zero")
    with pytest.raises(ValueError, match="WEBMM_DRY_RUN"):
        train(model, loss_fn, batches, **KW)


def test_each_seed_checkpoints_under_its_own_name():
    from webmm_lab.train import checkpoint_path
    model, loss_fn, batches = make_problem()
    train(model, loss_fn, batches, run="seeded", seed=3, stop_after=5, **KW)
    assert checkpoint_path("seeded", 3).exists() and checkpoint_path("seeded", 3).name == "seeded-seed3.pt"
    assert not checkpoint_path("seeded").exists()           # seed 0 would start afresh, not resume seed 3's


def test_train_config_fills_its_defaults_and_rejects_unknown_settings():
    cfg = TrainConfig(steps=50, lr=1e-3)
    assert cfg.warmup == 5 and cfg.ckpt_every == 5
    assert set(cfg.weights_settings()) == {"steps", "lr", "warmup", "min_lr_ratio", "weight_decay", "betas",
                                           "clip", "seed"}                  # eval and checkpoint cadence are not
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TrainConfig(steps=0, lr=1e-3)
    with pytest.raises(TypeError, match="learning_rate"):
        train(nn.Linear(2, 1), lambda m, b: m(b).sum(), lambda s: torch.ones(1, 2), steps=1, learning_rate=1e-3)


def test_train_step_is_one_optimiser_step_at_the_given_lr_that_returns_the_loss():
    model = nn.Linear(2, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.9)
    before = model.weight.detach().clone()
    x = torch.tensor([[1.0, 2.0]])
    loss = train_step(model, model, lambda m, b: m(b).sum(), x, opt, grad_scaler("cpu"), 0.5, None, torch.device("cpu"))
    assert loss.item() == pytest.approx((before @ x.T).item())
    assert torch.allclose(model.weight, before - 0.5 * x) and model.weight.grad is None   # stepped, zeroed


def test_batches_go_to_a_gpu_pinned_and_non_blocking(monkeypatch):
    """Faked, without a GPU: every host tensor of a nested batch is pinned, then copied with
    non_blocking=True; other values pass as they are; to the CPU nothing is pinned."""
    from webmm_lab.train import to_device
    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: calls.append(("pin", tuple(t.shape))) or t)
    monkeypatch.setattr(torch.Tensor, "to", lambda t, device, non_blocking=False:
                        calls.append(("to", str(device), non_blocking)) or t)
    batch = (torch.zeros(2, 3), {"ids": torch.zeros(2, dtype=torch.long)}, [torch.ones(1)], 0.5)
    out = to_device(batch, torch.device("cuda"))
    assert out[3] == 0.5 and isinstance(out[1], dict) and isinstance(out[2], list)
    assert calls == [("pin", (2, 3)), ("to", "cuda", True), ("pin", (2,)), ("to", "cuda", True),
                     ("pin", (1,)), ("to", "cuda", True)]
    calls.clear()
    to_device(batch, "cpu")
    assert calls == [("to", "cpu", True)] * 3

import pytest
import torch

from webmm_lab import autocast, grad_scaler, pick, pick_device, seed_everything
from webmm_lab.profiles import active_profile
from webmm_lab.settings import ProfileError

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


def test_a_dry_run_replaces_only_what_dry_names(monkeypatch, capsys):
    sizes = dict(smoke=dict(width=8, prompts=dict(seen=8, held_out=4)), cpu=dict(width=32, prompts=dict(seen=400,
                                                                                                        held_out=80)),
                 gpu=dict(width=256, prompts=dict(seen=400, held_out=200)))
    dry = dict(prompts=dict(seen=8))
    monkeypatch.setenv("WEBMM_PROFILE", "gpu")
    monkeypatch.delenv("WEBMM_DRY_RUN", raising=False)
    assert pick(**sizes, dry=dry, show=False).prompts == dict(seen=400, held_out=200)     # not a dry run
    monkeypatch.setenv("WEBMM_DRY_RUN", "2")
    cfg = pick(**sizes, dry=dry, show=False)
    assert cfg.width == 256 and cfg.prompts == dict(seen=8, held_out=200)          # one nested key replaced
    assert "dry run: prompts={'seen': 8, 'held_out': 200}" in capsys.readouterr().out
    assert sizes["gpu"]["prompts"]["seen"] == 400                                   # the notebook's dict untouched
    monkeypatch.delenv("WEBMM_DRY_RUN")
    with pytest.raises(ValueError, match="no profile sets"):
        pick(**sizes, dry=dict(widht=4), show=False)                                  # checked in every run


def test_a_dry_run_keeps_the_first_rows_of_each_split(monkeypatch, capsys):
    from webmm_lab.profiles import DRY_RUN_ROWS, dry_run_cut
    x, y = torch.zeros(10_000, 3), list(range(10_000))
    monkeypatch.delenv("WEBMM_DRY_RUN", raising=False)
    assert torch.equal(dry_run_cut("test", x), x)
    monkeypatch.setenv("WEBMM_DRY_RUN", "2")
    a, b = dry_run_cut("test", x, y)
    assert len(a) == len(b) == DRY_RUN_ROWS["test"] and b[-1] == DRY_RUN_ROWS["test"] - 1
    assert "test split cut from 10,000 to its first 512 rows" in capsys.readouterr().out
    assert len(dry_run_cut("train", x[:100])) == 100                                  # small splits stay whole
    with pytest.raises(ValueError, match="train, test"):
        dry_run_cut("val", x)


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
    gpt = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=1, n_embd=8))
    layer_features(gpt, torch.randint(5, (2, 8)))
    gpt.generate(torch.zeros(1, 1, dtype=torch.long), 3)
    assert judge.training and gpt.training


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device of a chosen compute capability, faked: `fake_gpu((7, 5))` is a T4."""
    monkeypatch.delenv("WEBMM_AMP", raising=False)

    def make(capability: tuple[int, int]):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a faked GPU")
        props = type("Props", (), {"total_memory": 16 * 2**30})()
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
        return torch.device("cuda")
    return make


def test_a_t4_gets_fp16_with_the_grad_scaler_though_torch_calls_bf16_supported(fake_gpu):
    from webmm_lab.device import amp_dtype, describe
    dev = fake_gpu((7, 5))                       # torch's is_bf16_supported() counts emulation: True
    assert amp_dtype(dev) == torch.float16
    assert grad_scaler(dev).is_enabled()
    assert describe(dev)["mixed precision"] == ("fp16 autocast + grad scaler "
                                                "(compute capability 7.5: bf16 would be emulated)")


@pytest.mark.parametrize("capability", [(8, 0), (8, 9), (9, 0)])
def test_an_ampere_or_newer_gpu_gets_bf16_without_a_scaler(fake_gpu, capability):
    from webmm_lab.device import amp_dtype, describe
    dev = fake_gpu(capability)
    assert amp_dtype(dev) == torch.bfloat16
    assert not grad_scaler(dev).is_enabled()
    major, minor = capability
    assert describe(dev)["mixed precision"] == f"bf16 autocast (compute capability {major}.{minor}: native bf16)"


def test_the_cpu_gets_no_autocast_and_webmm_amp_still_overrides(fake_gpu, monkeypatch):
    from webmm_lab.device import amp_dtype, describe
    assert amp_dtype("cpu") is None and describe("cpu")["mixed precision"] == "off (fp32)"
    dev = fake_gpu((7, 5))
    monkeypatch.setenv("WEBMM_AMP", "bf16")
    assert amp_dtype(dev) == torch.bfloat16 and not grad_scaler(dev).is_enabled()
    assert describe(dev)["mixed precision"] == "bf16 autocast (WEBMM_AMP=bf16)"
    monkeypatch.setenv("WEBMM_AMP", "off")
    assert amp_dtype(dev) is None and describe(dev)["mixed precision"] == "off (fp32, WEBMM_AMP=off)"
    monkeypatch.setenv("WEBMM_AMP", "auto")
    assert amp_dtype(dev) == torch.float16


def test_settings_read_every_variable_and_name_the_bad_one(monkeypatch):
    from webmm_lab.settings import settings
    for name in ("WEBMM_PROFILE", "WEBMM_SEED", "WEBMM_DRY_RUN", "WEBMM_CLAIMS", "WEBMM_AMP", "WEBMM_DATA"):
        monkeypatch.delenv(name, raising=False)
    s = settings()
    assert (s.seed, s.dry_run, s.claims, s.amp) == (0, None, "enforce", "auto")
    monkeypatch.setenv("WEBMM_SEED", "3")
    monkeypatch.setenv("WEBMM_DATA", "/tmp/cache")
    assert settings().seed == 3 and str(settings().data) == "/tmp/cache"      # seen at once
    for name, bad in (("WEBMM_SEED", "two"), ("WEBMM_DRY_RUN", "0"), ("WEBMM_CLAIMS", "maybe"),
                      ("WEBMM_AMP", "fp8")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=name):
            settings()
        monkeypatch.delenv(name)


def test_only_settings_reads_the_course_variables():
    """One home for the environment: no other module reads a WEBMM_ variable (the two hand-offs
    between the course's own processes aside, see settings.py)."""
    import re
    from pathlib import Path
    package = Path(__file__).resolve().parents[1] / "webmm_lab"
    hand_offs = "(?!GRADE_KEY_FILE|REPORT_FILE)"
    read = re.compile(rf"(environ\.get\(|getenv\()\s*[\"']WEBMM_{hand_offs}"             # a read, not a write:
                      rf"|environ\[\s*[\"']WEBMM_{hand_offs}\w+[\"']\s*\](?!\s*=[^=])")   # environ[...] = x sets it
    readers = [str(p.relative_to(package)) for p in package.rglob("*.py")
               if p.name != "settings.py" and read.search(p.read_text())]
    assert not readers, f"read WEBMM_ variables through webmm_lab.settings instead: {readers}"

"""Every environment variable a user may set, read and checked in one place.

    settings().profile      # WEBMM_PROFILE   smoke, cpu or gpu ("": by the hardware, see profiles.py)
    settings().seed         # WEBMM_SEED      the notebook-wide seed (default 0)
    settings().dry_run      # WEBMM_DRY_RUN   training steps per call in a dry run (None: a real run)
    settings().claims       # WEBMM_CLAIMS    enforce (default) or record (`webmm-lab run --seeds`)
    settings().results      # WEBMM_RESULTS   where results go (None: results/ of the course folder)
    settings().data         # WEBMM_DATA      the download cache (default ~/.cache/webmm_lab)
    settings().offline      # WEBMM_OFFLINE   set to anything: never touch the network
    settings().device       # WEBMM_DEVICE    force a device, e.g. cpu ("": the best one here)
    settings().amp          # WEBMM_AMP       auto (default), bf16, fp16 or off
    settings().debug        # WEBMM_DEBUG=1   range-check token ids on a GPU too (a sync per check)

The environment is looked at on every call, so a notebook cell or a test that sets a variable
takes effect at once (`results_on_drive` sets WEBMM_RESULTS, for one); each distinct set of values
is parsed once. A bad value is an error that names the variable and what it may be. Two hand-offs
between the course's own processes are not settings and are read where they arrive:
WEBMM_GRADE_KEY_FILE (seal.py) and WEBMM_REPORT_FILE (tools/report.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROFILES = ("smoke", "cpu", "gpu")
AMP_MODES = ("auto", "bf16", "fp16", "off")
VARIABLES = ("WEBMM_PROFILE", "WEBMM_SEED", "WEBMM_DRY_RUN", "WEBMM_CLAIMS", "WEBMM_RESULTS", "WEBMM_DATA",
             "WEBMM_OFFLINE", "WEBMM_DEVICE", "WEBMM_AMP", "WEBMM_DEBUG")


class ProfileError(ValueError):
    """An unknown profile name."""


@dataclass(frozen=True)
class Settings:
    profile: str             # "" (choose by the hardware), smoke, cpu or gpu
    seed: int
    dry_run: int | None
    claims: str              # enforce or record
    results: Path | None
    data: Path
    offline: bool
    device: str              # "" (the best one here) or a torch device name
    amp: str                 # one of AMP_MODES
    debug: bool


def settings() -> Settings:
    """The course's settings from the environment as it is now (see the module docstring)."""
    return _parse(tuple(os.environ.get(name, "") for name in VARIABLES))


@lru_cache(maxsize=16)
def _parse(raw: tuple[str, ...]) -> Settings:
    profile, seed, dry_run, claims, results, data, offline, device, amp, debug = (v.strip() for v in raw)
    profile, claims, amp = profile.lower(), claims.lower() or "enforce", amp.lower() or "auto"
    if profile and profile not in PROFILES:
        raise ProfileError(f"unknown profile WEBMM_PROFILE={profile!r}; valid profiles are {', '.join(PROFILES)} "
                           "(smoke: tests, tiny sizes; cpu: a laptop; gpu: Colab or a workstation)")
    try:
        seed_value = int(seed or 0)
    except ValueError:
        raise ValueError(f"WEBMM_SEED must be a whole number, got {seed!r}") from None
    if dry_run and (not dry_run.isdigit() or int(dry_run) < 1):
        raise ValueError(f"WEBMM_DRY_RUN must be a positive number of training steps, got {dry_run!r}")
    if claims not in ("enforce", "record"):
        raise ValueError(f"WEBMM_CLAIMS={claims!r}: choose enforce (the default) or record")
    if amp not in AMP_MODES:
        raise ValueError(f"WEBMM_AMP={amp!r}: choose bf16, fp16, off or auto")
    return Settings(profile=profile, seed=seed_value, dry_run=int(dry_run) if dry_run else None,
                    claims=claims, results=Path(results) if results else None,
                    data=Path(data) if data else Path.home() / ".cache" / "webmm_lab",
                    offline=bool(offline), device=device, amp=amp, debug=debug == "1")

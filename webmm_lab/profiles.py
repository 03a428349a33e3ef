"""Profiles: one switch (WEBMM_PROFILE) sizes every notebook for tests, a laptop or a GPU.

    cfg = pick(smoke=dict(steps=20, width=32),
               cpu=dict(steps=600, width=64),
               gpu=dict(steps=5000, width=256))
    cfg.steps   # the active profile's value
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import torch

PROFILES = ("smoke", "cpu", "gpu")
BUDGETS = {"smoke": "<= 30 s on 2 CPU cores", "cpu": "<= 4 min on 2 CPU cores (6 for 02, 06 and 07)",
           "gpu": "<= 10 min on a Colab T4"}


class ProfileError(ValueError):
    """An unknown profile name."""


def active_profile() -> str:
    """The profile in force: $WEBMM_PROFILE, else 'gpu' where CUDA is present, else 'cpu'."""
    name = os.environ.get("WEBMM_PROFILE", "").strip().lower()
    if not name:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ProfileError(
            f"unknown profile WEBMM_PROFILE={name!r}; valid profiles are {', '.join(PROFILES)} "
            "(smoke: tests, tiny sizes; cpu: a laptop; gpu: Colab or a workstation)")
    return name


def notebook_seed() -> int:
    """The notebook-wide seed, $WEBMM_SEED (default 0): model initialisations and data order
    follow it. `webmm-lab run NN --seeds 0-4` runs a notebook once per seed, since another seed
    is what another machine amounts to."""
    value = os.environ.get("WEBMM_SEED", "").strip() or "0"
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"WEBMM_SEED must be a whole number, got {value!r}") from None


def dry_run_steps() -> int | None:
    """Training steps per call in a dry run ($WEBMM_DRY_RUN, set by `webmm-lab run --dry-run`),
    else None. A dry run executes every cell at the profile's full sizes but trains only a few
    steps per call and enforces no claim: a quick hunt for what breaks at those sizes."""
    value = os.environ.get("WEBMM_DRY_RUN", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"WEBMM_DRY_RUN must be a positive number of training steps, got {value!r}")
    return int(value)


class Config(SimpleNamespace):
    """The active profile's settings, readable as attributes (cfg.steps) or keys (cfg['steps'])."""

    def __getitem__(self, key: str):
        return getattr(self, key)

    def asdict(self) -> dict:
        return dict(vars(self))


def pick(*, smoke: dict, cpu: dict, gpu: dict, profile: str | None = None,
         show: bool = True) -> Config:
    """Return the settings of the active profile; print all three side by side when `show`.

    Every profile must give the same keys, so no notebook can forget a size in one of them.
    """
    table = {"smoke": smoke, "cpu": cpu, "gpu": gpu}
    keys = list(smoke)
    for name, values in table.items():
        if set(values) != set(keys):
            raise ValueError(f"profile {name!r} has keys {sorted(values)}, expected {sorted(keys)}: "
                             "give every setting in every profile")
    profile = profile or active_profile()
    if profile not in PROFILES:
        raise ProfileError(f"unknown profile {profile!r}; valid profiles are {', '.join(PROFILES)}")
    if show:
        print(format_table(table, profile))
    return Config(profile=profile, **table[profile])


def format_table(table: dict[str, dict], active: str) -> str:
    """The settings of all profiles as a text table, the active column marked with '*'."""
    keys = list(table["smoke"])
    heads = [f"{p}{'*' if p == active else ''}" for p in PROFILES]
    rows = [[k] + [str(table[p][k]) for p in PROFILES] for k in keys]
    widths = [max(len(r[i]) for r in rows + [["setting"] + heads]) for i in range(4)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))
    out = [line(["setting"] + heads), line(["-" * w for w in widths])] + [line(r) for r in rows]
    out.append(f"(* active profile: {active}; set WEBMM_PROFILE=smoke|cpu|gpu to change)")
    return "\n".join(out)

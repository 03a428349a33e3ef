"""Profiles: one switch (WEBMM_PROFILE) sizes every notebook for tests, a laptop or a GPU.

    cfg = pick(smoke=dict(steps=20, width=32),
               cpu=dict(steps=600, width=64),
               gpu=dict(steps=5000, width=256))
    cfg.steps   # the active profile's value
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

from .settings import PROFILES, ProfileError, settings

BUDGETS = {"smoke": "<= 30 s on 2 CPU cores", "cpu": "<= 4 min on 2 CPU cores (6 for 02, 06 and 07)",
           "gpu": "<= 10 min on a Colab T4"}


def active_profile() -> str:
    """The profile in force: $WEBMM_PROFILE, else 'gpu' where CUDA is present, else 'cpu'."""
    return settings().profile or ("gpu" if torch.cuda.is_available() else "cpu")


def notebook_seed() -> int:
    """The notebook-wide seed, $WEBMM_SEED (default 0): model initialisations and data order
    follow it. `webmm-lab run NN --seeds 0-4` runs a notebook once per seed, since another seed
    is what another machine amounts to."""
    return settings().seed


def dry_run_steps() -> int | None:
    """Training steps per call in a dry run ($WEBMM_DRY_RUN, set by `webmm-lab run --dry-run`),
    else None. A dry run executes every cell at the profile's full sizes but trains only a few
    steps per call and enforces no claim: a quick hunt for what breaks at those sizes."""
    return settings().dry_run


DRY_RUN_ROWS = {"train": 2048, "test": 512}   # what a dry run keeps of each split it evaluates on


def dry_run_cut(split: str, *rows):
    """Tensors (or lists) `rows`, aligned on their first dimension, as a run uses them: all of
    them, except in a dry run, which keeps the first DRY_RUN_ROWS[split] of each ('train' or
    'test'). A dry run builds its data in full (downloads, rendering, tokenising: the CPU's
    share, which a GPU cannot hide) and trains 2 steps a loop; without the cut, its evaluations
    over whole gpu-sized splits (features, probes, accuracies: a GPU's work) would take a CPU
    an hour. Returns one object for one argument, else a tuple."""
    if split not in DRY_RUN_ROWS:
        raise ValueError(f"split must be one of {', '.join(DRY_RUN_ROWS)}, got {split!r}")
    keep = DRY_RUN_ROWS[split] if dry_run_steps() is not None else None
    if keep is not None and rows and len(rows[0]) > keep:
        print(f"dry run: the {split} split cut from {len(rows[0]):,} to its first {keep:,} rows")
    out = tuple(r[:keep] for r in rows)
    return out[0] if len(out) == 1 else out


class Config(SimpleNamespace):
    """The active profile's settings, readable as attributes (cfg.steps) or keys (cfg['steps'])."""

    def __getitem__(self, key: str):
        return getattr(self, key)

    def asdict(self) -> dict:
        return dict(vars(self))


def pick(*, smoke: dict, cpu: dict, gpu: dict, dry: dict | None = None, profile: str | None = None,
         show: bool = True) -> Config:
    """Return the settings of the active profile; print all three side by side when `show`.

    Every profile must give the same keys, so no notebook can forget a size in one of them.
    `dry` names what a dry run (`webmm-lab run --dry-run`) replaces in the active profile's
    settings: how many samples, prompts, pieces or evaluation rounds it draws (a GPU's work,
    which at gpu sizes would keep a CPU busy for an hour), never a model's size, a sequence's
    length or which models train (a dry run's report counts the FLOPs of the training it
    sees, for the T4 estimate). A nested dict replaces only the keys it names.
    """
    table = {"smoke": smoke, "cpu": cpu, "gpu": gpu}
    keys = list(smoke)
    for name, values in table.items():
        if set(values) != set(keys):
            raise ValueError(f"profile {name!r} has keys {sorted(values)}, expected {sorted(keys)}: "
                             "give every setting in every profile")
    if set(dry or {}) - set(keys):
        raise ValueError(f"dry names {sorted(set(dry) - set(keys))}, which no profile sets; it can "
                         f"only replace settings ({', '.join(keys)})")
    profile = profile or active_profile()
    if profile not in PROFILES:
        raise ProfileError(f"unknown profile {profile!r}; valid profiles are {', '.join(PROFILES)}")
    values = dict(table[profile])
    if show:
        print(format_table(table, profile))
    if dry and dry_run_steps() is not None:
        for k, v in dry.items():
            values[k] = {**values[k], **v} if isinstance(v, dict) and isinstance(values[k], dict) else v
        print("dry run: " + ", ".join(f"{k}={values[k]}" for k in dry))
    return Config(profile=profile, **values)


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

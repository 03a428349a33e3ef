"""Claims: each notebook's headline result, measured against its baseline and recorded.

    claims = Claims("00_setup_and_tour")
    claims.check("MLP minus logistic regression, test accuracy (points)", 100 * (mlp - linear), 1.0,
                 baseline=Baseline.difference("logistic regression, same digits (%)", 100 * linear))
    claims.observe("training wall time (s)", seconds)
    claims.show()

The rule, said here once (COURSE.md, Claims, says the same for the course):

- A claim is the paper's headline result reproduced in miniature, and it discriminates: it
  names its **baseline**, the cheapest thing that could produce its number without the idea
  being taught (a counting or n-gram model, hand-made features, a model that reads only the
  easiest part of the label, an untrained network, the prompt alone, a filter that does
  nothing), the strongest such one, measured in the same run on the same data and compared
  with the same target. A baseline that also meets the target means the claim does not
  discriminate: it is refused. A difference claim ("model minus raw pixels") names the
  subtracted quantity as its baseline (`Baseline.difference`, which scores 0 on the claim's
  scale), a ratio claim the quantity it divides by (`Baseline.ratio`, scoring 1).
- A claim holds on every machine: another machine is in effect another seed, so each claim is
  measured on 5 seeds and once on one thread (`spread`), and passes on all of them; the notebook
  shows that spread under its claims (`show_spread`). Where it does not hold, the method gets
  stronger, never the target weaker; a claim that honest work cannot reproduce at this scale
  is checked with `reproducible=False, reason=...` and shown as "not reproduced".
- What cannot come out otherwise (a loss at initialisation, code lengths, a KV cache's output,
  gathered gradients) is an identity, not a claim: a test in tests/, shown with
  `check_identity`, which stops the notebook in every profile if it fails. A timing is an
  observation. An observation (`observe`) is recorded and never enforced.

Where claims are enforced (the mode, decided once per notebook): in the cpu profile, and in the
gpu profile once a spread measured on a GPU is stored (before that, gpu claims are recorded and
shown as "not yet measured on a GPU"). A failed claim raises ClaimFailed, a refused one
ClaimRefused, each with what was expected and measured. In smoke, in a dry run
(`webmm-lab run --dry-run`) and with WEBMM_CLAIMS=record (`webmm-lab run --seeds`, which must
measure every claim on every seed) claims are recorded, never enforced. Every profile refuses a
value that is NaN or infinite, and in smoke `show()` refuses a notebook that recorded fewer
claims than its stored spread or a claim that names no baseline: code that would stop the
notebook in the cpu profile.

Records go to results/<notebook>.json; spreads over seeds are webmm_lab.spread's.
"""
from __future__ import annotations

import json
import math
import operator
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .paths import results_dir
from .profiles import active_profile, dry_run_steps
from .provenance import package_digests
from .settings import settings
from .spread import fmt, format_spread, load_spread, text_table

COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
           "==": operator.eq}
RELATIONS = {"": None, "difference": 0.0, "ratio": 1.0}     # relation -> the baseline's score


class ClaimFailed(AssertionError):
    """A claim that did not hold in an enforcing profile (or a value that is not a number)."""


class ClaimRefused(ClaimFailed):
    """A claim that names no baseline, or whose baseline also meets its target: it does not
    discriminate, so it is no claim (see the module docstring)."""


class IdentityFailed(AssertionError):
    """An identity that did not hold: a bug, whatever the profile."""


@dataclass(frozen=True)
class Baseline:
    """What a claim is compared with, measured in the same run on the same data.

    `Baseline(name, value)`: the baseline's value is on the claim's scale (accuracy against
    accuracy) and is compared with the claim's target. `Baseline.difference(name, value)`: the
    claim is the model's value minus this one, so the baseline scores 0 on it;
    `Baseline.ratio(name, value)`: the claim divides by (or into) this value, so it scores 1.
    Either way `value` is the baseline's own measurement, shown beside the claim."""
    name: str
    value: float
    relation: str = ""

    def __post_init__(self):
        if self.relation not in RELATIONS:
            raise ValueError(f"relation must be one of {list(RELATIONS)}, got {self.relation!r}")
        if not self.name.strip():
            raise ValueError("a baseline needs a name that says what it is")
        object.__setattr__(self, "value", float(self.value))

    @classmethod
    def difference(cls, name: str, value: float) -> "Baseline":
        """The quantity a difference claim subtracts ("model minus raw pixels")."""
        return cls(name, value, "difference")

    @classmethod
    def ratio(cls, name: str, value: float) -> "Baseline":
        """The quantity a ratio claim compares the model with ("model loss / bigram loss")."""
        return cls(name, value, "ratio")

    @property
    def score(self) -> float:
        """The baseline's value on the claim's scale: what is compared with the target."""
        return self.value if RELATIONS[self.relation] is None else RELATIONS[self.relation]


def check_identity(name: str, measured: float, target: float, compare: str = "<=") -> bool:
    """Show an identity in a notebook: `measured <compare> target` must hold by construction
    (a loss at initialisation, code lengths, a KV cache's output, gathered gradients), so it is a
    test, not a claim. Prints one line; raises IdentityFailed in every profile if it fails
    (a dry run, whose training is cut short, only reports it)."""
    if compare not in COMPARE:
        raise ValueError(f"compare must be one of {list(COMPARE)}, got {compare!r}")
    measured = float(measured)
    ok = math.isfinite(measured) and COMPARE[compare](measured, target)
    if not ok and dry_run_steps() is not None:       # a dry run cuts training short: not enforced
        print(f"[CHECK, dry run] {name}: {fmt(measured)} (expected {compare} {fmt(target)}; "
              "a dry run's truncated training is not checked)")
        return False
    if not ok:
        raise IdentityFailed(f"identity failed: {name}: expected {compare} {fmt(target)}, measured "
                             f"{fmt(measured)}. This holds by construction: the code is wrong "
                             "(the tests in tests/ check the same identity)")
    print(f"[CHECK] {name}: {fmt(measured)} ({compare} {fmt(target)} by construction: ok)")
    return True


@dataclass
class Claim:
    notebook: str
    name: str
    measured: float | None
    target: float | None
    compare: str
    kind: str      # "claim" or "observation"
    status: str    # "pass", "FAIL", "refused", "not reproduced", "observed"
    profile: str   # smoke, cpu or gpu
    note: str = ""
    mode: str = "enforce"     # see MODES
    baseline: str = ""        # the baseline's name ("" for none)
    baseline_value: float | None = None
    baseline_relation: str = ""
    baseline_met: bool | None = None     # did the baseline also meet the target?
    reproducible: bool = True

    @classmethod
    def from_dict(cls, data: dict) -> "Claim":
        """A Claim from its JSON record (older records lack the later fields)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def where(self) -> str:
        """The profile, with the mode where claims were not enforced."""
        return self.profile + (f" ({MODES[self.mode]})" if MODES.get(self.mode) else "")

    def baseline_text(self) -> str:
        """'name: value' (with '(subtracted)' or '(divided by)' for difference and ratio claims)."""
        if not self.baseline:
            return "-"
        tag = {"difference": " (subtracted)", "ratio": " (ratio)"}.get(self.baseline_relation, "")
        return f"{self.baseline}: {fmt(self.baseline_value)}{tag}"


MODES = {"enforce": "", "smoke": "", "record": "record", "dry run": "dry run",
         "unmeasured": "not yet measured on a GPU"}     # mode -> how the table says it


def claims_mode(profile: str, notebook: str) -> str:
    """Whether a notebook's claims are enforced here (decided once, from the profile, a dry
    run, WEBMM_CLAIMS and whether a gpu spread is stored): one of MODES."""
    if dry_run_steps() is not None:
        return "dry run"
    if settings().claims == "record":
        return "record"
    if profile == "smoke":
        return "smoke"
    if profile == "gpu" and load_spread(notebook, "gpu") is None:
        return "unmeasured"
    return "enforce"


class Claims:
    """The claims of one notebook, written to results/<notebook>.json as they are recorded."""

    def __init__(self, notebook: str, profile: str | None = None):
        self.notebook = notebook
        self.profile = profile or active_profile()
        self.mode = claims_mode(self.profile, notebook)
        self.enforce = self.mode == "enforce"
        self.entries: dict[str, Claim] = {}
        self.path = results_dir() / f"{notebook}.json"

    def check(self, name: str, measured: float, target: float, compare: str = ">=", *,
              baseline: Baseline | None = None, reproducible: bool = True, reason: str = "",
              note: str = "") -> Claim:
        """Record a claim `measured <compare> target` against its `baseline` (the rule: this
        module's docstring). Where claims are enforced, a claim that fails raises ClaimFailed,
        and one with no baseline, or whose baseline's score also meets the target, raises
        ClaimRefused; elsewhere both are recorded as such. `reproducible=False, reason=...`
        marks a claim that honest work cannot reproduce at this scale ("not reproduced")."""
        if compare not in COMPARE:
            raise ValueError(f"compare must be one of {list(COMPARE)}, got {compare!r}")
        if baseline is not None and not isinstance(baseline, Baseline):
            raise TypeError(f"baseline must be a Baseline(name, value), got {type(baseline).__name__}")
        measured = float(measured) if not isinstance(measured, bool) else measured
        met = None if baseline is None else bool(COMPARE[compare](baseline.score, target))
        ok = bool(COMPARE[compare](measured, target))
        status = ("refused" if baseline is None or met else "pass" if ok
                  else "FAIL" if reproducible else "not reproduced")
        claim = self._record(Claim(
            self.notebook, name, measured, target, compare, "claim", status, self.profile,
            reason or note, self.mode, baseline.name if baseline else "",
            baseline.value if baseline else None, baseline.relation if baseline else "", met,
            reproducible))
        if self.enforce and status == "refused":
            raise ClaimRefused(refusal(claim))
        if self.enforce and status == "FAIL":
            raise ClaimFailed(
                f"claim failed in {self.notebook} ({self.profile} profile): {name}: expected "
                f"measured {compare} {fmt(target)}, measured {fmt(measured)} (its baseline, "
                f"{claim.baseline_text()})")
        return claim

    def observe(self, name: str, measured: float, target: float | None = None,
                compare: str = ">=", note: str = "", baseline: Baseline | None = None) -> Claim:
        """Record an observation: shown beside the paper's figure (and, if given, a baseline
        measured beside it), never enforced."""
        measured = float(measured)
        return self._record(Claim(
            self.notebook, name, measured, target, compare, "observation", "observed",
            self.profile, note, self.mode, baseline.name if baseline else "",
            baseline.value if baseline else None, baseline.relation if baseline else ""))

    def _record(self, claim: Claim) -> Claim:
        self.entries[claim.name] = claim
        data = {"notebook": self.notebook, "profile": self.profile, "mode": self.mode,
                "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
                "claims": [asdict(c) for c in self.entries.values()],
                "code": package_digests()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)
        mark = {"pass": "PASS", "FAIL": "FAIL", "refused": "REFUSED",
                "not reproduced": "NOT REPRODUCED", "observed": "OBSERVED"}[claim.status]
        target = f" (target {claim.compare} {fmt(claim.target)})" if claim.target is not None else ""
        against = f"; baseline {claim.baseline_text()}" if claim.baseline else ""
        print(f"[{mark}] {claim.name}: {fmt(claim.measured)}{target}{against}")
        for value in (claim.measured, claim.baseline_value):
            if isinstance(value, float) and not math.isfinite(value):
                raise ClaimFailed(f"{claim.kind} {claim.name!r} in {self.notebook} measured "
                                  f"{value}: a value that is not a finite number is a bug "
                                  "(a diverged run or an empty set), in every profile")
        return claim

    def table(self) -> str:
        """This notebook's claims as a text table."""
        return format_table(list(self.entries.values()))

    def show(self) -> None:
        """Print this notebook's claims table. In smoke, first make sure no claim was skipped
        and every claim names a baseline (ClaimFailed otherwise): what would stop the cpu run."""
        if self.mode == "smoke":
            self.check_complete()
        print(self.table())

    def check_complete(self) -> None:
        """Raise ClaimRefused for a claim that names no baseline, and ClaimFailed if fewer
        claims and observations were recorded than the stored cpu spread holds (one silently
        skipped in this profile; a claim that became an observation still counts)."""
        bare = [c.name for c in self.entries.values() if c.kind == "claim" and not c.baseline]
        if bare:
            raise ClaimRefused(refusal(self.entries[bare[0]]))
        stored = load_spread(self.notebook)
        if stored is not None and len(self.entries) < len(stored["claims"]):
            raise ClaimFailed(
                f"{self.notebook} recorded {len(self.entries)} claims and observations in the "
                f"{self.profile} profile, but its stored spread ({stored['profile']} profile) has "
                f"{len(stored['claims'])}: one was skipped here, or the spread is stale (re-measure "
                f"it with `webmm-lab run {self.notebook[:2]} --profile cpu --seeds 0-4 --store`)")

    def show_spread(self) -> dict | None:
        """Print the stored spread of this notebook's claims over seeds and a one-thread run,
        the active profile's (the cpu one where the gpu profile has none yet); returns it."""
        profile = "gpu" if self.profile == "gpu" and load_spread(self.notebook, "gpu") else "cpu"
        data = load_spread(self.notebook, profile)
        if data is None:
            print(f"no spread stored for {self.notebook} yet: measure it with "
                  f"`webmm-lab run {self.notebook[:2]} --profile cpu --seeds 0-4 --store`")
            return None
        if profile != self.profile and self.profile == "gpu":
            print("no spread measured on a GPU yet (gpu claims are recorded, not enforced); "
                  "the cpu profile's spread:")
        print(format_spread(data))
        return data


def refusal(claim: Claim) -> str:
    """Why a claim is refused: no baseline, or a baseline that meets the target too."""
    head = f"claim refused in {claim.notebook} ({claim.profile} profile): {claim.name}: "
    if not claim.baseline:
        return head + ("it names no baseline. Pass baseline=Baseline(name, value), the cheapest "
                       "thing that could produce this number without the idea being taught, "
                       "measured in the same run (see webmm_lab.claims)")
    return head + (f"its baseline, {claim.baseline_text()}, also meets the target "
                   f"({claim.compare} {fmt(claim.target)}), so it does not discriminate: make "
                   "the method stronger or record it as an observation with the reason")


def format_table(claims: list[Claim]) -> str:
    """Claims as an aligned text table: measured, the baseline (its name and value), target,
    status. The notebook column appears when the claims come from several notebooks."""
    if not claims:
        return "(no claims recorded)"
    several = len({c.notebook for c in claims}) > 1
    head = ["notebook"] * several + ["kind", "name", "measured", "baseline", "target", "status",
                                     "profile"]
    rows = [[c.notebook] * several + [
        c.kind, c.name, fmt(c.measured), c.baseline_text(),
        f"{c.compare} {fmt(c.target)}" if c.target is not None else "-", c.status, c.where()]
        for c in claims]
    return "\n".join(text_table(head, rows))


def load_code(folder: Path, notebook: str) -> dict[str, str]:
    """The package modules ({module: digest}) a notebook's recorded claims were measured with."""
    path = Path(folder) / f"{notebook}.json"
    try:
        return json.loads(path.read_text()).get("code", {})
    except (OSError, json.JSONDecodeError):
        return {}


def load_results(folder: Path | None = None, notebooks: list[str] | None = None) -> list[Claim]:
    """All claims recorded under `folder` (default: the results folder), optionally filtered."""
    folder = Path(folder) if folder else results_dir()
    claims = []
    for path in sorted(folder.glob("*.json")):
        if notebooks is not None and path.stem not in notebooks:
            continue
        try:
            data = json.loads(path.read_text())
            claims += [Claim.from_dict(c) for c in data["claims"]]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a claims file ({e}); delete it") from None
    return claims

"""Claims: each notebook's headline result, measured, compared with its target and recorded.

    claims = Claims("00_setup_and_tour")
    claims.check("digit MLP test accuracy", measured=acc, target=0.90, compare=">=")
    claims.observe("gain from more data", measured=gain, note="within seed noise here")
    claims.show()

Records go to results/<notebook>.json. In the cpu and gpu profiles a failed claim raises
ClaimFailed with what was expected and measured; in smoke, and in a dry run
(`webmm-lab run --dry-run`), it is recorded and not enforced; so it is with WEBMM_CLAIMS=record
(set by `webmm-lab run --seeds`, which must measure every claim on every seed).

A claim must hold on every machine, and another machine is in effect another seed: the spread
of each claim over seeds and a one-thread run (`spread`) is stored in the package
(webmm_lab/spreads/<notebook>.json) and shown under the notebook's claims (`show_spread`).
A claim that honest work cannot reproduce at this scale is checked with
`reproducible=False, reason=...`: it is shown as "not reproduced" instead of stopping the run.

What cannot come out otherwise (a loss at initialisation, code lengths, a KV cache's output,
gathered gradients) is not a claim but an identity: a test in tests/, shown in the notebook
with `check_identity`, which stops the notebook in every profile if it ever fails.

Every profile refuses a claim or observation that is NaN or infinite, and in smoke `show()`
refuses a notebook that recorded fewer claims than its stored cpu spread (a claim skipped).
"""
from __future__ import annotations

import json
import math
import operator
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .paths import results_dir
from .profiles import active_profile, dry_run_steps
from .provenance import package_digests

COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
           "==": operator.eq}


class ClaimFailed(AssertionError):
    """A claim that did not hold in an enforcing profile (or a value that is not a number)."""


class IdentityFailed(AssertionError):
    """An identity that did not hold: a bug, whatever the profile."""


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
        print(f"[CHECK, dry run] {name}: {_fmt(measured)} (expected {compare} {_fmt(target)}; "
              "a dry run's truncated training is not checked)")
        return False
    if not ok:
        raise IdentityFailed(f"identity failed: {name}: expected {compare} {_fmt(target)}, measured "
                             f"{_fmt(measured)}. This holds by construction: the code is wrong "
                             "(the tests in tests/ check the same identity)")
    print(f"[CHECK] {name}: {_fmt(measured)} ({compare} {_fmt(target)} by construction: ok)")
    return True


@dataclass
class Claim:
    notebook: str
    name: str
    measured: float | None
    target: float | None
    compare: str
    kind: str      # "claim" or "observation"
    status: str    # "pass", "FAIL", "not reproduced", "observed"
    profile: str
    note: str = ""


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Claims:
    """The claims of one notebook, written to results/<notebook>.json as they are recorded."""

    def __init__(self, notebook: str, profile: str | None = None):
        self.notebook = notebook
        self.profile = profile or active_profile()
        record = os.environ.get("WEBMM_CLAIMS", "enforce") == "record"
        self.enforce = self.profile != "smoke" and dry_run_steps() is None and not record
        if dry_run_steps() is not None:
            self.profile += " (dry run)"      # recorded as such, never enforced
        elif record:
            self.profile += " (record)"       # measured for a spread: recorded, never enforced
        self.entries: dict[str, Claim] = {}
        self.path = results_dir() / f"{notebook}.json"

    def check(self, name: str, measured: float, target: float, compare: str = ">=", *,
              reproducible: bool = True, reason: str = "", note: str = "") -> Claim:
        """Record a claim `measured <compare> target`; raise ClaimFailed if it fails (not smoke).

        A claim compares the model with the strongest honest baseline a sceptic would name
        first (raw pixels for learned features, the unconditioned or wrong-label model for
        conditioning, a random sample for reranking, the one-stage method for a two-stage one),
        and that baseline must fail it: a claim is a result that could have come out otherwise.
        What holds by construction is an identity (`check_identity`, and a test); a timing is
        an observation. The target is set from a prototype's spread over seeds and never
        loosened to pass; `reproducible=False, reason=...` marks a claim that honest work
        cannot reproduce at this scale (shown as "not reproduced").
        """
        if compare not in COMPARE:
            raise ValueError(f"compare must be one of {list(COMPARE)}, got {compare!r}")
        measured = float(measured) if not isinstance(measured, bool) else measured
        ok = bool(COMPARE[compare](measured, target))
        status = "pass" if ok else ("not reproduced" if not reproducible else "FAIL")
        claim = self._record(Claim(self.notebook, name, measured, target, compare, "claim",
                                   status, self.profile, reason or note))
        if status == "FAIL" and self.enforce:
            raise ClaimFailed(
                f"claim failed in {self.notebook} ({self.profile} profile): {name}: expected "
                f"measured {compare} {_fmt(target)}, measured {_fmt(measured)}")
        return claim

    def observe(self, name: str, measured: float, target: float | None = None,
                compare: str = ">=", note: str = "") -> Claim:
        """Record an observation: shown beside the paper's figure, never enforced."""
        measured = float(measured)
        return self._record(Claim(self.notebook, name, measured, target, compare, "observation",
                                  "observed", self.profile, note))

    def _record(self, claim: Claim) -> Claim:
        self.entries[claim.name] = claim
        data = {"notebook": self.notebook, "profile": self.profile,
                "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
                "claims": [asdict(c) for c in self.entries.values()],
                "code": package_digests()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)
        mark = {"pass": "PASS", "FAIL": "FAIL", "not reproduced": "NOT REPRODUCED",
                "observed": "OBSERVED"}[claim.status]
        target = f" (target {claim.compare} {_fmt(claim.target)})" if claim.target is not None else ""
        print(f"[{mark}] {claim.name}: {_fmt(claim.measured)}{target}")
        if isinstance(claim.measured, float) and not math.isfinite(claim.measured):
            raise ClaimFailed(f"{claim.kind} {claim.name!r} in {self.notebook} measured "
                              f"{claim.measured}: a value that is not a finite number is a bug "
                              "(a diverged run or an empty set), in every profile")
        return claim

    def table(self) -> str:
        """This notebook's claims as a text table."""
        return format_table(list(self.entries.values()))

    def show(self) -> None:
        """Print this notebook's claims table. In smoke, first make sure no claim was skipped:
        as many claims and observations as the stored cpu spread has (ClaimFailed otherwise)."""
        if self.profile == "smoke":
            self.check_complete()
        print(self.table())

    def check_complete(self) -> None:
        """Raise ClaimFailed if fewer claims or observations were recorded than the stored
        spread (measured in the cpu profile) holds: a claim silently skipped in this profile."""
        stored = load_spread(self.notebook)
        if stored is None:
            return
        for kind in ("claim", "observation"):
            want = sum(c["kind"] == kind for c in stored["claims"])
            got = sum(c.kind == kind for c in self.entries.values())
            if got < want:
                raise ClaimFailed(
                    f"{self.notebook} recorded {got} {kind}s in the {self.profile} profile, but its "
                    f"stored spread ({stored['profile']} profile) has {want}: a {kind} was skipped "
                    f"here, or the spread is stale (re-measure it with `webmm-lab run "
                    f"{self.notebook[:2]} --profile cpu --seeds 0-4 --store`)")

    def show_spread(self) -> dict | None:
        """Print the stored spread of this notebook's claims over seeds and a one-thread run
        (measured by `webmm-lab run NN --profile cpu --seeds 0-4 --store`); returns it."""
        data = load_spread(self.notebook)
        if data is None:
            print(f"no spread stored for {self.notebook} yet: measure it with "
                  f"`webmm-lab run {self.notebook[:2]} --profile cpu --seeds 0-4 --store`")
            return None
        print(format_spread(data))
        return data


def format_table(claims: list[Claim]) -> str:
    """Claims as an aligned text table."""
    head = ["notebook", "kind", "name", "measured", "target", "status", "profile"]
    rows = [[c.notebook, c.kind, c.name, _fmt(c.measured),
             f"{c.compare} {_fmt(c.target)}" if c.target is not None else "-", c.status, c.profile]
            for c in claims]
    if not rows:
        return "(no claims recorded)"
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


SPREADS = Path(__file__).parent / "spreads"     # stored spreads, shipped with the package


def spread(notebook: str, profile: str, runs: dict[str, list[Claim]], seconds: dict[str, float],
           code: dict[str, str] | None = None, machine: dict | None = None,
           threads: dict[str, str] | None = None) -> dict:
    """Each claim's values over several runs (label -> that run's claims): min / median / max
    and how many runs it passed. A claim missing from a run (the run stopped early) counts as
    not passed there. Also kept: each run's seconds and threads, the package modules the
    notebook ran ({module: digest}, see `provenance`) and the machine."""
    names = list(dict.fromkeys(c.name for claims in runs.values() for c in claims))
    rows = []
    for name in names:
        found = {label: next((c for c in claims if c.name == name), None) for label, claims in runs.items()}
        first = next(c for c in found.values() if c is not None)
        values = {label: c.measured for label, c in found.items() if c is not None}
        numbers = [float(v) for v in values.values() if v is not None]
        rows.append({"name": name, "kind": first.kind, "compare": first.compare, "target": first.target,
                     "values": values,
                     "passed": sum(c is not None and c.status == "pass" for c in found.values()),
                     "min": min(numbers) if numbers else None, "max": max(numbers) if numbers else None,
                     "median": statistics.median(numbers) if numbers else None})
    return {"notebook": notebook, "profile": profile, "runs": list(runs), "seconds": seconds,
            "threads": threads or {}, "measured": time.strftime("%Y-%m-%d"),
            "machine": machine or {}, "code": code or {}, "claims": rows}


def load_spread(notebook: str) -> dict | None:
    """The stored spread of a notebook's claims (see `spread`), or None if none is stored."""
    path = SPREADS / f"{notebook}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def format_spread(data: dict) -> str:
    """A spread (see `spread`) as an aligned text table."""
    n = len(data["runs"])
    head = ["kind", "name", "min", "median", "max", "target", "passed"]
    rows = [[c["kind"], c["name"], _fmt(c["min"]), _fmt(c["median"]), _fmt(c["max"]),
             f"{c['compare']} {_fmt(c['target'])}" if c["target"] is not None else "-",
             f"{c['passed']}/{n}" if c["kind"] == "claim" else "-"] for c in data["claims"]]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    runs = ", ".join(data["runs"])
    where = data.get("machine") or {}
    where = (f"; {where['cpu']}, {where['cores']} cores, torch {where['torch']}"
             if where.get("cpu") else "")
    return "\n".join([f"spread of {data['notebook']} ({data['profile']} profile, measured "
                      f"{data['measured']}{where}) over {n} runs: {runs}",
                      line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


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
            claims += [Claim(**c) for c in data["claims"]]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a claims file ({e}); delete it") from None
    return claims

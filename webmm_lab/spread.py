"""The spread of a notebook's claims over seeds and a one-thread run (`webmm-lab run NN --seeds
0-4`): each claim's and its baseline's min / median / max and how many runs it passed, stored
per profile in the package (webmm_lab/spreads/<notebook>.json for cpu, <notebook>.gpu.json for
gpu) and shown under the notebook's claims. The rule a spread checks is webmm_lab.claims'.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

SPREADS = Path(__file__).parent / "spreads"     # stored spreads, shipped with the package


def fmt(v) -> str:
    """A value as the tables print it (4 significant digits)."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def text_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """Rows of cells as aligned text lines, under a head and a rule."""
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _summary(values: dict[str, float | None]) -> dict:
    numbers = [float(v) for v in values.values() if v is not None]
    return {"min": min(numbers) if numbers else None, "max": max(numbers) if numbers else None,
            "median": statistics.median(numbers) if numbers else None}


def spread(notebook: str, profile: str, runs: dict[str, list], seconds: dict[str, float],
           code: dict[str, str] | None = None, machine: dict | None = None,
           threads: dict[str, str] | None = None) -> dict:
    """Each claim's values over several runs (label -> that run's claims): min / median / max
    and how many runs it passed, and its baseline's values likewise, with the number of runs on
    which the baseline met the target. A claim missing from a run (the run stopped early) counts
    as not passed there. Also kept: each run's seconds and threads, the package modules the
    notebook ran ({module: digest}, see `provenance`) and the machine."""
    names = list(dict.fromkeys(c.name for claims in runs.values() for c in claims))
    rows = []
    for name in names:
        found = {label: next((c for c in claims if c.name == name), None) for label, claims in runs.items()}
        present = [c for c in found.values() if c is not None]
        first = present[0]
        values = {label: c.measured for label, c in found.items() if c is not None}
        row = {"name": name, "kind": first.kind, "compare": first.compare, "target": first.target,
               "values": values, "passed": sum(c is not None and c.status == "pass" for c in found.values()),
               **_summary(values), "reproducible": all(c.reproducible for c in present),
               "baseline": first.baseline, "baseline_relation": first.baseline_relation}
        if first.baseline:
            base = {label: c.baseline_value for label, c in found.items() if c is not None}
            row.update(baseline_values=base,
                       **{f"baseline_{k}": v for k, v in _summary(base).items()},
                       baseline_met=sum(bool(c.baseline_met) for c in present))
        rows.append(row)
    return {"notebook": notebook, "profile": profile, "runs": list(runs), "seconds": seconds,
            "threads": threads or {}, "measured": time.strftime("%Y-%m-%d"),
            "machine": machine or {}, "code": code or {}, "claims": rows}


def spread_path(notebook: str, profile: str = "cpu") -> Path:
    """Where a notebook's stored spread of one profile lives (cpu: <notebook>.json)."""
    return SPREADS / (f"{notebook}.json" if profile == "cpu" else f"{notebook}.{profile}.json")


def load_spread(notebook: str, profile: str = "cpu") -> dict | None:
    """The stored spread of a notebook's claims in a profile (see `spread`), or None."""
    path = spread_path(notebook, profile)
    return json.loads(path.read_text()) if path.is_file() else None


def spread_problems(data: dict) -> list[str]:
    """What a stored spread lacks or shows against its claims: a claim with no baseline
    recorded (stored before baselines were), one whose baseline met its target on some run, and
    one that failed a run without being marked not reproducible."""
    n, out = len(data["runs"]), []
    for c in data["claims"]:
        if c["kind"] != "claim":
            continue
        if not c.get("baseline"):
            out.append(f"{c['name']}: no baseline recorded")
        elif c.get("baseline_met"):
            out.append(f"{c['name']}: its baseline met the target on {c['baseline_met']}/{n} runs")
        elif c["passed"] < n and c.get("reproducible", True):
            out.append(f"{c['name']}: passed {c['passed']}/{n} runs")
    return out


def format_spread(data: dict) -> str:
    """A spread (see `spread`) as an aligned text table. A claim whose baseline met its target
    on any run is marked '!' (it does not discriminate there)."""
    n = len(data["runs"])
    head = ["kind", "name", "min", "median", "max", "baseline: min / median / max", "target", "passed"]
    rows, marked = [], False
    for c in data["claims"]:
        base = "-"
        if c.get("baseline"):
            tag = {"difference": " (subtracted)", "ratio": " (ratio)"}.get(c.get("baseline_relation"), "")
            base = (f"{c['baseline']}: {fmt(c['baseline_min'])} / {fmt(c['baseline_median'])} / "
                    f"{fmt(c['baseline_max'])}{tag}")
        passed = "-"
        if c["kind"] == "claim":
            passed = f"{c['passed']}/{n}" + ("" if c.get("reproducible", True) else " (not reproduced)")
            passed += " !" if c.get("baseline_met") else ""
            passed += " (no baseline)" if not c.get("baseline") else ""
            marked |= bool(c.get("baseline_met"))
        rows.append([c["kind"], c["name"], fmt(c["min"]), fmt(c["median"]), fmt(c["max"]), base,
                     f"{c['compare']} {fmt(c['target'])}" if c["target"] is not None else "-", passed])
    where = data.get("machine") or {}
    cpu = f"; {where['cpu']}" + (f" ({where['vector']})" if where.get("vector") else "") if where.get("cpu") else ""
    where = f"{cpu}, {where['cores']} cores, torch {where['torch']}" if cpu else ""
    lines = [f"spread of {data['notebook']} ({data['profile']} profile, measured {data['measured']}"
             f"{where}) over {n} runs: {', '.join(data['runs'])}"] + text_table(head, rows)
    if marked:
        lines.append("! its baseline met the target on some run: the claim does not discriminate there")
    return "\n".join(lines)

"""`webmm-lab run NN --report`: what a notebook costs, measured in one run.

    webmm-lab run 05 --profile gpu --report              # on a GPU: the measurement to keep
    webmm-lab run 05 --profile gpu --dry-run --report    # anywhere: sizes and FLOPs, 2 steps a loop

The notebook runs as usual, with one cell of the package's put first and one put last (neither
is stored). The first wraps the training loop: for every `train` call it records the run's name,
the steps asked for and done, the seconds, the batch size, and the floating-point operations of
one step (counted once, on the first step, with torch's `FlopCounterMode`). The last writes what
the kernel knows at the end: the device, its precision, the peak GPU memory. The report adds the
wall time of each section (the cells under each `## ` heading) and the notebook's claims, and
estimates the time of the training on a Colab T4 from the FLOPs: at 25 % of its 65 TFLOP/s of
fp16 tensor-core peak, a realistic share for small models. It goes to
`results/report/<notebook>.json` and is printed as a table.

A dry run at the gpu profile's sizes, stored (`--profile gpu --dry-run --report --store`),
keeps that estimate in the package (`spreads/<notebook>.gpu-estimate.json`) with a digest of
the notebook's code cells and of the package modules it ran: the README's gpu column shows it
until a spread measured on a GPU replaces it, a test keeps every notebook's estimate under the
T4 budget, and `webmm-lab results --stale` lists the estimates that predate a change.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import statistics
import time
from pathlib import Path

from ..spread import SPREADS, load_spread

T4_PEAK_FLOPS = 65e12            # fp16 tensor cores, NVIDIA's figure for the T4
T4_SHARE = 0.25                  # of the peak that small models reach: the estimate's assumption
T4_BUDGET_SECONDS = 600          # the gpu profile's budget per notebook (COURSE.md, Profiles)

FIRST_CELL = '''# webmm-lab --report: record every training loop (this cell is not part of the notebook)
import os as _os, sys as _sys, time as _time
import webmm_lab as _w
from torch.utils.flop_counter import FlopCounterMode as _Flops
_loops, _train_mod = [], _sys.modules["webmm_lab.train"]
_step, _train = _train_mod.train_step, _train_mod.train

def _counted_step(forward, model, loss_fn, batch, *args, **kw):
    rec = _loops[-1]
    if rec["flops_per_step"] is None:
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        rec["batch"] = int(len(first)) if hasattr(first, "__len__") else None
        with _Flops(display=False) as counter:
            loss = _step(forward, model, loss_fn, batch, *args, **kw)
        rec["flops_per_step"] = int(counter.get_total_flops())
        return loss
    return _step(forward, model, loss_fn, batch, *args, **kw)

def _recorded_train(model, loss_fn, batch_fn, *args, **kw):
    rec = {"run": kw.get("run"), "steps": kw.get("steps"), "flops_per_step": None, "batch": None}
    _loops.append(rec)
    t0 = _time.perf_counter()
    history = _train(model, loss_fn, batch_fn, *args, **kw)
    rec["seconds"] = round(_time.perf_counter() - t0, 2)
    rec["steps_done"] = len(history.steps) - history.resumed_from if history.steps else 0
    return history

_train_mod.train_step, _train_mod.train, _w.train = _counted_step, _recorded_train, _recorded_train
'''

LAST_CELL = '''# webmm-lab --report: what the kernel knows at the end (this cell is not part of the notebook)
import json as _json, torch as _torch
from webmm_lab.device import describe as _describe, pick_device as _pick
from webmm_lab.provenance import package_digests as _digests
_dev = _pick()
_end = {"loops": _loops, "device": _describe(_dev), "code": _digests(),
        "peak_gpu_memory_gib": round(_torch.cuda.max_memory_allocated() / 2**30, 2) if _dev.type == "cuda" else None}
with open(_os.environ["WEBMM_REPORT_FILE"], "w") as _f:
    _json.dump(_end, _f)
'''


def instrumented(nb):
    """A copy of notebook `nb` with the report's first and last cells added."""
    import copy
    import nbformat
    out = copy.deepcopy(nb)
    out.cells = [nbformat.v4.new_code_cell(FIRST_CELL)] + out.cells + [nbformat.v4.new_code_cell(LAST_CELL)]
    return out


def _seconds(cell) -> float:
    """A cell's execution time from the timestamps nbclient records, 0 if it has none."""
    times = cell.get("metadata", {}).get("execution", {})
    start, end = times.get("iopub.execute_input"), times.get("shell.execute_reply")
    if not start or not end:
        return 0.0
    parse = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return (parse(end) - parse(start)).total_seconds()


def section_times(nb) -> dict[str, float]:
    """Seconds spent in each section of an executed notebook: the cells under each `## `
    heading (what comes before the first heading counts as "setup")."""
    out, section = {}, "setup"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            heads = [line[3:].strip() for line in cell.source.splitlines() if line.startswith("## ")]
            section = heads[-1] if heads else section
        elif cell.cell_type == "code":
            out[section] = round(out.get(section, 0.0) + _seconds(cell), 2)
    return out


def t4_estimate(loops: list[dict]) -> tuple[float, float]:
    """(training FLOPs in all, the seconds they take on a T4 at T4_SHARE of its fp16 peak): each
    loop's counted FLOPs per step times the steps it asks for (a dry run's too)."""
    flops = sum((r.get("flops_per_step") or 0) * (r.get("steps") or 0) for r in loops)
    return float(flops), flops / (T4_PEAK_FLOPS * T4_SHARE)


def build_report(notebook: str, executed, end: dict, claims: list, seconds: float, profile: str) -> dict:
    """The report of one run: sections, loops (with samples per second), the estimate, claims."""
    for r in end.get("loops", []):
        done, secs = r.get("steps_done") or 0, r.get("seconds") or 0
        r["samples_per_second"] = round(done * (r.get("batch") or 0) / secs, 1) if secs and r.get("batch") else None
    flops, t4 = t4_estimate(end.get("loops", []))
    return {"notebook": notebook, "profile": profile, "seconds": round(seconds, 1),
            "sections": section_times(executed), "device": end.get("device", {}),
            "peak_gpu_memory_gib": end.get("peak_gpu_memory_gib"), "loops": end.get("loops", []),
            "training_flops": flops, "t4_estimate_seconds": round(t4, 1), "code": end.get("code", {}),
            "claims": [{"name": c.name, "kind": c.kind, "measured": c.measured, "target": c.target,
                        "compare": c.compare, "status": c.status, "baseline": c.baseline,
                        "baseline_value": c.baseline_value} for c in claims]}


def format_report(rep: dict) -> str:
    """A report as text: the sections, the training loops, the estimate, the device."""
    lines = [f"{rep['notebook']} ({rep['profile']} profile): {rep['seconds']:.0f} s, "
             f"{rep['device'].get('device', '?')}, {rep['device'].get('mixed precision', '?')}"
             + (f", peak GPU memory {rep['peak_gpu_memory_gib']} GiB" if rep.get("peak_gpu_memory_gib") else "")]
    lines += [f"  section {name}: {secs:.1f} s" for name, secs in rep["sections"].items()]
    for r in rep["loops"]:
        rate = f", {r['samples_per_second']} samples/s" if r.get("samples_per_second") else ""
        lines.append(f"  loop {r['run'] or '(unnamed)'}: {r.get('steps_done')}/{r['steps']} steps of "
                     f"{r.get('batch')}, {r.get('seconds')} s{rate}, {(r.get('flops_per_step') or 0):.3g} FLOPs/step")
    lines.append(f"  training FLOPs at the profile's steps: {rep['training_flops']:.3g}; on a T4 at "
                 f"{T4_SHARE:.0%} of its fp16 peak: about {rep['t4_estimate_seconds']:.0f} s "
                 f"(budget {T4_BUDGET_SECONDS} s)")
    return "\n".join(lines)


def write_report(rep: dict, folder: Path) -> Path:
    """Write a report as JSON to folder/<notebook>.json; returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{rep['notebook']}.json"
    path.write_text(json.dumps(rep, indent=1))
    return path


def report_notebooks(books: list[Path], profile: str, out: Path, cell_timeout: int, env: dict[str, str],
                     run_notebook, store: int | None = None) -> int:
    """Run each notebook with the report's cells (`run_notebook`: the command line's runner),
    write and print what it cost; 1 if a notebook failed. `store` (a dry run's steps per loop):
    also keep each notebook's T4 estimate in the package (`store_estimate`)."""
    import shutil
    import nbformat
    from ..claims import load_results
    folder, failed = out / "report", []
    for book in books:
        end_file = folder / f"{book.stem}.end.json"
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)     # every loop trains: none resumes
        folder.mkdir(parents=True, exist_ok=True)
        end_file.unlink(missing_ok=True)
        print(f"running {book.name} (profile {profile}) with the report's cells ...", flush=True)
        ok, seconds, error = run_notebook(book, profile, folder, cell_timeout, False,
                                          {**env, "WEBMM_REPORT_FILE": str(end_file.resolve())},
                                          transform=instrumented)
        end = json.loads(end_file.read_text()) if end_file.is_file() else {}
        executed = nbformat.read(folder / book.name, as_version=4)
        rep = build_report(book.stem, executed, end, load_results(folder, [book.stem]), seconds, profile)
        path = write_report(rep, folder)
        print(format_report(rep) + f"\n  -> {path}" + (f"\n  FAILED: {error}" if error else ""), flush=True)
        failed += [book.stem] if not ok else []
        if store is not None and ok:
            try:
                print(f"  stored {store_estimate(rep, book, store)}", flush=True)
            except ValueError as e:
                print(f"  not stored: {e}", flush=True)
                failed.append(book.stem)
    return 1 if failed else 0


def estimate_path(notebook: str) -> Path:
    """Where a notebook's stored gpu estimate lives (beside its spreads)."""
    return SPREADS / f"{notebook}.gpu-estimate.json"


def code_digest(nb) -> str:
    """The first 16 hex digits of a sha256 over a notebook's code cells (their sources, in
    order): what decides the sizes a dry run measures, and nothing that storing outputs changes."""
    text = "\n\0".join(c.source for c in nb.cells if c.cell_type == "code")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def store_estimate(rep: dict, book: Path, dry_run: int) -> Path:
    """Keep the T4 estimate of a gpu dry run's report `rep` of notebook `book` in the package.
    Refused (ValueError) for another profile or a loop whose FLOPs were not counted."""
    import nbformat
    from ..provenance import machine
    if rep["profile"] != "gpu":
        raise ValueError(f"the estimate is of the gpu profile's sizes, this report is of {rep['profile']!r}")
    uncounted = [r.get("run") or "(unnamed)" for r in rep["loops"] if not r.get("flops_per_step") or not r.get("steps")]
    if uncounted:
        raise ValueError(f"loops without counted FLOPs or steps: {', '.join(uncounted)}; an estimate "
                         "would leave them out")
    data = {"notebook": rep["notebook"], "profile": "gpu", "measured": time.strftime("%Y-%m-%d"),
            "notebook_code": code_digest(nbformat.read(book, as_version=4)),
            "training_flops": rep["training_flops"], "t4_estimate_seconds": rep["t4_estimate_seconds"],
            "t4_assumption": f"{T4_SHARE:.0%} of {T4_PEAK_FLOPS / 1e12:.0f} TFLOP/s (fp16 peak)",
            "dry_run": {"steps_per_loop": dry_run, "seconds": rep["seconds"], "sections": rep["sections"],
                        "machine": machine()},
            "loops": [{k: r.get(k) for k in ("run", "steps", "batch", "flops_per_step")} for r in rep["loops"]],
            "code": rep.get("code", {})}
    path = estimate_path(rep["notebook"])
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def load_estimate(notebook: str) -> dict | None:
    """A notebook's stored gpu estimate (see `store_estimate`), or None."""
    path = estimate_path(notebook)
    return json.loads(path.read_text()) if path.is_file() else None


def estimate_problems(book: Path) -> list[str]:
    """Why notebook `book`'s stored gpu estimate cannot be trusted: missing, made from other
    code cells than today's, its total not the sum of its loops, or over the T4 budget."""
    import nbformat
    data = load_estimate(book.stem)
    if data is None:
        return [f"no gpu estimate: run `webmm-lab run {book.stem[:2]} --profile gpu --dry-run --report --store`"]
    out = []
    if data["notebook_code"] != code_digest(nbformat.read(book, as_version=4)):
        out.append("the notebook's code cells changed since the estimate (re-estimate it)")
    flops, seconds = t4_estimate(data["loops"])
    if abs(flops - data["training_flops"]) > 1e-6 * max(flops, 1) or not data["loops"]:
        out.append("its loops do not add up to its training FLOPs")
    if seconds > T4_BUDGET_SECONDS:
        out.append(f"training alone takes about {seconds:.0f} s on a T4, over the {T4_BUDGET_SECONDS} s budget")
    return out


def times_table(books: list[Path], smoke: dict[str, str] | None = None) -> str:
    """A Markdown table of each notebook's measured seconds in the cpu profile, from its stored
    spread: the fastest of its runs on all threads (a busy machine only slows a run down, so the
    fastest is the best estimate of an idle one) with their median, its one-thread run, (if
    given) its smoke run, and the gpu profile on a Colab T4: measured where a gpu spread is
    stored, else estimated from the stored dry run (`gpu_cell`)."""
    smoke = smoke or {}
    head = ("| notebook | cpu, all threads: fastest of the seeds (median) | cpu, 1 thread | smoke "
            "| gpu, Colab T4 |\n|---|---|---|---|---|")
    rows = []
    fmt = lambda v: f"{v:.0f} s" if v is not None else "-"
    for book in books:
        data = load_spread(book.stem) or {}
        secs, threads = data.get("seconds", {}), data.get("threads", {})
        multi = sorted(v for k, v in secs.items() if threads.get(k, "1" if "1 thread" in k else "all") != "1")
        one = [v for k, v in secs.items() if threads.get(k, "1" if "1 thread" in k else "all") == "1"]
        cores = (data.get("machine") or {}).get("cores")
        where = f", {cores} cores" if cores else ""
        fast = f"{fmt(multi[0])} ({fmt(statistics.median(multi))}{where})" if multi else "-"
        rows.append(f"| {book.stem} | {fast} | {fmt(one[0] if one else None)} | {smoke.get(book.stem, '-')} "
                    f"| {gpu_cell(book.stem)} |")
    return "\n".join([head] + rows)


def gpu_cell(notebook: str) -> str:
    """The README's gpu entry for a notebook: the fastest run of a stored gpu spread
    ('measured'), else its stored estimate: training from its FLOPs on a T4 plus the rest of the
    notebook as a dry run took on 2 CPU cores (a GPU does that part faster), else '-'."""
    gpu, est = load_spread(notebook, "gpu"), load_estimate(notebook)
    if gpu and gpu.get("seconds"):
        return f"{min(gpu['seconds'].values()):.0f} s, measured"
    if est:
        train, rest = est["t4_estimate_seconds"], est["dry_run"]["seconds"]
        return f"≈ {train + rest:.0f} s, estimated ({train:.0f} s training + {rest:.0f} s the rest)"
    return "-"

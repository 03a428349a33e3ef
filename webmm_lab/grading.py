"""Grading a class's labs: `webmm-lab grade SUBMISSIONS [--lab NN] [--out grades.csv]`.

Each submitted lab notebook runs headless in a fresh kernel (smoke profile, a time limit for the
whole notebook); every check it prints (`PASS name: ...` / `FAIL name: ...`, see
`webmm_lab.checks`) is collected, and the checks the lab's solution prints but the submission
does not are MISSING. One row per student and check goes to a CSV file; a summary per student is
printed. A notebook that does not parse, raises, runs past its time limit or kills its kernel is
graded as such and never stops the run.

SUBMISSIONS is a folder of notebooks, one per student (`alice.ipynb`), or of folders, one per
student (`alice/lab03_image_gpt.ipynb`), or one notebook. The lab of a notebook is `--lab`, else
the `labs build` mark in its metadata, else `labNN` in its file name.

A submission is code, and grading runs it on the grader's machine with the grader's rights:
run it in a container or a throw-away machine. Its printed PASS lines are trusted as printed.
"""
from __future__ import annotations

import csv
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHECK_LINE = re.compile(r"^(PASS|FAIL) (.+?): (.*)$")
LAB_NAME = re.compile(r"lab(\d\d)")


@dataclass
class Graded:
    """One notebook's grade: its checks {name: (PASS | FAIL | MISSING, message)} and how the
    run went ('ok', 'raised ...', 'timed out after N s', 'kernel died', 'unreadable: ...')."""
    student: str
    lab: str
    checks: dict[str, tuple[str, str]] = field(default_factory=dict)
    state: str = "ok"
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(result == "PASS" for result, _ in self.checks.values())


def need_jupyter() -> None:
    """Exit with what to install when nbclient or nbformat is missing (the core install, as on
    Colab, leaves them out: Colab runs notebooks itself)."""
    import importlib.util
    missing = [m for m in ("nbclient", "nbformat") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"webmm-lab: running notebooks needs {', '.join(missing)}: "
                         "pip install 'webmm-lab[jupyter]' (or '.[dev]' in a checkout)")


def lab_of(path: Path, nb=None) -> str | None:
    """'03' for a lab 03 notebook: from the mark `webmm-lab labs build` leaves, else the name."""
    mark = ((nb or {}).get("metadata", {}).get("webmm_lab", {}) or {}).get("generated_from", "")
    m = LAB_NAME.search(Path(mark).name) or LAB_NAME.search(path.name)
    return m.group(1) if m else None


def printed_checks(nb) -> dict[str, tuple[str, str]]:
    """Every `PASS name: message` / `FAIL name: message` line in a run notebook's outputs (the
    last of each name wins, as a student re-runs a cell)."""
    found = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out.get("output_type") == "stream" else ""
            for line in text.splitlines():
                if m := CHECK_LINE.match(line.strip()):
                    found[m.group(2)] = (m.group(1), m.group(3))
    return found


def run_lab(path: Path, limit: float = 300.0) -> tuple[object | None, str, float]:
    """Execute a notebook in a fresh kernel, smoke profile, at most `limit` seconds in all.
    Returns (the executed notebook or None, state, seconds); never raises (but exits with what
    to install when nbclient is missing)."""
    need_jupyter()
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    t0 = time.perf_counter()
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:                    # not JSON, not a notebook, unreadable file
        return None, f"unreadable: {type(e).__name__}: {str(e)[:100]}", 0.0
    results = tempfile.mkdtemp(prefix="webmm-grade-")
    env = {**os.environ, "WEBMM_PROFILE": "smoke", "WEBMM_RESULTS": results, "MPLBACKEND": "Agg"}
    client = NotebookClient(nb, timeout=limit, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    state = "ok"
    try:
        client.reset_execution_trackers()
        with client.setup_kernel(env=env):
            for i, cell in enumerate(nb.cells):
                left = limit - (time.perf_counter() - t0)
                if left <= 0:
                    raise CellTimeoutError(f"time limit reached before cell {i}")
                client.timeout = max(1, int(left))
                client.execute_cell(cell, i, execution_count=client.code_cells_executed + 1)
    except CellTimeoutError:
        state = f"timed out after {limit:.0f} s"
    except DeadKernelError:
        state = "kernel died"
    except Exception as e:                    # a kernel that never started, a malformed cell
        state = f"could not run: {type(e).__name__}: {str(e)[:100]}"
    if state == "ok":
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            state = f"raised {errors[0].get('ename', 'an error')} ({len(errors)} cell(s) with errors)"
    return nb, state, time.perf_counter() - t0


def find_submissions(root: Path) -> list[tuple[str, Path]]:
    """(student, notebook) pairs under `root` (see the module's docstring)."""
    root = Path(root)
    if root.is_file():
        return [(root.stem, root)]
    if not root.is_dir():
        raise FileNotFoundError(f"no submissions at {root}: give a folder of notebooks or one notebook")
    out = []
    for path in sorted(root.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        rel = path.relative_to(root)
        out.append((rel.parts[0] if len(rel.parts) > 1 else path.stem, path))
    return out


def expected_checks(lab: str, solutions: Path, limit: float = 600.0) -> list[str]:
    """The names of the checks lab `lab`'s solution prints (run once, smoke profile)."""
    found = sorted(solutions.glob(f"lab{lab}_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no solution for lab {lab} in {solutions}")
    nb, state, _ = run_lab(found[0], limit)
    names = list(printed_checks(nb)) if nb is not None else []
    if state != "ok" or not names:
        raise RuntimeError(f"the solution of lab {lab} did not run cleanly ({state}); fix it first")
    return names


def grade(submissions: Path, solutions: Path, lab: str | None = None, limit: float = 300.0,
          progress: bool = True) -> list[Graded]:
    """Grade every submission (see the module's docstring); one Graded per notebook."""
    import nbformat
    expected: dict[str, list[str]] = {}
    graded = []
    for student, path in find_submissions(submissions):
        try:
            which = lab or lab_of(path, nbformat.read(path, as_version=4))
        except Exception:
            which = lab or lab_of(path)
        if which is None:
            graded.append(Graded(student, "?", state="unknown lab: name it labNN_... or pass --lab"))
            continue
        if which not in expected:
            expected[which] = expected_checks(which, solutions)
        if progress:
            print(f"grading {student} (lab {which}) ...", flush=True)
        nb, state, seconds = run_lab(path, limit)
        found = printed_checks(nb) if nb is not None else {}
        checks = {name: found.get(name, ("MISSING", "the check did not run or was removed"))
                  for name in expected[which]}
        checks.update({n: v for n, v in found.items() if n not in checks})
        graded.append(Graded(student, which, checks, state, round(seconds, 1)))
    return graded


def write_csv(graded: list[Graded], path: Path) -> None:
    """One row per student and check: student, lab, check, result, message, notebook state."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "lab", "check", "result", "message", "notebook"])
        for g in graded:
            for name, (result, message) in g.checks.items():
                w.writerow([g.student, g.lab, name, result, message, g.state])
            if not g.checks:
                w.writerow([g.student, g.lab, "", "", "", g.state])


def summary(graded: list[Graded]) -> str:
    """A text table: student, lab, checks passed of expected, seconds, how the run went."""
    head = ["student", "lab", "passed", "seconds", "notebook"]
    rows = [[g.student, g.lab, f"{g.passed}/{len(g.checks)}", f"{g.seconds:.0f}", g.state] for g in graded]
    if not rows:
        return "(no submissions found)"
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])

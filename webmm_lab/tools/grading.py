"""Grading a class's labs: `webmm-lab grade SUBMISSIONS [--lab NN] [--out grades.csv]`.

Each submitted lab notebook runs headless in a box of its own (gradebox.py): a temporary folder
holding a copy of the notebook with its outputs cleared, a read-only copy of this package, and a
fresh working directory that is also HOME; a minimal environment (smoke profile); a time limit
for the whole notebook and one per cell; capped output; every process it starts ended with it;
the folder removed afterwards. On Linux with Landlock the kernel may write only inside its
working directory and read only the system, Python and its box (see the README, "Grading a
class", for what that protects and what it does not). `--isolate container` runs each box in a
Docker or Podman container without network instead.

A check counts only if the course's own checking code printed it during this run: each run has
a random key, which the checks take before any cell of the student's runs, and every check line
carries its seal (seal.py). Lines without a valid seal are FORGED, checks the lab's solution
prints but the run did not are MISSING, sealed checks the lab does not have are UNKNOWN; none of
them count. One row per student and check goes to a CSV file; a summary per student is printed.
A notebook that does not parse, raises, runs past its time limit, floods its output or kills its
kernel is graded as such and never stops the run.

SUBMISSIONS is a folder of notebooks, one per student (`alice.ipynb`), or of folders, one per
student (`alice/lab03_image_gpt.ipynb`), or one notebook. The lab of a notebook is `--lab`, else
the `labs build` mark in its metadata, else `labNN` in its file name.
"""
from __future__ import annotations

import csv
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import gradebox
from ..seal import CHECK_LINE, KEY_FILE, unseal

LAB_NAME = re.compile(r"lab(\d\d)")
IMAGE = "webmm-lab-grade"        # the container image `--isolate container` uses by default
FIRST_CELL = ("# added by webmm-lab grade: the checks take this run's key before any other cell\n"
              "import webmm_lab.checks, webmm_lab.seal\n"
              "assert webmm_lab.seal.grading(), 'the grading key did not reach the checks'")
GRACE = 120.0                    # seconds past the time limit before the grader kills a box


@dataclass
class Graded:
    """One notebook's grade: its checks {name: (PASS | FAIL | MISSING | FORGED | UNKNOWN,
    message)}, how the run went ('ok', 'raised ...', 'timed out ...', 'kernel died',
    'unreadable: ...', 'stopped: output over ...') and how many checks the lab has."""
    student: str
    lab: str
    checks: dict[str, tuple[str, str]] = field(default_factory=dict)
    state: str = "ok"
    seconds: float = 0.0
    total: int = 0

    @property
    def passed(self) -> int:
        return sum(result == "PASS" for result, _ in self.checks.values())


@dataclass
class Run:
    """One notebook's run in its box: the executed notebook (None if it never ran), how it went,
    its seconds, and the key its check lines were sealed with."""
    nb: object | None
    state: str
    seconds: float
    key: bytes


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


def printed_lines(nb) -> list[str]:
    """Every line a run notebook's cells printed or displayed as text, in order (each cell's
    stream text is joined first, so a line sent in two pieces is read whole)."""
    lines = []
    for cell in nb.cells:
        streams: dict[str, str] = {}
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                streams[out.get("name", "stdout")] = streams.get(out.get("name", "stdout"), "") + out.get("text", "")
            elif out.get("output_type") in ("execute_result", "display_data"):
                lines += str(out.get("data", {}).get("text/plain", "")).splitlines()
        lines += [line for text in streams.values() for line in text.splitlines()]
    return lines


def read_checks(nb, key: bytes) -> tuple[dict[str, tuple[int, str, str]], dict[str, int]]:
    """The check lines of a run: ({name: (number, PASS | FAIL, message)} of the lines sealed
    under `key`, the latest of each name; {name: count} of the check-shaped lines that are not)."""
    sealed: dict[str, tuple[int, str, str]] = {}
    forged: dict[str, int] = {}
    for line in printed_lines(nb):
        if not (shaped := CHECK_LINE.match(line.strip())):
            continue
        if (got := unseal(line, key)) is None:
            forged[shaped.group(2)] = forged.get(shaped.group(2), 0) + 1
            continue
        result, name, message, number = got
        if name not in sealed or number > sealed[name][0]:
            sealed[name] = (number, result, message)
    return sealed, forged


def score(sealed: dict[str, tuple[int, str, str]], forged: dict[str, int],
          expected: list[str]) -> dict[str, tuple[str, str]]:
    """{check: (result, message)}: each expected check as its latest sealed line said, else
    FORGED (only unsealed lines carried its name) or MISSING; then the names the lab does not
    have, UNKNOWN if sealed and FORGED if not. Only an expected check's PASS counts."""
    checks = {}
    for name in expected:
        if name in sealed:
            _, result, message = sealed[name]
            note = f" (and {forged[name]} unsealed line(s) with this name)" if name in forged else ""
            checks[name] = (result, message + note)
        elif name in forged:
            checks[name] = ("FORGED", f"{forged[name]} line(s) shaped like this check that no check "
                            "printed in this run (typed, copied or stored); the check itself never ran")
        else:
            checks[name] = ("MISSING", "the check did not run or was removed")
    for name in sealed.keys() - set(expected):
        checks[name] = ("UNKNOWN", "printed by the course's checking code, but not a check of this lab")
    for name in forged.keys() - set(expected) - sealed.keys():
        checks[name] = ("FORGED", f"{forged[name]} line(s) shaped like a check that this lab does "
                        "not have, and that no check printed")
    return checks


def prepared(nb):
    """A copy of a notebook to run: every output and execution count cleared (nothing stored
    counts), and the grader's first cell (the checks take the run's key) before all others."""
    import nbformat
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    first = nbformat.v4.new_code_cell(FIRST_CELL)
    if nb.nbformat_minor < 5:                 # cell ids came with nbformat 4.5
        first.pop("id", None)
    nb.cells.insert(0, first)
    return nb


def kernel_env(box: Path) -> dict[str, str]:
    """All the environment a grading kernel gets (PATH is added inside the box)."""
    work = box / "work"
    return {"HOME": str(work), "TMPDIR": str(work / "tmp"), "LANG": os.environ.get("LANG") or "C.UTF-8",
            "WEBMM_PROFILE": "smoke", "WEBMM_RESULTS": str(work / "results"), "MPLBACKEND": "Agg",
            "PYTHONPATH": str(box / "pkg"), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
            KEY_FILE: str(box / "key")}


def helper_env(box: Path, container: bool = False) -> dict[str, str]:
    """The environment of the box's helper (gradebox.py run): no variable of the grader's."""
    env = {"HOME": str(box), "LANG": os.environ.get("LANG") or "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
           "JUPYTER_RUNTIME_DIR": str(box / "runtime"), "JUPYTER_CONFIG_DIR": str(box / "jupyter"),
           "JUPYTER_DATA_DIR": str(box / "jupyter"), "JUPYTER_PLATFORM_DIRS": "1"}
    if not container:
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])
    return env


def _read_only(folder: Path) -> None:
    for root, dirs, files in os.walk(folder):
        for name in files:
            os.chmod(os.path.join(root, name), 0o444)
        os.chmod(root, 0o555)


def make_box(nb, key: bytes, limit: float, cell_limit: float, confine: str) -> Path:
    """A temporary folder for one run: work/ (the notebook, prepared; the working directory and
    HOME), pkg/webmm_lab (a read-only copy of this package), key (this run's key, for the
    checks to take), run.json (limits, environment, whether the kernel must be confined)."""
    import nbformat
    box = Path(tempfile.mkdtemp(prefix="webmm-grade-"))
    for sub in ("work", "work/tmp", "runtime"):
        (box / sub).mkdir()
    shutil.copytree(Path(__file__).resolve().parents[1], box / "pkg" / "webmm_lab",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    _read_only(box / "pkg")
    (box / "key").write_text(key.hex())
    (box / "key").chmod(0o600)
    nbformat.write(prepared(nb), box / "work" / "submission.ipynb")
    spec = {"box": str(box), "limit": limit, "cell_limit": cell_limit, "confine": confine,
            "env": kernel_env(box)}
    (box / "run.json").write_text(json.dumps(spec))
    return box


def remove_box(box: Path) -> None:
    """Delete a box, whatever modes its run left on the folders in it (links are never followed)."""
    for root, dirs, _ in os.walk(box):
        for name in dirs:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), 0o700)
    shutil.rmtree(box, ignore_errors=True)


def container_engine(image: str = IMAGE) -> str:
    """The docker or podman executable whose engine answers and has `image`; else exit with
    what is wrong and what to do."""
    problems = []
    for name in ("docker", "podman"):
        if (exe := shutil.which(name)) is None:
            continue
        try:
            info = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            problems.append(f"`{name} info` did not answer in 30 s")
            continue
        if info.returncode != 0:
            why = (info.stderr.strip().splitlines() or ["no reason given"])[-1][:200]
            problems.append(f"{name} is installed but no engine answers ({why})")
        elif subprocess.run([exe, "image", "inspect", image], capture_output=True).returncode != 0:
            problems.append(f"{name} has no image {image!r}: build it as the README says")
        else:
            return exe
    raise SystemExit("webmm-lab grade --isolate container: "
                     + ("; ".join(problems) or "neither docker nor podman is on PATH")
                     + ". Start the Docker or Podman engine, or grade with --isolate process "
                     "(README, 'Grading a class', says what each protects).")


def container_command(engine: str, image: str, box: Path, name: str) -> list[str]:
    """`docker run` (or podman) for one box: no network, no capabilities, read-only system,
    the box mounted at the same path, the grader's user, memory and process caps."""
    env = [f"--env={k}={v}" for k, v in helper_env(box, container=True).items()]
    return [engine, "run", "--rm", "--name", name, "--network", "none", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--read-only", "--tmpfs", "/tmp",
            "--memory", "4g", "--pids-limit", "512", "--user", f"{os.getuid()}:{os.getgid()}",
            "--volume", f"{box}:{box}", "--workdir", str(box), *env, image,
            "python", "-I", str(box / "pkg" / "webmm_lab" / "tools" / "gradebox.py"), "run", str(box)]


def _wait(box: Path, limit: float, isolate: str, engine: str | None, image: str) -> str | None:
    """Run the box's helper, locally or in a container; None when it finished in time."""
    name = f"webmm-grade-{secrets.token_hex(6)}"
    if isolate == "container":
        cmd, env = container_command(engine or container_engine(image), image, box, name), None
    else:
        cmd = [sys.executable, "-I", str(box / "pkg" / "webmm_lab" / "tools" / "gradebox.py"), "run", str(box)]
        env = helper_env(box)
    with open(box / "helper.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=box, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
        try:
            proc.wait(timeout=limit + GRACE)
            return None
        except subprocess.TimeoutExpired:
            _stop(proc, cmd[0] if isolate == "container" else None, name)
            return f"the box did not finish within {limit + GRACE:.0f} s and was killed"
        except BaseException:                 # Ctrl-C: leave nothing of the box running
            _stop(proc, cmd[0] if isolate == "container" else None, name)
            raise


def _stop(proc: subprocess.Popen, engine: str | None, name: str) -> None:
    """End a box's helper: SIGTERM first (it then ends every process the kernel left), SIGKILL
    to its group after 10 s; a container is killed through its engine."""
    if engine is not None:
        subprocess.run([engine, "kill", name], capture_output=True)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _tail(path: Path, size: int = 300) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace").strip().replace("\n", " | ")
    except OSError:
        return ""


def run_boxed(path: Path, limit: float = 300.0, cell_limit: float | None = None,
              isolate: str = "process", image: str = IMAGE, engine: str | None = None) -> Run:
    """Run one notebook in a box of its own (see the module's docstring) and remove the box.
    Never raises for anything the notebook does (but exits with what to install when nbclient
    is missing, or what is wrong when a container was asked for and none can run)."""
    need_jupyter()
    import nbformat
    key = secrets.token_bytes(32)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:                    # not JSON, not a notebook, unreadable file
        return Run(None, f"unreadable: {type(e).__name__}: {str(e)[:100]}", 0.0, key)
    confine = "may" if isolate == "container" else "must" if gradebox.landlock_abi() else "no"
    box = make_box(nb, key, limit, cell_limit or limit, confine)
    try:
        t0 = time.perf_counter()
        killed = _wait(box, limit, isolate, engine, image)
        try:
            result = json.loads((box / "result.json").read_text())
            ran = nbformat.read(box / "result.ipynb", as_version=4)
        except Exception:
            why = killed or f"the box's helper failed: {_tail(box / 'helper.log')}"
            return Run(None, why, time.perf_counter() - t0, key)
        state = result["state"]
        if result.get("processes_ended"):
            state += f"; ended {result['processes_ended']} process(es) it left behind"
        if state.startswith(("could not run", "kernel died", "the course's checks")):
            state += f" (kernel log: {_tail(box / 'kernel.log')})" if _tail(box / "kernel.log") else ""
        return Run(ran, state, float(result["seconds"]), key)
    finally:
        remove_box(box)


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


def expected_checks(lab: str, solutions: Path, limit: float = 600.0, **box) -> list[str]:
    """The names of the checks lab `lab`'s solution prints, sealed (run once in a box, smoke
    profile; `box` as for run_boxed)."""
    found = sorted(solutions.glob(f"lab{lab}_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no solution for lab {lab} in {solutions}")
    run = run_boxed(found[0], limit, **box)
    sealed = read_checks(run.nb, run.key)[0] if run.nb is not None else {}
    if run.state != "ok" or not sealed:
        raise RuntimeError(f"the solution of lab {lab} did not run cleanly ({run.state}); fix it first")
    return sorted(sealed, key=lambda name: sealed[name][0])


def isolation_note(isolate: str) -> str:
    """One line saying how submissions are kept apart on this machine (see the README)."""
    if isolate == "container":
        return "isolation: each submission in a container of its own, without network"
    if gradebox.landlock_abi():
        return ("isolation: each submission in a temporary copy; Landlock: it writes only there and "
                "reads only the system, Python and its copy; no TCP; its processes end with it")
    return ("WARNING: Landlock is not available here: each submission runs in a temporary copy, "
            "but it can read and change every file you can. Grade with --isolate container, "
            "or on a throw-away machine (README, 'Grading a class').")


def grade(submissions: Path, solutions: Path, lab: str | None = None, limit: float = 300.0,
          progress: bool = True, *, cell_limit: float | None = None, isolate: str = "process",
          image: str = IMAGE) -> list[Graded]:
    """Grade every submission (see the module's docstring); one Graded per notebook. `limit`
    is seconds per notebook, `cell_limit` seconds per cell (default: `limit`); `isolate` is
    'process' or 'container' (a Docker or Podman `image` with the course installed)."""
    import nbformat
    if isolate not in ("process", "container"):
        raise ValueError(f"isolate must be 'process' or 'container', not {isolate!r}")
    engine = container_engine(image) if isolate == "container" else None
    box = dict(isolate=isolate, image=image, engine=engine)
    note = isolation_note(isolate)
    if progress or note.startswith("WARNING"):
        print(note, file=sys.stdout if progress else sys.stderr, flush=True)
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
            expected[which] = expected_checks(which, solutions, max(limit, 600.0), **box)
        if progress:
            print(f"grading {student} (lab {which}) ...", flush=True)
        run = run_boxed(path, limit, cell_limit, **box)
        sealed, forged = read_checks(run.nb, run.key) if run.nb is not None else ({}, {})
        graded.append(Graded(student, which, score(sealed, forged, expected[which]), run.state,
                             round(run.seconds, 1), len(expected[which])))
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
    """A text table: student, lab, checks passed of the lab's checks, seconds, how the run went."""
    head = ["student", "lab", "passed", "seconds", "notebook"]
    rows = [[g.student, g.lab, f"{g.passed}/{g.total}", f"{g.seconds:.0f}", g.state] for g in graded]
    if not rows:
        return "(no submissions found)"
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])

"""`webmm-lab grade`: solutions get every check, untouched student labs none, and hostile
submissions (stored or printed PASS lines, unknown checks, a loop, processes left behind, files
outside the box, an output flood) are graded as what they are and change nothing outside their box."""
import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nbformat
import pytest

from webmm_lab import seal
from webmm_lab.cli import main
from webmm_lab.tools import gradebox, grading
from webmm_lab.tools.grading import container_command, container_engine, lab_of, read_checks, run_boxed, score

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "labs" / "solutions" / "lab00_softmax_cross_entropy.ipynb"
LANDLOCK = gradebox.landlock_abi() > 0
PASS_LINE = "PASS softmax: matches the reference on 5 random inputs (values and gradients)"
SOFTMAX = "def softmax(x):\n    return torch.softmax(x, dim=-1)\n"


def notebook(*sources: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])


def stream(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def marked(marker: str) -> list[int]:
    """The processes whose command line holds `marker`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else []):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


def tree(folder: Path) -> dict[str, tuple]:
    """Every file and folder under `folder`: its content's hash, mode and modification time."""
    out = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(folder))] = (digest, st.st_mode, st.st_mtime_ns)
    return out


def hostile_class(subs: Path, marker: str) -> None:
    """Handmade lab 00 submissions, one per way of cheating or breaking things."""
    stored = notebook("", "while True:\n    pass", "")
    stored.cells[0].outputs = [stream(f"{PASS_LINE}\nPASS cross_entropy: ok\n")]
    stored.cells[2].outputs = [stream(seal.seal(PASS_LINE) + "\n")]
    fake = f"{PASS_LINE} [sealed 1 {uuid.uuid4().hex * 2}]"
    other_run = f"PASS cross_entropy: ok [sealed 2 {seal.digest(os.urandom(32), 2, 'PASS cross_entropy: ok')}]"
    forger = notebook("import torch\nfrom webmm_lab.checks import check_function",
                      f"print({PASS_LINE!r})\nprint({fake!r})\nprint({other_run!r})\nprint('PASS attention: ok')",
                      "check_function(lambda x: x, lambda x: x, lambda g: (torch.randn(3, generator=g),), name='bonus')")
    partial = notebook("import torch\nfrom webmm_lab.checks.lab00 import check_cross_entropy, check_softmax",
                       SOFTMAX + "check_softmax(softmax);",
                       "def cross_entropy(logits, targets):\n"
                       "    return -torch.log_softmax(logits, -1).gather(1, targets[:, None]).sum()\n"
                       "check_cross_entropy(cross_entropy);")
    deleted = notebook("import torch", SOFTMAX)
    forks = notebook("import os, subprocess, sys\n"
                     f"sleep = [sys.executable, '-c', 'import time; time.sleep(600)', {marker!r}]\n"
                     "subprocess.Popen(sleep)\n"
                     "subprocess.Popen(sleep, start_new_session=True)\n"
                     "if os.fork() == 0:\n"
                     "    os.setsid()\n"
                     "    if os.fork() == 0:\n"
                     "        os.execv(sys.executable, sleep)\n"
                     "    os._exit(0)")
    flood = notebook("for _ in range(50_000):\n    print('x' * 1000)")
    for name, nb in [("di", stored), ("gus", forger), ("fay", partial), ("ed", deleted), ("hal", forks),
                     ("jon", flood)]:
        (subs / name).mkdir()
        nbformat.write(nb, subs / name / "lab00.ipynb")


def vandal(subs: Path, marker: str) -> None:
    """A submission that tries to delete, edit and create files outside its box."""
    folder = subs.parent
    src = f"""import os, pathlib, shutil
import webmm_lab.checks
folder, here = pathlib.Path({str(folder)!r}), pathlib.Path(webmm_lab.checks.__file__).parent
def attempt(f):
    try:
        f()
    except Exception as e:
        print("refused:", type(e).__name__)
attempt(lambda: os.remove(folder / "canary.txt"))
attempt(lambda: (folder / "notes.txt").write_text("edited"))
attempt(lambda: (folder / "new.txt").write_text("new"))
attempt(lambda: os.chmod(folder / "notes.txt", 0))
attempt(lambda: os.utime(folder / "notes.txt", (0, 0)))
attempt(lambda: shutil.rmtree(folder / "subs" / "ada"))
attempt(lambda: (pathlib.Path({str(ROOT / "webmm_lab" / "checks")!r}) / "_hostile_{marker}.py").write_text("x"))
attempt(lambda: os.chmod(here, 0o755))
attempt(lambda: (here / "lab00.py").write_text("def check_softmax(f): print('PASS softmax: ok')"))
attempt(lambda: pathlib.Path("../../escaped.txt").write_text("x"))
"""
    (subs / "ivy").mkdir()
    nbformat.write(notebook(src), subs / "ivy" / "lab00.ipynb")


@pytest.mark.slow
def test_a_class_with_hostile_submissions_is_graded_as_it_is(tmp_path, monkeypatch, capsys):
    folder, boxes, marker = tmp_path / "class", tmp_path / "boxes", f"webmm-test-{uuid.uuid4().hex}"
    subs = folder / "subs"
    for student in ("ada", "bo", "cy"):
        (subs / student).mkdir(parents=True)
    shutil.copy(SOLUTION, subs / "ada" / "lab00.ipynb")
    shutil.copy(ROOT / "labs" / "lab00_softmax_cross_entropy.ipynb", subs / "bo" / "lab00.ipynb")
    (subs / "cy" / "lab00.ipynb").write_text("{ this is not a notebook")
    hostile_class(subs, marker)
    if LANDLOCK:
        vandal(subs, marker)
    (folder / "canary.txt").write_text("keep me")
    (folder / "notes.txt").write_text("notes")
    boxes.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(boxes))
    before = tree(folder)
    monkeypatch.chdir(ROOT)
    out = tmp_path / "grades.csv"
    try:
        assert main(["grade", str(subs), "--out", str(out), "--time-limit", "120", "--cell-limit", "15"]) == 0
        assert not marked(marker), "a process the submission started outlived its kernel"
    finally:
        for pid in marked(marker):
            os.kill(pid, signal.SIGKILL)
        (ROOT / "webmm_lab" / "checks" / f"_hostile_{marker}.py").unlink(missing_ok=True)
    assert tree(folder) == before and not list(boxes.iterdir())
    assert not (ROOT / "webmm_lab" / "checks" / f"_hostile_{marker}.py").exists()
    by = {}
    for r in csv.DictReader(out.open()):
        by.setdefault(r["student"], {})[r["check"]] = r
    expected = set(by["ada"])
    assert expected == {"softmax", "cross_entropy"} and all(r["result"] == "PASS" for r in by["ada"].values())
    assert set(by["bo"]) == expected and all("not implemented" in r["message"] for r in by["bo"].values())
    assert all(r["result"] == "FAIL" for r in by["bo"].values())
    assert all(r["result"] == "MISSING" for r in by["cy"].values()) and by["cy"]["softmax"]["notebook"].startswith("unreadable")
    assert [r["result"] for r in by["di"].values()] == ["MISSING", "MISSING"] and "timed out" in by["di"]["softmax"]["notebook"]
    assert {c: r["result"] for c, r in by["gus"].items()} == {"softmax": "FORGED", "cross_entropy": "FORGED",
                                                              "attention": "FORGED", "bonus": "UNKNOWN"}
    assert by["fay"]["softmax"]["result"] == "PASS" and by["fay"]["cross_entropy"]["result"] == "FAIL"
    assert all(r["result"] == "MISSING" for r in by["ed"].values())
    assert all(r["result"] == "MISSING" for r in by["hal"].values()) and by["hal"]["softmax"]["notebook"].startswith("ok; ended")
    assert by["jon"]["softmax"]["notebook"] == "stopped: text output over 1 MB in all"
    text = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[2] for line in text.splitlines() if line.split()[:1] and line.split()[0] in by}
    assert rows["ada"] == "2/2" and rows["fay"] == "1/2" and rows["gus"] == "0/2" and rows["di"] == "0/2"
    assert "timed out" in text and "isolation:" in text


def test_a_run_never_shows_the_notebook_its_key_or_the_graders_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBMM_TEST_GRADER_SECRET", "do-not-leak")
    (tmp_path / "classmate.ipynb").write_text("a classmate's answers")
    probe = f"""import os, pathlib
def show(what, f):
    try:
        print(what, repr(f()))
    except Exception as e:
        print(what, "refused", type(e).__name__)
show("environ", lambda: dict(os.environ))
show("proc", lambda: pathlib.Path("/proc/self/environ").read_bytes())
show("here", lambda: sorted(str(p) for p in pathlib.Path.home().rglob("*")))
show("key", lambda: pathlib.Path("../key").read_text())
show("classmate", lambda: pathlib.Path({str(tmp_path / "classmate.ipynb")!r}).read_text())
"""
    big_html = "from IPython.display import HTML, display\ndisplay(HTML('<b>' + 'z' * 3_000_000 + '</b>'))"
    nb = notebook(probe, "print('y' * 300_000)\n" + big_html, "while True:\n    pass", "print('never runs')")
    nbformat.write(nb, tmp_path / "probe.ipynb")
    run = run_boxed(tmp_path / "probe.ipynb", limit=60, cell_limit=3)
    assert run.state == "timed out: cell 3 ran past 3 s"
    text = "\n".join(o.get("text", "") for c in run.nb.cells for o in c.get("outputs", []))
    assert run.key.hex() not in text and "do-not-leak" not in text
    environ = next(line for line in text.splitlines() if line.startswith("environ"))
    assert seal.KEY_FILE not in environ and "'WEBMM_PROFILE': 'smoke'" in environ
    assert "key refused FileNotFoundError" in text and "never runs" not in text
    assert len(nbformat.writes(run.nb)) < 120_000         # text cut at 100 kB a cell, the HTML dropped
    if LANDLOCK:
        assert "classmate refused PermissionError" in text


@pytest.mark.slow
def test_a_box_stopped_from_outside_leaves_no_process():
    """Ctrl-C, or a box past its grace time: its helper gets SIGTERM and ends what the kernel left."""
    marker = f"webmm-test-{uuid.uuid4().hex}"
    escape = (f"import os, subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', "
              f"{marker!r}], start_new_session=True)\nwhile True:\n    pass")
    box = grading.make_box(notebook(escape), os.urandom(32), limit=60, cell_limit=60, confine="no")
    helper = subprocess.Popen([sys.executable, "-I", str(box / "pkg" / "webmm_lab" / "tools" / "gradebox.py"), "run", str(box)],
                              env=grading.helper_env(box), cwd=box, start_new_session=True)
    try:
        deadline = time.monotonic() + 40
        while not marked(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marked(marker), "the notebook never started its process"
        grading._stop(helper, None, "unused")
        assert not marked(marker)
    finally:
        for pid in marked(marker):
            os.kill(pid, signal.SIGKILL)
        if helper.poll() is None:
            os.killpg(helper.pid, signal.SIGKILL)
        grading.remove_box(box)


def test_sealed_lines_count_and_nothing_else_does(tmp_path, monkeypatch):
    key, other = os.urandom(32), os.urandom(32)
    line = lambda k, n, text: f"{text} [sealed {n} {seal.digest(k, n, text)}]"
    nb = notebook("", "")
    nb.cells[0].outputs = [stream(line(key, 1, "FAIL softmax: wrong")[:30]), stream(line(key, 1, "FAIL softmax: wrong")[30:] + "\n"),
                           stream(line(key, 3, "PASS softmax: right") + "\n" + line(key, 2, "FAIL softmax: old") + "\n")]
    nb.cells[1].outputs = [stream(line(other, 1, "PASS encode: ok") + "\n" + line(key, 4, "PASS encode: ok").replace("ok", "OK") + "\n"
                                  + line(key, 5, "PASS bonus: yes") + "\nFAIL decode: typed by hand\n")]
    sealed, forged = read_checks(nb, key)
    assert sealed == {"softmax": (3, "PASS", "right"), "bonus": (5, "PASS", "yes")} and forged == {"encode": 2, "decode": 1}
    assert score(sealed, forged, ["softmax", "encode", "merge"]) == {
        "softmax": ("PASS", "right"),
        "encode": ("FORGED", "2 line(s) shaped like this check that no check printed in this run (typed, "
                   "copied or stored); the check itself never ran"),
        "merge": ("MISSING", "the check did not run or was removed"),
        "bonus": ("UNKNOWN", "printed by the course's checking code, but not a check of this lab"),
        "decode": ("FORGED", "1 line(s) shaped like a check that this lab does not have, and that no check printed")}
    keyfile = tmp_path / "key"
    keyfile.write_text(key.hex())
    monkeypatch.setenv(seal.KEY_FILE, str(keyfile))
    assert seal.take_key() == key and not keyfile.exists() and seal.KEY_FILE not in os.environ
    assert seal.take_key() is None and seal.seal("PASS x: y") == "PASS x: y"     # not grading here


def test_container_isolation_says_what_is_missing(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(SystemExit, match="neither docker nor podman is on PATH.*--isolate process"):
        container_engine()
    docker = bin_dir / "docker"
    docker.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2\nexit 1\n")
    docker.chmod(0o755)
    with pytest.raises(SystemExit, match="docker is installed but no engine answers .Cannot connect to the Docker daemon"):
        main(["grade", str(SOLUTION), "--isolate", "container"])
    monkeypatch.setenv("WEBMM_TEST_GRADER_SECRET", "do-not-leak")
    cmd = container_command("docker", "webmm-lab-grade", tmp_path / "box", "webmm-grade-1")
    assert cmd[:2] == ["docker", "run"] and "--rm" in cmd and cmd[cmd.index("--network") + 1] == "none"
    assert cmd[cmd.index("--cap-drop") + 1] == "ALL" and not any("do-not-leak" in c for c in cmd)


def test_lab_of():
    student = nbformat.read(ROOT / "labs" / "lab03_image_gpt.ipynb", as_version=4)
    assert lab_of(Path("whatever.ipynb"), student) == "03"
    assert lab_of(Path("kim_lab07.ipynb")) == "07" and lab_of(Path("kim.ipynb")) is None

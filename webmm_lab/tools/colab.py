"""Colab: the course's GitHub repository, read from one place (pyproject.toml's Homepage), the
install cell that every notebook and lab opens with, and results kept on Google Drive.

Every notebook's Colab badge and install cell, and the README's badges, name that repository.
`webmm-lab colab --repo OWNER/NAME [--ref TAG]` rewrites all of them (and the Homepage) for a
fork, so an instructor's copy opens its own notebooks in Colab and installs its own package,
pinned to a tag or commit with --ref; it also writes every install cell from `install_code`
(so they stay identical) and gives every notebook Colab's GPU runtime (`GPU_METADATA`).
The install cell runs before the package is installed, so it is plain Python, not an import.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

HOMEPAGE = re.compile(r'(Homepage\s*=\s*"https://github\.com/)([\w.-]+/[\w.-]+)(")')
# a repository as GitHub links name it, and as Colab's links do (colab.research.google.com/github/...)
LINK = re.compile(r"(github\.com/|colab\.research\.google\.com/github/)([\w.-]+/[\w.-]+?)(?=\.git\b|[/\"\\)\s@]|$)")
BADGE_REF = re.compile(r"(colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/)([\w.-]+)(/)")
# what a person may type for --repo: OWNER/NAME, OWNER/NAME.git or the GitHub URL
REPO_INPUT = re.compile(r"(?:https?://(?:www\.)?github\.com/)?(?P<owner>[A-Za-z0-9][A-Za-z0-9-]*)/"
                        r"(?P<name>[\w.-]+?)(?:\.git)?/?")
REF = re.compile(r"[\w][\w.-]*")
GPU_METADATA = {"accelerator": "GPU", "colab": {"gpuType": "T4"}}   # what Colab saves for a T4 runtime
INSTALL_MARK = 'find_spec("webmm_lab")'                             # how an install cell is found


def repository(root: Path) -> str:
    """OWNER/NAME of the course's repository, from pyproject.toml's [project.urls] Homepage."""
    m = HOMEPAGE.search((Path(root) / "pyproject.toml").read_text())
    if m is None:
        raise ValueError(f"{root}/pyproject.toml has no Homepage = \"https://github.com/OWNER/NAME\" "
                         "under [project.urls]")
    return m.group(2)


def parse_repo(text: str) -> str:
    """OWNER/NAME from OWNER/NAME, OWNER/NAME.git or https://github.com/OWNER/NAME (with or
    without .git or a trailing slash); a ValueError that says what to give for anything else."""
    m = REPO_INPUT.fullmatch(text.strip())
    if m is None or m["name"] in (".", ".."):
        raise ValueError(f"--repo takes OWNER/NAME or https://github.com/OWNER/NAME (with or without "
                         f".git), got {text!r}")
    return f"{m['owner']}/{m['name']}"


def check_ref(ref: str | None) -> str | None:
    """`ref` (a tag, branch or commit without '/'), or a ValueError; None stays None."""
    if ref is not None and (not REF.fullmatch(ref) or ".." in ref):
        raise ValueError(f"--ref takes a tag or commit (letters, digits, '.', '_', '-'), got {ref!r}")
    return ref


def install_code(repo: str, ref: str | None = None) -> str:
    """The install block that opens every notebook's and lab's first code cell: pip installs the
    package from GitHub (at `ref` if given) where it is missing; git never asks for a password,
    and a failed install stops with pip's last words and what to do."""
    source = f"webmm-lab @ git+https://github.com/{repo}" + (f"@{ref}" if ref else "")
    return f'''import importlib.util, os, subprocess, sys   # Colab: install the course package (Colab's torch is kept)
if importlib.util.find_spec("webmm_lab") is None:   # results on Google Drive: see notebook 00
    _src = "{source}"
    _pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", _src], capture_output=True, text=True,
                          env={{**os.environ, "GIT_TERMINAL_PROMPT": "0"}})   # git fails rather than ask for a password
    if _pip.returncode:
        raise SystemExit(f"pip could not install {{_src}}:\\n{{(_pip.stdout + _pip.stderr).strip()[-1500:]}}\\n\\n"
                         "If that repository is private, renamed or unreachable: in a clone of your fork run "
                         "`webmm-lab colab --repo OWNER/NAME`, push, and open the fork's notebooks; or upload "
                         "the course folder here and run `!pip install -e FOLDER`.")'''


def course_files(root: Path) -> list[Path]:
    """The files that name the repository: README, notebooks, labs and their solutions."""
    root = Path(root)
    return ([root / "README.md"] + sorted((root / "notebooks").glob("*.ipynb"))
            + sorted((root / "labs").glob("*.ipynb")) + sorted((root / "labs" / "solutions").glob("*.ipynb")))


def references(root: Path) -> dict[Path, set[str]]:
    """{file: the OWNER/NAME repositories its GitHub links name}."""
    return {path: {m.group(2) for m in LINK.finditer(path.read_text())} for path in course_files(root)}


def install_cell(nb: dict) -> dict | None:
    """The notebook's (JSON) first code cell that installs the package, or None."""
    return next((c for c in nb["cells"] if c["cell_type"] == "code" and INSTALL_MARK in "".join(c["source"])),
                None)


def install_block(cell: dict) -> str:
    """The install code of an install cell: its lines up to the first blank one."""
    return "".join(cell["source"]).split("\n\n", 1)[0]


def prepare_notebook(text: str, repo: str, ref: str | None) -> str:
    """A notebook's JSON text with its install block written by `install_code(repo, ref)` and
    Colab's GPU runtime in its metadata; everything else as it was, byte for byte."""
    nb = json.loads(text)
    cell = install_cell(nb)
    if cell is not None:
        rest = "".join(cell["source"])[len(install_block(cell)):]
        cell["source"] = (install_code(repo, ref) + rest).splitlines(keepends=True)
    nb["metadata"] = dict(sorted({**nb["metadata"], **GPU_METADATA}.items()))
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def set_repository(root: Path, new: str, ref: str | None = None) -> list[Path]:
    """Point every badge, install cell and the Homepage at `new` (OWNER/NAME), badges at `ref`'s
    files and install cells at `ref` (None: the default branch, badges at main); every notebook
    also gets Colab's GPU runtime. Returns the files changed."""
    new, ref = parse_repo(new), check_ref(ref)
    root = Path(root)
    old = repository(root)
    changed = []
    for path in [root / "pyproject.toml"] + course_files(root):
        text = path.read_text()
        updated = LINK.sub(lambda m: m.group(1) + (new if m.group(2) == old else m.group(2)), text)
        updated = BADGE_REF.sub(lambda m: m.group(1) + (ref or "main") + m.group(3), updated)
        if path.suffix == ".ipynb":
            updated = prepare_notebook(updated, new, ref)
        if updated != text:
            path.write_text(updated)
            changed.append(path)
    return changed


def results_on_drive(keep: bool = True, folder: str = "webmm-lab/results",
                     mount_point: str = "/content/drive") -> Path | None:
    """On Colab with `keep`: mount Google Drive (Colab asks for access) and send results/ there
    (checkpoints, claims: WEBMM_RESULTS = MyDrive/`folder`), so that a training cell run again on
    a new machine resumes. Elsewhere, or without `keep`, it changes nothing and says so. Returns
    the folder results now go to on Drive, or None."""
    from ..paths import results_dir
    try:
        from google.colab import drive
    except ImportError:
        print(f"not on Colab: nothing to do here; results go to {results_dir()}")
        return None
    if not keep:
        print(f"results go to {results_dir()}, lost when Colab recycles this machine; "
              "results_on_drive(True) keeps them on Google Drive")
        return None
    drive.mount(mount_point)
    target = Path(mount_point) / "MyDrive" / folder
    target.mkdir(parents=True, exist_ok=True)
    os.environ["WEBMM_RESULTS"] = str(target)
    print(f"results go to {target} on Google Drive: training resumes there on a new machine")
    return target

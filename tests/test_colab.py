"""Every Colab badge and install cell names the repository of pyproject.toml's Homepage,
`webmm-lab colab --repo` moves all of them to a fork (and --ref pins them), every install cell is
the one `install_code` and explains a failed install, every notebook asks Colab for a GPU, and
`results_on_drive` keeps results on Google Drive only where Colab is."""
import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from webmm_lab.cli import main
from webmm_lab.tools.colab import (course_files, install_block, install_cell, install_code, parse_repo, references,
                             repository, results_on_drive)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [p for p in course_files(ROOT) if p.suffix == ".ipynb"]


def test_every_badge_and_install_cell_names_the_one_repository():
    repo = repository(ROOT)
    found = references(ROOT)
    assert all(names == {repo} for names in found.values()), {p.name: n for p, n in found.items() if n != {repo}}
    for path in [p for p in found if p.suffix == ".ipynb"]:
        text = path.read_text()
        assert f"colab.research.google.com/github/{repo}/blob/main/" in text, path.name   # its badge
        if "find_spec(\\\"webmm_lab\\\")" in text:
            assert f"git+https://github.com/{repo}" in text, path.name                      # its install cell


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_opens_with_the_one_install_cell_and_asks_colab_for_a_gpu(path):
    nb = json.loads(path.read_text())
    cell = install_cell(nb)
    assert cell is not None and cell is next(c for c in nb["cells"] if c["cell_type"] == "code"), path.name
    assert install_block(cell) == install_code(repository(ROOT)), "run `webmm-lab colab` to rewrite it"
    assert nb["metadata"]["accelerator"] == "GPU" and nb["metadata"]["colab"]["gpuType"] == "T4"


def run_install_cell(code: str, monkeypatch) -> str:
    """Run an install cell's code as if the package were missing; what it stops with."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "webmm_lab" else find_spec(name, *a, **k))
    with pytest.raises(SystemExit) as stop:
        exec(code, {})
    return str(stop.value)


def test_a_failed_install_says_what_happened_and_what_to_do(tmp_path, monkeypatch):
    """pip (a fake one here) fails as it does on a private repository: git may not prompt."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "Collecting $5"\nif [ "$GIT_TERMINAL_PROMPT" = 0 ]; then\n'
                    '  echo "fatal: could not read Username for \'https://github.com\': terminal prompts disabled" >&2\n'
                    'else\n  echo "Username for \'https://github.com\': " >&2\nfi\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    message = run_install_cell(install_code("prof-kim/private", "v1"), monkeypatch)
    assert "pip could not install webmm-lab @ git+https://github.com/prof-kim/private@v1" in message
    assert "terminal prompts disabled" in message                      # what happened, in git's words
    assert "webmm-lab colab --repo OWNER/NAME" in message and "pip install -e" in message   # what to do


def test_a_real_pip_failing_on_an_unreachable_repository_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")                              # no network, ever
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    url = f"git+file://{tmp_path}/missing"
    code = install_code("me/fork").replace("git+https://github.com/me/fork", url)
    message = run_install_cell(code, monkeypatch)
    assert f"pip could not install webmm-lab @ {url}" in message and "missing" in message.split(":", 1)[1]
    assert "webmm-lab colab --repo OWNER/NAME" in message


def test_the_install_cell_does_nothing_where_the_package_is_installed(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")      # would fail if it ran pip
    exec(install_code("me/fork"), {})


@pytest.mark.parametrize("text", ["me/fork", "me/fork.git", "https://github.com/me/fork",
                                  "https://github.com/me/fork.git", "https://github.com/me/fork/",
                                  "https://github.com/me/fork.git/", " me/fork "])
def test_repo_accepts_owner_name_a_github_url_or_git(text):
    assert parse_repo(text) == "me/fork"


@pytest.mark.parametrize("text", ["not a repo", "me", "https://gitlab.com/me/fork", "me/fork/tree/main",
                                  "git@github.com:me/fork.git", "me/.."])
def test_repo_refuses_anything_else_with_what_to_give(text):
    with pytest.raises(ValueError, match="OWNER/NAME or https://github.com/OWNER/NAME"):
        parse_repo(text)


def copy_course(tmp_path: Path) -> Path:
    course = tmp_path / "course"
    for part in ("notebooks", "labs"):
        shutil.copytree(ROOT / part, course / part)
    for name in ("README.md", "pyproject.toml"):
        shutil.copy(ROOT / name, course / name)
    return course


def test_colab_command_moves_every_link_to_a_fork(tmp_path, monkeypatch):
    course = copy_course(tmp_path)
    monkeypatch.chdir(course)
    old = repository(course)
    assert main(["colab", "--repo", "https://github.com/prof-kim/webmm-lab-2027.git"]) == 0
    assert repository(course) == "prof-kim/webmm-lab-2027"
    assert all(names == {"prof-kim/webmm-lab-2027"} for names in references(course).values())
    assert old not in (course / "notebooks" / "03_image_gpt.ipynb").read_text()
    from webmm_lab.tools.labs import build
    assert build(course / "labs", check=True) == []            # student labs still match their solutions
    with pytest.raises(SystemExit, match="webmm-lab colab: --repo takes OWNER/NAME"):
        main(["colab", "--repo", "not a repo"])
    with pytest.raises(SystemExit, match="--ref takes a tag or commit"):
        main(["colab", "--ref", "a/b"])


def test_colab_ref_pins_every_install_cell_and_badge(tmp_path, monkeypatch):
    course = copy_course(tmp_path)
    monkeypatch.chdir(course)
    repo = repository(course)
    assert main(["colab", "--ref", "v2027.1"]) == 0               # the same repository, pinned
    for path in course_files(course):
        text = path.read_text()
        assert "/blob/main/" not in text and f"colab.research.google.com/github/{repo}/blob/v2027.1/" in text
        if path.suffix == ".ipynb":
            assert install_block(install_cell(json.loads(text))) == install_code(repo, "v2027.1")
    from webmm_lab.tools.labs import build
    assert build(course / "labs", check=True) == []
    assert main(["colab"]) == 0                                    # back to the default branch
    assert all(p.read_text() == (ROOT / p.relative_to(course)).read_text() for p in course_files(course))


def test_results_go_to_google_drive_only_on_colab_and_when_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WEBMM_RESULTS", str(tmp_path / "local"))
    monkeypatch.setitem(sys.modules, "google.colab", None)              # not on Colab: the import fails
    assert results_on_drive(keep=True) is None
    assert "not on Colab: nothing to do" in capsys.readouterr().out
    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert results_on_drive(keep=False, mount_point=str(tmp_path / "drive")) is None
    assert mounted == [] and "results_on_drive(True) keeps them" in capsys.readouterr().out
    target = results_on_drive(keep=True, mount_point=str(tmp_path / "drive"))
    assert mounted == [str(tmp_path / "drive")] and target == tmp_path / "drive" / "MyDrive" / "webmm-lab" / "results"
    from webmm_lab.paths import results_dir
    assert target.is_dir() and results_dir() == target

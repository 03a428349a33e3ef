from pathlib import Path

import nbformat
import pytest

from webmm_lab.cli import main, resolve_notebooks


def make_course(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    books = tmp_path / "notebooks"
    books.mkdir()
    code = ("import os\nfrom webmm_lab import Claims\n"
            "Claims('00_tiny').check('profile is smoke', os.environ['WEBMM_PROFILE'] == 'smoke', True, '==')")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), books / "00_tiny.ipynb")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1/0")]), books / "01_broken.ipynb")
    return tmp_path


def test_names_resolve_to_notebooks(tmp_path):
    books = make_course(tmp_path) / "notebooks"
    assert [p.stem for p in resolve_notebooks(["0"], books)] == ["00_tiny"]
    assert [p.stem for p in resolve_notebooks(["broken", "00_tiny"], books)] == ["01_broken", "00_tiny"]
    assert len(resolve_notebooks(["all"], books)) == 2
    with pytest.raises(SystemExit, match="matches 0 notebooks; known: 00_tiny, 01_broken"):
        resolve_notebooks(["07"], books)


def test_run_executes_in_a_fresh_kernel_and_prints_the_claims(tmp_path, monkeypatch, capsys):
    root = make_course(tmp_path)
    monkeypatch.chdir(root)
    monkeypatch.delenv("WEBMM_RESULTS")
    assert main(["run", "00", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "profile is smoke" in out and "pass" in out
    assert (root / "results" / "00_tiny.ipynb").exists() and (root / "results" / "00_tiny.json").exists()
    assert main(["run", "01", "--profile", "smoke"]) == 1
    assert "ZeroDivisionError" in capsys.readouterr().out

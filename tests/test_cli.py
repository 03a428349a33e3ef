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


def test_the_gpu_profile_dry_run_of_notebook_00(tmp_path, monkeypatch, capsys):
    """Every cell of notebook 00 at the gpu profile's sizes, 2 training steps per call."""
    monkeypatch.setenv("WEBMM_RESULTS", str(tmp_path))
    monkeypatch.setenv("WEBMM_OFFLINE", "1")
    assert main(["run", "00", "--profile", "gpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "gpu (dry run)" in out and "WEBMM_DRY_RUN=2" in out
    assert (tmp_path / "dry-run" / "00_setup_and_tour.ipynb").exists()
    with pytest.raises(SystemExit):
        main(["run", "00", "--profile", "gpu", "--dry-run", "--store"])


def test_seeds_run_each_seed_and_one_thread_and_report_the_spread(tmp_path, monkeypatch, capsys):
    from webmm_lab.cli import parse_seeds
    assert parse_seeds("0-2,5") == [0, 1, 2, 5]
    with pytest.raises(SystemExit):
        parse_seeds("a-b")
    root = tmp_path / "course"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname='x'\n")
    (root / "notebooks").mkdir()
    code = ("import os\nfrom webmm_lab import Claims, notebook_seed\n"
            "c = Claims('00_seeded')\n"
            "c.check('seed below 2', notebook_seed(), 2, '<')\n"
            "c.observe('threads', int(os.environ.get('OMP_NUM_THREADS', '0')))")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]),
                   root / "notebooks" / "00_seeded.ipynb")
    monkeypatch.chdir(root)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("WEBMM_RESULTS", str(tmp_path / "results"))
    assert main(["run", "00", "--profile", "cpu", "--seeds", "0-2"]) == 1   # seed 2 fails, and runs on
    out = capsys.readouterr().out
    assert "seed below 2" in out and "3/4" in out and "seed 0, 1 thread" in out
    data = __import__("json").loads((tmp_path / "results" / "00_seeded.spread.json").read_text())
    claim, threads = data["claims"]
    assert claim["values"] == {"seed 0": 0, "seed 1": 1, "seed 2": 2, "seed 0, 1 thread": 0}
    assert threads["values"]["seed 0, 1 thread"] == 1

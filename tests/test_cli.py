from pathlib import Path

import nbformat
import pytest

from webmm_lab.cli import main, resolve_notebooks


def make_course(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    books = tmp_path / "notebooks"
    books.mkdir()
    code = ("import os\nfrom webmm_lab import Baseline, Claims\n"
            "Claims('00_tiny').check('profile is smoke', os.environ['WEBMM_PROFILE'] == 'smoke', True, '==',\n"
            "                        baseline=Baseline('a profile named at random', 0.0))")
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
            "from webmm_lab.claims import Baseline\n"
            "c = Claims('00_seeded')\n"
            "c.check('seed below 2', notebook_seed(), 2, '<', baseline=Baseline('seed 2', 2))\n"
            "c.observe('threads', int(os.environ.get('OMP_NUM_THREADS', '0')))")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]),
                   root / "notebooks" / "00_seeded.ipynb")
    monkeypatch.chdir(root)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("WEBMM_RESULTS", str(tmp_path / "results"))
    assert main(["run", "00", "--profile", "cpu", "--seeds", "0-2"]) == 1   # seed 2 fails, and runs on
    out = capsys.readouterr().out
    assert "seed below 2" in out and "3/4" in out and "seed 0, 1 thread" in out
    assert "00_seeded: seed below 2: passed 3/4 runs" in out
    data = __import__("json").loads((tmp_path / "results" / "00_seeded.spread.json").read_text())
    claim, threads = data["claims"]
    assert claim["values"] == {"seed 0": 0, "seed 1": 1, "seed 2": 2, "seed 0, 1 thread": 0}
    assert threads["values"]["seed 0, 1 thread"] == 1


@pytest.mark.slow
def test_store_refuses_smoke_and_record_mode(tmp_path, monkeypatch):
    root = make_course(tmp_path)
    monkeypatch.chdir(root)
    with pytest.raises(SystemExit):
        main(["run", "00", "--profile", "smoke", "--store"])
    monkeypatch.setenv("WEBMM_CLAIMS", "record")
    with pytest.raises(SystemExit):
        main(["run", "00", "--profile", "cpu", "--store"])


@pytest.mark.slow
def test_every_seed_run_starts_from_an_empty_results_folder(tmp_path, monkeypatch, capsys):
    root = tmp_path / "course"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname='x'\n")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1/0")]),
                   root / "notebooks" / "00_dies.ipynb")
    monkeypatch.chdir(root)
    results = tmp_path / "results"
    monkeypatch.setenv("WEBMM_RESULTS", str(results))
    old = results / "seeds" / "00_dies" / "seed-0"               # an earlier run's passed claim
    old.mkdir(parents=True)
    (old / "00_dies.json").write_text('{"notebook": "00_dies", "claims": [{"notebook": "00_dies", '
        '"name": "x", "measured": 1.0, "target": 0.5, "compare": ">=", "kind": "claim", '
        '"status": "pass", "profile": "cpu"}]}')
    assert main(["run", "00", "--profile", "cpu", "--seeds", "0", "--no-one-thread"]) == 0
    data = __import__("json").loads((results / "00_dies.spread.json").read_text())
    assert data["claims"] == []                                   # the stale claim is gone
    assert not (old / "00_dies.json").exists()


@pytest.mark.slow
def test_a_cell_past_its_time_limit_or_a_dead_kernel_is_reported_not_raised(tmp_path):
    from webmm_lab.cli import run_notebook
    books = tmp_path / "nb"
    books.mkdir()
    for name, code in [("00_slow", "import time\ntime.sleep(30)"), ("01_dies", "import os\nos._exit(3)")]:
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                                       nbformat.v4.new_code_cell(code)]),
                       books / f"{name}.ipynb")
    ok, _, error = run_notebook(books / "00_slow.ipynb", "smoke", tmp_path / "out", cell_timeout=2)
    assert not ok and "Timeout" in error
    assert (tmp_path / "out" / "00_slow.ipynb").exists()          # the executed copy is written
    ok, _, error = run_notebook(books / "01_dies.ipynb", "smoke", tmp_path / "out", cell_timeout=20)
    assert not ok and "Dead" in error
    assert (tmp_path / "out" / "01_dies.ipynb").exists()


def test_results_stale_lists_notebooks_stored_before_a_package_change(tmp_path, monkeypatch, capsys):
    from webmm_lab.provenance import file_digest, module_file
    root = make_course(tmp_path)
    monkeypatch.chdir(root)
    monkeypatch.setattr("webmm_lab.cli.load_spread", lambda name, profile="cpu": None)
    books = root / "notebooks"
    now = {"webmm_lab.claims": file_digest(module_file("webmm_lab.claims"))}
    for name, code in [("00_tiny", now), ("01_broken", {"webmm_lab.claims": "0" * 16})]:
        nb = nbformat.read(books / f"{name}.ipynb", as_version=4)
        nb.metadata["webmm_lab"] = {"code": code}
        nbformat.write(nb, books / f"{name}.ipynb")
    assert main(["results", "--stale"]) == 1
    out = capsys.readouterr().out
    assert "01_broken: stored outputs stale: webmm_lab.claims" in out
    assert "00_tiny: stored outputs" not in out
    assert "00_tiny: stored spread stale: no record" in out


@pytest.mark.slow
def test_store_records_the_code_a_notebook_ran(tmp_path, monkeypatch):
    root = make_course(tmp_path)
    monkeypatch.chdir(root)
    code = ("from webmm_lab import Baseline, Claims\n"
            "Claims('00_tiny').check('one', 1.0, 0.5, baseline=Baseline('zero', 0.0))")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]),
                   root / "notebooks" / "00_tiny.ipynb")
    assert main(["run", "00", "--profile", "cpu", "--store"]) == 0
    meta = nbformat.read(root / "notebooks" / "00_tiny.ipynb", as_version=4).metadata["webmm_lab"]
    assert "webmm_lab.claims" in meta["code"] and meta["profile"] == "cpu" and meta["machine"]["torch"]


def test_train_commands_write_their_model_to_the_results_folder(tmp_path, monkeypatch):
    from webmm_lab.experiments import parse_setup, setup_parser
    from webmm_lab.experiments.gpt import GptSetup
    monkeypatch.setenv("WEBMM_RESULTS", str(tmp_path / "elsewhere"))
    parser = setup_parser("t", "d", GptSetup(), {"lr": "s"}, out="gpt.pt")
    _, args = parse_setup(parser, GptSetup(), [])
    assert args.out == str(tmp_path / "elsewhere" / "gpt.pt")
    _, args = parse_setup(parser, GptSetup(), ["--out", "x.pt"])
    assert args.out == "x.pt"


def test_times_table_reads_the_stored_spreads(monkeypatch):
    import webmm_lab.tools.report as report
    spreads = {"00_a": {"seconds": {"seed 0": 90.0, "seed 1": 30.0, "seed 2": 40.0, "seed 0, 1 thread": 55.0},
                        "threads": {"seed 0": "all", "seed 1": "all", "seed 2": "all", "seed 0, 1 thread": "1"},
                        "machine": {"cores": 2}}}
    gpu = {"00_a": {"seconds": {"seed 0": 410.0, "seed 1": 380.4}}}
    estimates = {"02_b": {"t4_estimate_seconds": 120.4, "dry_run": {"seconds": 200.0}}}
    monkeypatch.setattr(report, "load_spread", lambda nb, profile="cpu": (spreads if profile == "cpu" else gpu).get(nb))
    monkeypatch.setattr(report, "load_estimate", lambda nb: estimates.get(nb))
    books = [Path("00_a.ipynb"), Path("01_none.ipynb"), Path("02_b.ipynb")]
    table = report.times_table(books, smoke={"00_a": "9 s"}).splitlines()
    assert table[0].startswith("| notebook | cpu, all threads: fastest of the seeds (median)")
    assert table[0].endswith("| gpu, Colab T4 |")
    assert table[2] == "| 00_a | 30 s (40 s, 2 cores) | 55 s | 9 s | 380 s, measured |"   # fastest 30, median 40
    assert table[3] == "| 01_none | - | - | - | - |"                       # nothing stored
    assert table[4].endswith("| ≈ 320 s, estimated (120 s training + 200 s the rest) |")

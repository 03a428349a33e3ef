"""`webmm-lab run --report`: a notebook's cost, measured in one run."""
import json
from pathlib import Path

import nbformat
import pytest

from webmm_lab.cli import main, stale_notebooks
from webmm_lab.tools.report import (T4_BUDGET_SECONDS, T4_PEAK_FLOPS, T4_SHARE, estimate_problems, gpu_cell,
                              section_times, store_estimate, t4_estimate)

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))

TRAINING = """import torch, torch.nn.functional as F
from torch import nn
from webmm_lab import random_batches, train
x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
model = nn.Linear(8, 3)
history = train(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), random_batches(x, y, batch_size=16),
                steps=5, lr=1e-2, run="tiny", progress=False)
"""


@pytest.mark.slow
def test_the_report_counts_each_loop_its_flops_and_each_section(tmp_path, monkeypatch, capsys):
    root = tmp_path / "course"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname='x'\n")
    cells = [nbformat.v4.new_markdown_cell("## 1. Data"), nbformat.v4.new_code_cell("import time; time.sleep(0.2)"),
             nbformat.v4.new_markdown_cell("## 2. Training"), nbformat.v4.new_code_cell(TRAINING)]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), root / "notebooks" / "00_tiny.ipynb")
    monkeypatch.chdir(root)
    monkeypatch.setenv("WEBMM_RESULTS", str(tmp_path / "results"))
    assert main(["run", "00", "--profile", "smoke", "--report"]) == 0
    rep = json.loads((tmp_path / "results" / "report" / "00_tiny.json").read_text())
    loop, = rep["loops"]
    assert (loop["run"], loop["steps"], loop["steps_done"], loop["batch"]) == ("tiny", 5, 5, 16)
    # a linear layer of 8 -> 3 on 16 rows: 2*16*8*3 FLOPs forward, as many for its weights' gradient
    assert loop["flops_per_step"] >= 2 * (2 * 16 * 8 * 3)
    assert loop["samples_per_second"] > 0 and rep["device"]["device"] == "cpu"
    assert set(rep["sections"]) >= {"1. Data", "2. Training"} and rep["sections"]["1. Data"] >= 0.2
    assert rep["training_flops"] == loop["flops_per_step"] * 5
    stored = nbformat.read(root / "notebooks" / "00_tiny.ipynb", as_version=4)
    assert len(stored.cells) == 4 and "report" not in stored.cells[0].source      # nothing stored
    assert "T4" in capsys.readouterr().out


def test_the_t4_estimate_and_section_times_read_what_was_recorded():
    flops, seconds = t4_estimate([{"flops_per_step": 1e9, "steps": 100}, {"flops_per_step": None, "steps": 5}])
    assert flops == 1e11 and seconds == 1e11 / (T4_PEAK_FLOPS * T4_SHARE)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1"), nbformat.v4.new_markdown_cell("## A")])
    assert section_times(nb) == {"setup": 0.0}


@pytest.mark.parametrize("book", NOTEBOOKS, ids=lambda b: b.stem[:2])
def test_every_notebook_trains_within_the_t4_budget_by_its_stored_estimate(book):
    # the FLOPs of the gpu profile's training, counted on a dry run of today's code cells
    assert estimate_problems(book) == []


def _report(flops=1e9, steps=100, profile="gpu"):
    return {"notebook": "00_tiny", "profile": profile, "seconds": 12.0, "sections": {"setup": 1.0},
            "loops": [{"run": "tiny", "steps": steps, "batch": 16, "flops_per_step": flops}],
            "training_flops": (flops or 0) * steps,
            "t4_estimate_seconds": t4_estimate([{"flops_per_step": flops, "steps": steps}])[1],
            "code": {"webmm_lab.train": "0" * 16}}


def test_a_stored_estimate_is_refused_when_stale_uncounted_or_over_budget(tmp_path, monkeypatch):
    monkeypatch.setattr("webmm_lab.tools.report.SPREADS", tmp_path / "spreads")
    monkeypatch.setattr("webmm_lab.spread.SPREADS", tmp_path / "spreads")
    book = tmp_path / "00_tiny.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("steps = pick(2, 10, 100)")]), book)
    assert "no gpu estimate" in estimate_problems(book)[0]
    with pytest.raises(ValueError, match="gpu profile"):
        store_estimate(_report(profile="cpu"), book, 2)
    with pytest.raises(ValueError, match="without counted FLOPs"):
        store_estimate(_report(flops=None), book, 2)
    store_estimate(_report(), book, 2)
    assert estimate_problems(book) == []
    assert gpu_cell("00_tiny").startswith("≈ 12 s, estimated")
    nb = nbformat.read(book, as_version=4)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="stored outputs change nothing")]
    nbformat.write(nb, book)
    assert estimate_problems(book) == []
    nb.cells[0].source = "steps = pick(2, 10, 1000)"
    nbformat.write(nb, book)
    assert estimate_problems(book) == ["the notebook's code cells changed since the estimate (re-estimate it)"]
    big = T4_BUDGET_SECONDS * T4_PEAK_FLOPS * T4_SHARE / 100 * 1.01        # 1 % over the budget
    store_estimate(_report(flops=big), book, 2)
    assert "over the 600 s budget" in estimate_problems(book)[0]
    (tmp_path / "notebooks").mkdir()
    book.rename(tmp_path / "notebooks" / book.name)
    stale = {what: why for name, what, why in stale_notebooks(tmp_path / "notebooks")}
    assert stale["gpu estimate"] == ["webmm_lab.train"]            # a package module changed since


def test_only_a_gpu_dry_run_stores_an_estimate(capsys):
    for argv in (["run", "00", "--report", "--store", "--profile", "cpu"],
                 ["run", "00", "--report", "--store", "--profile", "gpu"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "--dry-run" in capsys.readouterr().err

"""`webmm-lab run --report`: a notebook's cost, measured in one run."""
import json

import nbformat

from webmm_lab.cli import main
from webmm_lab.report import T4_PEAK_FLOPS, T4_SHARE, section_times, t4_estimate

TRAINING = """import torch, torch.nn.functional as F
from torch import nn
from webmm_lab import random_batches, train
x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
model = nn.Linear(8, 3)
history = train(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), random_batches(x, y, batch_size=16),
                steps=5, lr=1e-2, run="tiny", progress=False)
"""


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

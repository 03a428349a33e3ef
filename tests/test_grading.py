"""`webmm-lab grade`: solutions get every check, untouched student labs none, and a broken or a
looping notebook is reported, never fatal."""
import csv
import shutil
from pathlib import Path

import nbformat

from webmm_lab.cli import main
from webmm_lab.grading import lab_of, printed_checks

ROOT = Path(__file__).resolve().parents[1]


def test_a_class_is_graded_and_nothing_stops_the_run(tmp_path, monkeypatch, capsys):
    subs = tmp_path / "subs"
    (subs / "ada").mkdir(parents=True)
    (subs / "bo").mkdir()
    shutil.copy(ROOT / "labs" / "solutions" / "lab00_softmax_cross_entropy.ipynb", subs / "ada" / "lab00.ipynb")
    shutil.copy(ROOT / "labs" / "lab00_softmax_cross_entropy.ipynb", subs / "bo" / "lab00.ipynb")
    (subs / "cy").mkdir()
    (subs / "cy" / "lab00.ipynb").write_text("{ this is not a notebook")
    (subs / "di").mkdir()
    loop = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("while True:\n    pass")])
    nbformat.write(loop, subs / "di" / "lab00.ipynb")
    nb = nbformat.read(ROOT / "labs" / "solutions" / "lab00_softmax_cross_entropy.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if "check_" not in c.source or "import" in c.source]   # checks deleted
    (subs / "ed").mkdir()
    nbformat.write(nb, subs / "ed" / "lab00.ipynb")
    monkeypatch.chdir(ROOT)
    out = tmp_path / "grades.csv"
    assert main(["grade", str(subs), "--out", str(out), "--time-limit", "30"]) == 0
    rows = list(csv.DictReader(out.open()))
    by = {}
    for r in rows:
        by.setdefault(r["student"], []).append(r)
    expected = {r["check"] for r in by["ada"]}
    assert len(expected) >= 2 and all(r["result"] == "PASS" for r in by["ada"])
    assert {r["check"] for r in by["bo"]} == expected and all(r["result"] == "FAIL" for r in by["bo"])
    assert all("not implemented" in r["message"] for r in by["bo"])
    assert all(r["result"] == "MISSING" for r in by["cy"]) and by["cy"][0]["notebook"].startswith("unreadable")
    assert all(r["result"] == "MISSING" for r in by["di"]) and "timed out" in by["di"][0]["notebook"]
    assert all(r["result"] == "MISSING" for r in by["ed"])
    text = capsys.readouterr().out
    assert "ada" in text and f"{len(expected)}/{len(expected)}" in text and "timed out" in text


def test_lab_of_and_printed_checks():
    student = nbformat.read(ROOT / "labs" / "lab03_image_gpt.ipynb", as_version=4)
    assert lab_of(Path("whatever.ipynb"), student) == "03"
    assert lab_of(Path("kim_lab07.ipynb")) == "07" and lab_of(Path("kim.ipynb")) is None
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout",
                                                  text="PASS round trip: exact on 5 pieces\nFAIL encode: wrong\n")]
    assert printed_checks(nb) == {"round trip": ("PASS", "exact on 5 pieces"), "encode": ("FAIL", "wrong")}

import json

import pytest

from webmm_lab import ClaimFailed, Claims
from webmm_lab.claims import load_results
from webmm_lab.cli import main


@pytest.fixture(autouse=True)
def results_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBMM_RESULTS", str(tmp_path))


def test_claims_are_recorded_to_json(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBMM_PROFILE", "cpu")
    c = Claims("99_test")
    c.check("accuracy", 0.97, 0.9, ">=")
    c.observe("gain", 0.01, note="within noise")
    c.check("accuracy", 0.98, 0.9, ">=")          # re-running a cell replaces, not duplicates
    data = json.loads((tmp_path / "99_test.json").read_text())
    assert data["profile"] == "cpu"
    assert [(x["name"], x["status"]) for x in data["claims"]] == [("accuracy", "pass"), ("gain", "observed")]
    assert data["claims"][0]["measured"] == 0.98


def test_a_failed_claim_stops_cpu_and_gpu_but_not_smoke(monkeypatch):
    for profile in ("cpu", "gpu"):
        monkeypatch.setenv("WEBMM_PROFILE", profile)
        with pytest.raises(ClaimFailed, match=r"loss: expected measured <= 1\.5, measured 2\.25"):
            Claims("99_test").check("loss", 2.25, 1.5, "<=")
    monkeypatch.setenv("WEBMM_PROFILE", "smoke")
    claim = Claims("99_test").check("loss", 2.25, 1.5, "<=")
    assert claim.status == "FAIL"


def test_not_reproduced_is_shown_not_raised(monkeypatch):
    monkeypatch.setenv("WEBMM_PROFILE", "cpu")
    c = Claims("99_test")
    claim = c.check("big effect", 0.01, 0.05, ">=", reproducible=False, reason="too small a model")
    assert claim.status == "not reproduced" and claim.note == "too small a model"
    assert "not reproduced" in c.table()
    assert c.check("big effect", 0.09, 0.05, ">=", reproducible=False).status == "pass"


def test_bad_comparison_is_refused():
    with pytest.raises(ValueError, match="compare must be one of"):
        Claims("99_test").check("x", 1, 1, "=>")


def test_results_command_prints_the_table(capsys):
    Claims("98_a").check("first", 1.0, 0.5)
    Claims("99_b").observe("second", 3.0)
    assert main(["results"]) == 0
    out = capsys.readouterr().out
    assert "98_a" in out and "second" in out and "observed" in out
    assert len(load_results()) == 2

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


def test_a_dry_run_records_claims_without_enforcing_them(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBMM_RESULTS", str(tmp_path))
    monkeypatch.setenv("WEBMM_DRY_RUN", "2")
    claims = Claims("99_dry", profile="gpu")
    claim = claims.check("accuracy", 0.1, 0.9, ">=")           # would raise in a real gpu run
    assert claim.status == "FAIL" and claim.profile == "gpu (dry run)"
    monkeypatch.delenv("WEBMM_DRY_RUN")
    with pytest.raises(ClaimFailed):
        Claims("99_dry", profile="gpu").check("accuracy", 0.1, 0.9, ">=")


def test_spread_summarises_every_claim_over_runs(monkeypatch, capsys):
    from webmm_lab.claims import Claim, format_spread, spread
    mk = lambda name, v, status, kind="claim": Claim("99_x", name, v, 1.0, ">=", kind, status, "cpu")
    runs = {"seed 0": [mk("a", 2.0, "pass"), mk("b", 5.0, "observed", "observation")],
            "seed 1": [mk("a", 0.5, "FAIL"), mk("b", 7.0, "observed", "observation")],
            "seed 0, 1 thread": [mk("a", 3.0, "pass")]}          # stopped before b
    data = spread("99_x", "cpu", runs, {"seed 0": 1.0, "seed 1": 1.0, "seed 0, 1 thread": 2.0})
    a, b = data["claims"]
    assert (a["min"], a["median"], a["max"], a["passed"]) == (0.5, 2.0, 3.0, 2)
    assert b["values"] == {"seed 0": 5.0, "seed 1": 7.0} and b["median"] == 6.0
    text = format_spread(data)
    assert "2/3" in text and "over 3 runs" in text
    monkeypatch.setattr("webmm_lab.claims.SPREADS", __import__("pathlib").Path("/nonexistent"))
    assert Claims("99_x", profile="cpu").show_spread() is None
    assert "--seeds 0-4" in capsys.readouterr().out


def test_recording_mode_never_stops_the_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBMM_RESULTS", str(tmp_path))
    monkeypatch.setenv("WEBMM_CLAIMS", "record")
    assert Claims("99_rec", profile="cpu").check("x", 0.0, 1.0, ">=").status == "FAIL"


def test_an_identity_is_checked_in_every_profile_and_is_no_claim(tmp_path, monkeypatch, capsys):
    from webmm_lab import IdentityFailed, check_identity
    for profile in ("smoke", "cpu"):
        monkeypatch.setenv("WEBMM_PROFILE", profile)
        assert check_identity("cache equals no cache", 1.0, 1.0, "==")
        assert "[CHECK] cache equals no cache" in capsys.readouterr().out
        with pytest.raises(IdentityFailed, match=r"expected <= 1e-05, measured 0\.5"):
            check_identity("gathered vs full", 0.5, 1e-5)
        with pytest.raises(IdentityFailed):
            check_identity("gathered vs full", float("nan"), 1e-5)
    assert not list(tmp_path.glob("*.json"))              # nothing recorded as a claim
    monkeypatch.setenv("WEBMM_DRY_RUN", "2")              # a dry run's cut training: only reported
    assert check_identity("resume", 0.5, 0.0) is False
    assert "dry run" in capsys.readouterr().out


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_value_that_is_not_a_number_stops_every_profile(monkeypatch, value):
    for profile in ("smoke", "cpu"):
        monkeypatch.setenv("WEBMM_PROFILE", profile)
        with pytest.raises(ClaimFailed, match="not a finite number"):
            Claims("99_nan").check("loss ratio", value, 1.0, "<=")
        with pytest.raises(ClaimFailed, match="not a finite number"):
            Claims("99_nan").observe("gap", value)
    monkeypatch.setenv("WEBMM_CLAIMS", "record")
    with pytest.raises(ClaimFailed):
        Claims("99_nan").observe("gap", value)


def test_smoke_refuses_a_notebook_that_skipped_a_claim(tmp_path, monkeypatch):
    from webmm_lab.claims import Claim, spread
    mk = lambda name, kind: Claim("99_sk", name, 1.0, 0.5, ">=", kind, "pass", "cpu")
    stored = spread("99_sk", "cpu", {"seed 0": [mk("a", "claim"), mk("b", "claim"), mk("o", "observation")]},
                    {"seed 0": 1.0})
    (tmp_path / "spreads").mkdir()
    (tmp_path / "spreads" / "99_sk.json").write_text(json.dumps(stored))
    monkeypatch.setattr("webmm_lab.claims.SPREADS", tmp_path / "spreads")
    monkeypatch.setenv("WEBMM_PROFILE", "smoke")
    c = Claims("99_sk")
    c.check("a", 1.0, 0.5)
    c.observe("o", 2.0)
    with pytest.raises(ClaimFailed, match="recorded 1 claims in the smoke profile, but its stored "
                                          "spread \\(cpu profile\\) has 2"):
        c.show()
    c.check("b with another name in smoke", 1.0, 0.5)     # names may carry profile sizes: counts
    c.show()
    monkeypatch.setenv("WEBMM_PROFILE", "cpu")            # the cpu profile is what the spread measures
    Claims("99_sk").show()


def test_record_mode_says_so_in_the_profile_column(monkeypatch):
    monkeypatch.setenv("WEBMM_CLAIMS", "record")
    c = Claims("99_rec", profile="cpu")
    c.check("x", 1.0, 0.5)
    assert "cpu (record)" in c.table()


def test_claims_files_record_the_package_code_they_ran(tmp_path, monkeypatch):
    from webmm_lab.claims import load_code
    from webmm_lab.provenance import file_digest, module_file, stale_modules
    monkeypatch.setenv("WEBMM_PROFILE", "cpu")
    Claims("99_code").check("x", 1.0, 0.5)
    code = load_code(tmp_path, "99_code")
    assert code["webmm_lab.claims"] == file_digest(module_file("webmm_lab.claims"))
    assert stale_modules(code) == []
    assert stale_modules({**code, "webmm_lab.train": "0" * 16}) == ["webmm_lab.train"]
    assert stale_modules({"webmm_lab.gone": "0" * 16}) == ["webmm_lab.gone"]


def test_a_spread_records_where_it_was_measured():
    from webmm_lab.claims import Claim, format_spread, spread
    from webmm_lab.provenance import machine
    where = machine()
    assert where["torch"] and where["python"] and where["cores"] >= 1 and where["cpu"]
    data = spread("99_w", "cpu", {"seed 0": [Claim("99_w", "a", 1.0, 0.5, ">=", "claim", "pass", "cpu")]},
                  {"seed 0": 12.5}, code={"webmm_lab.claims": "ab"}, machine=where,
                  threads={"seed 0": "all"})
    assert data["seconds"] == {"seed 0": 12.5} and data["threads"] == {"seed 0": "all"}
    assert data["code"] == {"webmm_lab.claims": "ab"} and data["machine"] == where
    assert where["cpu"] in format_spread(data)

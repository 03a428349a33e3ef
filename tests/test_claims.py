import json

import pytest

from webmm_lab import Baseline, ClaimFailed, ClaimRefused, Claims
from webmm_lab.claims import Claim, load_results
from webmm_lab.spread import format_spread, spread, spread_problems
from webmm_lab.cli import main

WEAK = Baseline("a weak baseline", 0.1)          # fails every ">= 0.5"-like target below


@pytest.fixture(autouse=True)
def results_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBMM_RESULTS", str(tmp_path))
    monkeypatch.delenv("WEBMM_CLAIMS", raising=False)
    monkeypatch.delenv("WEBMM_DRY_RUN", raising=False)


@pytest.fixture
def spreads(tmp_path, monkeypatch):
    """An empty folder of stored spreads."""
    folder = tmp_path / "spreads"
    folder.mkdir()
    monkeypatch.setattr("webmm_lab.spread.SPREADS", folder)
    return folder


def mk(name, value, status, kind="claim", baseline="", base_value=None, met=None, reproducible=True):
    return Claim("99_x", name, value, 1.0, ">=", kind, status, "cpu", baseline=baseline,
                 baseline_value=base_value, baseline_met=met, reproducible=reproducible)


def test_claims_are_recorded_to_json_with_their_baseline(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBMM_PROFILE", "cpu")
    c = Claims("99_test")
    c.check("accuracy", 0.97, 0.9, ">=", baseline=Baseline("logistic regression", 0.85))
    c.observe("gain", 0.01, note="within noise")
    c.check("accuracy", 0.98, 0.9, ">=", baseline=Baseline("logistic regression", 0.86))  # replaces
    data = json.loads((tmp_path / "99_test.json").read_text())
    assert data["profile"] == "cpu" and data["mode"] == "enforce"
    assert [(x["name"], x["status"]) for x in data["claims"]] == [("accuracy", "pass"), ("gain", "observed")]
    first = data["claims"][0]
    assert (first["measured"], first["baseline"], first["baseline_value"], first["baseline_met"]) == \
        (0.98, "logistic regression", 0.86, False)
    table = c.table()
    assert "baseline" in table.splitlines()[0] and "logistic regression: 0.86" in table
    assert "notebook" not in table.splitlines()[0]              # one notebook: no notebook column


def test_a_failed_claim_stops_cpu_and_gpu_but_not_smoke(monkeypatch, spreads):
    (spreads / "99_test.gpu.json").write_text(json.dumps(spread("99_test", "gpu", {}, {})))
    for profile in ("cpu", "gpu"):
        monkeypatch.setenv("WEBMM_PROFILE", profile)
        with pytest.raises(ClaimFailed, match=r"loss: expected measured <= 1\.5, measured 2\.25 "
                                              r"\(its baseline, bigram: 3\)"):
            Claims("99_test").check("loss", 2.25, 1.5, "<=", baseline=Baseline("bigram", 3.0))
    monkeypatch.setenv("WEBMM_PROFILE", "smoke")
    claim = Claims("99_test").check("loss", 2.25, 1.5, "<=", baseline=Baseline("bigram", 3.0))
    assert claim.status == "FAIL"


def test_a_claim_without_a_baseline_is_refused_in_cpu_and_gpu(monkeypatch, spreads):
    (spreads / "99_test.gpu.json").write_text(json.dumps(spread("99_test", "gpu", {}, {})))
    for profile in ("cpu", "gpu"):
        monkeypatch.setenv("WEBMM_PROFILE", profile)
        with pytest.raises(ClaimRefused, match="accuracy: it names no baseline"):
            Claims("99_test").check("accuracy", 0.97, 0.9)
    monkeypatch.setenv("WEBMM_PROFILE", "smoke")                # recorded as such in smoke
    c = Claims("99_test")
    assert c.check("accuracy", 0.97, 0.9).status == "refused"
    with pytest.raises(ClaimRefused, match="names no baseline"):  # and show() stops the smoke run
        c.show()


def test_a_baseline_that_meets_the_target_is_refused(monkeypatch):
    monkeypatch.setenv("WEBMM_PROFILE", "cpu")
    with pytest.raises(ClaimRefused, match=r"its baseline, block nothing: 0, also meets the target "
                                           r"\(<= 10\), so it does not discriminate"):
        Claims("99_test").check("innocent removed (%)", 2.0, 10.0, "<=", baseline=Baseline("block nothing", 0.0))
    with pytest.raises(ClaimRefused):            # even a claim marked not reproducible
        Claims("99_test").check("big effect", 0.01, 0.05, ">=", baseline=Baseline("noise", 0.06),
                                reproducible=False)
    monkeypatch.setenv("WEBMM_DRY_RUN", "2")     # a dry run records it as refused
    claim = Claims("99_test").check("innocent removed (%)", 2.0, 10.0, "<=",
                                    baseline=Baseline("block nothing", 0.0))
    assert claim.status == "refused" and claim.baseline_met and claim.where() == "cpu (dry run)"


def test_difference_and_ratio_claims_name_the_quantity_they_compare_with(monkeypatch):
    monkeypatch.setenv("WEBMM_PROFILE", "cpu")
    c = Claims("99_test")
    raw = Baseline.difference("raw pixels probe (%)", 30.2)
    assert raw.score == 0.0 and raw.value == 30.2
    claim = c.check("probe minus raw pixels (points)", 35.0, 10.0, baseline=raw)
    assert claim.status == "pass" and claim.baseline_value == 30.2 and not claim.baseline_met
    assert "raw pixels probe (%): 30.2 (subtracted)" in c.table()
    bigram = Baseline.ratio("bigram loss (nats)", 2.3)
    assert bigram.score == 1.0
    assert c.check("loss / bigram", 0.6, 0.75, "<=", baseline=bigram).status == "pass"
    with pytest.raises(ClaimRefused):            # a ratio claim whose target a ratio of 1 meets
        c.check("loss / bigram", 0.6, 1.0, "<=", baseline=bigram)
    with pytest.raises(ValueError, match="relation must be one of"):
        Baseline("x", 1.0, "sum")
    with pytest.raises(ValueError, match="needs a name"):
        Baseline(" ", 1.0)
    with pytest.raises(TypeError, match="baseline must be a Baseline"):
        c.check("x", 1.0, 0.5, baseline=0.3)


def test_gpu_claims_without_a_gpu_spread_are_recorded_not_enforced(monkeypatch, spreads):
    monkeypatch.setenv("WEBMM_PROFILE", "gpu")
    c = Claims("99_gpu")
    assert c.mode == "unmeasured" and not c.enforce
    claim = c.check("accuracy", 0.1, 0.9, baseline=WEAK)           # would stop a measured gpu run
    assert claim.status == "FAIL" and "not yet measured on a GPU" in c.table()
    (spreads / "99_gpu.gpu.json").write_text(json.dumps(spread("99_gpu", "gpu", {}, {})))
    with pytest.raises(ClaimFailed):
        Claims("99_gpu").check("accuracy", 0.1, 0.9, baseline=WEAK)


def test_not_reproduced_is_shown_not_raised(monkeypatch):
    monkeypatch.setenv("WEBMM_PROFILE", "cpu")
    c = Claims("99_test")
    claim = c.check("big effect", 0.01, 0.05, ">=", baseline=Baseline("noise", 0.0),
                    reproducible=False, reason="too small a model")
    assert claim.status == "not reproduced" and claim.note == "too small a model"
    assert "not reproduced" in c.table()
    assert c.check("big effect", 0.09, 0.05, ">=", baseline=Baseline("noise", 0.0),
                   reproducible=False).status == "pass"


def test_bad_comparison_is_refused():
    with pytest.raises(ValueError, match="compare must be one of"):
        Claims("99_test").check("x", 1, 1, "=>", baseline=WEAK)


def test_results_command_prints_the_table(capsys):
    Claims("98_a").check("first", 1.0, 0.5, baseline=WEAK)
    Claims("99_b").observe("second", 3.0)
    assert main(["results"]) == 0
    out = capsys.readouterr().out
    assert "98_a" in out and "second" in out and "observed" in out and "a weak baseline: 0.1" in out
    assert len(load_results()) == 2


def test_old_claims_files_still_load(tmp_path):
    (tmp_path / "97_old.json").write_text(json.dumps({"claims": [
        {"notebook": "97_old", "name": "x", "measured": 1.0, "target": 0.5, "compare": ">=",
         "kind": "claim", "status": "pass", "profile": "cpu", "note": ""}]}))
    old, = load_results(tmp_path)
    assert old.baseline == "" and old.baseline_text() == "-"


def test_a_dry_run_records_claims_without_enforcing_them(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBMM_DRY_RUN", "2")
    claims = Claims("99_dry", profile="gpu")
    claim = claims.check("accuracy", 0.1, 0.9, ">=", baseline=WEAK)    # would raise in a real run
    assert claim.status == "FAIL" and claim.where() == "gpu (dry run)"
    monkeypatch.delenv("WEBMM_DRY_RUN")
    with pytest.raises(ClaimFailed):
        Claims("99_dry", profile="cpu").check("accuracy", 0.1, 0.9, ">=", baseline=WEAK)


def test_spread_summarises_every_claim_and_its_baseline_over_runs(monkeypatch, capsys):
    runs = {"seed 0": [mk("a", 2.0, "pass", baseline="pixels", base_value=0.2, met=False),
                       mk("b", 5.0, "observed", "observation")],
            "seed 1": [mk("a", 0.5, "FAIL", baseline="pixels", base_value=0.4, met=False),
                       mk("b", 7.0, "observed", "observation")],
            "seed 0, 1 thread": [mk("a", 3.0, "pass", baseline="pixels", base_value=0.3, met=False)]}
    data = spread("99_x", "cpu", runs, {"seed 0": 1.0, "seed 1": 1.0, "seed 0, 1 thread": 2.0})
    a, b = data["claims"]
    assert (a["min"], a["median"], a["max"], a["passed"]) == (0.5, 2.0, 3.0, 2)
    assert a["baseline"] == "pixels" and a["baseline_values"]["seed 1"] == 0.4
    assert (a["baseline_min"], a["baseline_median"], a["baseline_max"], a["baseline_met"]) == (0.2, 0.3, 0.4, 0)
    assert b["values"] == {"seed 0": 5.0, "seed 1": 7.0} and b["median"] == 6.0
    text = format_spread(data)
    assert "2/3" in text and "over 3 runs" in text and "pixels: 0.2 / 0.3 / 0.4" in text
    assert "!" not in text
    assert spread_problems(data) == ["a: passed 2/3 runs"]
    monkeypatch.setattr("webmm_lab.spread.SPREADS", __import__("pathlib").Path("/nonexistent"))
    assert Claims("99_x", profile="cpu").show_spread() is None
    assert "--seeds 0-4" in capsys.readouterr().out


def test_show_spread_marks_a_baseline_that_met_the_target_on_any_run():
    runs = {"seed 0": [mk("a", 2.0, "pass", baseline="nothing", base_value=0.5, met=False)],
            "seed 1": [mk("a", 2.0, "refused", baseline="nothing", base_value=1.5, met=True)]}
    data = spread("99_x", "cpu", runs, {})
    assert data["claims"][0]["baseline_met"] == 1
    text = format_spread(data)
    assert "1/2 !" in text and "does not discriminate" in text
    assert spread_problems(data) == ["a: its baseline met the target on 1/2 runs"]


def test_claims_marked_not_reproducible_are_no_failure_of_the_spread(tmp_path, monkeypatch):
    runs = {f"seed {s}": [mk("a", 0.5, "not reproduced", baseline="b", base_value=0.0, met=False,
                             reproducible=False)] for s in range(2)}
    data = spread("99_x", "cpu", runs, {})
    assert data["claims"][0]["reproducible"] is False and spread_problems(data) == []
    assert "0/2 (not reproduced)" in format_spread(data)


def test_recording_mode_never_stops_the_notebook(monkeypatch):
    monkeypatch.setenv("WEBMM_CLAIMS", "record")
    c = Claims("99_rec", profile="cpu")
    assert c.check("x", 0.0, 1.0, ">=", baseline=WEAK).status == "FAIL"
    assert c.check("y", 2.0, 1.0, ">=").status == "refused"
    assert "cpu (record)" in c.table()


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
            Claims("99_nan").check("loss ratio", value, 1.0, "<=", baseline=Baseline("x", 2.0))
        with pytest.raises(ClaimFailed, match="not a finite number"):
            Claims("99_nan").check("loss ratio", 0.5, 1.0, "<=", baseline=Baseline("x", value))
        with pytest.raises(ClaimFailed, match="not a finite number"):
            Claims("99_nan").observe("gap", value)
    monkeypatch.setenv("WEBMM_CLAIMS", "record")
    with pytest.raises(ClaimFailed):
        Claims("99_nan").observe("gap", value)


def test_smoke_refuses_a_notebook_that_skipped_a_claim(monkeypatch, spreads):
    m = lambda name, kind: Claim("99_sk", name, 1.0, 0.5, ">=", kind, "pass", "cpu", baseline="b")
    stored = spread("99_sk", "cpu", {"seed 0": [m("a", "claim"), m("b", "claim"), m("o", "observation")]},
                    {"seed 0": 1.0})
    (spreads / "99_sk.json").write_text(json.dumps(stored))
    monkeypatch.setenv("WEBMM_PROFILE", "smoke")
    c = Claims("99_sk")
    c.check("a", 1.0, 0.5, baseline=WEAK)
    c.observe("o", 2.0)
    with pytest.raises(ClaimFailed, match="recorded 2 claims and observations in the smoke profile, "
                                          "but its stored spread \\(cpu profile\\) has 3"):
        c.show()
    c.check("b with another name in smoke", 1.0, 0.5, baseline=WEAK)   # names may carry sizes
    c.show()
    monkeypatch.setenv("WEBMM_PROFILE", "cpu")            # the cpu profile is what the spread measures
    Claims("99_sk").show()


def test_claims_files_record_the_package_code_they_ran(tmp_path, monkeypatch):
    from webmm_lab.claims import load_code
    from webmm_lab.provenance import file_digest, module_file, stale_modules
    monkeypatch.setenv("WEBMM_PROFILE", "cpu")
    Claims("99_code").check("x", 1.0, 0.5, baseline=WEAK)
    code = load_code(tmp_path, "99_code")
    assert code["webmm_lab.claims"] == file_digest(module_file("webmm_lab.claims"))
    assert stale_modules(code) == []
    assert stale_modules({**code, "webmm_lab.train": "0" * 16}) == ["webmm_lab.train"]
    assert stale_modules({"webmm_lab.gone": "0" * 16}) == ["webmm_lab.gone"]


def test_a_spread_records_where_it_was_measured():
    from webmm_lab.provenance import machine
    where = machine()
    assert where["torch"] and where["python"] and where["cores"] >= 1 and where["cpu"]
    assert "torch: " in where["vector"]                   # the kernels' level: AVX2, AVX512, ...
    data = spread("99_w", "cpu", {"seed 0": [mk("a", 1.0, "pass", baseline="b", base_value=0.0, met=False)]},
                  {"seed 0": 12.5}, code={"webmm_lab.claims": "ab"}, machine=where,
                  threads={"seed 0": "all"})
    assert data["seconds"] == {"seed 0": 12.5} and data["threads"] == {"seed 0": "all"}
    assert data["code"] == {"webmm_lab.claims": "ab"} and data["machine"] == where
    assert where["cpu"] in format_spread(data) and where["vector"] in format_spread(data)


def test_a_stored_spread_without_baselines_is_stale(tmp_path, monkeypatch, capsys, spreads):
    import nbformat
    from webmm_lab.provenance import file_digest, module_file
    root = tmp_path / "course"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname='x'\n")
    now = {"webmm_lab.claims": file_digest(module_file("webmm_lab.claims"))}
    for name in ("00_new", "01_old"):
        nb = nbformat.v4.new_notebook()
        nb.metadata["webmm_lab"] = {"code": now}
        nbformat.write(nb, root / "notebooks" / f"{name}.ipynb")
    claim = lambda base: Claim("x", "a", 1.0, 0.5, ">=", "claim", "pass", "cpu", baseline=base,
                               baseline_value=0.0 if base else None, baseline_met=False if base else None)
    for name, base in (("00_new", "pixels"), ("01_old", "")):
        (spreads / f"{name}.json").write_text(json.dumps(spread(name, "cpu", {"s": [claim(base)]}, {}, code=now)))
    monkeypatch.chdir(root)
    assert main(["results", "--stale"]) == 1
    out = capsys.readouterr().out
    assert "01_old: stored spread stale: no baselines" in out and "00_new" not in out

"""The verification suite: pure helpers, one small run, the report folder."""
import json

import numpy as np
import pandas as pd
import pytest

from physgrad.types import PhysgradError
from verification.cases import analytic_chain, catalogue, divider_circuit, random_case
from verification.checks import VerifyConfig, cosine, directions, fit_slope, rel_error, richardson
from verification.report import bound_margins, counts, slope_table, write_report
from verification.suite import run_suite


def test_pure_helpers():
    x = np.array([1e-3, 1e-2, 1e-1])
    slope, spread = fit_slope(x, 3 * x**2)
    assert slope == pytest.approx(2.0) and spread == pytest.approx(0.0, abs=1e-12)
    assert richardson(np.exp, 1e-2) == pytest.approx(1.0, rel=1e-9)
    d = directions(5, 3, 0)
    np.testing.assert_allclose([np.linalg.norm(v) for v in d], 1.0)
    np.testing.assert_array_equal(d[1], directions(5, 3, 0)[1])
    assert cosine(np.array([1.0, 0]), np.array([2.0, 0])) == pytest.approx(1.0)
    assert rel_error(np.array([1.1]), np.array([1.0])) == pytest.approx(0.1)


def test_config_validation():
    with pytest.raises(PhysgradError, match="three"):
        VerifyConfig(betas=(1e-3, 1e-2))
    with pytest.raises(PhysgradError, match="steps"):
        VerifyConfig(steps=(0, 1))


def test_catalogue_is_deterministic():
    a, b = catalogue(True), catalogue(True)
    assert [c.name for c in a] == [c.name for c in b]
    np.testing.assert_array_equal(a[-2].theta, b[-2].theta)
    assert a[-1].name.startswith("drn")


@pytest.fixture(scope="module")
def small_run():
    cfg = VerifyConfig(betas=(1e-3, 1e-2, 1e-1), etas=(1e-2, 1e-1), steps=(1, 10, 100), solvers=("coordinate",),
                       n_directions=2)
    return run_suite(cfg=cfg, cases=[analytic_chain(3), divider_circuit(), random_case(0)])


def test_small_run_passes(small_run):
    df = small_run
    assert set(df.status) <= {"pass", "fail", "skip", "info"}
    assert (df.status == "fail").sum() == 0, df[df.status == "fail"].to_string()
    s = slope_table(df)
    assert abs(s.loc["pep", "mean"] - 1) < 0.25 and abs(s.loc["nep", "mean"] - 1) < 0.25
    assert abs(s.loc["cep", "mean"] - 2) < 0.25
    assert bound_margins(df)["violations"] == 0
    assert {"exact_vs_fd", "ep_is_surrogate_gradient", "lower_bound", "upper_bound", "bias_order", "convergence",
            "solver_agreement", "kkt_certificates"} <= set(df.check)


def test_report_folder(small_run, tmp_path):
    env = {"command": "test", "git_commit": "x", "git_dirty": False, "seconds": 1.0}
    paths = write_report(small_run, tmp_path / "rep", env)
    back = pd.read_csv(paths["results"])
    assert len(back) == len(small_run)
    text = paths["summary"].read_text()
    assert "PASSED" in text and "Bias order" in text and "0 violations" in text
    assert json.loads(paths["environment"].read_text())["command"] == "test"
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths["figures"])


def test_failure_is_reported_not_dropped():
    case = divider_circuit()
    bad = type(case)(case.name, case.energy, np.array([1.0]), None, case.y, case.minimizer)  # wrong theta shape
    df = run_suite(cases=[bad])
    assert (df.status == "fail").any()
    assert counts(df)["fail"].sum() >= 1


def test_verify_exit_codes(tmp_path, monkeypatch):
    from physgrad.cli import main
    import verification.suite as suite

    ok = pd.DataFrame([dict(case="c", family="exact", check="exact_vs_fd", method="exact", param_name="", param=0.0,
                            value=0.0, reference=0.0, error=0.0, tol=1e-6, status="pass", detail="")])
    monkeypatch.setattr(suite, "catalogue", lambda quick: [])
    monkeypatch.setattr("verification.suite.run_suite", lambda **kw: ok)
    assert main(["verify", "--quick", "--out", str(tmp_path / "a")]) == 0
    failed = ok.assign(status="fail")
    monkeypatch.setattr("verification.suite.run_suite", lambda **kw: failed)
    assert main(["verify", "--quick", "--out", str(tmp_path / "b")]) == 1
    assert (tmp_path / "b" / "summary.md").read_text().count("FAILED") >= 1

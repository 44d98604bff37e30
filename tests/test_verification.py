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
                       n_directions=2, read_sigmas=(1e-8, 1e-6), read_trials=4,
                       read_betas=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1))
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


def test_read_noise_family_on_the_analytic_chain(small_run):
    """The chain is tagged read_noise: variance ~ sigma^2/beta^2 per phase, flat per example, EP's own bias
    order given the network as read, and the best beta's order in sigma (1/2 for P-EP, 1/3 for C-EP)."""
    r = small_run[small_run.family == "read_noise"]
    assert set(r.case) == {"chain3"}
    graded = r[r.status.isin(["pass", "fail"])]
    assert set(graded.check) == {"noisy_variance_order", "noisy_variance_sigma_order", "noisy_bias_order",
                                 "best_beta_order", "same_mean"}
    assert (graded.status == "pass").all(), graded.to_string()
    best = r[r.check == "best_beta_order"].set_index("method").value
    assert best["cep"] == pytest.approx(1 / 3, abs=0.1) and best["pep"] == pytest.approx(0.5, abs=0.1)
    with pytest.raises(PhysgradError, match="read_sigmas"):
        VerifyConfig(read_sigmas=(1e-6,))


@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_report_folder(small_run, tmp_path):
    env = {"command": "test", "git_commit": "x", "git_dirty": False, "seconds": 1.0}
    paths = write_report(small_run, tmp_path / "rep", env)
    back = pd.read_csv(paths["results"])
    assert len(back) == len(small_run)
    text = paths["summary"].read_text()
    assert "PASSED" in text and "Bias order" in text and "0 violations" in text and "EP under read noise" in text
    assert any(p.name == "read_noise.png" for p in paths["figures"])
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


@pytest.mark.slow
def test_read_noise_family_on_a_diode_circuit_and_a_drn():
    """The full suite's read-noise cases (random0: ideal diodes; drn0: a layered network, batch 2)."""
    cases = {c.name: c for c in catalogue(quick=False) if "read_noise" in c.tags}
    assert set(cases) == {"chain3", "random0", "drn0"}
    df = run_suite(cfg=VerifyConfig(read_trials=8), cases=[cases["random0"], cases["drn0"]])
    r = df[(df.family == "read_noise") & df.status.isin(["pass", "fail"])]
    assert set(r.case) == {"random0", "drn0"} and (r.status == "pass").all(), r.to_string()

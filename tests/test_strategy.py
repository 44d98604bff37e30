"""The factorization strategy (physgrad.circuit.solvers.strategy): routes chosen by cost, the same
answer on every route, the fallback from a stalled CG to the direct factorization."""
import numpy as np
import pytest
import scipy.sparse as sp

from physgrad.circuit.elements import Circuit, IdealDiode, Resistor, VoltageSource
from physgrad.circuit.reduction import build_problem
from physgrad.circuit.solve import solve
from physgrad.circuit.solvers import strategy
from physgrad.circuit.solvers.kkt import kkt_reduced
from physgrad.types import SingularSystemError


def _laplacian(n, edges, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.uniform(0.1, 1.0, len(edges))
    A = sp.coo_matrix((g, (edges[:, 0], edges[:, 1])), shape=(n, n))
    A = A + A.T
    return (sp.diags(np.asarray(A.sum(axis=1)).ravel() + 1e-3) - A).tocsr()


def _random_graph(n, seed=0):
    e = np.random.default_rng(seed).integers(0, n, (2 * n, 2))
    return _laplacian(n, e[e[:, 0] != e[:, 1]], seed)


def _chain(n):
    return _laplacian(n, np.stack([np.arange(n - 1), np.arange(1, n)], axis=1))


def ladder(sections, seed=0, vin=5.0):
    """A diode ladder: series resistors, shunt resistors and shunt ideal diodes to ground."""
    rng = np.random.default_rng(seed)
    els = [VoltageSource("vin", "n0", "0", vin)]
    for k in range(1, sections + 1):
        els += [Resistor(f"rs{k}", f"n{k - 1}", f"n{k}", 1.0 / rng.uniform(10, 100)),
                Resistor(f"rp{k}", f"n{k}", "0", 1.0 / rng.uniform(1e3, 1e4)),
                IdealDiode(f"d{k}", f"n{k}", "0", rng.uniform(0.3, 0.7))]
    return Circuit(tuple(els))


def test_cost_model_picks_direct_on_a_chain_and_cg_on_a_random_graph():
    assert strategy.plan(_chain(20_000)).method == "direct"
    p = strategy.plan(_random_graph(8000))
    assert p.method == "iterative" and p.t_iterative < p.t_direct and p.max_iter >= strategy.MIN_CG_ITER


@pytest.mark.parametrize("make", [_chain, _random_graph])
def test_direct_and_iterative_routes_agree(make):
    A = make(4000)
    b = np.random.default_rng(1).standard_normal(A.shape[0])
    s_d, s_i = strategy.new_stats(), strategy.new_stats()
    x_d = strategy.solve_spd(A, b, method="direct", stats=s_d)
    x_i = strategy.solve_spd(A, b, method="iterative", stats=s_i)
    assert s_d["direct"] == 1 and s_d["iterative"] == 0
    assert s_i["iterative"] + s_i["iterative_fallbacks"] == 1
    assert np.max(np.abs(A @ x_d - b)) <= 1e-12 * np.max(np.abs(b))
    np.testing.assert_allclose(x_i, x_d, rtol=0, atol=1e-9 * np.max(np.abs(x_d)))


def test_stalled_cg_falls_back_to_direct(monkeypatch):
    A = _random_graph(4000)
    b = np.random.default_rng(2).standard_normal(A.shape[0])
    monkeypatch.setattr(strategy, "MIN_CG_ITER", 2)
    monkeypatch.setattr(strategy, "CG_MAX_ITER", 2)  # CG cannot converge in 2 iterations
    stats = strategy.new_stats()
    x = strategy.solve_spd(A, b, method="iterative", stats=stats)
    assert stats == {"direct": 1, "iterative": 0, "iterative_fallbacks": 1, "cg_iterations": 2}
    np.testing.assert_allclose(x, strategy.SPDFactor(A).solve(b), rtol=0, atol=1e-12)


def test_ldlt_factor_reuses_its_analysis_and_reports_singular():
    A = _chain(500)
    f = strategy.SPDFactor(A)
    b = np.ones(500)
    A2 = (A + sp.diags(np.full(500, 0.5))).tocsr()
    f.refactor(A2)
    np.testing.assert_allclose(A2 @ f.solve(b), b, atol=1e-12)
    X = f.solve(np.ones((500, 3)))
    np.testing.assert_allclose(A2 @ X, np.ones((500, 3)), atol=1e-12)
    with pytest.raises(SingularSystemError):
        strategy.SPDFactor(sp.csr_matrix(np.ones((2, 2)))).solve(np.ones(2))


def test_reduced_kkt_routes_agree_on_a_ladder():
    pb = build_problem(ladder(3000))
    sol = solve(ladder(3000))
    W = np.asarray(sol.info["active"], bool)
    assert 0 < W.sum() < W.size
    s_d, s_i = strategy.new_stats(), strategy.new_stats()
    u_d, lam_d = kkt_reduced(pb.H, pb.f, pb.D, pb.d, W, iterative=False, stats=s_d)
    u_i, lam_i = kkt_reduced(pb.H, pb.f, pb.D, pb.d, W, iterative=True, stats=s_i)
    assert s_d["direct"] == 1 and s_i["iterative"] + s_i["iterative_fallbacks"] == 1
    np.testing.assert_allclose(u_i, u_d, rtol=0, atol=1e-9)
    np.testing.assert_allclose(lam_i, lam_d, rtol=0, atol=1e-9 * np.max(np.abs(lam_d)))


def test_large_ladder_solves_by_ldlt_not_thousands_of_cg_iterations():
    sol = solve(ladder(4000, vin=0.2))  # no diode conducts: one chain of 4000 nodes
    stats = sol.info["linear_solves"]
    assert sol.certificate.passed
    assert stats["direct"] >= 1 and stats["cg_iterations"] == 0

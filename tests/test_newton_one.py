"""The single-circuit Shockley Newton (``physgrad solve``): :func:`batch_newton._newton_one` against the
lockstep batch loop it copies (issue 17: equal within 1e-12 V; bit for bit with the LDL^T, to round-off
with the dense Cholesky of small circuits), through ``solve`` on random grids, strongly driven ones,
circuits that need the ideal-diode start and the homotopies, and nudged phases; and the precomputed KCL
scales against their one definition."""
from functools import partial

import numpy as np
import pytest

import physgrad.circuit.solvers.batch_newton as batch_mod
import physgrad.circuit.solvers.newton as newton_mod
from physgrad.circuit.elements import VoltageSource
from physgrad.circuit.netlist import parse_netlist
from physgrad.circuit.reduction import build_problem
from physgrad.circuit.solve import solve
from physgrad.circuit.solvers.batch_newton import newton_batch
from physgrad.types import FREE, Nudge
from tests.test_robust import RECTIFIER  # the 17 V rectifier that needs the ideal-diode start
from verification.circuits import random_grid_graph, training_graph

V_TOL = 1e-12  # the bound (V)



def _driven(c, seed, scale):
    """The circuit with fresh source values uniform in +-scale x max(|value|, 1 V)."""
    rng = np.random.default_rng(seed)
    srcs = [e for e in c.elements if isinstance(e, VoltageSource)]
    return c.with_sources({s.name: float(rng.uniform(-1, 1) * scale * max(abs(s.value), 1.0)) for s in srcs})


def _cases():
    out = []
    for seed in range(3):
        for scale in (1.0, 30.0):
            out.append((f"grid{seed}x{scale:g}", _driven(random_grid_graph(40, seed, shockley=True), seed, scale)))
    c, _, _ = training_graph(30, 4, shockley=True)
    out.append(("training", _driven(c, 4, 5.0)))
    out.append(("rectifier", parse_netlist(RECTIFIER, "rect.cir")))  # far forward: ideal-diode start
    return out


def _both(monkeypatch, circuit, **kw):
    """``solve`` with the one-sample loop (the default) and with the lockstep loop forced."""
    new = solve(circuit, strict=False, **kw)
    with monkeypatch.context() as m:
        m.setattr(newton_mod, "newton_batch", partial(newton_batch, lockstep=True))
        old = solve(circuit, strict=False, **kw)
    return new, old


def _assert_same(new, old, exact=False):
    """Same status, certified, voltages within V_TOL. ``exact`` (the LDL^T in both loops: the same
    arithmetic): identical voltages, iterations and messages; else (dense Cholesky against LDL^T, steps
    equal to round-off) the stopping tests may fall one iteration apart."""
    assert new.status == old.status == "converged"
    assert new.certificate.passed and old.certificate.passed
    np.testing.assert_allclose(new.voltages, old.voltages, rtol=0, atol=V_TOL)
    if exact:
        assert np.array_equal(new.voltages, old.voltages)
        assert new.n_iter == old.n_iter and new.message == old.message
    else:
        assert abs(new.n_iter - old.n_iter) <= 1


@pytest.mark.parametrize("dense", [True, False], ids=["cholesky", "ldl"])
@pytest.mark.parametrize("name,circuit", _cases(), ids=[c[0] for c in _cases()])
def test_one_sample_loop_equals_lockstep_loop(monkeypatch, name, circuit, dense):
    if not dense:
        monkeypatch.setattr(batch_mod, "DENSE_FACTOR_MAX", 0)
    calls = []
    real = batch_mod._dense_newton_step
    monkeypatch.setattr(batch_mod, "_dense_newton_step", lambda *a: calls.append(1) or real(*a))
    new, old = _both(monkeypatch, circuit)
    vmax = newton_mod.DENSE_FACTOR_VMAX
    used = dense and build_problem(circuit, FREE, None, None).voltage_scale <= vmax
    _assert_same(new, old, exact=not used or np.max(np.abs(new.voltages)) > vmax)
    assert not calls or used


def test_dense_factor_is_used_on_the_benchmark_grid(monkeypatch):
    """The 100-node Shockley grid of benchmarks/graphs.py's table A (1-10 V sources) takes the dense route."""
    calls = []
    real = batch_mod._dense_newton_step
    monkeypatch.setattr(batch_mod, "_dense_newton_step", lambda *a: calls.append(1) or real(*a))
    c = _driven(random_grid_graph(100, 0, shockley=True), 1, 1.0)
    _assert_same(*_both(monkeypatch, c))
    assert calls


def test_nudged_phase_equal(monkeypatch):
    c, _, outputs = training_graph(30, 1, shockley=True)
    nudge = Nudge(1e-3, target=np.full(len(outputs), 0.2))
    _assert_same(*_both(monkeypatch, _driven(c, 1, 3.0), nudge=nudge, outputs=list(outputs)))


def test_fallback_after_plain_newton_fails_equal(monkeypatch):
    """Plain Newton cut off after 2 iterations: the ideal-diode start and the robust route take over in both."""
    monkeypatch.setattr(newton_mod, "PLAIN_MAX_ITER", 2)
    new, old = _both(monkeypatch, _driven(random_grid_graph(40, 7, shockley=True), 7, 20.0))
    _assert_same(new, old)
    assert new.n_iter > 2


def test_homotopy_fallback_equal(monkeypatch):
    """gmin stepping after a forced failure (as tests/test_robust.py) gives the same answer in both loops."""
    c = _driven(random_grid_graph(30, 2, shockley=True), 2, 10.0)
    monkeypatch.setattr(newton_mod, "PLAIN_MAX_ITER", 1)
    real = newton_mod._newton
    calls = []

    def flaky(problem, T, t0, u, rtol, max_iter):
        calls.append(rtol)
        if len(calls) % 1000 == 1:  # the first call of each solve fails
            return u, "max_iter", max_iter, "forced failure"
        return real(problem, T, t0, u, rtol, max_iter)

    monkeypatch.setattr(newton_mod, "_newton", flaky)
    new = solve(c, strict=False)
    calls.clear()
    with monkeypatch.context() as m:
        m.setattr(newton_mod, "newton_batch", partial(newton_batch, lockstep=True))
        old = solve(c, strict=False)
    assert "after gmin stepping" in new.message
    _assert_same(new, old)


def test_scale_map_equals_current_scale():
    c = _driven(random_grid_graph(60, 3, shockley=True), 3, 5.0)
    pb = build_problem(c, FREE, None, None)
    smap = pb.current_scale_map()
    rng = np.random.default_rng(0)
    n_shk = pb.S.shape[0]
    for _ in range(3):
        u = rng.uniform(-5, 5, pb.n_u)
        i, sl = rng.uniform(-1, 1, n_shk), rng.uniform(0, 2, n_shk)
        ref = pb.current_scale(u, i, sl)
        np.testing.assert_allclose(smap(u, i, sl), ref, rtol=1e-14, atol=0)
        assert np.all(ref > 0)


def test_scale_map_declines_a_beta_nudge():
    c, _, outputs = training_graph(20, 0, shockley=True)
    pb = build_problem(c, Nudge(1e-3, target=np.zeros(len(outputs))), list(outputs), None)
    assert pb.current_scale_map() is None


def test_newton_batch_of_one_equals_lockstep_directly():
    """The problem-level route: ``newton_batch`` on a batch of one, both loops, same start."""
    c = _driven(random_grid_graph(40, 5, shockley=True), 5, 8.0)
    pb = build_problem(c, FREE, None, None)
    from physgrad.circuit.solvers.batch_newton import BatchProblem, NewtonPattern

    def scales(rows, U, I, SL):
        return np.stack([pb.current_scale(U[k], I[k], SL[k]) for k in range(len(rows))])

    bp = BatchProblem(pb.H.tocsr(), pb.f[None, :], pb.S.tocsr(), pb.e[None, :], np.array([pb.const]),
                      newton_mod._params(pb), scales, np.array([pb.voltage_scale]))
    u0 = np.zeros((1, pb.n_u))
    b = newton_batch(bp, NewtonPattern(pb.H, pb.S), u0, lockstep=True)
    a = newton_batch(bp, NewtonPattern(pb.H, pb.S), u0, dense_factor=True)  # dense Cholesky
    assert pb.n_u <= batch_mod.DENSE_FACTOR_MAX
    np.testing.assert_allclose(a.u, b.u, rtol=0, atol=V_TOL)
    assert list(a.status) == list(b.status) == ["converged"] and abs(int(a.n_iter[0]) - int(b.n_iter[0])) <= 1
    a = newton_batch(bp, NewtonPattern(pb.H, pb.S), u0)  # LDL^T: the lockstep arithmetic
    assert np.array_equal(a.u, b.u)
    assert list(a.status) == list(b.status) and list(a.n_iter) == list(b.n_iter)
    assert list(a.messages) == list(b.messages) and a.factorizations == b.factorizations
    assert not np.shares_memory(a.u, u0)


def test_dense_step_declines_what_cholesky_cannot_factor():
    """Not positive definite or not finite: ``None`` (the LDL^T of the pattern takes that iteration)."""
    H = np.array([[2.0, 0.0], [0.0, -1.0]])
    S = np.array([[1.0, 0.0]])
    g = np.array([1.0, 1.0])
    assert batch_mod._dense_newton_step(H, S, np.array([0.5]), g) is None
    assert batch_mod._dense_newton_step(np.eye(2), S, np.array([np.inf]), g) is None
    d = batch_mod._dense_newton_step(np.eye(2), S, np.array([1.0]), g)
    np.testing.assert_allclose(d, [[-0.5, -1.0]], rtol=1e-15)


def test_current_source_beyond_the_dense_scope_reruns_ldl(monkeypatch):
    """A 1 V source, but a current source drives a node to ~500 V: the dense answer is out of scope, the
    LDL^T route runs again, and the answer is the lockstep loop's bit for bit."""
    text = """driven
V1 in 0 DC 1
R1 in a 1k
I1 0 a DC 0.5
D1 0 a DM
R2 a b 2k
D2 b 0 DM
.model DM D(IS=1e-14 N=1.2)
.end
"""
    calls = []
    real = batch_mod._dense_newton_step
    monkeypatch.setattr(batch_mod, "_dense_newton_step", lambda *a: calls.append(1) or real(*a))
    new, old = _both(monkeypatch, parse_netlist(text, "driven.cir"))
    assert calls and np.max(np.abs(new.voltages)) > newton_mod.DENSE_FACTOR_VMAX
    _assert_same(new, old, exact=True)

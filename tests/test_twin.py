"""The twin transistor network (issue 21): its batched solver against the MNA route and ngspice, its
adjoint gradient against finite differences and against the MNA adjoint, the local rule's limit.

Tolerances: equilibria 1e-9 V against physgrad's MNA Newton (both solve ngspice's MOS1 law to
round-off); gradients 1e-5 relative (central differences, step 1e-5 V); the local rule's cosine with
the exact gradient >= 0.98 with small drops (edges nearly linear), where coupled learning is the
gradient of a reciprocal network.
"""
from __future__ import annotations

import numpy as np
import pytest

from physgrad.circuit.adjoint import mna_gradient
from physgrad.circuit.solve import solve
from physgrad.netlists.twin import (TwinConfig, TwinNetwork, cost_and_gradient, error_modes, local_update,
                                    solve_batch, torus_edges, train)
from physgrad.types import PhysgradError

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
Y_XOR = np.where(X[:, 0] != X[:, 1], 0.2, -0.2)[:, None]


def _net(gate="ground", differential=True):
    return TwinNetwork(16, torus_edges(), inputs=(5, 15), fixed=((0, 0.0), (10, 1.0)),
                       outputs=(3, 12) if differential else (3,), differential=differential, gate=gate)


def _vg(seed=0):
    return 2.5 + 0.3 * np.random.default_rng(seed).standard_normal(32)


@pytest.mark.parametrize("gate", ["ground", "midpoint"])
def test_batched_solver_matches_the_mna_route(gate):
    _assert_batched_equals_mna(_net(gate), _vg(), X, Y_XOR, 0.3, (1, 3))


def _assert_batched_equals_mna(net, vg, Xs, Y, eta, rows):
    """The batched solver's free and clamped states (clamp ``eta`` towards ``Y``) of inputs ``Xs[rows]``
    equal the one-circuit MNA Newton route's node voltages to 1e-9 V."""
    eq = solve_batch(net, vg, Xs)
    clamp = net.clamp(eq.v, Y, eta)
    eqc = solve_batch(net, vg, Xs, clamp=clamp)
    for k in rows:
        for v, cl in ((eq.v, None), (eqc.v, clamp[k])):
            sol = solve(net.circuit(vg, Xs[k], cl))
            assert sol.solver == "mna-newton"
            volts = sol.voltage_dict()  # node 0 is ground (absent) when the gates are referenced to it
            got = np.array([volts.get("n0", 0.0) if j == 0 else volts[f"n{j}"] for j in range(net.n_nodes)])
            assert np.max(np.abs(got - v[k])) <= 1e-9


@pytest.mark.parametrize("gate", ["ground", "midpoint"])
def test_gradient_matches_differences_and_the_mna_adjoint(gate):
    net, vg = _net(gate, differential=False), _vg(1)
    Y = np.full((4, 1), 0.45)
    C, g = cost_and_gradient(net, vg, X, Y, solve_batch(net, vg, X))
    h = 1e-5
    fd = np.array([(cost_and_gradient(net, vg + h * e, X, Y, solve_batch(net, vg + h * e, X))[0]
                    - cost_and_gradient(net, vg - h * e, X, Y, solve_batch(net, vg - h * e, X))[0]) / (2 * h)
                   for e in np.eye(32)])
    assert np.max(np.abs(g - fd)) <= 1e-5 * np.max(np.abs(fd))
    # the MNA adjoint of one example's circuit (its gate sources' gradient), averaged as the cost is
    mna = np.zeros(32)
    for k in range(4):
        c = net.circuit(vg, X[k])
        c = c.with_targets({"n3": 0.45})
        res = mna_gradient(c, resistors=(), sources=tuple(f"vg{e}" for e in range(32)))
        mna += res.source_grad / 4
    assert np.max(np.abs(g - mna)) <= 1e-7 * np.max(np.abs(g))


def test_local_rule_is_the_gradient_for_small_drops():
    s = 0.01  # 10 mV inputs: every edge in its linear region, nearly a linear conductance
    net = TwinNetwork(16, torus_edges(), inputs=(5, 15), fixed=((0, 0.0), (10, s)), outputs=(3, 12))
    vg, Y = _vg(), np.full((4, 2), 0.5 * s)
    free = solve_batch(net, vg, X * s)
    _, g = cost_and_gradient(net, vg, X * s, Y, free)
    u = local_update(net, free, solve_batch(net, vg, X * s, clamp=net.clamp(free.v, Y, 1e-3)), 1e-3)
    assert -(u @ g) / (np.linalg.norm(u) * np.linalg.norm(g)) >= 0.98


def test_training_records_and_refusals():
    net = _net()
    h = train(net, X, Y_XOR, TwinConfig(eta=0.1, rate=5.0, steps=20, record_every=10), "exact", v_gate0=_vg())
    assert h.step == [0, 10, 20] and h.cost[-1] < h.cost[0] and all(-1 <= c <= 1 for c in h.cosine)
    assert np.all((h.v_gate >= 0) & (h.v_gate <= 5))
    with pytest.raises(PhysgradError, match="rule"):
        train(net, X, Y_XOR, TwinConfig(steps=1), "ep")
    with pytest.raises(PhysgradError, match="distinct"):
        TwinNetwork(16, torus_edges(), inputs=(5, 15), fixed=((5, 0.0),), outputs=(3,))
    with pytest.raises(PhysgradError, match="eta"):
        TwinConfig(eta=0.0)


def test_error_modes_are_orthonormal_coefficients():
    x = np.linspace(0, 1, 9)
    err = 0.3 + 0.2 * (x - 0.5) + 0.1 * ((x - 0.5) ** 2)
    c = error_modes(x, err)
    assert np.linalg.norm(c) == pytest.approx(np.linalg.norm(err))
    assert np.allclose(error_modes(x, np.full(9, 0.7))[1:], 0, atol=1e-14)


def _pnas_net(differential=True):
    """The paper's regime (ALD1106 edges: body effect and channel-length modulation on)."""
    from physgrad.netlists.twin import ALD1106_L, ALD1106_MODEL, ALD1106_W
    if differential:  # XOR: rails 0.11 / 0.33 V, no node at 0 V
        return TwinNetwork(16, torus_edges(), inputs=(15, 13), fixed=((5, 0.11), (7, 0.33)), outputs=(10, 0),
                           differential=True, model=ALD1106_MODEL, W=ALD1106_W, L=ALD1106_L)
    return TwinNetwork(16, torus_edges(), inputs=(15, 13), fixed=((5, 0.0), (7, 0.45)), outputs=(10,),
                       model=ALD1106_MODEL, W=ALD1106_W, L=ALD1106_L)


def test_ald1106_regime_matches_the_mna_route():
    # gates from below threshold to deep on: every region of the edges, with GAMMA and LAMBDA non-zero
    vg = np.random.default_rng(3).uniform(0.4, 4.0, 32)
    _assert_batched_equals_mna(_pnas_net(), vg, 0.45 * X, np.where(X[:, :1] != X[:, 1:], -0.087, 0.0), 0.5, (0, 2))


def test_ald1106_gradient_matches_differences():
    net = _pnas_net(differential=False)
    vg = np.random.default_rng(4).uniform(0.8, 4.0, 32)
    Xp, Y = 0.45 * X, np.full((4, 1), 0.2)
    _, g = cost_and_gradient(net, vg, Xp, Y, solve_batch(net, vg, Xp))
    h = 1e-5

    def C(v):
        return cost_and_gradient(net, v, Xp, Y, solve_batch(net, v, Xp))[0]

    fd = np.array([(C(vg + h * e) - C(vg - h * e)) / (2 * h) for e in np.eye(32)])
    assert np.max(np.abs(g - fd)) <= 1e-5 * np.max(np.abs(fd))


def test_hardware_rate_is_the_per_example_rule_summed():
    from physgrad.netlists.twin import hardware_rate
    net, vg = _pnas_net(differential=False), np.random.default_rng(5).uniform(1.0, 4.0, 32)
    Xp, Y, gamma, eta = 0.45 * X, np.full((4, 1), 0.2), 0.4, 0.7
    free = solve_batch(net, vg, Xp)
    clamped = solve_batch(net, vg, Xp, clamp=net.clamp(free.v, Y, eta))
    a, b = net.edges[:, 0], net.edges[:, 1]
    per_example = gamma * np.sum((free.v[:, a] - free.v[:, b]) ** 2 - (clamped.v[:, a] - clamped.v[:, b]) ** 2, axis=0)
    batch = hardware_rate(net, gamma, eta, 4) * local_update(net, free, clamped, eta)
    assert np.allclose(batch, per_example, rtol=1e-12, atol=0)
    with pytest.raises(PhysgradError, match="gamma"):
        hardware_rate(net, 0.0, 0.5, 4)


@pytest.mark.slow
def test_pnas_regime_can_represent_the_saturating_ramp():
    """The exact gradient, unconstrained by locality (L-BFGS-B), removes the curvature error of the
    paper's 8-point target on the paper's regime (the diagnosis in the report)."""
    from scipy.optimize import minimize
    net = TwinNetwork(16, torus_edges(), inputs=(15,), fixed=((5, 0.0), (7, 0.45)), outputs=(10,),
                      model=_pnas_net().model, W=_pnas_net().W, L=_pnas_net().L)
    Xr = np.array([0.0005, 0.0628, 0.1251, 0.1873, 0.2479, 0.3118, 0.3724, 0.4347])[:, None]
    Yr = np.array([0.1088, 0.1472, 0.1872, 0.2256, 0.2649, 0.3041, 0.3041, 0.3041])[:, None]
    vg0 = 3.0 + 0.01 * np.random.default_rng(0).standard_normal(32)

    def f(v):
        return cost_and_gradient(net, v, Xr, Yr, solve_batch(net, v, Xr))

    m0 = error_modes(Xr[:, 0], net.predict(solve_batch(net, vg0, Xr).v)[:, 0] - Yr[:, 0])
    r = minimize(f, vg0, jac=True, method="L-BFGS-B", bounds=[(0.4, 8.0)] * 32,
                 options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12})
    m = error_modes(Xr[:, 0], net.predict(solve_batch(net, r.x, Xr).v)[:, 0] - Yr[:, 0])
    assert abs(m[2]) < 0.1 * abs(m0[2]) and r.fun < 1e-2 * f(vg0)[0]


def test_annealing_scales_each_step():
    """Step k's change (update and leak) is scaled by 1 / (1 + k / T): two steps by hand."""
    net, vg0 = _net(), _vg(2)
    cfg = TwinConfig(eta=0.1, rate=2e4, tau_steps=50.0, v_rest=2.5, steps=2, record_every=1, anneal_steps=1.0)
    got = train(net, X, Y_XOR, cfg, "local", v_gate0=vg0).v_gate
    vg = vg0.copy()
    for k in range(2):
        free = solve_batch(net, vg, X)
        u = local_update(net, free, solve_batch(net, vg, X, clamp=net.clamp(free.v, Y_XOR, 0.1)), 0.1)
        vg = np.clip(vg + (cfg.rate * u - (vg - 2.5) / 50.0) / (1.0 + k), 0.0, 5.0)
    assert np.max(np.abs(got - vg)) <= 1e-9 and np.max(np.abs(got - vg0)) > 1e-3
    with pytest.raises(PhysgradError, match="anneal_steps"):
        TwinConfig(anneal_steps=0.0)

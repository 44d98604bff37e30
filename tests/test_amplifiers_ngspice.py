"""Controlled sources against ngspice: steady states, gradients, the ReLU-MLP circuit.

Tolerances
----------
- Steady states of circuits with E/F/G/H elements and Shockley diodes: 1e-6 V (the issue's
  requirement). Both tools solve the same equations (ngspice's diode law, gmin and vt; E/F/G/H are
  linear), and the netlists set ``.options reltol=1e-6 vntol=1e-9 abstol=1e-15``; measured here:
  <= 2e-14 V on 25 random circuits.
- Exact (adjoint) gradient of linear amplifier circuits against central differences of ngspice
  solutions (relative step 1e-3): 1e-5 relative (the issue's requirement). ngspice solves a linear
  circuit exactly (one LU, float64 raw file); the difference quotient's truncation error is ~1e-7
  relative at this step; measured <= 6e-7 on 6 circuits.
- The ReLU MLP with its ideal diodes exported as steep Shockley diodes: within
  :func:`physgrad.circuit.mlp.ngspice_error_bound` (a few mV).
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from physgrad.circuit.adjoint import mna_gradient
from physgrad.circuit.mlp import mlp_circuit, mlp_forward, ngspice_error_bound
from physgrad.circuit.ngspice import run_ngspice
from physgrad.circuit.solve import solve
from verification.amplifiers import amplifier_chain, random_shockley_controlled

pytestmark = pytest.mark.ngspice
TOL_V = 1e-6
TOL_GRAD = 1e-5


@pytest.fixture(scope="module", autouse=True)
def ngspice_available():
    if shutil.which(os.environ.get("PHYSGRAD_NGSPICE", "ngspice")) is None:
        if os.environ.get("CI"):
            pytest.fail("ngspice is not installed in CI (apt-get install ngspice)")
        pytest.skip("ngspice not installed (apt-get install ngspice)")


@pytest.mark.parametrize("seed, backward, extra", [(0, True, False), (1, True, False), (2, False, False),
                                                    (3, True, True), (4, False, True)])
def test_solve_agrees_with_ngspice(seed, backward, extra):
    c = amplifier_chain(np.random.default_rng(seed), backward=backward, extra=extra)
    sol = solve(c)
    ng = run_ngspice(c)
    err = max(abs(sol.voltage(n) - ng.voltages[n]) for n in c.nodes)
    assert err <= TOL_V, (err, sol.solver)
    for name, i in ng.currents.items():
        assert abs(sol.current(name) - i) <= 1e-6 * max(1e-3, abs(i))


def _ngspice_fd(c, h):
    node, y = c.targets[0]
    out = []
    for name in c.trainable_names:
        g = c.element(name).conductance
        costs = []
        for s in (1.0, -1.0):
            v = run_ngspice(c.with_conductances({name: g * (1 + s * h)})).voltages[node]
            costs.append(0.5 * (v - y) ** 2)
        out.append((costs[0] - costs[1]) / (2 * h * g))
    return np.array(out)


@pytest.mark.parametrize("seed, backward", [(10, True), (11, True), (12, False), (13, False)])
def test_exact_gradient_agrees_with_ngspice_finite_differences(seed, backward):
    """Linear amplifier circuits: bidirectional (energy-based) and one-way with a G and an H."""
    c = amplifier_chain(np.random.default_rng(seed), backward=backward, shockley=False, extra=not backward)
    res = mna_gradient(c)
    fd = _ngspice_fd(c, 1e-3)
    assert np.max(np.abs(res.grad - fd)) <= TOL_GRAD * np.max(np.abs(fd))


def test_relu_mlp_runs_in_ngspice():
    rng = np.random.default_rng(2)
    sizes = [3, 6, 6, 2]
    Ws = [rng.normal(size=(sizes[i + 1], sizes[i])) for i in range(3)]
    bs = [rng.normal(size=sizes[i + 1]) for i in range(3)]
    mc = mlp_circuit(Ws, bs)
    for _ in range(2):
        x = rng.normal(size=3)
        ng = run_ngspice(mc.with_inputs(x))
        y = np.array([ng.voltages[o] for o in mc.outputs])
        err = np.abs(y - mlp_forward(Ws, bs, x))
        assert np.all(err <= ngspice_error_bound(Ws, bs, x)) and np.max(err) < 1e-2


def test_fuzz_controlled_shockley_against_ngspice():
    """Where both tools answer, they agree to 1e-6 V, or ngspice's answer fails physgrad's KKT
    certificate on the circuit's own equations while physgrad's passes (measured once: ngspice's
    branch current off by 1e-4 relative, its reltol at work). physgrad answers wherever ngspice does."""
    from physgrad.circuit.mna import build_mna, certify_mna

    rng = np.random.default_rng(0)
    agreed = 0
    for _ in range(12):
        c = random_shockley_controlled(rng)
        try:
            ng = run_ngspice(c)
        except Exception:  # ngspice finds no operating point (positive feedback without one, ...)
            continue
        sol = solve(c, strict=False)
        assert sol.converged, sol.message
        err = max(abs(sol.voltage(nd) - ng.voltages[nd]) for nd in c.nodes)
        if err <= TOL_V:
            agreed += 1
            continue
        mp = build_mna(c)
        x = np.concatenate([[ng.voltages[nd] for nd in c.nodes], [ng.currents[b] for b in mp.branches]])
        assert sol.certificate.passed and not certify_mna(mp, x, np.zeros(0)).passed
    assert agreed >= 6

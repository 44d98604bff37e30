"""The contour family of EP estimators: stencils, bias orders, holomorphic EP, switching radius, CLI."""
import json

import numpy as np
import pytest

from physgrad.cli import main
from physgrad.learning import ContourEP, EquilibriumPropagation, ExactGradient, HolomorphicEP, make_estimator
from physgrad.learning.contour import stencil, switching_radius
from physgrad.pytree import tree_flatten
from physgrad.types import PhysgradError
from physgrad.circuit import Circuit, Resistor, VoltageSource
from physgrad.energies.co_content import CoContentEnergy
from physgrad.minimizers.co_content import CoContentMinimizer
from verification.cases import analytic_chain, divider_circuit, drn_case, kink_case, random_case, shockley_case


def rel(a, b):
    a, b = tree_flatten(a)[0], tree_flatten(b)[0]
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("kind,points,degree", [("ep4", 8, 4), ("fp", 8, 2), ("fp", 5, 2), ("fp", 6, 2)])
def test_stencils_differentiate_polynomials_exactly(kind, points, degree):
    """sum_n w_n f(beta_n) = f'(0) for every polynomial up to the stencil's degree."""
    rng = np.random.default_rng(0)
    b = 0.3
    nodes, weights = stencil(kind, b, points)
    assert len(set(nodes)) == len(nodes) and 0.0 not in nodes
    for _ in range(5):
        coef = rng.normal(size=degree + 1)  # f(x) = sum_k coef[k] x^k, f'(0) = coef[1]
        val = sum(w * np.polyval(coef[::-1], x) for x, w in zip(nodes, weights))
        assert val == pytest.approx(coef[1], rel=1e-12, abs=1e-12)
    # the leading bias term: ep4 on x^5 gives -4 b^4; fp on x^3 gives 2 b^2 <cos^4> = 3 b^2 / 4, i.e. a
    # bias of b^2 f3 / 8 (f3 = 6 here), 3/4 of C-EP's b^2 f3 / 6
    if kind == "fp":
        assert sum(w * x ** 3 for x, w in zip(nodes, weights)) == pytest.approx(3 * b ** 2 / 4, rel=1e-12)
    else:
        assert sum(w * x ** 5 for x, w in zip(nodes, weights)) == pytest.approx(-4 * b ** 4, rel=1e-12)


def test_fp_node_bookkeeping():
    nodes, weights = stencil("fp", 1.0, 4)  # cos(0), cos(pi/2)=0, cos(pi), cos(3pi/2)=0: C-EP
    assert nodes == (-1.0, 1.0) and weights == pytest.approx((-0.5, 0.5))
    nodes, weights = stencil("fp", 1.0, 5)  # t_1 and t_4, t_2 and t_3 share a node
    assert len(nodes) == 3 and sum(weights) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("bad", [dict(beta=0), dict(beta=-1), dict(stencil="ep6"), dict(points=3), dict(points=3.5)])
def test_bad_parameters(bad):
    with pytest.raises(PhysgradError):
        ContourEP(**{"beta": 0.1, "stencil": "fp", **bad})


def test_bias_orders_on_a_linear_chain():
    case = analytic_chain(3)
    ex = ExactGradient().compute(case.energy, case.theta, case.x, case.y, case.minimizer).grad

    def err(est):
        return rel(est.estimate(case.energy, case.theta, case.x, case.y, case.minimizer), ex)

    for b in (0.1, 0.05):
        c, e4, f = err(EquilibriumPropagation(b, "centered")), err(ContourEP(b, "ep4")), err(ContourEP(b, "fp"))
        assert f / c == pytest.approx(0.75, rel=1e-3)  # fp's bias is 3/4 of C-EP's
        assert e4 < 1e-2 * c
    r4 = err(ContourEP(0.1, "ep4")) / err(ContourEP(0.05, "ep4"))
    assert np.log2(r4) == pytest.approx(4.0, abs=0.1)
    h3 = err(HolomorphicEP(0.1, 3)) / err(HolomorphicEP(0.05, 3))
    assert np.log2(h3) == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize("make", [lambda: analytic_chain(3), shockley_case])
def test_holomorphic_ep_is_a_second_exact_route(make):
    case = make()
    ex = ExactGradient().compute(case.energy, case.theta, case.x, case.y, case.minimizer).grad
    est = HolomorphicEP(1e-2 * case.beta_scale, 6).estimate(case.energy, case.theta, case.x, case.y, case.minimizer)
    assert rel(est, ex) < 1e-9


def test_holomorphic_ep_refuses_what_is_not_holomorphic():
    case = random_case(0)  # ideal diodes
    with pytest.raises(PhysgradError, match="ideal diodes"):
        HolomorphicEP(1e-2).estimate(case.energy, case.theta, case.x, case.y, case.minimizer)
    case = drn_case(0)  # a layered energy has no quadratic form
    with pytest.raises(PhysgradError, match="quadratic_form"):
        HolomorphicEP(1e-2).estimate(case.energy, case.theta, case.x, case.y, case.minimizer)


def test_ep4_needs_convexity_at_minus_two_beta():
    circ = Circuit((VoltageSource("v1", "in", "0", 1.0), Resistor("r1", "in", "out", 0.01),
                    Resistor("r2", "out", "0", 0.01)), targets={"out": 0.2})
    energy = CoContentEnergy(circ)
    args = (energy, energy.theta0(), None, energy.targets(), CoContentMinimizer())
    ContourEP(0.009, "ep4").estimate(*args)  # 2 x 0.009 < 0.02 S into the output: convex
    with pytest.raises(PhysgradError, match="non-convex"):
        ContourEP(0.011, "ep4").estimate(*args)


def test_switching_radius():
    case = kink_case()  # a diode exactly at its threshold: any nudge of one sign switches it
    r = switching_radius(case.energy, case.theta, case.x, case.y, case.minimizer, 0.1, rtol=1e-3)
    assert 0 <= r < 1e-6
    case = divider_circuit()  # no diodes: nothing can switch
    assert switching_radius(case.energy, case.theta, case.x, case.y, case.minimizer, 0.1) == np.inf
    case = analytic_chain(3)  # a minimizer that reports no active set
    assert switching_radius(case.energy, case.theta, case.x, case.y, case.minimizer, 0.1) is None
    case = random_case(1)
    r = switching_radius(case.energy, case.theta, case.x, case.y, case.minimizer, 0.1, rtol=1e-4)
    assert np.isfinite(r)
    free = case.minimizer.minimize(case.energy, case.theta, case.x)
    from physgrad.types import Nudge

    def key(beta):
        eq = case.minimizer.minimize(case.energy, case.theta, case.x, nudge=Nudge(beta, target=case.y), s0=free.state)
        return [a.tobytes() for a in eq.info["active"]]

    k0 = [a.tobytes() for a in free.info["active"]]
    inside = [key(s * r * 0.999) for s in (1, -1)]
    assert all(k == k0 for k in inside)
    outside = [key(s * r * 1.001) for s in (1, -1)]
    assert any(k != k0 for k in outside)


def test_make_estimator_codes():
    assert make_estimator("ep4", beta=0.1).code == "ep4"
    assert make_estimator("fp", beta=0.1).points == 8
    assert make_estimator("fp", beta=0.1, points=5).points == 5
    assert make_estimator("hep", beta=0.1).points == 6


def test_cli(tmp_path, capsys):
    p = tmp_path / "lin.cir"
    p.write_text("divider\nV1 in 0 1\nR1 in out 1k\nR2 out 0 2k\n.target out 0.2\n")
    assert main(["grad", str(p), "--method", "exact", "--json"]) == 0
    exact = json.loads(capsys.readouterr().out)["grad"]
    for method, tol in (("hep", 1e-9), ("ep4", 1e-6), ("fp", 1e-3)):
        points = ["--points", "6"] if method in ("hep", "fp") else []  # ep4's stencil has no points to choose
        assert main(["grad", str(p), "--method", method, *points, "--json"]) == 0
        res = json.loads(capsys.readouterr().out)
        assert res["beta"] > 0
        for k, v in exact.items():
            assert res["grad"][k] == pytest.approx(v, rel=tol)
    d = tmp_path / "d.cir"
    d.write_text("clip\nV1 in 0 1\nR1 in out 1k\nD1 out 0 ideal\n.model ideal D(ideal=1 vth=0.3)\n.target out 0.2\n")
    assert main(["grad", str(d), "--method", "hep"]) == 2
    assert "ideal diodes" in capsys.readouterr().err
    assert main(["grad", str(d), "--method", "fp", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert "switching_radius_S" in res and res["nudges_cross_a_switch"] is False


def test_shockley_law_continues_analytically():
    """Complex voltages (holomorphic EP) follow each branch's continuation: real inputs agree with the
    real law, and the complex derivative matches the slope (a holomorphic function)."""
    from physgrad.circuit.diode import shockley_current, shockley_slope

    args = (1e-14, 1.0, 0.025864917007157463, 1e-12)
    v = np.linspace(-0.5, 0.7, 49)  # both branches (switch at -3 N vt = -0.0776 V)
    np.testing.assert_allclose(shockley_current(v + 0j, *args).real, shockley_current(v, *args), rtol=1e-12, atol=1e-30)
    h = 1e-7
    for direction in (1.0, 1j):
        dI = (shockley_current(v + h * direction, *args) - shockley_current(v - h * direction, *args)) / (2 * h * direction)
        np.testing.assert_allclose(dI, shockley_slope(v + 0j, *args), rtol=1e-6, atol=1e-22)

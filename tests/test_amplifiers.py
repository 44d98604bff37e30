"""Controlled sources (E, F, G, H): netlists, island weights, the LCP and MNA-Newton routes, the
adjoint gradient, and the ReLU-MLP circuit.

Tolerances
----------
- Exact routes against each other (equivalent circuit vs MNA, Lemke vs semismooth Newton vs the
  active-set solver, enumeration): 1e-9 V. All are exact to round-off (~1e-12 V here) once the
  active set is right; 1e-9 V catches any wrong active set or wrong equation.
- Adjoint gradient against central finite differences of physgrad's own solves (h = 1e-6 relative):
  1e-6 relative (truncation ~h^2, round-off ~1e-12 / h).
- EP (C-EP through the equivalent circuit) against the adjoint: 1e-6 relative (bias ~beta^2 with beta
  1e-4 x the median conductance).
- The ReLU-MLP circuit against the MLP: 1e-9 V (exact construction; LCP polished to round-off).
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from physgrad.circuit.adjoint import mna_gradient
from physgrad.circuit.amplifiers import analyze
from physgrad.circuit.elements import (CCCS, CCVS, VCCS, VCVS, Circuit, DiodeModel,
                                       Resistor, ShockleyDiode, VoltageSource)
from physgrad.circuit.mlp import mlp_circuit, mlp_forward
from physgrad.circuit.mna import build_mna
from physgrad.circuit.netlist import NetlistError, parse_netlist, write_netlist
from physgrad.circuit.reduction import build_problem
from physgrad.circuit.solve import solve
from physgrad.circuit.solvers import lcp
from physgrad.cli import main
from physgrad.types import Nudge, PhysgradError
from verification.amplifiers import (all_equilibria, amplifier, kendall_chain, random_controlled,
                                     three_equilibria_cell)

TOL_V = 1e-9


# --- elements and netlists --------------------------------------------------------------------------
def test_controlled_elements_validate():
    with pytest.raises(PhysgradError, match="controlled by the current of 'vx'"):
        Circuit((Resistor("r1", "a", "0", 1.0), CCCS("f1", "a", "0", "vx", 2.0)))
    with pytest.raises(PhysgradError, match="which is not an element of the circuit"):
        Circuit((Resistor("r1", "a", "0", 1.0), CCVS("h1", "a", "0", "vq", 2.0)))
    with pytest.raises(PhysgradError, match="must start with 'V'"):
        CCCS("f1", "a", "0", "i1", 2.0)
    with pytest.raises(PhysgradError, match="between node 'a' and itself"):
        VCVS("e1", "b", "0", "a", "a", 2.0)
    with pytest.raises(PhysgradError, match="must start with 'E'"):
        VCVS("x1", "b", "0", "a", "0", 2.0)
    with pytest.raises(PhysgradError, match="gain of e1 must be finite"):
        VCVS("e1", "b", "0", "a", "0", float("nan"))


def test_netlist_round_trip_and_subcircuits():
    text = """amplifiers
V1 in 0 1
R1 in x 1k
R2 x 0 2k
E1 yi 0 x 0 {2*1.5}
Vs yi y 0
R3 y 0 500
F1 x 0 Vs {1/3}
G1 y 0 x 0 1m
H1 h 0 Vs 100
R4 h 0 1k
.subckt buf a b params: gain=2
E1 bi 0 a 0 {gain}
Vq bi b 0
F1 a 0 Vq {1/gain}
Rq b 0 1k
.ends
X1 x z buf gain=4
.end
"""
    c = parse_netlist(text, "amp.cir")
    e = c.element("e1")
    assert isinstance(e, VCVS) and (e.pos, e.neg, e.cpos, e.cneg, e.gain) == ("yi", "0", "x", "0", 3.0)
    assert c.element("f.x1.f1").control == "v.x1.vq" and c.element("f.x1.f1").gain == 0.25
    assert isinstance(c.element("h1"), CCVS) and isinstance(c.element("g1"), VCCS)
    assert parse_netlist(write_netlist(c)) == c
    an = analyze(c)
    assert not an.energy_based and "g1 is a VCCS" in an.reason and "h1 is a CCVS" in an.reason


@pytest.mark.parametrize("text, pattern", [
    ("t\nv1 a 0 1\nr1 a 0 1\ne1 b 0 a 0\n", r"t\.cir:4: e1: expected 'Ename n\+ n- nc\+ nc- gain'"),
    ("t\nv1 a 0 1\nr1 a 0 1\ne1 b 0 vol='v(a)*2'\n", r"t\.cir:4: e1: the 'vol=' form"),
    ("t\nv1 a 0 1\nr1 a 0 1\nf1 b 0 r1 2\nr2 b 0 1\n", r"t\.cir:4: f1 is controlled by 'r1', which is not a voltage"),
    ("t\nv1 a 0 1\nr1 a 0 1\nh1 b 0 vz 2\n", r"t\.cir:4: h1 is controlled by the current of 'vz', which the deck"),
])
def test_controlled_netlist_errors_name_the_line(text, pattern):
    with pytest.raises(NetlistError, match=pattern):
        parse_netlist(text, "t.cir")


def test_co_content_problem_refuses_controlled_sources():
    with pytest.raises(PhysgradError, match="mna_gradient"):
        build_problem(kendall_chain())


# --- islands and weights ------------------------------------------------------------------------------
def test_islands_of_a_chain():
    an = analyze(kendall_chain(gains=(4.0, -2.0, 3.0), backward=(0.25, -0.5, 3.0)))
    assert len(an.islands) == 4 and len(an.amplifiers) == 3
    # c_Q = c_P B/A with c = 1 on the output island (the target x3)
    assert np.allclose(an.weights, [1 / (1 / 16 * 1 / 4 * 1.0), 1 / (1 / 4 * 1.0), 1.0, 1.0])
    assert np.allclose(an.scales, [1 / (4 * -2 * 3), 1 / (-2 * 3), 1 / 3, 1.0])
    assert an.has_equivalent and "energy-based" in an.describe()


def test_islands_of_a_tree():
    """One island feeding two (a fan-out): always energy-based; the sense source may be written
    either way round (the F's sign follows)."""
    els = [VoltageSource("v1", "in", "0", 1.0), Resistor("r1", "in", "x", 1.0), Resistor("r2", "x", "0", 1.0)]
    els += amplifier(1, "x", "p", 2.0, 0.5) + amplifier(2, "x", "q", 3.0, 3.0, inverted_sense=True)
    els += [Resistor("rp", "p", "0", 1.0), Resistor("rq", "q", "0", 2.0)]
    an = analyze(Circuit(tuple(els)))
    assert len(an.islands) == 3
    P, Q1, Q2 = an.island["x"], an.island["p"], an.island["q"]
    assert an.weights[P] == 1.0 and np.isclose(an.weights[Q1], 0.25) and np.isclose(an.weights[Q2], 1.0)
    assert [a.backward for a in an.amplifiers] == [0.5, 3.0]


def _loop(B2):
    """Islands P and Q joined both ways: P -> Q (A = 2, B = 1/2) and Q -> P (A = 2, B = B2)."""
    els = [VoltageSource("v1", "in", "0", 1.0), Resistor("r1", "in", "x", 1.0), Resistor("r2", "x", "0", 1.0),
           Resistor("r3", "x", "x2", 1.0)]
    els += amplifier(1, "x", "y", 2.0, 0.5) + [Resistor("r4", "y", "0", 1.0), Resistor("r5", "y", "y2", 1.0)]
    els += amplifier(2, "y2", "x2", 2.0, B2)
    return Circuit(tuple(els))


def test_islands_of_loops():
    matched = analyze(_loop(8.0))  # product of B/A around the loop: (1/4) (8/2) = 1
    assert matched.energy_based and not matched.has_equivalent and "gains around a loop" in matched.why_not_equivalent
    mismatched = analyze(_loop(2.0))  # (1/4) (2/2) = 1/4
    assert not mismatched.energy_based and "mismatched amplifier loop" in mismatched.reason
    for c in (_loop(8.0), _loop(2.0)):  # both are still solved, on the MNA equations
        sol = solve(c)
        assert sol.solver.startswith("lcp") and sol.certificate.passed
        assert sol.info["unique"]  # no diodes: a nonsingular linear system has one solution


def test_one_way_and_positive_feedback_are_not_energy_based():
    c = kendall_chain(gains=(4.0,), backward=(-0.25,))
    an = analyze(c)
    assert not an.energy_based and "positive feedback" in an.reason
    one_way = Circuit(tuple(el for el in kendall_chain(gains=(4.0,)).elements if not isinstance(el, CCCS)))
    assert "one-way VCVS" in analyze(one_way).reason


# --- solving ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shockley", [False, True])
def test_equivalent_circuit_route_matches_mna(shockley):
    c = kendall_chain(shockley=shockley)
    auto = solve(c)
    assert "[equivalent]" in auto.solver and auto.info["unique"] and "the unique steady state" in auto.message
    direct = solve(c, "mna-newton" if shockley else "lcp")
    assert np.max(np.abs(auto.voltages - direct.voltages)) <= TOL_V
    others = ("newton",) if shockley else ("activeset", "coordinate", "newton")
    for name in others:
        assert np.max(np.abs(solve(c, name).voltages - direct.voltages)) <= TOL_V
    # the minimised objective is the island-weighted co-content = the equivalent circuit's co-content
    eq_sol = auto.info["equivalent_solution"]
    assert np.isclose(auto.energy, eq_sol.co_content, rtol=1e-9, atol=1e-15)


def test_weighted_co_content_is_minimal():
    """The steady state minimises sum_I c_I E_I over states that respect the amplifiers (feasible
    perturbations: move the input island, let every output follow by its gain)."""
    c = kendall_chain(shockley=True, ideal=False)
    sol = solve(c)
    an = analyze(c)
    eq = an.equivalent()
    w0 = {n: v / a for n, v, a in zip(c.nodes, sol.voltages, an.node_scales())}
    rng = np.random.default_rng(0)
    from physgrad.circuit.mna import assemble_mna
    mp = build_mna(c)
    for _ in range(5):
        w = dict(w0)
        for k in range(3):  # move every free node; each amplifier's output (and its sense node) follows
            w[f"x{k}"] += 1e-3 * rng.normal()
        for k in (1, 2):
            w[f"a{k}"] = w[f"y{k}"] = w[f"x{k - 1}"]
        x = np.concatenate([eq.voltages(w), np.zeros(mp.size - mp.n)])
        perturbed = assemble_mna(mp, x, np.zeros(mp.m), status="max_iter", solver="-", n_iter=0,
                                 weights=an.element_weights())
        assert perturbed.energy > sol.energy


def test_three_equilibria_cell():
    c = three_equilibria_cell()
    sol = solve(c)
    assert sol.converged and not sol.info["unique"] and "an equilibrium; others may exist" in sol.message
    found = {round(v, 12) for v in [sol.voltage("x")]}
    everything = sorted(round(float(v[0]), 12) for v in all_equilibria(build_mna(c)))
    assert everything == [-1.0, 0.0, 1.0] and found <= set(everything)
    # warm starts reach the other two
    for active, x in (([True, False], 1.0), ([False, True], -1.0)):
        other = solve(c, "lcp", method="newton", active0=np.array(active))
        assert abs(other.voltage("x") - x) <= TOL_V and not other.info["unique"]
    with pytest.raises(PhysgradError, match="has none it can use"):
        solve(c, "activeset")


def test_lcp_answer_is_among_all_active_sets():
    """Random circuits with one-way VCVS, VCCS and up to 12 ideal diodes: the LCP's answer is one
    of the equilibria found by enumerating every active set."""
    rng = np.random.default_rng(1)
    solved = 0
    for trial in range(12):
        c = random_controlled(rng, m=int(rng.integers(1, 13)) if trial else 12)
        mp = build_mna(c)
        eqs = all_equilibria(mp)
        sol = solve(c, strict=False)
        if not eqs:
            assert sol.status in ("infeasible", "solver_error")
            continue
        assert sol.converged, sol.message
        assert min(np.max(np.abs(sol.voltages - v)) for v in eqs) <= TOL_V
        if sol.info["unique"]:
            assert len(eqs) == 1
        solved += 1
    assert solved >= 6


def test_lcp_newton_route_on_a_large_port_count(monkeypatch):
    rng = np.random.default_rng(3)
    c = random_controlled(rng, n=30, m=40, n_ctrl=4, gain=0.5)
    ref = solve(c, "lcp", method="lemke", strict=False)
    monkeypatch.setattr(lcp, "LEMKE_MAX_PORTS", 5)
    big = solve(c, "lcp", strict=False)
    assert big.solver == "lcp[newton]" and ref.status == big.status
    if ref.converged:
        assert np.max(np.abs(ref.voltages - big.voltages)) <= TOL_V


def test_lcp_on_reciprocal_circuits_matches_activeset():
    """On reciprocal circuits (no controlled sources) Lemke and the semismooth Newton route give the
    active-set solver's answer and call it unique."""
    rng = np.random.default_rng(5)
    for _ in range(5):
        c = random_controlled(rng, m=8, n_ctrl=0)
        ref = solve(c, "activeset", strict=False)
        for method in ("lemke", "newton"):
            got = solve(c, "lcp", method=method, strict=False)
            # Lemke proves infeasibility (a ray with M positive semidefinite); Newton only fails
            assert got.status == ref.status or (method == "newton" and ref.status == "infeasible"
                                                and got.status == "solver_error")
            if ref.converged:
                assert np.max(np.abs(got.voltages - ref.voltages)) <= TOL_V and got.info["unique"]


def test_nudges_and_clamps_on_amplifier_circuits():
    c = kendall_chain(shockley=False)
    out = [c.targets[0][0]]
    for nudge in (Nudge(1e-3, target=[0.05]), Nudge(-1e-4, target=[0.05]), Nudge(clamp=[0.2])):
        a = solve(c, nudge=nudge, outputs=out)
        b = solve(c, "lcp", nudge=nudge, outputs=out)
        assert np.max(np.abs(a.voltages - b.voltages)) <= TOL_V
    assert abs(solve(c, nudge=Nudge(clamp=[0.2]), outputs=out).voltage(out[0]) - 0.2) <= 1e-12


def test_errors_of_controlled_circuits():
    floating = Circuit((VoltageSource("v1", "a", "0", 1.0), Resistor("r1", "a", "0", 1.0),
                        VCCS("g1", "b", "0", "a", "0", 1.0), Resistor("r2", "b", "c", 1.0)))
    with pytest.raises(PhysgradError, match="floating subnetwork: node\\(s\\) b, c"):
        solve(floating)
    loop_gain_one = Circuit((VoltageSource("v1", "a", "0", 1.0), Resistor("r1", "a", "x", 1.0),
                             VCVS("e1", "x", "0", "x", "0", 1.0)))
    with pytest.raises(PhysgradError, match="singular"):
        solve(loop_gain_one)
    with pytest.raises(PhysgradError, match="reduced co-content problem"):
        from physgrad.circuit.solve import solve_problem
        solve_problem(build_problem(Circuit((VoltageSource("v1", "a", "0", 1.0), Resistor("r1", "a", "0", 1.0)))), "lcp")


def test_shockley_with_one_way_amplifiers_by_mna_newton():
    m = DiodeModel("dm", IS=1e-14, N=1.0)
    c = Circuit((VoltageSource("v1", "in", "0", 0.9), Resistor("r1", "in", "x", 1e-3), ShockleyDiode("d1", "x", "0", m),
                 VCVS("e1", "y", "0", "x", "0", -5.0), Resistor("r2", "y", "z", 1e-2), ShockleyDiode("d2", "z", "0", m),
                 ShockleyDiode("d3", "0", "z", m), Resistor("r3", "z", "x", 1e-4)))
    sol = solve(c)
    assert sol.solver == "mna-newton" and sol.certificate.passed
    assert abs(sol.voltage("y") + 5 * sol.voltage("x")) <= 1e-12


# --- gradients ----------------------------------------------------------------------------------------
def _fd_grad(c, h=1e-6):
    g0 = c.arrays.g
    names = [r.name for r in c.resistors]
    out = []
    node, y = c.targets[0]

    def cost(g):
        return 0.5 * (solve(c, conductances=g).voltage(node) - y) ** 2

    for k, name in enumerate(names):
        if name not in c.trainable_names:
            continue
        step = h * g0[k]
        gp, gm = g0.copy(), g0.copy()
        gp[k] += step
        gm[k] -= step
        out.append((cost(gp) - cost(gm)) / (2 * step))
    return np.array(out)


@pytest.mark.parametrize("which", ["chain", "one-way", "cell"])
def test_adjoint_gradient_matches_finite_differences(which):
    if which == "chain":
        c = kendall_chain(ideal=True)
    elif which == "one-way":
        c = Circuit(tuple(el for el in kendall_chain(ideal=False).elements if not isinstance(el, CCCS)),
                    targets=kendall_chain().targets)
    else:
        c = three_equilibria_cell().with_elements(VoltageSource("vb", "b", "0", 0.2), Resistor("r3", "b", "x", 0.5))
        c = c.with_targets((("x", 0.3),))
    res = mna_gradient(c)
    fd = _fd_grad(c)
    assert np.allclose(res.grad, fd, rtol=1e-6, atol=1e-9 * np.max(np.abs(fd)))
    assert not res.near_kink


def test_ep_on_the_equivalent_circuit_matches_the_adjoint():
    from physgrad.netlists.grad import grad_result

    for backward in (None, (4.0, -1.0)):  # Kendall's B = 1/A; a transformer (B = A) and B/A = 1/2
        c = kendall_chain(ideal=False, backward=backward)
        exact = grad_result(c, "exact")
        cep = grad_result(c, "cep")
        assert "adjoint" in exact["route"] and "equivalent circuit" in cep["route"]
        e, g = np.array(list(exact["grad"].values())), np.array(list(cep["grad"].values()))
        assert np.allclose(g, e, rtol=1e-6, atol=1e-9 * np.max(np.abs(e)))
    # the factor on a resistor of island I is c_I a_I^2 (c_I / c_L in physical voltages): with
    # c = (2, 2, 1) and a = (-1/8, -1/2, 1) here, 1/32 on the first island, 1/2 on the second
    f = cep["island_factor"]
    assert np.isclose(f["r1"], 1 / 32) and np.isclose(f["rb1"], 0.5) and f["rb2"] == 1.0
    assert np.isclose(cep["island_weight"]["r1"], 2.0) and cep["island_weight"]["rb2"] == 1.0
    # the same through the library: an estimator on CoContentEnergy(equivalent circuit), times trainable_scale
    from physgrad.energies.co_content import CoContentEnergy
    from physgrad.learning import EquilibriumPropagation
    from physgrad.minimizers.co_content import CoContentMinimizer

    eq = analyze(c).equivalent()
    energy = CoContentEnergy(eq.circuit)
    est = EquilibriumPropagation(beta=1e-7, variant="centered").estimate(
        energy, energy.theta0(), None, energy.targets(), CoContentMinimizer())
    assert np.allclose(est * eq.trainable_scale, e, rtol=1e-6, atol=1e-9 * np.max(np.abs(e)))


def test_cli_on_amplifier_circuits(tmp_path, capsys):
    path = tmp_path / "cell.cir"
    c = three_equilibria_cell().with_elements(VoltageSource("vb", "b", "0", 0.2), Resistor("r3", "b", "x", 0.5))
    path.write_text(write_netlist(c.with_targets((("x", 0.3),))))
    assert main(["solve", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kkt"]["passed"] and "others may exist" in out["message"]
    assert main(["grad", str(path), "--method", "cep"]) == 2
    assert "Use --method exact" in capsys.readouterr().err
    assert main(["grad", str(path), "--method", "exact", "--json"]) == 0
    assert "adjoint" in json.loads(capsys.readouterr().out)["route"]


# --- the ReLU MLP -----------------------------------------------------------------------------------
def test_relu_mlp_circuit_computes_the_mlp():
    rng = np.random.default_rng(0)
    sizes = [3, 6, 5, 2]
    Ws = [rng.normal(size=(sizes[i + 1], sizes[i])) for i in range(3)]
    bs = [rng.normal(size=sizes[i + 1]) for i in range(3)]
    Ws[1][0, :] = 0.0  # a unit without inputs
    mc = mlp_circuit(Ws, bs)
    for _ in range(4):
        x = rng.normal(size=3)
        sol = solve(mc.with_inputs(x))
        y = np.array([sol.voltage(o) for o in mc.outputs])
        assert np.max(np.abs(y - mlp_forward(Ws, bs, x))) <= TOL_V
        assert sol.info["unique"]
    assert parse_netlist(write_netlist(mc.circuit)) == mc.circuit
    with pytest.raises(PhysgradError, match="layer 2 takes 4 inputs"):
        mlp_circuit([np.ones((3, 2)), np.ones((1, 4))], [np.zeros(3), np.zeros(1)])


def test_lemke_on_degenerate_and_random_lcps():
    """Lemke's lexicographic rule on ties (q = -1 everywhere) and on random P-matrices (positive
    definite symmetric part): the answer is complementary, and the unique one found by enumeration."""
    rng = np.random.default_rng(7)
    for trial in range(20):
        m = int(rng.integers(1, 7))
        B = rng.normal(size=(m, m))
        M = B @ B.T + 0.1 * np.eye(m) + (rng.normal(size=(m, m)) * (trial % 2))
        M = M - (M - M.T) / 2 if trial % 4 == 0 else M
        if not lcp.m_sym_pd(M):
            continue
        q = -np.ones(m) if trial % 3 == 0 else rng.normal(size=m)
        z, status, _ = lcp.lemke(M, q)
        assert status == "solution"
        w = M @ z + q
        assert np.all(z >= 0) and np.all(w >= -1e-10) and abs(z @ w) <= 1e-10
        sols = []
        for bits in itertools.product([False, True], repeat=m):
            W = np.array(bits)
            zz = np.zeros(m)
            if W.any():
                zz[W] = np.linalg.solve(M[np.ix_(W, W)], -q[W])
            ww = M @ zz + q
            if np.all(zz >= -1e-12) and np.all(ww[~W] >= -1e-12):
                sols.append(zz)
        assert len(sols) == 1 and np.allclose(sols[0], z, atol=1e-10)
    # a secondary ray: w = -z - 1 >= 0 is impossible
    assert lcp.lemke(-np.eye(2), -np.ones(2))[1] == "ray"
    assert lcp.block_p_matrix(np.array([[1.0, 0.0], [5.0, 2.0]])) and not lcp.m_sym_pd(np.array([[1.0, 0.0], [5.0, 2.0]]))
    assert not lcp.block_p_matrix(np.array([[-1.0, 1.0], [1.0, -1.0]]))

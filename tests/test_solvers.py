"""Circuit solvers: hand-derived answers, agreement between independent routes, KKT certificates."""
import numpy as np
import pytest
from scipy.optimize import brentq

from physgrad.circuit.elements import Circuit, DiodeModel, IdealDiode, Resistor, ShockleyDiode, VoltageSource
from physgrad.types import InfeasibleError, NotSolvedError, Nudge, PhysgradError
from physgrad.circuit.solve import solve
from verification.circuits import known_circuits, random_circuit

IDEAL_SOLVERS = ("activeset", "qp", "coordinate")
# Exact routes agree to round-off; 1e-9 V leaves room for coordinate descent's 1e-12 V stopping
# step amplified by a slow contraction rate on the larger random graphs.
ATOL_V = 1e-9
KNOWN = known_circuits()


@pytest.mark.parametrize("case", KNOWN, ids=[c.name for c in KNOWN])
@pytest.mark.parametrize("solver", ("auto",) + IDEAL_SOLVERS)
def test_known_circuits(case, solver):
    sol = solve(case.circuit, solver)
    assert sol.status == "converged"
    assert sol.certificate.passed, sol.certificate.describe()
    for node, v in case.voltages.items():
        assert sol.voltage(node) == pytest.approx(v, abs=1e-12 * max(1, abs(v)) + 1e-12), node
    for name, i in case.currents.items():
        assert sol.current(name) == pytest.approx(i, rel=1e-9, abs=1e-15), name


@pytest.mark.parametrize("seed", range(6))
def test_random_graphs_all_solvers_agree(seed):
    c = random_circuit(25, seed)
    sols = {s: solve(c, s) for s in IDEAL_SOLVERS}
    ref = sols["activeset"]
    for s, sol in sols.items():
        assert sol.certificate.passed, (s, sol.certificate.describe())
        np.testing.assert_allclose(sol.voltages, ref.voltages, rtol=0, atol=ATOL_V, err_msg=s)
        # Currents agree to the same relative accuracy (conductances up to 1e-2 S).
        np.testing.assert_allclose(sol.currents, ref.currents, rtol=0, atol=1e-2 * ATOL_V * 10, err_msg=s)


def test_random_graph_has_active_and_inactive_diodes():
    """The random catalogue exercises both diode states (else agreement would prove little)."""
    c = random_circuit(40, 1, diode_fraction=0.5)
    sol = solve(c)
    i_d = np.array([sol.current(d.name) for d in c.of_type(IdealDiode)])
    assert np.sum(i_d > 1e-9) >= 2 and np.sum(i_d == 0) >= 2


def test_energy_is_minimal():
    """Perturbing the voltages of free nodes (keeping diode constraints) never lowers the co-content."""
    c = random_circuit(15, 3, diode_fraction=0.0)
    sol = solve(c)
    from physgrad.circuit.reduction import build_problem

    p = build_problem(c)
    u = sol.info["u"]
    e0 = p.quadratic_energy(u)
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert p.quadratic_energy(u + 1e-3 * rng.standard_normal(u.shape)) > e0
    assert sol.co_content == pytest.approx(e0, rel=1e-12, abs=1e-15)


def test_shockley_single_diode_against_brentq():
    """v solves (5 - v) g = IS (exp(v / (N vt)) - 1) + gmin v; brentq is an independent route."""
    m = DiodeModel("dm", IS=1e-14, N=1.3)
    g = 1e-3
    c = Circuit((VoltageSource("v1", "in", "0", 5.0), Resistor("r1", "in", "out", g), ShockleyDiode("d1", "out", "0", m)))
    sol = solve(c, "newton")
    f = lambda v: (5.0 - v) * g - (m.IS * np.expm1(v / (m.N * m.vt)) + m.gmin * v)
    v_ref = brentq(f, 0.0, 5.0, xtol=1e-15, rtol=1e-15)
    assert sol.voltage("out") == pytest.approx(v_ref, abs=1e-12)
    assert sol.current("d1") == pytest.approx((5.0 - v_ref) * g, rel=1e-10)
    assert sol.certificate.passed


@pytest.mark.parametrize("N", [1.0, 1e-2, 1e-3])
def test_shockley_near_ideal_approaches_ideal(N):
    """As N -> 0 the Shockley clipper approaches the ideal one (v -> 0): Newton copes without overflow."""
    m = DiodeModel("dm", IS=1e-9, N=N)
    c = Circuit((VoltageSource("v1", "in", "0", 5.0), Resistor("r1", "in", "out", 1e-3), ShockleyDiode("d1", "out", "0", m)))
    sol = solve(c)
    assert sol.solver == "newton" and sol.certificate.passed
    expected = m.N * m.vt * np.log1p(5e-3 / m.IS)  # upper bound of the drop at <= 5 mA
    assert 0 < sol.voltage("out") <= expected


@pytest.mark.parametrize("seed", range(3))
def test_shockley_random_graph_newton_certified(seed):
    c = random_circuit(20, seed, shockley=True, diode_fraction=0.5)
    sol = solve(c, "newton")
    assert sol.certificate.passed, sol.certificate.describe()
    # Independent check of KCL at every non-source node from the element currents themselves.
    from physgrad.circuit.elements import VoltageSource as VS

    net = {n: 0.0 for n in c.nodes}
    for el, i in zip(c.elements, sol.currents):
        a, b = el.nodes
        for node, sign in ((a, -1.0), (b, 1.0)):
            if node != "0":
                net[node] += sign * i
    fixed = {n for el in c.of_type(VS) for n in el.nodes}
    scale = np.max(np.abs(sol.currents))
    for n, s in net.items():
        assert abs(s) <= 1e-9 * scale, n
    del fixed


def test_kcl_including_sources_balances_everywhere():
    """Every node, source nodes included, balances once the source currents are in."""
    c = random_circuit(30, 7)
    sol = solve(c)
    net = {n: 0.0 for n in c.nodes}
    for el, i in zip(c.elements, sol.currents):
        a, b = el.nodes
        if a != "0":
            net[a] -= i
        if b != "0":
            net[b] += i
    assert max(abs(x) for x in net.values()) <= 1e-12


# --- nudges ----------------------------------------------------------------------------------


def test_positive_nudge_is_a_conductance_to_a_source():
    c = known_circuits()[1].circuit  # ladder
    beta, y = 2e-3, 0.9
    nudged = solve(c, nudge=Nudge(beta, np.array([y])), outputs=["b"])
    phys = c.with_elements(VoltageSource("vy", "y", "0", y), Resistor("rbeta", "b", "y", beta))
    ref = solve(phys)
    assert nudged.voltage("b") == pytest.approx(ref.voltage("b"), abs=1e-14)
    assert nudged.voltage("a") == pytest.approx(ref.voltage("a"), abs=1e-14)


def test_clamp_is_a_voltage_source():
    c = random_circuit(12, 2, n_vsources=1)
    out = c.nodes[-1]
    clamped = solve(c, nudge=Nudge(clamp=np.array([0.3])), outputs=[out])
    ref = solve(c.with_elements(VoltageSource("vc", out, "0", 0.3)))
    np.testing.assert_allclose(clamped.voltages, ref.voltages, atol=1e-13)
    assert clamped.info["clamp_currents"][0] == pytest.approx(ref.current("vc"), rel=1e-9, abs=1e-18)


def test_negative_nudge_within_and_beyond_convexity():
    c = Circuit((VoltageSource("v1", "in", "0", 1.0), Resistor("r1", "in", "out", 1e-3),
                 Resistor("r2", "out", "0", 1e-3)), targets={"out": 0.0})
    # The output sees 2 mS to fixed nodes: the nudged energy is convex iff |beta| < 2e-3 S.
    sol = solve(c, nudge=Nudge(-1e-3, np.array([0.0])))
    assert sol.voltage("out") == pytest.approx(1e-3 * 1.0 / (2e-3 - 1e-3))
    with pytest.raises(PhysgradError, match=r"\|beta\| < 0.002"):
        solve(c, nudge=Nudge(-2.5e-3, np.array([0.0])))


# --- bad input -------------------------------------------------------------------------------


def test_floating_subnetwork():
    c = Circuit((VoltageSource("v1", "a", "0", 1.0), Resistor("r1", "a", "0", 1e-3), Resistor("r2", "b", "c", 1e-3)))
    with pytest.raises(PhysgradError, match=r"floating subnetwork: node\(s\) b, c"):
        solve(c)


def test_node_behind_an_ideal_diode_only_is_floating():
    c = Circuit((VoltageSource("v1", "a", "0", 1.0), IdealDiode("d1", "a", "b")))
    with pytest.raises(PhysgradError, match="floating"):
        solve(c)


def test_voltage_source_loop():
    c = Circuit((VoltageSource("v1", "a", "0", 1.0), VoltageSource("v2", "a", "0", 2.0), Resistor("r1", "a", "0", 1.0)))
    with pytest.raises(PhysgradError, match="voltage sources form a loop.*v1, v2"):
        solve(c)


def test_three_source_loop_names_all():
    c = Circuit((VoltageSource("v1", "a", "b", 1.0), VoltageSource("v2", "b", "c", 1.0),
                 VoltageSource("v3", "c", "a", -2.0), Resistor("r1", "a", "0", 1.0)))
    with pytest.raises(PhysgradError, match="v1, v2, v3"):
        solve(c)


def test_diode_forced_forward_by_sources_is_infeasible():
    """Beyond its threshold: no steady state (not solved, exit 1), as for a chain of diodes."""
    c = Circuit((VoltageSource("v1", "a", "0", 1.0), IdealDiode("d7", "a", "0", 0.5), Resistor("r1", "a", "0", 1.0)))
    with pytest.raises(InfeasibleError, match="diode d7 is forced forward.*exceeds") as info:
        solve(c)
    assert info.value.elements == ("d7",) and isinstance(info.value, NotSolvedError)
    sol = solve(c, strict=False)
    assert sol.status == "infeasible" and "d7" in sol.message


def test_diode_held_at_threshold_by_sources_is_ill_posed():
    """Exactly at its threshold the diode's current is undetermined: bad input (exit 2)."""
    c = Circuit((VoltageSource("v1", "a", "0", 0.5), IdealDiode("d7", "a", "0", 0.5), Resistor("r1", "a", "0", 1.0)))
    with pytest.raises(PhysgradError, match="diode d7 is forced forward.*equals"):
        solve(c)


@pytest.mark.parametrize("solver", IDEAL_SOLVERS)
def test_diode_chain_forced_forward_is_infeasible(solver):
    """in(5 V) -> d1 -> m -> d2 -> ground: m >= 5 and m <= 0 cannot both hold."""
    c = Circuit((VoltageSource("v1", "in", "0", 5.0), IdealDiode("d1", "in", "m"), IdealDiode("d2", "m", "0"),
                 Resistor("r1", "m", "0", 1e-3)))
    sol = solve(c, solver, strict=False)
    assert sol.status == "infeasible" and np.all(np.isnan(sol.voltages))
    with pytest.raises(NotSolvedError, match="infeasible"):
        solve(c, solver)


def test_infeasible_message_names_diodes():
    c = Circuit((VoltageSource("v1", "in", "0", 5.0), IdealDiode("d1", "in", "m"), IdealDiode("d2", "m", "0"),
                 Resistor("r1", "m", "0", 1e-3)))
    sol = solve(c, "activeset", strict=False)
    assert "d1" in sol.message or "d2" in sol.message


def test_solver_capabilities_are_checked():
    m = DiodeModel("dm")
    c = Circuit((VoltageSource("v1", "a", "0", 1.0), Resistor("r1", "a", "b", 1e-3), ShockleyDiode("d1", "b", "0", m)))
    for s in IDEAL_SOLVERS:
        with pytest.raises(PhysgradError, match="Shockley"):
            solve(c, s)
    with pytest.raises(PhysgradError, match="unknown solver 'magic'"):
        solve(c, "magic")


def test_conductance_override_validated():
    c = known_circuits()[0].circuit
    with pytest.raises(PhysgradError, match=r"conductances \(S\) must have shape \(2,\), got \(3,\)"):
        solve(c, conductances=np.ones(3))
    with pytest.raises(PhysgradError, match="contains NaN or inf"):
        solve(c, conductances=np.array([1e-3, np.nan]))
    with pytest.raises(PhysgradError, match="must be >= 0"):
        solve(c, conductances=np.array([1e-3, -1.0]))


def test_coordinate_moves_diode_coupled_nodes_jointly():
    """a pulled to 3 V, b to 1 V, diode a -> b forces a <= b: the optimum is a = b = 2 V.

    Updating a and b one at a time stalls at a = b = 1 V; the block update must not.
    """
    c = Circuit((VoltageSource("v3", "s3", "0", 3.0), VoltageSource("v1", "s1", "0", 1.0),
                 Resistor("ra", "s3", "a", 1e-3), Resistor("rb", "s1", "b", 1e-3), IdealDiode("d1", "a", "b")))
    for s in IDEAL_SOLVERS:
        sol = solve(c, s)
        assert sol.voltage("a") == pytest.approx(2.0, abs=1e-12), s
        assert sol.voltage("b") == pytest.approx(2.0, abs=1e-12), s
        assert sol.current("d1") == pytest.approx(1e-3, rel=1e-9), s


def test_coordinate_reports_max_iter():
    c = random_circuit(30, 4)
    sol = solve(c, "coordinate", strict=False, max_sweeps=2)
    assert sol.status == "max_iter" and "2 sweeps" in sol.message
    with pytest.raises(NotSolvedError, match="max_iter"):
        solve(c, "coordinate", max_sweeps=2)


@pytest.mark.parametrize("solver", IDEAL_SOLVERS)
def test_parallel_diodes(solver):
    """Equal thresholds: one constraint, current split equally and said so; lower threshold wins."""
    base = (VoltageSource("v1", "in", "0", 5.0), Resistor("r1", "in", "a", 1e-3))
    sol = solve(Circuit(base + (IdealDiode("d1", "a", "0", 0.5), IdealDiode("d2", "a", "0", 0.5))), solver)
    assert sol.voltage("a") == pytest.approx(0.5, abs=1e-12)
    assert sol.current("d1") == pytest.approx(2.25e-3) and sol.current("d2") == pytest.approx(2.25e-3)
    assert "share their current equally" in sol.message
    sol = solve(Circuit(base + (IdealDiode("d1", "a", "0", 0.5), IdealDiode("d2", "a", "0", 0.3))), solver)
    assert sol.voltage("a") == pytest.approx(0.3, abs=1e-12)
    assert sol.current("d1") == 0 and sol.current("d2") == pytest.approx(4.7e-3)


@pytest.mark.parametrize("solver", IDEAL_SOLVERS + ("newton",))
def test_loops_of_conducting_diodes(solver):
    """Diode loops conducting at 0 V fix the voltages but not the circulating current: every solver
    answers (a loop diode carrying no circulating current), certified."""
    anti = Circuit((VoltageSource("v1", "in", "0", 5.0), Resistor("r1", "in", "a", 1e-3), Resistor("r2", "a", "b", 1e-3),
                    IdealDiode("d1", "a", "b"), IdealDiode("d2", "b", "a"), Resistor("r3", "b", "0", 1e-3)))
    sol = solve(anti, solver)
    assert sol.voltage("a") == pytest.approx(2.5, abs=1e-12) and sol.voltage("b") == pytest.approx(2.5, abs=1e-12)
    assert sol.current("d1") - sol.current("d2") == pytest.approx(2.5e-3, rel=1e-9)
    loop = Circuit((VoltageSource("v1", "in", "0", 1.0), Resistor("r1", "in", "a", 1e-3), Resistor("r2", "b", "0", 1e-3),
                    IdealDiode("d1", "a", "b"), IdealDiode("d2", "b", "0"), IdealDiode("d3", "a", "0")))
    sol = solve(loop, solver)
    assert sol.certificate.passed
    assert sol.voltage("a") == pytest.approx(0.0, abs=1e-12) and sol.voltage("b") == pytest.approx(0.0, abs=1e-12)
    assert sol.current("d1") + sol.current("d3") == pytest.approx(1e-3, rel=1e-9)


def test_zero_conductance_override_can_float_a_node():
    c = known_circuits()[0].circuit  # divider: in -r1- out -r2- 0
    with pytest.raises(PhysgradError, match="floating subnetwork: node\\(s\\) out"):
        solve(c, conductances=np.zeros(2))
    assert solve(c, conductances=np.array([0.0, 1e-3])).voltage("out") == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_iterative_kkt_route_matches_direct(seed, monkeypatch):
    """The elimination + CG route used on large circuits gives the direct route's answer."""
    from physgrad.circuit.solvers import kkt as activeset

    c = random_circuit(60, seed, diode_fraction=0.6)
    direct = solve(c, "activeset")
    monkeypatch.setattr(activeset, "ITERATIVE_MIN_SIZE", 1)
    iterative = solve(c, "activeset")
    assert iterative.certificate.passed
    np.testing.assert_allclose(iterative.voltages, direct.voltages, atol=1e-12)
    np.testing.assert_allclose(iterative.currents, direct.currents, atol=1e-14)


def test_eliminate_parametrises_the_active_constraints():
    import scipy.sparse as sp

    from physgrad.circuit.solvers.kkt import eliminate

    # rows: u0 <= 1 (bound), u1 - u2 <= 0.5 (tie), -u3 <= 2 (bound), u2 - u4 <= 0 (tie)
    D = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 1, -1, 0, 0], [0, 0, 0, -1, 0], [0, 0, 1, 0, -1]], float))
    d = np.array([1.0, 0.5, 2.0, 0.0])
    T, t0, kept = eliminate(D, d, np.ones(4, bool), 5)
    assert kept.all()
    z = np.random.default_rng(0).standard_normal(T.shape[1])
    u = T @ z + t0
    np.testing.assert_allclose(D @ u, d, atol=1e-15)
    assert T.shape[1] == 1  # u1, u2, u4 tied together; u0 and u3 fixed
    cyc = sp.csr_matrix(np.array([[1, -1, 0], [0, 1, -1], [-1, 0, 1]], float))
    T, t0, kept = eliminate(cyc, np.array([0.1, 0.2, -0.3]), np.ones(3, bool), 3)  # consistent loop
    assert kept.sum() == 2 and T.shape[1] == 1
    assert eliminate(cyc, np.array([0.1, 0.2, 0.3]), np.ones(3, bool), 3) is None  # contradictory


@pytest.mark.parametrize("vth", [0.5, 0.8])
def test_mixed_ideal_and_shockley_diodes(vth):
    """Shockley diode and ideal clamp in parallel: the lower conduction voltage wins (brentq route)."""
    m = DiodeModel("dm", IS=1e-14, N=1.0)
    g = 1e-3
    c = Circuit((VoltageSource("v1", "in", "0", 5.0), Resistor("r1", "in", "a", g), ShockleyDiode("ds", "a", "0", m),
                 IdealDiode("di", "a", "0", vth)))
    sol = solve(c)
    assert sol.solver == "newton" and sol.certificate.passed, sol.certificate.describe()
    i_s = lambda v: m.IS * np.expm1(v / (m.N * m.vt)) + m.gmin * v
    v_free = brentq(lambda v: (5.0 - v) * g - i_s(v), 0.0, 5.0, xtol=1e-15, rtol=1e-15)
    if v_free > vth:  # the ideal diode clamps
        assert sol.voltage("a") == pytest.approx(vth, abs=1e-12)
        assert sol.current("di") == pytest.approx((5.0 - vth) * g - i_s(vth), rel=1e-9)
    else:
        assert sol.voltage("a") == pytest.approx(v_free, abs=1e-12)
        assert sol.current("di") == 0.0
    assert sol.current("ds") == pytest.approx(i_s(sol.voltage("a")), rel=1e-9)
    assert (vth < 0.6) == (sol.current("di") > 0)  # both regimes are exercised


@pytest.mark.parametrize("seed", range(3))
def test_newton_on_ideal_diode_circuits_matches_activeset(seed):
    """Newton's active-set loop on a purely ideal-diode circuit reproduces the exact QP route."""
    c = random_circuit(30, seed)
    np.testing.assert_allclose(solve(c, "newton").voltages, solve(c, "activeset").voltages, atol=1e-10)


def test_mixed_random_graph_is_certified():
    c = random_circuit(25, 5, shockley=True, diode_fraction=0.4)
    c = c.with_elements(*[IdealDiode(f"dz{k}", n, "0", 0.3) for k, n in enumerate(c.nodes[::4])])
    sol = solve(c)
    assert sol.certificate.passed and "3 ideal diodes conduct" in sol.message


def test_newton_reports_infeasible_ideal_diodes():
    m = DiodeModel("dm")
    c = Circuit((VoltageSource("v1", "in", "0", 5.0), IdealDiode("d1", "in", "m"), IdealDiode("d2", "m", "0"),
                 Resistor("r1", "m", "0", 1e-3), Resistor("r2", "in", "b", 1e-3), ShockleyDiode("ds", "b", "0", m)))
    sol = solve(c, strict=False)
    assert sol.solver == "newton" and sol.status == "infeasible"

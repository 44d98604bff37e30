"""Arbitrary graphs at training scale: sparse topology maps, the batched solver (one factorization
shared by every sample and phase), warm starts, batched certificates, and the sparse adjoint gradient."""
import numpy as np
import pytest

from physgrad.circuit.batch import BatchSolver, solve_batch
from physgrad.circuit.elements import Circuit, CurrentSource, IdealDiode, Resistor, VoltageSource
from physgrad.circuit.reduction import build_problem
from physgrad.circuit.solution import certify
from physgrad.circuit.solve import solve
from physgrad.circuit.topology import Topology
from physgrad.energies.co_content import CoContentEnergy
from physgrad.learning import ExactGradient, make_estimator
from physgrad.minimizers.co_content import CoContentMinimizer
from physgrad.types import FREE, InfeasibleError, Nudge, PhysgradError
from verification.circuits import random_circuit, training_graph

NUDGES = [FREE, Nudge(1e-3, target=np.array([0.1, -0.2, 0.3])), Nudge(-2e-4, target=np.array([0.0, 0.5, -0.5])),
          Nudge(clamp=np.array([0.05, -0.02, 0.01]))]


def _case(n=120, seed=0, batch=12):
    circuit, inputs, outputs = training_graph(n, seed)
    X = np.random.default_rng(seed).uniform(-1, 1, (batch, len(inputs)))
    return circuit, inputs, outputs, X


def _reference(circuit, inputs, outputs, X, nudge, g=None):
    """Each sample alone through the circuit core's solve() (its own problem, its own factorization)."""
    out = []
    for b, row in enumerate(X):
        nb = nudge
        if nudge.clamp is not None and np.ndim(nudge.clamp) == 2:
            nb = Nudge(clamp=nudge.clamp[b])
        try:
            sol = solve(circuit.with_sources(dict(zip(inputs, row))), nudge=nb, outputs=outputs, conductances=g)
            out.append(sol.voltages)
        except InfeasibleError:
            out.append(np.full(len(circuit.nodes), np.nan))
    return np.array(out)


@pytest.mark.parametrize("nudge", NUDGES, ids=["free", "beta+", "beta-", "clamp"])
@pytest.mark.parametrize("n,seed", [(60, 0), (300, 1)])
def test_batched_equals_one_by_one(nudge, n, seed):
    circuit, inputs, outputs, X = _case(n, seed)
    sol = solve_batch(circuit, X, inputs, nudge=nudge, outputs=outputs)
    ref = _reference(circuit, inputs, outputs, X, nudge)
    assert sol.converged
    np.testing.assert_allclose(sol.voltages, ref, rtol=0, atol=1e-12)
    assert all(c.passed for c in sol.certificates)


def test_batched_equals_one_by_one_random_circuits():
    """Thresholds, floating sources, current sources, a current-source input; some samples infeasible."""
    for seed in range(6):
        c = random_circuit(25, seed)
        names = [e.name for e in c.elements if isinstance(e, (VoltageSource, CurrentSource)) and e.name != "vf"]
        inputs = names[:2] + [n for n in names if n.startswith("i")][:1]
        outputs = [c.nodes[i] for i in (3, 7)]
        rng = np.random.default_rng(seed)
        X = np.array([[c.element(s).value for s in inputs]] * 6) * rng.uniform(0.5, 1.5, (6, len(inputs)))
        energy = CoContentEnergy(c, inputs, outputs)
        eq = CoContentMinimizer().minimize(energy, energy.theta0(), X)
        ref = _reference(c, inputs, outputs, X, FREE)
        ok = np.isfinite(ref[:, 0])
        assert np.array_equal(np.isfinite(eq.state[:, 0]), ok)
        np.testing.assert_allclose(eq.state[ok], ref[ok], rtol=0, atol=1e-12)


def test_linear_network_one_factorization_for_all_inputs_and_phases():
    circuit, inputs, outputs = training_graph(150, 3)
    circuit = circuit.replace_elements([e for e in circuit.elements if not isinstance(e, IdealDiode)])
    energy = CoContentEnergy(circuit, inputs, outputs)
    X = np.random.default_rng(3).uniform(-1, 1, (40, len(inputs)))
    theta = energy.theta0()
    mini = CoContentMinimizer()
    free = mini.minimize(energy, theta, X)
    mini.minimize(energy, theta, X, nudge=Nudge(1e-3, target=np.zeros(3)), s0=free.state)
    mini.minimize(energy, theta, X, nudge=Nudge(clamp=np.zeros(3)), s0=free.state)
    assert mini.batch_solver(energy).stats["factorizations"] == 1
    assert free.n_iter == 40  # one solve per sample, all in one multi-right-hand-side solve
    np.testing.assert_allclose(free.state, _reference(circuit, inputs, outputs, X, FREE), rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["cep", "ccpl"])
def test_warm_start_changes_speed_not_the_answer(method):
    circuit, inputs, outputs, X = _case(400, 2, batch=16)
    Y = np.random.default_rng(5).uniform(-0.3, 0.3, (16, 3))
    warm_e, cold_e = CoContentEnergy(circuit, inputs, outputs), CoContentEnergy(circuit, inputs, outputs)
    warm_m, cold_m = CoContentMinimizer(warm=True), CoContentMinimizer(warm=False)
    est = make_estimator(method, beta=1e-4, eta=0.05)
    theta = warm_e.theta0()
    iters = {"warm": 0, "cold": 0}
    for step in range(3):
        x, y = X[:8] if step % 2 else X[8:], Y[:8] if step % 2 else Y[8:]
        phases = {}
        for name, e, m in (("warm", warm_e, warm_m), ("cold", cold_e, cold_m)):
            ph = est.phases(e, theta, x, y, m)
            phases[name] = ph
            iters[name] += sum(p.n_iter for p in (ph.free, ph.plus, ph.minus))
        for key in ("free", "plus", "minus"):
            np.testing.assert_allclose(getattr(phases["warm"], key).state, getattr(phases["cold"], key).state,
                                       rtol=0, atol=1e-12)
        theta = theta * (1 + 0.05 * np.random.default_rng(step).standard_normal(theta.size))
    assert iters["warm"] < iters["cold"]


def test_batch_certificate_is_the_circuit_core_certificate():
    circuit, inputs, outputs, X = _case(80, 4, batch=5)
    topo = Topology.build(circuit, inputs, outputs)
    solver = BatchSolver(topo)
    for nudge in NUDGES[:3]:
        sol = solver.solve(circuit.arrays.g, X, nudge)
        for b in range(len(X)):
            pb = build_problem(circuit.with_sources(dict(zip(inputs, X[b]))), nudge, outputs)
            ref = certify(pb, sol.u[b], sol.lam[b])
            got = sol.certificates[b]
            # the residuals themselves are round-off (~1e-17 A): equal far below the tolerances
            for field, tol in (("kcl", ref.tol_current), ("primal", ref.tol_voltage), ("dual", ref.tol_current)):
                assert abs(getattr(got, field) - getattr(ref, field)) <= 1e-4 * tol
            assert got.passed == ref.passed
            assert got.tol_current == pytest.approx(ref.tol_current, rel=1e-12)
            assert got.tol_voltage == pytest.approx(ref.tol_voltage, rel=1e-12)


def test_topology_maps_reproduce_the_reduction():
    for seed in range(4):
        c = random_circuit(20, seed)
        inputs = [e.name for e in c.elements if isinstance(e, (VoltageSource, CurrentSource))][:3]
        topo = Topology.build(c, inputs, [c.nodes[2]])
        rng = np.random.default_rng(seed)
        X = rng.uniform(-2, 2, (3, len(inputs)))
        W = topo.source_values(X)
        g = c.arrays.g * rng.uniform(0.5, 2, c.arrays.g.size)
        F, d, C = topo.forces(g, W), topo.bounds(W), topo.offsets(W)
        H0 = topo.H0(g)
        for b in range(3):
            try:
                pb = build_problem(c.with_sources(dict(zip(inputs, X[b]))), FREE, [c.nodes[2]], conductances=g)
            except (InfeasibleError, PhysgradError):
                continue
            np.testing.assert_allclose(C[b], pb.c, atol=1e-13)
            np.testing.assert_allclose(F[b], pb.f, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(H0.toarray(), pb.H.toarray(), rtol=1e-13, atol=1e-16)
            if topo.batchable:  # (parallel diodes through different nodes: the kept row depends on x)
                assert np.array_equal(pb.dio_rows, topo.base.dio_rows)
                np.testing.assert_allclose(d[b], pb.d, atol=1e-13)


def test_negative_beta_bound_reuses_the_factor_and_keeps_the_message():
    circuit, inputs, outputs, X = _case(60, 0, batch=3)
    energy = CoContentEnergy(circuit, inputs, outputs)
    with pytest.raises(PhysgradError, match="non-convex; negative nudges need"):
        CoContentMinimizer().minimize(energy, energy.theta0(), X, nudge=Nudge(-10.0, target=np.zeros(3)))
    with pytest.raises(PhysgradError, match="non-convex; negative nudges need"):
        solve(circuit.with_sources(dict(zip(inputs, X[0]))), nudge=Nudge(-10.0, target=np.zeros(3)), outputs=outputs)


def test_caches_are_bounded():
    circuit, inputs, outputs = training_graph(100, 6)
    energy = CoContentEnergy(circuit, inputs, outputs)
    mini = CoContentMinimizer()
    mini.batch_solver(energy).n_warm = 50
    rng = np.random.default_rng(0)
    theta = energy.theta0()
    for step in range(20):
        X = rng.uniform(-1, 1, (8, len(inputs)))
        theta = theta * rng.uniform(0.99, 1.01, theta.size)
        mini.minimize(energy, theta, X)
    s = mini.batch_solver(energy)
    assert len(s._entries) <= s.n_params and all(len(e.data) <= 2 for e in s._entries.values())
    assert len(s._warm) <= 50


# --- gradients ----------------------------------------------------------------------------------
def _grad_case(seed):
    c = random_circuit(24, seed)
    inputs = [e.name for e in c.elements if isinstance(e, VoltageSource) and e.name != "vf"][:2]
    outputs = [c.nodes[i] for i in (4, 9)]
    energy = CoContentEnergy(c, inputs, outputs)
    rng = np.random.default_rng(seed)
    X = np.array([[c.element(s).value for s in inputs]] * 5) * rng.uniform(0.8, 1.2, (5, len(inputs)))
    Y = rng.uniform(-1, 1, (5, 2))
    return energy, X, Y


def test_sparse_adjoint_equals_dense_autograd():
    """On small random circuits (thresholds, floating sources, several samples) the sparse adjoint
    and autograd through the dense KKT system agree to round-off."""
    mini = CoContentMinimizer()
    tested = 0
    for seed in range(16):
        energy, X, Y = _grad_case(seed)
        if not energy.topology.batchable:  # input-dependent parallel diodes: no shared factor
            continue
        theta = energy.theta0()
        try:
            a = ExactGradient(route="adjoint").compute(energy, theta, X, Y, mini)
        except InfeasibleError:
            continue
        b = ExactGradient(route="autograd").compute(energy, theta, X, Y, mini)
        # (1e-12 V^2/S floor: some cases have a zero gradient, outputs pinned by conducting diodes)
        assert np.max(np.abs(a.grad - b.grad)) <= 1e-10 * np.max(np.abs(b.grad)) + 1e-12
        assert a.cost == pytest.approx(b.cost, rel=1e-12)
        assert a.active_set.rows == b.active_set.rows
        assert a.near_kink == b.near_kink
        tested += 1
    assert tested >= 5


def test_sparse_adjoint_matches_finite_differences():
    circuit, inputs, outputs, X = _case(150, 9, batch=6)
    Y = np.random.default_rng(1).uniform(-0.2, 0.2, (6, 3))
    energy = CoContentEnergy(circuit, inputs, outputs)
    mini = CoContentMinimizer()
    theta = energy.theta0()
    res = ExactGradient(route="adjoint").compute(energy, theta, X, Y, mini)
    # (grid graphs hold some diodes exactly at 0 V with no current, far from the outputs: a
    # degenerate "kink" no small change of the conductances can move; the derivative is smooth)

    def cost(th):
        s = mini.minimize(energy, th, X).state
        return 0.5 * np.mean(np.sum((energy.outputs(s) - Y) ** 2, axis=1))

    rng = np.random.default_rng(2)
    for _ in range(3):
        direction = rng.standard_normal(theta.size) * theta
        h = 1e-5
        fd = (cost(theta + h * direction) - cost(theta - h * direction)) / (2 * h)
        assert fd == pytest.approx(res.grad @ direction, rel=1e-6)


def test_adjoint_route_handles_shockley_and_refuses_mixed_diodes():
    """Shockley-only circuits have the sparse adjoint (issue 17 item 3), equal to the autograd route;
    with ideal diodes beside Shockley ones the adjoint route refuses and auto falls back."""
    from physgrad.circuit.elements import DiodeModel, IdealDiode, ShockleyDiode

    els = (VoltageSource("v1", "a", "0", 1.0), Resistor("r1", "a", "b", 1e-3), Resistor("r2", "b", "0", 2e-3),
           ShockleyDiode("d1", "b", "0", DiodeModel("m")))
    energy = CoContentEnergy(Circuit(els, targets={"b": 0.1}))
    adj = ExactGradient(route="adjoint").compute(energy, energy.theta0(), None, energy.targets(), CoContentMinimizer())
    ag = ExactGradient(route="autograd").compute(energy, energy.theta0(), None, energy.targets(), CoContentMinimizer())
    assert np.max(np.abs(adj.grad - ag.grad)) <= 1e-10 * np.max(np.abs(ag.grad))
    mixed = CoContentEnergy(Circuit(els + (IdealDiode("d2", "b", "0", 0.9),), targets={"b": 0.1}))
    with pytest.raises(PhysgradError, match="no sparse adjoint"):
        ExactGradient(route="adjoint").compute(mixed, mixed.theta0(), None, mixed.targets(), CoContentMinimizer())
    res = ExactGradient().compute(mixed, mixed.theta0(), None, mixed.targets(), CoContentMinimizer())
    assert np.all(np.isfinite(res.grad))


@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_energy_memory_is_sparse_for_drn_xs_sized_circuits():
    """157,800 resistors: the old dense incidence was nodes x resistors (~2 GB); now O(nnz)."""
    from physgrad.energies.layered import DeepResistive

    rng = np.random.default_rng(0)
    net = DeepResistive(784, (100,), 10, input_gain=1.0)
    n_in = net.n_input_units
    W1 = rng.uniform(0, 1 / np.sqrt(n_in), (n_in, 100))
    W2 = rng.uniform(0, 1 / np.sqrt(100), (100, 10))
    x = rng.uniform(0, 1, (1, 784))
    circuit = net.to_circuit((W1, W2, np.zeros(100), np.zeros(10)), x)
    assert len(circuit.resistors) == 157_800
    energy = CoContentEnergy(circuit, output_nodes=tuple(circuit.nodes[-10:]))
    topo = energy.topology
    size = sum(getattr(topo, k).data.nbytes for k in ("P", "Mc", "PA", "AM", "D", "Dd"))
    assert size < 50e6
    eq = CoContentMinimizer().minimize(energy, energy.theta0(), None)
    assert eq.converged


def test_verification_at_scale_catalogue_and_cases():
    from verification.checks import VerifyConfig
    from verification.scale import run_scale_case, scale_cases

    cases = scale_cases(quick=True)
    assert len(cases) >= 50
    assert {c.kind for c in cases} == {"linear", "ideal", "shockley"}
    sizes = [len(c.circuit.nodes) for c in cases]
    assert min(sizes) >= 5 and max(sizes) >= 1000
    for case in (cases[3], cases[20], cases[30], cases[40]):
        rows = run_scale_case(case, VerifyConfig())
        assert rows and all(r["status"] in ("pass", "skip") for r in rows), rows


def test_circuit_whose_own_values_force_a_diode_still_trains_on_other_inputs():
    """The structure is value-independent: a diode the nominal sources force forward only makes
    those samples infeasible (named), not the energy."""
    c = Circuit((VoltageSource("v1", "a", "0", 1.0), VoltageSource("v2", "b", "0", 0.0), IdealDiode("d1", "a", "b", 0.5),
                 Resistor("r1", "a", "o", 1.0), Resistor("r2", "o", "b", 1.0), Resistor("r3", "o", "0", 1.0)),
                targets={"o": 0.0})
    energy = CoContentEnergy(c, ("v1",))
    assert energy.topology.batchable
    eq = CoContentMinimizer().minimize(energy, energy.theta0(), np.array([[0.2], [0.4], [1.0]]))
    assert eq.status == "infeasible" and "d1 is forced forward" in eq.message
    np.testing.assert_allclose(eq.state[:2, 2], [0.2 / 3, 0.4 / 3], atol=1e-15)
    assert np.all(np.isnan(eq.state[2]))


# --- routes of the training-step solver: shared border or a factor per conducting pattern ---------------
def _independent_network(n, seed=0):
    """A random grid graph with its fixed sources removed and 5 input sources: the diodes' states vary
    from input to input (many corrections against any one reference set)."""
    from verification.circuits import random_grid_graph

    c = random_grid_graph(n, seed)
    rng = np.random.default_rng(seed + 17)
    els = [e for e in c.elements if not isinstance(e, (VoltageSource, CurrentSource))]
    nodes = c.replace_elements(els).nodes
    for k in range(5):
        els += [VoltageSource(f"vin{k}", f"in{k}", "0", 0.0),
                Resistor(f"rin{k}", f"in{k}", nodes[int(rng.integers(len(nodes)))], float(rng.uniform(1e-3, 1e-2)))]
    outputs = tuple(nodes[int(i)] for i in rng.choice(len(nodes), 3, replace=False))
    return c.replace_elements(els), tuple(f"vin{k}" for k in range(5)), outputs


@pytest.mark.parametrize("route", ["border", "pattern"])
def test_pattern_and_border_routes_equal_one_by_one(route, monkeypatch):
    """Forcing every sample onto one route (a Schur border of the shared factor, or a factor of its own
    conducting set) gives each sample's own solve; the info counters show which route ran."""
    from physgrad.circuit import batch
    from physgrad.circuit.solvers import bordered

    monkeypatch.setattr(batch, "DEFAULT_KKT_ROUTE", "schur")  # the Schur route's own options
    if route == "border":
        monkeypatch.setattr(bordered, "SCHUR_FLOPS", 1e30)
        monkeypatch.setattr(bordered, "GATHER_S", 0.0)
    else:
        monkeypatch.setattr(bordered, "SCHUR_FLOPS", 1e-30)
    circuit, inputs, outputs = _independent_network(800, 2)
    X = np.random.default_rng(4).uniform(-1, 1, (6, 5))
    Y = np.random.default_rng(5).uniform(-0.3, 0.3, (6, 3))
    energy = CoContentEnergy(circuit, inputs, outputs)
    mini = CoContentMinimizer()
    theta = energy.theta0()
    free = mini.minimize(energy, theta, X)
    plus = mini.minimize(energy, theta, X, nudge=Nudge(1e-5, target=Y), s0=free.state)
    for eq, nudged in ((free, False), (plus, True)):
        assert eq.converged and all(c.passed for c in eq.info["certificates"])
        ref = np.array([_reference(circuit, inputs, outputs, X[b:b + 1], Nudge(1e-5, target=Y[b]) if nudged else FREE)[0]
                        for b in range(len(X))])
        # 1e-9 V: nodes that conducting diodes nearly isolate sit at ~1e-9 V, where two solves that both
        # meet the KKT tolerance (1e-11 relative) differ by up to ~3e-10 V
        np.testing.assert_allclose(eq.state, ref, rtol=0, atol=1e-9)
    info = free.info["solver_info"]
    assert info["fallbacks"] == 0
    if route == "border":
        assert info["pattern_samples"] == 0 and info["border_samples"] > 0
    else:
        assert info["pattern_factorizations"] > 0 and info["pattern_samples"] > 0
        # the nudged phase starts from the free phase's sets: their factors are reused, not rebuilt
        assert plus.info["solver_info"]["pattern_factorizations"] <= info["pattern_factorizations"]


def test_router_groups_samples_with_one_pattern(monkeypatch):
    """Samples with the same conducting set share one pattern factorization."""
    from physgrad.circuit import batch
    from physgrad.circuit.solvers import bordered

    monkeypatch.setattr(batch, "DEFAULT_KKT_ROUTE", "schur")
    circuit, inputs, outputs = _independent_network(800, 3)
    x = np.random.default_rng(6).uniform(-1, 1, (1, 5))
    X = np.repeat(x, 5, axis=0)
    energy = CoContentEnergy(circuit, inputs, outputs)
    saved = bordered.SCHUR_FLOPS
    try:
        bordered.SCHUR_FLOPS = 1e-30
        eq = CoContentMinimizer(warm=False).minimize(energy, energy.theta0(), X)
    finally:
        bordered.SCHUR_FLOPS = saved
    info = eq.info["solver_info"]
    assert eq.converged and info["pattern_samples"] >= 5
    assert info["pattern_factorizations"] <= info["pattern_samples"] // 5 + 1
    np.testing.assert_allclose(eq.state, np.repeat(eq.state[:1], 5, axis=0), rtol=0, atol=0)


def test_shockley_nudged_phase_warm_starts_from_the_free_state():
    """Shockley circuits (sample by sample, Newton): a nudged phase given the free state starts Newton
    there; the answer is the cold solve's to 1e-12 V, in fewer Newton steps."""
    circuit, inputs, outputs = training_graph(60, 1, shockley=True)
    energy = CoContentEnergy(circuit, inputs, outputs)
    X = np.random.default_rng(7).uniform(-1, 1, (4, len(inputs)))
    Y = np.random.default_rng(8).uniform(-0.3, 0.3, (4, len(outputs)))
    theta = energy.theta0()
    nudge = Nudge(1e-4 * float(np.median(theta)), target=Y)
    free = CoContentMinimizer().minimize(energy, theta, X)
    warm = CoContentMinimizer().minimize(energy, theta, X, nudge=nudge, s0=free.state)
    cold = CoContentMinimizer(warm=False).minimize(energy, theta, X, nudge=nudge, s0=free.state)
    assert free.converged and warm.converged and cold.converged
    assert all(c.passed for c in warm.info["certificates"])
    np.testing.assert_allclose(warm.state, cold.state, rtol=0, atol=1e-12)
    assert warm.n_iter < cold.n_iter


def test_nearest_input_start_changes_speed_not_the_answer():
    """Unseen inputs start the free phase from the nearest remembered input's conducting set (fewer
    active-set iterations); the answers are each sample's own solve and every one is certified."""
    from physgrad.circuit.batch import NEAREST_MAX

    circuit, inputs, outputs = _independent_network(800, 4)
    rng = np.random.default_rng(8)
    energy = CoContentEnergy(circuit, inputs, outputs)
    theta = energy.theta0()
    mini = CoContentMinimizer()
    solver = mini.batch_solver(energy)
    iters = {"nearest": 0, "reference": 0}
    for step in range(3):
        X = rng.uniform(-1, 1, (8, 5))  # fresh inputs: never an exact hit
        near = solver.warm_sets(X)
        if step:  # each start is the set of the remembered input nearest to the sample
            keys = list(solver._warm)[-NEAREST_MAX:]
            P = np.array([np.frombuffer(k, dtype=float) for k in keys])
            j = np.argmin(((X[:, None, :] - P[None]) ** 2).sum(axis=2), axis=1)
            expect = np.array([np.unpackbits(solver._warm[keys[i]], count=energy.topology.m) for i in j], bool)
            np.testing.assert_array_equal(near, expect)
            assert solver.warm_sets(X, nearest=False) is None
        eq = mini.minimize(energy, theta, X)
        cold = CoContentMinimizer(warm=False).minimize(energy, theta, X)
        assert eq.converged and all(c.passed for c in eq.info["certificates"])
        np.testing.assert_allclose(eq.state, cold.state, rtol=0, atol=1e-9)  # 1e-9 V: see the route test above
        if step == 2:
            ref = np.array([_reference(circuit, inputs, outputs, X[b:b + 1], FREE)[0] for b in range(len(X))])
            np.testing.assert_allclose(eq.state, ref, rtol=0, atol=1e-9)
        if step:
            iters["nearest"] += eq.n_iter
            iters["reference"] += cold.n_iter
            # started from each sample's own predicted set: at most the one reference built at the start
            assert eq.info["solver_info"]["refactorizations"] <= 1
    assert iters["nearest"] < iters["reference"]


@pytest.mark.parametrize("gemm", [True, False])
def test_border_product_and_gather_agree(gemm, monkeypatch):
    """The corrections ``x = x0 - Y z`` applied by one product with every computed column or by a
    gather of each sample's own columns: the same equilibria (to rounding)."""
    from physgrad.circuit import batch
    from physgrad.circuit.solvers import bordered

    monkeypatch.setattr(batch, "DEFAULT_KKT_ROUTE", "schur")
    monkeypatch.setattr(bordered, "GEMM_RATIO", 0 if gemm else 10**9)
    monkeypatch.setattr(bordered, "GATHER_MAX", 10**12)
    monkeypatch.setattr(bordered, "SCHUR_FLOPS", 1e30)  # every sample on the border route
    monkeypatch.setattr(bordered, "GATHER_S", 0.0)
    circuit, inputs, outputs = _independent_network(800, 2)
    X = np.random.default_rng(4).uniform(-1, 1, (6, 5))
    energy = CoContentEnergy(circuit, inputs, outputs)
    eq = CoContentMinimizer(warm=False).minimize(energy, energy.theta0(), X)
    assert eq.converged and all(c.passed for c in eq.info["certificates"])
    assert eq.info["solver_info"]["border_samples"] > 0 and eq.info["solver_info"]["pattern_samples"] == 0
    ref = np.array([_reference(circuit, inputs, outputs, X[b:b + 1], FREE)[0] for b in range(len(X))])
    np.testing.assert_allclose(eq.state, ref, rtol=0, atol=1e-9)


# --- the per-sample LDL^T route (circuit/solvers/qdkkt.py) ------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_ldl_route_equals_schur_route_and_one_by_one_in_a_training_step(seed):
    """Free, +beta and -beta phases (the nudged ones from the free state) and a clamp on the independent
    network, whose samples carry degenerate diodes (zero current at zero slack) that a nudge of either
    sign moves: the LDL^T route (each sample's own quasi-definite KKT system, refined to the exact one)
    and the Schur route agree to 1e-10 V, and with each sample alone to 1e-9 V; every answer is
    certified."""
    circuit, inputs, outputs = _independent_network(300, seed)
    rng = np.random.default_rng(seed + 11)
    X = rng.uniform(-1, 1, (8, 5))
    Y = rng.uniform(-0.3, 0.3, (8, 3))
    energy = CoContentEnergy(circuit, inputs, outputs)
    theta = energy.theta0()
    beta = 1e-4 * float(np.median(theta))
    res = {}
    for route in ("ldl", "schur"):
        mini = CoContentMinimizer()
        mini.batch_solver(energy).kkt_route = route
        free = mini.minimize(energy, theta, X)
        plus = mini.minimize(energy, theta, X, nudge=Nudge(beta, target=Y), s0=free.state)
        minus = mini.minimize(energy, theta, X, nudge=Nudge(-beta, target=Y), s0=free.state)
        phases = [free, plus, minus]
        if seed == 0:  # (seed 1 clamps an output a diode ties to ground: ill-posed, refused by both routes)
            Yc = free.state[:, energy.topology.outputs]  # the free outputs: feasible
            phases.append(mini.minimize(energy, theta, X, nudge=Nudge(clamp=Yc)))
        for eq in phases:
            assert eq.converged and all(c.passed for c in eq.info["certificates"])
            assert eq.info["solver_info"]["route"] == route and eq.info["solver_info"]["fallbacks"] == 0
        res[route] = phases
    sol = BatchSolver(energy.topology, kkt_route="ldl").solve(theta, X)
    slack = energy.topology.vth[None, :] - (energy.topology.Dn @ sol.voltages.T).T
    degenerate = sol.active & (np.abs(sol.lam) <= 1e-9) & (np.abs(slack) <= 1e-9)
    assert degenerate.sum() >= 3  # the case the nudged phases must get right
    assert sol.info["ldl_samples"] > 0 and sol.info["refinements"] > 0
    for a, b in zip(res["ldl"], res["schur"]):
        np.testing.assert_allclose(a.state, b.state, rtol=0, atol=1e-10)
    g = energy.conductances(theta)
    # each sample alone (the clamp only between the routes: clamped outputs may fix a diode's voltage at
    # its threshold, which the one-sample route refuses as ill-posed)
    for eq, nudge in zip(res["ldl"], (FREE, Nudge(beta, target=Y), Nudge(-beta, target=Y))):
        rows = [0, 5]
        ref = np.array([_reference(circuit, inputs, outputs, X[b:b + 1],
                                   nudge if nudge.is_free else Nudge(nudge.beta, target=Y[b]), g)[0] for b in rows])
        np.testing.assert_allclose(eq.state[rows], ref, rtol=0, atol=1e-9)  # 1e-9 V: see the route test above


def test_ldl_route_dependent_rows():
    """Dependent working rows (a loop of conducting diodes: ``K_0`` singular). Inconsistent thresholds
    (no equality solution): the refinement cannot reach the exact system, so the route reports the sample
    not solved instead of a regularized answer. Consistent ones: the voltages are the unique solution
    (the currents one valid split). A batch meeting such sets ends certified and exact."""
    from physgrad.circuit.solvers.qdkkt import QDPattern

    def triangle(vth3):
        # ideal diodes a->b, b->c and a->c (row a-c = (a-b) + (b-c)), driven through resistors
        els = [VoltageSource("vin", "in", "0", 1.0), Resistor("r0", "in", "a", 10.0), IdealDiode("d1", "a", "b", 0.1),
               IdealDiode("d2", "b", "c", 0.1), IdealDiode("d3", "a", "c", vth3), Resistor("r1", "c", "0", 100.0),
               Resistor("r2", "b", "0", 1000.0)]
        els += [Resistor(f"rx{k}", "a" if k % 2 else "b", f"x{k}", 50.0 + k) for k in range(70)]
        els += [Resistor(f"ry{k}", f"x{k}", "0", 200.0) for k in range(70)]
        els += [IdealDiode(f"dx{k}", f"x{k}", "0") for k in range(70)]
        return Circuit(tuple(els), "diode triangle")

    for vth3, consistent in ((0.15, False), (0.2, True)):
        circuit = triangle(vth3)
        topo = Topology.build(circuit, ["vin"], ["c"])
        g = circuit.arrays.g
        qd = QDPattern(topo.H0(g), topo.D, topo.Q).system(topo.H0(g))
        X = np.array([[1.0]])
        F = (topo.Kf(g) @ topo.source_values(X).T).T
        d = topo.vth[None, :] + (topo.Dd @ topo.source_values(X).T).T
        qd.configure(F, d, None, 0.0, False)
        W = np.zeros((1, topo.m), bool)
        tri = [k for k in range(topo.m) if np.count_nonzero(topo.D[k].toarray()) == 2 and
               np.all(np.isin(np.flatnonzero(topo.D[k].toarray()), topo.node_col[[circuit.nodes.index(x)
                                                                                 for x in ("a", "b", "c")]]))]
        assert len(tri) == 3
        W[0, tri] = True
        u, lam, _, ok = qd.solve(W, np.array([0]))
        assert ok[0] == consistent
        if consistent:  # the same voltages as the independent set without the redundant row
            W2 = W.copy()
            W2[0, tri[2]] = False
            u2, *_ , ok2 = qd.solve(W2, np.array([0]))
            assert ok2[0]
            np.testing.assert_allclose(u, u2, rtol=0, atol=1e-12)
        Xs = np.array([[1.0], [2.0], [-1.0], [0.5], [3.0]])
        sol = BatchSolver(topo, kkt_route="ldl").solve(g, Xs)
        assert sol.converged and all(c.passed for c in sol.certificates)
        np.testing.assert_allclose(sol.voltages, _reference(circuit, ["vin"], ["c"], Xs, FREE), rtol=0, atol=1e-12)


def test_ldl_route_unrefined_samples_fall_back(monkeypatch):
    """Without refinement (the regularized solve alone, ~1e-8 off) no sample meets the route's residual
    test: each is reported not solved and solved again alone, so the answers stay exact."""
    from physgrad.circuit.solvers import qdkkt

    circuit, inputs, outputs, X = _case(300, 1, batch=4)
    monkeypatch.setattr(qdkkt, "REFINE_MAX", 0)
    sol = solve_batch(circuit, X, inputs, outputs=outputs)
    assert sol.info["route"] == "ldl" and sol.info["fallbacks"] == len(X)
    assert sol.converged and all(c.passed for c in sol.certificates)
    np.testing.assert_allclose(sol.voltages, _reference(circuit, inputs, outputs, X, FREE), rtol=0, atol=1e-12)


def test_route_choice():
    """``auto``: the Schur route when every diode row and output fits one small dense Schur system,
    the LDL^T route otherwise; an unknown route is refused."""
    from physgrad.circuit.solvers.bordered import FULL_MASK_MAX

    for n in (60, 300):
        circuit, inputs, outputs, X = _case(n, 1, batch=3)
        topo = Topology.build(circuit, inputs, outputs)
        expect = "ldl" if topo.m + topo.n_out > FULL_MASK_MAX else "schur"
        assert BatchSolver(topo).route() == expect
        assert solve_batch(circuit, X, inputs, outputs=outputs).info["route"] == expect
    assert {BatchSolver(topo).route(), BatchSolver(Topology.build(*_case(60, 1)[:3])).route()} == {"ldl", "schur"}
    with pytest.raises(ValueError):
        BatchSolver(topo, kkt_route="cholesky")


def test_ldl_route_output_gram_and_beta_limit():
    """The LDL^T route's ``Q^T H0^{-1} Q`` (one factorization with every diode row off) equals the
    Schur route's (the factor of ``H0``), so both refuse the same negative nudges."""
    from physgrad.circuit.solvers.bordered import SharedSystem, max_negative_beta

    circuit, inputs, outputs = _independent_network(300, 3)
    topo = Topology.build(circuit, inputs, outputs)
    g = circuit.arrays.g
    solver = BatchSolver(topo, kkt_route="ldl")
    e = solver.entry(g)
    ref = SharedSystem(topo.H0(g), topo.D, topo.Q)
    np.testing.assert_allclose(solver._qd(e).output_gram(), ref.output_gram(), rtol=1e-12, atol=0)
    bmax = max_negative_beta(ref)
    assert e.max_negative_beta(topo, solver.M.rows, solver._qd(e)) == pytest.approx(bmax, rel=1e-12)
    X = np.zeros((1, len(inputs)))
    with pytest.raises(PhysgradError, match="non-convex"):
        solver.solve(g, X, Nudge(-1.01 * bmax, target=np.zeros(len(outputs))))

"""Batched Newton for Shockley circuits (issue 17 item 3): against the one-sample route, certificates,
failures reported per sample, warm = cold, the sparse adjoint against autograd and finite differences,
and the compiled LDL^T against scipy."""
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from physgrad.circuit.diode import shockley_vcrit
from physgrad.circuit.elements import Circuit, ShockleyDiode, VoltageSource
from physgrad.circuit.reduction import build_problem
from physgrad.circuit.shockley_batch import ShockleyBatchSolver
from physgrad.circuit.solvers.ldl import SymbolicLDL
from physgrad.circuit.solvers.newton import junction_step_length
from physgrad.energies.co_content import CoContentEnergy
from physgrad.learning.exact import ExactGradient
from physgrad.minimizers.co_content import CoContentMinimizer, _solve_with_circuit_solver
from physgrad.types import FREE, Nudge
from verification.circuits import SHOCKLEY_MODEL, training_graph

# Batched and one-sample answers: both solve the KCL to rtol 1e-13 of each node's own current scale,
# so they agree to a few 1e-15 V on these 1-10 V circuits; 1e-12 V is the bound.
V_TOL = 1e-12


def _network(n, seed, extra=()):
    c, inputs, outputs = training_graph(n, seed, shockley=True)
    if extra:
        c = c.replace_elements(list(c.elements) + list(extra))
    return CoContentEnergy(c, inputs, outputs)


def _inputs(energy, B, seed, scale=2.0):
    return np.random.default_rng(seed).uniform(-scale, scale, (B, len(energy.inputs)))


def _one_by_one(energy, theta, X, nudge=FREE):
    def row(b):
        if nudge.is_free:
            return nudge
        t = np.asarray(nudge.target, float)
        return Nudge(nudge.beta, target=t[b] if t.ndim == 2 else t)
    return [_solve_with_circuit_solver(energy, theta, X[b], row(b), "newton") for b in range(len(X))]


@pytest.mark.parametrize("n,seed", [(30, 0), (60, 1), (100, 2)])
def test_batched_equals_one_sample_route_free_and_nudged(n, seed):
    energy = _network(n, seed)
    theta = energy.theta0() * np.random.default_rng(seed).uniform(0.5, 2.0, energy.theta0().shape)
    X = _inputs(energy, 6, seed + 10)
    mini = CoContentMinimizer()
    free = mini.minimize(energy, theta, X)
    assert free.converged and free.info["solver_info"]["route"] == "batched newton"
    assert free.info["solver_info"]["fallbacks"] == 0
    assert all(c.passed for c in free.info["certificates"])
    ref = _one_by_one(energy, theta, X)
    assert np.max(np.abs(free.state - np.stack([r.voltages for r in ref]))) <= V_TOL
    # the batched certificate is the one-sample certificate (same residual and node scales)
    for c, r in zip(free.info["certificates"], ref):
        assert c.passed and r.certificate.passed
        assert c.kcl_ratio <= 1.0
    Y = np.random.default_rng(seed).uniform(-0.5, 0.5, (len(X), energy.n_outputs))
    beta = 1e-3 * float(np.median(theta))
    for b in (beta, -beta):
        nud = mini.minimize(energy, theta, X, nudge=Nudge(b, target=Y), s0=free.state)
        assert nud.converged and all(c.passed for c in nud.info["certificates"])
        ref = _one_by_one(energy, theta, X, Nudge(b, target=Y))
        assert np.max(np.abs(nud.state - np.stack([r.voltages for r in ref]))) <= V_TOL


def test_certificate_matches_the_circuit_core():
    """The batched certificate's KCL ratio is certify()'s on the sample's own problem (same scales)."""
    from physgrad.circuit.solution import certify

    energy = _network(40, 3)
    theta = energy.theta0()
    X = _inputs(energy, 4, 5)
    sb = ShockleyBatchSolver(energy.topology)
    g = energy.conductances(theta)
    res = sb.solve(g, X)
    for b in range(len(X)):
        c = energy.circuit.with_sources(dict(zip(energy.inputs, X[b])))
        pb = build_problem(c, outputs=energy.output_nodes, conductances=g)
        u = res["u"][b]
        cert = certify(pb, u, np.zeros(0))
        ours = res["certificates"][b]
        assert np.isclose(ours.kcl, cert.kcl, rtol=1e-12, atol=1e-25)
        assert np.isclose(ours.kcl_ratio, cert.kcl_ratio, rtol=1e-9)
        assert ours.kcl_node == cert.kcl_node and ours.passed == cert.passed
        # the node scales: the batched formula equals Problem.current_scale
        vd = pb.S @ u + pb.e
        from physgrad.circuit.diode import shockley_current, shockley_slope
        arr = pb.circuit.arrays
        i = shockley_current(vd, arr.shk_IS, arr.shk_N, arr.shk_vt, arr.shk_gmin)
        sl = shockley_slope(vd, arr.shk_IS, arr.shk_N, arr.shk_vt, arr.shk_gmin)
        bp, _ = sb.problems(g, X)
        assert np.allclose(bp.scales(np.array([b]), u[None, :], i[None, :], sl[None, :])[0],
                           pb.current_scale(u, i, sl), rtol=1e-13, atol=0)
        assert np.allclose(bp.F[b], pb.f, rtol=1e-13, atol=1e-18) and np.allclose(bp.E[b], pb.e, atol=1e-14)
        assert np.isclose(bp.const[b], pb.const, rtol=1e-12, atol=1e-18)


def test_failing_sample_is_reported_others_succeed():
    """One input drives a source-fixed Shockley diode to a current that overflows float64 (no steady
    state): that sample is reported not solved, with its index, and the others are unchanged."""
    energy = _network(40, 4, extra=(ShockleyDiode("dx", "in0", "0", SHOCKLEY_MODEL),))
    theta = energy.theta0()
    X = _inputs(energy, 4, 6, scale=1.0) * 0.3
    X[2, 0] = 40.0  # 40 V forward across dx: exp(40 / 0.0259) overflows
    eq = CoContentMinimizer().minimize(energy, theta, X)
    assert eq.status == "infeasible"
    assert "sample 2" in eq.message and "sample 0" not in eq.message
    assert np.all(np.isnan(eq.state[2]))
    ok = [0, 1, 3]
    assert all(eq.info["certificates"][b].passed for b in ok)
    ref = _one_by_one(energy, theta, X[ok])
    assert np.max(np.abs(eq.state[ok] - np.stack([r.voltages for r in ref]))) <= V_TOL


def test_unconverged_sample_is_reported_by_status():
    """With an iteration budget too small for one sample, that sample alone is ``max_iter``."""
    energy = _network(60, 7)
    g = energy.conductances(energy.theta0())
    X = _inputs(energy, 5, 8)
    X[3] *= 20.0  # far forward: junction limiting needs many more steps
    sb = ShockleyBatchSolver(energy.topology)
    full = sb.solve(g, X, warm=False)
    assert np.all(full["status"] == "converged")
    need = full["n_iter"]
    budget = int(np.max(np.delete(need, 3)))
    assert need[3] > budget
    res = sb.solve(g, X, warm=False, max_iter=budget)
    assert res["status"][3] == "max_iter" and res["messages"][3]
    assert not res["certificates"][3].passed
    others = [0, 1, 2, 4]
    assert np.all(res["status"][others] == "converged")
    assert np.max(np.abs(res["voltages"][others] - full["voltages"][others])) <= V_TOL


def test_warm_start_equals_cold_start():
    energy = _network(80, 9)
    theta = energy.theta0()
    X = _inputs(energy, 6, 11)
    cold = CoContentMinimizer(warm=False)
    warm = CoContentMinimizer()
    a = cold.minimize(energy, theta, X)
    warm.minimize(energy, theta * 1.01, X)  # the previous training step, other conductances
    b = warm.minimize(energy, theta, X)
    info = b.info["solver_info"]
    assert info["warm_starts"] == len(X) and a.info["solver_info"]["warm_starts"] == 0
    assert b.n_iter < a.n_iter
    assert a.converged and b.converged
    assert np.max(np.abs(a.state - b.state)) <= V_TOL
    warm.clear_factors()  # forgets the remembered solutions (fit's epochs depend on the checkpoint only)
    c = warm.minimize(energy, theta, X)
    assert c.info["solver_info"]["warm_starts"] == 0
    assert np.max(np.abs(c.state - a.state)) <= V_TOL


def test_sparse_adjoint_gradient_against_autograd_and_finite_differences():
    energy = _network(30, 12)
    rng = np.random.default_rng(3)
    theta = energy.theta0() * rng.uniform(0.5, 2.0, energy.theta0().shape)
    X = _inputs(energy, 3, 13)
    Y = rng.uniform(-0.5, 0.5, (len(X), energy.n_outputs))
    mini = CoContentMinimizer()
    adj = ExactGradient(route="adjoint").compute(energy, theta, X, Y, mini)
    ag = ExactGradient(route="autograd").compute(energy, theta, X, Y, mini)
    scale = float(np.max(np.abs(ag.grad)))
    # two routes to the same implicit derivative: round-off of the solves only
    assert np.max(np.abs(adj.grad - ag.grad)) <= 1e-10 * scale
    assert not adj.near_kink
    # central finite differences of the cost along a random direction (relative step 1e-5)
    d = rng.standard_normal(theta.shape)
    h = 1e-5 * float(np.median(theta))

    def cost(th):
        return ExactGradient(route="adjoint").compute(energy, th, X, Y, mini).cost

    fd = (cost(theta + h * d) - cost(theta - h * d)) / (2 * h)
    assert abs(fd - float(adj.grad @ d)) <= 1e-5 * (abs(fd) + scale)


def test_clamped_phase_keeps_the_one_sample_route():
    energy = _network(30, 14)
    theta = energy.theta0()
    X = _inputs(energy, 2, 15)
    mini = CoContentMinimizer()
    eq = mini.minimize(energy, theta, X, nudge=Nudge(clamp=np.zeros(energy.n_outputs)))
    assert eq.converged and "solver_info" not in eq.info


@pytest.mark.parametrize("ordering", ["auto", "amd", "mmd", "rcm", "natural"])
def test_symbolic_ldl_against_scipy(ordering):
    rng = np.random.default_rng(0)
    n = 120
    A = sp.random(n, n, density=0.03, random_state=1)
    A = (A + A.T).tocsr()
    A = A + sp.diags(np.asarray(abs(A).sum(axis=1)).ravel() + 1.0)
    s = SymbolicLDL(A, ordering=ordering)
    mats = [A * (1 + b) + sp.diags(rng.uniform(0, 1, n)) for b in range(3)]
    AX = np.stack([s.gather(M) for M in mats])
    R = rng.standard_normal((3, n))
    X, ok, F = s.factor_solve(AX, R, keep=True)
    assert np.all(ok)
    for b, M in enumerate(mats):
        ref = spla.spsolve(M.tocsc(), R[b])
        assert np.max(np.abs(X[b] - ref)) <= 1e-12 * np.max(np.abs(ref))
    assert np.max(np.abs(F.solve(R) - X)) <= 1e-14 * np.max(np.abs(X))
    # a zero pivot is reported, not returned
    bad = AX.copy()
    bad[1] = 0.0
    _, ok2 = s.factor_solve(bad, R)
    assert list(ok2) == [True, False, True]


def test_junction_step_length_rowwise():
    rng = np.random.default_rng(1)
    nvt = np.full(7, 0.0259)
    vcrit = shockley_vcrit(np.full(7, 1e-14), np.ones(7), np.full(7, 0.0259))
    vd = rng.uniform(-1, 0.8, (5, 7))
    dvd = rng.uniform(-3, 3, (5, 7))
    dvd[0] = 1e-3  # nothing limited
    t = junction_step_length(vd, dvd, nvt, vcrit)
    assert t.shape == (5,) and t[0] == 1.0
    for b in range(5):
        assert t[b] == junction_step_length(vd[b], dvd[b], nvt, vcrit)
        assert 1e-6 <= t[b] <= 1.0


def test_only_shockley_without_ideal_diodes_is_batched():
    from physgrad.circuit.elements import IdealDiode
    from physgrad.circuit.shockley_batch import supports

    energy = _network(30, 16)
    assert supports(energy.topology) and not supports(energy.topology, Nudge(clamp=np.zeros(3)))
    c = energy.circuit.replace_elements(list(energy.circuit.elements) + [IdealDiode("dq", "in0", "0", 0.5)])
    mixed = CoContentEnergy(c, energy.inputs, energy.output_nodes)
    assert not supports(mixed.topology)
    eq = CoContentMinimizer().minimize(mixed, mixed.theta0(), _inputs(mixed, 2, 1, scale=0.3))
    assert eq.converged and "solver_info" not in eq.info


def test_sample_started_far_forward_goes_to_the_one_sample_route():
    """A source driving a diode and its load puts the diode ~5 V forward at u = 0: that sample takes the
    one-sample route's ideal-diode start (counted as a fallback), the others stay batched; all agree."""
    from physgrad.circuit.elements import Resistor

    energy = _network(40, 17, extra=(ShockleyDiode("dr", "in0", "xr", SHOCKLEY_MODEL), Resistor("rl", "xr", "0", 1e-3)))
    theta = energy.theta0()
    X = _inputs(energy, 4, 18, scale=0.3)
    X[1, 0] = 5.0
    eq = CoContentMinimizer().minimize(energy, theta, X)
    assert eq.converged and eq.info["solver_info"]["fallbacks"] == 1
    ref = _one_by_one(energy, theta, X)
    assert np.max(np.abs(eq.state - np.stack([r.voltages for r in ref]))) <= V_TOL


def test_solve_batch_takes_shockley_circuits():
    """``physgrad.circuit.solve_batch`` (refused Shockley diodes before): batched Newton, certified,
    equal to one solve per input; a failing input is reported by its status, the others solved."""
    from physgrad.circuit.batch import solve_batch
    from physgrad.circuit.solve import solve

    energy = _network(40, 19, extra=(ShockleyDiode("dx", "in0", "0", SHOCKLEY_MODEL),))
    X = _inputs(energy, 4, 20, scale=0.5)
    X[3, 0] = 40.0
    sol = solve_batch(energy.circuit, X, energy.inputs, outputs=energy.output_nodes)
    assert list(sol.status[:3]) == ["converged"] * 3 and sol.status[3] == "infeasible" and sol.messages[3]
    assert sol.info["fallbacks"] == 1
    for b in range(3):
        ref = solve(energy.circuit.with_sources(dict(zip(energy.inputs, X[b]))))
        assert sol.certificates[b].passed and np.max(np.abs(sol.voltages[b] - ref.voltages)) <= V_TOL


def test_one_solve_does_not_import_numba():
    """``physgrad solve`` of a Shockley circuit factorizes by qdldl (batch of one): no numba import
    (~0.5 s of CPU) at start-up; the batched route compiles its kernels on first use."""
    import subprocess
    import sys

    code = ("import sys\nfrom physgrad.circuit.solve import solve\nfrom physgrad.circuit.elements import *\n"
            "m = DiodeModel('m', IS=1e-14, N=1.0)\n"
            "c = Circuit((VoltageSource('v', 'a', '0', 2.0), Resistor('r', 'a', 'b', 1e-3), ShockleyDiode('d', 'b', '0', m)))\n"
            "s = solve(c)\nassert s.converged, s.message\nprint('numba' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_no_free_node_is_solved_not_crashed():
    """Every node held by a source (a Shockley diode straight across it): zero unknowns. The batched Newton
    gathered an empty pattern (scipy NotImplementedError) and factorized an empty matrix (ValueError);
    now it converges at once with the diode law's current, batched and alone."""
    import math

    from physgrad.circuit import parse_netlist, solve
    from physgrad.circuit.batch import solve_batch
    from physgrad.circuit.diode import shockley_current

    c = parse_netlist("t\nV1 a 0 0.6\nD1 a 0 dm\n.model dm d\n.end\n")
    sol = solve(c)
    assert sol.status == "converged"
    d = next(el for el in c.elements if el.name == "d1")
    m = d.model
    want = float(shockley_current(np.array([0.6]), m.IS, m.N, m.vt, m.gmin)[0])
    assert math.isclose(sol.current_dict()["d1"], want, rel_tol=1e-12)
    res = solve_batch(c, np.array([[0.5], [0.6], [0.7]]), inputs=("v1",))
    assert list(res.status) == ["converged"] * 3


def test_row_structure_factorization_is_qdldls_bit_for_bit():
    """The numeric LDL^T on the precomputed row structure (no elimination-tree walks per sample) gives
    exactly QDLDL's factors and solutions; the reused buffers give the same answers as fresh arrays,
    and a failed sample's row is zero, not a previous call's."""
    from physgrad.circuit.solvers import ldl

    rng = np.random.default_rng(2)
    n = 150
    A = sp.random(n, n, density=0.04, random_state=3)
    A = (A + A.T).tocsr()
    A = A + sp.diags(np.asarray(abs(A).sum(axis=1)).ravel() + 1.0)
    s = SymbolicLDL(A)
    AX = np.stack([s.gather(A + sp.diags(rng.uniform(0, 1, n))) for _ in range(4)])
    R = rng.standard_normal((4, n))
    X, ok = s.factor_solve(AX, R)
    ldl._compile()
    for b in range(4):
        nL = max(s.nnz_L, 1)
        Li, Lx, Dinv = np.zeros(nL, np.int64), np.zeros(nL), np.zeros(n)
        assert ldl._factor_one(n, s.Ap, s.Ai, AX[b], s.Lp, s.etree, Li, Lx, Dinv, np.zeros(n, np.int8),
                               np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n))
        x = R[b][s.perm].copy()
        ldl._solve_one(n, s.Lp, Li, Lx, Dinv, x)
        ref = np.empty(n)
        ref[s.perm] = x
        assert np.array_equal(ref, X[b])
    X1, ok1, _ = s.factor_solve(AX, R, keep=True, reuse=True)
    assert np.array_equal(X1, X) and np.all(ok1)
    bad = AX.copy()
    bad[2] = 0.0
    X2, ok2, _ = s.factor_solve(bad, R, keep=True, reuse=True)
    assert list(ok2) == [True, True, False, True] and not np.any(X2[2])

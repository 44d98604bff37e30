"""Layered energies (DRN, DHN), the block and gradient minimizers, lowering to circuits, learning rules."""
import numpy as np
import pytest
from autograd import grad

from physgrad.energies.layered import DeepHopfield, DeepResistive
from physgrad.types import FREE, Nudge, PhysgradError
from physgrad.learning import make_estimator
from physgrad.minimizers.block import BlockCoordinateDescent, layer_groups
from physgrad.minimizers.gradient import GradientDescent
from physgrad.layered.presets import get_preset

TIGHT = BlockCoordinateDescent(sweeps=20000, tol=1e-14)


def tiny_drn(seed=0, hidden=(4, 6), n_in=5, n_out=3, gain=2.0):
    rng = np.random.default_rng(seed)
    en = DeepResistive(n_in, hidden, n_out, input_gain=gain)
    th = en.init_theta(rng)
    L = en.n_layers
    th = tuple(t + 0.3 * np.abs(rng.standard_normal(t.shape)) if i < L else 0.2 * rng.standard_normal(t.shape)
               for i, t in enumerate(th))
    x = rng.random((3, n_in))
    y = np.eye(n_out)[rng.integers(0, n_out, 3)]
    return en, th, x, y


def tiny_dhn(seed=0):
    rng = np.random.default_rng(seed)
    en = DeepHopfield(5, (4, 6), 3)
    th = en.init_theta(rng, weight_gain=0.7)
    th = th[:2] + (th[2],) + tuple(0.1 * rng.standard_normal(t.shape) for t in th[3:])
    return en, th, rng.random((3, 5)), np.eye(3)[[0, 2, 1]]


# --- energies -----------------------------------------------------------------------------------
def test_drn_energy_matches_definition_and_grads():
    en, th, x, _ = tiny_drn()
    rng = np.random.default_rng(1)
    s = tuple(rng.standard_normal((3, n)) for n in en.sizes[1:])
    layers = [2.0 * np.concatenate([x, -x], 1)] + list(s)
    E = np.zeros(3)
    for k in range(1, en.n_layers + 1):
        W, b = th[k - 1], th[en.n_layers + k - 1]
        E += 0.5 * np.einsum("ij,bij->b", W, (layers[k - 1][:, :, None] - layers[k][:, None, :]) ** 2) - layers[k] @ b
    np.testing.assert_allclose(en.energy(s, th, x), E, rtol=1e-12)
    g_auto = grad(lambda t: np.mean(en.energy(s, t, x)))(th)
    for a, b in zip(en.theta_grad(s, th, x), g_auto):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_dhn_energy_grads():
    en, th, x, _ = tiny_dhn()
    s = tuple(np.random.default_rng(2).random((3, n)) for n in en.sizes[1:])
    g_auto = grad(lambda t: np.mean(en.energy(s, t, x)))(th)
    for a, b in zip(en.theta_grad(s, th, x), g_auto):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", [tiny_drn, tiny_dhn])
def test_block_solve_is_exact_layer_minimum(make):
    en, th, x, y = make()
    rng = np.random.default_rng(3)
    s = tuple(np.clip(rng.standard_normal((3, n)), *en.bounds(k)) for k, n in enumerate(en.sizes[1:], start=1))
    for nudge in (FREE, Nudge(0.4, target=y)):
        for k in range(1, en.n_layers + 1):
            sk = en.block_solve(k, s, th, x, nudge)
            f = lambda v: np.sum(en.energy(s[:k - 1] + (v,) + s[k:], th, x)) + (
                nudge.beta * 0.5 * np.sum((v - y) ** 2) if (nudge.beta and k == en.n_layers) else 0.0)
            base = f(sk)
            lo, hi = en.bounds(k)
            for _ in range(5):  # random feasible perturbations never lower the energy
                v = np.clip(sk + 0.05 * rng.standard_normal(sk.shape), lo, hi)
                assert f(v) >= base - 1e-12


def test_project_and_validation():
    en, th, x, _ = tiny_drn()
    neg = (th[0] - 10.0,) + th[1:]
    assert np.all(en.project(neg)[0] >= 0)
    with pytest.raises(PhysgradError, match="shape"):
        en.energy(en.zero_state(3), th, np.ones((3, 4)))
    with pytest.raises(PhysgradError, match="NaN"):
        en.energy(en.zero_state(3), th, np.full((3, 5), np.nan))
    with pytest.raises(PhysgradError, match="layer 1"):
        en.energy(en.zero_state(3), (th[0][:-1],) + th[1:], x)
    with pytest.raises(PhysgradError, match="even"):
        DeepResistive(4, (3,), 2)
    with pytest.raises(PhysgradError):
        BlockCoordinateDescent(schedule="sideways")


def test_preset_energy_and_minimizer():
    p = get_preset("drn-1h")
    en = p.energy()
    assert isinstance(en, DeepResistive) and en.sizes == (1568, 1024, 10) and en.input_gain == 480.0
    assert p.sizes == en.sizes
    q = get_preset("dhn-2h")
    assert isinstance(q.energy(), DeepHopfield) and q.sizes == (784, 1024, 1024, 10)
    assert q.minimizer() == BlockCoordinateDescent(sweeps=20, schedule="asynchronous", tol=None)
    assert q.minimizer(q.sweeps_eval).sweeps == 50
    with pytest.raises(PhysgradError, match="even"):
        p.with_options(hidden=(5,))
    with pytest.raises(PhysgradError, match="schedule must be one of"):
        p.with_options(schedule="random")


# --- block minimizer ----------------------------------------------------------------------------
def test_layer_groups():
    assert layer_groups(3, "asynchronous") == [[1, 3], [2]]
    assert layer_groups(2, "asynchronous") == [[1], [2]]
    assert layer_groups(3, "backward") == [[3], [2], [1]]
    assert layer_groups(3, "synchronous") == [[1, 2, 3]]


@pytest.mark.parametrize("schedule", ["asynchronous", "forward", "backward"])
def test_block_schedules_reach_same_minimum(schedule):
    en, th, x, _ = tiny_drn()
    ref = TIGHT.minimize(en, th, x)
    eq = BlockCoordinateDescent(sweeps=20000, tol=1e-14, schedule=schedule).minimize(en, th, x)
    assert eq.converged
    for a, b in zip(eq.state, ref.state):
        np.testing.assert_allclose(a, b, atol=1e-10)


def test_block_fixed_budget_status_and_energy_decrease():
    en, th, x, _ = tiny_drn()
    energies = [np.sum(BlockCoordinateDescent(sweeps=n, tol=None).minimize(en, th, x).energy) for n in (1, 2, 4, 8)]
    assert all(b <= a + 1e-12 for a, b in zip(energies, energies[1:]))
    eq = BlockCoordinateDescent(sweeps=2, tol=None).minimize(en, th, x)
    assert eq.status == "max_iter" and eq.n_iter == 2


def test_block_clamp_nudge_holds_outputs():
    en, th, x, y = tiny_drn()
    eq = TIGHT.minimize(en, th, x, nudge=Nudge(clamp=y))
    np.testing.assert_array_equal(eq.state[-1], y)


def test_negative_beta_nonconvex_is_an_error():
    en, th, x, y = tiny_drn()
    with pytest.raises(PhysgradError, match="non-convex"):
        TIGHT.minimize(en, th, x, nudge=Nudge(-1e3, target=y))


def test_gradient_descent_matches_block():
    en, th, x, y = tiny_drn(hidden=(4,))
    for nudge in (FREE, Nudge(0.5, target=y)):
        ref = TIGHT.minimize(en, th, x, nudge=nudge)
        eq = GradientDescent(step_size=0.05, max_iter=20000, tol=1e-13).minimize(en, th, x, nudge=nudge)
        assert eq.converged
        for a, b in zip(eq.state, ref.state):
            np.testing.assert_allclose(a, b, atol=1e-9)


def test_gradient_descent_dhn():
    en, th, x, _ = tiny_dhn()
    ref = TIGHT.minimize(en, th, x)
    eq = GradientDescent(step_size=0.3, max_iter=20000, tol=1e-13).minimize(en, th, x)
    for a, b in zip(eq.state, ref.state):
        np.testing.assert_allclose(a, b, atol=1e-8)


# --- against the exact QP of the lowered circuit ---------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, 0.5, -0.3])
def test_block_matches_circuit_qp(beta):
    from physgrad.circuit.solve import solve

    en, th, x, y = tiny_drn()
    nudge = Nudge(beta, target=y) if beta else FREE
    eq = TIGHT.minimize(en, th, x, nudge=nudge)
    assert eq.converged
    for b in range(len(x)):
        circuit = en.to_circuit(th, x[b], nudge=Nudge(1.0, target=y[b]))
        sol = solve(circuit, solver="qp", nudge=Nudge(beta, target=y[b]) if beta else FREE)
        for a, e in zip(en.state_from_solution(sol), eq.state):
            np.testing.assert_allclose(a[0], e[b], atol=1e-9, rtol=0)


def test_circuit_lowering_structure():
    from physgrad.circuit.elements import CurrentSource, IdealDiode, Resistor, VoltageSource

    en, th, x, _ = tiny_drn(hidden=(4,))
    c = en.to_circuit(th, x[0])
    kinds = {t: [e for e in c.elements if isinstance(e, t)] for t in (VoltageSource, Resistor, IdealDiode, CurrentSource)}
    assert len(kinds[VoltageSource]) == 10 and len(kinds[IdealDiode]) == 4
    assert len(kinds[Resistor]) == np.count_nonzero(th[0]) + np.count_nonzero(th[1])
    d = {e.name: e for e in kinds[IdealDiode]}
    assert (d["d1_0"].anode, d["d1_0"].cathode) == ("0", "h1_0")  # v >= 0
    assert (d["d1_3"].anode, d["d1_3"].cathode) == ("h1_3", "0")  # v <= 0
    with pytest.raises(PhysgradError, match="one sample"):
        en.to_circuit(th, x)


# --- learning rules on a tiny network -------------------------------------------------------------
def _true_grad_dir(en, th, x, y, d, h=1e-6):
    def cost(t):
        s = TIGHT.minimize(en, t, x).state
        return np.mean(0.5 * np.sum((s[-1] - y) ** 2, axis=1))
    plus = tuple(a + h * b for a, b in zip(th, d))
    minus = tuple(a - h * b for a, b in zip(th, d))
    return (cost(plus) - cost(minus)) / (2 * h)


@pytest.mark.parametrize("code,kw,rtol", [
    ("cep", dict(beta=1e-3), 1e-4), ("pep", dict(beta=1e-4), 1e-2), ("nep", dict(beta=1e-4), 1e-2),
    ("tbp", dict(steps=400), 1e-6), ("rbp", dict(steps=400), 1e-6)])
def test_learning_rule_matches_true_gradient(code, kw, rtol):
    en, th, x, y = tiny_drn(hidden=(4,))
    if code == "tbp":
        from physgrad.learning import TruncatedBackprop
        est = TruncatedBackprop(steps=kw["steps"], init="zeros")
        mini = BlockCoordinateDescent(sweeps=20000, tol=1e-14)
    else:
        est = make_estimator(code, **kw)
        mini = TIGHT
    g = est.estimate(en, th, x, y, mini)
    assert [a.shape for a in g] == [a.shape for a in th]
    rng = np.random.default_rng(5)
    for _ in range(2):
        d = tuple(rng.standard_normal(a.shape) for a in th)
        true = _true_grad_dir(en, th, x, y, d)
        got = sum(np.vdot(a, b) for a, b in zip(g, d))
        assert got == pytest.approx(true, rel=rtol, abs=1e-8)


def test_coupled_learning_variants_agree_and_descend():
    # CpL tends (eta -> 0) to a preconditioned gradient, not the gradient itself (see
    # physgrad.learning.coupled): the variants must agree with each other and point downhill.
    en, th, x, y = tiny_drn(hidden=(4,))
    gs = {c: make_estimator(c, eta=e).estimate(en, th, x, y, TIGHT)
          for c, e in (("ccpl", 1e-3), ("pcpl", 1e-5), ("ncpl", 1e-5))}
    flat = {c: np.concatenate([a.ravel() for a in g]) for c, g in gs.items()}
    for c in ("pcpl", "ncpl"):
        assert np.linalg.norm(flat[c] - flat["ccpl"]) <= 1e-3 * np.linalg.norm(flat["ccpl"])
    for g in gs.values():
        assert _true_grad_dir(en, th, x, y, tuple(-a for a in g)) < 0


def test_contrastive_learning_runs_and_descends():
    en, th, x, y = tiny_drn(hidden=(4,))
    g = make_estimator("cl").estimate(en, th, x, y, TIGHT)
    d = tuple(-a for a in g)
    assert _true_grad_dir(en, th, x, y, d) < 0  # -g is a descent direction here


def test_dhn_cep_matches_true_gradient():
    en, th, x, y = tiny_dhn()
    g = make_estimator("cep", beta=1e-3).estimate(en, th, x, y, TIGHT)
    d = tuple(np.random.default_rng(6).standard_normal(a.shape) for a in th)
    got = sum(np.vdot(a, b) for a, b in zip(g, d))
    assert got == pytest.approx(_true_grad_dir(en, th, x, y, d), rel=1e-4, abs=1e-8)


@pytest.mark.parametrize("make", [tiny_drn, tiny_dhn])
def test_exact_gradient_on_layered_energies(make):
    """physgrad.learning's exact (implicit) gradient agrees with finite differences of the true cost."""
    en, th, x, y = make()
    res = make_estimator("exact").compute(en, th, x, y, TIGHT)
    d = tuple(np.random.default_rng(7).standard_normal(a.shape) for a in th)
    got = sum(np.vdot(a, b) for a, b in zip(res.grad, d))
    assert got == pytest.approx(_true_grad_dir(en, th, x, y, d), rel=1e-6, abs=1e-9)

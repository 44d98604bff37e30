"""Generic learning rules on an analytic linear network (independent of the circuit core)."""
import numpy as np
import pytest

from physgrad.types import NotSolvedError, Equilibrium, PhysgradError
from physgrad.learning import (METHODS, CoupledLearning, EquilibriumPropagation, ExactGradient, RecurrentBackprop,
                               TruncatedBackprop, contrastive_learning, coupled_limit, make_estimator, surrogate)
from verification.analytic import LinearNetworkEnergy, LinearSolveMinimizer, chain, chain_cost_and_gradient

G = np.array([1.0, 0.5, 2.0, 0.8])  # S
X = np.array([[1.0]])  # V
Y = np.array([0.1])  # V
MIN = LinearSolveMinimizer()


def rel(a, b):
    return np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b)


def test_exact_matches_closed_form():
    energy = chain(3)
    res = ExactGradient().compute(energy, G, X, Y, MIN)
    c, g = chain_cost_and_gradient(G, 1.0, 0.1)
    assert res.cost == pytest.approx(c, rel=1e-13)
    np.testing.assert_allclose(res.grad, g, rtol=1e-12)
    assert not res.near_kink


@pytest.mark.parametrize("variant,order", [("positive", 1), ("negative", 1), ("centered", 2)])
def test_ep_bias_order(variant, order):
    energy = chain(3)
    _, g = chain_cost_and_gradient(G, 1.0, 0.1)
    betas = np.array([1e-1, 3e-2, 1e-2, 3e-3])
    errs = [rel(EquilibriumPropagation(b, variant).estimate(energy, G, X, Y, MIN), g) for b in betas]
    slope = np.polyfit(np.log(betas), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.1


@pytest.mark.parametrize("variant", ["positive", "negative", "centered"])
def test_ep_is_gradient_of_its_surrogate(variant):
    energy, beta, h = chain(3), 0.05, 1e-5
    est = EquilibriumPropagation(beta, variant).estimate(energy, G, X, Y, MIN)
    rng = np.random.default_rng(0)
    for _ in range(3):
        d = rng.normal(size=G.shape)
        fd = (surrogate(energy, G + h * d, X, Y, MIN, beta, variant)
              - surrogate(energy, G - h * d, X, Y, MIN, beta, variant)) / (2 * h)
        assert fd == pytest.approx(est @ d, rel=1e-6, abs=1e-12)


def test_surrogate_bounds():
    energy = chain(3)
    c, _ = chain_cost_and_gradient(G, 1.0, 0.1)
    for beta in [1e-3, 1e-2, 0.1, 0.5]:
        lo = surrogate(energy, G, X, Y, MIN, beta, "positive")
        hi = surrogate(energy, G, X, Y, MIN, beta, "negative")
        ce = surrogate(energy, G, X, Y, MIN, beta, "centered")
        assert lo <= c <= hi
        assert abs(ce - c) <= abs(lo - c)


def _two_output_net():
    # 3 free nodes, 2 inputs, outputs nodes 1 and 2
    edges = ((3, 0), (4, 0), (0, 1), (0, 2), (1, 2), (1, 5), (2, 5), (4, 2))
    return LinearNetworkEnergy(n=3, n_in=2, edges=edges, output_nodes=(1, 2))


def test_batch_and_exact_vs_fd():
    energy = _two_output_net()
    rng = np.random.default_rng(1)
    theta = rng.uniform(0.5, 2.0, 8)
    x = rng.normal(size=(4, 2))
    y = rng.normal(size=(4, 2)) * 0.1
    res = ExactGradient().compute(energy, theta, x, y, MIN)
    from physgrad.learning import mean_cost
    h = 1e-6
    for k in range(theta.size):
        e = np.zeros_like(theta)
        e[k] = h
        fd = (mean_cost(energy, MIN.minimize(energy, theta + e, x).state, y)
              - mean_cost(energy, MIN.minimize(energy, theta - e, x).state, y)) / (2 * h)
        assert res.grad[k] == pytest.approx(fd, rel=1e-6, abs=1e-10)
    # centered EP close to it
    assert rel(EquilibriumPropagation(1e-3).estimate(energy, theta, x, y, MIN), res.grad) < 1e-4


def test_coupled_learning_limit_and_orders():
    energy = _two_output_net()
    rng = np.random.default_rng(2)
    theta = rng.uniform(0.5, 2.0, 8)
    x, y = rng.normal(size=(1, 2)), np.array([0.3, -0.2])
    lim = coupled_limit(energy, theta, x, y, MIN)
    etas = np.array([0.1, 0.03, 0.01])
    errs = [rel(CoupledLearning(e, "positive").estimate(energy, theta, x, y, MIN), lim) for e in etas]
    assert abs(np.polyfit(np.log(etas), np.log(errs), 1)[0] - 1) < 0.1
    # linear network: the clamped state is affine in eta, so centered CpL equals its limit
    assert rel(CoupledLearning(0.1, "centered").estimate(energy, theta, x, y, MIN), lim) < 1e-10
    exact = ExactGradient().estimate(energy, theta, x, y, MIN)
    cl = contrastive_learning().estimate(energy, theta, x, y, MIN)
    assert cl @ exact > 0  # a descent direction here


def test_single_output_cpl_parallel_to_gradient():
    energy = chain(3)
    _, g = chain_cost_and_gradient(G, 1.0, 0.1)
    lim = coupled_limit(energy, G, X, Y, MIN)
    cos = lim @ g / np.linalg.norm(lim) / np.linalg.norm(g)
    assert cos == pytest.approx(1.0, abs=1e-12)


def test_rbp_and_tbp_converge():
    energy = chain(3)
    _, g = chain_cost_and_gradient(G, 1.0, 0.1)
    e_r = [rel(RecurrentBackprop(n).estimate(energy, G, X, Y, MIN), g) for n in (5, 20, 200)]
    e_t = [rel(TruncatedBackprop(n).estimate(energy, G, X, Y, MIN), g) for n in (5, 20, 200)]
    assert e_r[0] > e_r[1] > e_r[2] and e_r[2] < 1e-10
    assert e_t[0] > e_t[2] and e_t[2] < 1e-10
    # from the free state TBP equals RBP
    np.testing.assert_allclose(TruncatedBackprop(7, init="free").estimate(energy, G, X, Y, MIN),
                               RecurrentBackprop(7).estimate(energy, G, X, Y, MIN), rtol=1e-12)


def test_make_estimator_and_errors():
    for m in METHODS:
        assert hasattr(make_estimator(m), "estimate")
    with pytest.raises(PhysgradError, match="valid methods"):
        make_estimator("sgd")
    with pytest.raises(PhysgradError, match="variant must be one of"):
        EquilibriumPropagation(0.1, "sideways")
    with pytest.raises(PhysgradError, match="beta must be"):
        EquilibriumPropagation(-0.1)
    with pytest.raises(PhysgradError, match="eta must be"):
        CoupledLearning(0.0)
    with pytest.raises(PhysgradError, match="steps must be"):
        TruncatedBackprop(0)
    with pytest.raises(PhysgradError, match="output"):
        ExactGradient().estimate(chain(3), G, X, np.array([1.0, 2.0]), MIN)


def test_not_converged_free_phase_raises():
    bad = Equilibrium(state=np.zeros((1, 3)), energy=0.0, status="max_iter", n_iter=5, residual=1.0, solver="x")
    with pytest.raises(NotSolvedError):
        EquilibriumPropagation(0.1).estimate(chain(3), G, X, Y, MIN, free=bad)


def test_backprop_needs_step():
    class NoStep:
        def minimize(self, *a, **k):
            return MIN.minimize(*a, **k)
    with pytest.raises(PhysgradError, match="step"):
        RecurrentBackprop(3).estimate(chain(3), G, X, Y, NoStep())


def test_layered_drn_exact_and_estimators():
    """Generic rules on the layered DRN (tuple theta and state) against finite differences."""
    from physgrad.pytree import tree_map, tree_norm, tree_vdot
    from verification.cases import drn_case
    case = drn_case(0)
    E, th, x, y, M = case.energy, case.theta, case.x, case.y, case.minimizer
    free = M.minimize(E, th, x)
    res = ExactGradient().compute(E, th, x, y, M, free)
    assert not res.near_kink and res.active_set.active[0]
    d = tree_map(lambda a: np.random.default_rng(1).normal(size=a.shape), th)
    from physgrad.learning import mean_cost
    h = 1e-5
    cost = lambda t: mean_cost(E, M.minimize(E, tree_map(lambda a, b: a + t * b, th, d), x).state, y)
    assert (cost(h) - cost(-h)) / (2 * h) == pytest.approx(tree_vdot(res.grad, d), rel=1e-6)

    def rel_to_exact(g):
        return tree_norm(tree_map(np.subtract, g, res.grad)) / tree_norm(res.grad)

    assert rel_to_exact(EquilibriumPropagation(1e-3).estimate(E, th, x, y, M, free)) < 1e-5
    assert rel_to_exact(RecurrentBackprop(60).estimate(E, th, x, y, M, free)) < 1e-10
    lim = coupled_limit(E, th, x, y, M, free)
    cpl = CoupledLearning(1e-2, "centered").estimate(E, th, x, y, M, free)
    assert tree_norm(tree_map(np.subtract, cpl, lim)) < 1e-9 * tree_norm(lim)

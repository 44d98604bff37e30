"""Learning rules on circuits: the co-content energy, exact gradients vs finite differences."""
from dataclasses import replace

import numpy as np
import pytest

from physgrad.circuit.elements import Circuit, DiodeModel, IdealDiode, Resistor, ShockleyDiode, VoltageSource
from physgrad.energies.co_content import CoContentEnergy
from physgrad.minimizers.co_content import CoContentMinimizer
from physgrad.types import FREE, Nudge, PhysgradError
from physgrad.learning import (EquilibriumPropagation, ExactGradient, RecurrentBackprop, TruncatedBackprop,
                               make_estimator)
from physgrad.circuit.solve import solve
from verification.cases import feasible_random_circuit

MIN = CoContentMinimizer()


def independent_cost(circuit, energy, theta):
    """C from the circuit core's solve() on a circuit with the conductances replaced (no energy code)."""
    c = circuit.with_conductances(dict(zip(energy.param_names, theta)))
    sol = solve(c)
    return 0.5 * sum((sol.voltage(n) - y) ** 2 for n, y in circuit.targets)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_exact_matches_independent_fd(seed):
    circ = feasible_random_circuit(seed, n_free=7, n_diodes=4)
    energy = CoContentEnergy(circ)
    theta = energy.theta0()
    res = ExactGradient().compute(energy, theta, None, energy.targets(), MIN)
    assert not res.near_kink
    assert res.cost == pytest.approx(independent_cost(circ, energy, theta), rel=1e-12)
    h = 1e-4
    for k in range(theta.size):
        e = np.zeros_like(theta)
        e[k] = h
        d1 = (independent_cost(circ, energy, theta + e) - independent_cost(circ, energy, theta - e)) / (2 * h)
        d2 = (independent_cost(circ, energy, theta + e / 2) - independent_cost(circ, energy, theta - e / 2)) / h
        fd = (4 * d2 - d1) / 3
        assert abs(fd - res.grad[k]) <= 1e-6 * np.linalg.norm(res.grad)


def test_energy_contract_shapes_and_values():
    circ = feasible_random_circuit(3)
    energy = CoContentEnergy(circ)
    theta = energy.theta0()
    eq = MIN.minimize(energy, theta, None)
    assert eq.converged and eq.state.shape == (1, len(circ.nodes))
    assert energy.outputs(eq.state).shape == (1, energy.n_outputs)
    assert energy.theta_grad(eq.state, theta, None).shape == theta.shape
    sol = solve(circ)
    np.testing.assert_allclose(eq.state[0], sol.voltages, atol=1e-12)
    assert float(energy.energy(eq.state, theta, None)[0]) == pytest.approx(sol.co_content, rel=1e-12, abs=1e-14)


def test_coordinate_step_fixed_point_and_convergence():
    circ = feasible_random_circuit(2)
    energy = CoContentEnergy(circ)
    theta = energy.theta0()
    eq = MIN.minimize(energy, theta, None)
    s1 = MIN.step(energy, theta, None, eq.state, FREE)
    np.testing.assert_allclose(s1, eq.state, atol=1e-12)
    s = np.zeros_like(eq.state)
    for _ in range(300):
        s = MIN.step(energy, theta, None, s, FREE)
    np.testing.assert_allclose(s, eq.state, atol=1e-9)
    y = energy.targets()
    nudged = MIN.minimize(energy, theta, None, nudge=Nudge(0.1, target=y))
    np.testing.assert_allclose(MIN.step(energy, theta, None, nudged.state, Nudge(0.1, target=y)), nudged.state, atol=1e-12)


@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_estimators_close_to_exact_on_circuit():
    circ = feasible_random_circuit(5)
    energy = CoContentEnergy(circ)
    theta, y = energy.theta0(), energy.targets()
    free = MIN.minimize(energy, theta, None)
    exact = ExactGradient().estimate(energy, theta, None, y, MIN, free)

    def rel(g):
        return np.linalg.norm(g - exact) / np.linalg.norm(exact)

    assert rel(EquilibriumPropagation(1e-4, "centered").estimate(energy, theta, None, y, MIN, free)) < 1e-6
    assert rel(EquilibriumPropagation(1e-4, "positive").estimate(energy, theta, None, y, MIN, free)) < 1e-3
    assert rel(RecurrentBackprop(200).estimate(energy, theta, None, y, MIN, free)) < 1e-8
    assert rel(TruncatedBackprop(100).estimate(energy, theta, None, y, MIN, free)) < 1e-6


def test_batched_inputs():
    circ = feasible_random_circuit(4)
    energy = CoContentEnergy(circ, inputs=("v1",))
    theta, y = energy.theta0(), energy.targets()
    x = np.array([[0.2], [-0.4], [0.7]])
    res = ExactGradient().compute(energy, theta, x, y, MIN)
    # mean of the per-sample exact gradients
    per = [ExactGradient().estimate(energy, theta, x[i:i + 1], y, MIN) for i in range(3)]
    np.testing.assert_allclose(res.grad, np.mean(per, axis=0), rtol=1e-10, atol=1e-14)
    cep = EquilibriumPropagation(1e-4).estimate(energy, theta, x, y, MIN)
    assert np.linalg.norm(cep - res.grad) <= 1e-5 * np.linalg.norm(res.grad)
    # per-sample targets and clamps (coupled learning) in a batch
    ys = y + np.array([[0.0, 0.1], [0.05, -0.1], [0.1, 0.0]])
    from physgrad.learning import CoupledLearning, coupled_limit
    cpl = CoupledLearning(0.05, "centered").estimate(energy, theta, x, ys, MIN)
    per = [CoupledLearning(0.05, "centered").estimate(energy, theta, x[i:i + 1], ys[i], MIN) for i in range(3)]
    np.testing.assert_allclose(cpl, np.mean(per, axis=0), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(cpl, coupled_limit(energy, theta, x, ys, MIN), rtol=1e-8, atol=1e-12)


def _kink_circuit():
    # v(a) would be exactly 0.3 V without the diode: the diode sits on its kink
    return Circuit((VoltageSource("v1", "in", "0", 1.0), Resistor("r1", "in", "a", 1.0), Resistor("r4", "a", "0", 2.0),
                    IdealDiode("d1", "a", "b", 0.1), VoltageSource("v2", "b", "0", 0.2),
                    Resistor("r2", "a", "out", 0.5), Resistor("r3", "out", "0", 1.0)), targets={"out": 0.2})


def test_kink_is_flagged():
    circ = _kink_circuit()
    energy = CoContentEnergy(circ)
    res = ExactGradient().compute(energy, energy.theta0(), None, energy.targets(), MIN)
    assert res.near_kink
    # the diode sits at its threshold carrying no current: whichever side the solver chose, one margin is ~0
    assert min(res.active_set.min_slack, res.active_set.min_current) < 1e-7


def test_exact_gradient_uses_the_solvers_active_set():
    """The set the minimizer solved on reaches the exact gradient (no re-detection from slacks)."""
    circ = _kink_circuit()
    energy = CoContentEnergy(circ)
    free = MIN.minimize(energy, energy.theta0(), None)
    mask = free.info["active"][0]
    res = ExactGradient().compute(energy, energy.theta0(), None, energy.targets(), MIN, free)
    assert res.active_set.active[0] == tuple(int(i) for i in np.flatnonzero(mask))
    flipped = replace(free, info={**free.info, "active": (~mask,)})
    other = ExactGradient().compute(energy, energy.theta0(), None, energy.targets(), MIN, flipped)
    assert other.active_set.active[0] == tuple(int(i) for i in np.flatnonzero(~mask))


def test_negative_beta_nonconvex_error_names_bound():
    circ = Circuit((VoltageSource("v1", "in", "0", 1.0), Resistor("r1", "in", "out", 0.01),
                    Resistor("r2", "out", "0", 0.01)), targets={"out": 0.2})
    energy = CoContentEnergy(circ)
    with pytest.raises(PhysgradError, match=r"\|beta\| < 0.02"):
        EquilibriumPropagation(0.5, "negative").estimate(energy, energy.theta0(), None, energy.targets(), MIN)


def test_bad_inputs():
    circ = Circuit((VoltageSource("v1", "in", "0", 1.0), Resistor("r1", "in", "out", 1.0),
                    Resistor("r2", "out", "0", 1.0)))
    with pytest.raises(PhysgradError, match=".target"):
        CoContentEnergy(circ)
    circ = circ.with_targets({"out": 0.1})
    with pytest.raises(PhysgradError, match="not a resistor"):
        CoContentEnergy(circ, trainable=("v1",))
    with pytest.raises(PhysgradError, match="not an independent source"):
        CoContentEnergy(circ, inputs=("r1",))
    with pytest.raises(PhysgradError, match="unknown solver"):
        CoContentMinimizer("magic")
    energy = CoContentEnergy(circ, inputs=("v1",))
    with pytest.raises(PhysgradError, match="x must have shape"):
        energy.batch_inputs(np.zeros((2, 3)))


def test_shockley_exact_gradient_matches_fd():
    m = DiodeModel("dm", IS=1e-9, N=1.0)
    circ = Circuit((VoltageSource("v1", "in", "0", 1.0), Resistor("r1", "in", "a", 1e-3),
                    ShockleyDiode("d1", "a", "out", m), Resistor("r2", "out", "0", 1e-3), Resistor("r3", "a", "0", 2e-3),
                    ShockleyDiode("d2", "out", "b", m), VoltageSource("v2", "b", "0", 0.3),
                    Resistor("r4", "out", "c", 1e-3), Resistor("r5", "c", "0", 1e-3)), targets={"c": 0.05})
    energy = CoContentEnergy(circ)
    theta, y = energy.theta0(), energy.targets()
    res = ExactGradient().compute(energy, theta, None, y, MIN)
    h = 1e-7  # S; conductances ~1e-3 S, Newton solves to ~1e-15 V
    fd = np.array([(independent_cost(circ, energy, theta + h * e) - independent_cost(circ, energy, theta - h * e)) / (2 * h)
                   for e in np.eye(theta.size)])
    assert np.max(np.abs(fd - res.grad)) <= 1e-6 * np.linalg.norm(res.grad)
    g = make_estimator("cep", beta=1e-7).estimate(energy, theta, None, y, MIN)
    assert np.linalg.norm(g - res.grad) <= 1e-5 * np.linalg.norm(res.grad)
    with pytest.raises(PhysgradError, match="Shockley"):
        MIN.step(energy, theta, None, np.zeros((1, len(circ.nodes))), FREE)

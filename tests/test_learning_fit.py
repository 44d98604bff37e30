"""The small training loop and the trainable-circuit builders."""
import numpy as np
import pytest

from physgrad.energies.co_content import CoContentEnergy
from physgrad.minimizers.co_content import CoContentMinimizer
from physgrad.types import PhysgradError
from physgrad.learning import FitConfig, fit, make_estimator
from verification.analytic import LinearSolveMinimizer, chain
from verification.tasks import dillavou_network, load_iris, regression_task, xor_task


def test_fit_decreases_cost_on_chain():
    energy = chain(3)
    X, Y = np.array([[1.0], [0.5]]), np.array([[0.1], [0.05]])
    res = fit(energy, np.ones(4), X, Y, LinearSolveMinimizer(), make_estimator("cep", beta=1e-3),
              FitConfig(lr=20.0, epochs=30))
    costs = [h["cost"] for h in res.history]
    assert len(costs) == 31 and costs[-1] < 1e-3 * costs[0]


def test_fit_xor_few_epochs_adam():
    circuit, inputs, X, Y = xor_task(0, n_hidden=8)
    energy = CoContentEnergy(circuit, inputs=inputs)
    res = fit(energy, energy.theta0(), X, Y, CoContentMinimizer(), make_estimator("exact"),
              FitConfig(lr=0.02, epochs=8, g_min=1e-3, optimizer="adam"))
    assert res.history[-1]["cost"] < 0.5 * res.history[0]["cost"]
    assert np.all(res.theta >= 1e-3)


def test_fit_config_errors():
    with pytest.raises(PhysgradError, match="optimizer"):
        FitConfig(optimizer="lbfgs")
    with pytest.raises(PhysgradError, match="lr"):
        FitConfig(lr=0)
    with pytest.raises(PhysgradError, match="same number of rows"):
        fit(chain(3), np.ones(4), np.ones((2, 1)), np.ones((3, 1)), LinearSolveMinimizer(), make_estimator("exact"))


def test_task_builders():
    X, labels = load_iris()
    assert X.shape == (150, 4) and np.bincount(labels).tolist() == [50, 50, 50]
    assert X[0].tolist() == [5.1, 3.5, 1.4, 0.2]
    circuit, inputs = dillavou_network()
    assert len(circuit.trainable_names) == 16 and len(inputs) == 4
    circuit, inputs, X, Y = regression_task()
    energy = CoContentEnergy(circuit, inputs=inputs)
    out = energy.outputs(CoContentMinimizer().minimize(energy, energy.theta0(), X).state)
    assert out.shape == Y.shape

"""The unperturbed state of the one-sided rules (``zero_phase``, issue 22): ``free`` (the free phase) or
``relaxed`` (relaxed again from it for the perturbed phase's budget, as the comparative study's code).
The drift a fixed budget leaves in ``free`` grows like 1/beta; ``relaxed`` cancels it. The fast kernel
equals the generic route in float64 for both."""
import numpy as np
import pytest

from physgrad.layered.kernels import conv_cep
from physgrad.layered.kernels.conv_cep import NumpyOps, ep_gradient
from physgrad.layered.presets import get_preset
from physgrad.layered.steppers import initial_params, make_stepper
from physgrad.learning import CoupledLearning, EquilibriumPropagation, make_estimator
from physgrad.minimizers.block import BlockCoordinateDescent
from physgrad.types import PhysgradError
from tests.test_conv_hopfield import steps_agree

try:
    import torch
except ImportError:  # optional extra
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (optional: pip install torch)")


def _problem(seed=0, n=6):
    preset = get_preset("dchn-tiny")
    energy = preset.energy()
    p0 = initial_params(preset, seed, np.float64)
    rng = np.random.default_rng(seed + 1)
    th = tuple(p0[:energy.n_layers]) + tuple(0.2 * rng.normal(size=b.shape) for b in p0[energy.n_layers:])
    x = rng.uniform(size=(n, 784))
    y = np.eye(energy.n_outputs)[rng.integers(0, energy.n_outputs, n)]
    return energy, th, x, y


def _norm(tree):
    return np.sqrt(sum(float(np.sum(np.asarray(a) ** 2)) for a in tree))


def _diff(a, b):
    return _norm([np.asarray(p) - np.asarray(q) for p, q in zip(a, b)])


def test_relaxed_zero_phase_cancels_the_drift_of_a_fixed_budget():
    """From a warm start far from equilibrium (zeros) with 3 sweeps per phase: the P-EP estimate against
    the free state grows like 1/beta (the relaxation the nudged phase continues is in the contrast), the
    one against the re-relaxed zero phase converges as beta -> 0, to the centered estimate's limit."""
    energy, th, x, y = _problem()
    ops = NumpyOps(energy)

    def est(beta, variant, zero):
        return ep_gradient(energy, ops, th, x, y, None, 3, "asynchronous", beta, variant, "ep", zero)[0]

    free_1, free_2 = est(1e-2, "positive", "free"), est(1e-3, "positive", "free")
    rel_1, rel_2 = est(1e-2, "positive", "relaxed"), est(1e-3, "positive", "relaxed")
    cep = est(1e-3, "centered", "free")
    assert 8 < _norm(free_2) / _norm(free_1) < 12  # ~ drift / beta
    assert _diff(rel_1, rel_2) < 0.05 * _norm(rel_2)  # converges, O(beta)
    assert _diff(rel_2, cep) < 0.02 * _norm(cep)  # the same derivative as centered EP
    assert _norm(free_2) > 20 * _norm(rel_2)


def test_relaxed_equals_free_when_the_phases_converge():
    """Run to convergence, the re-relaxed zero phase is the free equilibrium: both give one estimate."""
    energy, th, x, y = _problem(2, n=3)
    m = BlockCoordinateDescent(sweeps=2000, tol=1e-12)
    for rule in (lambda z: EquilibriumPropagation(beta=0.05, variant="positive", zero_phase=z),
                 lambda z: EquilibriumPropagation(beta=0.05, variant="negative", zero_phase=z),
                 lambda z: CoupledLearning(eta=0.3, variant="positive", zero_phase=z)):
        a, b = rule("free").estimate(energy, th, x, y, m), rule("relaxed").estimate(energy, th, x, y, m)
        assert _diff(a, b) < 1e-8 * _norm(a)
    with pytest.raises(PhysgradError, match="zero_phase"):
        EquilibriumPropagation(zero_phase="settled")
    assert make_estimator("cl", zero_phase="relaxed").zero_phase == "relaxed"


@pytest.mark.parametrize("algorithm,backend", [
    ("pep", "numpy"), ("nep", "numpy"), ("cl", "numpy"), ("ncpl", "numpy"),
    pytest.param("pep", "torch", marks=needs_torch)])
def test_fast_kernel_with_relaxed_zero_phase_equals_the_generic_route(algorithm, backend):
    preset = get_preset("dchn-tiny").with_options(sweeps=3, zero_phase="relaxed", optimizer="momentum")
    p0 = initial_params(preset, 0, np.float64)
    fast = make_stepper("fast", preset, algorithm, tuple(a.copy() for a in p0), backend=backend, eta=0.4)
    generic = make_stepper("generic", preset, algorithm, tuple(a.copy() for a in p0), eta=0.4)
    assert isinstance(fast, conv_cep.ConvEPStepper)
    steps_agree(fast, generic, 2)
    fast.close()
    generic.close()


def test_train_config_takes_zero_phase():
    from physgrad.layered.train import TrainConfig

    cfg = TrainConfig(preset="dchn-tiny", algorithm="pep", zero_phase="relaxed")
    assert cfg.resolved_preset.zero_phase == "relaxed"
    with pytest.raises(PhysgradError, match="zero_phase"):
        TrainConfig(preset="dchn-tiny", zero_phase="settled")

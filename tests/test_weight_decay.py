"""Weight decay (L2 coupled to the gradient, the comparative study's regulariser; issue 22): the optimizer
formulas against ``torch.optim.SGD(weight_decay=...)`` (the anchor's optimizer), one step of the
convolutional kernel against the reference formula, the fast kernel (numpy, torch) against the generic
route in float64, the engine rules and the CLI route."""
import json

import numpy as np
import pytest

from physgrad.layered.engines import plan_engine
from physgrad.layered.kernels import conv_cep
from physgrad.layered.optimizer import LayerOptimizer
from physgrad.layered.presets import get_preset
from physgrad.layered.steppers import initial_params, make_stepper
from physgrad.learning import optim
from physgrad.types import PhysgradError
from tests.test_conv_hopfield import steps_agree

try:
    import torch
except ImportError:  # optional extra
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (optional: pip install torch)")

WD = 0.02  # large enough that the decay term is far above rounding in every comparison below


def _arrays(seed, shapes=((3, 4), (5,))):
    rng = np.random.default_rng(seed)
    return tuple(rng.normal(size=s) for s in shapes)


def test_decayed_is_the_gradient_of_the_l2_penalty():
    """g + lambda theta is the gradient of loss + lambda/2 |theta|^2 (central differences on a quadratic loss)."""
    theta, = _arrays(0, ((6,),))
    A = np.random.default_rng(1).normal(size=(6, 6))

    def total(t):
        return 0.5 * t @ A.T @ A @ t + 0.5 * WD * t @ t

    g = A.T @ A @ theta
    h = 1e-6
    fd = np.array([(total(theta + h * e) - total(theta - h * e)) / (2 * h) for e in np.eye(6)])
    np.testing.assert_allclose(optim.decayed(g, theta, WD), fd, rtol=1e-7, atol=1e-8)
    assert optim.decayed(g, theta, 0.0) is g


@pytest.mark.parametrize("kind", ["sgd", "momentum"])
def test_step_with_weight_decay_equals_the_formula(kind):
    theta, grads = _arrays(2), [_arrays(3 + i) for i in range(3)]
    state, lr, mu = optim.init(kind, theta), 0.1, 0.9
    th, v = [a.copy() for a in theta], [np.zeros_like(a) for a in theta]
    for g in grads:
        theta, state = optim.step(kind, theta, g, state, lr, momentum=mu, weight_decay=WD)
        for i in range(len(th)):
            d = g[i] + WD * th[i]
            v[i] = mu * v[i] + d if kind == "momentum" else d
            th[i] = th[i] - lr * v[i]
    for a, b in zip(theta, th):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-14)
    with pytest.raises(PhysgradError, match="weight_decay"):
        optim.step(kind, theta, grads[0], state, lr, weight_decay=-1.0)


@needs_torch
def test_layer_optimizer_equals_torch_sgd_with_weight_decay():
    """The anchor's optimizer (torch.optim.SGD with momentum and weight_decay, one learning rate per
    array) and LayerOptimizer take the same steps."""
    params, lrs = _arrays(4), [0.05, 0.2]
    opt = LayerOptimizer("momentum", 0.9, WD)
    state = opt.init(params)
    tp = [torch.tensor(a, requires_grad=True) for a in params]
    sgd = torch.optim.SGD([{"params": [t], "lr": lr} for t, lr in zip(tp, lrs)], lr=0.1, momentum=0.9,
                          weight_decay=WD)
    for k in range(4):
        g = _arrays(10 + k)
        params, state = opt.step(params, g, lrs, state)
        for t, gi in zip(tp, g):
            t.grad = torch.tensor(gi)
        sgd.step()
    for a, t in zip(params, tp):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=0, atol=1e-14)


def _batch(n=8, seed=6):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n, 784)), rng.integers(0, 10, n)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("torch", marks=needs_torch)])
def test_one_conv_sgd_step_decays_by_lr_lambda_theta(backend):
    """One SGD step of the dchn kernel with decay = the step without it minus lr * lambda * theta_0
    (the decay does not change the gradient estimate), array by array with its learning rate."""
    base = get_preset("dchn-tiny").with_options(sweeps=3, algorithm="pep")
    p0 = initial_params(base, 0, np.float64)
    x, y = _batch()
    scale = 0.5
    out = []
    for wd in (0.0, WD):
        s = make_stepper("fast", base.with_options(weight_decay=wd), "pep", tuple(a.copy() for a in p0),
                         backend=backend)
        assert isinstance(s, conv_cep.ConvEPStepper)
        s.step(x, np.arange(len(y)), y, None, None, scale)
        out.append(s.to_host())
        s.close()
    wl, bl = base.learning_rates(scale)
    for plain, dec, th, lr in zip(out[0], out[1], p0, wl + bl):
        np.testing.assert_allclose(dec, plain - lr * WD * th, rtol=0, atol=1e-13)
    for plain, dec in zip(out[0][:len(wl)], out[1][:len(wl)]):  # the weights (biases start at 0)
        assert np.abs(dec - plain).max() > 1e-6  # the decay is visible


@pytest.mark.parametrize("optimizer,algorithm,backend", [
    ("sgd", "pep", "numpy"), ("momentum", "pep", "numpy"), ("momentum", "cep", "numpy"),
    pytest.param("momentum", "pep", "torch", marks=needs_torch)])
def test_fast_conv_stepper_with_weight_decay_equals_the_generic_route(optimizer, algorithm, backend):
    preset = get_preset("dchn-tiny").with_options(optimizer=optimizer, sweeps=3, weight_decay=WD)
    p0 = initial_params(preset, 0, np.float64)
    fast = make_stepper("fast", preset, algorithm, tuple(a.copy() for a in p0), backend=backend)
    generic = make_stepper("generic", preset, algorithm, tuple(a.copy() for a in p0))
    steps_agree(fast, generic, 3, *_batch())
    fast.close()
    generic.close()


def test_engine_rules_for_weight_decay():
    """The dchn kernel and the generic engine apply it; the fused DRN/DHN kernels refuse it (auto: generic)."""
    from physgrad.layered.train import TrainConfig

    assert plan_engine("auto", "pep", "torch", convolutional=True, weight_decay=True).stepper == "ConvEPStepper"
    assert plan_engine("auto", "cep", weight_decay=True, numba_available=True).stepper == "RuleStepper"
    assert plan_engine("generic", "cep", weight_decay=True).stepper == "RuleStepper"
    for backend in ("numba", "numpy", "torch"):
        with pytest.raises(PhysgradError, match="weight decay"):
            plan_engine("fast", "cep", backend, weight_decay=True, numba_available=True)
    with pytest.raises(PhysgradError, match="weight decay"):
        plan_engine("fast", "tbp", "numpy", weight_decay=True)
    cfg = TrainConfig(preset="dchn-tiny", algorithm="pep", weight_decay=3e-4)
    assert cfg.resolved_preset.weight_decay == 3e-4 and cfg.plan.stepper == "ConvEPStepper"
    assert TrainConfig(preset="drn-xs", weight_decay=3e-4).plan.stepper == "RuleStepper"
    for bad in (-1e-3, 1.0, float("nan")):
        with pytest.raises(PhysgradError, match="weight_decay"):
            TrainConfig(preset="dchn-tiny", weight_decay=bad)


def test_physgrad_train_records_weight_decay_and_zero_phase(data_dir, tmp_path):
    from physgrad.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--preset", "dchn-tiny", "--algorithm", "pep", "--data-dir", str(data_dir), "--epochs", "1",
               "--train-size", "16", "--test-size", "16", "--backend", "numpy", "--weight-decay", "3e-4",
               "--zero-phase", "relaxed", "--out", str(out), "--no-progress"])
    assert rc == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["weight_decay"] == 3e-4 and saved["preset"]["weight_decay"] == 3e-4
    assert saved["config"]["zero_phase"] == "relaxed" and saved["preset"]["zero_phase"] == "relaxed"
    assert main(["train", "--preset", "dchn-tiny", "--data-dir", str(data_dir), "--weight-decay", "-1",
                 "--out", str(tmp_path / "bad"), "--no-progress"]) == 2

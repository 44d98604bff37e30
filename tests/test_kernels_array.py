"""The backend-neutral C-EP math (physgrad.layered.kernels._math) and the namespace stepper against the
numpy reference kernel, in float64: with numpy and with ``array_api_strict`` (the strict array-API
namespace, so the torch backend's code path is tested without torch). The torch backend itself is
tested in tests/test_kernels_torch.py where torch is installed."""
import numpy as np
import pytest

from physgrad.layered import fused
from physgrad.layered.kernels import _math
from physgrad.layered.kernels.array_stepper import ArrayCEPStepper
from physgrad.layered.presets import MNIST_PIXELS, Preset
from physgrad.layered.steppers import FusedCEPStepper, initial_params
from physgrad.minimizers.block import SCHEDULES
from physgrad.types import PhysgradError
from stepper_pairs import step_side_by_side  # noqa: E402

from test_fused import DEPTHS, SWEEPS, fused_step, setup


def namespaces():
    out = [pytest.param(np, id="numpy")]
    try:
        import array_api_strict
        out.append(pytest.param(array_api_strict, id="array_api_strict"))
    except ImportError:
        out.append(pytest.param(None, id="array_api_strict", marks=pytest.mark.skip("array-api-strict not installed")))
    return out


def host(a):
    return a if isinstance(a, np.ndarray) else np.from_dlpack(a)


def math_step(xp, spec, th, x, y, warm, lrs, blrs, beta=0.5):
    """One C-EP step with _math (out of place), everything in namespace xp."""
    net = _math.net_arrays(spec, xp, xp.float64)
    P = tuple(xp.asarray(a) for a in th)
    s0 = xp.asarray(spec.input_layer(x))
    a1, c1 = _math.drive(xp, net, P[0], s0)
    consts = _math.batch_constants(xp, net, P, a1, c1)
    free, s_m, s_p = _math.phases(xp, net, P, consts, [xp.asarray(w) for w in warm], xp.asarray(y), beta, SWEEPS)
    dbs, factors = _math.cep_factors(xp, net, s0, s_m, s_p, beta, lrs, blrs)
    new = _math.apply_update(xp, net, P, dbs, factors)
    return new, free, s_p, _math.drive(xp, net, new[0], s0)


@pytest.mark.parametrize("xp", namespaces())
@pytest.mark.parametrize("hidden", DEPTHS, ids=["1h", "2h", "3h"])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_math_step_equals_numpy_reference(xp, model, schedule, hidden):
    en, th, x, y, warm = setup(model, hidden)
    L = en.n_layers
    lrs, blrs = [0.1 * (k + 1) for k in range(L)], [0.03 * (k + 1) for k in range(L)]
    spec = fused.FusedSpec(en, schedule, np.float64)
    ref, free_r, plus_r, nxt_r = fused_step(spec, th, x, y, warm, lrs, blrs)
    new, free, s_p, (a1, c1) = math_step(xp, spec, th, x, y, warm, lrs, blrs)
    assert all(type(a) is type(new[0]) for a in list(new) + free + s_p)  # array type in = array type out
    for a, b in zip(list(free) + list(s_p) + list(new), list(free_r) + list(plus_r) + list(ref)):
        np.testing.assert_allclose(host(a), b, rtol=1e-12, atol=1e-13 * max(1.0, np.max(np.abs(b))))
    np.testing.assert_allclose(host(a1), nxt_r.a1, rtol=1e-12, atol=1e-12)
    if model == "drn":
        np.testing.assert_allclose(host(c1), nxt_r.c1, rtol=1e-12)


@pytest.mark.parametrize("xp", namespaces())
@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_free_outputs_equal_numpy_evaluation(xp, model):
    en, th, x, _, _ = setup(model, (6, 4), B=30, seed=3)
    spec = fused.FusedSpec(en, "asynchronous", np.float64)
    net = _math.net_arrays(spec, xp, xp.float64)
    out = _math.free_outputs(xp, net, tuple(xp.asarray(a) for a in th), xp.asarray(spec.input_layer(x)), SWEEPS)
    np.testing.assert_allclose(host(out), fused.free_outputs(spec, th, x, SWEEPS), rtol=1e-11, atol=1e-12)


def tiny_preset(model="drn"):
    return Preset("tiny", model, (16, 12), input_gain=3.0, sweeps=3, sweeps_eval=5, beta=0.05,
                  weight_lrs=(0.1, 0.1, 0.1), batch_size=4)


@pytest.mark.parametrize("xp", namespaces())
@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_namespace_stepper_equals_numpy_stepper(xp, model):
    """Batches through the stepper protocol (the last one shorter), float64: same predictions, warm
    starts, parameters (host copies) and evaluation as the numpy stepper; host predictions in and out,
    namespace arrays in and namespace arrays out."""
    preset = tiny_preset(model)
    rng = np.random.default_rng(2)
    x = rng.random((14, MNIST_PIXELS))
    x[x < 0.8] = 0
    y = rng.integers(0, 10, len(x))
    a = FusedCEPStepper(preset, initial_params(preset, 0, "float64"))
    b = ArrayCEPStepper(preset, initial_params(preset, 0, "float64"), xp, eval_batch=5)
    try:
        for u, v in zip(a.params, b.to_host()):  # initialised on the host: the same numbers
            np.testing.assert_array_equal(u, v)
        step_side_by_side(a, b, x, y)
        for u, v in zip(a.params, b.to_host()):
            np.testing.assert_allclose(u, v, rtol=1e-11, atol=1e-12)
        pred = b.evaluate(b.params, x)
        assert isinstance(pred, np.ndarray)
        np.testing.assert_array_equal(a.evaluate(a.params, x), pred)
        if xp is not np:
            dev_pred = b.evaluate(b.params, xp.asarray(x))
            assert type(dev_pred) is type(b.params[0])
            np.testing.assert_array_equal(host(dev_pred), pred)
    finally:
        a.close()
        b.close()


def test_namespace_stepper_errors():
    preset = tiny_preset()
    params = initial_params(preset, 0, "float32")
    with pytest.raises(PhysgradError, match="one dtype"):
        ArrayCEPStepper(preset, params[:-1] + (params[-1].astype(np.float64),), np)
    with pytest.raises(PhysgradError, match="eval_batch"):
        ArrayCEPStepper(preset, params, np, eval_batch=0)
    big = Preset("big-beta", "drn", (16, 12), input_gain=3.0, beta=1e3, weight_lrs=(0.1,) * 3, batch_size=4)
    st = ArrayCEPStepper(big, initial_params(big, 0, "float64"), np)
    x = np.random.default_rng(0).random((8, MNIST_PIXELS))
    st.start_epoch(x, np.arange(8), 0)
    with pytest.raises(PhysgradError, match="non-convex"):
        st.step(x, np.arange(4), np.arange(4), None, None, 1.0)


# --- backend selection (runs without torch or numba) ----------------------------------------------
def test_backend_selection_and_errors(monkeypatch, tmp_path, capsys):
    import importlib.util

    from physgrad.layered.kernels import numba_cpu
    from physgrad.layered.train import TrainConfig

    with pytest.raises(PhysgradError, match="backend must be one of"):
        TrainConfig(backend="cupy")
    with pytest.raises(PhysgradError, match="needs --backend torch"):
        TrainConfig(device="cuda")
    with pytest.raises(PhysgradError, match="generic engine"):
        TrainConfig(algorithm="pep", backend="numba")
    with pytest.raises(PhysgradError, match="centered EP only"):
        TrainConfig(algorithm="tbp", backend="numba")
    assert TrainConfig(algorithm="tbp").resolved_engine == "fast"
    assert TrainConfig(algorithm="tbp", engine="generic").resolved_engine == "generic"
    assert TrainConfig(algorithm="tbp").resolved_backend == "numpy"
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("array_api_compat") is None:
        with pytest.raises(PhysgradError, match=r"pip install 'physgrad\[torch\]'"):
            TrainConfig(backend="torch").resolved_backend
    monkeypatch.setattr(numba_cpu, "AVAILABLE", False)  # as without numba: auto falls back, with a note
    c = TrainConfig()
    assert c.resolved_backend == "numpy" and "pip install 'physgrad[fast]'" in c.backend_note
    with pytest.raises(PhysgradError, match=r"pip install 'physgrad\[fast\]'"):
        TrainConfig(backend="numba").resolved_backend
    assert TrainConfig(backend="numpy").backend_note is None

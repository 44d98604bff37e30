"""The fused truncated-backprop kernel (physgrad.layered.fused_tbp) against the generic route: the energy +
BlockCoordinateDescent + TruncatedBackprop(init="free") through autograd, over models x schedules x depths
(float64, and float32 against float64); the stepper against RuleStepper over several batches; routing."""
import numpy as np
import pytest

from physgrad.layered import fused, fused_tbp
from physgrad.layered.presets import MNIST_PIXELS, Preset
from physgrad.layered.steppers import FusedTBPStepper, RuleStepper, initial_params, make_stepper
from physgrad.learning import TruncatedBackprop
from physgrad.minimizers.block import SCHEDULES, BlockCoordinateDescent
from physgrad.types import PhysgradError
from stepper_pairs import step_side_by_side
from test_fused import setup

SWEEPS = 4


def generic_grad(en, schedule, th, x, y, warm, sweeps=SWEEPS):
    """Free phase from ``warm``, then the generic TBP estimate unrolled from it (the RuleStepper route)."""
    mini = BlockCoordinateDescent(sweeps=sweeps, schedule=schedule, tol=None)
    free = mini.minimize(en, th, x, s0=tuple(warm))
    g = TruncatedBackprop(steps=sweeps, init="free", strict=False).estimate(en, th, x, y, mini, free=free)
    return g, free


def fast_grad(en, schedule, th, x, y, warm, dtype=np.float64, sweeps=SWEEPS):
    """The same with the fused kernel (its own free phase, :func:`fused.relax`) in ``dtype``."""
    spec = fused.FusedSpec(en, schedule, dtype)
    th = tuple(np.asarray(t, dtype) for t in th)
    s0 = spec.input_layer(x)
    drive = fused.Drive(s0 @ th[0], th[0].sum(axis=0) if spec.drn else None)
    consts = fused.prepare(spec, th, drive)
    free = fused.relax(spec, th, drive, [np.asarray(w, dtype) for w in warm], sweeps, consts=consts)
    return fused_tbp.tbp_gradient(spec, th, consts, free, np.asarray(y, dtype), sweeps).full(s0), free


def rel_err(a, b):
    """``max |a - b| / max |b|`` (0 when both vanish)."""
    scale = np.max(np.abs(b))
    return 0.0 if scale == 0 and np.max(np.abs(a)) == 0 else float(np.max(np.abs(a - b)) / scale)


@pytest.mark.parametrize("hidden", [(6,), (6, 4)], ids=["1h", "2h"])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_fused_tbp_gradient_equals_generic(model, schedule, hidden):
    """Same free state and the same gradient (every parameter) as autograd through the unrolled sweeps."""
    en, th, x, y, warm = setup(model, hidden, seed=3)
    g_ref, free_ref = generic_grad(en, schedule, th, x, y, warm)
    g, free = fast_grad(en, schedule, th, x, y, warm)
    for a, b in zip(free, free_ref.state):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    assert len(g) == len(g_ref) == 2 * en.n_layers
    for k, (a, b) in enumerate(zip(g, g_ref)):
        assert a.shape == np.shape(b)
        assert np.max(np.abs(b)) > 0, f"parameter {k}: the reference gradient vanishes (a vacuous check)"
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13 * np.max(np.abs(b)), err_msg=f"parameter {k}")


@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_no_hidden_layer_and_one_sweep(model):
    en, th, x, y, warm = setup(model, (), seed=4)
    g_ref, _ = generic_grad(en, "synchronous", th, x, y, warm, sweeps=1)
    g, _ = fast_grad(en, "synchronous", th, x, y, warm, sweeps=1)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_clip_ties_follow_autograd():
    """Zero inputs, zero hidden biases and a zero free state put the first hidden layer exactly on its
    diode kink (z = 0): autograd's maximum/minimum pass half the gradient there, and so does the kernel."""
    en, th, x, y, _ = setup("drn", (6,), seed=5)
    L = en.n_layers
    x[:2] = 0.0
    th = th[:L] + (np.zeros_like(th[L]),) + th[L + 1:]
    warm = [np.zeros((len(x), n)) for n in en.sizes[1:]]
    g_ref, _ = generic_grad(en, "asynchronous", th, x, y, warm, sweeps=2)
    g, _ = fast_grad(en, "asynchronous", th, x, y, warm, sweeps=2)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_float32_gradient_agrees_with_float64(model):
    en, th, x, y, warm = setup(model, (6, 4), seed=6)
    g_ref, _ = generic_grad(en, "asynchronous", th, x, y, warm)
    g, _ = fast_grad(en, "asynchronous", th, x, y, warm, dtype=np.float32)
    assert all(a.dtype == np.float32 for a in g)
    for a, b in zip(g, g_ref):
        assert rel_err(a, b) < 1e-5


def tiny_preset(model, schedule="asynchronous"):
    return Preset("tiny", model, (6, 4), input_gain=3.0, sweeps=3, sweeps_eval=5, beta=0.5,
                  weight_lrs=(0.1, 0.1, 0.1), batch_size=4, schedule=schedule)


def batches(seed=2, n=14):
    rng = np.random.default_rng(seed)
    x = rng.random((n, MNIST_PIXELS))
    x[x < 0.8] = 0
    return x, rng.integers(0, 10, n)


@pytest.mark.parametrize("schedule", ["asynchronous", "synchronous"])
@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_stepper_trains_like_the_generic_engine(model, schedule):
    """Several batches (the last one shorter) through the stepper protocol, float64: the same
    predictions, warm starts (free states) and parameters as RuleStepper's TBP."""
    preset = tiny_preset(model, schedule)
    x, y = batches()
    a = RuleStepper(preset, "tbp", initial_params(preset, 0, "float64"))
    b = make_stepper("fast", preset, "tbp", initial_params(preset, 0, "float64"))
    assert isinstance(b, FusedTBPStepper)
    try:
        start = [p.copy() for p in a.params]
        step_side_by_side(a, b, x, y, rtol=1e-10, atol=1e-12)
        for u, v, s in zip(a.params, b.params, start):
            assert np.max(np.abs(u - s)) > 0  # the parameters did move
            np.testing.assert_allclose(v, u, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(a.evaluate(a.params, x), b.evaluate(b.params, x))
    finally:
        a.close()
        b.close()


def test_stepper_float32_agrees_with_float64():
    preset = tiny_preset("drn")
    x, y = batches(n=12)
    a = make_stepper("fast", preset, "tbp", initial_params(preset, 1, "float64"))
    b = make_stepper("fast", preset, "tbp", initial_params(preset, 1, "float32"))
    try:
        order = np.arange(len(x))
        for st in (a, b):
            st.start_epoch(x, order, 0)
        wa = wb = None
        for i in range(0, len(x), 4):
            nxt = order[i + 4:i + 8] if i + 4 < len(x) else None
            wa, _ = a.step(x, order[i:i + 4], y[i:i + 4], nxt, wa, 1.0)
            wb, _ = b.step(x, order[i:i + 4], y[i:i + 4], nxt, wb, 1.0)
        for u, v in zip(a.params, b.params):
            assert v.dtype == np.float32 and rel_err(v, u) < 1e-5
    finally:
        a.close()
        b.close()


def test_routing_and_errors():
    preset = tiny_preset("drn")
    params = initial_params(preset, 0, "float32")
    with pytest.raises(PhysgradError, match="numpy backend"):
        make_stepper("fast", preset, "tbp", params, backend="numba")
    with pytest.raises(PhysgradError, match="implements cep and tbp"):
        make_stepper("fast", preset, "rbp", params)
    assert isinstance(make_stepper("generic", preset, "tbp", params), RuleStepper)
    spec = fused.FusedSpec(preset.energy(), preset.schedule, "float32")
    with pytest.raises(PhysgradError, match="sweeps"):
        fused_tbp.tbp_gradient(spec, params, None, spec.zero_state(4), np.zeros((4, 10), np.float32), 0)

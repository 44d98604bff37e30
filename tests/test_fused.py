"""The fused C-EP kernel (physgrad.layered.fused) against the generic route: the energy +
BlockCoordinateDescent + centered EquilibriumPropagation, in float64, over models x schedules x depths;
initialisation, evaluation, the -beta error, determinism."""
import numpy as np
import pytest

from physgrad.energies.layered import DeepHopfield, DeepResistive
from physgrad.layered import fused
from physgrad.layered.presets import MNIST_PIXELS, Preset
from physgrad.layered.steppers import FusedCEPStepper, RuleStepper, initial_params, make_stepper
from physgrad.learning import EquilibriumPropagation
from physgrad.minimizers.block import SCHEDULES, BlockCoordinateDescent
from physgrad.types import PhysgradError

BETA, SWEEPS = 0.5, 4
DEPTHS = [(6,), (6, 4), (4, 6, 4)]  # 1, 2 and 3 hidden layers


def setup(model="drn", hidden=(6,), n_pix=5, n_out=3, seed=0, dtype=np.float64, B=4):
    """A tiny energy, parameters away from the diode kinks, inputs, one-hot targets and a warm start."""
    rng = np.random.default_rng(seed)
    en = DeepResistive(n_pix, hidden, n_out, input_gain=3.0) if model == "drn" else DeepHopfield(n_pix, hidden, n_out)
    th = en.init_theta(rng, 1.0, dtype)
    L = en.n_layers
    th = tuple((t + 0.05 * np.abs(rng.standard_normal(t.shape)) + (0.3 if i == L - 1 else 0.0)
                if model == "drn" else t) if i < L
               else 0.1 * rng.standard_normal(t.shape) for i, t in enumerate(th))
    th = tuple(np.asarray(t, dtype) for t in th)
    x = rng.random((B, n_pix)).astype(dtype)
    y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, B)]
    warm = [0.1 * rng.standard_normal((B, n)).astype(dtype) for n in en.sizes[1:]]
    return en, th, x, y, warm


def fused_step(spec, th, x, y, warm, lrs, blrs, beta=BETA, threads=1, block_rows=2):
    ws = fused.Workspace(spec, len(x), n_threads=threads, block_rows=block_rows)
    params = tuple(a.copy() for a in th)
    s0 = spec.input_layer(x)
    drive = fused.make_drive(spec, ws, params[0], s0)
    try:
        free, s_plus, nxt = fused.cep_step(spec, params, ws, drive, warm, y, beta, lrs, blrs, SWEEPS, s0, s0)
    finally:
        ws.close()
    return params, free, s_plus, nxt


def generic_step(en, schedule, th, x, y, warm, lrs, blrs, beta=BETA):
    mini = BlockCoordinateDescent(sweeps=SWEEPS, schedule=schedule, tol=None)
    eq = mini.minimize(en, th, x, s0=tuple(warm))
    rule = EquilibriumPropagation(beta=beta, variant="centered", strict=False)
    ph = rule.phases(en, th, x, y, mini, free=eq)
    g = rule.estimate_from_phases(en, th, x, ph)
    return en.project(tuple(t - lr * gi for t, gi, lr in zip(th, g, lrs + blrs))), eq, ph


@pytest.mark.parametrize("hidden", DEPTHS, ids=["1h", "2h", "3h"])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_fused_step_equals_generic_centered_ep(model, schedule, hidden):
    """Same free and nudged states and the same update as the generic rule (same sweeps, same warm start)."""
    en, th, x, y, warm = setup(model, hidden)
    L = en.n_layers
    lrs, blrs = [0.1 * (k + 1) for k in range(L)], [0.03 * (k + 1) for k in range(L)]
    params, free, s_plus, _ = fused_step(fused.FusedSpec(en, schedule, np.float64), th, x, y, warm, lrs, blrs)
    expected, eq, ph = generic_step(en, schedule, th, x, y, warm, lrs, blrs)
    for a, b in zip(free, eq.state):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    for a, b in zip(s_plus, ph.plus.state):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    for a, b in zip(params, expected):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("hidden", DEPTHS, ids=["1h", "2h", "3h"])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_nonconvex_minus_beta_is_the_same_error(model, schedule, hidden):
    """A beta so large that the -beta phase is non-convex: both routes raise the energy's error."""
    en, th, x, y, warm = setup(model, hidden)
    L = en.n_layers
    lrs = blrs = [0.1] * L
    beta = 1e3  # DRN: above every output's conductance; DHN: beyond -1
    with pytest.raises(PhysgradError, match="non-convex") as fast_err:
        fused_step(fused.FusedSpec(en, schedule, np.float64), th, x, y, warm, lrs, blrs, beta=beta)
    with pytest.raises(PhysgradError, match="non-convex") as generic_err:
        generic_step(en, schedule, th, x, y, warm, lrs, blrs, beta=beta)
    assert type(fast_err.value) is type(generic_err.value)
    assert str(fast_err.value) == str(generic_err.value)


def test_next_drive_of_the_fused_pass():
    """The fused pass returns the next batch's drive s0 @ W1 (and the column sums) after the update."""
    for model in ("drn", "dhn"):
        en, th, x, y, warm = setup(model, (6, 4))
        spec = fused.FusedSpec(en, "asynchronous", np.float64)
        params, _, _, nxt = fused_step(spec, th, x, y, warm, [0.1, 0.2, 0.3], [0.05] * 3, threads=2)
        np.testing.assert_allclose(nxt.a1, spec.input_layer(x) @ params[0], rtol=1e-12, atol=1e-13)
        if model == "drn":
            np.testing.assert_allclose(nxt.c1, params[0].sum(0), rtol=1e-12)


# --- initialisation -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_init_theta_is_the_historic_formula(model, dtype):
    """``init_theta`` draws exactly what the fast path always drew (seeds keep giving the same runs)."""
    en = DeepResistive(7, (6, 4), 3, input_gain=2.0) if model == "drn" else DeepHopfield(7, (6, 4), 3)
    got = en.init_theta(np.random.default_rng(11), 0.7, dtype)
    rng = np.random.default_rng(11)
    Ws = []
    for n_in, n_out in zip(en.sizes[:-1], en.sizes[1:]):
        scale = 0.7 / np.sqrt(n_in)
        W = rng.uniform(-scale, scale, size=(n_in, n_out)).astype(dtype)
        if model == "drn":
            np.maximum(W, 0, out=W)
        Ws.append(W)
    want = tuple(Ws) + tuple(np.zeros(n, dtype) for n in en.sizes[1:])
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def tiny_preset(model, schedule="asynchronous"):
    return Preset("tiny", model, (6, 4), input_gain=3.0, sweeps=3, sweeps_eval=5, beta=0.5,
                  weight_lrs=(0.1, 0.1, 0.1), batch_size=4, schedule=schedule)


@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_engines_start_from_the_same_params_and_evaluate_alike(model):
    preset = tiny_preset(model, "forward")
    x = np.random.default_rng(1).random((90, MNIST_PIXELS))
    params = {}
    preds = {}
    for engine in ("fast", "generic"):
        stepper = make_stepper(engine, preset, "cep", initial_params(preset, 5, "float64"))
        try:
            params[engine] = stepper.params
            preds[engine] = stepper.evaluate(stepper.params, x)
        finally:
            stepper.close()
    for a, b in zip(params["fast"], params["generic"]):
        np.testing.assert_array_equal(a, b)
    want = preset.energy().init_theta(np.random.default_rng(5), preset.weight_gain, np.float64)
    for a, b in zip(params["fast"], want):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(preds["fast"], preds["generic"])


def test_stepper_errors():
    preset = tiny_preset("drn")
    params = initial_params(preset, 0, "float32")
    with pytest.raises(PhysgradError, match="implements cep and tbp"):
        make_stepper("fast", preset, "pep", params)
    with pytest.raises(PhysgradError, match="engine"):
        make_stepper("gpu", preset, "cep", params)
    with pytest.raises(PhysgradError, match="layer 1"):
        FusedCEPStepper(preset, (params[0][:-1],) + params[1:])
    with pytest.raises(PhysgradError, match="one dtype"):
        FusedCEPStepper(preset, params[:-1] + (params[-1].astype(np.float64),))
    with pytest.raises(PhysgradError, match="eval_batch"):
        RuleStepper(preset, "cep", params, eval_batch=0)


# --- evaluation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [7, 80])  # the skinny (training-size) and the large-batch layouts
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("hidden", DEPTHS, ids=["1h", "2h", "3h"])
@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_evaluate_matches_block_minimizer(model, hidden, schedule, batch):
    """Output voltages and predictions of the fused evaluation (DRN above 64 rows: the folded-sign
    operators) equal the block minimizer's from the zero state."""
    en, th, x, _, _ = setup(model, hidden, B=80, seed=3)
    spec = fused.FusedSpec(en, schedule, np.float64)
    out = fused.free_outputs(spec, th, x, SWEEPS, batch=batch)
    eq = BlockCoordinateDescent(sweeps=SWEEPS, schedule=schedule, tol=None).minimize(en, th, x)
    np.testing.assert_allclose(out, eq.state[-1], rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(fused.evaluate(spec, th, x, SWEEPS, batch=batch), np.argmax(eq.state[-1], axis=1))


def test_floating_unit_is_zero_not_nan():
    spec = fused.FusedSpec(DeepResistive(2, (2,), 2), dtype=np.float64)
    th = (np.zeros((4, 2)), np.ones((2, 2)), np.zeros(2), np.zeros(2))
    out = fused.free_outputs(spec, th, np.ones((3, 2)), sweeps=2)
    assert out.shape == (3, 2) and np.all(np.isfinite(out))


# --- float32, threads, validation -----------------------------------------------------------------
def test_float32_deterministic_and_thread_independent_up_to_rounding():
    en, th, x, y, warm = setup("drn", (8,), n_pix=40, dtype=np.float32)
    spec = fused.FusedSpec(en)
    lrs = blrs = [0.05, 0.05]
    runs = {(t, r): fused_step(spec, th, x, y, warm, lrs, blrs, threads=t, block_rows=r)[0]
            for t, r in ((1, 7), (2, 7), (2, 80))}
    again = fused_step(spec, th, x, y, warm, lrs, blrs, threads=1, block_rows=7)[0]
    for p, q in zip(runs[(1, 7)], again):
        np.testing.assert_array_equal(p, q)
    for params in runs.values():
        assert all(p.dtype == np.float32 for p in params)
        for p, q in zip(params, again):
            np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)


def test_spec_validation():
    en = DeepResistive(2, (4, 2), 2)
    with pytest.raises(PhysgradError, match="DeepResistive and DeepHopfield"):
        fused.FusedSpec(object())
    with pytest.raises(PhysgradError, match="schedule"):
        fused.FusedSpec(en, "random")
    with pytest.raises(PhysgradError, match="dtype"):
        fused.FusedSpec(en, dtype=np.int32)
    with pytest.raises(PhysgradError, match="n_threads"):
        fused.Workspace(fused.FusedSpec(en), 4, n_threads=0)
    spec = fused.FusedSpec(en)
    assert spec.groups == ((1, 3), (2,)) and spec.sizes == (4, 4, 2, 2) and spec.dtype == np.float32
    assert [np.asarray(b).tolist() for b in spec.bounds[1]] == [[0, 0, -np.inf, -np.inf], [np.inf, np.inf, 0, 0]]
    with pytest.raises(PhysgradError, match=r"shape \(n, 2\)"):
        fused.evaluate(spec, en.init_theta(np.random.default_rng(0), dtype=np.float32), np.ones((3, 4)), 2)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["drn-2h", "dhn-1h"])
def test_steppers_agree_at_preset_size(name):
    """Preset-sized networks in float64 (W1 split into many row blocks and two threads): a few steps of
    the fused and the generic engine give the same parameters, warm starts and predictions."""
    from physgrad.layered.presets import get_preset

    preset = get_preset(name)
    rng = np.random.default_rng(2)
    x = rng.random((3 * preset.batch_size + 2, MNIST_PIXELS))
    x[x < 0.8] = 0
    y = rng.integers(0, 10, len(x))
    fast = FusedCEPStepper(preset, initial_params(preset, 0, "float64"), threads=2)
    generic = RuleStepper(preset, "cep", initial_params(preset, 0, "float64"))
    try:
        assert fast.ws.n_threads == 2 and fast.ws.block_rows < preset.sizes[0]
        order, B = np.arange(len(x)), preset.batch_size
        fast.start_epoch(x, order, 0)
        warm_f = warm_g = None
        for bi in range(-(-len(x) // B)):  # the last batch is shorter
            idx = order[bi * B:(bi + 1) * B]
            nxt = order[(bi + 1) * B:(bi + 2) * B] if (bi + 1) * B < len(x) else None
            warm_f, pred_f = fast.step(x, idx, y[idx], nxt, warm_f, 0.9)
            warm_g, pred_g = generic.step(x, idx, y[idx], nxt, warm_g, 0.9)
            np.testing.assert_array_equal(pred_f, pred_g)
            for a, b in zip(warm_f, warm_g):  # absolute rounding: relative to the layer's scale (gain 2000 V)
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10 * np.max(np.abs(b)))
        for a, b in zip(fast.params, generic.params):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10 * np.max(np.abs(b)))
        np.testing.assert_array_equal(fast.evaluate(fast.params, x), generic.evaluate(generic.params, x))
    finally:
        fast.close()
        generic.close()

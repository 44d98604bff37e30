"""The fused float32 C-EP path against the generic centered-EP rule and a straightforward implementation."""
import numpy as np
import pytest

from physgrad.layered import fused as lf
from physgrad.energies.layered import DeepHopfield, DeepResistive
from physgrad.types import PhysgradError
from physgrad.learning import EquilibriumPropagation
from physgrad.minimizers.block import BlockCoordinateDescent

BETA, SWEEPS = 0.5, 4


def setup(model="drn", hidden=(6,), n_pix=5, n_out=3, seed=0, dtype=np.float64, B=4):
    rng = np.random.default_rng(seed)
    if model == "drn":
        en = DeepResistive(n_pix, hidden, n_out, input_gain=3.0)
    else:
        en = DeepHopfield(n_pix, hidden, n_out)
    net = lf.FastNet(model, en.sizes, input_gain=getattr(en, "input_gain", 1.0))
    th = lf.init_params(net, rng, 1.0, dtype)
    L = net.n_layers
    th = tuple((t + 0.05 * np.abs(rng.standard_normal(t.shape)) + (0.3 if i == L - 1 else 0.0)
                if model == "drn" else t) if i < L
               else 0.1 * rng.standard_normal(t.shape) for i, t in enumerate(th))
    th = tuple(np.asarray(t, dtype) for t in th)
    x = rng.random((B, n_pix)).astype(dtype)
    y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, B)]
    warm = [0.1 * rng.standard_normal((B, n)).astype(dtype) for n in en.sizes[1:]]
    return en, net, th, x, y, warm


def fast_step(net, th, x, y, warm, lrs, blrs, threads=1, block_rows=2, dtype=np.float64):
    ws = lf.Workspace(net, len(x), n_threads=threads, block_rows=block_rows, dtype=dtype)
    params = tuple(a.copy() for a in th)
    s0 = lf.input_layer(net, x, dtype)
    drive = lf.make_drive(net, ws, params[0], s0)
    free, s_plus, nxt = lf.cep_batch_(net, params, ws, drive, warm, y, BETA, lrs, blrs, SWEEPS, s0, s0)
    ws.close()
    return params, free, s_plus, nxt


@pytest.mark.parametrize("model,hidden", [("drn", (6,)), ("drn", (6, 4)), ("drn", (4, 6, 4)), ("dhn", (6, 4))])
def test_fast_update_equals_generic_centered_ep(model, hidden):
    """Same gradient as physgrad.learning's centered EP with the block minimizer (same sweeps, same warm start)."""
    en, net, th, x, y, warm = setup(model, hidden)
    L = net.n_layers
    lrs, blrs = [0.1 * (k + 1) for k in range(L)], [0.03 * (k + 1) for k in range(L)]
    params, free, s_plus, _ = fast_step(net, th, x, y, warm, lrs, blrs)
    mini = BlockCoordinateDescent(sweeps=SWEEPS, tol=None)
    eq = mini.minimize(en, th, x, s0=tuple(warm))
    rule = EquilibriumPropagation(beta=BETA, variant="centered", strict=False)
    ph = rule.phases(en, th, x, y, mini, free=eq)
    g = rule.estimate_from_phases(en, th, x, ph)
    expected = en.project(tuple(t - lr * gi for t, gi, lr in zip(th, g, lrs + blrs)))
    for a, b in zip(params, expected):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    for a, b in zip(free, eq.state):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    for a, b in zip(s_plus, ph.plus.state):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_fast_equals_reference_step(model):
    en, net, th, x, y, warm = setup(model, (6, 4))
    lrs, blrs = [0.1, 0.2, 0.3], [0.05, 0.05, 0.05]
    params, _, s_plus, nxt = fast_step(net, th, x, y, warm, lrs, blrs, threads=2)
    ref, _, ref_plus = lf.reference_cep_step(net, th, x, y, warm, BETA, lrs, blrs, SWEEPS)
    for a, b in zip(params, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    s0 = lf.input_layer(net, x, np.float64)
    np.testing.assert_allclose(nxt.a1, s0 @ params[0], rtol=1e-12, atol=1e-13)  # the fused next drive
    if model == "drn":
        np.testing.assert_allclose(nxt.c1, params[0].sum(0), rtol=1e-12)


def test_float32_deterministic_and_thread_independent_up_to_rounding():
    en, net, th, x, y, warm = setup("drn", (8,), n_pix=40, dtype=np.float32)
    lrs = blrs = [0.05, 0.05]
    runs = {(t, r): fast_step(net, th, x, y, warm, lrs, blrs, threads=t, block_rows=r, dtype=np.float32)[0]
            for t, r in ((1, 7), (1, 7), (2, 7), (2, 80))}
    a, b = runs[(1, 7)], fast_step(net, th, x, y, warm, lrs, blrs, threads=1, block_rows=7, dtype=np.float32)[0]
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p, q)
    for key, params in runs.items():
        assert all(p.dtype == np.float32 for p in params)
        for p, q in zip(params, a):
            np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["drn", "dhn"])
@pytest.mark.parametrize("batch", [7, 80])  # the skinny (training-size) and the large-batch product layouts
def test_evaluate_matches_block_minimizer(model, batch):
    en, net, th, x, y, _ = setup(model, (6, 4), B=80, seed=3)
    preds = lf.evaluate(net, th, x, sweeps=SWEEPS, batch=batch, n_threads=1)
    eq = BlockCoordinateDescent(sweeps=SWEEPS, tol=None).minimize(en, th, x)
    np.testing.assert_array_equal(preds, np.argmax(eq.state[-1], axis=1))
    s = lf.relax(net, th, lf.Drive(lf.input_layer(net, x, np.float64) @ th[0], th[0].sum(0) if model == "drn" else None),
                 lf.zero_state(net, len(x), np.float64), SWEEPS)
    for a, b in zip(s, eq.state):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_floating_unit_is_zero_not_nan():
    net = lf.FastNet("drn", (4, 2, 2), input_gain=1.0)
    th = (np.zeros((4, 2)), np.ones((2, 2)), np.zeros(2), np.zeros(2))
    preds = lf.evaluate(net, th, np.ones((3, 2)), sweeps=2, n_threads=1)
    assert preds.shape == (3,)


def test_fastnet_validation():
    with pytest.raises(PhysgradError, match="model"):
        lf.FastNet("cnn", (4, 2))
    with pytest.raises(PhysgradError, match="schedule"):
        lf.FastNet("drn", (4, 2), schedule="random")
    with pytest.raises(PhysgradError, match="n_threads"):
        lf.Workspace(lf.FastNet("drn", (4, 2)), 4, n_threads=0)
    assert lf.FastNet("drn", (4, 2, 2, 2)).groups() == [[1, 3], [2]]

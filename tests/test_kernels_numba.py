"""The compiled (numba) C-EP kernel against the numpy reference kernel (physgrad.layered.fused):
float64 to rounding and float32 to 1e-6 over models x schedules x depths; bit-for-bit determinism for
every thread count; the -beta error; the stepper, the training loop and resume on the numba backend.

Skipped where numba is not installed (``pip install physgrad[fast]``). The first run compiles the
kernels (about 15 s per (dtype, depth)); later runs load them from the cache.
"""
import json

import numpy as np
import pytest

pytest.importorskip("numba")

from physgrad.layered import fused  # noqa: E402
from physgrad.layered.kernels import numba_cpu  # noqa: E402
from physgrad.layered.presets import MNIST_PIXELS, Preset  # noqa: E402
from physgrad.layered.steppers import CompiledCEPStepper, FusedCEPStepper, initial_params, make_stepper  # noqa: E402
from physgrad.minimizers.block import SCHEDULES  # noqa: E402
from physgrad.types import PhysgradError  # noqa: E402

from test_fused import DEPTHS, SWEEPS, fused_step, setup  # noqa: E402


def numba_step(spec, th, x, y, warm, lrs, blrs, beta=0.5, threads=1, next_x=None, optimizer=None, **ws_options):
    """One compiled step on copies of ``th``; ``optimizer``: None (SGD) or "momentum"/"adam" from a
    fresh state (returned as a fifth item)."""
    from physgrad.layered.optimizer import LayerOptimizer

    ws = numba_cpu.Workspace(spec, len(x), threads=threads, **ws_options)
    params = tuple(a.copy() for a in th)
    ws.attach(params)
    s0 = spec.input_layer(x)
    numba_cpu.make_drive(spec, ws, params[0], s0)
    nxt = s0 if next_x is None else spec.input_layer(next_x)
    opt = None if optimizer is None else (optimizer, 0.9, LayerOptimizer(optimizer).init(params))
    free, s_plus = numba_cpu.cep_step(spec, params, ws, warm, y, beta, lrs, blrs, SWEEPS, s0, nxt, optimizer=opt)
    if opt is None:
        return params, free, s_plus, ws
    return params, free, s_plus, ws, [s[k][0] for s in opt[2] for k in ("m", "v") if k in s]


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a, float) - b)) / max(np.max(np.abs(b)), 1e-30))


# each depth compiles its own float64 kernel (~30 s of CPU with a cold numba cache): 2 and 3 hidden layers in the slow run
@pytest.mark.parametrize("hidden", [DEPTHS[0]] + [pytest.param(h, marks=pytest.mark.slow) for h in DEPTHS[1:]],
                         ids=["1h", "2h", "3h"])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_numba_step_equals_numpy_reference_float64(model, schedule, hidden):
    """Free state, +beta state, updated parameters and the next drive equal the numpy kernel's to
    rounding (float64); the numpy kernel equals the generic route (tests/test_fused.py)."""
    en, th, x, y, warm = setup(model, hidden)
    L = en.n_layers
    lrs, blrs = [0.1 * (k + 1) for k in range(L)], [0.03 * (k + 1) for k in range(L)]
    spec = fused.FusedSpec(en, schedule, np.float64)
    ref, free_r, plus_r, nxt_r = fused_step(spec, th, x, y, warm, lrs, blrs)
    params, free, s_plus, ws = numba_step(spec, th, x, y, warm, lrs, blrs)
    for a, b in zip(free + s_plus + list(params), list(free_r) + list(plus_r) + list(ref)):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13 * max(1.0, np.max(np.abs(b))))
    np.testing.assert_allclose(ws.drive[:len(x)], nxt_r.a1, rtol=1e-12, atol=1e-12)
    if model == "drn":
        np.testing.assert_allclose(ws.drive[-1], nxt_r.c1, rtol=1e-12)


@pytest.mark.parametrize("schedule", ["asynchronous", "forward"])
@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_numba_step_float32_within_1e6_of_reference(model, schedule):
    """float32, to 1e-6: parameters relative to their largest entry; node voltages relative to the
    voltage scale of the network (the largest input voltage, V), and the next drive ``s0 W1``
    relative to ``|s0| |W1|``: both are differences of terms of that size."""
    en, th, x, y, warm = setup(model, (8,), n_pix=40, dtype=np.float32)
    spec = fused.FusedSpec(en, schedule, np.float32)
    lrs = blrs = [0.05, 0.05]
    ref, free_r, plus_r, nxt_r = fused_step(spec, th, x, y, warm, lrs, blrs)
    params, free, s_plus, ws = numba_step(spec, th, x, y, warm, lrs, blrs)
    volts = float(np.max(np.abs(spec.input_layer(x))))
    for a, b in zip(free + s_plus, list(free_r) + list(plus_r)):
        assert a.dtype == np.float32
        assert np.max(np.abs(a - b)) <= 1e-6 * volts
    for a, b in zip(params, ref):
        assert a.dtype == np.float32
        assert rel_err(a, b) <= 1e-6
    s0 = spec.input_layer(x)
    assert np.max(np.abs(ws.drive[:len(x)] - nxt_r.a1)) <= 1e-6 * np.max(np.abs(s0) @ np.abs(ref[0]))


@pytest.mark.parametrize("optimizer", [None, "momentum", "adam"])
def test_bit_for_bit_for_every_thread_count_and_chunking(optimizer):
    """Each output element is computed by one thread with the same operations: runs with 1, 2 and 3
    threads (a team: samples and phases split by rows, ``W1`` by columns, the deeper weights by rows
    when forced with ``team_rows=0``), more threads than samples, and different column chunks are
    identical (SGD, and momentum/Adam with their state)."""
    en, th, x, y, warm = setup("drn", (40, 24), n_pix=50, dtype=np.float32, B=3)
    spec = fused.FusedSpec(en, "asynchronous", np.float32)
    lrs, blrs = [0.05] * 3, [0.02] * 3
    base = numba_step(spec, th, x, y, warm, lrs, blrs, optimizer=optimizer)
    assert not np.array_equal(base[0][0], th[0])
    for opts in (dict(threads=1, chunk=5), dict(threads=2), dict(threads=2, team_rows=0),
                 dict(threads=3, chunk=7, team_rows=0), dict(threads=4, par_w1=0, team_rows=0)):
        got = numba_step(spec, th, x, y, warm, lrs, blrs, optimizer=optimizer, **opts)
        extra = (got[4], base[4]) if optimizer else ([], [])
        for a, b in zip(list(got[0]) + got[1] + got[2] + [got[3].drive] + extra[0],
                        list(base[0]) + base[1] + base[2] + [base[3].drive] + extra[1]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("drn,dtype", [(True, np.float32), (False, np.float64)])
def test_fast_sgd_pass_over_w1_equals_the_general_pass_bit_for_bit(drn, dtype):
    """``_w1_cols_sgd`` (projected SGD without devices: fused loops, flat indexing) against the general
    ``_w1_cols`` on the same row block and column range: the same weights and drive sums, bit for bit,
    for 1 to 8 update coefficients per row (batches of 1, 4 and 7; rows with no pixel, rows with all),
    several column sub-blocks and a column range that starts inside the row."""
    rng = np.random.default_rng(3)
    n0, n1 = 40, numba_cpu.SUB + 76
    for B in (1, 4, 7):
        W = (rng.random((n0, n1)) * 1e-2).astype(dtype)
        s0, P = (rng.random((B, n0)).astype(dtype) for _ in range(2))
        s0[rng.random(s0.shape) < 0.6] = 0
        P[rng.random(P.shape) < 0.6] = 0
        s0[:, :3] = 0  # rows without a pixel in this batch
        s0[:, 3] = 1  # and with every sample's
        P[:, 4] = 0
        Bs = ((rng.random((B + 1, n1)) - 0.5) * 4e-2).astype(dtype)  # some weights reach the clamp (DRN)
        for j0, j1 in ((0, n1), (16, n1 - 5)):
            Wa, Wb = W.copy(), W.copy()
            acc_a, acc_b = np.zeros((B + 1, n1), dtype), np.zeros((B + 1, n1), dtype)
            oc = np.zeros(numba_cpu.N_OC, dtype)
            numba_cpu._w1_cols(Wa, 2, n0 - 1, j0, j1, s0, Bs, True, drn, P, B, acc_a, numba_cpu.SGD, oc, Wa, Wa,
                               numba_cpu.NO_DEVICE)
            numba_cpu._w1_cols_sgd(Wb, 2, n0 - 1, j0, j1, s0, Bs, drn, P, B, acc_b)
            assert not np.array_equal(Wa, W)
            assert (Wa == 0).any() == drn
            assert Wa.tobytes() == Wb.tobytes()
            assert acc_a.tobytes() == acc_b.tobytes()


@pytest.mark.parametrize("threads", [1, 2])
def test_staged_inputs_equal_the_input_layer_route_bit_for_bit(threads):
    """The compiled stepper gathers full batches itself (``Workspace.stage``: input layer and one-hot in
    compiled code) when the pixels are a C-contiguous array of the kernel's dtype; pixels of another
    dtype take the energy's ``input_layer`` in numpy. Both give the same parameters, warm starts and
    predictions bit for bit (float32, a short last batch included), on 1 and 2 threads."""
    preset = tiny_preset("drn")
    rng = np.random.default_rng(4)
    x = rng.random((14, MNIST_PIXELS)).astype(np.float32)
    x[x < 0.8] = 0
    y = rng.integers(0, 10, len(x))
    x64 = x.astype(np.float64)  # the same pixels: cast back to float32 by input_layer
    a = CompiledCEPStepper(preset, initial_params(preset, 0, "float32"), threads=threads)
    b = CompiledCEPStepper(preset, initial_params(preset, 0, "float32"), threads=threads)
    try:
        order, B = np.arange(len(x)), preset.batch_size
        wa, _ = step_side_by_side(a, b, x, y, xb=x64, exact=True)
        assert a._x_checked is x and b._x_checked is None  # the staged route was taken by a only
        for u, v in zip(a.params, b.params):
            assert u.tobytes() == v.tobytes()
        bad = x.copy()
        bad[5, 7] = np.nan
        with pytest.raises(PhysgradError, match="NaN"):
            a.step(bad, order[:B], y[:B], order[B:2 * B], wa, 0.9)
        with pytest.raises(PhysgradError, match="outside the 14 training samples"):
            a.step(x, order[:B] + 11, y[:B], order[B:2 * B], wa, 0.9)
        with pytest.raises(PhysgradError, match="label is outside 0..9"):
            a.step(x, order[:B], y[:B] + 10, order[B:2 * B], wa, 0.9)
        for u, v in zip(a.params, b.params):  # nothing was changed by the refused steps
            assert u.tobytes() == v.tobytes()
    finally:
        a.close()
        b.close()


def _sha(arrays) -> str:
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("threads", [1, 2])
def test_several_batches_per_call_equal_one_batch_calls_bit_for_bit(threads):
    """``run_batches`` (one compiled call for several batches: staging, warm starts, per-batch learning
    rates and predictions inside) against ``step`` batch by batch: the SHA-256 of the parameters, the warm
    start and the drive equal after every chunk, the same predictions, for chunks of 1, 2 and 5 batches
    with a learning rate that changes every batch, the batch before a short last one and the short one by
    ``step``; 1 and 2 threads (the team's workers make one call per batch of a chunk). Bad indices,
    labels and ranges are refused with nothing changed."""
    preset = tiny_preset("drn")
    rng = np.random.default_rng(5)
    x = rng.random((42, MNIST_PIXELS)).astype(np.float32)
    x[x < 0.8] = 0
    y = rng.integers(0, 10, len(x))
    B = preset.batch_size
    nb = -(-len(x) // B)  # 10 full batches and a short one
    order = rng.permutation(len(x))
    lr = [0.9 - 0.02 * bi for bi in range(nb)]
    a = CompiledCEPStepper(preset, initial_params(preset, 0, "float32"), threads=threads)
    b = CompiledCEPStepper(preset, initial_params(preset, 0, "float32"), threads=threads)
    try:
        assert a.chunkable(x) and not a.chunkable(x.astype(np.float64))
        a.start_epoch(x, order, 0)
        b.start_epoch(x, order, 0)
        wa, wb, pa = None, None, []
        for bi in range(nb):
            idx = order[bi * B:(bi + 1) * B]
            nxt = order[(bi + 1) * B:(bi + 2) * B] if bi + 1 < nb else None
            wa, p = a.step(x, idx, y[idx], nxt, wa, lr[bi])
            pa.append(p)
            if bi in (0, 2, 7):
                ends = {0: 1, 2: 3, 7: 8}
                k0 = {0: 0, 2: 1, 7: 3}[bi]
                wb, pb = b.run_batches(x, order, y, k0, ends[bi], wb, lr[k0:ends[bi]])
                assert pb.shape == (ends[bi] - k0, B)
                np.testing.assert_array_equal(pb.reshape(-1), np.concatenate(pa[k0:]))
                assert _sha(a.params) == _sha(b.params) and _sha(wa) == _sha(wb)
                assert a.ws.drive.tobytes() == b.ws.drive.tobytes()
        with pytest.raises(PhysgradError, match="shorter than 4"):  # batch 9's next one (10) is short
            b.run_batches(x, order, y, 8, 10, wb, lr[8:10])
        for bi in (8, 9, 10):
            idx = order[bi * B:(bi + 1) * B]
            nxt = order[(bi + 1) * B:(bi + 2) * B] if bi + 1 < nb else None
            wb, p = b.step(x, idx, y[idx], nxt, wb, lr[bi])
            np.testing.assert_array_equal(p, pa[bi])
        assert _sha(a.params) == _sha(b.params) and _sha(wa) == _sha(wb)
        before = _sha(b.params)
        b.start_epoch(x, order, 0)
        with pytest.raises(PhysgradError, match="outside the 42 training samples"):
            b.run_batches(x, order + 41, y, 0, 2, wb, lr[:2])
        with pytest.raises(PhysgradError, match="label is outside 0..9"):
            b.run_batches(x, order, y + 10, 0, 2, wb, lr[:2])
        with pytest.raises(PhysgradError, match="learning-rate factors"):
            b.run_batches(x, order, y, 0, 2, wb, lr[:3])
        assert _sha(b.params) == before
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_training_loop_chunks_equal_batch_by_batch_bit_for_bit(data_dir, tmp_path, monkeypatch, threads):
    """``physgrad train`` on the compiled kernel runs several batches per call (chunks of up to
    ``CHUNK_BATCHES``, ending on the average's batches): with a per-batch cosine schedule, parameter
    averaging every 3 batches, a short last batch, an interruption mid-epoch and ``--resume``, the
    checkpoint's parameters, warm start and averaged parameters have the same SHA-256 and the metrics the
    same errors as the one-batch route; 1 and 2 threads."""
    from test_train import cfg

    from physgrad.layered import train as train_mod
    from physgrad.layered.steppers import CompiledCEPStepper as Compiled
    from physgrad.layered.train import load_checkpoint, train

    calls = []
    real = Compiled.run_batches

    def counted(self, x, order, y, first, stop, *rest):
        calls.append((first, stop))
        return real(self, x, order, y, first, stop, *rest)

    monkeypatch.setattr(Compiled, "run_batches", counted)
    monkeypatch.setattr(train_mod, "CHUNK_BATCHES", 5)
    config = cfg(data_dir, epochs=2, train_size=46, threads=threads, lr_schedule="cosine", warmup_epochs=0.5,
                 ema_decay=0.9, ema_every=3)
    chunked = train(config, tmp_path / "chunked", progress=False)
    # 12 batches per epoch (the last of 2 images): chunks end at the average's batches (every 3) and
    # before batch 10, whose next one is short
    assert calls[:4] == [(0, 3), (3, 6), (6, 9), (9, 10)] and len(calls) == 8
    part = tmp_path / "resumed"
    train(config, part, progress=False, _interrupt_after=7)  # batch 7 of epoch 1: a chunk ends there
    assert calls[-1] == (6, 7)
    train(config, part, resume=True, progress=False)
    assert calls[-6:] == [(7, 9), (9, 10), (0, 3), (3, 6), (6, 9), (9, 10)]
    monkeypatch.setattr(train_mod, "_chunk_stop", lambda bi, *rest: bi)  # the one-batch route only
    n = len(calls)
    single = train(config, tmp_path / "single", progress=False)
    assert len(calls) == n
    ref = load_checkpoint(tmp_path / "single" / "checkpoint.npz")
    for folder in ("chunked", "resumed"):
        got = load_checkpoint(tmp_path / folder / "checkpoint.npz")
        for name in ("params", "warm", "ema"):
            assert _sha(got[name]) == _sha(ref[name]), (folder, name)
    assert [(r["train_error"], r["test_error"]) for r in chunked] == \
        [(r["train_error"], r["test_error"]) for r in single]


def test_team_workers_park_and_wake_between_steps_bit_for_bit():
    """A 2-thread workspace over several steps, with pauses longer than the workers' spinning (they
    park and are woken by the next step), and a short last batch (the caller alone): the same
    parameters, states and drive as one thread; close() stops the workers and a later step starts new ones."""
    import time

    en, th, x, y, warm = setup("drn", (40, 24), n_pix=50, dtype=np.float32, B=3)
    spec = fused.FusedSpec(en, "asynchronous", np.float32)
    runs = []
    for threads in (1, 2):
        ws = numba_cpu.Workspace(spec, 3, threads=threads)
        params = tuple(a.copy() for a in th)
        ws.attach(params)
        s0 = spec.input_layer(x)
        numba_cpu.make_drive(spec, ws, params[0], s0)
        out = []
        for k, rows in enumerate((3, 3, 2, 3)):
            if k == 2:
                ws.close()
            free, s_plus = numba_cpu.cep_step(spec, params, ws, [w[:rows] for w in warm], y[:rows], 0.5, [0.05] * 3,
                                              [0.02] * 3, SWEEPS, s0[:rows], s0)
            out += free + s_plus + [ws.drive.copy()]
            time.sleep(0.02)  # > the workers' ~2 ms of spinning: they park
        if threads > 1:
            assert ws.team is not None and all(w.thread.is_alive() for w in ws.team.workers)
            workers = list(ws.team.workers)
            ws.close()
            assert not any(w.thread.is_alive() for w in workers)
        runs.append(list(params) + out)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_minus_beta_error_is_the_energy_s(model):
    en, th, x, y, warm = setup(model, (6,))
    spec = fused.FusedSpec(en, "asynchronous", np.float64)
    with pytest.raises(PhysgradError, match="non-convex") as ref:
        fused_step(spec, th, x, y, warm, [0.1] * 2, [0.1] * 2, beta=1e3)
    with pytest.raises(PhysgradError, match="non-convex") as got:
        numba_step(spec, th, x, y, warm, [0.1] * 2, [0.1] * 2, beta=1e3)
    assert str(got.value) == str(ref.value)


def tiny_preset(model="drn"):
    return Preset("tiny", model, (16, 12), input_gain=3.0, sweeps=3, sweeps_eval=5, beta=0.05,
                  weight_lrs=(0.1, 0.1, 0.1), batch_size=4)


@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_steppers_agree_over_batches_with_a_short_last_one(model):
    """Several batches (the last one shorter) through the stepper protocol, float64: the compiled and
    the numpy stepper give the same predictions, warm starts and parameters."""
    preset = tiny_preset(model)
    rng = np.random.default_rng(2)
    x = rng.random((14, MNIST_PIXELS))
    x[x < 0.8] = 0
    y = rng.integers(0, 10, len(x))
    a = FusedCEPStepper(preset, initial_params(preset, 0, "float64"))
    b = make_stepper("fast", preset, "cep", initial_params(preset, 0, "float64"), backend="numba")
    assert isinstance(b, CompiledCEPStepper)
    try:
        step_side_by_side(a, b, x, y)
        for u, v in zip(a.params, b.params):
            np.testing.assert_allclose(u, v, rtol=1e-11, atol=1e-12)
        np.testing.assert_array_equal(a.evaluate(a.params, x), b.evaluate(b.params, x))
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_compiled_optimizers_equal_the_numpy_optimizer_stepper(model, optimizer, dtype):
    """Momentum and Adam inside the compiled step against the numpy array stepper
    (OptimizerCEPStepper, physgrad.learning.optim's formulas): predictions, warm starts, parameters
    and optimizer state over four batches (the last one shorter), float64 to 1e-11 and float32 to its
    rounding (1e-5 relative; Adam divides by sqrt(v), so where a gradient is at round-off level its
    step may differ by a fraction of the learning rate: 1 % of it); the optimizer state round-trips
    through state_arrays."""
    from physgrad.layered.kernels.array_stepper import OptimizerCEPStepper

    preset = tiny_preset(model).with_options(optimizer=optimizer)
    if optimizer == "adam":
        preset = preset.with_options(weight_lrs=(1e-3,) * 3, bias_lrs=(1e-3,) * 3)
    rng = np.random.default_rng(2)
    x = rng.random((14, MNIST_PIXELS))
    x[x < 0.8] = 0
    y = rng.integers(0, 10, len(x))
    tol = dict(rtol=1e-11, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-6)
    a = OptimizerCEPStepper(preset, initial_params(preset, 0, dtype))
    b = make_stepper("fast", preset, "cep", initial_params(preset, 0, dtype), backend="numba")
    assert isinstance(b, CompiledCEPStepper)
    try:
        # float32: the two kernels sum the drive s0 W1 in different orders (the compiled one by row blocks),
        # ~1e-6 relative per batch, which the optimizers' state carries over four batches: states (~0.1-1 V)
        # to 1e-5 absolute
        step_side_by_side(a, b, x, y, **(dict(tol, atol=1e-5) if dtype == "float32" else tol))
        for u, v, u0 in zip(a.params, b.params, initial_params(preset, 0, dtype)):
            assert v.dtype == np.dtype(dtype) and not np.allclose(u, u0)
            atol = 1e-2 * 1e-3 if (optimizer, dtype) == ("adam", "float32") else tol["atol"] * max(1.0, np.max(np.abs(u)))
            np.testing.assert_allclose(v, u, rtol=tol["rtol"], atol=atol)
        sa, sb = a.state_arrays(), b.state_arrays()
        assert sorted(sa) == sorted(sb) and int(sb["opt.t"]) == 4
        state_atol = 1e-11 if dtype == "float64" else 1e-4  # float32: the C-EP gradient is a difference of
        for key in sa:                                        # two phases, its rounding ~1e3 float32 eps
            np.testing.assert_allclose(sb[key], sa[key], rtol=10 * tol["rtol"], atol=state_atol * np.max(np.abs(sa[key])))
        c = make_stepper("fast", preset, "cep", tuple(p.copy() for p in b.params), backend="numba")
        c.load_state_arrays(sb)
        assert all(np.array_equal(c.state_arrays()[k], sb[k]) for k in sb)
        c.close()
    finally:
        a.close()
        b.close()


def test_stepper_and_workspace_errors():
    preset = tiny_preset()
    params = initial_params(preset, 0, "float32")
    with pytest.raises(PhysgradError, match="C-contiguous"):
        CompiledCEPStepper(preset, (np.asfortranarray(params[0]),) + params[1:])
    with pytest.raises(PhysgradError, match="threads must be between 1"):
        CompiledCEPStepper(preset, params, threads=0)
    with pytest.raises(PhysgradError, match="threads must be >= 1"):
        numba_cpu.Workspace(fused.FusedSpec(preset.energy()), 4, threads=0)
    with pytest.raises(PhysgradError, match="device 'cuda' needs --backend torch"):
        make_stepper("fast", preset, "cep", params, backend="numba", device="cuda")


# --- the training loop on the numba backend -------------------------------------------------------
from test_train import cfg, params_of  # noqa: E402  (data_dir: tests/conftest.py)
from physgrad.layered.train import train  # noqa: E402
from stepper_pairs import step_side_by_side  # noqa: E402


def test_numba_backend_is_auto_default_and_recorded(data_dir, tmp_path):
    out = tmp_path / "run"
    train(cfg(data_dir, epochs=1), out, progress=False)
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["backend"] == "auto" and saved["backend"]["backend"] == "numba"
    assert saved["backend"]["threads"] == 1 and "numba" in saved["backend"]


def test_numba_and_numpy_backends_give_the_same_test_error(data_dir, tmp_path):
    """A short float32 run: parameters within rounding (float32 differences grow slowly over the
    20 batches), the same test errors."""
    runs = {}
    for backend in ("numpy", "numba"):
        runs[backend] = train(cfg(data_dir, backend=backend, epochs=2), tmp_path / backend, progress=False)
    assert [r["test_error"] for r in runs["numpy"]] == [r["test_error"] for r in runs["numba"]]
    for p, q in zip(params_of(tmp_path / "numpy"), params_of(tmp_path / "numba")):
        assert rel_err(p, q) <= 1e-4


@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_same_test_error_on_real_mnist(tmp_path):
    """DRN-XS on real MNIST, test error on 1,000 images after one epoch: float64 on 400 images (100
    batches), the same test error; float32 on 2,000 images (500 batches), within 0.5 points.

    Training is chaotic (a unit crossing a diode's kink changes the path), so rounding differences
    grow: measured here, the numpy kernel alone gives 28.7 % in float32 and 28.2 % in float64 after
    800 images, and the two float64 kernels differ by one image in 1,000 after 2,000.
    """
    import os

    from physgrad.layered.data import ENV_VAR

    if not os.environ.get(ENV_VAR):
        pytest.skip(f"set {ENV_VAR} to a folder with MNIST to run this test")
    err = {}
    for dtype, n in (("float64", 400), ("float32", 2000)):
        for backend in ("numpy", "numba"):
            m = train(cfg(None, backend=backend, epochs=1, train_size=n, test_size=1000, dtype=dtype),
                      tmp_path / f"{backend}-{dtype}", progress=False)
            err[backend, dtype] = m[0]["test_error"]
    assert err["numba", "float64"] == err["numpy", "float64"]
    assert abs(err["numba", "float32"] - err["numpy", "float32"]) <= 0.5 and err["numba", "float32"] < 25


def test_first_slow_call_prints_one_note(capsys, monkeypatch):
    """A kernel's first call in a process that takes longer than NOTE_AFTER (compiling) says so once
    on stderr, naming the cache folder; later calls are silent."""
    import time

    monkeypatch.setattr(numba_cpu, "NOTE_AFTER", 0.0)
    monkeypatch.setattr(numba_cpu._compile_note, "_seen", set())
    for _ in range(2):
        with numba_cpu._compile_note(numba_cpu._cep_batch, "float32, 9 weight layer(s)"):
            time.sleep(0.3)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("note: compiling the numba kernel (float32, 9 weight layer(s))")
    assert "cached in" in err[0]

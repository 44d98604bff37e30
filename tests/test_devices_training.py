"""Device models in layered training: the ideal device is bit-for-bit the plain run, levels and bounds
hold after training, stochastic rounding is unbiased at the training level, runs on noisy devices
resume bit-for-bit, and bad device models are refused (exit 2) with a clear message."""
import json

import numpy as np
import pytest

from physgrad.cli import main
from physgrad.devices import Bounds, Device, device_rng, get_device
from physgrad.layered.device_model import DeviceStepper
from physgrad.layered.presets import get_preset
from physgrad.layered.steppers import initial_params, make_stepper
from physgrad.layered.train import TrainConfig, load_checkpoint, train
from physgrad.sweep.tasks import get_task
from physgrad.types import PhysgradError

NOISY = {"base": "pcm-pair", "read_noise": {"sigma": 0.05, "resample": "step"}}
"""A PCM pair (pulses with cycle-to-cycle noise, drift, refresh) with read noise once per step."""


def cfg(data_dir, **kw):
    base = dict(preset="drn-xs", data_dir=data_dir, epochs=1, train_size=48, threads=1, backend="numpy")
    base.update(kw)
    return TrainConfig(**base)


def params_of(folder):
    return load_checkpoint(folder / "checkpoint.npz")["params"]


def device_file(tmp_path, d, name="dev.json"):
    path = tmp_path / name
    path.write_text(json.dumps(d))
    return str(path)


def g_ref(seed=0):
    """Largest initial conductance of each weight array of DRN-XS (the unit of relative bounds)."""
    init = initial_params(get_preset("drn-xs"), seed, np.float32)
    return [float(np.max(np.abs(w))) for w in init[:2]]


# --- the ideal device --------------------------------------------------------------------------
@pytest.mark.parametrize("engine,backend", [("fast", "numpy"), ("fast", "numba"), ("generic", "numpy")])
def test_ideal_device_is_bit_for_bit_the_plain_run(data_dir, tmp_path, engine, backend):
    if backend == "numba":
        pytest.importorskip("numba")
    kw = dict(engine=engine, backend=backend, train_size=24)
    train(cfg(data_dir, **kw), tmp_path / "plain", progress=False)
    train(cfg(data_dir, device_model="ideal", **kw), tmp_path / "ideal", progress=False)
    for p, q in zip(params_of(tmp_path / "plain"), params_of(tmp_path / "ideal")):
        np.testing.assert_array_equal(p, q)
    assert load_checkpoint(tmp_path / "ideal" / "checkpoint.npz")["device_state"] is None
    assert json.loads((tmp_path / "ideal" / "config.json").read_text())["device"] == {"name": "ideal"}


@pytest.mark.parametrize("engine", ["fast", "generic", "array"])
def test_wrapper_with_an_unbounded_continuous_device_follows_the_plain_stepper(data_dir, engine):
    """The hook itself (read, inner step, requested change, update) changes nothing when the device
    delivers every request: the same parameters as the plain stepper to float32 rounding. ``array``:
    the array-API stepper (the torch backend's base class) on array_api_strict, whose parameters are
    not numpy arrays (set through ``to_device``)."""
    from physgrad.layered.data import load_dataset

    if engine == "array":
        xp = pytest.importorskip("array_api_strict")
        from physgrad.layered.kernels.array_stepper import ArrayCEPStepper

        def make_stepper(engine, preset, algo, params, backend):  # noqa: F811 - the array-API stepper
            return ArrayCEPStepper(preset, params, xp)
    else:
        from physgrad.layered.steppers import make_stepper

    preset = get_preset("drn-xs")
    data = load_dataset("mnist", data_dir)
    x = data.x_train[:24].astype(np.float32) / np.float32(255)
    y = data.y_train[:24]
    init = initial_params(preset, 0, np.float32)
    algo = "cep"
    plain = make_stepper(engine, preset, algo, tuple(p.copy() for p in init), backend="numpy")
    dev = Device(name="unbounded", bounds=Bounds(0.0, np.inf, relative=False))
    theta, state = dev.init(init, device_rng(0, "init"), arrays=range(2))
    wrapped = DeviceStepper(make_stepper(engine, preset, algo, tuple(p.copy() for p in init), backend="numpy"),
                            dev, theta, state, seed=0)
    order = np.arange(24)
    warm_a = warm_b = None
    for s in (plain, wrapped):
        s.start_epoch(x, order, 0)
    for bi in range(6):
        idx, nxt = order[4 * bi:4 * bi + 4], (order[4 * bi + 4:4 * bi + 8] if bi < 5 else None)
        warm_a, _ = plain.step(x, idx, y[idx], nxt, warm_a, 1.0)
        warm_b, _ = wrapped.step(x, idx, y[idx], nxt, warm_b, 1.0)
    assert wrapped.device_state.n_updates == 6
    for p, q in zip(plain.to_host(), wrapped.to_host()):
        np.testing.assert_allclose(q, p, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(plain.evaluate(plain.params, x), wrapped.evaluate(wrapped.params, x))
    plain.close(), wrapped.close()


# --- what the devices deliver ------------------------------------------------------------------------
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("engine,algorithm", [("fast", "cep"), ("generic", "cep"), ("fast", "tbp")])
@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_levels_quantise_the_trained_conductances(data_dir, tmp_path, rounding, engine, algorithm):
    n = 16
    train(cfg(data_dir, engine=engine, algorithm=algorithm, device_model=f"levels{n}-{rounding}"), tmp_path / "r",
          progress=False)
    params = params_of(tmp_path / "r")
    init = initial_params(get_preset("drn-xs"), 0, np.float32)
    moved = 0
    for W, W0, ref in zip(params[:2], init[:2], g_ref()):
        step = 2.0 * ref / (n - 1)
        k = W.astype(np.float64) / step
        np.testing.assert_allclose(k, np.rint(k), atol=1e-4)  # on the grid g = k * step
        assert k.min() > -1e-4 and k.max() < n - 1 + 1e-4
        moved += int(np.sum(np.rint(k) != np.rint(W0.astype(np.float64) / step)))
    if not (algorithm == "tbp" and rounding == "nearest"):  # TBP's small requests all round to 0 here
        assert moved > 0  # training changed levels
    assert not np.array_equal(params[2], init[2])  # the biases (not devices) train freely


def test_bounds_hold_after_training(data_dir, tmp_path):
    path = device_file(tmp_path, {"bounds": {"g_min": 0.1, "g_max": 0.6}})
    train(cfg(data_dir, device_model=path), tmp_path / "r", progress=False)
    params = params_of(tmp_path / "r")
    for W, ref in zip(params[:2], g_ref()):
        assert W.min() >= np.float32(0.1 * ref) * (1 - 1e-6) and W.max() <= np.float32(0.6 * ref) * (1 + 1e-6)
        assert np.mean(W == np.float32(0.6 * ref)) > 0  # the upper bound is reached (init goes to 1.0 g_ref)


@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_stochastic_rounding_is_unbiased_at_the_training_level(data_dir):
    """One training step's request, delivered by K device seeds: the wrapper hands ``device.update``
    exactly the inner stepper's request (one wrapped step is bit for bit ``update`` of the plain
    step's change), and the mean delivered change of W equals the request within 5 standard errors
    per device (4 for the mean over devices). The K deliveries call ``update`` directly (the
    request is the same for every seed), not K training steps."""
    from physgrad.layered.data import load_dataset

    preset = get_preset("drn-xs")
    data = load_dataset("mnist", data_dir)
    x = data.x_train[:4].astype(np.float32) / np.float32(255)
    y = data.y_train[:4]
    dev = get_device("levels16-stochastic")
    init = initial_params(preset, 0, np.float32)
    theta, state = dev.init(init, device_rng(0, "init"), arrays=range(2))
    plain = make_stepper("fast", preset, "cep", tuple(p.copy() for p in theta), backend="numpy")
    plain.start_epoch(x, np.arange(4), 0)
    plain.step(x, np.arange(4), y, None, None, 1.0)
    request = tuple(a - b for a, b in zip(plain.params, theta))
    plain.close()
    inner = make_stepper("fast", preset, "cep", tuple(p.copy() for p in theta), backend="numpy")
    wrapped = DeviceStepper(inner, dev, theta, state, seed=7)
    wrapped.start_epoch(x, np.arange(4), 0)
    wrapped.step(x, np.arange(4), y, None, None, 1.0)
    direct, _ = dev.update(theta, request, device_rng(7, "update", 0), state)
    for k in range(2):
        np.testing.assert_array_equal(wrapped.params[k], direct[k])
    wrapped.close()
    requested = request[1].astype(np.float64)
    K = 1000
    delivered = np.array([dev.update(theta, request, device_rng(seed, "update", 0), state)[0][1].astype(np.float64)
                          - theta[1] for seed in range(K)])
    step = 2.0 * g_ref()[1] / 15
    inside = (theta[1] + requested > 0) & (theta[1] + requested < 2 * g_ref()[1])  # away from the bounds
    assert np.sum(inside & (requested != 0)) > 100
    # each delivered change is a whole number of levels around the request
    np.testing.assert_allclose(delivered / step, np.rint(delivered / step), atol=1e-3)
    assert np.all(np.abs(delivered - requested)[:, inside] <= step * (1 + 1e-4))
    err = (delivered.mean(axis=0) - requested)[inside]
    se = step / 2 / np.sqrt(K)  # the per-sample standard deviation is at most half a level
    assert np.all(np.abs(err) <= 5 * se)
    assert abs(err.mean()) <= 4 * se / np.sqrt(err.size)
    # and the spread is the Bernoulli one: p (1 - p) step^2, p the fractional part of request / step
    # (SE of a sample variance: sqrt((mu4 - var^2) / K), mu4 = p (1 - p) (1 - 3 p (1 - p)) step^4)
    p = (requested / step - np.floor(requested / step))[inside]
    var = p * (1 - p) * step ** 2
    se_var = np.sqrt(np.maximum(p * (1 - p) * (1 - 3 * p * (1 - p)) * step ** 4 - var ** 2, 0) / K)
    assert np.all(np.abs(delivered.var(axis=0)[inside] - var) <= 5 * se_var + 1e-6 * step ** 2)


# --- checkpoints and resume ------------------------------------------------------------------------
@pytest.mark.parametrize("engine,model", [("fast", "noisy"), ("generic", "pcm-pair")])
def test_noisy_device_resumes_bit_for_bit(data_dir, tmp_path, engine, model):
    model = device_file(tmp_path, NOISY) if model == "noisy" else model
    config = cfg(data_dir, engine=engine, device_model=model, epochs=2, train_size=24 if engine == "generic" else 48)
    full, parts = tmp_path / "full", tmp_path / "parts"
    m_full = train(config, full, progress=False)
    train(config, parts, progress=False, _interrupt_after=4)  # mid-epoch 1
    ck = load_checkpoint(parts / "checkpoint.npz")
    assert ck["device_state"] is not None and ck["device_state"].n_updates == 4
    m_parts = train(config, parts, resume=True, progress=False)
    for p, q in zip(params_of(full), params_of(parts)):
        np.testing.assert_array_equal(p, q)
    a, b = (load_checkpoint(f / "checkpoint.npz")["device_state"].state_dict() for f in (full, parts))
    assert a[1] == b[1] and a[1]["n_updates"] == 2 * config.train_size // 4
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k])
    assert [m["test_error"] for m in m_full] == [m["test_error"] for m in m_parts]
    saved = json.loads((full / "config.json").read_text())
    assert saved["device"]["name"] in ("dev", "pcm-pair") and "pair" in saved["device"]


def test_resume_refuses_a_changed_device_file(data_dir, tmp_path):
    path = device_file(tmp_path, {"bounds": {"g_max": 1.5}})
    config = cfg(data_dir, device_model=path)
    train(config, tmp_path / "r", progress=False, _interrupt_after=2)
    device_file(tmp_path, {"bounds": {"g_max": 1.2}})
    with pytest.raises(PhysgradError, match="device model"):
        train(config, tmp_path / "r", resume=True, progress=False)


# --- errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,match", [
    (["--device-model", "levels16-roundish"], "unknown device model 'levels16-roundish'; presets: ideal"),
    (["--device-model", "missing.toml"], "cannot read device model missing.toml"),
    (["--device-model", "BAD"], "unknown key"),
    (["--device-model", "pcm-pair"], r"needs the generic engine \(--engine generic"),
    (["--device-model", "pcm-pair", "--engine", "generic", "--algorithm", "tbp"], "tbp unrolls"),
])
def test_bad_device_models_exit_2(data_dir, tmp_path, capsys, args, match):
    args = [device_file(tmp_path, {"bounds": {"gmax": 1}}) if a == "BAD" else a for a in args]
    out = tmp_path / "run"
    code = main(["train", "--preset", "drn-xs", "--data-dir", data_dir, "--epochs", "1", "--train-size", "8",
                 "--out", str(out), "--no-progress", *args])
    assert code == 2
    import re
    assert re.search(match, capsys.readouterr().err)
    assert not out.exists()


def test_sweep_specs_take_the_device_model(data_dir):
    task = get_task("train")
    config = task.config({"preset": "drn-xs", "device_model": "levels16-stochastic", "seed": 0})
    assert config.resolved_device.name == "levels16-stochastic"
    with pytest.raises(PhysgradError, match="unknown device model"):
        task.config({"preset": "drn-xs", "device_model": "memristor9", "seed": 0})


def test_step_read_noise_is_one_realisation_for_every_example_and_phase():
    from physgrad.devices import ReadNoise, ReadThrough
    from physgrad.types import Nudge

    dev = Device(read_noise=ReadNoise(0.1, resample="step"))
    theta = (np.ones((3, 2)), np.zeros(2))
    _, state = dev.init(theta, device_rng(0, "init"), arrays=[0])
    rt = ReadThrough(object(), dev, state, seed=3, key=(7,))
    reads = [rt.read(theta, b, n)[0] for b in (0, 5) for n in (Nudge(0.0), Nudge(1.0, np.zeros(2)), Nudge(-1.0, np.zeros(2)))]
    assert not np.array_equal(reads[0], theta[0])
    for r in reads[1:]:
        np.testing.assert_array_equal(r, reads[0])
    other = ReadThrough(object(), dev, state, seed=3, key=(8,)).read(theta, 0, Nudge(0.0))[0]
    assert not np.array_equal(other, reads[0])  # a new step, a new realisation



# --- every preset trains (issue 18 item 6) ----------------------------------------------------------------
EVERY_PRESET = ["levels16-nearest", "levels16-stochastic", "digipot128", "reram-sb", "reram-es", "pcm-pair"]


def _engine(name):
    return "generic" if name == "pcm-pair" else "fast"  # pcm-pair's read noise is resampled per phase


def _assert_trained(folder, metrics):
    params = params_of(folder)
    assert all(np.all(np.isfinite(p)) for p in params)
    assert metrics and all(np.isfinite(m["test_error"]) and np.isfinite(m["train_error"]) for m in metrics)


@pytest.mark.parametrize("name", EVERY_PRESET)
def test_every_preset_trains_an_epoch_without_nan(data_dir, tmp_path, name):
    """``reram-es`` hung here before: device-to-device bound variability drew devices with
    ``g_max == g_min``, whose step law divided 0 by 0, and the NaN reached the pulse loop."""
    config = cfg(data_dir, device_model=name, engine=_engine(name), backend="auto",
                 train_size=48 if name != "pcm-pair" else 16)
    metrics = train(config, tmp_path / "r", progress=False)
    _assert_trained(tmp_path / "r", metrics)


@pytest.mark.slow
@pytest.mark.parametrize("name", EVERY_PRESET)
def test_every_preset_trains_an_epoch_of_real_mnist_without_nan(tmp_path, name):
    """The issue's form: one epoch of DRN-XS on 2,000 MNIST images (``$PHYSGRAD_DATA``)."""
    import os

    from physgrad.layered import data

    env = os.environ.get(data.ENV_VAR)
    if not env:
        pytest.skip(f"set {data.ENV_VAR} to a folder with MNIST to run this test")
    config = TrainConfig(preset="drn-xs", epochs=1, train_size=2000, threads=1, device_model=name,
                         engine=_engine(name))
    metrics = train(config, tmp_path / "r", progress=False)
    _assert_trained(tmp_path / "r", metrics)
    # it learned something (ideal: about 15 %); not asserted for two presets, measured 2026-12-07: with
    # levels16-nearest updates below half a level round to no change (73 % after this epoch), and pcm-pair
    # ended at 86 % (near chance) after its one epoch on the generic engine
    if name not in ("levels16-nearest", "pcm-pair"):
        assert metrics[-1]["test_error"] < 60.0


@pytest.mark.parametrize("name,threads", [("levels16-nearest", 1), ("levels16-nearest", 2), ("levels16-stochastic", 1),
                                          ("levels16-stochastic", 2), ("digipot128", 1), ("reram-sb", 1),
                                          ("reram-es", 1)])
def test_in_place_device_updates_train_bit_for_bit_like_the_general_route(data_dir, name, threads):
    """``DeviceStepper`` updating in place (the rows that changed, no copies; the default where it
    applies) against the general route (``in_place=False``: request, ``Device.update``, copy back): the
    same conductances, predictions and device counter after 6 batches of DRN-XS, bit for bit. For
    ``levels16-nearest``, ``levels16-stochastic`` and ``digipot128`` (constant steps, uniform bounds, no
    noise) the compiled kernel updates ``W1``'s devices inside its pass over ``W1`` (``fused_w1``), with 1
    and 2 threads (the counter-based draws do not depend on the split); the others take the in-place
    kernel."""
    from physgrad.devices import pulsing
    from physgrad.layered.data import load_dataset

    if not pulsing.AVAILABLE:
        pytest.skip("numba not installed")
    preset = get_preset("drn-xs")
    data = load_dataset("mnist", data_dir)
    x = data.x_train[:24].astype(np.float32) / np.float32(255)
    y = data.y_train[:24]
    init = initial_params(preset, 0, np.float32)
    dev = get_device(name)
    theta, state = dev.init(init, device_rng(0, "init"), arrays=range(2))
    steppers = [DeviceStepper(make_stepper("fast", preset, "cep", tuple(p.copy() for p in init), backend="auto",
                                           threads=threads), dev, theta, state, seed=0, in_place=flag)
                for flag in (True, False)]
    assert [s.in_place for s in steppers] == [True, False]
    assert steppers[0].fused_w1 == (name in ("levels16-nearest", "levels16-stochastic", "digipot128"))
    if threads > 1:
        steppers[0].inner.ws.par_w1 = 0  # the parallel pass over W1 (split by columns) at this size too
        steppers[0].inner.ws.cuts = np.array([0, 48, 100], np.int64)
    order = np.arange(24)
    warm, preds = [None, None], [[], []]
    for s in steppers:
        s.start_epoch(x, order, 0)
    for bi in range(6):
        idx, nxt = order[4 * bi:4 * bi + 4], (order[4 * bi + 4:4 * bi + 8] if bi < 5 else None)
        for k, s in enumerate(steppers):
            warm[k], pred = s.step(x, idx, y[idx], nxt, warm[k], 1.0)
            preds[k].append(pred)
    a, b = steppers
    assert a.device_state.n_updates == b.device_state.n_updates == 6
    np.testing.assert_array_equal(np.concatenate(preds[0]), np.concatenate(preds[1]))
    for p, q, r in zip(a.to_host(), b.to_host(), a.inner.params):
        np.testing.assert_array_equal(p, q)
        np.testing.assert_array_equal(r, q)  # the inner stepper holds the delivered conductances
    assert np.count_nonzero(a.to_host()[0] != theta[0]) > 0
    np.testing.assert_array_equal(a.evaluate(a.params, x), b.evaluate(b.params, x))
    for s in steppers:
        s.close()


@pytest.mark.parametrize("name", ["levels16-nearest", "levels16-stochastic", "reram-sb"])
def test_in_place_routes_refuse_a_diverged_update_like_the_general_route(data_dir, name):
    """An infinite learning-rate factor (a diverged rule): every route raises the device's
    non-finite-request error (the fused route for ``levels16-*``, the in-place one for ``reram-sb``, the
    general one for all)."""
    from physgrad.devices import pulsing
    from physgrad.layered.data import load_dataset

    if not pulsing.AVAILABLE:
        pytest.skip("numba not installed")
    preset = get_preset("drn-xs")
    data = load_dataset("mnist", data_dir)
    x = data.x_train[:8].astype(np.float32) / np.float32(255)
    init = initial_params(preset, 0, np.float32)
    dev = get_device(name)
    theta, state = dev.init(init, device_rng(0, "init"), arrays=range(2))
    for flag in (True, False):
        s = DeviceStepper(make_stepper("fast", preset, "cep", tuple(p.copy() for p in init), backend="auto"),
                          dev, theta, state, seed=0, in_place=flag)
        s.start_epoch(x, np.arange(8), 0)
        with pytest.raises(PhysgradError, match="parameter array 0: device update: the requested change holds "
                                                "[0-9 ]*non-finite"):
            s.step(x, np.arange(4), data.y_train[:4], np.arange(4, 8), None, float("inf"))
        s.close()


@pytest.mark.parametrize("name", ["levels16-nearest", "levels16-stochastic", "reram-sb"])
def test_in_place_device_runs_resume_bit_for_bit(data_dir, tmp_path, name):
    """The fused (``levels16-*``) and in-place (``reram-sb``) routes on the compiled kernel (the stochastic
    ones draw from counter-based streams keyed by the update's number): a run interrupted mid-epoch and
    resumed ends with the uninterrupted run's conductances."""
    pytest.importorskip("numba")
    config = cfg(data_dir, device_model=name, epochs=2, train_size=32, backend="numba")
    full, parts = tmp_path / "full", tmp_path / "parts"
    m_full = train(config, full, progress=False)
    train(config, parts, progress=False, _interrupt_after=3)
    m_parts = train(config, parts, resume=True, progress=False)
    for p, q in zip(params_of(full), params_of(parts)):
        np.testing.assert_array_equal(p, q)
    assert load_checkpoint(parts / "checkpoint.npz")["device_state"].n_updates == 16
    assert [m["test_error"] for m in m_full] == [m["test_error"] for m in m_parts]


@pytest.mark.parametrize("engine,algorithm,backend", [("fast", "cep", "numpy"), ("generic", "cep", "numpy"),
                                                      ("fast", "tbp", "numpy")])
def test_in_place_route_on_the_other_engines_is_the_general_route(data_dir, engine, algorithm, backend):
    """The in-place route applies to every stepper on host arrays (the numpy fused kernels, the generic
    engine): bit for bit the general route there too (``levels16-stochastic``, 4 batches)."""
    from physgrad.layered.data import load_dataset

    preset = get_preset("drn-xs")
    data = load_dataset("mnist", data_dir)
    x = data.x_train[:20].astype(np.float32) / np.float32(255)
    y = data.y_train[:20]
    init = initial_params(preset, 0, np.float32)
    dev = get_device("levels16-stochastic")
    theta, state = dev.init(init, device_rng(0, "init"), arrays=range(2))
    steppers = [DeviceStepper(make_stepper(engine, preset, algorithm, tuple(p.copy() for p in init), backend=backend),
                              dev, theta, state, seed=0, in_place=flag) for flag in (True, False)]
    assert [s.in_place for s in steppers] == [True, False]
    order = np.arange(20)
    warm = [None, None]
    for s in steppers:
        s.start_epoch(x, order, 0)
    for bi in range(4):
        idx, nxt = order[4 * bi:4 * bi + 4], order[4 * bi + 4:4 * bi + 8]
        for k, s in enumerate(steppers):
            warm[k], _ = s.step(x, idx, y[idx], nxt, warm[k], 1.0)
    for p, q in zip(steppers[0].to_host(), steppers[1].to_host()):
        np.testing.assert_array_equal(p, q)
    for s in steppers:
        s.close()

"""Device models, piece by piece, against their formulas.

Statistical checks use one update (or read) of a large array of independent devices; tolerances
are multiples of the standard error stated next to each check.
"""
import json

import numpy as np
import pytest

from physgrad.devices import (Bounds, Device, DeviceState, DifferentialPair, Drift, ExpStep, Pulses, ReadNoise,
                              ReadThrough, SoftBounds, Stuck, Variability, device_from_dict, device_from_spec,
                              device_rng, device_to_dict, get_device, load_device)
from physgrad.types import FREE, Nudge, PhysgradError

N = 200_000  # devices in the statistical checks
Z = 5.0  # tolerance in standard errors


def single(shape=(N,), g_ref=1.0):
    """An array whose largest value is g_ref (the scale of relative bounds)."""
    a = np.full(shape, 0.5 * g_ref)
    a.flat[0] = g_ref
    return a


def init(device, theta, seed=0, **kw):
    return device.init(theta, device_rng(seed, "init"), **kw)


def step(device, theta, dtheta, state, seed=0):
    return device.update(theta, dtheta, device_rng(seed, "update", state.n_updates), state)


# --- the ideal device ------------------------------------------------------------------------
def test_ideal_device_is_a_no_op_bit_for_bit():
    dev = get_device("ideal")
    assert dev.is_ideal and Device().is_ideal and Device().label == "ideal"
    rng0 = np.random.default_rng(1)
    theta = (rng0.uniform(size=(5, 4)).astype(np.float32), rng0.normal(size=4))
    grad = (rng0.normal(size=(5, 4)).astype(np.float32), rng0.normal(size=4))
    rng = np.random.default_rng(7)
    before = rng.bit_generator.state
    t, state = dev.init(theta, rng)
    assert t is theta
    lr = np.float32(0.1)
    new, state = dev.update(t, tuple(-lr * g for g in grad), rng, state)
    for a, b, g in zip(new, theta, grad):
        assert a.dtype == b.dtype and np.array_equal(a, b - lr * g)  # what an engine computes
    assert dev.read(new, rng, state) is new
    assert rng.bit_generator.state == before  # no randomness consumed
    assert state.n_updates == 1


def test_devices_without_read_effects_read_the_same_objects():
    dev = get_device("levels16-stochastic")
    theta, state = init(dev, (single((3, 2)), np.zeros(2)), arrays=[0])
    assert dev.read(theta, None, state) is theta


# --- levels and rounding ---------------------------------------------------------------------
def test_levels16_are_uniform_on_zero_to_twice_the_largest_initial_conductance():
    dev = get_device("levels16-nearest")
    w = np.random.default_rng(0).uniform(0, 0.3, size=(40, 30))
    (W, b), state = init(dev, (w, np.zeros(30)), arrays=[0])
    step_ = 2 * w.max() / 15
    assert state.leaves[1] is None and state.leaves[0].dw0 == pytest.approx(step_)
    assert np.allclose(W / step_, np.rint(W / step_), atol=1e-9) and np.max(np.abs(W - w)) <= step_ / 2 + 1e-15
    rng = np.random.default_rng(1)
    for _ in range(20):  # random updates stay on the 16 levels of [0, 2 max w]
        (W, b), state = step(dev, (W, b), (rng.normal(0, 3 * step_, W.shape), np.zeros(30)), state)
    k = W / step_
    assert np.allclose(k, np.rint(k), atol=1e-9) and k.min() >= 0 and k.max() <= 15 + 1e-9
    assert len(np.unique(np.rint(k))) == 16


@pytest.mark.parametrize("p", [0.3, 0.75])
def test_stochastic_rounding_is_unbiased_with_bernoulli_variance(p):
    dev = get_device("levels64-stochastic")
    g, state = init(dev, single())
    delta = state.leaves[0].dw0
    g = np.full(N, 32 * delta)  # a level in the middle: no bound in reach
    request = (2 + p) * delta
    new, _ = step(dev, g, np.full(N, request), state)
    dg = new - g
    assert np.allclose(np.rint(dg / delta), dg / delta, atol=1e-9)  # whole pulses only
    var = p * (1 - p) * delta**2
    assert abs(dg.mean() - request) <= Z * np.sqrt(var / N)  # mean: SE = sqrt(p(1-p)/N) delta
    mu4 = p * (1 - p) * (1 - 3 * p + 3 * p * p) * delta**4  # 4th central moment of a scaled Bernoulli
    assert abs(dg.var() - var) <= Z * np.sqrt((mu4 - var**2) / N)  # variance: SE = sqrt((mu4 - var^2)/N)


def test_nearest_rounding_has_a_dead_zone_of_half_a_level():
    dev = get_device("levels16-nearest")
    g, state = init(dev, np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    d = state.leaves[0].dw0
    g = np.full(6, 7 * d)
    req = np.array([0.49, -0.49, 0.51, 1.49, -1.51, 0.2]) * d
    new, _ = step(dev, g, req, state)
    assert np.allclose((new - g) / d, [0, 0, 1, 1, -2, 0], atol=1e-12)
    for _ in range(50):  # repeated small requests never accumulate
        g2, state = step(dev, g, np.full(6, 0.4 * d), state)
        assert np.array_equal(g2, g)


def test_hard_bounds_and_off_state_leakage():
    dev = Device(bounds=Bounds(g_min=0.1, g_max=1.5), pulses=Pulses(dw_min=0.01, rounding="nearest"))
    g, state = init(dev, np.array([1.0, 0.5, 0.5]))
    assert g.min() >= 0.1
    up, _ = step(dev, g, np.array([10.0, 10.0, -10.0]), state)
    assert up[0] == pytest.approx(1.5) and up[1] == pytest.approx(1.5) and up[2] == pytest.approx(0.1)
    cont = Device(bounds=Bounds(0.2, 3.0, relative=False))
    g, state = init(cont, np.array([1.0, 2.0]))
    new, _ = step(cont, g, np.array([-5.0, 0.5]), state)
    assert np.array_equal(new, [0.2, 2.5])  # continuous updates, clipped to [g_min, g_max] (S)


# --- pulse responses ---------------------------------------------------------------------------
def test_soft_bounds_step_law():
    a = 0.2
    dev = Device(bounds=Bounds(0.0, 2.0, relative=False),
                 pulses=Pulses(dw_min=0.05, rounding="nearest", law=SoftBounds(), up_down=a))
    g0 = np.array([1.0, 0.3, 1.7, 0.3, 1.7])
    g, state = init(dev, g0)
    assert np.array_equal(g, g0)  # soft-bounds devices are programmed exactly (no level grid)
    d0, lo, hi = state.leaves[0].dw0, 0.0, 2.0
    R = hi - lo
    new, _ = step(dev, g, np.array([1, 1, 1, -1, -1]) * d0, state)
    up = d0 * (1 + a) * 2 * (hi - g0) / R
    down = d0 * (1 - a) * 2 * (g0 - lo) / R
    assert np.allclose(new - g0, [up[0], up[1], up[2], -down[3], -down[4]], rtol=1e-12)
    n = 7  # n up pulses: g_max - g_n = (g_max - g_0) (1 - 2 d0 (1 + a) / R)^n
    new, _ = step(dev, g, np.full(5, n * d0), state)
    assert np.allclose(hi - new, (hi - g0) * (1 - 2 * d0 * (1 + a) / R) ** n, rtol=1e-12)


def test_asymmetric_constant_steps():
    dev = Device(bounds=Bounds(0.0, 2.0), pulses=Pulses(dw_min=0.01, rounding="nearest", up_down=0.25))
    g, state = init(dev, np.array([1.0, 1.0]))
    d0 = state.leaves[0].dw0
    new, _ = step(dev, g, np.array([3 * d0, -3 * d0]), state)
    assert np.allclose(new - g, [3 * 1.25 * d0, -3 * 0.75 * d0], rtol=1e-12)


def test_exponential_step_law():
    law = ExpStep(A_up=-1.18445, A_down=-0.081404, gamma_up=5.0, gamma_down=5.0, a=-0.5, b=-0.5)
    dev = Device(bounds=Bounds(0.0, 2.0, relative=False), pulses=Pulses(dw_min=0.01, rounding="nearest", law=law, up_down=0.1))
    g0 = np.array([2.0, 0.4, 1.0, 1.6])
    g, state = init(dev, g0)
    d0 = state.leaves[0].dw0
    new, _ = step(dev, g, np.array([0.0, 1.0, 1.0, -1.0]) * d0, state)
    z = 2 * law.a * (g0 - 1.0) / 2.0 + law.b
    up = d0 * 1.1 * np.maximum(1 - law.A_up * np.exp(law.gamma_up * z), 0)
    down = d0 * 0.9 * np.maximum(1 - law.A_down * np.exp(-law.gamma_down * z), 0)
    assert np.allclose(new - g0, [0.0, up[1], up[2], -down[3]], rtol=1e-12)


def test_cycle_to_cycle_noise_variance():
    sigma, n = 0.5, 4
    dev = Device(bounds=Bounds(0.0, 2.0), pulses=Pulses(dw_min=0.001, rounding="nearest", c2c=sigma))
    g, state = init(dev, single())
    d0 = state.leaves[0].dw0
    g = np.full(N, 1.0)
    new, _ = step(dev, g, np.full(N, n * d0), state)
    dg = new - g
    var = sigma**2 * n * d0**2  # n pulses, each d0 (1 + sigma xi): mean n d0, variance n sigma^2 d0^2
    assert abs(dg.mean() - n * d0) <= Z * np.sqrt(var / N)
    assert abs(dg.var() / var - 1) <= Z * np.sqrt(2 / N)  # Gaussian: SE of s^2/var is sqrt(2/N)


# --- reads: noise and drift ----------------------------------------------------------------------
def test_read_noise_mean_and_variance():
    sigma = 0.05
    dev = Device(bounds=Bounds(0, 4), read_noise=ReadNoise(sigma))
    g, state = init(dev, single())
    r = dev.read(g, np.random.default_rng(3), state)
    x = r / g - 1  # relative: g (1 + sigma xi)
    assert abs(x.mean()) <= Z * sigma / np.sqrt(N)
    assert abs(x.var() / sigma**2 - 1) <= Z * np.sqrt(2 / N)
    absolute = Device(read_noise=ReadNoise(sigma, relative=False))
    g2, state2 = init(absolute, single(g_ref=2.0))
    e = absolute.read(g2, np.random.default_rng(4), state2) - g2  # g + sigma g_ref xi
    assert abs(e.std() / (sigma * 2.0) - 1) <= Z * np.sqrt(0.5 / N)


def test_drift_power_law():
    nu, t0 = 0.06, 20.0
    dev = Device(bounds=Bounds(0, 2), drift=Drift(nu=nu, t0=t0, seconds_per_update=5.0))
    g0 = np.array([1.0, 0.5, 0.25])
    g, state = init(dev, g0)
    assert np.array_equal(dev.read(g, None, state), g0)  # right after programming: g0
    later = dev.advance(state, 1000.0)
    assert np.allclose(dev.read(g, None, later), g0 * ((t0 + 1000.0) / t0) ** -nu, rtol=1e-13)
    # an update reprograms the devices it moves (from their drifted value) and restarts their clocks
    new, after = step(dev, g, np.array([0.1, 0.0, 0.0]), later)
    f = ((t0 + 1000.0) / t0) ** -nu
    assert new[0] == pytest.approx(f * 1.0 + 0.1) and np.array_equal(new[1:], g[1:])
    assert after.clock == 1005.0
    read = dev.read(new, None, after)
    assert read[0] == pytest.approx(new[0] * ((t0 + 5.0) / t0) ** -nu)
    assert read[1] == pytest.approx(0.5 * ((t0 + 1005.0) / t0) ** -nu)


# --- device-to-device variability and faults ---------------------------------------------------------
def test_variability_distribution():
    s_dw, s_ud, s_b = 0.2, 0.05, 0.1
    dev = Device(bounds=Bounds(0.1, 2.0), pulses=Pulses(dw_min=0.01, up_down=0.1),
                 variability=Variability(dw_min=s_dw, up_down=s_ud, bounds=s_b))
    _, state = init(dev, single())
    cell, d0 = state.leaves[0].cells[0], state.leaves[0].dw0
    scale = (cell.step_up + cell.step_down) / (2 * d0)  # s_i ~ max(0, 1 + 0.2 xi): P(truncated) = 3e-7
    asym = (cell.step_up - cell.step_down) / (cell.step_up + cell.step_down)  # a_i ~ 0.1 + 0.05 xi
    for x, mean, sd in ((scale, 1.0, s_dw), (asym, 0.1, s_ud), (cell.g_max / 2.0, 1.0, s_b), (cell.g_min / 0.1, 1.0, s_b)):
        assert abs(x.mean() - mean) <= Z * sd / np.sqrt(N)
        assert abs(x.std() / sd - 1) <= Z * np.sqrt(0.5 / N)
    assert np.all(cell.g_min <= cell.g_max)
    _, again = init(dev, single())  # drawn once, from the seed
    assert np.array_equal(again.leaves[0].cells[0].step_up, cell.step_up)


@pytest.mark.parametrize("at", ["min", "max", "random"])
def test_stuck_devices(at):
    frac = 0.02
    dev = Device(bounds=Bounds(0.0, 2.0), pulses=Pulses(dw_min=0.01), stuck=Stuck(frac, at=at))
    g, state = init(dev, single())
    cell = state.leaves[0].cells[0]
    k = cell.stuck_index.size
    assert abs(k - frac * N) <= Z * np.sqrt(N * frac * (1 - frac))  # binomial SE
    want = {"min": 0.0, "max": 2.0}.get(at)
    if want is None:
        assert np.all((cell.stuck_value >= 0) & (cell.stuck_value <= 2)) and cell.stuck_value.std() > 0.5
    else:
        assert np.all(cell.stuck_value == want)
    assert np.array_equal(g[cell.stuck_index], cell.stuck_value)
    rng = np.random.default_rng(0)
    for _ in range(3):
        g, state = step(dev, g, rng.normal(0, 0.1, N), state)
    assert np.array_equal(g[cell.stuck_index], cell.stuck_value)
    healthy = np.setdiff1d(np.arange(N), cell.stuck_index)
    assert np.mean(g[healthy] != 1.0) > 0.5


# --- differential pair ---------------------------------------------------------------------------------
def test_differential_pair_signed_updates_and_refresh_within_one_level():
    dev = Device(bounds=Bounds(0.0, 1.0), pulses=Pulses(dw_min=1 / 32, rounding="stochastic"),
                 pair=DifferentialPair(refresh_every=10))
    w0 = np.random.default_rng(0).uniform(-0.5, 0.5, size=500)
    w, state = init(dev, w0)
    leaf = state.leaves[0]
    d0 = leaf.dw0
    gp, gm = leaf.pair
    assert np.allclose(w, gp - gm) and np.all(np.minimum(gp, gm) == 0) and np.max(np.abs(w - w0)) <= d0 / 2 + 1e-12
    rng = np.random.default_rng(1)
    for k in range(1, 10):  # potentiation only: both devices only go up
        req = rng.normal(0, 2 * d0, size=500)
        w, state = step(dev, w, req, state)
        p, m = state.leaves[0].pair
        assert np.all(p >= gp - 1e-12) and np.all(m >= gm - 1e-12)
        assert np.allclose(w, p - m)
        gp, gm = p, m
    before = gp - gm
    w, state = step(dev, w, np.zeros(500), state)  # the 10th update refreshes
    p, m = state.leaves[0].pair
    assert np.all(np.minimum(p, m) == 0)  # the lower device back to g_min
    assert np.max(np.abs((p - m) - before)) <= d0  # the effective conductance kept within one level
    assert np.max(np.abs(p - m - before)) <= d0 / 2 + 1e-12  # (nearest level: half a level)


# --- reproducibility and the checkpoint --------------------------------------------------------------
def test_state_round_trip_gives_identical_subsequent_updates(tmp_path):
    dev = Device(bounds=Bounds(0.05, 2.0), pulses=Pulses(dw_min=0.02, law=SoftBounds(), c2c=0.3),
                 read_noise=ReadNoise(0.02), drift=Drift(0.05, nu_std=0.01), variability=Variability(0.2, 0.02, 0.1),
                 stuck=Stuck(0.05, "random"), pair=DifferentialPair(refresh_every=3))
    theta0 = (np.random.default_rng(0).uniform(-0.3, 0.3, (20, 10)).astype(np.float32), np.zeros(10, np.float32))
    theta, state = dev.init(theta0, device_rng(5, "init"), arrays=[0])
    grads = [(np.random.default_rng(100 + k).normal(0, 0.02, (20, 10)).astype(np.float32), np.ones(10, np.float32))
             for k in range(6)]

    def run(theta, state, ks):
        for k in ks:
            theta, state = dev.update(theta, grads[k], device_rng(5, "update", state.n_updates), state)
        return theta, state

    theta, state = run(theta, state, range(2))
    arrays, meta = state.state_dict()
    np.savez(tmp_path / "ck.npz", **arrays, **{f"param_{i}": p for i, p in enumerate(theta)})
    (tmp_path / "ck.json").write_text(json.dumps(meta))
    with np.load(tmp_path / "ck.npz") as z:
        restored = DeviceState.from_state(z, json.loads((tmp_path / "ck.json").read_text()))
        theta_r = (z["param_0"].copy(), z["param_1"].copy())
    a, sa = run(theta, state, range(2, 6))
    b, sb = run(theta_r, restored, range(2, 6))
    assert all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(a, b))
    assert (sa.clock, sa.n_updates) == (sb.clock, sb.n_updates)
    ra = dev.read(a, device_rng(5, "read", 9, 0, 1), sa)
    rb = dev.read(b, device_rng(5, "read", 9, 0, 1), sb)
    assert all(np.array_equal(x, y) for x, y in zip(ra, rb))


def test_device_rng_is_a_pure_function_of_its_key():
    a = device_rng(3, "update", 7).random(4)
    assert np.array_equal(a, device_rng(3, "update", 7).random(4))
    assert not np.array_equal(a, device_rng(3, "update", 8).random(4))
    assert not np.array_equal(a, device_rng(3, "read", 7).random(4))
    assert not np.array_equal(device_rng(3, "init").random(4), np.random.default_rng(3).random(4))


# --- presets, files, validation ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ideal", "levels16-nearest", "levels16-stochastic", "levels256-nearest", "digipot128",
                                  "reram-sb", "reram-es", "pcm-pair"])
def test_presets_round_trip_through_the_file_form(name, tmp_path):
    dev = get_device(name)
    assert dev.label == name
    assert device_from_dict(device_to_dict(dev)) == dev
    path = tmp_path / "d.json"
    path.write_text(json.dumps(device_to_dict(dev)))
    assert load_device(path) == dev == device_from_spec(name)
    theta, state = init(dev, (single((6, 5)), np.zeros(5)), arrays=[0])
    theta, state = step(dev, theta, (np.full((6, 5), 0.01), np.zeros(5)), state)
    assert all(np.all(np.isfinite(t)) for t in theta)


def test_toml_file_with_a_base_preset(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "levels16-stochastic"\n[bounds]\ng_min = 0.1\ng_max = 2.0\n'
                    '[pulses]\ndw_min = 0.1\nlaw = {kind = "exp", A_up = 0.1}\n[read_noise]\nsigma = 0.01\n'
                    'resample = "example"\n[pair]\n')
    dev = device_from_spec(str(path))
    assert dev.name == "mine" and dev.bounds.g_min == 0.1 and dev.pulses.law == ExpStep(A_up=0.1)
    assert dev.read_noise.resample == "example" and dev.pair == DifferentialPair(refresh_every=None)


@pytest.mark.parametrize("d, match", [
    ({"pulses": {"dw_min": 0.1}, "bounds": {}, "colour": 1}, r"unknown key\(s\) \['colour'\]"),
    ({"bounds": {"gmax": 2}}, r"unknown key\(s\) \['gmax'\] in bounds"),
    ({"bounds": {}, "pulses": {"dw_min": 0}}, r"Pulses.dw_min must be a number in \(0, 1\]"),
    ({"bounds": {}, "pulses": {"dw_min": 0.1, "rounding": "up"}}, r"Pulses.rounding must be one of 'nearest', 'stochastic'"),
    ({"bounds": {}, "pulses": {"dw_min": 0.1, "law": "linear"}}, r"pulses.law must be one of"),
    ({"pulses": {"dw_min": 0.1}}, r"Device.pulses needs Device.bounds"),
    ({"bounds": {"g_min": -1}}, r"Bounds.g_min must be a number in \[0, inf\)"),
    ({"read_noise": {"sigma": 0.1, "resample": "batch"}}, r"ReadNoise.resample must be one of 'phase', 'example'"),
    ({"stuck": {"fraction": 0.1}}, r"Device.stuck needs Device.bounds"),
    ({"bounds": {}, "stuck": {"fraction": 1.5}}, r"Stuck.fraction must be a number in \[0, 1\]"),
    ({"bounds": {}, "pair": {"refresh_every": 0}}, r"DifferentialPair.refresh_every must be an integer >= 1"),
    ({"variability": {"dw_min": 0.1}}, r"variability of dw_min/up_down needs Device.pulses"),
])
def test_bad_device_files_name_the_field(d, match):
    with pytest.raises(PhysgradError, match=match):
        device_from_dict(d, "spec.toml")


def test_unknown_preset_lists_the_presets():
    with pytest.raises(PhysgradError, match=r"levels\{N\}-nearest.*reram-sb"):
        get_device("memristor")
    with pytest.raises(PhysgradError, match="2..65536"):
        get_device("levels1-nearest")
    with pytest.raises(PhysgradError, match="largest initial"):
        get_device("levels16-nearest").init(np.zeros(3), device_rng(0, "init"))


# --- reads inside a minimizer ---------------------------------------------------------------------------
def _chain_case():
    from verification.analytic import LinearSolveMinimizer, chain

    return chain(3), np.linspace(0.5, 2.0, 4), np.array([[1.0], [0.7], [0.3]]), LinearSolveMinimizer()


def test_read_through_ideal_device_is_the_inner_minimizer():
    energy, theta, x, inner = _chain_case()
    dev = Device()
    _, state = dev.init(theta, device_rng(0, "init"))
    eq = ReadThrough(inner, dev, state, seed=1).minimize(energy, theta, x, nudge=Nudge(0.1, target=np.zeros(1)))
    ref = inner.minimize(energy, theta, x, nudge=Nudge(0.1, target=np.zeros(1)))
    assert np.array_equal(eq.state, ref.state)


@pytest.mark.parametrize("resample", ["phase", "example"])
def test_read_through_realisations_per_example_and_phase(resample):
    energy, theta, x, inner = _chain_case()
    dev = Device(read_noise=ReadNoise(0.1, resample=resample))
    _, state = dev.init(theta, device_rng(0, "init"))
    rt = ReadThrough(inner, dev, state, seed=2, key=(5,))
    plus, minus = Nudge(0.1, target=np.zeros(1)), Nudge(-0.1, target=np.zeros(1))
    free = rt.read(theta, 0, FREE)
    assert not np.array_equal(free, theta) and not np.array_equal(free, rt.read(theta, 1, FREE))
    assert np.array_equal(free, rt.read(theta, 0, FREE))  # a pure function of (seed, key, example, phase)
    same = resample == "example"
    for nudge in (plus, minus):
        assert np.array_equal(free, rt.read(theta, 0, nudge)) == same
    # the batch is relaxed example by example, each at its own conductances
    eq = rt.minimize(energy, theta, x, nudge=plus)
    for b in range(3):
        one = inner.minimize(energy, rt.read(theta, b, plus), x[b:b + 1], nudge=plus)
        assert np.array_equal(eq.state[b:b + 1], one.state)
    assert eq.converged and eq.energy.shape == (3,)


def test_read_through_a_circuit_minimizer():
    """No energy wrapper: the circuit minimizer (which accepts only its own energy class) just works."""
    from verification.cases import divider_circuit

    case = divider_circuit()
    dev = Device(bounds=Bounds(0, 4), read_noise=ReadNoise(0.05))
    _, state = dev.init(case.theta, device_rng(0, "init"))
    rt = ReadThrough(case.minimizer, dev, state, seed=0, key=(1,))
    eq = rt.minimize(case.energy, case.theta, case.x)
    ref = case.minimizer.minimize(case.energy, rt.read(case.theta), case.x)
    assert eq.converged and np.array_equal(eq.state, ref.state)
    assert not np.array_equal(eq.state, case.minimizer.minimize(case.energy, case.theta, case.x).state)


def test_read_through_a_layered_network_per_example():
    """Tuple parameters and states: each example relaxed at its own read weights (biases are no devices)."""
    from verification.cases import drn_case

    case = drn_case(0)
    L = case.energy.n_layers
    dev = Device(bounds=Bounds(0, 4), read_noise=ReadNoise(0.1, resample="example"))
    _, state = dev.init(case.theta, device_rng(0, "init"), arrays=range(L))
    rt = ReadThrough(case.minimizer, dev, state, seed=3, key=(0,))
    read = rt.read(case.theta, 1)
    assert all(read[L + k] is case.theta[L + k] for k in range(L))  # biases untouched
    assert not np.array_equal(read[0], case.theta[0])
    nudge = Nudge(0.05, target=case.y)
    eq = rt.minimize(case.energy, case.theta, case.x, nudge=nudge)
    for b in range(2):
        one = case.minimizer.minimize(case.energy, rt.read(case.theta, b), case.x[b:b + 1],
                                      nudge=Nudge(0.05, target=case.y[b:b + 1]))
        assert all(np.array_equal(s[b:b + 1], o) for s, o in zip(eq.state, one.state))

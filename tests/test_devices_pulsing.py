"""The one-pass device update (:mod:`physgrad.devices.pulsing`) against the per-pulse reference
(:mod:`physgrad.devices.reference`, the original code): bit for bit where nothing is random, in
distribution where it is; the compiled and numpy routes against each other (bit for bit: they draw
the same numbers in the same order); the NaN guard; devices without range.

Distribution checks update ``K`` independent copies of the same ``M`` devices in one call (an array
of shape ``(K, M)``: every copy draws its own numbers) and compare, device by device, the mean and
the variance of the result over the copies; tolerances are stated in standard errors next to each check.
"""
import numpy as np
import pytest

from physgrad.devices import (Bounds, Device, Drift, ExpStep, Pulses, SoftBounds, Variability, device_rng, get_device,
                              update_key)
from physgrad.devices import pulsing
from physgrad.devices.reference import move_reference
from physgrad.types import PhysgradError

ROUTES = ["numpy"] + (["numba"] if pulsing.AVAILABLE else [])
ES = ExpStep(A_up=-1.18445, A_down=-0.081404, gamma_up=5.0, gamma_down=5.0, a=-0.5, b=-0.5)


def laws(rounding, c2c=0.0):
    """One device of each law (with asymmetry and device-to-device variability)."""
    var = Variability(dw_min=0.3, up_down=0.05, bounds=0.3)
    return {
        "constant": Device(bounds=Bounds(0.0, 2.0), pulses=Pulses(dw_min=1 / 15, rounding=rounding, c2c=c2c), variability=var),
        "soft_bounds": Device(bounds=Bounds(0.0, 2.0), pulses=Pulses(dw_min=0.01, rounding=rounding, law=SoftBounds(),
                                                                     up_down=0.1, c2c=c2c), variability=var),
        "exp": Device(bounds=Bounds(0.05, 2.0), pulses=Pulses(dw_min=0.01, rounding=rounding, law=ES, up_down=0.26,
                                                              c2c=c2c), variability=var),
        "continuous": Device(bounds=Bounds(0.1, 1.5)),
        "drift": Device(bounds=Bounds(0.0, 2.0), pulses=Pulses(dw_min=0.02, rounding=rounding, law=SoftBounds(), c2c=c2c),
                        drift=Drift(nu=0.05, nu_std=0.01)),
    }


def case(dev, shape, seed=0, dtype=np.float64):
    """Initialised devices, a clock, and requests: zeros, fractions of a step, many steps, both signs."""
    rng = np.random.default_rng(seed)
    theta0 = (rng.random(shape) * 1.5 + 0.1).astype(dtype)
    theta, state = dev.init(theta0, device_rng(seed, "init"))
    leaf = state.leaves[0]
    cell = leaf.cells[0]
    if dev.drift is not None:  # devices programmed at different times
        from dataclasses import replace
        cell = replace(cell, t_prog=rng.random(shape) * 50.0)
    dw0 = leaf.dw0 if dev.pulses is not None else 0.05
    d = rng.standard_normal(shape) * rng.choice([0.0, 0.3, 3.0, 40.0], size=shape) * dw0
    return cell, np.asarray(theta), d.astype(dtype), leaf.dw0, 60.0


def same(a, b, dev):
    """Bit for bit, except where the law or drift calls exp/pow: numpy's vectorised exp/pow and the
    compiled code's libm may differ in the last bit (seen: 2.2e-16 relative)."""
    if isinstance(getattr(dev.pulses, "law", None), ExpStep) or dev.drift is not None:
        np.testing.assert_allclose(a, b, rtol=4e-15, atol=0)
    else:
        np.testing.assert_array_equal(a, b)


def run(dev, route, cell, g, d, dw0, seed=1, clock=60.0, side=0, dtype=None):
    p = pulsing.plan(dev.pulses, dev.drift)
    return pulsing.move(p, cell, g, d, dw0, np.random.default_rng(seed), clock, side=side, dtype=dtype, backend=route)


# --- deterministic: bit for bit with the reference ---------------------------------------------------
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("law", ["constant", "soft_bounds", "exp", "continuous", "drift"])
def test_nearest_rounding_without_noise_is_the_reference_bit_for_bit(route, law):
    dev = laws("nearest")[law]
    cell, g, d, dw0, clock = case(dev, (40, 50))
    new, t_prog = run(dev, route, cell, g, d, dw0, clock=clock)
    ref, ref_cell = move_reference(dev, cell, g, d, dw0, np.random.default_rng(1), clock)
    if route == "numpy":
        np.testing.assert_array_equal(new, ref)
    else:
        same(new, ref, dev)
    assert np.count_nonzero(new != g) > 500  # the requests moved most devices
    if dev.drift is not None:
        np.testing.assert_array_equal(t_prog, ref_cell.t_prog)
    else:
        assert t_prog is None


# --- the two routes: bit for bit -----------------------------------------------------------------------
@pytest.mark.skipif(not pulsing.AVAILABLE, reason="numba not installed")
@pytest.mark.parametrize("law", ["constant", "soft_bounds", "exp", "continuous", "drift"])
@pytest.mark.parametrize("rounding,c2c", [("stochastic", 0.0), ("stochastic", 2.0), ("nearest", 1.0)])
@pytest.mark.parametrize("dtype,side", [(np.float32, 0), (np.float64, 1), (np.float64, -1)])
def test_compiled_and_numpy_routes_draw_the_same_numbers(law, rounding, c2c, dtype, side):
    dev = laws(rounding, c2c)[law]
    cell, g, d, dw0, clock = case(dev, (30, 40), dtype=dtype)
    a, ta = run(dev, "numba", cell, g, d, dw0, side=side, dtype=dtype)
    b, tb = run(dev, "numpy", cell, g, d, dw0, side=side, dtype=dtype)
    assert a.dtype == b.dtype == dtype
    same(a, b, dev)
    if ta is not None:
        np.testing.assert_array_equal(ta, tb)


@pytest.mark.skipif(not pulsing.AVAILABLE, reason="numba not installed")
@pytest.mark.parametrize("name", ["levels16-stochastic", "digipot128", "reram-sb", "reram-es", "pcm-pair"])
def test_presets_update_the_same_on_both_routes(name, monkeypatch):
    dev = get_device(name)
    rng = np.random.default_rng(3)
    theta0 = (rng.random((60, 30)).astype(np.float32), np.zeros(30, np.float32))
    d = (rng.standard_normal((60, 30)).astype(np.float32) * 0.02, np.ones(30, np.float32))
    out = {}
    for route in ("numba", "numpy"):
        monkeypatch.setattr(pulsing, "BACKEND", route)
        theta, state = dev.init(theta0, device_rng(0, "init"), arrays=[0])
        for k in range(3):
            theta, state = dev.update(theta, d, device_rng(0, "update", k), state)
        out[route] = (theta, state.state_dict())
    for a, b in zip(out["numba"][0], out["numpy"][0]):
        same(a, b, dev)
    for key, v in out["numba"][1][0].items():
        same(v, out["numpy"][1][0][key], dev)


# --- random: in distribution ---------------------------------------------------------------------------
def _moments(x):
    return x.mean(axis=0), x.var(axis=0, ddof=1)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("law,rounding,c2c", [("constant", "stochastic", 0.0), ("constant", "stochastic", 1.5),
                                              ("constant", "nearest", 1.5), ("soft_bounds", "stochastic", 3.75),
                                              ("exp", "stochastic", 5.0), ("drift", "stochastic", 1.0)])
def test_random_updates_match_the_reference_in_distribution(route, law, rounding, c2c):
    """K copies of M devices: per device, the means differ by at most 5 standard errors of their
    difference, sqrt((s1^2 + s2^2) / K); the variances agree within 5 standard errors of a variance
    ratio (two independent sample variances), wherever the reference varies; and deterministic
    devices are equal."""
    K, M = 4000, 24
    dev = laws(rounding, c2c)[law]
    cell1, g1, d1, dw0, clock = case(dev, (1, M), seed=5)
    tile = {f: (np.broadcast_to(getattr(cell1, f), (K, M)) if np.ndim(getattr(cell1, f)) else getattr(cell1, f))
            for f in ("g_min", "g_max", "step_up", "step_down", "nu", "t_prog")}
    from dataclasses import replace
    cell = replace(cell1, **tile)
    g, d = np.broadcast_to(g1, (K, M)).copy(), np.broadcast_to(d1, (K, M)).copy()
    new, _ = run(dev, route, cell, g, d, dw0, seed=11, clock=clock)
    ref, _ = move_reference(dev, cell, g, d, dw0, np.random.default_rng(12), clock)
    (m1, v1), (m2, v2) = _moments(new), _moments(ref)
    se = np.sqrt((v1 + v2) / K)
    tiny = 1e-24 * np.maximum(np.abs(m2), 1e-12) ** 2
    random = (v1 > tiny) | (v2 > tiny)
    assert np.all(np.abs(m1 - m2)[random] <= 5 * se[random] + 1e-12)
    # SE of a sample variance relative to the variance: sqrt((kurtosis - 1) / K) (2/K for a Gaussian;
    # larger for the two-point distribution of a rounding), kurtosis from the larger of the two samples
    kurt = np.maximum(*(np.mean((x - x.mean(axis=0)) ** 4, axis=0) / np.where(v > 0, v, 1.0) ** 2
                        for x, v in ((new, v1), (ref, v2))))
    se_ratio = np.sqrt(np.maximum(kurt - 1, 2) / K)
    both = (v1 > tiny) & (v2 > tiny)  # (a rare event may happen in one sample only: the means still compare)
    assert np.all(np.abs(v1[both] / v2[both] - 1) <= 5 * np.sqrt(2) * se_ratio[both])
    np.testing.assert_allclose(new[:, ~random], ref[:, ~random], rtol=1e-12, atol=0)
    assert random.sum() >= M // 3  # the case has random devices to compare


# --- the NaN guard and devices without range -----------------------------------------------------------------
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_requests_raise_and_change_nothing(route, bad, monkeypatch):
    monkeypatch.setattr(pulsing, "BACKEND", route)
    dev = get_device("reram-es")
    theta0 = (np.random.default_rng(0).random((20, 10)), np.zeros(10))
    theta, state = dev.init(theta0, device_rng(0, "init"), arrays=[0])
    d = (np.zeros((20, 10)), np.zeros(10))
    d[0][3, 4] = bad
    before = state.state_dict()
    with pytest.raises(PhysgradError, match=r"parameter array 0: device update: the requested change holds 1 "
                                            r"non-finite value\(s\)"):
        dev.update(theta, d, device_rng(0, "update", 0), state)
    after = state.state_dict()
    assert before[1] == after[1]
    for k in before[0]:
        np.testing.assert_array_equal(before[0][k], after[0][k])
    with pytest.raises(PhysgradError, match="initial values must be finite"):
        dev.init((np.full((2, 2), bad), np.zeros(2)), device_rng(0, "init"), arrays=[0])


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", ["levels16-stochastic", "reram-sb", "reram-es", "pcm-pair"])
def test_huge_requests_saturate_without_hanging(route, name, monkeypatch):
    monkeypatch.setattr(pulsing, "BACKEND", route)
    dev = get_device(name)
    theta, state = dev.init((np.full((4, 5), 0.5),), device_rng(0, "init"))
    d = np.array([1e300, -1e300, 1e18, -1e18, 0.0] * 4).reshape(4, 5)
    new, _ = dev.update(theta, (d,), device_rng(0, "update", 0), state)
    assert np.all(np.isfinite(new[0]))
    assert np.all(new[0][:, 0] >= new[0][:, 4]) and np.all(new[0][:, 1] <= new[0][:, 4] + 1e-12)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("law", [SoftBounds(), ES])
def test_devices_without_range_stay_put(route, law, monkeypatch):
    """Bound variability draws g_max = g_min now and then (reram-es: about 4 devices in 10,000); the
    law's step was 0/0 there (the NaN that hung ``train --device-model reram-es``)."""
    monkeypatch.setattr(pulsing, "BACKEND", route)
    dev = Device(bounds=Bounds(0.0, 2.0), pulses=Pulses(dw_min=0.01, law=law, c2c=1.0),
                 variability=Variability(bounds=0.3))
    theta, state = dev.init(np.full((200, 100), 1.0), device_rng(0, "init"))
    g_max = state.leaves[0].cells[0].g_max
    dead = g_max == 0
    assert dead.sum() >= 1  # this seed draws some
    for k in range(3):
        theta, state = dev.update(theta, np.full((200, 100), 0.05 * (-1) ** k), device_rng(0, "update", k), state)
        assert np.all(np.isfinite(theta))
        assert np.all(theta[dead] == 0.0)
    ref, _ = move_reference(dev, state.leaves[0].cells[0], theta, np.full((200, 100), 0.05), state.leaves[0].dw0,
                            np.random.default_rng(0), 0.0)
    assert np.all(np.isfinite(ref)) and np.all(ref[dead] == 0.0)


def test_kernel_choice_is_checked():
    dev = laws("nearest")["constant"]
    cell, g, d, dw0, clock = case(dev, (2, 3))
    with pytest.raises(PhysgradError, match="device kernel must be one of"):
        run(dev, "fortran", cell, g, d, dw0)


# --- reads ------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not pulsing.AVAILABLE, reason="numba not installed")
@pytest.mark.parametrize("name,extra", [("pcm-pair", {}), ("reram-sb", {"read_noise": {"sigma": 0.05}}),
                                        ("levels16-nearest", {"read_noise": {"sigma": 0.02, "relative": False}}),
                                        ("levels16-nearest", {"drift": {"nu": 0.1, "nu_std": 0.02}})])
def test_reads_are_the_same_on_both_routes_and_draw_like_numpy(name, extra, monkeypatch):
    """Read noise is drawn cell by cell in C order (``rng.standard_normal(shape)`` per cell), so the
    routes agree bit for bit, and with the reference formula (drift, noise, clip at 0 S, pair difference)."""
    from physgrad.devices import device_from_dict

    dev = device_from_dict({"base": name, **extra})
    rng = np.random.default_rng(4)
    theta0 = (rng.random((30, 20)).astype(np.float32), np.zeros(20, np.float32))
    theta, state = dev.init(theta0, device_rng(0, "init"), arrays=[0])
    theta, state = dev.update(theta, (rng.standard_normal((30, 20)).astype(np.float32) * 0.05, theta0[1]),
                              device_rng(0, "update", 0), state)
    state = dev.advance(state, 100.0)
    reads = {}
    for route in ("numba", "numpy"):
        monkeypatch.setattr(pulsing, "BACKEND", route)
        reads[route] = [dev.read(theta, device_rng(0, "read", k), state)[0] for k in range(2)]
    for a, b in zip(reads["numba"], reads["numpy"]):
        np.testing.assert_array_equal(a, b)
    # the formula, written out
    leaf, r = state.leaves[0], np.random.default_rng(device_rng(0, "read", 1).bit_generator.seed_seq)
    gs = leaf.pair if leaf.pair else (theta[0].astype(float),)
    vals = []
    for g, cell in zip(gs, leaf.cells):
        v = g * (((dev.drift.t0 + state.clock - cell.t_prog) / dev.drift.t0) ** (-cell.nu)) if dev.drift else g
        if dev.read_noise is not None and dev.read_noise.sigma > 0:
            xi = r.standard_normal(v.shape)
            s = dev.read_noise.sigma
            v = v * (1 + s * xi) if dev.read_noise.relative else v + s * leaf.scale * xi
        vals.append(np.maximum(v, 0.0))
    expect = (vals[0] - vals[1]) if leaf.pair else vals[0]
    np.testing.assert_array_equal(reads["numpy"][1], expect.astype(np.float32))


# --- in place, visiting only the rows that changed ---------------------------------------------------------
def _in_place_devices():
    """The devices ``update_in_place`` takes (no drift, no pair): each law, both roundings, noise, stuck devices."""
    from physgrad.devices import Stuck

    out = {f"{law}-{r}-{c}": dev for r, c in (("nearest", 0.0), ("stochastic", 0.0), ("stochastic", 2.0))
           for law, dev in laws(r, c).items() if law != "drift"}
    out["stuck"] = Device(bounds=Bounds(0.0, 2.0), pulses=Pulses(dw_min=1 / 15, rounding="stochastic"),
                          stuck=Stuck(fraction=0.1, at="random"))
    for name in ("levels16-nearest", "levels16-stochastic", "digipot128", "reram-sb", "reram-es"):
        out[name] = get_device(name)
    return out


IN_PLACE = _in_place_devices()


@pytest.mark.skipif(not pulsing.AVAILABLE, reason="numba not installed")
@pytest.mark.parametrize("name", sorted(IN_PLACE))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_update_in_place_is_update_bit_for_bit(name, dtype):
    """Rows with zero requests (skipped), rows of fractions of a step and of many steps, a 1-d array
    that is not a device: the same arrays and the same state counter as the general route, which visits
    every device, from the same key (``update_key``: counter-based draws)."""
    dev = IN_PLACE[name]
    rng = np.random.default_rng(5)
    theta0 = ((rng.random((40, 30)) * 1.5 + 0.1).astype(dtype), rng.random(30).astype(dtype))
    theta, state = dev.init(theta0, device_rng(0, "init"), arrays=[0])
    dw0 = state.leaves[0].dw0 or 0.05
    for k in range(3):
        d = (rng.standard_normal((40, 30)) * rng.choice([0.0, 0.3, 3.0], size=(40, 30)) * dw0).astype(dtype)
        d[rng.random(40) < 0.5] = 0  # rows asked for nothing
        values = (theta[0] + d, theta[1] + dtype(0.25))
        r_ref = r_new = update_key(0, k)
        ref, ref_state = dev.update(theta, tuple(v - t for v, t in zip(values, theta)), r_ref, state)
        g, v = tuple(np.array(t) for t in theta), tuple(np.array(t) for t in values)
        new_state = dev.update_in_place(g, v, r_new if dev.update_draws else None, state)
        for a, b, c in zip(ref, g, v):
            assert b.dtype == dtype
            np.testing.assert_array_equal(b, a)
            np.testing.assert_array_equal(c, a)
        assert new_state.n_updates == ref_state.n_updates == k + 1
        assert np.count_nonzero(ref[0] != theta[0]) > (0 if "nearest" in name else 100)
        theta, state = ref, ref_state


@pytest.mark.parametrize("name", ["levels16-stochastic", "reram-sb", "stuck"])
def test_update_in_place_on_the_numpy_route_is_update(name, monkeypatch):
    """Without numba (``BACKEND = "numpy"``) ``update_in_place`` takes ``move``'s numpy route: the same arrays
    as ``update`` on that route, bit for bit."""
    monkeypatch.setattr(pulsing, "BACKEND", "numpy")
    dev = IN_PLACE[name]
    rng = np.random.default_rng(6)
    theta, state = dev.init(((rng.random((20, 30)) * 1.5 + 0.1).astype(np.float32),), device_rng(0, "init"))
    dw0 = state.leaves[0].dw0
    d = (rng.standard_normal((20, 30)) * rng.choice([0.0, 0.3, 3.0], size=(20, 30)) * dw0).astype(np.float32)
    values = (theta[0] + d,)
    ref, _ = dev.update(theta, (values[0] - theta[0],), update_key(0, 1), state)
    g, v = (np.array(theta[0]),), (np.array(values[0]),)
    dev.update_in_place(g, v, update_key(0, 1), state)
    np.testing.assert_array_equal(g[0], ref[0])
    np.testing.assert_array_equal(v[0], ref[0])
    assert np.count_nonzero(ref[0] != theta[0]) > 20


def test_update_in_place_refuses_what_it_cannot_do():
    g = np.ones((4, 3))
    dev = laws("nearest")["drift"]
    theta, state = dev.init((g,), device_rng(0, "init"))
    with pytest.raises(PhysgradError, match="drift"):
        dev.update_in_place([np.array(theta[0])], [np.array(theta[0])], None, state)
    dev = get_device("levels16-stochastic")
    theta, state = dev.init((g,), device_rng(0, "init"))
    with pytest.raises(PhysgradError, match="key or a generator"):
        dev.update_in_place([np.array(theta[0])], [np.array(theta[0]) + 0.3], None, state)
    bad = np.array(theta[0])
    bad[2, 1] = np.nan
    keep = np.array(theta[0])
    with pytest.raises(PhysgradError, match="parameter array 0.*non-finite"):
        dev.update_in_place([keep], [bad], np.random.default_rng(0), state)
    np.testing.assert_array_equal(keep, theta[0])  # nothing written

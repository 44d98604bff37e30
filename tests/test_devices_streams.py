"""The counter-based random numbers of the device updates (:mod:`physgrad.devices.streams`) and the
in-place update of the presets against the per-pulse reference, in distribution.

Statistical tests (each stated next to it): Kolmogorov-Smirnov against the exact distribution at
significance 1e-4, moments within 5 standard errors, tail frequencies within 5 standard errors of
the binomial count. The seeds are fixed, so the tests are deterministic; a correct generator fails
one of them with probability about 1e-4 per seed.
"""
import numpy as np
import pytest
from scipy import stats

from physgrad.devices import Device, device_rng, get_device, pulsing, streams, update_key
from physgrad.devices.model import array_key
from physgrad.devices.reference import move_reference

ROUTES = ["numpy"] + (["numba"] if streams.AVAILABLE else [])
N = 200_000


@pytest.mark.parametrize("route", ROUTES)
def test_uniforms_are_uniform_on_0_1(route):
    """KS against U(0, 1) (p > 1e-4); mean 1/2 and variance 1/12 within 5 standard errors."""
    u = streams.draws(streams.stream_key(3, 1), 0, N, "uniform", backend=route)
    assert np.all((u >= 0) & (u < 1))
    assert stats.kstest(u, "uniform").pvalue > 1e-4
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / N)
    assert abs(u.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / N)  # Var(u^2-ish): (1/80 - 1/144) = 1/180


@pytest.mark.parametrize("route", ROUTES)
def test_normals_are_standard_normal_tails_included(route):
    """KS against N(0, 1) (p > 1e-4); mean, variance and fourth moment within 5 standard errors; the
    frequency beyond the ziggurat's base layer (|x| > r = 3.654: the tail branch) and in the wedges of the
    top layers within 5 binomial standard errors of the normal's."""
    x = streams.draws(streams.stream_key(4, 2), 0, N, "normal", backend=route)
    assert stats.kstest(x, "norm").pvalue > 1e-4
    assert abs(x.mean()) < 5 / np.sqrt(N)
    assert abs(x.var() - 1) < 5 * np.sqrt(2 / N)
    assert abs(np.mean(x ** 4) - 3) < 5 * np.sqrt(96 / N)  # Var(x^4) = 105 - 9
    for lo in (streams.ZIG_R, 2.0, 0.5):
        p = 2 * stats.norm.sf(lo)
        k = np.count_nonzero(np.abs(x) > lo)
        assert abs(k - N * p) < 5 * np.sqrt(N * p * (1 - p)) + 1, (lo, k, N * p)


@pytest.mark.skipif(not streams.AVAILABLE, reason="numba not installed")
@pytest.mark.parametrize("kind", ["uniform", "normal"])
def test_compiled_and_numpy_draws_agree(kind):
    """Uniforms bit for bit; normals bit for bit except where the rare wedge/tail branches call exp/log1p
    (last-bit differences between numpy and the compiled library)."""
    key = update_key(11, 5)
    a = streams.draws(key, 1000, 50_000, kind, backend="numba")
    b = streams.draws(key, 1000, 50_000, kind, backend="numpy")
    if kind == "uniform":
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)
        assert np.count_nonzero(a == b) > 0.99 * a.size


def test_draws_depend_only_on_key_and_counter():
    """A draw is a pure function of (key, counter): any sub-range gives the same numbers."""
    key = streams.stream_key(1, 2, 3)
    whole = streams.draws(key, 0, 5000, "normal")
    np.testing.assert_array_equal(streams.draws(key, 1234, 100, "normal"), whole[1234:1334])
    np.testing.assert_array_equal(streams.uniforms(key, [7, 3, 4999]), streams.draws(key, 0, 5000)[[7, 3, 4999]])


def test_neighbouring_keys_and_counters_are_uncorrelated():
    """Streams of consecutive updates, of the arrays of one update and of the two devices of a pair, and
    consecutive draws of one stream: sample correlations within 5/sqrt(n) of 0."""
    n = 50_000
    k0 = update_key(0, 7)
    pairs = [(update_key(0, 7), update_key(0, 8)), (update_key(0, 7), update_key(1, 7)),
             (array_key(k0, 0), array_key(k0, 1)), (array_key(k0, 0, 1), array_key(k0, 0, -1))]
    for a, b in pairs:
        assert a != b
        r = np.corrcoef(streams.draws(a, 0, n), streams.draws(b, 0, n))[0, 1]
        assert abs(r) < 5 / np.sqrt(n)
    u = streams.draws(k0, 0, n + 1)
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / np.sqrt(n)
    assert update_key(0, 7) == update_key(0, 7)


# --- the presets' in-place update against the per-pulse reference ----------------------------------------
def _tiled(dev: Device, K: int, M: int, seed: int, dtype):
    """K copies of the same M devices (cell fields tiled), requests of 0 to ~3 nominal steps of both signs."""
    from dataclasses import replace

    rng = np.random.default_rng(seed)
    g1 = (rng.random((1, M)) * 1.4 + 0.2).astype(dtype)
    theta, state = dev.init((g1,), device_rng(seed, "init"))
    leaf = state.leaves[0]
    cell1 = leaf.cells[0]
    tile = {f: (np.broadcast_to(getattr(cell1, f), (K, M)).copy() if np.ndim(getattr(cell1, f)) else getattr(cell1, f))
            for f in ("g_min", "g_max", "step_up", "step_down", "nu", "t_prog")}
    cell = replace(cell1, **tile)
    d1 = rng.standard_normal((1, M)) * rng.choice([0.0, 0.4, 1.5, 4.0], size=(1, M)) * leaf.dw0
    g = np.array(np.broadcast_to(np.asarray(theta[0]), (K, M)), dtype=dtype, order="C")
    v = np.array(g + d1.astype(dtype), dtype=dtype, order="C")
    return cell, g, v, leaf.dw0


@pytest.mark.skipif(not pulsing.AVAILABLE, reason="numba not installed")
@pytest.mark.parametrize("name", ["levels16-stochastic", "reram-sb", "reram-es"])
def test_in_place_presets_match_the_per_pulse_reference_in_distribution(name):
    """The compiled in-place route (counter-based draws) against the original per-pulse code (numpy's
    generator), K = 3000 copies of M = 16 devices of the preset, float32 as in training: per device,
    a two-sample Kolmogorov-Smirnov test of the delivered conductances (p > 1e-4 after a Bonferroni
    correction over the devices), and means within 5 standard errors of their difference."""
    K, M = 3000, 16
    dev = get_device(name)
    cell, g, v, dw0 = _tiled(dev, K, M, seed=2, dtype=np.float32)
    new_g, new_v = np.array(g), np.array(v)
    pulsing.move_in_place(pulsing.plan(dev.pulses, dev.drift), cell, new_g, new_v, dw0, update_key(0, 3))
    np.testing.assert_array_equal(new_g, new_v)
    ref, _ = move_reference(dev, cell, g.astype(float), (v - g).astype(float), dw0, np.random.default_rng(9), 0.0)
    ref = ref.astype(np.float32).astype(float)
    new = new_g.astype(float)
    tested = 0
    for j in range(M):
        a, b = new[:, j], ref[:, j]
        if a.std() == 0 and b.std() == 0:
            assert a[0] == b[0]
            continue
        tested += 1
        assert stats.ks_2samp(a, b, method="asymp").pvalue > 1e-4 / M, j  # (conservative for the two-point laws)
        se = np.sqrt((a.var() + b.var()) / K)
        assert abs(a.mean() - b.mean()) <= 5 * se + 1e-7, j
    assert tested >= M // 3

r"""Pulsed updates of one array of devices, in one pass: compiled with numba when it is installed,
vectorised numpy otherwise; both give the same numbers.

:func:`move` is the inner loop of :meth:`Device.update <physgrad.devices.model.Device.update>`:
for every device :math:`i` of an array asked to change by :math:`\delta_i` (S),

1. the pulse count :math:`n_i = R(\delta_i/\Delta_0)` (nearest or unbiased stochastic rounding; the
   latter of :math:`\delta_i \cdot (1/\Delta_0)`, a product, not a division),
   :math:`|n_i|` at most ``ceil(10 / dw_min)`` for the soft-bounds and exponential-step laws (ten
   full ranges: saturated long before) and :data:`MAX_COUNT` otherwise (beyond any range);
2. a device that moves (:math:`n_i \ne 0`; :math:`\delta_i \ne 0` without pulses) first takes its
   drifted value :math:`g_i ((t_0 + t - t_{\mathrm{prog},i})/t_0)^{-\nu_i}` and restarts its clock;
3. the response: constant steps in closed form, :math:`g + \mathrm{sign}(n)\Delta_\pm(|n| +
   \sigma_{c2c}\sqrt{|n|}\,\xi)`; soft bounds and exponential steps pulse by pulse (each step depends
   on the conductance the previous pulse left, clipped to the bounds after each pulse); continuous
   devices :math:`g + \delta`;
4. the result clipped to the device's bounds, written in the dtype asked for.

Random numbers are counter-based (:mod:`physgrad.devices.streams`, SplitMix64): each array's update
has a 64-bit key (from the run's seed, the update's number and the array, :func:`update_keys`), and
device :math:`i` (flat C index of an array of :math:`S` devices) draws

- for stochastic rounding, the uniform number :math:`i` of the key's rounding stream (drawn whether or
  not :math:`\delta_i/\Delta_0` has a fractional part: a whole number of pulses compares ``u < 0``);
- with cycle-to-cycle noise, the normal number :math:`i` of the key's noise stream (constant steps:
  one per moving device), or the normal number :math:`pS + i` for its pulse :math:`p = 0, 1, \dots`
  (the other laws: one per pulse).

Every draw is a pure function of (key, counter), so the result does not depend on the order in which
devices are visited: the compiled route (device by device, all pulses of one device in a row), the
numpy route (vectorised, pulse index by pulse index) and the in-place route (rows that changed only)
give the same numbers bit for bit (the exponential step and drift call ``exp``/``pow``, and the rare
tail of a normal ``log1p``, whose last bit may differ between numpy's and the compiled library's), and
nothing about the generator needs saving in a checkpoint. :mod:`physgrad.devices.reference` (the
original per-pulse code, numpy's generator) agrees bit for bit where nothing is random and in
distribution where it is (``tests/test_devices_pulsing.py``, ``tests/test_devices_streams.py``).
These streams replaced numpy generators drawn in C order (``device_rng``, one ``SeedSequence`` per
update) on 2026-12-07: runs with a random device update are reproducible but not bit-identical to
runs before that change.

Cost: one pass over the array (about 1 ns per device for the rounding draw) plus, for the
soft-bounds and exponential-step laws, one iteration per pulse taken (about 2.4 per moving device,
and 14 % of the devices moving, per update when training DRN-XS on ``reram-sb``), about 2 ns per
noise draw.

A request that is not finite (NaN or inf: a diverged learning rule) raises :class:`PhysgradError`
before anything is drawn or written.
"""
from __future__ import annotations

import functools
import math
import os
import threading
from typing import NamedTuple, Optional

import numpy as np

from physgrad.devices import streams
from physgrad.devices.pieces import ConstantStep, ExpStep, SoftBounds
from physgrad.devices.streams import normal, uniform
from physgrad.types import PhysgradError

try:  # a dependency; vectorised numpy is the fallback where it cannot be imported
    from numba import njit

    from physgrad import _numba_cache
    _numba_cache.install()  # one cache for every checkout (NUMBA_CACHE_DIR/physgrad-kernels/...)
    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised where numba is absent
    AVAILABLE = False

    def njit(*args, **kwargs):  # a stand-in decorator: the kernel exists but is never called
        if args and callable(args[0]):
            return args[0]
        return lambda f: f

SATURATING_RANGES = 10
"""Soft-bounds and exponential-step devices take at most this many full ranges of nominal pulses per
update (``ceil(10 / dw_min)``): after them a soft-bounds device is within ``exp(-20)`` of its bound."""
MAX_COUNT = float(2 ** 53)
"""Largest pulse count of a constant-step device (exact in float64 and int64; any bound is reached long before)."""
CONTINUOUS, CONSTANT, SOFT_BOUNDS, EXP_STEP = 0, 1, 2, 3
BACKENDS = ("auto", "numba", "numpy")
BACKEND = os.environ.get("PHYSGRAD_DEVICE_KERNEL", "auto")
"""Route of :func:`move` when none is given: ``auto`` (numba when installed), ``numba`` or ``numpy``."""


class Plan(NamedTuple):
    """What :func:`move` needs of a device model (built once per model by :func:`plan`)."""

    law: int
    stochastic: bool
    cap: float
    c2c: float
    law_params: np.ndarray  # (A_up, A_down, gamma_up, gamma_down, a, b) of an exponential step, else zeros
    drift: bool
    t0: float


@functools.lru_cache(maxsize=64)
def plan(pulses, drift) -> Plan:
    """The :class:`Plan` of a device with ``pulses`` (or None: continuous updates) and ``drift`` (or None)."""
    lp = np.zeros(6)
    if pulses is None:
        law, stochastic, cap, c2c = CONTINUOUS, False, MAX_COUNT, 0.0
    else:
        law = {ConstantStep: CONSTANT, SoftBounds: SOFT_BOUNDS, ExpStep: EXP_STEP}[type(pulses.law)]
        stochastic, c2c = pulses.rounding == "stochastic", float(pulses.c2c)
        cap = MAX_COUNT if law == CONSTANT else float(math.ceil(SATURATING_RANGES / pulses.dw_min))
        if law == EXP_STEP:
            w = pulses.law
            lp = np.array([w.A_up, w.A_down, w.gamma_up, w.gamma_down, w.a, w.b], dtype=float)
    return Plan(law, stochastic, cap, c2c, lp, drift is not None, float(drift.t0) if drift is not None else 1.0)


def update_keys(rng) -> tuple:
    """``(ku, kn)`` (uint64): the keys of the rounding and the noise streams of one array's update from ``rng``:
    an integer key (e.g. :func:`physgrad.devices.state.update_key` or one derived per array by
    :meth:`Device.update <physgrad.devices.model.Device.update>`), a numpy Generator (one 64-bit key drawn
    from it), or None (key 0: for updates that draw nothing)."""
    key = base_key(rng)
    return np.uint64(streams.stream_key(key, 1)), np.uint64(streams.stream_key(key, 2))


def base_key(rng) -> int:
    """The integer key of ``rng``: itself (an int), one 64-bit draw of a numpy Generator, 0 for None."""
    if rng is None:
        return 0
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2 ** 64, dtype=np.uint64))
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return int(rng) & streams.M64
    raise PhysgradError(f"a device update's random stream must be an integer key or a numpy Generator, "
                        f"got {type(rng).__name__}")


def move(p: Plan, cell, g, delta, dw0: float, rng, clock: float, side: int = 0, dtype=None,
         backend: Optional[str] = None) -> tuple:
    r"""One array of devices asked to change by ``delta`` (see the module docstring).

    Parameters
    ----------
    p : Plan
    cell : physgrad.devices.state.Cell
        The devices' properties (fields 0-d or shaped like ``g``).
    g : array, any float dtype
        Current conductances (S), before drift.
    delta : array like g, any float dtype
        Requested change (S); with ``side = +1`` / ``-1`` the request is ``max(+-delta, 0)`` (the
        potentiation-only devices :math:`G_+` / :math:`G_-` of a pair).
    dw0 : float
        Nominal pulse step :math:`\Delta_0` (S); unused without pulses.
    rng : int, numpy Generator or None
        This array's key (:func:`update_keys`; None when the plan draws nothing).
    clock : float
        Device time (s).
    dtype : numpy dtype, optional
        Of the result (default float64).
    backend : {"auto", "numba", "numpy"}, optional
        Default :data:`BACKEND`.

    Returns
    -------
    (g, t_prog)
        New conductances (before stuck devices are held), shaped like ``g``, in ``dtype``; new
        programming times (float64, shaped like ``g``) with drift, else None.

    Raises
    ------
    PhysgradError
        A non-finite request (nothing drawn, nothing written).
    """
    backend = BACKEND if backend is None else backend
    if backend not in BACKENDS:
        raise PhysgradError(f"device kernel must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "numba" and not AVAILABLE:
        raise PhysgradError("the compiled device kernel needs numba: pip install 'physgrad[fast]'")
    shape = np.shape(g)
    dtype = np.dtype(float if dtype is None else dtype)
    ku, kn = update_keys(rng)
    if backend == "numpy" or not AVAILABLE:
        return _move_numpy(p, cell, np.asarray(g), np.asarray(delta), float(dw0), int(ku), int(kn), float(clock),
                           side, dtype)
    gf = np.ascontiguousarray(g).reshape(-1)
    df = np.ascontiguousarray(delta).reshape(-1)
    if gf.dtype.kind != "f" or df.dtype.kind != "f":
        raise PhysgradError("device update: conductances and requests must be float arrays")
    flat = []
    for what in ("g_min", "g_max", "step_up", "step_down", "nu", "t_prog"):
        a = np.ascontiguousarray(getattr(cell, what), dtype=float).reshape(-1)
        if a.size != 1 and a.size != gf.size:
            raise PhysgradError(f"device cell field {what} has {a.size} values for {gf.size} devices")
        flat.append(a)
    g_min, g_max, up, down, nu, t_prog = flat
    n, gw = _work(gf.size)
    if _counts_kernel(df, int(side), float(dw0), p.law, p.stochastic, p.cap, ku, n) >= 0:
        raise PhysgradError(_bad_message(np.asarray(delta), side))
    t_out = None
    if p.drift:
        t_out = np.empty(shape)
        _drift_kernel(gf, n, nu, t_prog, p.t0, float(clock), gw, t_out.reshape(-1))
        gf = gw
    out = np.empty(shape, dtype)
    if p.law in (CONTINUOUS, CONSTANT):
        _closed_form_kernel(gf, df, int(side), n, p.law, p.c2c, up, down, g_min, g_max, kn, out.reshape(-1))
    else:
        _pulse_kernel(gf, n, p.law, p.c2c, p.law_params, up, down, g_min, g_max, kn, out.reshape(-1))
    return out, t_out


_WORK = threading.local()
_NO_DRAWS = np.random.default_rng(0)  # the read kernel is typed for a generator
_NO_KEYS = (np.uint64(0), np.uint64(0))  # the keys of an update that draws nothing


def _work(size: int) -> tuple:
    """Work arrays of the kernel (pulse counts int64, conductances float64), ``size`` entries each, kept per
    thread and grown as needed."""
    have = getattr(_WORK, "arrays", None)
    if have is None or have[0].size < size:
        have = (np.empty(size, np.int64), np.empty(size))
        _WORK.arrays = have
    return tuple(a[:size] for a in have)


def _flat_fields(cell, size: int) -> tuple:
    """``(g_min, g_max, step_up, step_down)`` of ``cell`` as flat float64 arrays (1 or ``size`` entries),
    kept on the cell (its fields are never changed in place)."""
    have = cell.__dict__.get("_flat_fields")
    if have is None:
        have = []
        for what in ("g_min", "g_max", "step_up", "step_down"):
            a = np.ascontiguousarray(getattr(cell, what), dtype=float).reshape(-1)
            if a.size != 1 and a.size != size:
                raise PhysgradError(f"device cell field {what} has {a.size} values for {size} devices")
            have.append(a)
        have = tuple(have)
        cell.__dict__["_flat_fields"] = have
    return have


def _packed_fields(cell, flat: tuple, size: int) -> np.ndarray:
    """``(g_min, g_max, step_up, step_down)`` side by side, ``(size, 4)`` float64 (``(1, 4)`` when the same for
    every device), kept on the cell: a moving device's four properties in one cache line instead of four
    (the four arrays of a 784 x 200 layer, 5 MB, do not stay in cache between updates)."""
    have = cell.__dict__.get("_packed_fields")
    if have is None:
        n = 1 if all(a.size == 1 for a in flat) else size
        have = np.empty((n, 4))
        for j, a in enumerate(flat):
            have[:, j] = a
        cell.__dict__["_packed_fields"] = have
    return have


def _rows_work(rows: int) -> np.ndarray:
    """A per-thread int64 work array of ``rows`` entries (the changed rows of :func:`move_in_place`)."""
    have = getattr(_WORK, "rows", None)
    if have is None or have.size < rows:
        have = _WORK.rows = np.empty(max(rows, 1), np.int64)
    return have[:max(rows, 1)]


def _moving_work(size: int) -> tuple:
    """Per-thread work arrays of :func:`move_in_place`, ``size`` entries each: the counts (float64), the moving
    devices' flat indices (int64), their conductance, count, bounds and steps (float64, ``(size, 6)``), the
    active list (int64)."""
    have = getattr(_WORK, "moving", None)
    if have is None or have[0].size < size:
        have = _WORK.moving = (np.empty(max(size, 1)), np.empty(max(size, 1), np.int64), np.empty((max(size, 1), 6)),
                               np.empty(max(size, 1), np.int64))
    return tuple(a[:max(size, 1)] for a in have)  # (views: the kernel's types stay fixed)


def _bad_message(delta, side) -> str:
    d = np.asarray(delta, dtype=float)
    k = int(np.count_nonzero(~np.isfinite(d)))
    return (f"device update: the requested change holds {k} non-finite value(s) (NaN or inf) of {d.size}: the "
            f"learning rule diverged; lower the learning rates")


# --- numpy route -------------------------------------------------------------------------------------
def _counts(p: Plan, delta: np.ndarray, dw0: float, ku: int) -> np.ndarray:
    """Pulse counts (int64) of requests ``delta`` (float64): nearest, ``rint(delta / dw0)``, or stochastic,
    of ``x = delta * (1 / dw0)``, device ``i`` (flat) comparing the uniform number ``i`` of stream ``ku``
    with its fractional part; clamped to ``+-p.cap``."""
    if not p.stochastic:
        return np.rint(np.clip(delta / dw0, -p.cap, p.cap)).astype(np.int64)
    x = np.clip(delta * (1.0 / dw0), -p.cap, p.cap)
    fl = np.floor(x)
    frac = x - fl
    need = np.flatnonzero(frac > 0)  # (the others compare u < 0: never)
    if need.size:
        fl.flat[need] += streams.uniforms(ku, need) < frac.flat[need]
    return fl.astype(np.int64)


def _move_numpy(p: Plan, cell, g, delta, dw0, ku, kn, clock, side, dtype) -> tuple:
    g = np.array(g, dtype=float)
    delta = np.asarray(delta, dtype=float)
    if side:
        delta = np.maximum(float(side) * delta, 0.0)
    if not np.all(np.isfinite(delta)):
        raise PhysgradError(_bad_message(delta, 0))
    n = None if p.law == CONTINUOUS else _counts(p, delta, dw0, ku)
    moved = delta != 0 if n is None else n != 0
    t_prog = None
    if p.drift:
        idx = np.flatnonzero(moved)
        tp = np.broadcast_to(cell.t_prog, g.shape).ravel()[idx]
        nu = np.broadcast_to(cell.nu, g.shape).ravel()[idx]
        g.flat[idx] = g.flat[idx] * (((p.t0 + clock) - tp) / p.t0) ** (-nu)
        t_prog = np.where(moved, clock, cell.t_prog)
    if p.law == CONTINUOUS:
        g = g + delta
    elif p.law == CONSTANT:
        m = np.abs(n).astype(float)
        if p.c2c > 0:
            idx = np.flatnonzero(n)
            m.flat[idx] += p.c2c * np.sqrt(m.flat[idx]) * streams.normals(kn, idx)
        g = g + np.sign(n) * np.where(n > 0, cell.step_up, cell.step_down) * m
    else:
        _pulse_numpy(p, cell, g, n, kn)
    return np.clip(g, cell.g_min, cell.g_max).astype(dtype, copy=False), t_prog


def _pulse_numpy(p: Plan, cell, g, n, kn) -> None:
    """Soft bounds / exponential step, in place on ``g``: one vectorised iteration per pulse index ``k``
    (the noise of device ``i``'s pulse ``k``: normal number ``k S + i`` of stream ``kn``)."""
    idx = np.flatnonzero(n)
    if not idx.size:
        return
    lo, hi, up, down = (np.broadcast_to(f, g.shape).ravel()[idx]
                        for f in (cell.g_min, cell.g_max, cell.step_up, cell.step_down))
    gi, nn = g.ravel()[idx], n.ravel()[idx]
    sgn, left = np.sign(nn).astype(float), np.abs(nn)
    act = np.arange(idx.size)
    k = 0
    while act.size:  # pulse k of every device with more than k pulses
        step = _law_step_numpy(p, gi[act], sgn[act], lo[act], hi[act], up[act], down[act])
        if p.c2c > 0:
            step = step * (1.0 + p.c2c * streams.normals(kn, idx[act].astype(np.uint64) + np.uint64(k * g.size)))
        gi[act] = np.clip(gi[act] + sgn[act] * step, lo[act], hi[act])
        left[act] -= 1
        act = act[left[act] > 0]
        k += 1
    g.flat[idx] = gi


def _law_step_numpy(p: Plan, g, sgn, lo, hi, up, down) -> np.ndarray:
    R = hi - lo
    R = np.where(R > 0, R, 1.0)
    if p.law == SOFT_BOUNDS:
        step = np.where(sgn > 0, up * 2.0 * (hi - g) / R, down * 2.0 * (g - lo) / R)
    else:
        A_up, A_down, gamma_up, gamma_down, a, b = p.law_params
        z = 2.0 * a * (g - 0.5 * (hi + lo)) / R + b
        y_up = 1.0 - A_up * np.exp(gamma_up * z)
        y_down = 1.0 - A_down * np.exp(-gamma_down * z)
        step = np.where(sgn > 0, up * np.maximum(y_up, 0.0), down * np.maximum(y_down, 0.0))
    return np.where(hi > lo, step, 0.0)


# --- compiled route ------------------------------------------------------------------------------------
# One small kernel per stage: a single loop with every law's branches in it ran 3x slower.
@njit(cache=True)
def _counts_kernel(d, side, dw0, law, stochastic, cap, ku, n):  # pragma: no cover - compiled
    """Pulse counts into ``n`` (continuous law: 1 where the request is nonzero); -1, or the flat
    index of the first non-finite request. Branch-free loops (vectorised)."""
    bad = False
    for i in range(d.size):
        bad |= not np.isfinite(d[i])
    if bad:
        for i in range(d.size):
            if not np.isfinite(d[i]):
                return i
    sd = float(side)
    if law == 0:
        for i in range(d.size):
            di = float(d[i])
            di = max(sd * di, 0.0) if side != 0 else di
            n[i] = 1 if di != 0.0 else 0
    elif not stochastic:
        for i in range(d.size):
            di = float(d[i])
            di = max(sd * di, 0.0) if side != 0 else di
            n[i] = np.int64(np.rint(min(max(di / dw0, -cap), cap)))
    else:
        inv = 1.0 / dw0
        for i in range(d.size):
            di = float(d[i])
            di = max(sd * di, 0.0) if side != 0 else di
            n[i] = np.int64(_stochastic_pulses(di, inv, cap, ku, i))
    return -1


@njit(cache=True)
def _drift_kernel(g, n, nu, t_prog, t0, clock, gw, t_out):  # pragma: no cover - compiled
    """Moving devices (``n != 0``) take their drifted value and restart their clock: ``gw`` (float64)
    and ``t_out``."""
    s_nu, s_tp = int(nu.size > 1), int(t_prog.size > 1)
    for i in range(g.size):
        gi, tp = float(g[i]), t_prog[i * s_tp]
        if n[i] != 0:
            gi = gi * (((t0 + clock) - tp) / t0) ** (-nu[i * s_nu])
            tp = clock
        gw[i] = gi
        t_out[i] = tp


@njit(cache=True, inline="always")
def _stochastic_pulses(di, inv, cap, ku, i):  # pragma: no cover
    r"""Pulse count (a float) of device ``i``'s requested change ``di`` (S) by unbiased stochastic rounding:
    :math:`x = \mathrm{clip}(d_i \cdot (1/\Delta_0), -cap, cap)` (``inv`` :math:`= 1/\Delta_0`, computed once: a
    product instead of a division, 2x faster), then :math:`\lfloor x\rfloor + [u_i < x - \lfloor x\rfloor]`
    with ``u_i`` the uniform number ``i`` of stream ``ku`` (no branch)."""
    x = min(max(di * inv, -cap), cap)
    fl = np.floor(x)
    return fl + (uniform(ku, i) < x - fl)


@njit(cache=True, inline="always")
def _noisy_steps(gi, ni, c2c, up_i, down_i, kn, i):  # pragma: no cover
    r"""Conductance ``gi`` after ``ni`` constant steps (``up_i`` each; ``-down_i`` each when ``ni < 0``) with
    cycle-to-cycle noise: the pulse count becomes :math:`m = |n| + c2c \sqrt{|n|}\,\xi_i` (``xi_i`` the
    normal number ``i`` of stream ``kn``), drawn only when ``ni != 0`` (unclipped; the callers clip)."""
    if ni != 0:
        m = float(abs(ni))
        m += c2c * np.sqrt(m) * normal(kn, i)
        if ni > 0:
            gi = gi + up_i * m
        else:
            gi = gi + (-down_i) * m
    return gi


@njit(cache=True)
def _closed_form_kernel(g, d, side, n, law, c2c, up, down, g_min, g_max, kn, out):  # pragma: no cover
    """Continuous (``law`` 0) and constant-step (1) responses, clipped, into ``out``."""
    s_lo, s_hi, s_up, s_dn = int(g_min.size > 1), int(g_max.size > 1), int(up.size > 1), int(down.size > 1)
    if c2c > 0 and law == 1:
        for i in range(g.size):
            gi = _noisy_steps(float(g[i]), n[i], c2c, up[i * s_up], down[i * s_dn], kn, i)
            out[i] = min(max(gi, g_min[i * s_lo]), g_max[i * s_hi])
    elif law == 1:  # no branch: n = 0 adds (-down) * 0.0 = -0.0, which leaves g as it is
        for i in range(g.size):
            ni = n[i]
            st = up[i * s_up] if ni > 0 else -down[i * s_dn]
            gi = float(g[i]) + st * float(abs(ni))
            out[i] = min(max(gi, g_min[i * s_lo]), g_max[i * s_hi])
    else:
        sd = float(side)
        for i in range(g.size):
            di = float(d[i])
            di = max(sd * di, 0.0) if side != 0 else di
            gi = float(g[i]) + di if n[i] != 0 else float(g[i])
            out[i] = min(max(gi, g_min[i * s_lo]), g_max[i * s_hi])


@njit(cache=True, inline="always")
def _law_step(law, lp, gi, positive, up, down, lo, hi):  # pragma: no cover - compiled
    """The size (S, >= 0) of one pulse of the soft-bounds (``law`` 2) or exponential-step (3) law at ``gi``;
    without branches on the pulse's sign (random: a branch on it was mispredicted half the time)."""
    R = hi - lo
    R = R if R > 0 else 1.0
    if law == 2:
        step = (up if positive else down) * 2.0 * ((hi - gi) if positive else (gi - lo)) / R
    else:
        z = 2.0 * lp[4] * (gi - 0.5 * (hi + lo)) / R + lp[5]
        y = 1.0 - (lp[0] if positive else lp[1]) * np.exp((lp[2] if positive else -lp[3]) * z)
        step = (up if positive else down) * max(y, 0.0)
    return step if hi > lo else 0.0


@njit(cache=True)
def _pulse_train(law, lp, gi, ni, c2c, up_i, down_i, lo, hi, kn, i, size):  # pragma: no cover - compiled
    """Device ``i`` (of ``size``) at ``gi`` after its ``ni != 0`` pulses of the soft-bounds / exponential-step
    law, one after the other, clipped after each; pulse ``k``'s noise is the normal number ``k size + i`` of
    stream ``kn``."""
    positive = ni > 0
    for k in range(abs(ni)):
        step = _law_step(law, lp, gi, positive, up_i, down_i, lo, hi)
        if c2c > 0:
            step = step * (1.0 + c2c * normal(kn, k * size + i))
        gi = min(max(gi + step if positive else gi + (-step), lo), hi)
    return gi


@njit(cache=True)
def _pulse_kernel(g, n, law, c2c, lp, up, down, g_min, g_max, kn, out):  # pragma: no cover
    """Soft-bounds (``law`` 2) and exponential-step (3) responses, pulse by pulse, clipped, into ``out``."""
    s_lo, s_hi, s_up, s_dn = int(g_min.size > 1), int(g_max.size > 1), int(up.size > 1), int(down.size > 1)
    for i in range(g.size):
        gi = float(g[i])
        lo, hi = g_min[i * s_lo], g_max[i * s_hi]
        if n[i] != 0:
            gi = _pulse_train(law, lp, gi, n[i], c2c, up[i * s_up], down[i * s_dn], lo, hi, kn, i, g.size)
        out[i] = min(max(gi, lo), hi)


# --- in place, visiting only the rows that changed -------------------------------------------------------
def move_in_place(p: Plan, cell, g: np.ndarray, values: np.ndarray, dw0: float, rng) -> int:
    r"""One array of devices ``g`` asked to take ``values`` (the optimiser's new values: the request is
    :math:`\delta = \mathrm{values} - g`, formed in their dtype as ``values - g``), delivered **in place into
    both arrays**: afterwards ``g`` and ``values`` hold the delivered conductances (stuck devices held).

    The same numbers as :func:`move` (``move(p, cell, g, values - g, dw0, rng, clock, dtype=g.dtype)``, bit
    for bit, the same draws) for a device without drift (``p.drift`` False). Constant steps without noise
    and with uniform bounds and steps (``levels*``, ``digipot128``): only the rows of ``g`` (its first axis;
    a 1-d array is one row) where ``values`` differs from ``g`` are visited after one branch-free comparison
    pass, each in one branch-free pass. Otherwise (:func:`_in_place_kernel`) the counts are made in one
    vectorised pass over all devices and only the devices that move take a response and a clip. A device
    that does not move keeps its value: :func:`move` clips it, which gives it back (every value it holds
    came from a clip). With the numpy route (:data:`BACKEND` ``"numpy"``, or numba missing) it is
    :func:`move`'s numpy route, copied into both arrays.

    Parameters
    ----------
    p : Plan
        Without drift.
    cell : physgrad.devices.state.Cell
    g, values : C-contiguous float arrays of one shape and dtype
        Modified in place.
    dw0 : float
        Nominal pulse step (S).
    rng : int key, numpy Generator, or None when the plan draws nothing (nearest rounding, no cycle-to-cycle
        noise); see :func:`update_keys`.

    Returns
    -------
    int
        The number of rows visited (uniform constant steps), or of devices that moved.

    Raises
    ------
    PhysgradError
        ``values`` not finite (nothing written); a plan with drift; arrays of other shapes/dtypes.
    """
    if p.drift:
        raise PhysgradError("move_in_place: a device with drift restarts its clocks; use move")
    if not (isinstance(g, np.ndarray) and isinstance(values, np.ndarray) and g.shape == values.shape
            and g.dtype == values.dtype and g.dtype.kind == "f" and g.flags.c_contiguous and values.flags.c_contiguous):
        raise PhysgradError("move_in_place: conductances and values must be C-contiguous float arrays of one "
                            "shape and dtype")
    if rng is None and (p.stochastic or p.c2c > 0):
        raise PhysgradError("move_in_place: this device draws random numbers; give it a key or a generator")
    if BACKEND == "numpy" or not AVAILABLE:  # the numpy route of move (the kernels below are compiled loops)
        with np.errstate(all="ignore"):
            request = values - g
        new, _ = move(p, cell, g, request, dw0, rng, 0.0, dtype=g.dtype, backend="numpy")
        new.flat[cell.stuck_index] = cell.stuck_value
        np.copyto(g, new)
        np.copyto(values, new)
        return g.shape[0] if g.ndim > 1 else 1
    ku, kn = _NO_KEYS if rng is None else update_keys(rng)
    size = g.size
    flat = _flat_fields(cell, size)
    gf, vf = g.reshape(-1), values.reshape(-1)
    lo, hi, up, down = flat
    if p.law == CONSTANT and p.c2c == 0 and lo.size + hi.size + up.size + down.size == 4:
        rows = g.shape[0] if g.ndim > 1 else 1
        cols = size // rows if rows else 0
        rws = _rows_work(rows)
        m = _changed_rows(gf, vf, rows, cols, rws)
        if m > 0:
            _uniform_kernel(gf, vf, rws, m, cols, p.stochastic, p.cap, float(dw0), lo[0], hi[0], up[0], -down[0], ku)
    else:
        m = _in_place_kernel(gf, vf, p.law, p.stochastic, p.cap, p.c2c, p.law_params, float(dw0),
                             _packed_fields(cell, flat, size), ku, kn, *_moving_work(size))
    if m < 0:
        with np.errstate(all="ignore"):
            raise PhysgradError(_bad_message(values - g, 0))
    if cell.stuck_index.size:
        g.flat[cell.stuck_index] = cell.stuck_value
        values.flat[cell.stuck_index] = g.flat[cell.stuck_index]
    return m


def row_constants(p: Plan, cell, dw0: float) -> Optional[np.ndarray]:
    """``[dw0, cap, g_min, g_max, step_up, -step_down, stochastic, key]`` (float64; slot 7 holds the bits of the
    update's uint64 rounding key, set by :func:`set_row_key` before each update) when :func:`device_row` is the
    whole update of ``cell``'s devices (constant steps, nearest or stochastic rounding, no cycle-to-cycle noise,
    no drift, the same bounds and steps for every device, no stuck device); else None.

    The other pulsed devices (soft bounds, exponential steps, noise, variability) stay on
    :func:`move_in_place`: in the kernel's pass, one device's pulses after the other (a chain of dependent
    steps) cost 1.4x the in-place kernel's pulse-major order (measured on ``reram-sb``, DRN-XS)."""
    if p.law != CONSTANT or p.c2c > 0 or p.drift or cell.stuck_index.size:
        return None
    fields = [np.asarray(getattr(cell, f), dtype=float) for f in ("g_min", "g_max", "step_up", "step_down")]
    if any(f.size != 1 for f in fields):
        return None
    lo, hi, up, down = (float(f.reshape(-1)[0]) for f in fields)
    return np.array([float(dw0), p.cap, lo, hi, up, -down, float(p.stochastic), 0.0])


def set_row_key(constants: np.ndarray, rng) -> None:
    """Write the rounding stream's key of ``rng`` (an array's key, :func:`update_keys`) into slot 7 of
    :func:`row_constants` ``constants``, in place (the compiled kernel holding the array sees it)."""
    constants.view(np.uint64)[7] = update_keys(rng)[0]


@njit(cache=True)
def device_row(gr, vr, first, dev):  # pragma: no cover - compiled
    """The update of one row of constant-step devices with the constants ``dev`` of :func:`row_constants`:
    :func:`nearest_row` or :func:`stochastic_row` (the row's first device has flat index ``first``). Called by
    the compiled C-EP kernel's pass over ``W1`` (:mod:`physgrad.layered.kernels.numba_cpu`) as a function call
    (inlined there, it made the kernel's pass for the ideal device a few % slower); True when a request of
    the row is not finite (nothing written)."""
    if dev[6] == 0.0:
        return nearest_row(gr, vr, dev[0], dev[1], dev[2], dev[3], dev[4], dev[5])
    return stochastic_row(gr, vr, first, dev[0], dev[1], dev[2], dev[3], dev[4], dev[5], dev.view(np.uint64)[7])


@njit(cache=True, inline="always")
def stochastic_row(gr, vr, first, dw0, cap, lo, hi, st_up, st_dn, ku):  # pragma: no cover - compiled
    """Constant-step devices ``gr`` asked to take ``vr`` (one row whose first device has flat index ``first``;
    stochastic rounding with the uniforms of stream ``ku`` by flat index, the same bounds and steps for all):
    the delivered values into both, as :func:`move` computes them. One branch-free pass after a finiteness
    check; True, writing nothing, when a request is not finite."""
    bad = False
    for c in range(gr.shape[0]):
        d = vr[c] - gr[c]
        bad |= not (d - d == 0)
    if bad:
        return True
    inv = 1.0 / dw0
    for c in range(gr.shape[0]):
        gc = gr[c]
        fl = _stochastic_pulses(float(vr[c] - gc), inv, cap, ku, first + c)
        st = st_up if fl > 0 else st_dn
        vr[c] = min(max(float(gc) + st * abs(fl), lo), hi)
        gr[c] = vr[c]
    return False


@njit(cache=True, inline="always")
def nearest_row(gr, vr, dw0, cap, lo, hi, st_up, st_dn):  # pragma: no cover - compiled
    """Constant-step devices ``gr`` asked to take the values ``vr`` (one row; nearest rounding, the same
    bounds ``lo``, ``hi`` and steps ``st_up``, ``st_dn = -step_down`` for all): the delivered values into
    both, :math:`g + \\Delta_\\pm R(\\delta/\\Delta_0)` clipped, computed in float64 from ``vr - gr`` in the
    arrays' dtype (as :func:`_counts_kernel` and :func:`_closed_form_kernel`). Nothing is drawn; a device
    with a zero count keeps its value (``g + (-0.0)``). Vectorised; also called by the compiled C-EP
    kernel's pass over ``W1`` (:mod:`physgrad.layered.kernels.numba_cpu`) through :func:`device_row`. A row
    whose requests are all
    below ``0.49 dw0`` in size (every count 0: most rows of a training step) is only copied back, without
    the division. Returns True, writing nothing, when a request of the row is not finite (NaN or inf),
    else False."""
    thr = 0.49 * dw0
    small = True
    bad = False
    for c in range(gr.shape[0]):
        d = float(vr[c] - gr[c])
        small &= abs(d) < thr
        bad |= not (d - d == 0)
    if bad:
        return True
    if small:
        for c in range(gr.shape[0]):
            vr[c] = gr[c]
        return False
    for c in range(gr.shape[0]):
        gc = gr[c]
        nf = np.rint(min(max(float(vr[c] - gc) / dw0, -cap), cap))
        st = st_up if nf > 0 else st_dn
        vr[c] = min(max(float(gc) + st * abs(nf), lo), hi)  # rounded to the arrays' dtype
        gr[c] = vr[c]
    return False


@njit(cache=True)
def _changed_rows(g, v, rows, cols, out):  # pragma: no cover - compiled
    """The rows where the request ``v - g`` (in the arrays' dtype) is nonzero into ``out``, and their
    number; -1 when a request is not finite. Branch-free over a row's slice (vectorised)."""
    m = 0
    bad = False
    for r in range(rows):
        gr, vr = g[r * cols:(r + 1) * cols], v[r * cols:(r + 1) * cols]
        changed = False
        for c in range(cols):
            di = vr[c] - gr[c]
            changed |= di != 0
            bad |= not (di - di == 0)
        if changed:
            out[m] = r
            m += 1
    return -1 if bad else m


@njit(cache=True)
def _uniform_kernel(g, v, rws, m, cols, stochastic, cap, dw0, lo, hi, st_up, st_dn, ku):  # pragma: no cover
    """:func:`move_in_place` for constant steps without noise and with the same bounds and steps for every
    device (``levels*``, ``digipot128``) on the ``m`` rows ``rws`` of flat arrays ``g`` and ``v`` (finite
    requests): one branch-free pass per row (:func:`nearest_row` or :func:`stochastic_row`)."""
    for j in range(m):
        r = rws[j]
        gr, vr = g[r * cols:(r + 1) * cols], v[r * cols:(r + 1) * cols]
        if stochastic:
            stochastic_row(gr, vr, r * cols, dw0, cap, lo, hi, st_up, st_dn, ku)
        else:
            nearest_row(gr, vr, dw0, cap, lo, hi, st_up, st_dn)


@njit(cache=True)
def _in_place_kernel(g, v, law, stochastic, cap, c2c, lp, dw0, fields, ku, kn, nb, mv_i, mv_g,
                     act):  # pragma: no cover - compiled
    """:func:`move_in_place` of flat arrays ``g`` and ``v``, any law without drift; -1 (nothing written) when a
    request is not finite, else the number of devices that moved.

    1. One branch-free pass (vectorised): the requests' finiteness and counts (device ``i``'s draws by its
       flat index, as in :func:`move`; a continuous device: its request) into ``nb``; then the moving
       devices' flat indices into ``mv_i`` (a branch-free compaction).
    2. The moving devices' responses, the pulse laws pulse by pulse across all of them (independent devices
       side by side; their conductances, counts, bounds and steps gathered into the rows of ``mv_g``),
       clipped, into ``g``.
    3. ``v = g`` (a device that does not move keeps its value: it came from a clip, which gives it back).
    """
    sf = int(fields.shape[0] > 1)  # (g_min, g_max, step_up, step_down) per device (rows of fields) or for all
    size = g.size
    inv = 1.0 / dw0 if dw0 != 0 else 0.0  # (continuous devices have no step)
    bad = False
    if law == 0:
        for i in range(size):
            d = float(v[i] - g[i])
            bad |= not (d - d == 0)
            nb[i] = d
    elif stochastic:
        for i in range(size):
            d = float(v[i] - g[i])
            bad |= not (d - d == 0)
            nb[i] = _stochastic_pulses(d, inv, cap, ku, i)
    else:
        for i in range(size):
            d = float(v[i] - g[i])
            bad |= not (d - d == 0)
            nb[i] = np.rint(min(max(d / dw0, -cap), cap))
    k = 0
    for i in range(size):  # branch-free compaction
        mv_i[k] = i
        k += nb[i] != 0.0
    if bad:
        return -1
    if law == 0:
        for q in range(k):
            i = mv_i[q]
            f = fields[i * sf]
            g[i] = min(max(float(g[i]) + nb[i], f[0]), f[1])
    elif law == 1:
        for q in range(k):
            i = mv_i[q]
            nf = nb[i]
            f = fields[i * sf]
            gi = float(g[i])
            if c2c > 0:
                gi = _noisy_steps(gi, nf, c2c, f[2], f[3], kn, i)
            else:
                gi = gi + (f[2] if nf > 0 else -f[3]) * abs(nf)
            g[i] = min(max(gi, f[0]), f[1])
    else:
        for q in range(k):  # the moving devices' properties side by side
            i = mv_i[q]
            f = fields[i * sf]
            act[q] = q
            mv_g[q, 0] = float(g[i])
            mv_g[q, 1] = nb[i]
            mv_g[q, 2] = f[0]
            mv_g[q, 3] = f[1]
            mv_g[q, 4] = f[2]
            mv_g[q, 5] = f[3]
        na = k
        p = 0
        while na > 0:  # pulse p of every device with more than p pulses
            kk = 0
            for t in range(na):
                q = act[t]
                gi, nf, lo, hi = mv_g[q, 0], mv_g[q, 1], mv_g[q, 2], mv_g[q, 3]
                positive = nf > 0
                step = _law_step(law, lp, gi, positive, mv_g[q, 4], mv_g[q, 5], lo, hi)
                if c2c > 0:
                    step = step * (1.0 + c2c * normal(kn, p * size + mv_i[q]))
                mv_g[q, 0] = min(max(gi + step if positive else gi + (-step), lo), hi)
                act[kk] = q
                kk += abs(nf) > p + 1
            na = kk
            p += 1
        for q in range(k):
            g[mv_i[q]] = mv_g[q, 0]  # (clipped after each pulse)
    for i in range(size):
        v[i] = g[i]
    return k


# --- reads ------------------------------------------------------------------------------------------------
def read_pair_or_cell(gs, factors, sigma: float, relative: bool, sig_abs: float, bounded: bool, rng, dtype,
                      backend: Optional[str] = None) -> np.ndarray:
    r"""What one array of devices (``gs = (g,)``) or pairs (``gs = (G+, G-)``) reads: per device
    :math:`v = g f`, then :math:`v(1 + \sigma\xi)` (``relative``) or :math:`v + \sigma_\mathrm{abs}\xi`,
    then :math:`\max(v, 0)` when ``bounded``; a pair reads :math:`v_+ - v_-`, in ``dtype``.

    ``factors``: the drift factor of each cell (float64, shaped like ``g``) or None; ``sigma = 0``:
    no noise (nothing drawn). The noise is drawn cell by cell, each in C order: the same numbers
    as ``rng.standard_normal(shape)`` per cell, so both routes agree bit for bit.
    """
    backend = BACKEND if backend is None else backend
    if backend == "numpy" or not AVAILABLE:
        out = None
        for g, f in zip(gs, factors):
            v = np.asarray(g, dtype=float)
            if f is not None:
                v = v * f
            if sigma > 0:
                xi = rng.standard_normal(np.shape(v))
                v = v * (1.0 + sigma * xi) if relative else v + sig_abs * xi
            if bounded:
                v = np.maximum(v, 0.0)
            out = v if out is None else out - v
        return out.astype(dtype)
    shape = np.shape(gs[0])
    if rng is None:  # no noise: nothing is drawn, but the kernel is typed for a generator
        rng = _NO_DRAWS
    w = _work(int(np.prod(shape)))[1] if len(gs) > 1 else np.empty(1)
    out = np.empty(shape, dtype)
    one = np.ones(1)
    for k, (g, f) in enumerate(zip(gs, factors)):
        last = k == len(gs) - 1
        _read_kernel(np.ascontiguousarray(g).reshape(-1), one if f is None else np.ascontiguousarray(f).reshape(-1),
                     f is not None, float(sigma), bool(relative), float(sig_abs), bool(bounded), rng,
                     w, k > 0, out.reshape(-1) if last else w)
    return out


@njit(cache=True)
def _read_kernel(g, f, drift, sigma, relative, sig_abs, bounded, rng, prev, has_prev, out):  # pragma: no cover
    """One cell of :func:`read_pair_or_cell`: ``out = v`` or ``out = prev - v``."""
    for i in range(g.size):
        v = float(g[i])
        if drift:
            v = v * f[i]
        if sigma > 0:
            xi = rng.standard_normal()
            if relative:
                v = v * (1.0 + sigma * xi)
            else:
                v = v + sig_abs * xi
        if bounded:
            v = max(v, 0.0)
        out[i] = prev[i] - v if has_prev else v

r"""The per-pulse reference of a pulsed update: the original, slow and obviously right code.

:func:`move_reference` is what :meth:`Device.update <physgrad.devices.model.Device.update>` did
before its pulses were counted and applied by :mod:`physgrad.devices.pulsing` (one pass per array,
compiled with numba when it is installed): the pulse counts ``R(x)`` with one uniform draw per
device, then, for soft-bounds and exponential-step laws, one vectorised iteration per pulse over
every device that still has pulses to take, clipped to the bounds after each pulse. Tests compare
the fast routes with it: bit for bit where nothing is random (nearest rounding, no cycle-to-cycle
noise), in distribution where it is.

Two fixes were made here as in the fast routes, so that the reference stays a usable oracle:

- a device whose bounds coincide (``g_max == g_min``, which device-to-device bound variability
  draws now and then: ``max(0, 1 + sigma xi)`` is 0 for ``xi < -1/sigma``) has no range to move in;
  its law step is 0 instead of ``0/0`` (this NaN was the root cause of ``train --device-model
  reram-es`` hanging);
- a non-finite request raises instead of casting NaN to an int64 pulse count.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from physgrad.devices.pieces import ConstantStep, SoftBounds
from physgrad.devices.pulsing import SATURATING_RANGES
from physgrad.devices.state import Cell
from physgrad.types import PhysgradError



def move_reference(device, cell: Cell, g: np.ndarray, delta: np.ndarray, dw0: float, rng,
                   clock: float) -> tuple:
    """One array of devices asked to change by ``delta`` (S): ``(new g, new cell)``, float64."""
    g, delta = np.asarray(g, dtype=float), np.asarray(delta, dtype=float)
    if not np.all(np.isfinite(delta)):
        raise PhysgradError("device update: the requested change holds NaN or inf")
    n = _count(device.pulses, delta / dw0, rng) if device.pulses is not None else None
    moved = delta != 0 if n is None else n != 0
    if device.drift is not None:
        g = np.where(moved, g * drift_factor(device.drift, cell, clock), g)
    g = g + delta if n is None else _respond(device.pulses, cell, g, n, rng)
    g = np.clip(g, cell.g_min, cell.g_max)
    if cell.stuck_index.size:
        g = np.array(g, dtype=float)
        g.flat[cell.stuck_index] = cell.stuck_value
    if device.drift is not None:
        cell = replace(cell, t_prog=np.where(moved, clock, cell.t_prog))
    return g, cell


def drift_factor(drift, cell: Cell, clock: float) -> np.ndarray:
    """:math:`((t_0 + \\text{clock} - t_\\mathrm{prog}) / t_0)^{-\\nu}` per device."""
    t0 = drift.t0
    return ((t0 + clock - cell.t_prog) / t0) ** (-cell.nu)


def _count(pulses, x: np.ndarray, rng) -> np.ndarray:
    """Pulse counts ``R(x)`` (int64): nearest, or stochastic without bias (one draw per device)."""
    if pulses.rounding == "nearest":
        return np.rint(x).astype(np.int64)
    fl = np.floor(x)
    return (fl + (rng.random(x.shape) < x - fl)).astype(np.int64)


def _respond(pulses, cell: Cell, g: np.ndarray, n: np.ndarray, rng) -> np.ndarray:
    """Conductances after ``n`` pulses (up for n > 0), per the law, with cycle-to-cycle noise."""
    c2c = pulses.c2c
    if isinstance(pulses.law, ConstantStep):
        m = np.abs(n).astype(float)
        if c2c > 0:
            idx = np.flatnonzero(n)
            m.flat[idx] += c2c * np.sqrt(m.flat[idx]) * rng.standard_normal(idx.size)
        return g + np.sign(n) * np.where(n > 0, cell.step_up, cell.step_down) * m
    idx = np.flatnonzero(n)
    g = np.array(g, dtype=float)
    if not idx.size:
        return g
    lo, hi, up, down = (np.broadcast_to(f, g.shape).ravel()[idx]
                        for f in (cell.g_min, cell.g_max, cell.step_up, cell.step_down))
    cap = int(np.ceil(SATURATING_RANGES / pulses.dw_min))  # the device saturates long before
    gi, sgn, left = g.ravel()[idx], np.sign(n.ravel()[idx]), np.minimum(np.abs(n.ravel()[idx]), cap)
    act = np.arange(idx.size)
    while act.size:  # one pulse on every device that still has pulses to take
        step = law_step(pulses.law, gi[act], sgn[act], lo[act], hi[act], up[act], down[act])
        if c2c > 0:
            step = step * (1.0 + c2c * rng.standard_normal(act.size))
        gi[act] = np.clip(gi[act] + sgn[act] * step, lo[act], hi[act])
        left[act] -= 1
        act = act[left[act] > 0]
    g.flat[idx] = gi
    return g


def law_step(law, g, sgn, lo, hi, up, down) -> np.ndarray:
    """Size (S, >= 0) of one pulse in direction ``sgn`` at ``g`` (soft bounds / exponential step);
    0 for a device without range (``hi == lo``)."""
    R = hi - lo
    R = np.where(R > 0, R, 1.0)  # no 0/0 where hi == lo (those devices do not move)
    if isinstance(law, SoftBounds):
        step = np.where(sgn > 0, up * 2.0 * (hi - g) / R, down * 2.0 * (g - lo) / R)
    else:
        z = 2.0 * law.a * (g - 0.5 * (hi + lo)) / R + law.b
        y_up = 1.0 - law.A_up * np.exp(law.gamma_up * z)
        y_down = 1.0 - law.A_down * np.exp(-law.gamma_down * z)
        step = np.where(sgn > 0, up * np.maximum(y_up, 0.0), down * np.maximum(y_down, 0.0))
    return np.where(hi > lo, step, 0.0)

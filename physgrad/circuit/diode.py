r"""The Shockley diode law, its co-content and slope: the one definition every route uses.

physgrad follows the DC current of SPICE3's (and ngspice's) default diode model, level 1 without
series resistance, breakdown (``BV``) or knee currents. With :math:`n v_t = N v_t` (V) and the
switch point :math:`v_0 = -3 N v_t`:

.. math::

    I(v) = g_{\min} v + \begin{cases}
        I_S\,\big(e^{v/(N v_t)} - 1\big) & v \ge v_0 \quad\text{(forward)}\\[2pt]
        -I_S\,\Big(1 + \big(\tfrac{3 N v_t}{e\,v}\big)^3\Big) & v < v_0 \quad\text{(reverse)}
    \end{cases}

(``v`` the anode-cathode voltage in V, ``I_S`` in A, ``g_min`` in S, ``v_t`` in V, ``e`` Euler's
number). The two branches meet at :math:`v_0` with equal value :math:`-I_S(1 - e^{-3})` and equal
slope :math:`I_S e^{-3}/(N v_t)`, so ``I`` is continuously differentiable. In the reverse branch
:math:`I'(v) = 3 I_S (3 N v_t / e)^3 / v^4 > 0`: the current is strictly increasing everywhere, hence
its integral, the co-content

.. math::

    J(v) = \int_0^v I = \tfrac12 g_{\min} v^2 + \begin{cases}
        I_S\,\big(N v_t\,(e^{v/(N v_t)} - 1) - v\big) & v \ge v_0\\
        J_f(v_0) - I_S\,\Big((v - v_0) - \tfrac{a^3}{2}\big(v^{-2} - v_0^{-2}\big)\Big),
        \; a = \tfrac{3 N v_t}{e} & v < v_0
    \end{cases}

is strictly convex and a circuit's total co-content stays convex. Far in reverse the two laws
differ by at most :math:`0.0054\,I_S` (at :math:`v \approx -4 N v_t`), i.e. a few 1e-17 A for
``IS = 1e-14``: invisible except at nodes held only by diodes, where ngspice's reverse branch is
what fixes the voltage.

References
----------
ngspice ``src/spicelib/devices/dio/dioload.c`` (``DIOload``: the ``vd >= -3*vte`` forward and
``arg = 3*vte/(vd*CONSTe); cdb = -csat*(1+arg^3)`` reverse branches, then ``cd += CKTgmin*vd``);
the same law is in Berkeley SPICE3f5 and the ngspice manual, section "Diodes". Checked against the
ngspice-39 binary in ``tests/test_diode_law.py``.

:func:`shockley_co_content` is written with ``autograd.numpy`` so that energies can trace it; all
three functions accept numpy arrays (broadcast elementwise).
"""
from __future__ import annotations

import sys

import numpy as np

# ngspice's switch from the forward to the reverse expression, in units of N vt (dimensionless).
REVERSE_SWITCH = 3.0


def _xp():
    """``autograd.numpy`` once autograd is loaded (a traced energy may pass its boxes), else numpy:
    without autograd in ``sys.modules`` nothing can be traced, and the solve path (the CLI) stays
    free of autograd's import."""
    return sys.modules.get("autograd.numpy") or np


def _split(vd, N, vt):
    """``(nvt, v0, vf, vr)``: ``N vt`` (V), the switch point ``-3 N vt`` (V), ``vd`` clipped to
    ``[v0, inf)`` (forward branch) and to ``(-inf, v0]`` (reverse branch)."""
    nvt = N * vt
    v0 = -REVERSE_SWITCH * nvt
    xp = _xp()
    return nvt, v0, xp.maximum(vd, v0), xp.minimum(vd, v0)


def _holomorphic(vd, IS, N, vt, gmin, slope: bool):
    """``I`` (or ``I'``) at complex ``vd``: each branch's analytic continuation, the branch chosen by
    the real part (holomorphic EP evaluates the law on small circles around a real voltage)."""
    nvt = N * vt
    v0 = -REVERSE_SWITCH * nvt
    a3 = (REVERSE_SWITCH * nvt / np.e) ** 3
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if slope:
            return np.where(vd.real >= v0, IS / nvt * np.exp(vd / nvt), 3.0 * IS * a3 / vd**4) + gmin
        return np.where(vd.real >= v0, IS * np.expm1(vd / nvt), -IS * (1.0 + a3 / vd**3)) + gmin * vd


def shockley_current(vd, IS, N, vt, gmin):
    """Diode current ``I(vd)`` (A) of the law above; ``vd`` in V. Overflows to ``inf`` silently.

    Complex ``vd`` gives the analytic continuation of the branch its real part lies on."""
    if np.iscomplexobj(vd):
        return _holomorphic(np.asarray(vd), IS, N, vt, gmin, slope=False)
    vd = np.asarray(vd, dtype=float)
    with np.errstate(over="ignore"):
        nvt, v0, vf, vr = _split(vd, N, vt)
        a3 = (REVERSE_SWITCH * nvt / np.e) ** 3
        # reverse part relative to its value at v0: -IS (a^3/vr^3 - a^3/v0^3), zero for vd >= v0
        rev = -IS * (a3 / vr**3 - a3 / v0**3)
        return IS * np.expm1(vf / nvt) + rev + gmin * vd


def shockley_co_content(vd, IS, N, vt, gmin):
    """Co-content ``J(vd) = int_0^vd I`` (W) of the law above; traceable by autograd."""
    with np.errstate(over="ignore"):
        nvt, v0, vf, vr = _split(vd, N, vt)
        a3 = (REVERSE_SWITCH * nvt / np.e) ** 3
        forward = IS * (nvt * _xp().expm1(vf / nvt) - vf)
        # int_{v0}^{vr} -IS (1 + a^3 s^-3) ds = -IS ((vr - v0) - a^3/2 (vr^-2 - v0^-2)); zero for vd >= v0
        reverse = -IS * ((vr - v0) - 0.5 * a3 * (1.0 / vr**2 - 1.0 / v0**2))
        return forward + reverse + 0.5 * gmin * vd**2


def shockley_slope(vd, IS, N, vt, gmin):
    """``dI/dvd`` (S) of the law above (continuous at the switch point); complex ``vd`` as in
    :func:`shockley_current`."""
    if np.iscomplexobj(vd):
        return _holomorphic(np.asarray(vd), IS, N, vt, gmin, slope=True)
    vd = np.asarray(vd, dtype=float)
    with np.errstate(over="ignore"):
        nvt, v0, vf, vr = _split(vd, N, vt)
        a3 = (REVERSE_SWITCH * nvt / np.e) ** 3
        return np.where(vd >= v0, IS / nvt * np.exp(vf / nvt), 3.0 * IS * a3 / vr**4) + gmin


def shockley_vcrit(IS, N, vt):
    """SPICE's critical voltage ``N vt ln(N vt / (sqrt(2) IS))`` (V): where the diode current's
    curvature is steepest; :func:`pnjlim` limits Newton steps above it."""
    nvt = N * vt
    with np.errstate(over="ignore", divide="ignore"):
        return nvt * np.log(nvt / (np.sqrt(2.0) * IS))


def pnjlim(vnew, vold, nvt, vcrit):
    """SPICE's junction-voltage limiting (``DEVpnjlim`` of SPICE3/ngspice ``devsup.c``), elementwise.

    Parameters
    ----------
    vnew : array, V
        Junction voltages the Newton step proposes.
    vold : array, V
        Junction voltages at the current iterate.
    nvt : array, V
        ``N vt`` of each junction.
    vcrit : array, V
        :func:`shockley_vcrit` of each junction.

    Returns
    -------
    array, V
        Limited voltages: above ``vcrit`` a forward step larger than ``2 N vt`` becomes logarithmic
        (``vold + N vt ln(1 + (vnew - vold)/(N vt))``, or ``N vt ln(vnew/(N vt))`` from ``vold <= 0``);
        a reverse step is cut at ``2 vold - 1`` (``-vold - 1`` from a forward ``vold``).
    """
    vnew, vold = np.broadcast_arrays(np.asarray(vnew, float), np.asarray(vold, float))
    out = vnew.copy()
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        fwd = (vnew > vcrit) & (np.abs(vnew - vold) > 2.0 * nvt)
        arg = 1.0 + (vnew - vold) / nvt
        from_pos = np.where(arg > 0, vold + nvt * np.log(np.where(arg > 0, arg, 1.0)), vcrit)
        from_neg = nvt * np.log(np.where(vnew > 0, vnew, 1.0) / nvt)
        out = np.where(fwd, np.where(vold > 0, from_pos, from_neg), out)
        floor = np.where(vold > 0, -vold - 1.0, 2.0 * vold - 1.0)
        rev = ~fwd & (vnew < 0) & (vnew < floor)
        out = np.where(rev, floor, out)
    return out

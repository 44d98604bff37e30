r"""The Shockley diode law, its co-content and slope: the one definition every route uses.

.. math:: I(v) = I_S\,\big(e^{v/(N v_t)} - 1\big) + g_{\min} v,\qquad
          J(v) = \int_0^v I = I_S\,\big(N v_t (e^{v/(N v_t)} - 1) - v\big) + \tfrac12 g_{\min} v^2

(``v`` the anode-cathode voltage in V, ``I_S`` in A, ``g_min`` in S, ``v_t`` in V). ``J`` is convex,
so a circuit's total co-content stays convex. :func:`shockley_co_content` is written with
``autograd.numpy`` so that energies can trace it; all three accept numpy arrays elementwise.
"""
from __future__ import annotations

import autograd.numpy as anp
import numpy as np


def shockley_current(vd, IS, N, vt, gmin):
    """``I = IS (exp(vd / (N vt)) - 1) + gmin vd`` (A); overflows to ``inf`` silently."""
    with np.errstate(over="ignore"):
        return IS * np.expm1(vd / (N * vt)) + gmin * vd


def shockley_co_content(vd, IS, N, vt, gmin):
    """``int_0^vd I = IS (N vt expm1(vd / (N vt)) - vd) + gmin vd^2 / 2`` (W)."""
    with np.errstate(over="ignore"):
        return IS * (N * vt * anp.expm1(vd / (N * vt)) - vd) + 0.5 * gmin * vd**2


def shockley_slope(vd, IS, N, vt, gmin):
    """``dI/dvd`` (S)."""
    with np.errstate(over="ignore"):
        return IS / (N * vt) * np.exp(vd / (N * vt)) + gmin

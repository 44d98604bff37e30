r"""EP surrogates of the cost, computed from exact equilibria.

With :math:`F(\beta) = \min_s E(s,\theta,x) + \beta\,C(s,y)` (batch mean), :math:`F` is concave in
:math:`\beta` (a minimum of affine functions) and :math:`F'(0) = C(s_0)` (envelope theorem), so

.. math::

    L_{+}(\beta) = \frac{F(\beta) - F(0)}{\beta} \;\le\; C \;\le\;
    L_{-}(\beta) = \frac{F(0) - F(-\beta)}{\beta},\qquad
    L_{c}(\beta) = \frac{F(\beta) - F(-\beta)}{2\beta} = C + O(\beta^2),

and :math:`\nabla_\theta L` is exactly the corresponding EP estimate (envelope theorem again).
To limit cancellation the differences are formed as
:math:`F(\beta) - F(0) = [E(s_\beta) - E(s_0)] + \beta C(s_\beta)` per sample, so the rounding error
of :math:`L` is about :math:`\epsilon\,|E|/\beta` (float64 :math:`\epsilon = 2.2\times10^{-16}`).

References
----------
Scellier, Ernoult, Kendall & Kumar (2023), "Energy-based learning algorithms for analog computing:
a comparative study", NeurIPS (lower/upper bound surrogates).
"""
from __future__ import annotations

import numpy as np

from physgrad.learning.cost import cost_per_sample
from physgrad.learning._phase import Phases
from physgrad.learning.ep import EquilibriumPropagation


def _energy(energy, eq, theta, x):
    return np.asarray(energy.energy(eq.state, theta, x), dtype=float)


def _cost(energy, eq, y):
    return np.asarray(cost_per_sample(np.asarray(energy.outputs(eq.state)), y), dtype=float)


def surrogate_from_phases(energy, theta, x, y, beta: float, variant: str, phases: Phases) -> float:
    """:math:`L_\\beta` for ``variant`` from already solved phases (see module docstring)."""
    y = np.asarray(y, dtype=float)
    e0 = _energy(energy, phases.free, theta, x)

    def rise(eq, b):  # F(b) - F(0) per sample
        return (_energy(energy, eq, theta, x) - e0) + b * _cost(energy, eq, y)

    if variant == "positive":
        return float(np.mean(rise(phases.plus, beta)) / beta)
    if variant == "negative":
        return float(np.mean(-rise(phases.minus, -beta)) / beta)
    if variant == "centered":
        return float(np.mean(rise(phases.plus, beta) - rise(phases.minus, -beta)) / (2.0 * beta))
    raise ValueError(f"variant must be 'positive', 'negative' or 'centered', got {variant!r}")


def surrogate(energy, theta, x, y, minimizer, beta: float, variant: str = "centered", free=None,
              strict: bool = True) -> float:
    r"""The EP surrogate :math:`L_\beta` (units of C, V^2) whose gradient the EP estimate is.

    Parameters
    ----------
    energy, theta, x, y, minimizer, free
        As in every learning rule (see ``docs/interfaces.md``).
    beta : float
        Nudge magnitude > 0 (S for circuits).
    variant : {"positive", "negative", "centered"}

    Returns
    -------
    float
    """
    ep = EquilibriumPropagation(beta=beta, variant=variant, strict=strict)
    phases = ep.phases(energy, theta, x, y, minimizer, free)
    return surrogate_from_phases(energy, theta, x, y, ep.beta, variant, phases)

r"""Coupled learning (CpL) and contrastive learning (CL): clamped-output learning rules.

With :math:`o_0` the free outputs and :math:`s^{\pm}` the equilibria with the outputs *clamped* to

.. math::  o^{\pm} = o_0 \pm \eta\,(y - o_0),

the estimates of :math:`\partial C/\partial\theta` (batch mean) are

.. math::

    \hat g_{+} = \frac{\partial_\theta E(s^{+}) - \partial_\theta E(s_0)}{\eta},\quad
    \hat g_{-} = \frac{\partial_\theta E(s_0) - \partial_\theta E(s^{-})}{\eta},\quad
    \hat g_{c} = \frac{\partial_\theta E(s^{+}) - \partial_\theta E(s^{-})}{2\eta}.

As :math:`\eta \to 0` these tend to :math:`\partial^2_{\theta o} F_c\,(y - o_0)` where
:math:`F_c(\theta, o)` is the energy minimized with the outputs clamped to ``o``; this equals
:math:`\partial C/\partial\theta` preconditioned by the output block of the free Hessian
(:math:`\partial C/\partial \theta = -\partial^2_{\theta o}F_c\, H_{oo}^{-1}(o_0 - y)`), so CpL is a descent
direction but not the gradient (exactly proportional to it with a single output). The biases
w.r.t. this limit are :math:`O(\eta)` (positive, negative) and :math:`O(\eta^2)` (centered).
Contrastive learning is the positive variant with :math:`\eta = 1` (outputs clamped to ``y``).

References
----------
Stern, Hexner, Rocks & Liu (2021), "Supervised learning in physical networks: from machine
learning to learning machines", Phys. Rev. X 11, 021045.
Movellan (1991), "Contrastive Hebbian learning in the continuous Hopfield model".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from physgrad.types import Nudge
from physgrad.learning._phase import (VARIANTS, Phases, Variant, check_choice, check_positive, contrast, free_phase,
                                      solve_phase)
from physgrad.learning.cost import check_targets

CoupledPhases = Phases  # the free and clamped equilibria of one coupled-learning estimate


@dataclass(frozen=True)
class CoupledLearning:
    r"""Coupled-learning gradient estimator (outputs clamped near their free values).

    Parameters
    ----------
    eta : float
        Nudge amplitude :math:`\eta > 0` (dimensionless): the clamp moves the outputs a fraction
        ``eta`` of the way to the target (``eta = 1``: clamp to ``y``, contrastive learning).
    variant : {"positive", "negative", "centered"}
    strict : bool
        Raise :class:`~physgrad.types.NotSolvedError` when any phase is not converged.
    """

    eta: float = 1e-2
    variant: Variant = "centered"
    strict: bool = True

    def __post_init__(self):
        object.__setattr__(self, "eta", check_positive("eta", self.eta))
        check_choice("variant", self.variant, VARIANTS)

    @property
    def code(self) -> str:
        """Short name used at the CLI and in reports (pcpl, ncpl, ccpl)."""
        return {"positive": "pcpl", "negative": "ncpl", "centered": "ccpl"}[self.variant]

    def clamp_values(self, free_outputs, y):
        """``(o_plus, o_minus) = o_0 +- eta (y - o_0)``, each shaped ``(batch, n_out)``."""
        o = np.asarray(free_outputs, dtype=float)
        delta = self.eta * (np.asarray(y, dtype=float) - o)
        return o + delta, o - delta

    def phases(self, energy, theta, x, y, minimizer, free=None) -> CoupledPhases:
        """Solve (or reuse) the free phase and the clamped phase(s) this variant needs."""
        free = free_phase(energy, theta, x, minimizer, free, self.strict)
        y = check_targets(energy, free.state, y)
        o_plus, o_minus = self.clamp_values(energy.outputs(free.state), y)
        plus = minus = None
        if self.variant in ("positive", "centered"):
            plus = solve_phase(energy, theta, x, minimizer, Nudge(clamp=o_plus), free.state, self.strict)
        if self.variant in ("negative", "centered"):
            minus = solve_phase(energy, theta, x, minimizer, Nudge(clamp=o_minus), free.state, self.strict)
        return CoupledPhases(free, plus, minus)

    def estimate_from_phases(self, energy, theta, x, phases: CoupledPhases):
        """The coupled-learning estimate given solved phases (shaped like ``theta``)."""
        return contrast(energy, theta, x, phases, self.variant, self.eta)

    def estimate(self, energy, theta, x, y, minimizer, free=None):
        """Estimate of :math:`\\partial \\bar C/\\partial\\theta` (a descent direction), shaped like ``theta``."""
        return self.estimate_from_phases(energy, theta, x, self.phases(energy, theta, x, y, minimizer, free))


def contrastive_learning(strict: bool = True) -> CoupledLearning:
    """Contrastive learning: outputs clamped to the targets (``CoupledLearning(eta=1, "positive")``).

    References
    ----------
    Movellan (1991); Baldi & Pineda (1991), "Contrastive learning and neural oscillations".
    """
    return CoupledLearning(eta=1.0, variant="positive", strict=strict)

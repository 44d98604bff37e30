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

import autograd.numpy as anp
import numpy as np
from autograd import grad as ag_grad
from autograd import jacobian

from physgrad.types import HasQuadraticForm, Nudge, PhysgradError
from physgrad.learning._phase import (CODES, VARIANTS, ZERO_PHASES, Phases, Variant, ZeroPhase, check_choice,
                                      check_positive, contrast, free_phase, solve_phase, zero_phase)
from physgrad.learning.cost import check_targets
from physgrad.learning.exact import independent_rows, box_active_set, find_active_set, kkt_solve
from physgrad.pytree import as_float_tree, tree_flatten, tree_map

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
    zero_phase : {"free", "relaxed"}
        The unperturbed state of the positive and negative variants: the free phase itself, or the
        free phase relaxed again with the outputs clamped at their free values :math:`o_0`
        (:func:`physgrad.learning._phase.zero_phase`; the authors' code). Unused by the centered variant.
    """

    eta: float = 1e-2
    variant: Variant = "centered"
    strict: bool = True
    zero_phase: ZeroPhase = "free"

    def __post_init__(self):
        object.__setattr__(self, "eta", check_positive("eta", self.eta))
        check_choice("variant", self.variant, VARIANTS)
        check_choice("zero_phase", self.zero_phase, ZERO_PHASES)

    @property
    def code(self) -> str:
        """Short name used at the CLI and in reports (pcpl, ncpl, ccpl)."""
        return CODES["coupled"][self.variant]

    def clamp_values(self, free_outputs, y):
        """``(o_plus, o_minus) = o_0 +- eta (y - o_0)``, each shaped ``(batch, n_out)``."""
        o = np.asarray(free_outputs, dtype=float)
        delta = self.eta * (np.asarray(y, dtype=float) - o)
        return o + delta, o - delta

    def phases(self, energy, theta, x, y, minimizer, free=None) -> Phases:
        """Solve (or reuse) the free phase and the clamped phase(s) this variant needs."""
        free = free_phase(energy, theta, x, minimizer, free, self.strict)
        y = check_targets(energy, free.state, y)
        o_plus, o_minus = self.clamp_values(energy.outputs(free.state), y)
        plus = minus = None
        if self.variant in ("positive", "centered"):
            plus = solve_phase(energy, theta, x, minimizer, Nudge(clamp=o_plus), free.state, self.strict)
        if self.variant in ("negative", "centered"):
            minus = solve_phase(energy, theta, x, minimizer, Nudge(clamp=o_minus), free.state, self.strict)
        if self.variant != "centered":
            o_0 = np.asarray(energy.outputs(free.state), dtype=float)
            free = zero_phase(energy, theta, x, minimizer, free, self.zero_phase, Nudge(clamp=o_0), self.strict)
        return Phases(free, plus, minus)

    def estimate_from_phases(self, energy, theta, x, phases: Phases):
        """The coupled-learning estimate given solved phases (shaped like ``theta``)."""
        return contrast(energy, theta, x, phases, self.variant, self.eta)

    def estimate(self, energy, theta, x, y, minimizer, free=None):
        """Estimate of :math:`\\partial \\bar C/\\partial\\theta` (a descent direction), shaped like ``theta``."""
        return self.estimate_from_phases(energy, theta, x, self.phases(energy, theta, x, y, minimizer, free))


def contrastive_learning(strict: bool = True, zero_phase: str = "free") -> CoupledLearning:
    """Contrastive learning: outputs clamped to the targets (``CoupledLearning(eta=1, "positive")``).

    References
    ----------
    Movellan (1991); Baldi & Pineda (1991), "Contrastive learning and neural oscillations".
    """
    return CoupledLearning(eta=1.0, variant="positive", strict=strict, zero_phase=zero_phase)


def coupled_limit(energy, theta, x, y, minimizer, free=None, active_tol: float = 1e-9, strict: bool = True):
    r"""The :math:`\eta \to 0` limit of coupled learning, :math:`\partial^2_{\theta o}F_c\,(y - o_0)`.

    Computed as :math:`\frac{d}{d\eta}\partial_\theta E(s_c(o_0 + \eta(y - o_0)))` at
    :math:`\eta = 0` by forward differentiation of the clamped KKT system on the free active set.
    Piecewise-quadratic energies need ``energy.quadratic_form`` and ``energy.output_rows`` (rows of
    ``P``, ``c`` giving the outputs); other energies use the dense-Hessian route on the components
    not held at a bound (:func:`box_active_set`), with the output components found from the
    Jacobian of ``energy.outputs``.
    """
    free = free_phase(energy, theta, x, minimizer, free, strict)
    y = check_targets(energy, free.state, y)
    theta = as_float_tree(theta)
    if not isinstance(energy, HasQuadraticForm):
        return _smooth_coupled_limit(energy, theta, x, y, free.state, active_tol)
    qf = energy.quadratic_form(theta, x)
    if qf.has_smooth:
        raise PhysgradError("coupled_limit is implemented for piecewise-quadratic energies (no Shockley diodes)")
    u0 = qf.reduce(free.state)
    out = list(energy.output_rows)
    P_out = np.asarray(qf.P, float)[out]
    c_out = np.asarray(qf.c, float)[:, out]
    o0 = u0 @ P_out.T + c_out
    # drop active diode rows that the clamp makes redundant
    aset = find_active_set(qf, u0, active_tol)
    D = np.asarray(qf.D, float)
    rows = []
    for b in range(u0.shape[0]):
        stacked = np.vstack([P_out, D[list(aset.rows[b])]]) if aset.rows[b] else P_out
        keep = independent_rows(stacked)
        if any(i < len(out) for i in set(range(len(out))) - set(keep)):
            raise PhysgradError("the output constraints are linearly dependent; cannot clamp the outputs")
        rows.append(tuple(aset.rows[b][i - len(out)] for i in keep if i >= len(out)))

    def theta_grad_at(eta):
        target = o0 + eta * (y - o0)
        u = kkt_solve(qf, rows, P_out, target - c_out)
        return energy.theta_grad(qf.lift(u), theta, x)

    return tree_map(np.asarray, jacobian(theta_grad_at)(0.0))


def _smooth_coupled_limit(energy, theta, x, y, state, active_tol):
    flat, unf = tree_flatten(state)

    J = jacobian(lambda z: anp.ravel(energy.outputs(unf(z))))(flat)
    out_idx = np.argmax(np.abs(J), axis=1)
    if not np.allclose(np.abs(J).sum(axis=1), 1.0) or not np.allclose(J[np.arange(len(out_idx)), out_idx], 1.0):
        raise PhysgradError("coupled_limit needs outputs that are state components (energy.outputs selects units)")
    aset = box_active_set(energy, theta, x, state, active_tol)
    held = set(aset.active[0])
    if held & set(out_idx.tolist()):
        raise PhysgradError("an output unit is held at its bound; clamping it is not a smooth perturbation")
    F = np.array([i for i in range(flat.size) if i not in held and i not in set(out_idx.tolist())], dtype=int)

    def grad_s(z):
        return ag_grad(lambda w: anp.sum(energy.energy(unf(w), theta, x)))(z)

    H = jacobian(grad_s)(flat)
    o0 = np.ravel(np.asarray(energy.outputs(state), float))
    delta = np.ravel(np.broadcast_to(y, np.shape(energy.outputs(state)))) - o0
    ds = np.zeros_like(flat)
    ds[out_idx] = delta
    if F.size:
        ds[F] = -np.linalg.solve(H[np.ix_(F, F)], H[np.ix_(F, out_idx)] @ delta)
    leaves_like = [np.asarray(a) for a in (theta if isinstance(theta, (tuple, list)) else (theta,))]

    def flat_theta_grad(eta):
        g = energy.theta_grad(unf(flat + eta * ds), theta, x)
        parts = list(g) if isinstance(theta, (tuple, list)) else [g]
        return anp.concatenate([anp.ravel(p) for p in parts])

    vec = np.asarray(jacobian(flat_theta_grad)(0.0))
    out, i = [], 0
    for a in leaves_like:
        out.append(vec[i:i + a.size].reshape(a.shape))
        i += a.size
    return tuple(out) if isinstance(theta, (tuple, list)) else out[0]

r"""Equilibrium propagation (EP): positive, negative and centered variants.

With :math:`s_\beta = \arg\min_s E(s, \theta, x) + \beta C(s, y)` the EP estimates of
:math:`\partial C / \partial \theta` (averaged over the batch) are

.. math::

    \hat g_{+} = \frac{\partial_\theta E(s_\beta) - \partial_\theta E(s_0)}{\beta},\qquad
    \hat g_{-} = \frac{\partial_\theta E(s_0) - \partial_\theta E(s_{-\beta})}{\beta},\qquad
    \hat g_{c} = \frac{\partial_\theta E(s_\beta) - \partial_\theta E(s_{-\beta})}{2\beta}.

Each is the exact gradient of a surrogate (see :mod:`physgrad.learning.surrogate`):
:math:`\hat g_+ = \nabla_\theta (F(\beta) - F(0))/\beta`, etc., with :math:`F(\beta) = \min_s E + \beta C`;
the positive surrogate is a lower bound of :math:`C`, the negative one an upper bound (F is concave
in beta), and the biases are :math:`O(\beta)`, :math:`O(\beta)` and :math:`O(\beta^2)`.
For circuits (E = co-content, :math:`\theta = g` in S) :math:`\partial_{g_k} E = \tfrac12 \Delta v_k^2` and
:math:`-\eta\hat g` is the local rule :math:`\Delta g_k = \frac{\eta}{2\beta}(\Delta v_{k,0}^2 - \Delta v_{k,\beta}^2)`.

References
----------
Scellier & Bengio (2017), "Equilibrium propagation", Front. Comput. Neurosci. 11:24.
Laborieux et al. (2021), "Scaling equilibrium propagation to deep ConvNets by drastically reducing
its gradient estimator bias", Front. Neurosci. 15:633674 (the centered variant).
Scellier (2021), "A deep learning theory for neural networks grounded in physics", PhD thesis, ch. 2-3.
"""
from __future__ import annotations

from dataclasses import dataclass

from physgrad.types import Nudge
from physgrad.learning._phase import (CODES, VARIANTS, ZERO_PHASES, Phases, Variant, ZeroPhase, check_choice,
                                      check_positive, contrast, free_phase, solve_phase, zero_phase)
from physgrad.learning.cost import check_targets

@dataclass(frozen=True)
class EquilibriumPropagation:
    r"""EP gradient estimator.

    Parameters
    ----------
    beta : float
        Nudging strength magnitude :math:`\beta > 0` (S for circuits: the conductance from each
        output to a source at its target). The variant sets the sign(s) used.
    variant : {"positive", "negative", "centered"}
        Which nudged phases to use (see module docstring).
    strict : bool
        Raise :class:`~physgrad.types.NotSolvedError` when any phase is not converged.
    zero_phase : {"free", "relaxed"}
        The unperturbed state of the positive and negative variants: the free phase itself, or
        the free phase relaxed again by the minimizer (:func:`physgrad.learning._phase.zero_phase`; the
        authors' code of the comparative study). Unused by the centered variant.

    Examples
    --------
    >>> EquilibriumPropagation(beta=1e-3, variant="centered")  # doctest: +SKIP
    """

    beta: float = 1e-2
    variant: Variant = "centered"
    strict: bool = True
    zero_phase: ZeroPhase = "free"

    def __post_init__(self):
        object.__setattr__(self, "beta", check_positive("beta", self.beta))
        check_choice("variant", self.variant, VARIANTS)
        check_choice("zero_phase", self.zero_phase, ZERO_PHASES)

    @property
    def code(self) -> str:
        """Short name used at the CLI and in reports (pep, nep, cep)."""
        return CODES["ep"][self.variant]

    def phases(self, energy, theta, x, y, minimizer, free=None) -> Phases:
        """Solve (or reuse) the free phase and the nudged phase(s) this variant needs."""
        free = free_phase(energy, theta, x, minimizer, free, self.strict)
        y = check_targets(energy, free.state, y)
        plus = minus = None
        if self.variant in ("positive", "centered"):
            plus = solve_phase(energy, theta, x, minimizer, Nudge(self.beta, target=y), free.state, self.strict)
        if self.variant in ("negative", "centered"):
            minus = solve_phase(energy, theta, x, minimizer, Nudge(-self.beta, target=y), free.state, self.strict)
        if self.variant != "centered":
            free = zero_phase(energy, theta, x, minimizer, free, self.zero_phase, strict=self.strict)
        return Phases(free, plus, minus)

    def estimate_from_phases(self, energy, theta, x, phases: Phases):
        """The EP estimate given already solved phases (shaped like ``theta``)."""
        return contrast(energy, theta, x, phases, self.variant, self.beta)

    def estimate(self, energy, theta, x, y, minimizer, free=None):
        """Estimate :math:`\\partial \\bar C/\\partial\\theta`, shaped like ``theta`` (units of C per unit theta)."""
        return self.estimate_from_phases(energy, theta, x, self.phases(energy, theta, x, y, minimizer, free))

"""Learning rules: estimators of dC/dtheta with one interface.

Every estimator has ``estimate(energy, theta, x, y, minimizer, free=None) -> like theta``
(see ``docs/interfaces.md``). :func:`make_estimator` builds one from its CLI/report code.
"""
from __future__ import annotations

from physgrad.types import PhysgradError
from physgrad.learning._phase import CODES, ZERO_PHASES
from physgrad.learning.backprop import RecurrentBackprop, TruncatedBackprop
from physgrad.learning.cost import cost_per_sample, mean_cost
from physgrad.learning.contour import ContourEP, HolomorphicEP, switching_radius
from physgrad.learning.coupled import CoupledLearning, contrastive_learning, coupled_limit
from physgrad.learning.ep import EquilibriumPropagation
from physgrad.learning.fit import FitConfig, FitResult, fit
from physgrad.learning.exact import ExactGradient, ExactResult
from physgrad.learning.surrogate import surrogate

METHODS = ("exact", "pep", "nep", "cep", "ep4", "fp", "hep", "cl", "pcpl", "ncpl", "ccpl", "tbp", "rbp")
"""Codes of the estimators (CLI ``--method`` and report ``method`` column)."""


def make_estimator(method: str, *, beta: float = 1e-2, eta: float = 1e-2, steps: int = 100, points: int = 0,
                   strict: bool = True, zero_phase: str = "free"):
    """Build the estimator for a method code.

    Parameters
    ----------
    method : {"exact", "pep", "nep", "cep", "cl", "pcpl", "ncpl", "ccpl", "tbp", "rbp"}
    beta : float
        EP nudge (S for circuits), used by pep/nep/cep.
    eta : float
        Coupled-learning amplitude (dimensionless), used by pcpl/ncpl/ccpl.
    steps : int
        Unrolled sweeps (tbp) or adjoint iterations (rbp).
    points : int
        Nudges per period: fp (default 8) and hep (default 6); 0 = the default.
    zero_phase : {"free", "relaxed"}
        Unperturbed state of the one-sided rules pep/nep/cl/pcpl/ncpl
        (:data:`ZERO_PHASES`).
    """
    ep = {code: variant for variant, code in CODES["ep"].items()}
    cpl = {code: variant for variant, code in CODES["coupled"].items()}
    if method == "exact":
        return ExactGradient(strict=strict)
    if method in ep:
        return EquilibriumPropagation(beta=beta, variant=ep[method], strict=strict, zero_phase=zero_phase)
    if method in ("ep4", "fp"):
        return ContourEP(beta=beta, stencil=method, points=points or 8, strict=strict)
    if method == "hep":
        return HolomorphicEP(beta=beta, points=points or 6, strict=strict)
    if method == "cl":
        return contrastive_learning(strict=strict, zero_phase=zero_phase)
    if method in cpl:
        return CoupledLearning(eta=eta, variant=cpl[method], strict=strict, zero_phase=zero_phase)
    if method == "tbp":
        return TruncatedBackprop(steps=steps, strict=strict)
    if method == "rbp":
        return RecurrentBackprop(steps=steps, strict=strict)
    raise PhysgradError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")


__all__ = ["CODES", "ZERO_PHASES", "METHODS", "ContourEP", "HolomorphicEP", "switching_radius", "CoupledLearning", "FitConfig", "FitResult", "fit", "EquilibriumPropagation", "ExactGradient", "ExactResult",
           "RecurrentBackprop", "TruncatedBackprop", "contrastive_learning", "coupled_limit",
           "cost_per_sample", "make_estimator", "mean_cost", "surrogate"]

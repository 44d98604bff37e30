"""Helpers shared by the learning rules: solving one phase and checking it converged."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, get_args

from physgrad.types import FREE, Equilibrium, NotSolvedError, Nudge, PhysgradError
from physgrad.pytree import tree_map

Variant = Literal["positive", "negative", "centered"]
VARIANTS = get_args(Variant)
ZeroPhase = Literal["free", "relaxed"]
ZERO_PHASES = get_args(ZeroPhase)
"""The unperturbed state a one-sided estimate (positive or negative variant) contrasts with: ``free``,
the free phase itself; ``relaxed``, a phase at zero perturbation relaxed again from the free state by
the same minimizer as the perturbed phase (:func:`zero_phase`)."""
CODES = {
    "ep": {"positive": "pep", "negative": "nep", "centered": "cep"},
    "coupled": {"positive": "pcpl", "negative": "ncpl", "centered": "ccpl"},
}
"""The one table between variants and the short codes used at the CLI and in reports, per family
(equilibrium propagation, coupled learning)."""


@dataclass(frozen=True)
class Phases:
    """The equilibria a contrastive estimate (EP, coupled learning) used; ``plus``/``minus`` are
    ``None`` where the variant needs none; ``free`` is the unperturbed state of the contrast (the free
    phase, or with ``zero_phase="relaxed"`` the free phase relaxed again, :func:`zero_phase`)."""

    free: Equilibrium
    plus: Optional[Equilibrium]
    minus: Optional[Equilibrium]


def solve_phase(energy, theta, x, minimizer, nudge: Nudge = FREE, s0=None, strict: bool = True) -> Equilibrium:
    """``minimizer.minimize(...)``; with ``strict`` raise :class:`NotSolvedError` unless converged."""
    eq = minimizer.minimize(energy, theta, x, nudge=nudge, s0=s0)
    if strict and not eq.converged:
        phase = "free" if nudge.is_free else (f"beta={nudge.beta:g}" if nudge.clamp is None else "clamped")
        raise NotSolvedError(
            f"{getattr(eq, 'solver', '?')} did not converge in the {phase} phase: status={eq.status}, "
            f"residual={eq.residual:.3g}, {eq.message}")
    return eq


def free_phase(energy, theta, x, minimizer, free=None, strict: bool = True) -> Equilibrium:
    """Return ``free`` when given (checking it is a free equilibrium), else solve the free phase."""
    if free is None:
        return solve_phase(energy, theta, x, minimizer, FREE, strict=strict)
    if not isinstance(free, Equilibrium):
        raise PhysgradError(f"free must be an Equilibrium or None, got {type(free).__name__}")
    if strict and not free.converged:
        raise NotSolvedError(f"the given free equilibrium has status {free.status}: {free.message}")
    return free


def zero_phase(energy, theta, x, minimizer, free: Equilibrium, how: str, nudge: Nudge = FREE,
               strict: bool = True) -> Equilibrium:
    r"""The unperturbed state of a one-sided contrast (:data:`ZERO_PHASES`).

    ``free``: the free phase itself. ``relaxed``: ``minimizer`` run again from the free state at zero
    perturbation (``nudge``: :data:`~physgrad.types.FREE` for EP, the outputs clamped at their free
    values for coupled learning), as the perturbed phase is run from it -- the authors' code of the
    comparative study (Scellier et al. 2023, ``training/sgd.py``: "first phase" at nudging 0). With a
    minimizer run to convergence both are the same state; with a fixed budget of sweeps from a warm
    start that is not yet an equilibrium, ``free`` leaves the relaxation the perturbed phase continues
    in the contrast, :math:`(\partial_\theta E(s^{(2T)}_{\beta}) - \partial_\theta E(s^{(T)}_0))/\beta`,
    a drift that does not vanish with :math:`\beta` and is amplified by :math:`1/\beta`; ``relaxed``
    contrasts two states with the same number of sweeps from the same start, so the drift cancels to
    first order (as it does in the centered variant).
    """
    check_choice("zero_phase", how, ZERO_PHASES)
    if how == "free":
        return free
    return solve_phase(energy, theta, x, minimizer, nudge, free.state, strict)


def difference_quotient(a, b, scale: float):
    """``(a - b) / scale`` leaf-wise over parameter trees."""
    return tree_map(lambda p, q: (p - q) / scale, a, b)


def contrast(energy, theta, x, phases, variant: str, step: float):
    r"""The contrastive estimate shared by EP and coupled learning, shaped like ``theta``.

    ``positive``: :math:`(\partial_\theta E(s_+) - \partial_\theta E(s_0)) / h`; ``negative``:
    :math:`(\partial_\theta E(s_0) - \partial_\theta E(s_-)) / h`; ``centered``:
    :math:`(\partial_\theta E(s_+) - \partial_\theta E(s_-)) / (2h)`, with ``phases`` carrying
    ``free``, ``plus`` and ``minus`` equilibria and ``h`` the nudge (beta or eta).
    """
    grad = energy.theta_grad
    if variant == "positive":
        return difference_quotient(grad(phases.plus.state, theta, x), grad(phases.free.state, theta, x), step)
    if variant == "negative":
        return difference_quotient(grad(phases.free.state, theta, x), grad(phases.minus.state, theta, x), step)
    return difference_quotient(grad(phases.plus.state, theta, x), grad(phases.minus.state, theta, x), 2.0 * step)


def check_positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0.0) or value != value or value == float("inf"):
        raise PhysgradError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_choice(name: str, value, valid) -> None:
    if value not in valid:
        raise PhysgradError(f"{name} must be one of {', '.join(map(repr, valid))}; got {value!r}")

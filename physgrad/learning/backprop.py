r"""Backpropagation through an iterative minimizer: truncated (TBP) and recurrent (RBP).

Both need a minimizer exposing a pure, autograd-traceable ``step(energy, theta, x, s, nudge) -> s``
(one sweep :math:`s_{t+1} = \Phi(s_t, \theta)`) whose fixed point is the free equilibrium.

- **TBP** differentiates :math:`\bar C(s_T(\theta))` with :math:`s_T = \Phi^T(s_{\rm init})` by
  reverse-mode autograd through the ``T`` unrolled sweeps (backprop through time). It tends to the
  exact gradient as ``T`` grows when :math:`\Phi` is a contraction.
- **RBP** (Almeida-Pineda) works at the free equilibrium :math:`s^\ast = \Phi(s^\ast)`: with
  :math:`\lambda_0 = \partial_s \bar C(s^\ast)` and :math:`\lambda_{t+1} = J_s^\top \lambda_t`,

  .. math::  \hat g_T = J_\theta^\top \sum_{t=0}^{T-1} \lambda_t
             \;\xrightarrow[T\to\infty]{}\; J_\theta^\top (I - J_s^\top)^{-1}\partial_s \bar C
             = \frac{d\bar C}{d\theta},

  where :math:`J_s = \partial\Phi/\partial s`, :math:`J_\theta = \partial\Phi/\partial\theta` at
  :math:`(s^\ast, \theta)` (a truncated Neumann series of the implicit-function theorem).

References
----------
Almeida (1987); Pineda (1987), "Generalization of back-propagation to recurrent neural networks".
Liao et al. (2018), "Reviving and improving recurrent back-propagation", ICML.
Scellier & Bengio (2017), section 4 (comparison of EP with recurrent backprop).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from autograd import grad as ag_grad
from autograd import make_vjp

from physgrad.types import FREE, PhysgradError
from physgrad.learning._phase import check_choice, free_phase
from physgrad.learning.cost import check_targets, mean_cost
from physgrad.pytree import as_float_tree, tree_map

INITS = ("zeros", "free")


def _check_step(minimizer) -> None:
    if not callable(getattr(minimizer, "step", None)):
        raise PhysgradError(
            f"{type(minimizer).__name__} has no pure step(energy, theta, x, s, nudge) method; truncated and "
            "recurrent backprop need an iterative minimizer (e.g. the coordinate-descent or block minimizer)")


MAX_TBP_STEPS = 10_000
"""Most sweeps TBP unrolls: autograd's tape keeps every sweep (measured on a two-resistor divider:
10,000 sweeps 0.4 GB and 12 s of CPU, 100,000 sweeps 3.1 GB and 115 s; more with more nodes)."""
MAX_RBP_STEPS = 1_000_000
"""Most RBP adjoint iterations (memory does not grow with them; the bound keeps the time finite)."""


def _check_steps(steps, maximum: int = MAX_RBP_STEPS) -> int:
    if isinstance(steps, bool) or int(steps) != steps or not 1 <= steps <= maximum:
        raise PhysgradError(f"steps must be an integer in [1, {maximum:,}], got {steps!r}")
    return int(steps)


@dataclass(frozen=True)
class TruncatedBackprop:
    """Backprop through ``steps`` unrolled sweeps of the minimizer's pure ``step``.

    Parameters
    ----------
    steps : int
        Number of sweeps ``T`` unrolled (>= 1).
    init : {"zeros", "free"}
        Start of the unrolled trajectory: all-zero state (0 V), or the free equilibrium held
        constant (then TBP equals RBP with the same number of steps).
    strict : bool
        Raise when the free phase (used for the shape of the state) is not converged.
    """

    steps: int = 100
    init: Literal["zeros", "free"] = "zeros"
    strict: bool = True
    code = "tbp"

    def __post_init__(self):
        object.__setattr__(self, "steps", _check_steps(self.steps, MAX_TBP_STEPS))
        check_choice("init", self.init, INITS)

    def estimate(self, energy, theta, x, y, minimizer, free=None):
        """Gradient of the batch-mean cost after ``steps`` sweeps, shaped like ``theta``."""
        _check_step(minimizer)
        free = free_phase(energy, theta, x, minimizer, free, self.strict)
        y = check_targets(energy, free.state, y)
        s_init = tree_map(np.zeros_like, free.state) if self.init == "zeros" else free.state
        steps = self.steps

        def unrolled_cost(th):
            s = s_init
            for _ in range(steps):
                s = minimizer.step(energy, th, x, s, FREE)
            return mean_cost(energy, s, y)

        return ag_grad(unrolled_cost)(as_float_tree(theta))


@dataclass(frozen=True)
class RecurrentBackprop:
    """Recurrent backprop: ``steps`` adjoint iterations at the free equilibrium.

    Parameters
    ----------
    steps : int
        Number of Neumann-series terms ``T`` (>= 1).
    strict : bool
        Raise when the free phase is not converged.
    """

    steps: int = 100
    strict: bool = True
    code = "rbp"

    def __post_init__(self):
        object.__setattr__(self, "steps", _check_steps(self.steps))

    def estimate(self, energy, theta, x, y, minimizer, free=None):
        """Truncated implicit-function gradient, shaped like ``theta``."""
        return recurrent_backprop_path(energy, theta, x, y, minimizer, (self.steps,), free, self.strict)[0]


def recurrent_backprop_path(energy, theta, x, y, minimizer, steps, free=None, strict: bool = True) -> list:
    """RBP estimates after each number of adjoint iterations in ``steps`` (one pass; increasing order).

    Returns a list of gradients shaped like ``theta``, one per entry of ``steps``.
    """
    counts = [_check_steps(n) for n in steps]
    if counts != sorted(counts):
        raise PhysgradError(f"steps must be increasing, got {list(steps)}")
    _check_step(minimizer)
    free = free_phase(energy, theta, x, minimizer, free, strict)
    y = check_targets(energy, free.state, y)
    theta = as_float_tree(theta)
    s_star = free.state
    lam = ag_grad(lambda s: mean_cost(energy, s, y))(s_star)
    vjp_s, _ = make_vjp(lambda s: minimizer.step(energy, theta, x, s, FREE))(s_star)
    vjp_theta, _ = make_vjp(lambda th: minimizer.step(energy, th, x, s_star, FREE))(theta)
    total, out = lam, []
    for n in range(1, counts[-1] + 1):
        if n in counts:
            out.append(vjp_theta(total))
        if n < counts[-1]:
            lam = vjp_s(lam)
            total = tree_map(np.add, total, lam)
    return out

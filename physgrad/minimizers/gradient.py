r"""Projected gradient descent with a fixed step, for energies without a closed-form block update.

.. math:: s_{t+1} = \Pi_{[lo, hi]}\big(s_t - \epsilon\, \nabla_s (E + \beta C)(s_t)\big)

per sample, with the gradient from autograd (the energy must be traceable) and :math:`\Pi` the
projection on the energy's box bounds (``energy.bounds(k)``; none: unconstrained). With a clamp
nudge the outputs are held at the clamp values. It is the generic minimiser: slower
than exact block descent, but it needs nothing from the energy beyond ``energy(state, theta, x)``.
For a convex quadratic energy with Hessian eigenvalues in ``(0, lambda_max]`` it converges for
``step_size < 2 / lambda_max``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import autograd.numpy as anp
import numpy as np
from autograd import grad
from autograd.builtins import tuple as atuple

from physgrad.types import FREE, ChecksNudge, ChecksState, Equilibrium, Nudge, PhysgradError
from physgrad.minimizers.block import _clamped
from physgrad.minimizers.loop import iterate


def _total(energy, theta, x, nudge: Nudge):
    def f(s):
        E = anp.sum(energy.energy(s, theta, x))
        if nudge.beta != 0.0:
            E = E + nudge.beta * 0.5 * anp.sum((energy.outputs(s) - nudge.target) ** 2)
        return E
    return f


@dataclass(frozen=True)
class GradientDescent:
    """Fixed-step projected gradient descent on the state.

    Parameters
    ----------
    step_size : float
        ``epsilon`` (state units per unit gradient, e.g. V / (W/V) = ohm for circuits).
    max_iter : int
    tol : float, optional
        Stop when a step changes no unit by more than ``tol``; None runs ``max_iter`` steps.
    """

    step_size: float = 0.1
    max_iter: int = 10000
    tol: Optional[float] = 1e-10

    def __post_init__(self):
        if not (float(self.step_size) > 0 and np.isfinite(self.step_size)):
            raise PhysgradError(f"step_size must be finite and > 0, got {self.step_size!r}")
        if isinstance(self.max_iter, bool) or int(self.max_iter) != self.max_iter or self.max_iter < 1:
            raise PhysgradError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        if self.tol is not None and not float(self.tol) >= 0:
            raise PhysgradError(f"tol must be >= 0 or None, got {self.tol!r}")

    name = "gradient"

    def accepts(self, energy) -> None:
        missing = [m for m in ("energy", "outputs", "sizes", "n_layers", "input_layer") if not hasattr(energy, m)]
        if missing:
            raise PhysgradError(f"{type(energy).__name__} cannot be minimised by gradient descent here: "
                                f"it has no {', '.join(missing)}")

    def _project(self, energy, s):
        if not hasattr(energy, "bounds"):
            return s
        out = []
        for k, a in enumerate(s, start=1):
            lo, hi = energy.bounds(k)
            out.append(anp.clip(a, lo, hi) if np.any(np.isfinite(lo)) or np.any(np.isfinite(hi)) else a)
        return tuple(out)

    def step(self, energy, theta, x, s, nudge: Nudge = FREE):
        """One projected gradient step (pure, traceable by autograd)."""
        s = _clamped(tuple(s), nudge)
        g = grad(_total(energy, theta, x, nudge))(s)
        L = len(s)
        new = tuple(a - self.step_size * ga if not (nudge.clamp is not None and k == L) else a
                    for k, (a, ga) in enumerate(zip(s, g), start=1))
        return atuple(self._project(energy, new))

    def minimize(self, energy, theta, x, *, nudge: Nudge = FREE, s0=None) -> Equilibrium:
        """Run projected gradient descent from ``s0`` (default: zeros)."""
        self.accepts(energy)
        t0 = time.perf_counter()
        B = np.shape(energy.input_layer(x))[0]
        if isinstance(energy, ChecksNudge):
            energy.check_nudge(theta, nudge)
        s = tuple(np.zeros((B, n)) for n in energy.sizes[1:]) if s0 is None else tuple(np.asarray(a, float) for a in s0)
        if isinstance(energy, ChecksState):
            energy.check_state(s, B)
        s = self._project(energy, _clamped(s, nudge))
        s, status, n, residual, message = iterate(lambda s: self.step(energy, theta, x, s, nudge), s,
                                                  self.max_iter, self.tol, "steps")
        if status == "solver_error":
            message += " (reduce step_size)"
        E = np.asarray(energy.energy(s, theta, x))
        if nudge.beta != 0.0:
            E = E + nudge.beta * 0.5 * np.sum((energy.outputs(s) - nudge.target) ** 2, axis=-1)
        return Equilibrium(state=tuple(np.asarray(a) for a in s), energy=E, status=status, n_iter=n, residual=residual, solver=self.name,
                           message=message, info={"residual_kind": "max |s_t - s_(t-1)| (state units)",
                                                  "seconds": time.perf_counter() - t0})

"""Data shared by every energy, minimizer and learning rule: nudges and equilibria.

State is data: minimizers keep nothing between calls; they take a state and return a new one
inside an :class:`Equilibrium`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional

import numpy as np

Status = Literal["converged", "max_iter", "infeasible", "solver_error"]
STATUSES = ("converged", "max_iter", "infeasible", "solver_error")


class PhysgradError(ValueError):
    """Bad input: the message says what is wrong and where (file, line, element, node)."""


class NotSolvedError(RuntimeError):
    """A minimizer did not reach a certified equilibrium (and ``strict=True`` was asked)."""


@dataclass(frozen=True)
class Nudge:
    r"""How the output units are pushed towards a target.

    Two kinds, never both:

    - ``beta`` (real) adds :math:`\beta C(s, y)` with :math:`C = \tfrac12 \sum_o (s_o - y_o)^2`
      to the energy (equilibrium propagation). Physically a conductance ``beta`` (S) from each
      output node to a voltage source at ``y_o`` (V). ``beta < 0`` may make the energy
      non-convex; minimizers check and raise :class:`PhysgradError`.
    - ``clamp`` fixes the outputs to the given values (V) (contrastive and coupled learning).

    Parameters
    ----------
    beta : float
        Nudging strength (S). ``0`` means the free phase.
    target : array, shape ``(n_out,)`` or ``(batch, n_out)``, optional
        ``y``; required when ``beta != 0``.
    clamp : array, shape ``(n_out,)`` or ``(batch, n_out)``, optional
        Values the outputs are clamped to.
    """

    beta: float = 0.0
    target: Optional[np.ndarray] = None
    clamp: Optional[np.ndarray] = None

    def __post_init__(self):
        beta = float(self.beta)
        if not np.isfinite(beta):
            raise PhysgradError(f"nudge beta must be finite, got {self.beta!r}")
        object.__setattr__(self, "beta", beta)
        for name in ("target", "clamp"):
            value = getattr(self, name)
            if value is not None:
                arr = np.asarray(value, dtype=float)
                if not np.all(np.isfinite(arr)):
                    raise PhysgradError(f"nudge {name} contains NaN or inf")
                object.__setattr__(self, name, arr)
        if beta != 0.0 and self.target is None:
            raise PhysgradError("a nudge with beta != 0 needs a target")
        if self.clamp is not None and beta != 0.0:
            raise PhysgradError("a nudge is either a beta-nudge or a clamp, not both")

    @property
    def is_free(self) -> bool:
        """True for the free phase (no nudge, no clamp)."""
        return self.beta == 0.0 and self.clamp is None


FREE = Nudge()


@dataclass(frozen=True)
class Equilibrium:
    """A minimizer's answer.

    Attributes
    ----------
    state : array or tuple of arrays
        The minimizing state ``s`` (node voltages in V for circuits; one array per layer,
        shape ``(batch, n_k)``, for layered networks).
    energy : float or array
        Energy at ``state`` (J per second = W for co-content; ``(batch,)`` for layered models).
    status : {"converged", "max_iter", "infeasible", "solver_error"}
    n_iter : int
        Iterations (sweeps, Newton steps, active-set steps) taken.
    residual : float
        The stopping measure the minimizer used (stated in ``info["residual_kind"]``).
    solver : str
        Name of the minimizer (and backend).
    message : str
        Human-readable reason for the status.
    info : mapping
        Anything else (diode currents, timings, versions).
    """

    state: Any
    energy: Any
    status: Status
    n_iter: int
    residual: float
    solver: str
    message: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    @property
    def converged(self) -> bool:
        return self.status == "converged"

"""The answer every circuit solver returns, in the reduced variables of a
:class:`~physgrad.circuit.reduction.Problem` (assembled into a :class:`~physgrad.circuit.solution.CircuitSolution`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from physgrad.types import Status


@dataclass(frozen=True)
class ReducedSolution:
    """Reduced variables and diode multipliers of one solve.

    Attributes
    ----------
    u : array, shape ``(n_u,)``
        Reduced variables (V).
    lam : array, shape ``(n_rows,)``
        Multipliers of the diode rows ``D u <= d`` = ideal-diode currents (A), ``>= 0``.
    status, n_iter, solver, message, info
        As in :class:`physgrad.types.Equilibrium`.
    active : bool array, shape ``(n_rows,)``, optional
        The diode rows the solver found conducting (its final working set), when it has one; the
        exact gradient differentiates on this set instead of re-detecting it from slacks.
    """

    u: np.ndarray
    lam: np.ndarray
    status: Status
    n_iter: int
    solver: str
    message: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)
    active: Optional[np.ndarray] = None

    @property
    def converged(self) -> bool:
        return self.status == "converged"

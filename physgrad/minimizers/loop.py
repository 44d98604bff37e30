"""The one loop of the iterative layered minimizers: repeat a pure ``step`` until a stop rule holds."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import numpy as np


class Iteration(NamedTuple):
    """Where :func:`iterate` stopped: the state, a status of :class:`physgrad.types.Equilibrium`, the
    iterations taken, the last iteration's largest change (the state's unit) and a message."""

    state: Any
    status: str
    n_iter: int
    residual: float
    message: str


def iterate(step: Callable, s: tuple, max_iter: int, tol: Optional[float], unit: str = "sweeps") -> Iteration:
    """Apply ``s <- step(s)`` up to ``max_iter`` times.

    Stops as ``converged`` when the largest change of any state entry in one iteration is
    ``<= tol`` (or exactly 0: a fixed point), as ``solver_error`` when the state becomes non-finite,
    else ``max_iter`` (which is the intended outcome of a fixed budget, ``tol=None``).

    Returns
    -------
    Iteration
    """
    residual, n = np.inf, 0
    status = "max_iter"
    message = f"ran the fixed budget of {max_iter} {unit}"
    for n in range(1, max_iter + 1):
        new = step(s)
        residual = max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(new, s))
        s = new
        if not np.isfinite(residual):
            return Iteration(s, "solver_error", n, residual, f"state became non-finite after {n} {unit}")
        if (tol is not None and residual <= tol) or residual == 0.0:
            return Iteration(s, "converged", n, residual, f"largest change {residual:.3g} <= tol after {n} {unit}")
    if tol is not None:
        message = f"largest change {residual:.3g} > tol={tol:g} after {max_iter} {unit}"
    return Iteration(s, status, n, residual, message)

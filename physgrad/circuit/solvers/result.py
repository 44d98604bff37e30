"""The low-level answer every circuit minimizer returns (assembled into a CircuitSolution)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from physgrad.types import Status


@dataclass(frozen=True)
class RawSolution:
    """Reduced variables ``u`` (V), diode multipliers ``lam`` (A), status and bookkeeping."""

    u: np.ndarray
    lam: np.ndarray
    status: Status
    n_iter: int
    solver: str
    message: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)

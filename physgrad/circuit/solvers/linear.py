"""Purely linear circuits (no diodes): one sparse solve of ``H u = f``."""
from __future__ import annotations

import numpy as np

from physgrad.types import PhysgradError
from physgrad.circuit.solvers.result import ReducedSolution
from physgrad.circuit.reduction import Problem
from physgrad.circuit.sparse import solve as sparse_solve


def accepts(problem: Problem) -> None:
    if problem.D.shape[0] or problem.S.shape[0]:
        raise PhysgradError("the linear solver handles circuits without diodes; use qp, activeset, coordinate or newton")


def minimize(problem: Problem) -> ReducedSolution:
    """Exact solution by sparse LU (SuperLU) of the reduced Laplacian system."""
    accepts(problem)
    u = sparse_solve(problem.H, problem.f)
    return ReducedSolution(u, np.zeros(0), "converged", 1, "linear", active=np.zeros(0, bool))

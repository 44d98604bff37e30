"""Active-set solver: the fastest exact route for circuits of resistors and ideal diodes.

Starts the primal-dual active-set iteration from "no diode conducts" (or a caller's guess), with
the primal active-set method and a phase-1 LP behind it (see :mod:`physgrad.circuit.solvers.kkt`).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from physgrad.types import PhysgradError
from physgrad.circuit.solvers.kkt import Infeasible, solve_active_set
from physgrad.circuit.solvers.result import ReducedSolution
from physgrad.circuit.reduction import Problem


def accepts(problem: Problem) -> None:
    if problem.S.shape[0]:
        raise PhysgradError("the activeset solver handles ideal diodes only; this circuit has Shockley diodes (use newton)")


def minimize(problem: Problem, active0=None) -> ReducedSolution:
    accepts(problem)
    n = problem.n_u
    try:
        res = solve_active_set(problem.H, problem.f, problem.D, problem.d, active0)
    except Infeasible as exc:
        return ReducedSolution(np.full(n, np.nan), np.zeros(problem.D.shape[0]), "infeasible", 0, "activeset",
                               str(exc), {"infeasible_rows": exc.rows})
    return replace(res, solver=f"activeset[{res.solver}]")

"""Steady state of a circuit: pick a minimizer, run it, assemble and certify the answer.

============  ========================================================  =============================
solver        circuits                                                  method
============  ========================================================  =============================
linear        resistors and sources only                                 sparse LU, exact
activeset     + ideal diodes                                             KKT solves on the active set
qp            + ideal diodes                                             cvxpy (OSQP) + active-set polish
coordinate    + ideal diodes                                             exact (block) coordinate descent
newton        + Shockley (and ideal) diodes                              damped Newton, sparse Hessian
                                                                         (active-set loop over ideal diodes)
auto          linear, activeset or newton as the circuit requires
============  ========================================================  =============================
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Optional, Sequence

import numpy as np

from physgrad.circuit.elements import Circuit
from physgrad.types import FREE, InfeasibleError, NotSolvedError, Nudge, PhysgradError, SingularSystemError
from physgrad.circuit.solvers import activeset, coordinate, linear, newton, qp
from physgrad.circuit.reduction import Problem, build_problem
from physgrad.circuit.solution import CircuitSolution, assemble, infeasible_solution

SOLVERS = ("auto", "linear", "activeset", "qp", "coordinate", "newton")
_MODULES = {"linear": linear, "activeset": activeset, "qp": qp, "coordinate": coordinate, "newton": newton}


def choose_solver(problem: Problem) -> str:
    """The exact route ``auto`` uses: ``newton`` with Shockley diodes, ``activeset`` with ideal ones,
    else ``linear``."""
    if problem.S.shape[0]:
        return "newton"
    if problem.D.shape[0]:
        return "activeset"
    return "linear"


def solve_problem(problem: Problem, solver: str = "auto", **options) -> CircuitSolution:
    """Minimise an already built :class:`Problem` (see :func:`solve`)."""
    if solver not in SOLVERS:
        raise PhysgradError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    name = choose_solver(problem) if solver == "auto" else solver
    module = _MODULES[name]
    module.accepts(problem)
    t0 = time.perf_counter()
    try:
        raw = module.minimize(problem, **options)
    except SingularSystemError as exc:  # exactly singular KKT system
        return infeasible_solution(problem.circuit, name, f"singular KKT system ({exc}): dependent diode constraints, "
                                   "e.g. anti-parallel ideal diodes with zero thresholds both conducting",
                                   status="solver_error")
    seconds = time.perf_counter() - t0
    if problem.dio_shares and raw.status == "converged":
        names = [[problem.circuit.elements[problem.circuit.arrays.dio_pos[k]].name for k in g]
                 for g in problem.dio_shares.values()]
        note = "; ".join(", ".join(g) for g in names)
        raw = replace(raw, message=f"{raw.message}; parallel ideal diodes with equal thresholds ({note}) share "
                                   "their current equally (the ideal model leaves the split undetermined)")
    info = {**raw.info, "seconds": seconds}
    if raw.active is not None:
        info["active"] = raw.active  # bool mask over the problem's diode rows (conducting)
    if raw.status == "infeasible":
        return infeasible_solution(problem.circuit, raw.solver, _infeasible_message(problem, raw), info)
    return assemble(problem, raw.u, raw.lam, status=raw.status, solver=raw.solver, n_iter=raw.n_iter,
                    message=raw.message, info=info)


def solve(
    circuit: Circuit,
    solver: str = "auto",
    *,
    nudge: Nudge = FREE,
    outputs: Optional[Sequence[str]] = None,
    conductances: Optional[np.ndarray] = None,
    strict: bool = True,
    **options,
) -> CircuitSolution:
    """Steady state of ``circuit`` by minimising its total co-content.

    Parameters
    ----------
    circuit : Circuit
    solver : {"auto", "linear", "activeset", "qp", "coordinate", "newton"}
    nudge : Nudge
        ``Nudge(beta, target)`` adds ``beta/2 sum_o (v_o - y_o)^2`` (a conductance ``beta`` (S) from
        each output to a source at its target); ``Nudge(clamp=...)`` clamps the outputs (V).
        Targets default to the circuit's ``.target`` values.
    outputs : node names, optional
        Output nodes of the nudge (default: the circuit's target nodes).
    conductances : (n_resistors,) S, optional
        Replace the resistors' conductances (in the order of ``circuit.resistors``).
    strict : bool
        Raise :class:`NotSolvedError` unless the status is ``converged`` (default). With
        ``strict=False`` the solution carries its status and message instead.
    **options
        Passed to the minimizer (``tol``/``max_sweeps`` for coordinate, ``backend`` for qp,
        ``rtol``/``max_iter`` for newton).

    Returns
    -------
    CircuitSolution

    Raises
    ------
    PhysgradError
        Bad input: floating nodes, loops of voltage sources, a diode the sources hold exactly at its
        threshold (current undetermined), a non-convex negative nudge, an unknown solver, a solver that
        cannot handle the circuit.
    NotSolvedError
        ``strict=True`` and the circuit is infeasible (:class:`InfeasibleError`: diodes the sources force
        beyond their threshold) or the minimizer did not converge.
    """
    if solver not in SOLVERS:
        raise PhysgradError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    try:
        problem = build_problem(circuit, nudge, outputs, conductances)
    except InfeasibleError as exc:
        if strict:
            raise
        return infeasible_solution(circuit, solver, str(exc))
    sol = solve_problem(problem, solver, **options)
    if strict and sol.status != "converged":
        raise NotSolvedError(f"{sol.solver}: {sol.status}: {sol.message}")
    return sol


def _infeasible_message(problem: Problem, raw) -> str:
    rows = raw.info.get("infeasible_rows")
    if rows is None or len(rows) == 0:
        return raw.message
    arr = problem.circuit.arrays
    names = [problem.circuit.elements[arr.dio_pos[problem.dio_rows[r]]].name for r in rows]
    return (
        "infeasible: ideal diode(s) " + ", ".join(names) + " would have to conduct beyond their threshold "
        "(the sources force them forward: infinite current in the ideal model)"
    )

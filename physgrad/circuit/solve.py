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

import inspect
import math
import time
from dataclasses import replace
from typing import Optional, Sequence

import numpy as np

from physgrad.circuit.elements import Circuit
from physgrad.types import (FREE, BadArgumentError, InfeasibleError, NotSolvedError, Nudge, PhysgradError,
                            SingularSystemError, as_float_array)
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


def _check_solver(solver) -> None:
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise PhysgradError(f"unknown solver {solver!r:.60}; choose one of {', '.join(SOLVERS)}")


def check_options(problem: Problem, name: str, options: dict) -> dict:
    """Validate the minimizer ``name``'s keyword options; :class:`PhysgradError` naming the bad one.

    Tolerances (``rtol``, ``tol``) must be finite and > 0; counts (``max_*``) integers >= 1;
    ``backend`` a string; ``u0`` a finite array of shape ``(n_u,)`` (V).
    """
    params = inspect.signature(_MODULES[name].minimize).parameters
    accepted = [k for k, p in list(params.items())[1:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    out = {}
    for key, value in options.items():
        if key not in accepted:
            raise BadArgumentError(f"solver {name!r} takes no option {key!r} (its options: {', '.join(accepted) or 'none'})")
        if key in ("rtol", "tol", "atol"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise PhysgradError(f"option {key} must be a finite number > 0, got {value!r:.60}")
        elif key.startswith("max_"):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise PhysgradError(f"option {key} must be an integer >= 1, got {value!r:.60}")
            value = int(value)
        elif key == "backend" and not isinstance(value, str):
            raise BadArgumentError(f"option backend must be a string, got {value!r:.60}")
        elif key == "u0" and value is not None:
            value = as_float_array(value, "u0 (V)", (problem.n_u,))
        out[key] = value
    return out


def solve_problem(problem: Problem, solver: str = "auto", **options) -> CircuitSolution:
    """Minimise an already built :class:`Problem` (see :func:`solve`)."""
    _check_solver(solver)
    name = choose_solver(problem) if solver == "auto" else solver
    module = _MODULES[name]
    options = check_options(problem, name, options)
    module.accepts(problem)
    t0 = time.perf_counter()
    try:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
            # extreme values (1e308 V, N = 1e-320) overflow inside the minimizers; every non-finite
            # answer ends in a status other than "converged" (energy and residual checks, assemble)
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
        Bad input (every error the circuit API raises for bad input is a ``PhysgradError``:
        :class:`physgrad.types.BadArgumentError` for arguments of the wrong type or shape, which is
        also a ``TypeError``; :class:`physgrad.circuit.NetlistError` for netlists): NaN, inf or
        negative values, unknown options or option values out of range, floating nodes, loops of voltage sources, a diode the sources hold exactly at its
        threshold (current undetermined), a non-convex negative nudge, an unknown solver, a solver that
        cannot handle the circuit.
    NotSolvedError
        ``strict=True`` and the circuit is infeasible (:class:`InfeasibleError`: diodes the sources force
        beyond their threshold) or the minimizer did not converge.
    """
    _check_solver(solver)
    try:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
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

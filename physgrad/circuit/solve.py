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
lcp           any piecewise-linear circuit, controlled sources too       LCP on the diode ports: Lemke /
                                                                         semismooth Newton + exact polish
mna-newton    any circuit (Shockley diodes with controlled sources)      Newton on the MNA equations
auto          linear, activeset or newton as the circuit requires;
              with controlled sources: the co-content routes on the
              equivalent circuit when the circuit is energy-based
              (:mod:`physgrad.circuit.amplifiers`), else lcp or
              mna-newton
============  ========================================================  =============================

Controlled sources (E, F, G, H). An energy-based amplifier circuit (bidirectional amplifiers whose
island weights exist, ports referenced to ground) goes through any co-content solver on its
equivalent circuit; the answer is mapped back and polished on the physical MNA equations. Every
other one is solved on the MNA equations (``lcp``/``mna-newton``). Every answer is certified on the
physical circuit (:func:`physgrad.circuit.mna.certify_mna`); the message states whether it is the
unique steady state (energy-based, or ``M + M^T`` positive definite) or "an equilibrium; others may
exist".
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
from physgrad.circuit.solvers import activeset, coordinate, lcp, linear, mnanewton, newton, qp
from physgrad.circuit.reduction import Problem, build_problem
from physgrad.circuit.solution import CircuitSolution, assemble, infeasible_solution
from physgrad.circuit.amplifiers import IslandAnalysis, analyze
from physgrad.circuit.mna import MNAProblem, assemble_mna, build_mna

SOLVERS = ("auto", "linear", "activeset", "qp", "coordinate", "newton", "lcp", "mna-newton")
MNA_SOLVERS = ("lcp", "mna-newton")
_MODULES = {"linear": linear, "activeset": activeset, "qp": qp, "coordinate": coordinate, "newton": newton,
            "lcp": lcp, "mna-newton": mnanewton}


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


def _singular_hint(problem: Problem) -> str:
    """The likely cause of an exactly singular KKT system, for the message: dependent ideal-diode
    constraints where the circuit has ideal diodes, else the conductance range (max/min over the
    resistors) when it exceeds what double precision resolves (1e15)."""
    arrays = problem.circuit.arrays
    hints = []
    if len(arrays.dio_pos):
        hints.append("dependent diode constraints, e.g. anti-parallel ideal diodes with zero thresholds both "
                     "conducting")
    g = arrays.g[arrays.g > 0]
    if len(g) and g.max() > 1e15 * g.min():
        hints.append(f"the conductances span a factor {g.max() / g.min():.1e} ({g.min():.3g} to {g.max():.3g} S), "
                     "more than double precision resolves (about 1e15)")
    return "; or ".join(hints) or "a node or loop the equations leave undetermined"


def solve_problem(problem: Problem, solver: str = "auto", **options) -> CircuitSolution:
    """Minimise an already built :class:`Problem` (see :func:`solve`)."""
    _check_solver(solver)
    if solver in MNA_SOLVERS:
        raise PhysgradError(f"the {solver} solver works on the MNA equations of a circuit, not on a reduced "
                            "co-content problem: call physgrad.circuit.solve.solve(circuit, solver=...)")
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
        return infeasible_solution(problem.circuit, name, f"singular KKT system ({exc}): {_singular_hint(problem)}",
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
    solver : {"auto", "linear", "activeset", "qp", "coordinate", "newton", "lcp", "mna-newton"}
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
    if isinstance(circuit, Circuit) and circuit.transistors and solver not in ("auto",) + MNA_SOLVERS:
        raise PhysgradError(f"the {solver} solver minimises a co-content, and transistors have none (a transistor "
                            "is not reciprocal); use solver mna-newton, which auto chooses")
    if isinstance(circuit, Circuit) and (circuit.controlled_sources or circuit.transistors or solver in MNA_SOLVERS):
        sol = solve_controlled(circuit, solver, nudge=nudge, outputs=outputs, conductances=conductances, **options)
        if strict and sol.status != "converged":
            if sol.status == "infeasible":
                raise InfeasibleError(f"{sol.solver}: {sol.message}")
            raise NotSolvedError(f"{sol.solver}: {sol.status}: {sol.message}")
        return sol
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


# --- controlled sources ---------------------------------------------------------------------------------
def _uniqueness(analysis: Optional[IslandAnalysis], raw_info: dict, nudge: Nudge = FREE) -> tuple:
    """``(unique, text)``: unique only when certified (energy-based, ``M + M^T`` positive definite, or
    ``M`` a block-triangular P-matrix). A negative nudge may make the co-content non-convex: then only
    the matrix tests count."""
    if nudge.beta < 0:
        pass
    elif analysis is None:
        return True, "the unique steady state (reciprocal circuit: its co-content is strictly convex)"
    elif analysis.energy_based:
        return True, ("the unique steady state (energy-based: it minimises the island-weighted co-content "
                      "sum_I c_I E_I, strictly convex)")
    if raw_info.get("linear"):
        return True, "the unique steady state (a linear circuit: its nonsingular MNA system has one solution)"
    if raw_info.get("m_sym_pd"):
        return True, "the unique steady state (the diode LCP matrix M has M + M^T positive definite)"
    if raw_info.get("p_matrix"):
        return True, ("the unique steady state (the diode LCP matrix M is block triangular with diagonal blocks "
                      "whose symmetric parts are positive definite: a P-matrix)")
    return False, "an equilibrium; others may exist"


def _mna_options(mp: MNAProblem, name: str, options: dict) -> dict:
    module = _MODULES[name]
    params = inspect.signature(module.minimize).parameters
    accepted = [k for k, p in list(params.items())[1:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    out = {}
    for key, value in options.items():
        if key not in accepted:
            raise BadArgumentError(f"solver {name!r} takes no option {key!r} (its options: {', '.join(accepted) or 'none'})")
        if key == "rtol" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                              or value <= 0):
            raise PhysgradError(f"option {key} must be a finite number > 0, got {value!r:.60}")
        if key.startswith("max_") and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise PhysgradError(f"option {key} must be an integer >= 1, got {value!r:.60}")
        if key == "u0" and value is not None:
            value = as_float_array(value, "u0 (V, A)", (mp.size,))
        if key == "active0" and value is not None:
            value = np.asarray(value, bool)
            if value.shape != (mp.m,):
                raise BadArgumentError(f"active0 must be a bool array of shape ({mp.m},)")
        out[key] = value
    return out


def solve_controlled(circuit: Circuit, solver: str = "auto", *, nudge: Nudge = FREE,
                     outputs: Optional[Sequence[str]] = None, conductances: Optional[np.ndarray] = None,
                     **options) -> CircuitSolution:
    """Steady state of a circuit with controlled sources (or any circuit with ``lcp``/``mna-newton``).

    Energy-based amplifier circuits with an equivalent circuit (:mod:`physgrad.circuit.amplifiers`)
    go through ``solver`` (a co-content route; ``auto`` picks as for ordinary circuits) on the
    equivalent circuit, mapped back and polished on the physical MNA equations; the others through
    ``lcp`` (ideal diodes) or ``mna-newton`` (Shockley diodes). A co-content solver named for a
    circuit that is not energy-based raises :class:`PhysgradError` naming the reason and the routes
    that apply. Never raises for a solution that is not converged (the caller's ``strict`` does).
    """
    analysis = (analyze(circuit, outputs if outputs is not None else ())
                if circuit.controlled_sources and not circuit.transistors else None)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
        mp = build_mna(circuit, nudge, outputs, conductances)
    weights = analysis.element_weights() if analysis is not None and analysis.energy_based else None
    notes = [] if analysis is None else [analysis.describe()]
    if circuit.transistors and solver not in ("auto",) + MNA_SOLVERS:
        raise PhysgradError(f"the {solver} solver minimises a co-content, and transistors have none (a transistor "
                            "is not reciprocal); use solver mna-newton, which auto chooses")
    co_content_route = solver not in MNA_SOLVERS and (solver != "auto" or (analysis is not None
                                                                           and analysis.has_equivalent))
    if co_content_route:
        if analysis is None or not analysis.has_equivalent:
            why = analysis.why_not_equivalent if analysis is not None else ""
            raise PhysgradError(f"the {solver} solver minimises a co-content, and this circuit has none it can use "
                                f"({why}); use solver lcp (ideal diodes) or mna-newton (Shockley diodes), which "
                                "auto chooses")
        try:
            sol = _solve_equivalent(circuit, analysis, mp, solver, nudge, outputs, conductances, weights, notes,
                                    options)
        except PhysgradError as exc:  # e.g. a nudge on outputs in islands of different weights
            if solver != "auto" or options:
                raise
            why = str(exc)
        else:
            if sol.status == "converged" or solver != "auto" or options:
                return sol
            why = f"it ended with {sol.status}: {sol.message[:200]}"
        # auto: the co-content route on the equivalent circuit failed; the MNA route takes over
        notes = notes + [f"not solved as the equivalent circuit ({why}); solved on the MNA equations"]
    name = solver if solver in MNA_SOLVERS else ("mna-newton" if mp.nonlinear else "lcp")
    module = _MODULES[name]
    module.accepts(mp)
    options = _mna_options(mp, name, options)
    t0 = time.perf_counter()
    with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
        raw = module.minimize(mp, **options)
    unique, text = _uniqueness(analysis, raw.info, nudge)
    if circuit.transistors:  # no co-content, no uniqueness certificate (latches and flip-flops have several)
        unique, text = False, "an equilibrium (transistors: others may exist)"
    info = {**raw.info, "seconds": time.perf_counter() - t0, "unique": unique}
    if raw.active is not None:
        info["active_ports"] = raw.active
    if analysis is not None:
        info["islands"] = analysis
    if raw.status == "infeasible":
        return infeasible_solution(circuit, raw.solver, raw.message, info)
    message = "; ".join([raw.message] + notes + ([text] if raw.status == "converged" else []))
    return assemble_mna(mp, raw.u, raw.lam, status=raw.status, solver=raw.solver, n_iter=raw.n_iter,
                        message=message, info=info, weights=weights)


def _solve_equivalent(circuit, analysis: IslandAnalysis, mp: MNAProblem, solver, nudge, outputs, conductances,
                      weights, notes, options) -> CircuitSolution:
    eq = analysis.equivalent()
    out_names = list(outputs) if outputs is not None else [t[0] for t in circuit.targets]
    if not nudge.is_free:
        off = [nd for nd in out_names if (analysis.weights[analysis.island[nd]], analysis.scales[analysis.island[nd]])
               != (1.0, 1.0)]
        if off:
            raise PhysgradError(f"output node(s) {', '.join(off)} lie in islands of weight or voltage scale other than "
                                "1 (outputs on both sides of an amplifier): a nudged or clamped phase needs every "
                                "output in the reference island")
    g_eq = None if conductances is None else eq.conductance_scale * as_float_array(conductances, "conductances (S)",
                                                                                   circuit.arrays.g.shape)
    t0 = time.perf_counter()
    sol_w = solve(eq.circuit, solver, nudge=nudge, outputs=outputs, conductances=g_eq, strict=False, **options)
    unique, text = _uniqueness(analysis, {}, FREE)  # the route checked the (nudged) co-content's convexity
    info = {"equivalent": eq, "equivalent_solution": sol_w, "islands": analysis, "unique": unique}
    if sol_w.status == "infeasible":
        return infeasible_solution(circuit, f"{sol_w.solver} (equivalent circuit)", sol_w.message, info)
    v = eq.voltages(sol_w.voltage_dict())
    arr_eq = eq.circuit.arrays
    lam_eq = np.asarray(sol_w.currents)[arr_eq.dio_pos] if len(arr_eq.dio_pos) else np.zeros(0)
    lam_full = lam_eq / eq.diode_scale if lam_eq.size else lam_eq
    W = lam_full[mp.dio_rows] > 0 if mp.m else np.zeros(0, bool)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
        if mp.S.shape[0] == 0:
            x, lam, W, ok, it = lcp.polish_loop(mp, W)
            status = sol_w.status if ok else "solver_error"
            n_iter, how = sol_w.n_iter + it, "exact polish on the physical equations"
            if x is None:
                x, lam = np.full(mp.size, np.nan), np.zeros(mp.m)
        else:
            x0 = np.concatenate([v, np.zeros(mp.size - mp.n)])
            raw = mnanewton.minimize(mp, u0=x0)
            x, lam, W = raw.u, raw.lam, raw.active
            status = sol_w.status if raw.converged else raw.status
            n_iter, how = sol_w.n_iter + raw.n_iter, f"Newton polish on the physical equations ({raw.message})"
    info.update(seconds=time.perf_counter() - t0, active_ports=W)
    message = "; ".join(([sol_w.message] if sol_w.message else []) + [f"solved as the equivalent circuit, {how}"]
                        + notes + ([text] if status == "converged" else []))
    return assemble_mna(mp, x, lam, status=status, solver=f"{sol_w.solver}[equivalent]", n_iter=n_iter,
                        message=message, info=info, weights=weights)

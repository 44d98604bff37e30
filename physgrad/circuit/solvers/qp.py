"""Convex QP with cvxpy, then an exact active-set polish.

The reduced co-content is passed to cvxpy as one ``quad_form(u, psd_wrap(H))`` (one term per
resistor was measured 100-1000x slower to compile). OSQP is the default backend, with its own
polishing off (it prints to stdout); Clarabel at default settings was measured ~2 mV off on unscaled
problems (conductances in S). So whatever the backend returns is only a guess: its active set
(diodes with slack below a tolerance or a positive multiplier) seeds :func:`physgrad.circuit.solvers.kkt.solve_active_set`, which solves the
KKT system exactly and repairs the set if the backend's guess was wrong.
"""
from __future__ import annotations

import time

import numpy as np

from physgrad.types import PhysgradError
from physgrad.circuit.solvers.kkt import Infeasible, solve_active_set
from physgrad.circuit.solvers.result import ReducedSolution
from physgrad.circuit.reduction import Problem

BACKENDS = ("OSQP", "CLARABEL", "SCS")


def accepts(problem: Problem) -> None:
    if problem.S.shape[0]:
        raise PhysgradError("the qp solver handles ideal diodes only; this circuit has Shockley diodes (use newton)")


def minimize(problem: Problem, backend: str = "OSQP", polish: bool = True) -> ReducedSolution:
    """Solve with cvxpy (``backend``) and polish on the detected active set.

    Returns status ``infeasible`` when the backend certifies infeasibility (diodes forced forward).
    """
    import cvxpy as cp  # imported here: it takes ~1.5 s, and only this solver needs it

    accepts(problem)
    backend = backend.upper()
    if backend not in BACKENDS:
        raise PhysgradError(f"unknown QP backend {backend!r}; choose one of {BACKENDS}")
    n = problem.n_u
    u = cp.Variable(n)
    obj = 0.5 * cp.quad_form(u, cp.psd_wrap(problem.H)) - problem.f @ u
    cons = [problem.D @ u <= problem.d] if problem.D.shape[0] else []
    prob = cp.Problem(cp.Minimize(obj), cons)
    opts = {"OSQP": dict(eps_abs=1e-10, eps_rel=1e-10, max_iter=200000, polishing=False),
            "CLARABEL": {}, "SCS": dict(eps=1e-9)}[backend]
    t0 = time.perf_counter()
    try:
        prob.solve(solver=backend, **opts)
    except cp.SolverError as exc:
        return ReducedSolution(np.full(n, np.nan), np.zeros(problem.D.shape[0]), "solver_error", 0,
                           f"qp[{backend}]", f"cvxpy {backend} failed: {exc}")
    t_backend = time.perf_counter() - t0
    info = {"backend": backend, "backend_status": prob.status, "backend_seconds": t_backend,
            "cvxpy_version": cp.__version__}
    if prob.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        return ReducedSolution(np.full(n, np.nan), np.zeros(problem.D.shape[0]), "infeasible", 0,
                           f"qp[{backend}]", "the diode constraints cannot all hold (diodes forced forward)", info)
    if u.value is None:
        return ReducedSolution(np.full(n, np.nan), np.zeros(problem.D.shape[0]), "solver_error", 0, f"qp[{backend}]",
                           f"cvxpy returned status {prob.status}", info)
    u0 = np.asarray(u.value, float)
    lam0 = np.asarray(cons[0].dual_value, float) if cons else np.zeros(0)
    info["backend_voltage_u"] = u0
    if not polish:
        status = "converged" if prob.status == cp.OPTIMAL else "solver_error"
        return ReducedSolution(u0, np.maximum(lam0, 0), status, 1, f"qp[{backend}]", prob.status, info)
    slack = problem.d - problem.D @ u0 if cons else np.zeros(0)
    scale = max(1.0, float(np.max(np.abs(problem.d), initial=0.0)))
    W0 = (slack < 1e-7 * scale) | (lam0 > 1e-9 * max(1e-30, float(np.max(np.abs(lam0), initial=0.0))))
    try:
        res = solve_active_set(problem.H, problem.f, problem.D, problem.d, W0)
    except Infeasible as exc:
        return ReducedSolution(np.full(n, np.nan), np.zeros(problem.D.shape[0]), "infeasible", 0, f"qp[{backend}]",
                           str(exc), {**info, "infeasible_rows": exc.rows})
    info["polish"] = res.solver
    status = "converged" if res.converged else "max_iter"
    return ReducedSolution(res.u, res.lam, status, res.n_iter, f"qp[{backend}]+polish", res.message, info,
                           active=res.active)

r"""Damped Newton on the smooth, strictly convex co-content of circuits with Shockley diodes
(and, through an active-set loop, ideal diodes too).

Minimises :math:`E(u) = \tfrac12 u^T H u - f^T u + \sum_k J_k(S_k u + e_k)` where
:math:`J_k(v) = IS (N v_t \,\mathrm{expm1}(v/(N v_t)) - v) + g_{min} v^2 / 2` is the diode's
co-content. Gradient ``H u - f + S^T I(v)`` (the KCL residual, A), Hessian
``H + S^T diag(I'(v)) S`` (S, sparse, factorised by SuperLU). Steps are damped by backtracking on
``E`` (Armijo), accepting a step that lowers the KCL residual when ``E``'s decrease is below
round-off. The start is the ideal-diode solution (every diode at ``v <= 0``, where ``E`` is finite
whatever the emission coefficient), so near-ideal diodes (``N <= 1e-3``) cannot overflow at the
start. Stops when the KCL residual is below ``rtol`` times the problem's current scale.

``scipy.optimize.minimize`` was measured to fail on this problem (Newton-CG reporting success 12 mV
off, overflow, stalls), hence this solver.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from physgrad.circuit.solvers.kkt import Infeasible, eliminate, multipliers, pdas_step, solve_active_set
from physgrad.circuit.solvers.result import ReducedSolution
from physgrad.circuit.reduction import Problem
from physgrad.circuit.diode import shockley_co_content, shockley_current, shockley_slope
from physgrad.circuit.sparse import solve as sparse_solve
from physgrad.types import SingularSystemError


def accepts(problem: Problem) -> None:
    """Newton handles any circuit of this reduced form (linear, Shockley and ideal diodes)."""


def _params(problem):
    a = problem.circuit.arrays
    return a.shk_IS, a.shk_N, a.shk_vt, a.shk_gmin


def energy(problem: Problem, u: np.ndarray) -> float:
    """Reduced co-content ``E(u)`` (W); ``inf`` where an exponential overflows."""
    vd = problem.S @ u + problem.e
    with np.errstate(over="ignore", invalid="ignore"):
        val = problem.quadratic_energy(u) + float(np.sum(shockley_co_content(vd, *_params(problem))))
    return val if np.isfinite(val) else np.inf


def gradient(problem: Problem, u: np.ndarray) -> np.ndarray:
    vd = problem.S @ u + problem.e
    return problem.H @ u - problem.f + problem.S.T @ shockley_current(vd, *_params(problem))


def _start(problem: Problem) -> np.ndarray:
    """Every Shockley diode replaced by an ideal one (vth = 0) plus its gmin, ideal diodes kept.

    All Shockley diode voltages are then <= 0, where the co-content is finite for any N.
    """
    gmin = _params(problem)[3]
    H0 = (problem.H + problem.S.T @ sp.diags(gmin) @ problem.S).tocsr()
    f0 = problem.f - problem.S.T @ (gmin * problem.e)
    rows = np.diff(problem.S.tocsr().indptr) > 0
    D = sp.vstack([problem.S[rows], problem.D]).tocsr()
    d = np.concatenate([-problem.e[rows], problem.d])
    try:
        return solve_active_set(H0, f0, D, d).u
    except (Infeasible, SingularSystemError):
        return sparse_solve(H0, f0)


def _newton(problem: Problem, T, t0, u, rtol: float, max_iter: int):
    """Damped Newton on ``E(T z + t0)`` from ``u`` (projected onto the affine set).

    Returns ``(u, status, iterations, message)``; the residual is the reduced KCL ``T^T grad E``.
    """
    IS, N, vt, gmin = _params(problem)
    counts = np.maximum(np.asarray(T.sum(axis=0)).ravel(), 1.0)
    z = (T.T @ (u - t0)) / counts
    u = T @ z + t0
    E = energy(problem, u)
    if not np.isfinite(E):
        return u, "solver_error", 0, "co-content overflows at the start point"
    n = problem.n_u
    i_scale = max(float(np.max(np.abs(problem.f), initial=0.0)),
                  float(np.max(np.abs(problem.H.diagonal()), initial=0.0)) if n else 0.0, 1e-30)
    res = np.inf
    for it in range(1, max_iter + 1):
        vd = problem.S @ u + problem.e
        i_d = shockley_current(vd, IS, N, vt, gmin)
        g = T.T @ (problem.H @ u - problem.f + problem.S.T @ i_d)
        res = float(np.max(np.abs(g), initial=0.0))
        scale = max(i_scale, float(np.max(np.abs(i_d), initial=0.0)))
        if res <= rtol * scale:
            return u, "converged", it - 1, f"KCL residual {res:.2e} A"
        K = T.T @ (problem.H + problem.S.T @ sp.diags(shockley_slope(vd, IS, N, vt, gmin)) @ problem.S) @ T
        dz = sparse_solve(K, -g)
        slope = float(g @ dz)
        t = 1.0
        while t > 1e-30:
            trial = u + t * (T @ dz)
            E_trial = energy(problem, trial)
            if E_trial <= E + 1e-4 * t * slope:
                break
            if np.isfinite(E_trial) and abs(E_trial - E) <= 1e-14 * max(1.0, abs(E)):
                # Round-off regime: accept if the KCL residual falls.
                if np.max(np.abs(T.T @ gradient(problem, trial))) < res:
                    break
            t *= 0.5
        else:
            return u, "max_iter", it, f"line search failed at residual {res:.2e} A"
        u, E = trial, E_trial
    return u, "max_iter", max_iter, f"{max_iter} iterations, residual {res:.2e} A"


def minimize(problem: Problem, *, rtol: float = 1e-13, max_iter: int = 500, max_outer: int = 50,
             u0=None) -> ReducedSolution:
    """Newton; with ideal diodes, inside a primal-dual active-set loop over them.

    For a working set ``W`` of conducting ideal diodes the constraints ``D_W u = d_W`` are
    eliminated (``u = T z + t0``, :func:`physgrad.circuit.solvers.kkt.eliminate`) and Newton runs
    on the smooth problem in ``z``; the diode currents follow from Kirchhoff's law, and ``W`` is
    updated as in :func:`physgrad.circuit.solvers.kkt.pdas` until currents are >= 0 and the
    blocking diodes' constraints hold.
    """
    accepts(problem)
    n = problem.n_u
    m = problem.D.shape[0]
    IS, N, vt, gmin = _params(problem)
    fixed = np.diff(problem.S.tocsr().indptr) == 0
    if np.any(fixed):
        i_fixed = shockley_current(problem.e[fixed], IS[fixed], N[fixed], vt[fixed], gmin[fixed])
        if not np.all(np.isfinite(i_fixed)):
            return ReducedSolution(np.full(n, np.nan), np.zeros(m), "infeasible", 0, "newton",
                               "a diode whose voltage the sources fix carries a current that overflows float64")
    u = _start(problem) if u0 is None else np.asarray(u0, float)
    if m == 0:
        u, status, it, msg = _newton(problem, sp.identity(n, format="csr"), np.zeros(n), u, rtol, max_iter)
        return ReducedSolution(u, np.zeros(0), status, it, "newton", msg, active=np.zeros(0, bool))
    if not np.all(problem.d - problem.D @ u >= -1e-9 * max(1.0, float(np.max(np.abs(problem.d))))):
        return ReducedSolution(np.full(n, np.nan), np.zeros(m), "infeasible", 0, "newton",
                           "the ideal diodes' constraints cannot all hold (diodes forced forward)")
    v_scale = max(1.0, float(np.max(np.abs(problem.d))))
    W = problem.d - problem.D @ u <= 1e-12 * v_scale
    total, seen = 0, set()
    for _ in range(max_outer):
        el = eliminate(problem.D, problem.d, W, n)
        if el is None:
            return ReducedSolution(u, np.zeros(m), "solver_error", total, "newton",
                               "dependent ideal-diode constraints in the working set")
        u, status, it, msg = _newton(problem, el[0], el[1], u, rtol, max_iter)
        total += it
        if status != "converged":
            return ReducedSolution(u, np.zeros(m), status, total, "newton", msg)
        r = -gradient(problem, u)  # = D_W^T lam at a KKT point
        lam = multipliers(problem.D, problem.d, W, r, el[2])
        i_scale = max(float(np.max(np.abs(r), initial=0.0)), float(np.max(np.abs(problem.f), initial=0.0)), 1e-30)
        slack = problem.d - problem.D @ u
        tol_v, tol_i = 1e-11 * v_scale, 1e-11 * i_scale
        ok, newW = pdas_step(W, lam, slack, tol_i, tol_v)
        if ok:
            return ReducedSolution(u, np.where(W, np.maximum(lam, 0.0), 0.0), "converged", total, "newton",
                                   f"{msg}; {int(W.sum())} ideal diodes conduct", active=W)
        W = newW
        if W.tobytes() in seen:
            break
        seen.add(W.tobytes())
    return ReducedSolution(u, np.zeros(m), "max_iter", total, "newton", "the ideal-diode active set did not settle")

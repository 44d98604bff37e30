r"""Damped Newton on the smooth, strictly convex co-content of circuits with Shockley diodes.

Minimises :math:`E(u) = \tfrac12 u^T H u - f^T u + \sum_k J_k(S_k u + e_k)` where
:math:`J_k(v) = IS (N v_t \,\mathrm{expm1}(v/(N v_t)) - v) + g_{min} v^2 / 2` is the diode's
co-content. Gradient ``H u - f + S^T I(v)`` (the KCL residual, A), Hessian
``H + S^T diag(I'(v)) S`` (S, sparse, factorised by SuperLU). Steps are damped by backtracking on
``E`` (Armijo), accepting a step that lowers the KCL residual when ``E``'s decrease is below
round-off. The start is the ideal-diode solution (every diode at ``v <= 0``, where ``E`` is finite
whatever the emission coefficient), so near-ideal diodes (``N <= 1e-3``) cannot overflow at the
start. Stops when the KCL residual is below ``rtol`` times the problem's current scale.

``scipy.optimize.minimize`` failed on this problem (DESIGN.md section 3), hence this solver.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from physgrad.equilibrium import PhysgradError
from physgrad.minimizers.activeset import Infeasible, solve_active_set
from physgrad.minimizers.raw import RawSolution
from physgrad.reduction import Problem
from physgrad.solution import shockley_co_content, shockley_current, shockley_slope
from physgrad.sparse import solve as sparse_solve


def accepts(problem: Problem) -> None:
    if problem.D.shape[0]:
        raise PhysgradError(
            "the newton solver handles Shockley diodes; this circuit also has ideal diodes "
            "(no solver mixes both: model them all as Shockley or all as ideal)"
        )


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
    """Ideal-diode (vth = 0) solution with the diodes' gmin: all diode voltages <= 0."""
    gmin = _params(problem)[3]
    H0 = (problem.H + problem.S.T @ sp.diags(gmin) @ problem.S).tocsr()
    f0 = problem.f - problem.S.T @ (gmin * problem.e)
    rows = np.diff(problem.S.tocsr().indptr) > 0
    try:
        return solve_active_set(H0, f0, problem.S[rows], -problem.e[rows]).u
    except (Infeasible, RuntimeError):
        return sparse_solve(H0, f0)


def minimize(problem: Problem, *, rtol: float = 1e-13, max_iter: int = 500, u0=None) -> RawSolution:
    accepts(problem)
    n = problem.n_u
    IS, N, vt, gmin = _params(problem)
    fixed = np.diff(problem.S.tocsr().indptr) == 0
    if np.any(fixed):
        i_fixed = shockley_current(problem.e[fixed], IS[fixed], N[fixed], vt[fixed], gmin[fixed])
        if not np.all(np.isfinite(i_fixed)):
            return RawSolution(np.full(n, np.nan), np.zeros(0), "infeasible", 0, "newton",
                               "a diode whose voltage the sources fix carries a current that overflows float64")
    u = _start(problem) if u0 is None else np.asarray(u0, float)
    E = energy(problem, u)
    if not np.isfinite(E):
        return RawSolution(u, np.zeros(0), "solver_error", 0, "newton", "co-content overflows at the start point")
    i_scale = max(float(np.max(np.abs(problem.f), initial=0.0)),
                  float(np.max(np.abs(problem.H.diagonal()), initial=0.0)) if n else 0.0, 1e-30)
    for it in range(1, max_iter + 1):
        vd = problem.S @ u + problem.e
        i_d = shockley_current(vd, IS, N, vt, gmin)
        g = problem.H @ u - problem.f + problem.S.T @ i_d
        res = float(np.max(np.abs(g), initial=0.0))
        scale = max(i_scale, float(np.max(np.abs(i_d), initial=0.0)))
        if res <= rtol * scale:
            return RawSolution(u, np.zeros(0), "converged", it - 1, "newton", f"KCL residual {res:.2e} A")
        K = (problem.H + problem.S.T @ sp.diags(shockley_slope(vd, IS, N, vt, gmin)) @ problem.S).tocsc()
        du = sparse_solve(K, -g)
        slope = float(g @ du)
        t = 1.0
        while t > 1e-30:
            trial = u + t * du
            E_trial = energy(problem, trial)
            if E_trial <= E + 1e-4 * t * slope:
                break
            if np.isfinite(E_trial) and abs(E_trial - E) <= 1e-14 * max(1.0, abs(E)):
                # Round-off regime: accept if the KCL residual falls.
                if np.max(np.abs(gradient(problem, trial))) < res:
                    break
            t *= 0.5
        else:
            return RawSolution(u, np.zeros(0), "max_iter", it, "newton", f"line search failed at residual {res:.2e} A")
        u, E = trial, E_trial
    return RawSolution(u, np.zeros(0), "max_iter", max_iter, "newton", f"{max_iter} iterations, residual {res:.2e} A")

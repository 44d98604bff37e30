r"""Exact solution of the diode QP on its active set.

Problem: :math:`\min_u \tfrac12 u^T H u - f^T u` s.t. :math:`D u \le d` with ``H`` symmetric
positive definite (S), ``D`` sparse rows of ideal diodes.

On a known active set ``W`` the KKT conditions are one sparse linear system

.. math:: \begin{pmatrix} H & D_W^T \\ D_W & 0 \end{pmatrix}
          \begin{pmatrix} u \\ \lambda_W \end{pmatrix} = \begin{pmatrix} f \\ d_W \end{pmatrix},

whose solution is exact to round-off. The active set is found by the primal-dual active-set
iteration of Hintermueller, Ito and Kunisch (finite convergence for M-matrix ``H`` and diodes to
fixed nodes, i.e. bounds; typically 2-5 linear solves), with a primal active-set method
(Nocedal & Wright, Alg. 16.3) as the fallback that converges for every strictly convex QP.
Infeasibility (diodes forced forward) is detected by a phase-1 linear program that names the
diodes that cannot all be respected.

References
----------
M. Hintermueller, K. Ito, K. Kunisch, SIAM J. Optim. 13 (2002) 865-888.
J. Nocedal, S. Wright, Numerical Optimization, 2nd ed., Sec. 16.5.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from physgrad.circuit.graphs import offset_forest
from physgrad.circuit.solvers.result import ReducedSolution
from physgrad.circuit.sparse import solve as sparse_solve
from physgrad.circuit.solvers.strategy import new_stats, solve_spd
from physgrad.types import InfeasibleError, NotSolvedError, SingularSystemError


class Infeasible(InfeasibleError):
    """The constraints ``D u <= d`` have no solution; ``rows`` are the violated ones in phase 1."""

    def __init__(self, rows, violation):
        super().__init__(f"infeasible diode constraints: rows {list(rows)}")
        self.rows = np.asarray(rows)
        self.violation = float(violation)


def kkt_direct(H: sp.spmatrix, f: np.ndarray, D: sp.csr_matrix, d: np.ndarray, W: np.ndarray):
    """Solve the KKT system on active rows ``W`` (bool mask). Returns ``(u, lam)`` with ``lam`` full length.

    Raises :class:`SingularSystemError` when the system is singular (e.g. parallel diodes with
    equal thresholds both conducting: their current split is not unique).
    """
    n = H.shape[0]
    idx = np.flatnonzero(W)
    lam = np.zeros(D.shape[0])
    if idx.size == 0:
        return sparse_solve(H, f), lam
    DW = D[idx]
    K = sp.bmat([[H, DW.T], [DW, None]], format="csc")
    rhs = np.concatenate([f, d[idx]])
    sol = sparse_solve(K, rhs)
    lam[idx] = sol[n:]
    return sol[:n], lam


# Above this many variables the KKT systems of the PDAS iteration are solved by eliminating the
# active constraints and solving the reduced SPD system by the route of
# :mod:`physgrad.circuit.solvers.strategy` (sparse LDL^T on chains, ladders and meshes; bounded
# Jacobi-CG that falls back to LDL^T on expander-like random graphs).
ITERATIVE_MIN_SIZE = 3000


def eliminate(D: sp.csr_matrix, d: np.ndarray, W: np.ndarray, n: int, tol: float = 1e-12):
    """Parametrise ``{u : D_W u = d_W}`` as ``u = T z + t0`` (``T`` sparse 0/1).

    Active rows are bounds (one variable: fixes it) or ties between two variables with opposite
    unit coefficients (``u_a - u_c = d``). Rows implied by the others (a tie closing a loop of ties,
    a second bound on a tied group) are dropped when consistent to ``tol`` (V): a loop of
    conducting ideal diodes fixes the voltages but not how current circulates, and the dropped rows
    carry none. Returns ``(T, t0, kept)`` with ``kept`` a bool mask over ``flatnonzero(W)``, or
    ``None`` when the rows contradict each other or have other coefficients.
    """
    rows = np.flatnonzero(W)
    DW = D[rows].tocsr()
    nnz = np.diff(DW.indptr)
    if np.any(nnz > 2) or np.any(np.abs(DW.data) != 1.0):
        return None
    ties = np.flatnonzero(nnz == 2)
    a = DW.indices[DW.indptr[ties]]
    c = DW.indices[DW.indptr[ties] + 1]
    sa = DW.data[DW.indptr[ties]]
    if np.any(DW.data[DW.indptr[ties] + 1] != -sa):
        return None
    diff = d[rows[ties]] * sa  # sa (u_a - u_c) = d  ->  u_a - u_c = d sa
    forest = offset_forest(n, a, c, diff)
    off = forest.offset
    roots, label = np.unique(forest.root, return_inverse=True)
    n_comp = roots.size
    kept = np.ones(rows.size, bool)
    loops = ~forest.tree
    if np.any(loops):
        gap = np.abs(off[a[loops]] - off[c[loops]] - diff[loops])
        if np.any(gap > tol * max(1.0, float(np.max(np.abs(diff))))):
            return None
        kept[ties[loops]] = False
    fixed_val = np.full(n_comp, np.nan)
    for r in np.flatnonzero(nnz == 1):
        k = DW.indices[DW.indptr[r]]
        value = d[rows[r]] / DW.data[DW.indptr[r]] - off[k]
        comp = label[k]
        if np.isnan(fixed_val[comp]):
            fixed_val[comp] = value
        elif abs(fixed_val[comp] - value) <= tol * max(1.0, abs(value)):
            kept[r] = False
        else:
            return None
    free_comp = np.flatnonzero(np.isnan(fixed_val))
    col = np.full(n_comp, -1)
    col[free_comp] = np.arange(free_comp.size)
    keep = col[label] >= 0
    T = sp.csr_matrix((np.ones(int(keep.sum())), (np.flatnonzero(keep), col[label][keep])), shape=(n, free_comp.size))
    t0 = off + np.where(keep, 0.0, np.nan_to_num(fixed_val[label]))
    return T, t0, kept


def kkt_reduced(H, f, D, d, W, u0=None, iterative=None, stats=None):
    """KKT solve by eliminating the active rows (dependent ones too, see :func:`eliminate`).

    The reduced system ``T^T H T z = T^T (f - H t0)`` is SPD; it is solved by the route
    :func:`physgrad.circuit.solvers.strategy.solve_spd` picks by cost (``iterative=None``), or by
    Jacobi-preconditioned CG with a bounded iteration count and a direct fallback (``True``), or by
    sparse LDL^T (``False``); ``stats`` (a dict of :func:`~physgrad.circuit.solvers.strategy.new_stats`)
    counts the routes taken. Multipliers of the kept rows follow from stationarity by least squares
    (exact: the kept rows are independent); dropped rows carry 0. Returns ``(u, lam)`` or ``None``
    (rows not eliminable).
    """
    el = eliminate(D, d, W, H.shape[0])
    if el is None:
        return None
    T, t0, kept = el
    A = (T.T @ H @ T).tocsr()
    b = T.T @ (f - H @ t0)
    if A.shape[0] == 0:
        z = np.zeros(0)
    else:
        z0 = None if u0 is None else (T.T @ u0) / np.maximum(np.asarray(T.sum(axis=0)).ravel(), 1)
        method = "auto" if iterative is None else ("iterative" if iterative else "direct")
        z = solve_spd(A, b, z0, method=method, stats=stats)
    u = T @ z + t0
    return u, multipliers(D, d, W, f - H @ u, kept)


def multipliers(D, d, W, r, kept=None) -> np.ndarray:
    """Multipliers ``lam`` (A) with ``D_W^T lam_W = r`` (``r = f - grad``, the KCL residual without
    diodes) on the tight rows ``W``.

    Independent rows: the unique least-squares solution. Dependent rows (loops of conducting
    diodes, found by :func:`eliminate`): the currents are not unique, and a non-negative solution
    is found by NNLS on the variables those rows touch (dropping rows could force a negative one).
    """
    lam = np.zeros(D.shape[0])
    idx = np.flatnonzero(W)
    if idx.size == 0:
        return lam
    if kept is None:
        el = eliminate(D, d, W, D.shape[1])
        kept = np.ones(idx.size, bool) if el is None else el[2]
    DW = D[idx].tocsr()
    if kept.all():
        lam[idx] = sparse_solve(DW @ DW.T, DW @ r)
        return lam
    touched = np.unique(DW.indices)
    from scipy.optimize import nnls  # here: scipy.optimize costs ~0.3 s of import, rarely needed

    lam[idx] = nnls(DW[:, touched].T.toarray(), r[touched], maxiter=50 * idx.size)[0]
    return lam


def kkt_auto(H, f, D, d, W, u0=None, stats=None):
    """The KKT solve used by the active-set iterations: elimination + the cost-chosen SPD route
    (:mod:`physgrad.circuit.solvers.strategy`) on large problems, the direct KKT factorisation
    otherwise, elimination (dropping dependent rows) where that is singular."""
    if H.shape[0] >= ITERATIVE_MIN_SIZE:
        sol = kkt_reduced(H, f, D, d, W, u0, stats=stats)
        if sol is not None:
            return sol
    try:
        return kkt_direct(H, f, D, d, W)
    except SingularSystemError:
        sol = kkt_reduced(H, f, D, d, W, stats=stats)
        if sol is None:
            raise
        return sol


def _tolerances(H, f, d):
    """Absolute tolerances: voltage (V) and current (A), ~1e-11 relative to the problem's scale."""
    v_scale = max(1.0, float(np.max(np.abs(d), initial=0.0)))
    h_scale = float(np.max(np.abs(H.diagonal()), initial=1.0)) if H.shape[0] else 1.0
    i_scale = max(float(np.max(np.abs(f), initial=0.0)), h_scale * v_scale)
    return 1e-11 * v_scale, 1e-11 * i_scale


def pdas_step(W, lam, slack, tol_i: float, tol_v: float):
    """One primal-dual active-set update: ``(optimal, next W)``.

    Optimal when every active row carries ``lam >= -tol_i`` (A) and every inactive one has
    ``slack >= -tol_v`` (V); the next set keeps the active rows with ``lam > -tol_i`` and adds the
    inactive rows that are violated (Hintermueller, Ito & Kunisch 2002).
    """
    optimal = bool(np.all(lam[W] >= -tol_i) and np.all(slack[~W] >= -tol_v))
    return optimal, np.where(W, lam > -tol_i, slack < -tol_v)


def pdas(H, f, D, d, W0=None, max_iter=50) -> ReducedSolution:
    """Primal-dual active-set iteration from the initial active set ``W0`` (bool mask).

    ``info["linear_solves"]`` counts the routes of the large reduced solves (direct, iterative,
    iterative_fallbacks, cg_iterations; :func:`~physgrad.circuit.solvers.strategy.new_stats`).
    """
    m = D.shape[0]
    W = np.zeros(m, bool) if W0 is None else np.asarray(W0, bool).copy()
    tol_v, tol_i = _tolerances(H, f, d)
    seen = set()
    u = None
    stats = new_stats()
    for it in range(1, max_iter + 1):
        u, lam = kkt_auto(H, f, D, d, W, u, stats)
        slack = d - D @ u
        ok, newW = pdas_step(W, lam, slack, tol_i, tol_v)
        if ok:
            lam = np.where(W, np.maximum(lam, 0.0), 0.0)
            return ReducedSolution(u, lam, "converged", it, "pdas", "converged", {"linear_solves": stats}, active=W)
        key = newW.tobytes()
        if key in seen:
            break
        seen.add(key)
        W = newW
    return ReducedSolution(u, lam, "max_iter", it, "pdas", "active-set iteration cycled", {"linear_solves": stats},
                           active=W)


def feasible_point(D, d, n):
    """A point with ``D u <= d`` (phase-1 LP); raises :class:`Infeasible` naming violated rows."""
    m = D.shape[0]
    if m == 0:
        return np.zeros(n)
    # min sum t  s.t.  D u - t <= d, t >= 0, u free
    A = sp.hstack([D, -sp.eye(m)], format="csr")
    cost = np.concatenate([np.zeros(n), np.ones(m)])
    bounds = [(None, None)] * n + [(0, None)] * m
    from scipy.optimize import linprog  # here: ~0.3 s of import, only for this rare case

    res = linprog(cost, A_ub=A, b_ub=d, bounds=bounds, method="highs")
    if res.status != 0:
        raise NotSolvedError(f"phase-1 LP failed: {res.message}")
    t = res.x[n:]
    tol_v, _ = _tolerances(sp.eye(1), np.zeros(1), d)
    if res.fun > tol_v * max(1, m):
        raise Infeasible(np.flatnonzero(t > tol_v), res.fun)
    u = res.x[:n]
    # Remove the residual infeasibility (<= tol) by solving from the strict interior direction later.
    return u


def primal_active_set(H, f, D, d, u0, max_iter=None) -> ReducedSolution:
    """Nocedal & Wright Alg. 16.3 from a feasible ``u0``; converges for strictly convex QPs."""
    m = D.shape[0]
    n = H.shape[0]
    max_iter = max_iter or 10 * (m + n) + 50
    tol_v, tol_i = _tolerances(H, f, d)
    u = np.asarray(u0, float).copy()
    slack = d - D @ u
    W = np.abs(slack) <= tol_v
    Hcsc = H.tocsc()
    for it in range(1, max_iter + 1):
        # Step p solving the equality QP on W: min 1/2 (u+p)'H(u+p) - f'(u+p), D_W p = 0
        g = Hcsc @ u - f
        p, lam = kkt_auto(H, -g, D, np.zeros(m), W)
        if np.max(np.abs(p), initial=0.0) <= tol_v:
            if np.all(lam[W] >= -tol_i):
                lam = np.where(W, np.maximum(lam, 0.0), 0.0)
                return ReducedSolution(u, lam, "converged", it, "primal-active-set", "converged", active=W)
            j = np.flatnonzero(W)[np.argmin(lam[W])]
            W[j] = False
            continue
        Dp = D @ p
        slack = d - D @ u
        blocking = (~W) & (Dp > 0)
        alpha, j = 1.0, -1
        if np.any(blocking):
            ratios = np.where(blocking, np.maximum(slack, 0.0) / np.where(blocking, Dp, 1.0), np.inf)
            j = int(np.argmin(ratios))
            if ratios[j] < 1.0:
                alpha = float(ratios[j])
            else:
                j = -1
        u = u + alpha * p
        if j >= 0:
            W[j] = True
    return ReducedSolution(u, np.zeros(m), "max_iter", max_iter, "primal-active-set", "iteration limit", active=W)


def solve_active_set(H, f, D, d, W0=None) -> ReducedSolution:
    """PDAS from ``W0``; on failure, phase-1 LP then the primal active-set method.

    Raises :class:`Infeasible` when no point satisfies every diode constraint.
    """
    if D.shape[0] == 0:
        u, lam = kkt_direct(H, f, D, d, np.zeros(0, bool))
        return ReducedSolution(u, lam, "converged", 1, "linear", "converged", active=np.zeros(0, bool))
    try:
        res = pdas(H, f, D, d, W0)
    except SingularSystemError:  # singular KKT system on a guessed set
        res = None
    if res is not None and res.converged:
        return res
    u0 = feasible_point(D, d, H.shape[0])
    res2 = primal_active_set(H, f, D, d, u0)
    n_prev = 0 if res is None else res.n_iter
    return ReducedSolution(res2.u, res2.lam, res2.status, n_prev + res2.n_iter, "pdas+primal-active-set",
                           res2.message, active=res2.active)


def dense_qp(H: np.ndarray, f: np.ndarray, D: np.ndarray, d: np.ndarray, *, W0=None, cache=None,
             tol=None, max_iter: int = 50):
    """Exact minimiser of a small dense strictly convex QP ``1/2 x'Hx - f'x, D x <= d``.

    Dense primal-dual active-set iteration from ``W0`` (default empty); if it cycles, enumeration
    of the active sets (the KKT point is unique), exact and affordable for the few constraints of a
    block. ``cache`` (a dict) keeps the inverse KKT matrix of each active set met, so repeated
    solves with the same ``H, D, d`` and a new ``f`` (block coordinate descent) cost a few small
    matrix-vector products. Returns ``(x, lam, W)``; raises :class:`Infeasible` when no active set
    satisfies the KKT conditions. ``tol = (tol_v, tol_i)`` overrides the default tolerances.
    """
    m, n = D.shape
    tol_v, tol_i = _tolerances(np.atleast_2d(H), f, d) if tol is None else tol
    cache = {} if cache is None else cache

    def kkt(W):
        key = W.tobytes()
        if key not in cache:
            idx = np.flatnonzero(W)
            K = np.block([[H, D[idx].T], [D[idx], np.zeros((idx.size, idx.size))]])
            cache[key] = (idx, np.linalg.inv(K))
        idx, Kinv = cache[key]
        sol = Kinv @ np.concatenate([f, d[idx]])
        lam = np.zeros(m)
        lam[idx] = sol[n:]
        return sol[:n], lam

    W = np.zeros(m, bool) if W0 is None else np.asarray(W0, bool).copy()
    seen = set()
    for _ in range(max_iter):
        try:
            x, lam = kkt(W)
        except np.linalg.LinAlgError:
            break
        ok, newW = pdas_step(W, lam, d - D @ x, tol_i, tol_v)
        if ok:
            return x, np.maximum(lam, 0.0), W
        W = newW
        if W.tobytes() in seen:
            break
        seen.add(W.tobytes())
    if m > 16:
        res = solve_active_set(sp.csr_matrix(H), f, sp.csr_matrix(D), d)
        return res.u, res.lam, res.active
    for k in range(1 << m):
        W = np.array([(k >> i) & 1 for i in range(m)], bool)
        try:
            x, lam = kkt(W)
        except np.linalg.LinAlgError:
            continue
        if np.all(lam >= -tol_i) and np.all(d - D @ x >= -tol_v):
            return x, np.maximum(lam, 0.0), W
    raise Infeasible(np.arange(m), np.inf)

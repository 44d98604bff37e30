r"""The ideal-diode LCP of a piecewise-linear circuit with controlled sources.

Problem (:mod:`physgrad.circuit.mna`): find diode currents :math:`\lambda \ge 0` (A) with slacks
:math:`w = M\lambda + q \ge 0` (V) and :math:`\lambda \cdot w = 0`, where
:math:`M = N^\top K^{-1} N` and :math:`q = d - N^\top K^{-1} b` come from the linear MNA system
``K x + N lambda = b``. Three stages:

1. **Lemke's method** (complementary pivoting with the covering vector ``e = 1`` and the
   lexicographic rule, so that it never cycles on degenerate problems) on the dense ``(M, q)`` for
   up to :data:`LEMKE_MAX_PORTS` ports. It finds a solution whenever ``M`` is copositive-plus (every
   reciprocal circuit: ``M`` is positive semidefinite; energy-based amplifier circuits) and ends on
   a secondary ray otherwise (the LCP may still have solutions: stage 2 is then tried).
2. **Semismooth Newton** on the sparse MNA form for more ports (or after a ray): the
   Fischer-Burmeister function :math:`\phi(a, b) = a + b - \sqrt{a^2 + b^2}` turns complementarity
   into equations, ``K x + N lambda - b = 0``, :math:`\phi(\lambda, \sigma w) = 0` (``sigma`` a
   conductance scale, S), solved by Newton with an Armijo line search on the squared residual
   (De Luca, Facchinei & Kanzow 1996), warm-started from a given active set.
3. **Exact active-set polish**: with ``W`` the conducting diodes found, one sparse solve of

   .. math:: \begin{pmatrix} K & N_W \\ N_W^\top & 0\end{pmatrix}
             \begin{pmatrix} x \\ \lambda_W\end{pmatrix} = \begin{pmatrix} b \\ d_W \end{pmatrix}

   gives the answer to round-off; the signs (``lambda_W >= 0``, ``w >= 0`` off ``W``) are checked
   and ``W`` corrected (primal-dual active-set updates) until they hold. The front door certifies
   the result (:func:`physgrad.circuit.mna.certify_mna`).

Uniqueness is not this module's claim: ``info["m_sym_pd"]`` says whether ``M + M^T`` is positive
definite and ``info["p_matrix"]`` whether ``M`` is a P-matrix by that test or block-triangular
structure (either way the LCP has exactly one solution), computed when the dense ``M`` is formed.

References
----------
C. E. Lemke, "Bimatrix equilibrium points and mathematical programming", Management Sci. 11 (1965).
R. W. Cottle, J.-S. Pang, R. E. Stone, "The Linear Complementarity Problem", SIAM (2009), ch. 4.
T. De Luca, F. Facchinei, C. Kanzow, "A semismooth equation approach to the solution of nonlinear
complementarity problems", Math. Program. 75 (1996).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from physgrad.circuit.mna import MNAProblem, factor_general
from physgrad.circuit.solvers.result import ReducedSolution
from physgrad.types import PhysgradError, SingularSystemError

LEMKE_MAX_PORTS = 300
"""Most diode ports for which the dense LCP (``m`` solves with ``K``) and Lemke's method are used."""
METHODS = ("auto", "lemke", "newton")


def accepts(mp: MNAProblem) -> None:
    if mp.nonlinear:
        raise PhysgradError("the lcp solver handles resistors, sources, controlled sources and ideal diodes; this "
                            "circuit has Shockley diodes or transistors (use mna-newton)")


# --- Lemke -----------------------------------------------------------------------------------------
def lemke(M: np.ndarray, q: np.ndarray, max_pivots: int | None = None):
    """Lemke's complementary pivoting method with the lexicographic rule.

    Returns ``(z, status, pivots)``: ``z >= 0`` with ``w = M z + q >= 0``, ``z . w = 0`` and status
    ``"solution"``, or ``z = None`` with status ``"ray"`` (secondary ray: no solution when ``M`` is
    copositive-plus) or ``"max_pivots"``. Dense, ``O(m^2)`` per pivot.
    """
    M = np.asarray(M, float)
    q = np.asarray(q, float)
    m = q.size
    if m == 0 or np.all(q >= 0):
        return np.zeros(m), "solution", 0
    max_pivots = max_pivots or 50 * m + 100
    scale = max(1.0, float(np.max(np.abs(M), initial=0.0)))
    tol = 1e-12 * scale
    Z0 = 2 * m

    def column(j):
        if j < m:
            c = np.zeros(m)
            c[j] = 1.0
            return c
        if j < 2 * m:
            return -M[:, j - m]
        return -np.ones(m)

    basis = np.arange(m)
    Binv = np.eye(m)
    b = q.copy()

    def pivot(r, a, entering):
        nonlocal b, Binv
        pr = a[r]
        row_b = b[r] / pr
        row_B = Binv[r] / pr
        b = b - a * row_b
        Binv = Binv - np.outer(a, row_B)
        b[r] = row_b
        Binv[r] = row_B
        leaving = basis[r]
        basis[r] = entering
        return leaving

    def lexmin(rows, a):
        """Row of ``rows`` whose ``[b, Binv] / a`` is lexicographically smallest."""
        rows = np.asarray(rows)
        keys = np.column_stack([b[rows], Binv[rows]]) / a[rows, None]
        for k in range(keys.shape[1]):
            col = keys[:, k]
            best = col.min()
            keep = col <= best + 1e-12 * max(1.0, abs(best))
            rows, keys = rows[keep], keys[keep]
            if rows.size == 1:
                break
        return int(rows[0])

    # z0 enters; the row of the lexicographically smallest [q, I] leaves (the most negative q; among
    # ties the last row), so that every other row minus it stays lexicographically positive
    a = Binv @ column(Z0)
    r = lexmin(np.flatnonzero(q <= q.min() + 1e-12 * max(1.0, abs(q.min()))), np.ones(m)) if m > 1 else 0
    leaving = pivot(r, a, Z0)
    for it in range(1, max_pivots + 1):
        entering = leaving + m if leaving < m else leaving - m
        if it % 50 == 0:  # refresh the inverse against drift
            Binv = np.linalg.inv(np.column_stack([column(j) for j in basis]))
            b = Binv @ q
        a = Binv @ column(entering)
        cand = np.flatnonzero(a > tol)
        if cand.size == 0:
            return None, "ray", it
        ratios = b[cand] / a[cand]
        tmin = ratios.min()
        ties = cand[ratios <= tmin + 1e-12 * max(1.0, abs(tmin))]
        z0_row = np.flatnonzero(basis[ties] == Z0)
        r = int(ties[z0_row[0]]) if z0_row.size else (int(ties[0]) if ties.size == 1 else lexmin(ties, a))
        leaving = pivot(r, a, entering)
        if leaving == Z0:
            z = np.zeros(m)
            zrows = (basis >= m) & (basis < 2 * m)
            z[basis[zrows] - m] = np.maximum(b[zrows], 0.0)
            return z, "solution", it
    return None, "max_pivots", max_pivots


# --- the sparse forms ------------------------------------------------------------------------------
def conductance_scale(mp: MNAProblem) -> float:
    """``sigma`` (S): the median nonzero diagonal entry of ``K``'s node rows (1 S if none)."""
    dg = np.abs(mp.K.diagonal()[:mp.n])
    dg = dg[dg > 0]
    return float(np.median(dg)) if dg.size else 1.0


def polish(mp: MNAProblem, W: np.ndarray):
    """Exact ``(x, lam)`` with the diodes ``W`` conducting (``w_W = 0``); ``None`` if singular."""
    idx = np.flatnonzero(W)
    lam = np.zeros(mp.m)
    if idx.size == 0:
        return mp.lu.solve(mp.b), lam
    NW = mp.N[:, idx]
    KKT = sp.bmat([[mp.K, NW], [NW.T, None]], format="csc")
    rhs = np.concatenate([mp.b, mp.d[idx]])
    try:
        sol = factor_general(KKT).solve(rhs)
    except SingularSystemError:
        if KKT.shape[0] > 3000:
            return None
        sol, *_ = np.linalg.lstsq(KKT.toarray(), rhs, rcond=None)
        if np.max(np.abs(KKT @ sol - rhs), initial=0.0) > 1e-9 * max(1.0, float(np.max(np.abs(rhs)))):
            return None
    lam[idx] = sol[mp.size:]
    return sol[:mp.size], lam


def tolerances(mp: MNAProblem, x, lam):
    """``(tol_v, tol_i)``: 1e-11 of the voltage scale (V) and of the largest node scale (A)."""
    v_scale = max(mp.voltage_scale, float(np.max(np.abs(x[:mp.n]), initial=0.0)))
    i_scale = max(float(np.max(mp.node_scales(x, lam), initial=0.0)), 1e-30)
    return 1e-11 * v_scale, 1e-11 * i_scale


def polish_loop(mp: MNAProblem, W: np.ndarray, max_iter: int = 50):
    """Polish on ``W`` and correct ``W`` by primal-dual active-set updates until the signs hold.

    Returns ``(x, lam, W, ok, iterations)``.
    """
    W = np.asarray(W, bool).copy()
    seen = set()
    x = lam = None
    for it in range(1, max_iter + 1):
        sol = polish(mp, W)
        if sol is None:
            return x, lam, W, False, it
        x, lam = sol
        w = mp.slack(x)
        tol_v, tol_i = tolerances(mp, x, lam)
        if np.all(lam[W] >= -tol_i) and np.all(w[~W] >= -tol_v):
            return x, np.where(W, np.maximum(lam, 0.0), 0.0), W, True, it
        seen.add(W.tobytes())
        W = np.where(W, lam > -tol_i, w < -tol_v)
        if W.tobytes() in seen:  # the updates cycle
            return x, lam, W, False, it
    return x, lam, W, False, max_iter


def fischer_burmeister(a, b):
    """``phi(a, b) = a + b - sqrt(a^2 + b^2)`` and its partial derivatives (a generalized Jacobian
    element ``1 - 1/sqrt(2)`` at the kink ``a = b = 0``)."""
    r = np.hypot(a, b)
    safe = r > 0
    da = np.where(safe, 1.0 - a / np.where(safe, r, 1.0), 1.0 - 1.0 / np.sqrt(2.0))
    db = np.where(safe, 1.0 - b / np.where(safe, r, 1.0), 1.0 - 1.0 / np.sqrt(2.0))
    return a + b - r, da, db


def semismooth_newton(mp: MNAProblem, x0, lam0, *, max_iter: int = 100, rtol: float = 1e-13):
    """Fischer-Burmeister semismooth Newton on ``(x, lam)`` (see the module docstring).

    Returns ``(x, lam, converged, iterations)``.
    """
    sigma = conductance_scale(mp)
    n, size, m = mp.n, mp.size, mp.m
    row_scale = np.ones(size + m)
    row_scale[n:size] = sigma  # branch rows (V) to A

    def F(x, lam):
        r = mp.K @ x + mp.N @ lam - mp.b
        phi, da, db = fischer_burmeister(lam, sigma * mp.slack(x))
        return np.concatenate([r, phi]) * row_scale, da, db

    x, lam = np.asarray(x0, float).copy(), np.maximum(np.asarray(lam0, float), 0.0)
    Fz, da, db = F(x, lam)
    theta = 0.5 * float(Fz @ Fz)
    scale = max(float(np.max(np.abs(mp.b) * row_scale[:size], initial=0.0)), 1e-30)
    for it in range(1, max_iter + 1):
        if np.max(np.abs(Fz), initial=0.0) <= rtol * scale * 10:
            return x, lam, True, it - 1
        J = sp.bmat([[mp.K, mp.N], [-(sp.diags(sigma * db) @ mp.N.T), sp.diags(da)]], format="csc")
        J = sp.diags(row_scale) @ J
        try:
            dz = factor_general(J).solve(-Fz)
        except SingularSystemError:
            return x, lam, False, it
        slope = -2.0 * theta
        t = 1.0
        while t > 1e-12:
            xt, lt = x + t * dz[:size], lam + t * dz[size:]
            Ft, da_t, db_t = F(xt, lt)
            th = 0.5 * float(Ft @ Ft)
            if th <= theta + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            return x, lam, False, it
        x, lam, Fz, da, db, theta = xt, lt, Ft, da_t, db_t, th
    return x, lam, bool(np.max(np.abs(Fz), initial=0.0) <= rtol * scale * 10), max_iter


def block_p_matrix(M: np.ndarray) -> bool:
    """Whether ``M`` is, up to a symmetric permutation, block triangular with diagonal blocks whose
    symmetric parts are positive definite: then every principal minor is a product of positive ones,
    ``M`` is a P-matrix and the LCP has exactly one solution for every ``q`` (Cottle, Pang & Stone,
    Thm. 3.3.7). The blocks are the strongly connected components of ``M``'s coupling graph (entries
    above 1e-12 of ``max |M|``); feed-forward amplifier stages give triangular ``M``."""
    from scipy.sparse.csgraph import connected_components

    if M.size == 0:
        return True
    big = np.abs(M) > 1e-12 * float(np.max(np.abs(M)))
    _, label = connected_components(sp.csr_matrix(big), directed=True, connection="strong")
    return all(m_sym_pd(M[np.ix_(label == k, label == k)]) for k in np.unique(label))


def m_sym_pd(M: np.ndarray) -> bool:
    """Whether ``M + M^T`` is positive definite (relative margin 1e-12): the LCP then has exactly
    one solution for every ``q`` (``M`` is then a P-matrix)."""
    if M.size == 0:
        return True
    ev = np.linalg.eigvalsh(M + M.T)
    return bool(ev.min() > 1e-12 * max(1.0, float(np.max(np.abs(ev)))))


def minimize(mp: MNAProblem, *, method: str = "auto", max_iter: int = 100, active0=None) -> ReducedSolution:
    """Solve the LCP of ``mp`` (see the module docstring).

    Parameters
    ----------
    method : {"auto", "lemke", "newton"}
        ``auto``: Lemke up to :data:`LEMKE_MAX_PORTS` ports (then Newton if it ends on a ray),
        semismooth Newton above.
    max_iter : int
        Newton iterations.
    active0 : bool array (m,), optional
        Warm start: the diodes first assumed conducting (Newton starts from their polish).

    Returns
    -------
    ReducedSolution
        ``u`` = the MNA unknowns ``x`` (V, A), ``lam`` = the ports' currents (A), ``active`` = the
        conducting ports; ``info``: ``m_sym_pd`` (bool or None), ``stage``.
    """
    accepts(mp)
    if method not in METHODS:
        raise PhysgradError(f"lcp method must be one of {', '.join(METHODS)}, got {method!r}")
    m = mp.m
    info: dict = {"m_sym_pd": None}
    if m == 0:
        x = mp.lu.solve(mp.b)
        return ReducedSolution(x, np.zeros(0), "converged", 1, "lcp[linear]", "linear circuit (no ideal diodes)",
                               {"m_sym_pd": True, "linear": True}, np.zeros(0, bool))
    tried, notes, total = [], [], 0
    if method == "lemke" or (method == "auto" and m <= LEMKE_MAX_PORTS):
        M, q = mp.lcp()
        info["m_sym_pd"] = m_sym_pd(M)
        info["p_matrix"] = info["m_sym_pd"] or block_p_matrix(M)
        z, status, piv = lemke(M, q)
        total += piv
        tried.append("lemke")
        if z is not None:
            x, lam, W, ok, it = polish_loop(mp, z > 0)
            total += it
            if ok:
                return ReducedSolution(x, lam, "converged", total, "lcp[lemke]",
                                       f"Lemke: {piv} pivots, exact polish on {int(W.sum())} conducting diodes",
                                       info, W)
            notes.append("the polish of Lemke's answer did not settle")
        else:
            notes.append(f"Lemke ended on a {'secondary ray' if status == 'ray' else 'pivot limit'} after {piv} pivots")
            if status == "ray" and _psd(M):
                return ReducedSolution(np.full(mp.size, np.nan), np.zeros(m), "infeasible", total, "lcp[lemke]",
                                       "no steady state: the diode LCP is infeasible (M is positive semidefinite and "
                                       "Lemke's method ended on a secondary ray): ideal diodes forced beyond their "
                                       "thresholds", info)
        if method == "lemke":
            return ReducedSolution(np.full(mp.size, np.nan), np.zeros(m), "solver_error", total, "lcp[lemke]",
                                   "; ".join(notes), info)
    W0 = np.zeros(m, bool) if active0 is None else np.asarray(active0, bool)
    start = polish(mp, W0)
    x0, lam0 = start if start is not None else (mp.lu.solve(mp.b), np.zeros(m))
    x, lam, conv, it = semismooth_newton(mp, x0, lam0, max_iter=max_iter)
    total += it
    sigma = conductance_scale(mp)
    x, lam, W, ok, it2 = polish_loop(mp, lam > sigma * mp.slack(x))
    total += it2
    if ok:
        return ReducedSolution(x, lam, "converged", total, "lcp[newton]",
                               "; ".join(notes + [f"semismooth Newton: {it} iterations, exact polish on "
                                                  f"{int(W.sum())} conducting diodes"]), info, W)
    notes.append(f"semismooth Newton {'converged' if conv else 'stalled'} after {it} iterations but the active-set "
                 "polish did not settle")
    return ReducedSolution(x if x is not None else np.full(mp.size, np.nan), lam if lam is not None else np.zeros(m),
                           "solver_error", total, "lcp", "; ".join(notes), info)


def _psd(M: np.ndarray) -> bool:
    ev = np.linalg.eigvalsh(0.5 * (M + M.T))
    return bool(ev.min() >= -1e-12 * max(1.0, float(np.max(np.abs(ev)))))

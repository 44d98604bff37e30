r"""Damped Newton for a whole batch of Shockley circuits of one topology: one symbolic factorization.

The samples ``b = 1..B`` share the reduced conductance matrix ``H`` (S, ``(n, n)``), the diode rows
``S`` (``(n_shk, n)``) and the diode law, and differ in their sources: forcing currents ``f_b``
(A) and diode offsets ``e_b`` (V). Each minimises

.. math:: E_b(u) = \tfrac12 u^\top H u - f_b^\top u + c_b + \sum_k J_k(S_k u + e_{b,k})

(:mod:`physgrad.circuit.solvers.newton` without ideal diodes). Every Newton matrix
:math:`K_b = H + S^\top \mathrm{diag}(I'(v_b)) S` has the pattern of ``H`` plus ``S^T S``: its fill-reducing
ordering and elimination tree are computed once (:class:`physgrad.circuit.solvers.ldl.SymbolicLDL`),
the values of all ``K_b`` are assembled by one sparse product (``H``'s values plus the slopes through
a fixed scatter map: no per-sample Python), and each sample-iteration is one numeric LDL^T
refactorization, the whole batch in one compiled call.

The iteration is :func:`physgrad.circuit.solvers.newton._newton`'s, sample by sample in lockstep:
the same KCL stopping rule per node (:func:`physgrad.circuit.reduction.node_current_scales`), the
same polishing, the same junction limiting (:func:`physgrad.circuit.solvers.newton.junction_step_length`),
the same Armijo line search with its round-off acceptance. A sample that stops unconverged is
returned with its status (``max_iter``, ``solver_error``) and message; the others are unaffected.

Factorizations measured (1k-node ``indep`` Shockley network of ``benchmarks/graphs.py``, n = 1,000
reduced variables, one Newton matrix, CPU seconds per numeric factorization + solve, one BLAS
thread, shared 2-core machine): see ``reports/benchmarks/graphs.md``; the compiled LDL^T with the
symbolic analysis reused is the default.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Callable

import numpy as np
import scipy.sparse as sp
from scipy.linalg import LinAlgError, cho_factor, cho_solve

from physgrad.circuit.diode import (pnjlim, shockley_co_content, shockley_current, shockley_slope,
                                    shockley_vcrit)
from physgrad.circuit.solvers.ldl import SymbolicLDL

EPS = np.finfo(float).eps
# Absolute floor of the per-node KCL tolerance (A): only a node whose every incident current is
# below this is judged absolutely (1e-14 A diodes are 1e16 times larger).
TINY_CURRENT = 1e-30
# Polishing once the residual is within tolerance: full Newton steps until |du| <= POLISH_RTOL |u| +
# POLISH_ATOL (dimensionless, V), at most POLISH_STEPS of them.
POLISH_RTOL = 1e-13
POLISH_ATOL = 1e-300
POLISH_STEPS = 3
# A full Newton step below SETTLED_RTOL |u| (dimensionless) followed by a residual within tolerance
# ends the iteration without another factorisation (the next correction would be ~1e-14 |u|).
SETTLED_RTOL = 1e-7


def junction_step_length(vd: np.ndarray, dvd: np.ndarray, nvt: np.ndarray, vcrit: np.ndarray) -> np.ndarray:
    """SPICE's junction limiting as one length for a whole Newton step (the one rule of every Newton route).

    Parameters
    ----------
    vd : (..., n_shk) V
        Diode voltages at the iterate.
    dvd : (..., n_shk) V
        Their change along the full Newton step.
    nvt, vcrit : (n_shk,) V
        ``N vt`` and :func:`physgrad.circuit.diode.shockley_vcrit` of each diode.

    Returns
    -------
    (...) dimensionless
        ``t = min_k (pnjlim(v_k + dv_k, v_k) - v_k) / dv_k`` over the diodes that
        :func:`physgrad.circuit.diode.pnjlim` limits, clipped to ``[1e-6, 1]``; 1 where none is limited.
        One factor on the whole step keeps it a descent direction.
    """
    vd = np.asarray(vd, float)
    dvd = np.asarray(dvd, float)
    vnew = vd + dvd
    lim = pnjlim(vnew, vd, nvt, vcrit)
    limited = (lim != vnew) & (np.abs(dvd) > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(limited, np.clip((lim - vd) / np.where(limited, dvd, 1.0), 0.0, 1.0), 1.0)
    t = np.minimum(1.0, np.min(r, axis=-1, initial=1.0))
    return np.where(np.any(limited, axis=-1), np.maximum(t, 1e-6), 1.0)


@dataclass(frozen=True, eq=False)
class BatchProblem:
    """The reduced problems of a batch (shared matrices, per-sample vectors).

    Attributes
    ----------
    H : csr (n, n) S, shared; F : (B, n) A; S : csr (n_shk, n); E : (B, n_shk) V; const : (B,) W
    params : ``(IS, N, vt, gmin)`` arrays (n_shk,) of the diode law
    scales : callable ``(rows, U, I, SL) -> (len(rows), n)`` A: each node's current scale (the KCL
        tolerance's unit) of samples ``rows`` at ``U`` with diode currents ``I`` and slopes ``SL``
    voltage_scale : (B,) V (for the round-off acceptance of line-search steps)
    """

    H: sp.csr_matrix
    F: np.ndarray
    S: sp.csr_matrix
    E: np.ndarray
    const: np.ndarray
    params: tuple
    scales: Callable
    voltage_scale: np.ndarray


class NewtonPattern:
    """What stays fixed for every Newton matrix ``H + S^T diag(sl) S`` of one topology: the symbolic
    LDL^T, the value vector of ``H`` and the slopes' scatter map. Build once per ``(H pattern, S)``;
    :meth:`values` takes a new ``H`` with the same pattern."""

    def __init__(self, H: sp.spmatrix, S: sp.spmatrix):
        self.n = H.shape[0]
        self._HS = (H, S)  # the analysis runs on first use (a small one-sample solve may never need it)

    @cached_property
    def symbolic(self) -> SymbolicLDL:
        H, S = self._HS
        Hb = sp.csr_matrix(H, dtype=float, copy=True)
        Hb.data[:] = 1.0  # structure only (explicit zeros of H stay in the pattern)
        Sb = self._S
        Sb = Sb.copy()
        Sb.data[:] = 1.0
        return SymbolicLDL(Hb + Sb.T @ Sb + sp.identity(Hb.shape[0], format="csr"))

    @cached_property
    def _S(self) -> sp.csr_matrix:
        S = sp.csr_matrix(self._HS[1], dtype=float, copy=True)
        S.eliminate_zeros()
        return S

    @cached_property
    def smap(self) -> sp.csr_matrix:
        """``(nnz, n_shk)``: slopes to the values of ``S^T diag(sl) S``."""
        return self.symbolic.scatter_map(self._S).T.tocsr()

    def h_values(self, H: sp.spmatrix) -> np.ndarray:
        return self.symbolic.gather(H)

    def values(self, hv: np.ndarray, SL: np.ndarray) -> np.ndarray:
        """Value vectors ``(B, nnz)`` of ``K_b`` for slopes ``SL`` (B, n_shk) S."""
        return hv[None, :] + np.asarray((self.smap @ SL.T).T)


# Problems with at most this many entries in H or S work on dense copies of them inside the iteration:
# scipy.sparse's per-call overhead (~20-50 us) dominated small circuits (a 100-node grid: ~1 ms of
# Python per Newton iteration).
DENSE_MAX = 250_000


def _apply(A, X):
    """``A`` applied to each row of ``X`` (``A`` dense or sparse)."""
    if isinstance(A, np.ndarray):
        return X @ A.T
    return np.asarray((A @ X.T).T)


def energies(bp: BatchProblem, rows, U) -> np.ndarray:
    """``E_b(u_b)`` (W) of samples ``rows``; ``inf`` where an exponential overflows."""
    VD = _apply(bp.S, U) + bp.E[rows]
    with np.errstate(over="ignore", invalid="ignore"):
        val = (0.5 * np.sum(U * _apply(bp.H, U), axis=1) - np.sum(bp.F[rows] * U, axis=1) + bp.const[rows]
               + np.sum(shockley_co_content(VD, *bp.params), axis=1))
    return np.where(np.isfinite(val), val, np.inf)


def _noise(bp: BatchProblem, rows, U, absH=None) -> np.ndarray:
    """Round-off of :func:`energies` (W): ``16 eps`` times the sum of its terms' magnitudes (``absH``:
    ``|H|`` if already at hand)."""
    VD = _apply(bp.S, U) + bp.E[rows]
    if absH is None:
        absH = np.abs(bp.H) if isinstance(bp.H, np.ndarray) else abs(bp.H)
    with np.errstate(over="ignore", invalid="ignore"):
        AU = np.abs(U)
        mag = (0.5 * np.sum(AU * _apply(absH, AU), axis=1) + np.sum(np.abs(bp.F[rows]) * AU, axis=1)
               + np.abs(bp.const[rows]) + np.sum(np.abs(shockley_co_content(VD, *bp.params)), axis=1))
    return np.where(np.isfinite(mag), 16 * EPS * mag, np.inf)


def residuals(bp: BatchProblem, rows, U, rtol: float):
    """``(G, ratio, VD, SL)``: KCL residuals (A), ``max_j |g_j| / tol_j`` per sample, diode voltages
    (V) and slopes (S) at ``U`` (rows ``rows`` of the batch)."""
    VD = _apply(bp.S, U) + bp.E[rows]
    with np.errstate(over="ignore", invalid="ignore"):
        I = shockley_current(VD, *bp.params)
        SL = shockley_slope(VD, *bp.params)
        G = _apply(bp.H, U) - bp.F[rows] + _apply(bp.S.T, I)
        tol = rtol * bp.scales(rows, U, I, SL) + TINY_CURRENT
        ratio = np.max(np.abs(G) / tol, axis=1, initial=0.0)
    ratio = np.where(np.isfinite(ratio), ratio, np.inf)
    return G, ratio, VD, SL


@dataclass
class BatchNewtonResult:
    """``u`` (B, n) V; ``status`` (B,) str; ``n_iter`` (B,) int; ``messages`` (B,) str;
    ``factorizations``: numeric LDL^T refactorizations over the batch (sample-iterations)."""

    u: np.ndarray
    status: np.ndarray
    n_iter: np.ndarray
    messages: np.ndarray
    factorizations: int


def forward_at(bp: BatchProblem, U: np.ndarray) -> np.ndarray:
    """Samples (B,) bool whose start ``U`` puts a diode the iteration can move (a nonzero row of ``S``)
    beyond SPICE's critical voltage (:func:`physgrad.circuit.diode.shockley_vcrit`): e.g. a source
    across a diode and a load. Newton from there can need hundreds of limited steps (a 17 V rectifier:
    200 without converging); the ideal-diode start of the one-sample route takes 8."""
    live = np.diff(bp.S.indptr) > 0
    if not np.any(live):
        return np.zeros(U.shape[0], bool)
    VD = _apply(bp.S, U) + bp.E
    return np.any(VD[:, live] > shockley_vcrit(*bp.params[:3])[live], axis=1)


def newton_batch(bp: BatchProblem, pattern: NewtonPattern, U0: np.ndarray, *, rtol: float = 1e-13,
                 max_iter: int = 200, skip=None, lockstep: bool = False,
                 dense_factor: bool = False) -> BatchNewtonResult:
    """Damped, junction-limited Newton from ``U0`` (B, n) for every sample (module docstring).
    Samples where ``skip`` (B,) bool is set are not iterated (status ``solver_error``, message
    ``"not started"``). A batch of one (``physgrad solve``) runs :func:`_newton_one`, the same
    iteration without the batch's bookkeeping (the same arithmetic, the same answer bit for bit);
    ``lockstep=True`` forces the batch loop (for tests); ``dense_factor`` lets a batch of one of at most
    :data:`DENSE_FACTOR_MAX` variables factorize densely (see :func:`_newton_one`)."""
    B, n = U0.shape
    IS, N, vt, gmin = bp.params
    nvt = N * vt
    vcrit = shockley_vcrit(IS, N, vt)
    Hs = bp.H
    if n * max(n, bp.S.shape[0]) <= DENSE_MAX:
        bp = replace(bp, H=bp.H.toarray(), S=bp.S.toarray())
    U = np.array(U0, dtype=float, copy=True)
    if B == 1 and not lockstep and (skip is None or not skip[0]):
        return _newton_one(bp, pattern, Hs, U, rtol, max_iter, nvt, vcrit, dense_factor)
    hv = pattern.h_values(Hs)
    allr = np.arange(B)
    status = np.full(B, "", dtype=object)
    messages = np.full(B, "", dtype=object)
    n_iter = np.zeros(B, np.int64)
    E = energies(bp, allr, U)
    bad = ~np.isfinite(E)
    status[bad] = "solver_error"
    messages[bad] = "co-content overflows at the start point"
    if skip is not None:
        status[skip] = "solver_error"
        messages[skip] = "not started (a diode beyond its critical voltage at the start)"
    G, ratio, VD, SL = residuals(bp, allr, U, rtol)
    polish = np.zeros(B, np.int64)
    settled = np.full(B, n == 0)  # no free node (the sources set every voltage): nothing to iterate
    n_fact = 0

    def finish(rows, st, it, msg):
        status[rows] = st
        n_iter[rows] = it
        for k in rows:  # the message names each sample's KCL residual (A)
            messages[k] = f"KCL residual {float(np.max(np.abs(G[k]), initial=0.0)):.2e} A; {msg}"

    for it in range(1, max_iter + 1):
        run = np.flatnonzero(status == "")
        if not run.size:
            break
        done = (ratio[run] <= 1.0) & settled[run]
        finish(run[done], "converged", it - 1, f"within rtol={rtol:g} of every node's own current scale")
        run = run[~done]
        if not run.size:
            break
        KV = pattern.values(hv, SL[run])
        dU, ok = pattern.symbolic.factor_solve(KV, -G[run])
        n_fact += len(run)
        finish(run[~ok], "solver_error", it - 1, "singular Newton matrix")
        run, dU = run[ok], dU[ok]
        Ur = U[run]
        small = np.all(np.abs(dU) <= 8 * EPS * np.abs(Ur), axis=1)
        finish(run[small], "converged", it - 1, "the Newton correction is below round-off")
        run, dU, Ur = run[~small], dU[~small], Ur[~small]
        within = ratio[run] <= 1.0
        # --- polishing (within tolerance): full steps while they stay within tolerance
        if np.any(within):
            w, dw, uw = run[within], dU[within], Ur[within]
            pdone = np.all(np.abs(dw) <= POLISH_RTOL * np.abs(uw) + POLISH_ATOL, axis=1)
            cand = ~pdone & (polish[w] < POLISH_STEPS)
            accept = np.zeros(len(w), bool)
            if np.any(cand):
                c, dc, uc = w[cand], dw[cand], uw[cand]
                Gt, rt, VDt, SLt = residuals(bp, c, uc + dc, rtol)
                okt = rt <= 1.0
                if np.any(okt):
                    a = c[okt]
                    settled[a] = np.all(np.abs(dc[okt]) <= SETTLED_RTOL * np.abs(uc[okt]), axis=1)
                    U[a] = uc[okt] + dc[okt]
                    G[a], ratio[a], VD[a], SL[a] = Gt[okt], rt[okt], VDt[okt], SLt[okt]
                    E[a] = energies(bp, a, U[a])
                    polish[a] += 1
                    accept[np.flatnonzero(cand)[okt]] = True
            finish(w[~accept], "converged", it - 1, f"within rtol={rtol:g} of every node's own current scale")
        # --- damped step with junction limiting and Armijo line search
        ls = ~within
        if not np.any(ls):
            continue
        r, dU, Ur = run[ls], dU[ls], Ur[ls]
        slope = np.sum(G[r] * dU, axis=1)
        t_lim = junction_step_length(VD[r], _apply(bp.S, dU), nvt, vcrit)
        noise = _noise(bp, r, Ur)
        vscale = bp.voltage_scale[r]
        t = np.ones(len(r))
        searching = np.ones(len(r), bool)
        accepted = np.zeros(len(r), bool)
        while True:
            s = np.flatnonzero(searching & (t > 1e-20))
            if not s.size:
                break
            trial = Ur[s] + t[s, None] * dU[s]
            Et = energies(bp, r[s], trial)
            armijo = Et <= E[r[s]] + 1e-4 * t[s] * slope[s]
            take = armijo.copy()
            rnd = (~armijo & (Et <= E[r[s]] + noise[s])
                   & np.all(np.abs(trial - Ur[s]) <= 1e-6 * (np.abs(Ur[s]) + vscale[s, None]), axis=1))
            Gt = ratio_t = VDt = SLt = None
            check = armijo | rnd
            if np.any(check):
                Gt, ratio_t, VDt, SLt = residuals(bp, r[s[check]], trial[check], rtol)
                improve = np.ones(int(check.sum()), bool)
                is_rnd = rnd[check]
                improve[is_rnd] = ratio_t[is_rnd] < ratio[r[s[check]]][is_rnd]
                take[np.flatnonzero(check)] = improve
                ci = np.flatnonzero(check)[improve]
                a = r[s[ci]]
                k = s[ci]
                settled[a] = (t[k] == 1.0) & np.all(np.abs(trial[ci] - Ur[k]) <= SETTLED_RTOL * np.abs(Ur[k]), axis=1)
                U[a] = trial[ci]
                E[a] = Et[ci]
                G[a], ratio[a], VD[a], SL[a] = Gt[improve], ratio_t[improve], VDt[improve], SLt[improve]
                accepted[k] = True
                searching[k] = False
            rest = s[~take]
            tr = t[rest]
            Er = Et[~take]
            jump = (tr > t_lim[rest]) & (~np.isfinite(Er) | (0.5 * tr < t_lim[rest]))
            t[rest] = np.where(jump, t_lim[rest], 0.5 * tr)
        failed = ~accepted
        if np.any(failed):
            fr = r[failed]
            res = np.max(np.abs(G[fr]), axis=1, initial=0.0)
            status[fr] = "max_iter"
            n_iter[fr] = it
            messages[fr] = [f"line search failed at KCL residual {x:.2e} A" for x in res]
    run = np.flatnonzero(status == "")
    if run.size:
        conv = ratio[run] <= 1.0
        finish(run[conv], "converged", max_iter, "within tolerance")
        finish(run[~conv], "max_iter", max_iter, f"{max_iter} iterations")
    return BatchNewtonResult(U, status, n_iter, messages, n_fact)


# A batch of one with at most this many reduced variables may factorize its Newton matrices densely
# (LAPACK Cholesky, ~40 us at n = 100): no symbolic analysis (~1.2 ms of scipy.sparse set-up on the
# 100-node Shockley grid). The caller allows it only where round-off-level differences from the LDL^T
# stay far below 1e-12 V (newton.DENSE_FACTOR_VMAX).
DENSE_FACTOR_MAX = 150


def _dense_newton_step(H: np.ndarray, S: np.ndarray, sl: np.ndarray, g: np.ndarray):
    """``-(H + S^T diag(sl) S)^{-1} g`` by dense Cholesky (shapes ``(1, n)``); ``None`` where the matrix is
    not numerically positive definite or the step not finite (the caller's LDL^T decides then)."""
    with np.errstate(over="ignore", invalid="ignore"):
        K = H + (S.T * sl) @ S
    if not np.all(np.isfinite(K)):
        return None
    try:
        c = cho_factor(K, lower=True, check_finite=False)
    except LinAlgError:
        return None
    d = -cho_solve(c, g, check_finite=False)
    return d[None, :] if np.all(np.isfinite(d)) else None


def _newton_one(bp: BatchProblem, pattern: NewtonPattern, Hs, U: np.ndarray, rtol: float,
                max_iter: int, nvt: np.ndarray, vcrit: np.ndarray, dense_factor: bool = False) -> BatchNewtonResult:
    """:func:`newton_batch`'s iteration for a batch of one (``U`` (1, n) V): the same rules and the same
    array operations on the same (1, ...) arrays, with the control flow on Python scalars instead of
    index sets (~0.3 ms of Python per iteration less at 100 nodes): with the LDL^T the same answer bit
    for bit. With ``dense_factor`` and up to :data:`DENSE_FACTOR_MAX` variables the Newton matrix is
    factorized densely (Cholesky; the LDL^T of ``pattern`` where that fails): the steps then differ from
    the LDL^T's in round-off only (measured: answers within 4.8e-15 relative, 9.2e-14 V below 100 V)."""
    n = U.shape[1]
    dense = dense_factor and isinstance(bp.H, np.ndarray) and n <= DENSE_FACTOR_MAX
    hv = None
    r0 = np.zeros(1, np.int64)
    n_fact = 0
    E = float(energies(bp, r0, U)[0])
    G, ratio, VD, SL = residuals(bp, r0, U, rtol)
    ratio = float(ratio[0])

    def out(status, it, msg, residual_note=True):
        if residual_note:
            msg = f"KCL residual {float(np.max(np.abs(G[0]), initial=0.0)):.2e} A; {msg}"
        return BatchNewtonResult(U, np.array([status], dtype=object), np.array([it], np.int64),
                                 np.array([msg], dtype=object), n_fact)

    if not np.isfinite(E):
        return out("solver_error", 0, "co-content overflows at the start point", residual_note=False)
    within_msg = f"within rtol={rtol:g} of every node's own current scale"
    polish = 0
    settled = n == 0  # no free node (the sources set every voltage): nothing to iterate
    vscale = bp.voltage_scale[0]
    absH = np.abs(bp.H) if isinstance(bp.H, np.ndarray) else abs(bp.H)
    for it in range(1, max_iter + 1):
        if ratio <= 1.0 and settled:
            return out("converged", it - 1, within_msg)
        dU = _dense_newton_step(bp.H, bp.S, SL[0], G[0]) if dense else None
        ok = [True]
        if dU is None:
            if hv is None:
                hv = pattern.h_values(Hs)
            dU, ok = pattern.symbolic.factor_solve(pattern.values(hv, SL), -G)
        n_fact += 1
        if not ok[0]:
            return out("solver_error", it - 1, "singular Newton matrix")
        if np.all(np.abs(dU) <= 8 * EPS * np.abs(U)):
            return out("converged", it - 1, "the Newton correction is below round-off")
        if ratio <= 1.0:  # polishing: full steps while they stay within tolerance
            if not np.all(np.abs(dU) <= POLISH_RTOL * np.abs(U) + POLISH_ATOL) and polish < POLISH_STEPS:
                Gt, rt, VDt, SLt = residuals(bp, r0, U + dU, rtol)
                if rt[0] <= 1.0:
                    settled = bool(np.all(np.abs(dU) <= SETTLED_RTOL * np.abs(U)))
                    U = U + dU
                    G, ratio, VD, SL = Gt, float(rt[0]), VDt, SLt
                    E = None  # (only a line search reads E, and none follows: the residual stays within)
                    polish += 1
                    continue
            return out("converged", it - 1, within_msg)
        # damped step with junction limiting and Armijo line search
        # the limited length and the round-off bound are computed only once a full step fails (most
        # late steps are taken in full); the same values, the same decisions
        slope = float(np.sum(G * dU, axis=1)[0])
        t_lim = noise = None
        t = 1.0
        accepted = False
        while t > 1e-20:
            trial = U + t * dU
            Et = float(energies(bp, r0, trial)[0])
            armijo = Et <= E + 1e-4 * t * slope
            if not armijo and noise is None:
                noise = float(_noise(bp, r0, U, absH)[0])
            rnd = (not armijo and Et <= E + noise
                   and bool(np.all(np.abs(trial - U) <= 1e-6 * (np.abs(U) + vscale))))
            if armijo or rnd:
                Gt, rt, VDt, SLt = residuals(bp, r0, trial, rtol)
                if armijo or rt[0] < ratio:
                    settled = t == 1.0 and bool(np.all(np.abs(trial - U) <= SETTLED_RTOL * np.abs(U)))
                    U, E = trial, Et
                    G, ratio, VD, SL = Gt, float(rt[0]), VDt, SLt
                    accepted = True
                    break
            if t_lim is None:
                t_lim = float(junction_step_length(VD, _apply(bp.S, dU), nvt, vcrit)[0])
            jump = t > t_lim and (not np.isfinite(Et) or 0.5 * t < t_lim)
            t = t_lim if jump else 0.5 * t
        if not accepted:
            res = float(np.max(np.abs(G[0]), initial=0.0))
            return out("max_iter", it, f"line search failed at KCL residual {res:.2e} A", residual_note=False)
    if ratio <= 1.0:
        return out("converged", max_iter, "within tolerance")
    return out("max_iter", max_iter, f"{max_iter} iterations")

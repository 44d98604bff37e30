r"""Many right-hand sides, one factorization: the batched active-set solver.

A batch of samples (and the free, nudged and clamped phases of each) share one matrix: the
reduced conductance matrix :math:`H_0` (S) of the current conductances. What differs per sample and
phase is small: the conducting diodes (rows of ``D u <= d``), the outputs' nudge
(:math:`\beta/2\,|Q^\top u + c_o - y|^2`) or clamp (:math:`Q^\top u + c_o = y`). All of them are
borders of one factorized *reference* KKT matrix

.. math::

    K = \begin{pmatrix} H_0 & A^\top \\ A & 0 \end{pmatrix},\qquad A = D_{R}

(``R``: a reference set of conducting diodes, often empty, so ``K = H_0``). Sample ``b`` with
working set ``W_b`` solves

.. math::

    \begin{pmatrix} K & C_b \\ C_b^\top & -\Lambda_b \end{pmatrix}
    \begin{pmatrix} x \\ z \end{pmatrix} = \begin{pmatrix} k_b \\ r_b \end{pmatrix},

with one column of ``C_b`` per correction: a diode conducting but not in ``R`` (column
``[D_r^T; 0]``, right-hand side ``d_r``, ``z`` its current), a diode of ``R`` that does not conduct
(the unit column of its multiplier, right-hand side 0: it frees the row and forces its current to
0), and each output (column ``[Q_o; 0]``; nudge: right-hand side ``y_o - c_o`` and
``Lambda = 1/beta``, ``z`` the nudge current :math:`\beta(v_o - y_o)`; clamp: ``Lambda = 0``, ``z``
the clamp current). With ``x_0 = K^{-1} k_b`` (one multi-right-hand-side solve for the whole
batch, reused by every phase) and ``Y = K^{-1} C`` (one solve per distinct column, shared by the
batch), each sample needs only the small dense Schur system

.. math:: (C_b^\top Y_b + \Lambda_b)\, z = C_b^\top x_0 - r_b,\qquad x = x_0 - Y_b z.

The primal-dual active-set iteration (Hintermueller, Ito & Kunisch 2002) runs on every sample of
the batch at once on top of this. When the corrections grow large (many diodes conduct), the
caller refactors with ``R`` = the batch's majority set, so the corrections become the (few) diodes
where a sample differs from the others.

References
----------
M. Hintermueller, K. Ito, K. Kunisch, SIAM J. Optim. 13 (2002) 865-888.
P. E. Gill, W. Murray, M. A. Saunders, M. H. Wright, "Sparse matrix methods in optimization",
SIAM J. Sci. Stat. Comput. 5 (1984) 562-589 (Schur-complement updates of a fixed factorization).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Optional

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from physgrad.circuit.sparse import factor as sparse_factor
from physgrad.types import SingularSystemError

# Systems of at most this many unknowns are factorized densely (LAPACK): below it dense
# solves beat SuperLU's per-call overhead (measured: ~0.1 ms vs ~1 ms at 500 unknowns).
DENSE_MAX = 700
# Dense systems with at most this many diode rows + outputs solve every sample's Schur system over
# all of them (masked to the sample's corrections): no ragged bookkeeping, tiny batched solves.
FULL_MASK_MAX = 64
# At most this many entries (samples x k x k) in the batched Schur systems of one call (64 MB).
SCHUR_MAX = 8_000_000
# Above this many (nK x B x k) entries the gathered correction columns are applied sample by
# sample instead of as one 3-D array.
GATHER_MAX = 4_000_000
# ... and only when the columns in use are few against those computed: the product with all of
# them (BLAS, ~0.07 ns per multiply-add) beats a gather (~1.5-3 ns per entry copied) up to ~20x
# more columns (measured: nK = 1,000, 32 samples, 103 of 253 columns: 0.5 ms against 4.9 ms).
GEMM_RATIO = 16


class Factor:
    """LU factors of a symmetric (possibly indefinite) matrix: dense LAPACK or sparse SuperLU."""

    def __init__(self, K, dense: bool):
        self.n = K.shape[0]
        self.dense = dense
        self.nnz = 0
        if self.n == 0:
            return
        if dense:
            Kd = K.toarray() if sp.issparse(K) else np.array(K, dtype=float)
            lu, piv = scipy.linalg.lu_factor(Kd, check_finite=False)
            if np.any(np.diag(lu) == 0.0):
                raise SingularSystemError("the reference KKT matrix is exactly singular")
            self._lu = (lu, piv)
            self.nnz = self.n * self.n
        else:
            self._lu = sparse_factor(sp.csc_matrix(K))
            self.nnz = int(self._lu.L.nnz + self._lu.U.nnz)

    def solve(self, B: np.ndarray) -> np.ndarray:
        """``K^{-1} B`` for ``B`` of shape ``(n,)`` or ``(n, k)``."""
        if self.n == 0:
            return np.zeros(np.shape(B))
        if self.dense:
            return scipy.linalg.lu_solve(self._lu, B, check_finite=False)
        # SuperLU solves Fortran-ordered right-hand sides in place ~10-40x faster (measured).
        return self._lu.solve(np.asfortranarray(B, dtype=float))


class RowData:
    """Per-topology views of the diode rows ``D`` and output columns ``Q`` that every
    :class:`SharedSystem` of the topology needs (built once, not once per parameter value)."""

    def __init__(self, D: sp.csr_matrix, Q: sp.spmatrix):
        self.D = sp.csr_matrix(D)
        self.Q = sp.csc_matrix(Q)
        self.m, self.n_out = self.D.shape[0], self.Q.shape[1]
        self.small = D.shape[1] <= DENSE_MAX
        self.Dd = self.D.toarray() if self.small else None
        self.Qd = self.Q.toarray() if self.small else None
        Dc = self.D.copy()
        Dc.sort_indices()
        nnz = np.diff(Dc.indptr)
        r = int(nnz.max(initial=0))
        self.didx = np.zeros((self.m, r), dtype=np.int64)
        self.dval = np.zeros((self.m, r))
        for j in range(r):  # (m, r) index/value pairs (r <= 2 for circuits) for gathered row products
            has = nnz > j
            self.didx[has, j] = Dc.indices[Dc.indptr[:-1][has] + j]
            self.dval[has, j] = Dc.data[Dc.indptr[:-1][has] + j]


class SharedSystem:
    """The reference factorization of one parameter value and its correction columns.

    Parameters
    ----------
    H0 : sparse (n, n), S — reduced conductance matrix (symmetric positive definite)
    D : sparse csr (m, n) — diode rows; Q : sparse (n, n_out) — output columns
    ref : bool (m,) — reference conducting set ``R`` (default none)
    """

    def __init__(self, H0: sp.spmatrix, D: sp.csr_matrix, Q: sp.spmatrix, ref: Optional[np.ndarray] = None,
                 dense: Optional[bool] = None, rows: Optional[RowData] = None):
        rows = RowData(D, Q) if rows is None else rows
        self.n = H0.shape[0]
        self.m = rows.m
        self.n_out = rows.n_out
        self.H0 = H0
        self.D = rows.D
        self.Q = rows.Q
        self.ref = np.zeros(self.m, bool) if ref is None else np.asarray(ref, bool).copy()
        self.ref_rows = np.flatnonzero(self.ref)
        self.ref_pos = np.full(self.m, -1, dtype=np.int64)
        self.ref_pos[self.ref_rows] = np.arange(self.ref_rows.size)
        p = self.ref_rows.size
        self.nK = self.n + p
        self.dense = self.nK <= DENSE_MAX if dense is None else dense
        if p:
            if self.dense:
                Ad = rows.Dd[self.ref_rows] if rows.Dd is not None else self.D[self.ref_rows].toarray()
                K = np.zeros((self.nK, self.nK))
                K[: self.n, : self.n] = H0.toarray() if sp.issparse(H0) else H0
                K[self.n:, : self.n] = Ad
                K[: self.n, self.n:] = Ad.T
            else:
                A = self.D[self.ref_rows]
                K = sp.bmat([[sp.csr_matrix(H0), A.T], [A, None]], format="csc")
        else:
            K = H0
        t0 = time.process_time()
        self.factor = Factor(K, self.dense)
        # measured CPU seconds of this factorization: the cost model's price of a new reference
        self.t_factor = time.process_time() - t0
        self.nnz_factor = self.factor.nnz
        if self.dense:
            self._Dd = rows.Dd if rows.Dd is not None else self.D.toarray()
            self._Qd = rows.Qd if rows.Qd is not None else self.Q.toarray()
        self._didx, self._dval = rows.didx, rows.dval
        # correction columns: key k < m -> diode row k; key m + o -> output o
        self.col = np.full(self.m + self.n_out, -1, dtype=np.int64)
        self.keys = np.zeros(0, dtype=np.int64)
        self._Ybuf = np.zeros((self.nK, 0), order="F")  # capacity grows by doubling; Y is a view
        self.Y = self._Ybuf[:, :0]
        self.G = np.zeros((0, 0))

    def column_cost(self) -> float:
        """Estimated seconds of one new correction column (a forward and backward solve)."""
        return 4.0 * max(self.nnz_factor, self.nK) * GATHER_S

    # --- the columns C and C^T ----------------------------------------------------------------------
    def _columns(self, keys: np.ndarray) -> np.ndarray:
        """Dense columns ``C[:, keys]``, shape ``(nK, len(keys))``."""
        keys = np.asarray(keys, dtype=np.int64)
        Cm = np.zeros((self.nK, len(keys)), order="F")
        j = np.arange(len(keys))
        is_out = keys >= self.m
        if np.any(is_out):
            o = keys[is_out] - self.m
            Cm[: self.n, j[is_out]] = self._Qd[:, o] if self.dense else self.Q[:, o].toarray()
        low = ~is_out
        if np.any(low):
            kl = keys[low]
            ref = self.ref[kl]
            if np.any(ref):
                Cm[self.n + self.ref_pos[kl[ref]], j[low][ref]] = 1.0
            rows, cols = kl[~ref], j[low][~ref]
            if self.dense:
                Cm[: self.n, cols] = self._Dd[rows].T
            else:
                for t in range(self._didx.shape[1]):
                    np.add.at(Cm, (self._didx[rows, t], cols), self._dval[rows, t])
        return Cm

    def ct(self, X: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """``C[:, keys]^T X`` for ``X`` of shape ``(nK, B)``: shape ``(len(keys), B)``."""
        keys = np.asarray(keys, dtype=np.int64)
        out = np.zeros((len(keys), X.shape[1]))
        if not len(keys):
            return out
        is_out = keys >= self.m
        is_ref = (~is_out) & self.ref[np.minimum(keys, max(self.m - 1, 0))] if self.m else np.zeros(len(keys), bool)
        is_row = ~is_out & ~is_ref
        U = X[: self.n]
        if np.any(is_row):
            rows = keys[is_row]
            out[is_row] = np.einsum("kj,kjb->kb", self._dval[rows], U[self._didx[rows]])
        if np.any(is_ref):
            out[is_ref] = X[self.n + self.ref_pos[keys[is_ref]]]
        if np.any(is_out):
            o = keys[is_out] - self.m
            out[is_out] = (self._Qd[:, o].T @ U) if self.dense else np.asarray(self.Q[:, o].T @ U)
        return out

    def ensure(self, keys: np.ndarray) -> int:
        """Compute ``Y = K^{-1} C`` and ``G = C^T Y`` for the keys not yet present; returns how many."""
        keys = np.unique(np.asarray(keys, dtype=np.int64))
        new = keys[self.col[keys] < 0]
        if not new.size:
            return 0
        Ynew = self.factor.solve(self._columns(new))
        Ynew = Ynew.reshape(self.nK, len(new))
        k0 = len(self.keys)
        self.col[new] = k0 + np.arange(len(new))
        self.keys = np.concatenate([self.keys, new])
        k1 = len(self.keys)
        if k1 > self._Ybuf.shape[1]:
            cap = max(k1, min(2 * self._Ybuf.shape[1], self.m + self.n_out), 8)  # at most every key once
            buf = np.zeros((self.nK, cap), order="F")
            buf[:, :k0] = self._Ybuf[:, :k0]
            self._Ybuf = buf
        self._Ybuf[:, k0:k1] = Ynew
        self.Y = self._Ybuf[:, :k1]
        G = np.zeros((len(self.keys), len(self.keys)))
        G[:k0, :k0] = self.G
        cross = self.ct(Ynew, self.keys)  # C[:, all]^T Y_new
        G[:, k0:] = cross
        G[k0:, :k0] = cross[:k0].T
        G[k0:, k0:] = 0.5 * (cross[k0:] + cross[k0:].T)
        self.G = G
        return len(new)

    def row_dot(self, rows: np.ndarray, U: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``D[rows[i]] @ U[:, cols[i]]`` for each ``i`` (``U`` of shape ``(n, B)``)."""
        return np.sum(self._dval[rows] * U[self._didx[rows], cols[:, None]], axis=1)

    def Du(self, U: np.ndarray) -> np.ndarray:
        """``D u`` per sample, ``U`` of shape ``(B, n)``: shape ``(B, m)``."""
        if not self.m:
            return np.zeros((U.shape[0], 0))
        return U @ self._Dd.T if self.dense else np.asarray(self.D @ U.T).T

    # --- base solutions -----------------------------------------------------------------------------
    def base(self, F: np.ndarray, d: np.ndarray) -> np.ndarray:
        """``x_0 = K^{-1} [f_b; d_b[R]]`` for every sample: shape ``(nK, B)``."""
        rhs = np.empty((self.nK, F.shape[0]), order="F")
        rhs[: self.n] = F.T
        if self.ref_rows.size:
            rhs[self.n:] = d[:, self.ref_rows].T
        return self.factor.solve(rhs).reshape(self.nK, F.shape[0])

    def output_gram(self) -> np.ndarray:
        """``Q^T H_0^{-1} Q`` (1/S), shape ``(n_out, n_out)`` (needs ``R`` empty)."""
        if self.ref_rows.size:
            raise ValueError("output_gram needs the factor of H0 itself (empty reference set)")
        keys = self.m + np.arange(self.n_out)
        self.ensure(keys)
        c = self.col[keys]
        return self.G[np.ix_(c, c)]


def max_negative_beta(system: SharedSystem) -> float:
    """Largest ``|beta|`` keeping ``H_0 - |beta| Q Q^T`` positive definite: ``1 / lambda_max(Q^T H_0^{-1} Q)``
    (the quadratic part only, as :func:`physgrad.circuit.reduction.max_negative_beta`)."""
    if system.n_out == 0:
        return np.inf
    M = system.output_gram()
    lam = float(np.max(np.linalg.eigvalsh(0.5 * (M + M.T))))
    return np.inf if lam <= 0 else 1.0 / lam


def solve_on_sets(system: SharedSystem, X0: np.ndarray, d: np.ndarray, W: np.ndarray, out_rhs: Optional[np.ndarray],
                  out_lambda: float, samples: Optional[np.ndarray] = None):
    """Equality-constrained solves of the samples ``samples`` on their working sets ``W``.

    Parameters
    ----------
    X0 : (nK, B) base solutions; d : (B, m) diode bounds (V); W : (B, m) bool working sets
    out_rhs : (B, n_out) or None — ``y - c_o`` (nudge) or ``clamp - c_o`` (clamp), V; None: free
    out_lambda : ``1/beta`` for a nudge, 0 for a clamp (1/S)
    samples : indices into the batch (default all)

    Returns
    -------
    u : (k, n) V; lam : (k, m) diode currents (A, 0 off the working set); z_out : (k, n_out) A
    (nudge or clamp currents); ok : (k,) bool — False where the Schur system was singular.
    """
    idx = np.arange(X0.shape[1]) if samples is None else np.asarray(samples)
    if system.dense and system.m + system.n_out <= FULL_MASK_MAX:
        return _solve_full_mask(system, X0, d, W, out_rhs, out_lambda, idx)
    # bound the batched Schur systems' memory (nb x k x k): chunks of samples when the corrections are many
    n_corr = np.sum(W[idx] ^ system.ref[None, :], axis=1)
    k_est = int(np.max(n_corr, initial=0)) + system.n_out
    chunk = max(1, SCHUR_MAX // max(k_est * k_est, 1))
    if idx.size > chunk or (idx.size >= 8 and k_est > 16):
        # samples sorted by their number of corrections, in groups: every Schur system is padded to
        # its group's largest, not the batch's (the dense solves cost ~ k^3 each)
        order = np.argsort(n_corr, kind="stable")
        groups = _k_groups(n_corr[order], chunk)
        parts = [_solve_on_sets(system, X0, d, W, out_rhs, out_lambda, idx[order[a:b]]) for a, b in groups]
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        return tuple(np.concatenate([p[j] for p in parts])[inv] for j in range(4))
    return _solve_on_sets(system, X0, d, W, out_rhs, out_lambda, idx)


def _k_groups(k_sorted: np.ndarray, chunk: int) -> list:
    """Cut sorted correction counts into consecutive groups: a new group starts where the padded
    cost ``size * kmax^3`` would exceed the cost of two groups by a third, or at ``chunk`` samples."""
    groups, a = [], 0
    n = k_sorted.size
    while a < n:
        b = a + 1
        while b < n and b - a < chunk:
            k_hi = float(k_sorted[b]) + 1.0
            # padded cost of [a, b] versus [a, b) plus a new group starting at b
            if (b + 1 - a) * k_hi ** 3 > 1.33 * ((b - a) * (float(k_sorted[b - 1]) + 1.0) ** 3 + k_hi ** 3) \
                    and b - a >= 4:
                break
            b += 1
        groups.append((a, b))
        a = b
    return groups


def _solve_stack(S: np.ndarray, rhs: np.ndarray) -> tuple:
    """``z[j] = S[j]^{-1} rhs[j]`` for a stack ``S`` ``(nb, k, k)``, ``rhs`` ``(nb, k)``: one batched
    solve, or sample by sample when one system is singular. Returns ``(z, solved)``; a singular
    sample has ``z[j] = 0`` and ``solved[j] = False``."""
    nb, k = rhs.shape
    solved = np.ones(nb, bool)
    try:
        return np.linalg.solve(S, rhs[:, :, None])[:, :, 0], solved
    except np.linalg.LinAlgError:
        z = np.zeros((nb, k))
        for j in range(nb):
            try:
                z[j] = np.linalg.solve(S[j], rhs[j])
            except np.linalg.LinAlgError:
                solved[j] = False
        return z, solved


def _solve_on_sets(system: SharedSystem, X0, d, W, out_rhs, out_lambda, idx):
    nb = idx.size
    n, m, n_out = system.n, system.m, system.n_out
    Wb = W[idx]
    corr = Wb ^ system.ref[None, :]
    n_corr = corr.sum(axis=1)
    use_out = out_rhs is not None and n_out > 0
    kmax = int(n_corr.max(initial=0)) + (n_out if use_out else 0)
    X0b = X0[:, idx]
    ok = np.ones(nb, bool)
    if kmax == 0:
        x = X0b
        z = np.zeros((nb, 0))
        keys = np.zeros((nb, 0), dtype=np.int64)
        mask = np.zeros((nb, 0), bool)
    else:
        keys = np.zeros((nb, kmax), dtype=np.int64)
        mask = np.zeros((nb, kmax), bool)
        # row keys, left-aligned (argsort puts the corrected rows first, in row order)
        if m:
            order = np.argsort(~corr, axis=1, kind="stable")[:, : kmax - (n_out if use_out else 0)]
            rmask = np.arange(order.shape[1])[None, :] < n_corr[:, None]
            keys[:, : order.shape[1]] = np.where(rmask, order, 0)
            mask[:, : order.shape[1]] = rmask
        if use_out:
            keys[:, kmax - n_out:] = m + np.arange(n_out)
            mask[:, kmax - n_out:] = True
        system.ensure(keys[mask])
        cols = system.col[keys]
        cols = np.where(mask, cols, 0)
        # S = G on the sample's corrections, the identity on its padding (three passes over nb x k x k)
        S = system.G[cols[:, :, None], cols[:, None, :]]
        mf = mask.astype(float)
        S *= mf[:, :, None]
        S *= mf[:, None, :]
        diag = 1.0 - mf
        # right-hand side: C^T x0 - r
        ctx = np.zeros((nb, kmax))
        if m:
            U0 = X0b[:n]
            add = mask & (keys < m)
            add &= ~system.ref[np.minimum(keys, m - 1)]
            drop = mask & (keys < m) & system.ref[np.minimum(keys, m - 1)]
            if np.any(add):
                bi, ki = np.nonzero(add)
                rows = keys[bi, ki]
                ctx[bi, ki] = system.row_dot(rows, U0, bi) - d[idx[bi], rows]
            if np.any(drop):
                bi, ki = np.nonzero(drop)
                ctx[bi, ki] = X0b[n + system.ref_pos[keys[bi, ki]], bi]
        if use_out:
            diag[:, kmax - n_out:] += out_lambda
            qo = (system._Qd.T @ X0b[:n]) if system.dense else np.asarray(system.Q.T @ X0b[:n])
            ctx[:, kmax - n_out:] = qo.T - out_rhs[idx]
        ar = np.arange(kmax)
        S[:, ar, ar] += diag
        z, solved = _solve_stack(S, ctx)
        ok &= solved
        z = np.where(mask, z, 0.0)
        if system.Y.shape[1] > GEMM_RATIO * kmax and system.nK * nb * kmax <= GATHER_MAX:
            Yg = system.Y[:, cols]  # (nK, nb, kmax)
            x = X0b - np.einsum("nbk,bk->nb", Yg, z)
        else:  # one product with the scattered corrections: Y (nK, k) @ Z (k, nb)
            Z = np.zeros((system.Y.shape[1], nb))
            bi, ki = np.nonzero(mask)
            np.add.at(Z, (cols[bi, ki], bi), z[bi, ki])
            x = X0b - system.Y @ Z
    u = x[:n].T
    lam = np.zeros((nb, m))
    if system.ref_rows.size:
        lam[:, system.ref_rows] = np.where(Wb[:, system.ref_rows], x[n:].T, 0.0)
    if kmax:
        add = mask & (keys < m)
        if m:
            add &= ~system.ref[np.minimum(keys, m - 1)]
        bi, ki = np.nonzero(add)
        lam[bi, keys[bi, ki]] = z[bi, ki]
    z_out = z[:, kmax - n_out:] if use_out else np.zeros((nb, n_out))
    return u, lam, z_out, ok


def _solve_full_mask(system: SharedSystem, X0, d, W, out_rhs, out_lambda, idx):
    """:func:`solve_on_sets` for small dense systems: one masked Schur system over all rows."""
    n, m, n_out = system.n, system.m, system.n_out
    full = getattr(system, "_full", None)
    if full is None:
        keys = np.arange(m + n_out)
        system.ensure(keys)
        cols = system.col[keys]
        full = system._full = (system.G[np.ix_(cols, cols)], np.ascontiguousarray(system.Y[:, cols]))
    Gf, Yf = full
    use_out = out_rhs is not None and n_out > 0
    k = m + (n_out if use_out else 0)
    Wb = W[idx]
    nb = idx.size
    X0b = X0[:, idx]
    U0 = X0b[:n]
    corr = Wb ^ system.ref[None, :]
    ctx = np.empty((nb, k))
    if m:
        ctx[:, :m] = U0.T @ system._Dd.T - d[idx]
        if system.ref_rows.size:
            ctx[:, system.ref_rows] = X0b[n:].T
    mask = np.ones((nb, k), bool)
    mask[:, :m] = corr
    S = Gf[:k, :k][None, :, :] * (mask[:, :, None] & mask[:, None, :])
    diag = np.where(mask, 0.0, 1.0)
    if use_out:
        ctx[:, m:] = U0.T @ system._Qd - out_rhs[idx]
        diag[:, m:] += out_lambda
    S[:, np.arange(k), np.arange(k)] += diag
    ok = np.ones(nb, bool)
    rhs = np.where(mask, ctx, 0.0)
    z, solved = _solve_stack(S, rhs)
    ok &= solved
    x = X0b - Yf[:, :k] @ z.T
    u = x[:n].T
    lam = np.zeros((nb, m))
    if m:
        lam = np.where(corr & ~system.ref[None, :], z[:, :m], 0.0)
        if system.ref_rows.size:
            lam[:, system.ref_rows] = np.where(Wb[:, system.ref_rows], x[n:].T, 0.0)
    z_out = z[:, m:] if use_out else np.zeros((nb, n_out))
    return u, lam, z_out, ok


def tolerances(h_scale: np.ndarray, F: np.ndarray, d: np.ndarray):
    """Per-sample PDAS tolerances (V, A), ~1e-11 relative to each sample's scale (as
    :func:`physgrad.circuit.solvers.kkt._tolerances`)."""
    v_scale = np.maximum(1.0, np.max(np.abs(d), axis=1, initial=0.0))
    i_scale = np.maximum(np.max(np.abs(F), axis=1, initial=0.0), h_scale * v_scale)
    return 1e-11 * v_scale, 1e-11 * i_scale


# --- the cost model: border the shared factor, or factorize the sample's own pattern ---------------
# Effective rates of the per-sample work on one core: dense Schur solves (flop/s) and gathers of the
# correction columns (s per entry). A sample's border of k corrections costs about
# k^3 / 3 / SCHUR_FLOPS + nK k GATHER_S per iteration; a reference of its own conducting set costs
# one factorization (measured when the shared one was built) and leaves a border of the outputs only.
SCHUR_FLOPS = 2e9
GATHER_S = 2e-9
# Fixed cost of one more pattern system (building its rows, columns and base solutions in Python), s.
PATTERN_OVERHEAD_S = 5e-4
# Never a dense border above this many corrections, whatever the estimate says.
BORDER_MAX = 400
# Pattern factorizations kept per parameter value (LRU), and their total factor entries.
POOL_SIZE = 64
POOL_NNZ = 8_000_000


def border_cost(k, nK: int) -> np.ndarray:
    """Estimated seconds of one sample's Schur border with ``k`` corrections on a factor of size ``nK``."""
    k = np.asarray(k, dtype=float)
    return k ** 3 / 3.0 / SCHUR_FLOPS + nK * k * GATHER_S


class PatternPool:
    """Reference factorizations of whole conducting sets ("patterns"), bounded (LRU by count and by
    factor entries): the refactor-per-pattern route. A sample is served by the pooled system nearest
    to its set (fewest differing rows), if its border there is cheap, else by a new system of its own
    set, shared by every sample with the same set."""

    def __init__(self, make_system, size: int = POOL_SIZE, max_nnz: int = POOL_NNZ):
        self.make_system = make_system
        self.size, self.max_nnz = size, max_nnz
        self.systems: OrderedDict = OrderedDict()  # packed pattern -> SharedSystem
        self.built = 0

    def nearest(self, W: np.ndarray):
        """``(system, n_differing_rows)`` of the pooled system nearest to each row of ``W`` (B, m)."""
        if not self.systems:
            return [None] * len(W), np.full(len(W), np.iinfo(np.int64).max)
        refs = np.array([sy.ref for sy in self.systems.values()])  # (P, m)
        diff = (W[:, None, :] ^ refs[None, :, :]).sum(axis=2)  # (B, P)
        j = np.argmin(diff, axis=1)
        systems = list(self.systems.values())
        return [systems[i] for i in j], diff[np.arange(len(W)), j]

    def get(self, pattern: np.ndarray) -> SharedSystem:
        key = np.packbits(pattern).tobytes()
        sy = self.systems.get(key)
        if sy is None:
            sy = self.make_system(pattern)
            self.built += 1
            self.systems[key] = sy
            while len(self.systems) > 1 and (len(self.systems) > self.size or
                                             sum(x.nnz_factor for x in self.systems.values()) > self.max_nnz):
                self.systems.popitem(last=False)
        else:
            self.systems.move_to_end(key)
        return sy


class Router:
    """Per sample and iteration, the cheaper of: the shared factor with a Schur border, or a factor
    of (nearly) the sample's own conducting set from a :class:`PatternPool` (see :func:`border_cost`).

    ``F`` (B, n) and ``d`` (B, m) are the batch's forces (A) and diode bounds (V): a pattern system
    needs its own base solutions. ``stats`` counts ``border_samples`` and ``pattern_samples``
    (sample-iterations on each route) and ``pattern_factorizations``.
    """

    def __init__(self, shared: SharedSystem, X0: np.ndarray, F: np.ndarray, d: np.ndarray,
                 out_rhs: Optional[np.ndarray], out_lambda: float, pool: Optional[PatternPool]):
        self.shared, self.X0 = shared, X0
        self.F, self.d, self.out_rhs, self.out_lambda = F, d, out_rhs, out_lambda
        self.pool = pool
        self.stats = {"border_samples": 0, "pattern_samples": 0, "pattern_factorizations": 0}
        self._x0: dict = {}  # id(system) -> (system, X0 (nK, B), filled (B,) bool)

    def _cap(self, system: SharedSystem) -> float:
        """Border cost (s) above which a pattern system is cheaper: its factorization (as measured for
        ``system``), its output columns and base solution, and the bookkeeping of one more system."""
        return system.t_factor + (system.n_out + 2) * system.column_cost() + PATTERN_OVERHEAD_S

    def _base(self, system: SharedSystem, idx: np.ndarray) -> np.ndarray:
        held = self._x0.get(id(system))
        B = self.F.shape[0]
        if held is None or held[0] is not system:
            # keep base solutions only of systems still pooled (an evicted factor is freed, not held here)
            live = {id(sy) for sy in self.pool.systems.values()} if self.pool is not None else set()
            for key in [k for k in self._x0 if k not in live]:
                del self._x0[key]
            held = (system, np.zeros((system.nK, B), order="F"), np.zeros(B, bool))
            self._x0[id(system)] = held
        _, X0, filled = held
        need = idx[~filled[idx]]
        if need.size:
            X0[:, need] = system.base(self.F[need], self.d[need])
            filled[need] = True
        return X0

    def solve(self, W: np.ndarray, todo: np.ndarray):
        """:func:`solve_on_sets` for the samples ``todo``, each on its cheaper route."""
        shared = self.shared
        n_out = shared.n_out if self.out_rhs is not None else 0
        corr = W[todo] ^ shared.ref[None, :]
        k = corr.sum(axis=1) + n_out
        # columns not yet computed, each shared by the samples that need it
        need = corr & (shared.col[None, :shared.m] < 0)
        share = np.sum(need / np.maximum(need.sum(axis=0), 1)[None, :], axis=1)
        cost = border_cost(k, shared.nK) + share * shared.column_cost()
        cheap = (k <= BORDER_MAX) & (cost <= self._cap(shared))
        if self.pool is None or np.all(cheap):
            self.stats["border_samples"] += int(todo.size)
            return solve_on_sets(shared, self.X0, self.d, W, self.out_rhs, self.out_lambda, todo)
        B = W.shape[0]
        u = np.zeros((todo.size, shared.n))
        lam = np.zeros((todo.size, shared.m))
        z_out = np.zeros((todo.size, shared.n_out))
        ok = np.ones(todo.size, bool)
        pos = np.full(B, -1, dtype=np.int64)
        pos[todo] = np.arange(todo.size)
        groups = []
        if np.any(cheap):
            groups.append((shared, self.X0, todo[cheap]))
            self.stats["border_samples"] += int(cheap.sum())
        rest = todo[~cheap]
        self.stats["pattern_samples"] += int(rest.size)
        near, dist = self.pool.nearest(W[rest])
        chosen = {}
        for j, b in enumerate(rest):
            sy = near[j]
            if sy is None or dist[j] + n_out > BORDER_MAX or \
                    border_cost(dist[j] + n_out, sy.nK) + dist[j] * sy.column_cost() > self._cap(sy):
                before = self.pool.built
                sy = self.pool.get(W[b])
                self.stats["pattern_factorizations"] += self.pool.built - before
            chosen.setdefault(id(sy), (sy, []))[1].append(b)
        for sy, members in chosen.values():
            idx = np.asarray(members, dtype=np.int64)
            groups.append((sy, self._base(sy, idx), idx))
        for sy, X0, idx in groups:
            ub, lb, zb, okb = solve_on_sets(sy, X0, self.d, W, self.out_rhs, self.out_lambda, idx)
            p = pos[idx]
            u[p], lam[p], z_out[p], ok[p] = ub, lb, zb, okb
        return u, lam, z_out, ok


CYCLE_CHECK_FROM = 6


def pdas_batch(system: SharedSystem, X0: np.ndarray, d: np.ndarray, W0: np.ndarray,
               out_rhs: Optional[np.ndarray], out_lambda: float, tol_v: np.ndarray, tol_i: np.ndarray,
               max_iter: int = 50, refactor=None, router: Optional[Router] = None):
    """Primal-dual active-set iteration on every sample at once.

    ``refactor(W) -> (system, X0) or None`` is called after an iteration whose corrections are
    large; it may return a new reference factorization (then the iteration continues on it).
    ``router`` (a :class:`Router` on ``system``): each sample's solve on its cheaper route.

    Returns ``(u, lam, z_out, W, status, n_iter, system, X0)`` with status per sample
    ``"converged"``, ``"max_iter"`` (cycled or out of iterations) or ``"singular"``.
    """
    B = X0.shape[1]
    m = system.m
    W = np.asarray(W0, bool).copy()
    u = np.zeros((B, system.n))
    lam = np.zeros((B, m))
    z_out = np.zeros((B, system.n_out))
    status = np.full(B, "", dtype=object)
    n_iter = np.zeros(B, dtype=np.int64)
    seen = [set() for _ in range(B)]
    todo = np.arange(B)
    for it in range(1, max_iter + 1):
        if not todo.size:
            break
        if router is not None:
            ub, lb, zb, ok = router.solve(W, todo)
        else:
            ub, lb, zb, ok = solve_on_sets(system, X0, d, W, out_rhs, out_lambda, todo)
        u[todo], lam[todo], z_out[todo] = ub, lb, zb
        n_iter[todo] = it
        bad = todo[~ok]
        status[bad] = "singular"
        live = todo[ok]
        if not live.size:
            todo = live
            break
        Wl = W[live]
        slack = d[live] - system.Du(u[live])
        tv, ti = tol_v[live, None], tol_i[live, None]
        lam_l = lam[live]
        optimal = np.all(np.where(Wl, lam_l >= -ti, True), axis=1) & np.all(np.where(Wl, True, slack >= -tv), axis=1)
        newW = np.where(Wl, lam_l > -ti, slack < -tv)
        status[live[optimal]] = "converged"
        lam[live[optimal]] = np.where(Wl[optimal], np.maximum(lam_l[optimal], 0.0), 0.0)
        nonopt = np.flatnonzero(~optimal)
        if it < CYCLE_CHECK_FROM:  # PDAS rarely cycles: skip the per-sample bookkeeping early on
            W[live[nonopt]] = newW[nonopt]
            todo = live[nonopt]
        else:
            cont = []
            for j in nonopt:
                b = live[j]
                key = np.packbits(newW[j]).tobytes()
                if key in seen[b]:
                    status[b] = "max_iter"
                    continue
                seen[b].add(key)
                W[b] = newW[j]
                cont.append(b)
            todo = np.array(cont, dtype=np.int64)
        if todo.size and refactor is not None:
            res = refactor(W, todo)
            if res is not None:
                system, X0 = res
                if router is not None:
                    router.shared, router.X0 = system, X0
    status[status == ""] = "max_iter"
    return u, lam, z_out, W, status, n_iter, system, X0

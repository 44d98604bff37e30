r"""Sparse LDL^T with one symbolic analysis for many matrices of one pattern (numba-compiled numeric phase).

A batch of Newton matrices :math:`K_b = H + S^\top \mathrm{diag}(I'(v_b)) S` (S) of Shockley
circuits share one sparsity pattern; only the values change from sample to sample and iteration to
iteration. :class:`SymbolicLDL` orders the pattern once (qdldl's AMD; without qdldl the lesser fill
of SuperLU's minimum degree on :math:`A + A^\top` and reverse Cuthill-McKee), computes the
elimination tree and the column counts of ``L`` once, and then factorizes a whole stack of value
vectors ``(B, nnz)`` by the up-looking LDL^T of QDLDL (Stellato et al., the factorization osqp
ships) compiled with numba: one call per batch, no Python work per sample.

The factorization is :math:`P K P^\top = L D L^\top` with unit lower-triangular ``L``; without
pivoting it is stable for the symmetric positive definite matrices it is used on. A zero or
non-finite pivot marks the sample as failed (``ok = False``); the caller reports it.

Measured against the alternatives on the 1k-node Shockley network (``benchmarks/graphs.py``'s
``indep``): see :mod:`physgrad.circuit.solvers.batch_newton`.

References
----------
Stellato, Banjac, Goulart, Bemporad & Boyd (2020), "OSQP: an operator splitting solver for quadratic
programs" (QDLDL); Davis (2006), "Direct methods for sparse linear systems", ch. 4 (elimination tree,
up-looking Cholesky).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse.csgraph import reverse_cuthill_mckee

try:  # installed with osqp; its AMD ordering is the best of the candidates where present
    import qdldl as _qdldl
except ImportError:  # pragma: no cover
    _qdldl = None

_KERNELS = ("_etree", "_row_reach", "_factor_one", "_row_structure", "_factor_rows", "_solve_one", "_factor_solve_batch",
            "_solve_batch")
_STATE = {"compiled": False}
# Batches smaller than this are factorized by qdldl (C, its symbolic analysis reused by ``update``), so
# that a single solve (``physgrad solve``) does not import numba (~0.5 s of CPU at start-up).
NUMBA_MIN_BATCH = 2


def _compile() -> None:
    """Compile the kernels below with numba on first use (``cache=True``: loaded from the cache after
    the first run); numba is imported only then. Without numba they run as plain Python (slow)."""
    if _STATE["compiled"]:
        return
    try:
        from numba import njit

        from physgrad import _numba_cache
        _numba_cache.install()
    except ImportError:  # pragma: no cover
        _STATE["compiled"] = True
        return
    g = globals()
    for name in _KERNELS:  # leaves first: a kernel's callees are compiled ones when it compiles
        g[name] = njit(cache=True)(g[name])
    _STATE["compiled"] = True


def _etree(n, Ap, Ai):
    """Elimination tree and column counts of ``L`` of the upper-triangular CSC pattern ``(Ap, Ai)``."""
    work = np.zeros(n, np.int64)
    Lnz = np.zeros(n, np.int64)
    etree = np.full(n, -1, np.int64)
    for j in range(n):
        work[j] = j
        for p in range(Ap[j], Ap[j + 1]):
            i = Ai[p]
            while work[i] != j:
                if etree[i] == -1:
                    etree[i] = j
                Lnz[i] += 1
                work[i] = j
                i = etree[i]
    return etree, Lnz


def _row_reach(k, Ap, Ai, etree, yMarkers, yIdx, elim):
    """QDLDL's elimination-tree reach of row ``k``: the columns ``c < k`` with ``L[k, c] != 0``, written
    to ``yIdx[:nnzY]`` in the order the numeric factorization updates them (each marked in
    ``yMarkers``, which the caller clears); returns ``nnzY``. One definition for :func:`_factor_one`
    and :func:`_row_structure`."""
    nnzY = 0
    for p in range(Ap[k], Ap[k + 1]):
        b = Ai[p]
        if b == k or yMarkers[b] != 0:
            continue
        yMarkers[b] = 1
        elim[0] = b
        nnzE = 1
        nxt = etree[b]
        while nxt != -1 and nxt < k:
            if yMarkers[nxt] == 1:
                break
            yMarkers[nxt] = 1
            elim[nnzE] = nxt
            nnzE += 1
            nxt = etree[nxt]
        while nnzE:
            nnzE -= 1
            yIdx[nnzY] = elim[nnzE]
            nnzY += 1
    return nnzY


def _factor_one(n, Ap, Ai, Ax, Lp, etree, Li, Lx, Dinv, yMarkers, yIdx, elim, nextcol, yVals):
    """QDLDL's numeric LDL^T of one value vector ``Ax``; fills ``Li, Lx, Dinv``. False on a bad pivot."""
    for i in range(n):
        yMarkers[i] = 0
        yVals[i] = 0.0
        nextcol[i] = Lp[i]
    d0 = 0.0
    for p in range(Ap[0], Ap[1]):
        if Ai[p] == 0:
            d0 = Ax[p]
    if not (d0 != 0.0 and np.isfinite(d0)):
        return False
    Dinv[0] = 1.0 / d0
    for k in range(1, n):
        dk = 0.0
        for p in range(Ap[k], Ap[k + 1]):
            if Ai[p] == k:
                dk = Ax[p]
            else:
                yVals[Ai[p]] = Ax[p]
        nnzY = _row_reach(k, Ap, Ai, etree, yMarkers, yIdx, elim)
        for i in range(nnzY - 1, -1, -1):
            c = yIdx[i]
            t = nextcol[c]
            yc = yVals[c]
            for j in range(Lp[c], t):
                yVals[Li[j]] -= Lx[j] * yc
            Li[t] = k
            Lx[t] = yc * Dinv[c]
            dk -= yc * Lx[t]
            nextcol[c] = t + 1
            yVals[c] = 0.0
            yMarkers[c] = 0
        if not (dk != 0.0 and np.isfinite(dk)):
            return False
        Dinv[k] = 1.0 / dk
    return True


def _row_structure(n, Ap, Ai, Lp, etree):
    """The value-independent part of :func:`_factor_one`, once per pattern: for every row ``k`` of
    ``L`` the columns ``c`` it updates, in the order :func:`_factor_one` visits them
    (``rowcols[rowptr[k]:rowptr[k+1]]``), the position in ``Li``/``Lx`` of each entry ``L[k, c]``
    (``tpos``), and ``Li`` itself."""
    nnzL = Lp[n]
    rowptr = np.zeros(n + 1, np.int64)
    rowcols = np.zeros(max(nnzL, 1), np.int64)
    tpos = np.zeros(max(nnzL, 1), np.int64)
    Li = np.zeros(max(nnzL, 1), np.int64)
    yMarkers = np.zeros(n, np.int8)
    yIdx = np.zeros(n, np.int64)
    elim = np.zeros(n, np.int64)
    nextcol = Lp[:n].copy()
    q = 0
    for k in range(1, n):
        nnzY = _row_reach(k, Ap, Ai, etree, yMarkers, yIdx, elim)
        for i in range(nnzY - 1, -1, -1):
            c = yIdx[i]
            t = nextcol[c]
            rowcols[q] = c
            tpos[q] = t
            Li[t] = k
            q += 1
            nextcol[c] = t + 1
            yMarkers[c] = 0
        rowptr[k + 1] = q
    return rowptr, rowcols, tpos, Li


def _factor_rows(n, Ap, Ai, Ax, Lp, Li, rowptr, rowcols, tpos, Lx, Dinv, yVals):
    """:func:`_factor_one` on the precomputed row structure (:func:`_row_structure`): the same
    operations in the same order (the same factors, bit for bit), without the elimination-tree walks.
    ``yVals`` must be zero on entry (it is on return). False on a bad pivot."""
    for k in range(n):
        dk = 0.0
        for p in range(Ap[k], Ap[k + 1]):
            b = Ai[p]
            if b == k:
                dk = Ax[p]
            else:
                yVals[b] = Ax[p]
        for q in range(rowptr[k], rowptr[k + 1]):
            c = rowcols[q]
            t = tpos[q]
            yc = yVals[c]
            for j in range(Lp[c], t):
                yVals[Li[j]] -= Lx[j] * yc
            lx = yc * Dinv[c]
            Lx[t] = lx
            dk -= yc * lx
            yVals[c] = 0.0
        if not (dk != 0.0 and np.isfinite(dk)):  # (yVals is zero again: every entry of row k was visited)
            return False
        Dinv[k] = 1.0 / dk
    return True


def _solve_one(n, Lp, Li, Lx, Dinv, x):
    """``x <- (L D L^T)^{-1} x`` in place (permuted coordinates)."""
    for i in range(n):
        xi = x[i]
        for j in range(Lp[i], Lp[i + 1]):
            x[Li[j]] -= Lx[j] * xi
    for i in range(n):
        x[i] *= Dinv[i]
    for i in range(n - 1, -1, -1):
        s = x[i]
        for j in range(Lp[i], Lp[i + 1]):
            s -= Lx[j] * x[Li[j]]
        x[i] = s


def _factor_solve_batch(n, Ap, Ai, AX, Lp, Li, rowptr, rowcols, tpos, perm, RHS, keep, LI, LX, DINV, X):
    """Factor every row of ``AX`` (values on the permuted pattern) and solve with the row of ``RHS``
    (original order) into ``X`` (B, n); returns ``(X, ok)``. With ``keep`` the factors are stored in
    ``LI, LX, DINV``. ``Li, rowptr, rowcols, tpos``: :func:`_row_structure`."""
    B = AX.shape[0]
    nnzL = Lp[n]
    Lx = np.zeros(max(nnzL, 1))
    Dinv = np.zeros(n)
    yVals = np.zeros(n)
    x = np.zeros(n)
    ok = np.zeros(B, np.bool_)
    for b in range(B):
        good = _factor_rows(n, Ap, Ai, AX[b], Lp, Li, rowptr, rowcols, tpos, Lx, Dinv, yVals)
        if not good:
            X[b, :] = 0.0
            continue
        for i in range(n):
            x[i] = RHS[b, perm[i]]
        _solve_one(n, Lp, Li, Lx, Dinv, x)
        fin = True
        for i in range(n):
            if not np.isfinite(x[i]):
                fin = False
            X[b, perm[i]] = x[i]
        ok[b] = fin
        if keep:
            LI[:nnzL] = Li[:nnzL]  # the same for every sample (set by the pattern)
            LX[b, :nnzL] = Lx[:nnzL]
            DINV[b] = Dinv
    return X, ok


def _solve_batch(n, Lp, perm, LI, LX, DINV, RHS, X):
    B = RHS.shape[0]
    x = np.zeros(n)
    for b in range(B):
        for i in range(n):
            x[i] = RHS[b, perm[i]]
        _solve_one(n, Lp, LI, LX[b], DINV[b], x)
        for i in range(n):
            X[b, perm[i]] = x[i]
    return X


class Factors:
    """Numeric factors of a stack of matrices (kept for later solves, e.g. an adjoint)."""

    def __init__(self, symbolic: "SymbolicLDL", LI, LX, DINV, ok):
        self.symbolic, self.LI, self.LX, self.DINV, self.ok = symbolic, LI, LX, DINV, ok

    def solve(self, RHS: np.ndarray, out: np.ndarray = None) -> np.ndarray:
        """``K_b^{-1} rhs_b`` for every row (original order), shape ``(B, n)`` (into ``out`` if given:
        C-contiguous, that shape)."""
        s = self.symbolic
        RHS = np.ascontiguousarray(RHS, float)
        X = np.zeros(RHS.shape) if out is None else out
        return _solve_batch(s.n, s.Lp, s.perm, self.LI, self.LX, self.DINV, RHS, X)


class SymbolicLDL:
    """The symbolic analysis of one symmetric sparsity pattern, shared by every matrix on it.

    Parameters
    ----------
    pattern : sparse (n, n)
        Symmetric pattern (values ignored; the diagonal must be in it).
    ordering : {"auto", "amd", "mmd", "rcm", "natural"}
        Fill-reducing ordering; ``"auto"``: approximate minimum degree (qdldl's AMD) where qdldl is
        installed, else whichever of multiple minimum degree (SuperLU's ``MMD_AT_PLUS_A``) and RCM fills
        ``L`` less.

    Attributes
    ----------
    perm : (n,) the ordering (row ``i`` of the permuted matrix is row ``perm[i]``)
    slot : csr (n, n) int; ``slot[i, j]`` (1-based) is the position of entry ``(i, j)`` (either
        triangle) in the permuted upper-CSC value vector (``values(A)`` gathers by it)
    nnz_L : entries of ``L`` (fill included)
    """

    def __init__(self, pattern: sp.spmatrix, ordering: str = "auto"):
        A = sp.csr_matrix(pattern, dtype=float, copy=True)
        A.data[:] = 1.0
        A = (A + A.T + sp.identity(A.shape[0], format="csr")).tocsr()
        A.data[:] = 1.0
        self.n = n = A.shape[0]
        cands = []
        if ordering in ("auto", "amd") and n > 1 and _qdldl is not None:
            # qdldl's AMD ordering (its factors() report it), on a diagonally dominant matrix of the pattern
            M = A.copy()
            M.data[:] = -1.0 / max(int(np.max(np.diff(A.indptr))), 1)
            M.setdiag(2.0)
            try:
                cands.append(np.asarray(_qdldl.Solver(sp.triu(M, format="csc"), upper=True).factors()[2], np.int64))
            except (RuntimeError, IndexError, AttributeError, ValueError):
                pass
        if (ordering == "mmd" or (ordering == "auto" and not cands)) and n > 1:
            try:
                lu = spla.splu(A.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                               options={"SymmetricMode": True})
                cands.append(np.asarray(lu.perm_c, np.int64))
            except RuntimeError:
                pass
        if (ordering == "rcm" or (ordering == "auto" and len(cands) != 1)) and n > 1:
            cands.append(np.asarray(reverse_cuthill_mckee(A, symmetric_mode=True), np.int64))
        if not cands:
            cands.append(np.arange(n, dtype=np.int64))
        if len(cands) > 1:  # compare the fills (needs the compiled elimination tree)
            _compile()
            fills = [int(_etree(n, *self._upper(A, perm)[:2])[1].sum()) for perm in cands]
            cands = [cands[int(np.argmin(fills))]]
        self.perm = cands[0]
        self.Ap, self.Ai, order = self._upper(A, self.perm)
        self._tree = None
        self._q = None  # qdldl's solver for batches of one (its own symbolic analysis, reused by update)
        self._qM = None  # its matrix (the permuted upper triangle), values overwritten per update
        self.nnz = len(self.Ai)
        # slot of every (i, j) of A (both triangles) in the permuted upper CSC order
        coo = A.tocoo()
        inv = np.empty(n, np.int64)
        inv[self.perm] = np.arange(n)
        pi, pj = inv[coo.row], inv[coo.col]
        r, c = np.minimum(pi, pj), np.maximum(pi, pj)
        key = c * n + r  # CSC of the upper triangle: column c, row r
        pos = np.searchsorted(order, key)
        self.slot = sp.csr_matrix((pos + 1, (coo.row, coo.col)), shape=(n, n))
        self.slot.sort_indices()
        # the same lookup by binary search on row-major keys (scipy's fancy indexing: ~0.1 ms per call)
        self._slot_keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(self.slot.indptr)) * n + self.slot.indices
        self._slot_vals = np.asarray(self.slot.data, np.int64) - 1

    def slots(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Positions (0-based) of the entries ``(rows[k], cols[k])`` in the value vector (``slot - 1``);
        ``-1`` where an entry is outside the pattern."""
        key = np.asarray(rows, np.int64) * self.n + np.asarray(cols, np.int64)
        if not len(self._slot_keys):
            return np.full(key.shape, -1, np.int64)
        i = np.minimum(np.searchsorted(self._slot_keys, key), len(self._slot_keys) - 1)
        return np.where(self._slot_keys[i] == key, self._slot_vals[i], -1)

    def _symbolic(self):
        """Elimination tree and column pointers of ``L`` (computed once, compiled kernels)."""
        if self._tree is None:
            _compile()
            etree, Lnz = _etree(self.n, self.Ap, self.Ai)
            self._tree = (etree, np.concatenate([[0], np.cumsum(Lnz)]).astype(np.int64))
        return self._tree

    def _rows(self):
        """:func:`_row_structure` of the pattern (computed once)."""
        if getattr(self, "_row_struct", None) is None:
            self._row_struct = _row_structure(self.n, self.Ap, self.Ai, self.Lp, self.etree)
        return self._row_struct

    @property
    def etree(self) -> np.ndarray:
        return self._symbolic()[0]

    @property
    def Lp(self) -> np.ndarray:
        return self._symbolic()[1]

    @property
    def nnz_L(self) -> int:
        """Entries of ``L`` below the diagonal (fill included)."""
        return int(self.Lp[-1])

    @staticmethod
    def _upper(A, perm):
        n = A.shape[0]
        inv = np.empty(n, np.int64)
        inv[perm] = np.arange(n)
        coo = A.tocoo()
        pi, pj = inv[coo.row], inv[coo.col]
        keep = pi <= pj
        r, c = pi[keep], pj[keep]
        key = np.unique(c * n + r)
        cols = key // n
        Ap = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=n))]).astype(np.int64)
        return Ap, (key % n).astype(np.int64), key

    def gather(self, M: sp.spmatrix) -> np.ndarray:
        """``M``'s entries (a matrix on the pattern) as a value vector, shape ``(nnz,)``."""
        M = sp.csr_matrix(M)
        out = np.zeros(self.nnz)
        coo = M.tocoo()
        if coo.nnz == 0:  # e.g. no free node (every node held by a source): nothing to gather
            return out
        s = self.slots(coo.row, coo.col)
        if np.any(s < 0):
            raise ValueError("matrix entry outside the symbolic pattern")
        r, c = coo.row, coo.col
        up = r <= c  # each symmetric pair once
        np.add.at(out, s[up], coo.data[up])
        return out

    def scatter_map(self, rows: sp.spmatrix) -> sp.csr_matrix:
        """The map ``w -> values of rows^T diag(w) rows`` (csr, ``(k, nnz)``): value vectors of
        ``sum_k w_k r_k r_k^T`` for the sparse rows ``r_k`` of ``rows`` (k, n)."""
        R = sp.csr_matrix(rows, dtype=float, copy=True)
        R.eliminate_zeros()
        R.sort_indices()
        cnt = np.diff(R.indptr)
        if np.any(cnt > 2):  # general rows: every pair of entries
            ks, ii, jj, vv = [], [], [], []
            for k in range(R.shape[0]):
                idx = R.indices[R.indptr[k]:R.indptr[k + 1]]
                val = R.data[R.indptr[k]:R.indptr[k + 1]]
                for a in range(len(idx)):
                    for b in range(a, len(idx)):
                        ks.append(k)
                        ii.append(idx[a])
                        jj.append(idx[b])
                        vv.append(val[a] * val[b])
            ks, ii, jj, vv = (np.asarray(x) for x in (ks, ii, jj, vv))
        else:  # rows of at most two entries (diodes between two reduced variables): vectorized
            one = np.flatnonzero(cnt >= 1)
            two = np.flatnonzero(cnt == 2)
            i1, v1 = R.indices[R.indptr[one]], R.data[R.indptr[one]]
            i2, v2 = R.indices[R.indptr[two] + 1], R.data[R.indptr[two] + 1]
            j1, w1 = R.indices[R.indptr[two]], R.data[R.indptr[two]]
            ks = np.concatenate([one, two, two])
            ii = np.concatenate([i1, i2, j1])
            jj = np.concatenate([i1, i2, i2])
            vv = np.concatenate([v1 * v1, v2 * v2, w1 * v2])
        if len(ks):
            s = self.slots(ii, jj)
        else:
            s = np.zeros(0, np.int64)
        if np.any(s < 0):
            raise ValueError("row product outside the symbolic pattern")
        return sp.csr_matrix((vv, (ks, s)), shape=(R.shape[0], self.nnz))

    def factor_solve(self, AX: np.ndarray, RHS: np.ndarray, keep: bool = False, reuse: bool = False):
        """Factorize every row of ``AX`` (B, nnz) and solve with ``RHS`` (B, n).

        Returns ``(X, ok)`` (and the :class:`Factors` when ``keep``); ``ok[b]`` False where sample
        ``b``'s matrix had a zero or non-finite pivot or its solution is not finite. ``reuse``: the
        factors and ``X`` live in buffers this object keeps (grown as needed), valid until its next
        ``reuse`` call: fresh arrays of ~1 MB cost ~0.1 ms per sample in page faults on first touch
        (measured, 1k-node networks), more than the factorization's arithmetic."""
        B = AX.shape[0]
        if B < NUMBA_MIN_BATCH and not keep and _qdldl is not None:
            return self._factor_solve_qdldl(np.asarray(AX, float), np.asarray(RHS, float))
        nL = max(self.nnz_L, 1)
        nk = B if keep else 0
        if reuse:
            buf = getattr(self, "_buf", None)
            if buf is None or buf[1].shape[0] < B:
                cap = max(B, 2 * (buf[1].shape[0] if buf is not None else 0))
                buf = self._buf = (np.zeros(nL, np.int64), np.zeros((cap, nL)), np.zeros((cap, self.n)),
                                   np.zeros((cap, self.n)))
            LI, LX, DINV, X = buf[0], buf[1][:nk], buf[2][:nk], buf[3][:B]
        else:
            LI, LX, DINV, X = np.zeros(nL, np.int64), np.zeros((nk, nL)), np.zeros((nk, self.n)), np.zeros((B, self.n))
        rowptr, rowcols, tpos, Li = self._rows()
        X, ok = _factor_solve_batch(self.n, self.Ap, self.Ai, np.ascontiguousarray(AX, float), self.Lp, Li, rowptr,
                                    rowcols, tpos, self.perm, np.ascontiguousarray(RHS, float), keep, LI, LX, DINV, X)
        if keep:
            return X, ok, Factors(self, LI, LX, DINV, ok)
        return X, ok

    def _factor_solve_qdldl(self, AX, RHS):
        """:meth:`factor_solve` by qdldl (C), one matrix at a time on the permuted upper triangle."""
        B, n = RHS.shape
        X = np.zeros((B, n))
        ok = np.zeros(B, bool)
        for b in range(B):
            M = self._qM  # one matrix object, its values overwritten (~20 us of scipy checks per new one)
            if M is None:
                M = self._qM = sp.csc_matrix((np.array(AX[b], float), self.Ai, self.Ap), shape=(n, n))
            else:
                M.data[:] = AX[b]
            try:
                if self._q is None:
                    self._q = _qdldl.Solver(M, upper=True)
                else:
                    self._q.update(M, upper=True)
                x = self._q.solve(np.ascontiguousarray(RHS[b][self.perm]))
            except RuntimeError:  # zero pivot
                self._q = None
                continue
            if np.all(np.isfinite(x)):
                X[b, self.perm] = x
                ok[b] = True
        return X, ok

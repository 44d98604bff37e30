r"""Every sample's own KKT system on one fixed pattern: a sparse LDL^T per sample and iteration.

The batched active-set iteration (:func:`physgrad.circuit.solvers.bordered.pdas_batch`) needs, per
sample ``b`` and iteration, the solution of the equality-constrained problem on the working set
``W_b`` (conducting diodes), with the outputs free, nudged (:math:`\beta/2\,|Q^\top u - r|^2`) or
clamped (:math:`Q^\top u = r`). :mod:`~physgrad.circuit.solvers.bordered` borders one shared
factorization by each sample's differences (dense Schur systems of ``k`` corrections); when the
samples' sets differ from any shared reference in many rows, those dense systems dominate. This
route instead factorizes each sample's *own* system, on a pattern that does not depend on ``W``:

.. math::

    K_\delta(W) = \begin{pmatrix} H_\beta & D_W^\top & Q_c \\ D_W & -\Delta_W & 0 \\
                  Q_c^\top & 0 & -\Delta_c \end{pmatrix},\qquad H_\beta = H_0 + \beta Q Q^\top

with **every** diode row and (for a clamp) every output row present in the pattern: a row off the
working set has its coupling values set to 0 and ``-1/h`` on its diagonal (its multiplier is then
exactly 0), a row on it has its coupling ``D_r`` and ``-delta`` on its diagonal,
``delta = DELTA_REL / h`` (``h`` the largest diagonal conductance, S). ``K_delta`` is
quasi-definite (``H_beta`` positive definite, the (2,2) block negative definite), so an LDL^T
without pivoting exists in *any* symmetric ordering (Vanderbei 1995): one symbolic analysis (AMD)
per topology serves every sample, set, phase and parameter value
(:class:`physgrad.circuit.solvers.ldl.SymbolicLDL`; the numeric phase compiled with numba).

The regularization is removed by iterative refinement against the exact matrix ``K_0(W)``
(``delta = 0`` on the working rows): ``x <- x + K_delta^{-1} (b - K_0 x)`` contracts the error by
about ``delta * h = DELTA_REL`` per step (1e-8), so one step gives the exact equality-constrained
solution to rounding (measured: one step per sample-iteration on the issue-17 networks; a smaller
``delta`` makes the factorization's own rounding worse, the working rows being eliminated early with
pivots near ``-delta``). After a step ``K_delta dx = r`` the new residual is ``(K_delta - K_0) dx``,
``-delta dx`` on the working rows, so it needs no product. The refinement stops when the residual is
below ``REFINE_RTOL`` of the sample's current and voltage scales; a sample whose residual does not get
within 1e3 times that (dependent working rows with inconsistent thresholds: ``K_0`` singular) is
reported not solved (``ok = False``), as the Schur route reports a singular system; consistent
dependent rows give the unique voltages and one valid split of the currents. The answers are
certified by the caller exactly as before.

References
----------
R. J. Vanderbei, "Symmetric quasidefinite matrices", SIAM J. Optim. 5 (1995) 100-113.
P. E. Gill, M. A. Saunders, J. R. Shinnerl, "On the stability of Cholesky factorization for symmetric
quasidefinite systems", SIAM J. Matrix Anal. Appl. 17 (1996) 35-46.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.sparse as sp

from physgrad.circuit.solvers.ldl import SymbolicLDL

# delta = DELTA_REL / h on the working rows (h: the largest diagonal conductance, S)
DELTA_REL = 1e-8
# Refinement stops when max|b - K_0 x| <= REFINE_RTOL * the sample's current (A) and voltage (V) scales.
REFINE_RTOL = 1e-14
REFINE_MAX = 4


class QDPattern:
    """The fixed pattern of every ``K_delta(W)`` of one topology and its symbolic LDL^T.

    Parameters
    ----------
    H0 : sparse (n, n) — any matrix with the pattern of the reduced conductance matrix (S)
    D : sparse (m, n) — diode rows; Q : sparse (n, n_out) — output columns
    """

    def __init__(self, H0: sp.spmatrix, D: sp.spmatrix, Q: sp.spmatrix):
        H0, D, Q = sp.csr_matrix(H0), sp.csr_matrix(D), sp.csc_matrix(Q)
        self.n, self.m, self.n_out = H0.shape[0], D.shape[0], Q.shape[1]
        n, m, no = self.n, self.m, self.n_out

        def ones(A):  # the pattern of A
            return sp.csr_matrix((np.ones(A.nnz), A.indices, A.indptr), shape=A.shape) if A.nnz else A

        Hp = ones(H0) + ones(sp.csr_matrix(Q @ Q.T)) + sp.identity(n, format="csr")
        Qr = sp.csr_matrix(Q.T)
        P = sp.bmat([[Hp, ones(D).T, ones(Qr).T], [ones(D), sp.identity(m), None],
                     [ones(Qr), None, sp.identity(no)]], format="csr")
        self.sym = SymbolicLDL(P)
        self.N = P.shape[0]
        slot = self.sym.slot
        Dc, Qc = D.tocoo(), Qr.tocoo()
        self.d_slot = np.asarray(slot[n + Dc.row, Dc.col]).ravel() - 1
        self.d_row, self.d_val = Dc.row.astype(np.int64), Dc.data.copy()
        self.q_slot = np.asarray(slot[n + m + Qc.row, Qc.col]).ravel() - 1
        self.q_row, self.q_val = Qc.row.astype(np.int64), Qc.data.copy()
        ii = n + np.arange(m + no)
        self.diag_slot = np.asarray(slot[ii, ii]).ravel() - 1
        self.vQQ = self._embed(sp.csr_matrix(Q @ Q.T))
        self.D, self.DT, self.Q, self.QT = D, sp.csr_matrix(D.T), Q, sp.csr_matrix(Q.T)

    def _embed(self, M: sp.spmatrix) -> np.ndarray:
        """Values of an ``(n, n)`` matrix in the pattern's value vector."""
        N = self.N
        big = sp.bmat([[sp.csr_matrix(M), None], [None, sp.csr_matrix((N - self.n, N - self.n))]], format="csr")
        return self.sym.gather(big)

    def system(self, H0: sp.spmatrix) -> "QDSystem":
        return QDSystem(self, H0)


class QDSystem:
    """The batch's solves at one parameter value (``H0``, S) on a :class:`QDPattern`; the same
    interface as the Schur route's router (``solve(W, todo)``) for :func:`pdas_batch`.

    ``configure`` sets the batch's forces ``F`` (B, n) A, diode bounds ``d`` (B, m) V and the
    outputs (``out_rhs`` (B, n_out) V or None; ``beta`` S for a nudge, or ``clamp``).
    """

    def __init__(self, pattern: QDPattern, H0: sp.spmatrix):
        self.pattern = pattern
        self.n, self.m, self.n_out = pattern.n, pattern.m, pattern.n_out
        self.H0 = sp.csr_matrix(H0)
        self.vH = pattern._embed(self.H0)
        self.h = float(np.max(np.abs(self.H0.diagonal()), initial=0.0)) or 1.0
        self.stats = {"ldl_samples": 0, "refinements": 0}
        self._work: dict = {}

    def configure(self, F: np.ndarray, d: np.ndarray, out_rhs: Optional[np.ndarray], beta: float,
                  clamp: bool) -> "QDSystem":
        """Set the batch's data and outputs for the next :func:`pdas_batch`."""
        self.F, self.d, self.out_rhs = F, d, out_rhs
        self.beta = 0.0 if clamp or out_rhs is None else float(beta)
        self.clamp = bool(clamp) and out_rhs is not None
        self.H = self.H0 + self.beta * sp.csr_matrix(self.pattern.Q @ self.pattern.QT) if self.beta else self.H0
        self.f = F + self.beta * (out_rhs @ self.pattern.QT) if self.beta else F  # (B, n)
        self.base_vals = self.vH + self.beta * self.pattern.vQQ if self.beta else self.vH
        return self

    def output_gram(self) -> np.ndarray:
        """``Q^T H_0^{-1} Q`` (1/S), shape ``(n_out, n_out)``: one factorization of ``K(W = {})`` (every
        diode row off, so its ``u`` block is ``H_0^{-1}`` exactly)."""
        p = self.pattern
        no = p.n_out
        AX = np.repeat(self.vH[None, :], no, axis=0)
        AX[:, p.d_slot] = 0.0
        AX[:, p.q_slot] = 0.0
        AX[:, p.diag_slot] = -1.0 / self.h
        rhs = np.zeros((no, p.N))
        rhs[:, : p.n] = p.Q.toarray().T
        X, ok = p.sym.factor_solve(AX, rhs)
        if not np.all(ok):
            raise np.linalg.LinAlgError("H0 is not positive definite")
        return rhs[:, : p.n] @ X[:, : p.n].T

    def Du(self, U: np.ndarray) -> np.ndarray:
        """``D u`` per sample, ``U`` (B, n): shape ``(B, m)``."""
        return np.asarray(self.pattern.D @ U.T).T

    def _buf(self, name: str, rows: int, cols: int) -> np.ndarray:
        """A kept work array of shape ``(rows, cols)`` (contents undefined): fresh arrays of this size
        (~0.1-1 MB) cost more in first-touch page faults than the arithmetic on them (measured)."""
        held = self._work.get(name)
        if held is None or held.shape[0] < rows:
            held = self._work[name] = np.empty((max(rows, 2 * (0 if held is None else held.shape[0])), cols))
        return held[:rows]

    def _values(self, W: np.ndarray, delta_on: float) -> np.ndarray:
        """Value vectors ``(B, nnz)`` of ``K_delta(W)`` (``delta_on`` on the working rows)."""
        p = self.pattern
        B = W.shape[0]
        AX = self._buf("AX", B, p.sym.nnz)
        AX[:] = self.base_vals[None, :]
        AX[:, p.d_slot] = p.d_val[None, :] * W[:, p.d_row]
        diag = np.full((B, p.m + p.n_out), -1.0 / self.h)
        diag[:, : p.m] = np.where(W, -delta_on, -1.0 / self.h)
        if self.clamp:
            AX[:, p.q_slot] = p.q_val[None, :]
            diag[:, p.m:] = -delta_on
        else:
            AX[:, p.q_slot] = 0.0
        AX[:, p.diag_slot] = diag
        return AX

    def _residual(self, X: np.ndarray, W: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """``b - K_0(W) x`` per sample (the exact system: no ``delta``), shape ``(B, N)``."""
        p = self.pattern
        n, m = p.n, p.m
        U, L, M = X[:, :n], X[:, n:n + m], X[:, n + m:]
        R = self._buf("R", X.shape[0], p.N)
        Ut = U.T
        R[:, :n] = rhs[:, :n] - (self.H @ Ut).T - (p.DT @ (L * W).T).T
        R[:, n:n + m] = np.where(W, rhs[:, n:n + m] - (p.D @ Ut).T, rhs[:, n:n + m] + L / self.h)
        if self.clamp:
            R[:, :n] -= (p.Q @ M.T).T
            R[:, n + m:] = rhs[:, n + m:] - (p.QT @ Ut).T
        else:
            R[:, n + m:] = rhs[:, n + m:] + M / self.h
        return R

    def solve(self, W: np.ndarray, todo: np.ndarray):
        """The equality-constrained solves of the samples ``todo`` on their working sets ``W``
        (B, m): ``(u, lam, z_out, ok)`` as :func:`physgrad.circuit.solvers.bordered.solve_on_sets`."""
        p = self.pattern
        Wt = np.asarray(W[todo], bool)
        rhs = self._rhs(Wt, todo)
        # (X and the factors in the pattern's reused buffers: consumed before the next solve)
        X, ok, fac = p.sym.factor_solve(self._values(Wt, DELTA_REL / self.h), rhs, keep=True, reuse=True)
        self.stats["ldl_samples"] += int(todo.size)
        return self._refine(X, ok, Wt, todo, rhs, fac)

    def _rhs(self, Wt: np.ndarray, todo: np.ndarray) -> np.ndarray:
        p = self.pattern
        n, m = p.n, p.m
        rhs = self._buf("rhs", todo.size, p.N)
        rhs[:, :n] = self.f[todo]
        rhs[:, n:n + m] = np.where(Wt, self.d[todo], 0.0)
        rhs[:, n + m:] = self.out_rhs[todo] if self.clamp else 0.0
        return rhs

    def _refine(self, X, ok, Wt, todo, rhs, fac):
        """Iterative refinement of ``X`` against ``K_0`` (solves with ``K_delta``'s factors ``fac``);
        ``(u, lam, z_out, ok)``."""
        p = self.pattern
        n, m, no = p.n, p.m, p.n_out
        nb = todo.size
        # scales: currents (A) and voltages (V) per sample
        i_scale = np.maximum(np.max(np.abs(rhs[:, :n]), axis=1, initial=0.0), 1e-300)
        v_scale = np.maximum(1.0, np.max(np.abs(rhs[:, n:]), axis=1, initial=0.0))
        tol_i = (REFINE_RTOL * np.maximum(i_scale, self.h * v_scale))[:, None]
        tol_v = (REFINE_RTOL * v_scale)[:, None]

        def errors(R):  # max residual per sample against its tolerances
            return np.maximum(np.max(np.abs(R[:, :n]) / tol_i, axis=1), np.max(np.abs(R[:, n:]) / tol_v, axis=1))

        dX = self._buf("dX", nb, p.N)
        delta = DELTA_REL / self.h
        R = self._residual(X, Wt, rhs)
        for _ in range(REFINE_MAX):
            err = errors(R)
            go = ok & ~(err <= 1.0)
            if not np.any(go):
                break
            self.stats["refinements"] += int(go.sum())
            R[~go] = 0.0
            fac.solve(R, out=dX)
            dX[~go] = 0.0
            X += dX
            # the new residual without a product: K_delta dX = R, so b - K_0 (x + dX) = (K_delta - K_0) dX,
            # -delta dX on the working rows (and clamp rows), 0 elsewhere (up to the solve's rounding)
            R[:, :n] = 0.0
            R[:, n:n + m] = np.where(Wt, -delta * dX[:, n:n + m], 0.0)
            R[:, n + m:] = -delta * dX[:, n + m:] if self.clamp else 0.0
        else:
            err = errors(R)
        # a sample that does not refine (dependent working rows) is reported as not solved; the
        # 1e3 margin: the residual of an exact solve is rounding, far below the certificate's 1e-9
        ok = ok & (err <= 1e3) & np.all(np.isfinite(X), axis=1)
        u = X[:, :n]
        lam = np.where(Wt, X[:, n:n + m], 0.0)
        if self.clamp:
            z_out = X[:, n + m:].copy()
        elif self.beta and self.out_rhs is not None:
            z_out = self.beta * ((p.QT @ u.T).T - self.out_rhs[todo])
        else:
            z_out = np.zeros((nb, no))
        return u, lam, z_out, ok

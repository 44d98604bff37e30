r"""How to solve a sparse symmetric positive definite system of a circuit: chosen by estimated cost.

The reduced systems of circuits (a conductance Laplacian with the conducting diodes eliminated,
``A = T^T H T``, S) have very different shapes. Measured here (one BLAS thread, CPU seconds):

==========================  =======  ================  ==================  ========================
system                      n        SuperLU (MMD)     qdldl (AMD LDL^T)   Jacobi-CG to 1e-14
==========================  =======  ================  ==================  ========================
ladder (chain)              33,333   0.011 s           0.006 s             0.095 s (384 it.; a
                                                                           weakly damped chain:
                                                                           6,668 it., 1.2 s)
2-D grid 100 x 100          10,000   0.021 s           0.011 s             0.064 s (664 it.)
2-D grid 316 x 316          99,856   0.41 s            0.36 s              1.53 s (1,004 it.)
random graph, degree 4      10,000   1.07 s (5M fill)  2.81 s              0.030 s (220 it.)
==========================  =======  ================  ==================  ========================

So neither rule fits every circuit: direct factorization wins on chains, ladders and planar
meshes (small separators), preconditioned CG on expander-like random graphs (fill grows like
n^2). The cost model reads both from one reverse Cuthill-McKee ordering (``O(nnz)``): its
envelope :math:`e = \sum_i (i - \min_j\{j: A_{ij}\ne 0\})` bounds the fill of a profile
factorization (the minimum-degree fill was 3.6-4x below it on the grid and the random graph), and
:math:`n^2/e` estimates the number of BFS levels, i.e. the graph's diameter, which sets CG's
iteration count on Laplacians (``sqrt(cond)``). Estimated seconds:

.. math:: t_{\rm direct} = c_d\, e,\qquad t_{\rm cg} = c_i\,({\rm nnz} + 2n)\,\max(k_0, 2 n^2/e).

CG runs only where it is estimated cheaper, with at most the iterations the direct route would
cost (and never more than :data:`CG_MAX_ITER`); CG that has not converged by then is abandoned
for the direct factorization (counted as a fallback in the caller's ``stats``).

The direct factorization is qdldl's LDL^T with AMD ordering (the quasi-definite LDL^T that osqp
ships; about 2x faster than SuperLU on these SPD systems; its symbolic analysis is reused by
:meth:`SPDFactor.refactor` when only the values change); SuperLU with minimum degree on
``A + A^T`` where qdldl is absent or reports a zero pivot.

References
----------
Amestoy, Davis & Duff (1996), "An approximate minimum degree ordering algorithm", SIAM J. Matrix
Anal. Appl. 17; George & Liu (1981), "Computer solution of large sparse positive definite systems"
(envelope methods); Stellato et al. (2020), OSQP (qdldl).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse.csgraph import reverse_cuthill_mckee

from physgrad.circuit.sparse import factor as superlu_factor
from physgrad.types import SingularSystemError

try:  # installed with osqp (a cvxpy dependency); optional
    import qdldl as _qdldl
except ImportError:  # pragma: no cover - the SuperLU route covers it
    _qdldl = None

# Cost constants (seconds per envelope entry, per nonzero-and-iteration), fitted to the table above.
C_DIRECT = 4e-8
C_ITER = 3e-9
MIN_CG_ITER = 200
CG_MAX_ITER = 20_000
CG_RTOL = 1e-14
# Below this many unknowns the direct route is always taken (the estimate is not worth computing).
SMALL = 3000
METHODS = ("auto", "direct", "iterative")
_CONTROLLER = []


def blas_threads(n: Optional[int]):
    """Context limiting BLAS to ``n`` threads (``None``: unchanged). Small multi-right-hand-side
    solves ran 30-500x slower with two OpenBLAS threads than with one on a loaded 2-core machine
    (measured: 7 ms vs 17 us for a 100 x 100 LU solve with 4 right-hand sides), and thousands of
    CG dot products on a chain took 68 s CPU instead of 1.2 s with the default threads."""
    import contextlib

    if n is None:
        return contextlib.nullcontext()
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=int(n), user_api="blas")


@dataclass(frozen=True)
class Plan:
    """The chosen route for one system: ``method`` ("direct" or "iterative"), the estimated
    seconds of each route, and the iteration budget of CG (``0`` on the direct route)."""

    method: str
    t_direct: float
    t_iterative: float
    max_iter: int


def plan(A: sp.spmatrix, method: str = "auto") -> Plan:
    """The cost model of the module docstring for the SPD matrix ``A`` (``method`` forces a route;
    a forced iterative route keeps its budget and its fallback)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    n = A.shape[0]
    if n < SMALL and method == "auto":
        return Plan("direct", 0.0, np.inf, 0)
    A = sp.csr_matrix(A)
    perm = reverse_cuthill_mckee(A, symmetric_mode=True)
    B = A[perm][:, perm].tocsr()
    B.sort_indices()
    rows = np.arange(n)
    has = np.diff(B.indptr) > 0
    first = np.full(n, n, dtype=np.int64)
    first[has] = B.indices[B.indptr[:-1][has]]
    env = float(np.sum(np.maximum(rows - np.minimum(first, rows), 0))) + n
    levels = n * n / env
    iters = int(min(CG_MAX_ITER, max(MIN_CG_ITER, 2 * levels)))
    t_d = C_DIRECT * env
    t_i = C_ITER * (A.nnz + 2 * n) * iters
    if method == "direct" or (method == "auto" and t_d <= t_i):
        return Plan("direct", t_d, t_i, 0)
    budget = int(min(CG_MAX_ITER, max(MIN_CG_ITER, t_d / (C_ITER * (A.nnz + 2 * n)))))
    return Plan("iterative", t_d, t_i, budget)


class SPDFactor:
    """Direct factors of a sparse SPD (or quasi-definite) matrix: qdldl's LDL^T, else SuperLU.

    Raises :class:`SingularSystemError` when the matrix is exactly singular.
    """

    def __init__(self, A: sp.spmatrix):
        self.n = A.shape[0]
        self.backend = "qdldl" if _qdldl is not None else "superlu"
        self._f = None
        if self.n:
            self._factor(sp.csc_matrix(A))

    def _factor(self, A: sp.csc_matrix) -> None:
        if self.backend == "qdldl":
            try:
                self._f = _qdldl.Solver(sp.triu(A, format="csc"), upper=True)
                return
            except RuntimeError:  # zero pivot in the static ordering: SuperLU pivots
                self.backend = "superlu"
        self._f = superlu_factor(A)

    def refactor(self, A: sp.spmatrix) -> None:
        """New values, same sparsity pattern: qdldl reuses its ordering and elimination tree."""
        if not self.n:
            return
        if self.backend == "qdldl":
            try:
                self._f.update(sp.triu(sp.csc_matrix(A), format="csc"), upper=True)
                return
            except RuntimeError:
                self.backend = "superlu"
        self._f = superlu_factor(sp.csc_matrix(A))

    def solve(self, b: np.ndarray) -> np.ndarray:
        """``A^{-1} b`` for ``b`` of shape ``(n,)`` or ``(n, k)``."""
        b = np.asarray(b, dtype=float)
        if not self.n:
            return np.zeros(b.shape)
        if self.backend == "qdldl":
            if b.ndim == 1:
                x = self._f.solve(b)
            else:
                x = np.column_stack([self._f.solve(np.ascontiguousarray(b[:, j])) for j in range(b.shape[1])])
            if not np.all(np.isfinite(x)):
                raise SingularSystemError("zero pivot in the LDL^T factorization")
            return x
        return self._f.solve(np.asfortranarray(b))


def new_stats() -> dict:
    """Counters of :func:`solve_spd`: systems solved ``direct`` and ``iterative``, and
    ``iterative_fallbacks`` (CG abandoned for the direct route), ``cg_iterations``."""
    return {"direct": 0, "iterative": 0, "iterative_fallbacks": 0, "cg_iterations": 0}


def solve_spd(A: sp.spmatrix, b: np.ndarray, x0: Optional[np.ndarray] = None, method: str = "auto",
              stats: Optional[dict] = None, rtol: float = CG_RTOL) -> np.ndarray:
    """``A^{-1} b`` for a sparse SPD ``A`` by the route :func:`plan` picks.

    The iterative route is Jacobi-preconditioned CG to a relative residual ``rtol`` within the
    plan's iteration budget; when it stalls (budget spent, or a non-positive diagonal) the direct
    route solves the system and ``stats["iterative_fallbacks"]`` counts it.
    """
    stats = new_stats() if stats is None else stats
    if A.shape[0] == 0:
        return np.zeros(0)
    p = plan(A, method)
    if p.method == "iterative":
        A = sp.csr_matrix(A)
        diag = A.diagonal()
        if np.all(diag > 0):
            count = [0]

            def tick(_):
                count[0] += 1

            with blas_threads(1):  # thousands of tiny dot products: one thread
                x, info = spla.cg(A, b, x0=x0, rtol=rtol, atol=0.0, maxiter=p.max_iter, M=sp.diags(1.0 / diag),
                                  callback=tick)
            stats["cg_iterations"] += count[0]
            if info == 0:
                stats["iterative"] += 1
                return x
        stats["iterative_fallbacks"] += 1
    stats["direct"] += 1
    return SPDFactor(A).solve(b)

r"""Exact coordinate descent on the co-content, for arbitrary graphs.

Scellier (ICML 2024) minimizes a deep resistive network's co-content exactly one layer at a time:
with everything else fixed, a node's co-content is a 1-D quadratic and its minimizer under the
diode bounds is the clipped conductance-weighted mean of its neighbours,

.. math:: u_k \leftarrow \operatorname{clip}\Big(\frac{f_k - \sum_{j \ne k} H_{kj} u_j}{H_{kk}},
          \; lo_k, \; hi_k\Big).

On an arbitrary graph physgrad generalises this in two ways:

- Nodes are greedily coloured so that no two nodes of one colour share a resistor; each colour
  is updated at once (vectorised), exactly as the even/odd layers of a layered network.
- A diode between two free nodes couples them: such nodes are grouped into blocks (connected
  components of the diode graph) and each block is minimised *jointly* and exactly (a small QP
  solved on its active set). Block coordinate descent with constraints that never cross blocks
  converges to the global minimum of this strictly convex problem (Tseng 2001); updating a coupled
  node alone would not (it can stall on the constraint).

The loop stops when no node moved by more than ``tol`` (V) in a sweep.

References
----------
B. Scellier, "A fast algorithm to simulate nonlinear resistive networks", ICML 2024.
P. Tseng, "Convergence of a block coordinate descent method for nondifferentiable minimization",
J. Optim. Theory Appl. 109 (2001).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from physgrad.types import PhysgradError
from physgrad.circuit.solvers.kkt import Infeasible, dense_qp, multipliers
from physgrad.circuit.solvers.result import ReducedSolution
from physgrad.circuit.reduction import Problem


def accepts(problem: Problem) -> None:
    if problem.S.shape[0]:
        raise PhysgradError("the coordinate solver handles ideal diodes only; this circuit has Shockley diodes (use newton)")


@dataclass(frozen=True, eq=False)
class Schedule:
    """Precomputed structure: bounds, blocks and colours (all index arrays)."""

    lo: np.ndarray
    hi: np.ndarray
    colors: tuple  # per colour: (singletons (k,), tuple of multi-node blocks)
    block_data: dict  # block id -> BlockData


@dataclass(frozen=True, eq=False)
class BlockData:
    """A block of diode-coupled variables: its indices, dense sub-Hessian and constraints."""

    idx: np.ndarray
    H_bb: np.ndarray  # (k, k) S
    D_b: np.ndarray  # (m, k)
    d_b: np.ndarray  # (m,) V
    tol: tuple  # (V, A) active-set tolerances
    cache: dict = field(default_factory=dict)  # inverse KKT matrices per active set, last active set


def _bounds(problem: Problem):
    """Per-variable bounds from diode rows with one nonzero; the remaining rows couple two variables."""
    D = problem.D.tocsr()
    n = problem.n_u
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    nnz = np.diff(D.indptr)
    single = np.flatnonzero(nnz == 1)
    for i in single:
        k = D.indices[D.indptr[i]]
        s = D.data[D.indptr[i]]
        if s > 0:
            hi[k] = min(hi[k], problem.d[i] / s)
        else:
            lo[k] = max(lo[k], problem.d[i] / s)
    bad = np.flatnonzero(lo > hi)
    if bad.size:
        raise Infeasible(np.flatnonzero(np.isin(D.indices[D.indptr[single]], bad)), float(np.max(lo[bad] - hi[bad])))
    return lo, hi, np.flatnonzero(nnz >= 2)


def _blocks(n: int, D: sp.csr_matrix, coupling_rows: np.ndarray) -> np.ndarray:
    """Block label of each variable: connected components of the diodes between free nodes."""
    sub = D[coupling_rows].tocoo()
    first = np.full(len(coupling_rows), -1)
    a, b = [], []
    for r, col in zip(sub.row, sub.col):  # join each row's variables to its first one
        if first[r] < 0:
            first[r] = col
        else:
            a.append(first[r])
            b.append(col)
    graph = sp.csr_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def build_schedule(problem: Problem) -> Schedule:
    n = problem.n_u
    D = problem.D.tocsr()
    lo, hi, coupling = _bounds(problem)
    roots = _blocks(n, D, coupling)
    uniq, block_of = np.unique(roots, return_inverse=True)
    members = [[] for _ in uniq]
    for k, b in enumerate(block_of):
        members[b].append(k)
    # Block adjacency through H's off-diagonal entries.
    Hc = problem.H.tocoo()
    off = Hc.row != Hc.col
    bi, bj = block_of[Hc.row[off]], block_of[Hc.col[off]]
    keep = bi != bj
    adj = sp.csr_matrix((np.ones(int(keep.sum())), (bi[keep], bj[keep])), shape=(len(uniq), len(uniq)))
    color = np.full(len(uniq), -1)
    order = np.argsort(-np.diff(adj.indptr), kind="stable")  # largest degree first
    for b in order:
        used = set(color[adj.indices[adj.indptr[b]:adj.indptr[b + 1]]].tolist())
        c = 0
        while c in used:
            c += 1
        color[b] = c
    rows_of_block = {}
    for i in range(D.shape[0]):
        cols = D.indices[D.indptr[i]:D.indptr[i + 1]]
        b = block_of[cols[0]]
        if len(members[b]) > 1:
            rows_of_block.setdefault(b, []).append(i)
    colors = []
    for c in range(int(color.max(initial=-1)) + 1):
        bs = np.flatnonzero(color == c)
        singles = np.array([members[b][0] for b in bs if len(members[b]) == 1], dtype=np.int64)
        multis = tuple(int(b) for b in bs if len(members[b]) > 1)
        colors.append((singles, multis))
    H = problem.H.tocsr()
    i_scale = max(float(np.max(np.abs(problem.f), initial=0.0)), float(np.max(H.diagonal(), initial=0.0)))
    data = {}
    for b, rows in rows_of_block.items():
        idx = np.array(members[b])
        v_scale = max(1.0, float(np.max(np.abs(problem.d[rows]))))
        # 1e-11 relative: the same tolerances as the sparse active-set solver.
        data[b] = BlockData(idx, H[idx][:, idx].toarray(), problem.D[rows][:, idx].toarray(), problem.d[rows],
                            (1e-11 * v_scale, 1e-11 * i_scale * v_scale))
    return Schedule(lo, hi, tuple(colors), data)


def sweep(problem: Problem, sched: Schedule, u: np.ndarray, H_rows: dict) -> np.ndarray:
    """One exact sweep over all colours; returns the new ``u`` (the input is not modified).

    ``H_rows[c]`` holds the rows of ``H`` of colour ``c``'s variables (singletons first, then the
    blocks' variables in order): the residual ``f - H u`` of a whole colour is one sparse product,
    valid for every member since no two members of a colour share a resistor.
    """
    u = u.copy()
    h = problem.H.diagonal()
    for c, (singles, multis) in enumerate(sched.colors):
        var = H_rows[c][0]
        r = problem.f[var] - H_rows[c][1] @ u
        k = singles.size
        if k:
            u[singles] = np.clip((r[:k] + h[singles] * u[singles]) / h[singles], sched.lo[singles], sched.hi[singles])
        for b in multis:
            blk = sched.block_data[b]
            n_b = blk.idx.size
            f_b = r[k:k + n_b] + blk.H_bb @ u[blk.idx]
            k += n_b
            x, _, W = dense_qp(blk.H_bb, f_b, blk.D_b, blk.d_b, W0=blk.cache.get("W"), cache=blk.cache, tol=blk.tol)
            blk.cache["W"] = W
            u[blk.idx] = x
    return u


def diode_currents(problem: Problem, u: np.ndarray, tol_v: float) -> np.ndarray:
    """Diode currents at a fixed point: Kirchhoff's law on the diodes tight within ``tol_v`` (V)."""
    W = problem.d - problem.D @ u <= tol_v
    return np.maximum(multipliers(problem.D, problem.d, W, problem.f - problem.H @ u), 0.0)


def minimize(problem: Problem, *, tol: float = 1e-12, max_sweeps: int = 200000, u0=None) -> ReducedSolution:
    """Exact (block) coordinate descent until no variable moves by more than ``tol * v_scale`` (V).

    ``v_scale = max(1 V, max |d|, max |c|)``; the default ``tol = 1e-12`` puts the answer within
    about ``1e-12 / (1 - rho)`` V of the minimum, ``rho`` being the sweep's contraction rate.
    """
    accepts(problem)
    n = problem.n_u
    try:
        sched = build_schedule(problem)
    except Infeasible:
        return ReducedSolution(np.full(n, np.nan), np.zeros(problem.D.shape[0]), "infeasible", 0, "coordinate",
                           "ideal diodes force contradictory bounds on node voltages")
    v_scale = max(1.0, float(np.max(np.abs(problem.d), initial=0.0)), float(np.max(np.abs(problem.c), initial=0.0)))
    H = problem.H.tocsr()
    H_rows = {}
    for c, (singles, multis) in enumerate(sched.colors):
        var = np.concatenate([singles] + [sched.block_data[b].idx for b in multis]).astype(np.int64)
        H_rows[c] = (var, H[var])
    u = np.zeros(n) if u0 is None else np.asarray(u0, float).copy()
    u = np.clip(u, sched.lo, sched.hi)
    step = np.inf
    try:
        for it in range(1, max_sweeps + 1):
            new = sweep(problem, sched, u, H_rows)
            step = float(np.max(np.abs(new - u), initial=0.0))
            u = new
            if step <= tol * v_scale:
                lam = diode_currents(problem, u, 1e-12 * v_scale)
                return ReducedSolution(u, lam, "converged", it, "coordinate", f"last sweep moved {step:.2e} V",
                                   {"n_colors": len(sched.colors)})
    except Infeasible:
        return ReducedSolution(np.full(n, np.nan), np.zeros(problem.D.shape[0]), "infeasible", it, "coordinate",
                           "a block of coupled diodes has no feasible voltages")
    return ReducedSolution(u, diode_currents(problem, u, 1e-12 * v_scale), "max_iter", max_sweeps, "coordinate",
                       f"{max_sweeps} sweeps, last moved {step:.2e} V", {"n_colors": len(sched.colors)})

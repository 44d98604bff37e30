r"""What stays fixed while a circuit is trained on a dataset: its topology, as sparse linear maps.

Training changes two things only: the conductances ``g`` (S) and the values ``w`` of the
independent sources (V for voltage sources, A for current sources; the inputs ``x`` are some of
them). Everything else in the reduced problem of :mod:`physgrad.circuit.reduction` is fixed by the
graph, so it is built once per topology:

.. math::

    v = P u + c(w),\quad c = M_c w,\quad i_{\rm inj} = M_i w,\quad
    H_0(g) = (P^\top A)\,\mathrm{diag}(g)\,(A^\top P),\quad
    f(g, w) = P^\top M_i w - (P^\top A)\,\mathrm{diag}(g)\,(A^\top M_c) w,\quad
    d(w) = v_{th} - D_n M_c w,

with ``A`` the resistor incidence (nodes x resistors), ``M_c`` the voltage-source forest's offsets
(entries -1, 0, +1: each node's voltage relative to its tree's root is a signed sum of source
values), ``D_n`` the ideal diodes' node incidence. A batch of inputs is then three sparse
products; ``H_0`` of new conductances is one scatter into a fixed sparsity pattern. Memory is
O(nnz): nothing dense of size nodes x resistors, nothing cached per input.

A nudge ``beta/2 |v_o - y|^2`` and a clamp ``v_o = y`` act on the outputs only, through the
columns ``Q = P^T E_o`` (n_u x n_out): rank-``n_out`` updates of the shared system (see
:mod:`physgrad.circuit.solvers.bordered`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp

from physgrad.circuit.elements import Circuit, CurrentSource, IdealDiode, VoltageSource
from physgrad.circuit.graphs import offset_forest
from physgrad.circuit.reduction import Problem, build_problem
from physgrad.types import FREE, InfeasibleError, PhysgradError


def _offset_map(n: int, a: np.ndarray, b: np.ndarray) -> sp.csr_matrix:
    """Signed path matrix ``M`` (n x len(a)) of the spanning forest of the constraints
    ``x[a_k] - x[b_k] = w_k`` rooted at ground (index ``-1``) first: ``offset = M @ w``.

    The forest is the one :func:`physgrad.circuit.reduction.build_problem` uses (same traversal),
    so the offsets match its ``c`` for every ``w``.
    """
    aa = np.where(a < 0, n, a).astype(np.int64)
    bb = np.where(b < 0, n, b).astype(np.int64)
    forest = offset_forest(n + 1, aa, bb, np.zeros(len(a)), starts=(n,))
    rows: dict = {}

    def row(y):
        if y in rows:
            return rows[y]
        p = int(forest.parent[y])
        if p < 0:
            rows[y] = {}
            return rows[y]
        k = int(forest.parent_edge[y])
        sign = -1.0 if aa[k] == p else 1.0  # x_b = x_a - w (a the parent), x_a = x_b + w
        r = dict(row(p))
        r[k] = r.get(k, 0.0) + sign
        rows[y] = r
        return r

    ri, ci, vi = [], [], []
    for y in np.flatnonzero(forest.parent[:n] >= 0):
        for k, s in row(int(y)).items():
            ri.append(int(y))
            ci.append(k)
            vi.append(s)
    return sp.csr_matrix((vi, (ri, ci)), shape=(n, len(a)))


@dataclass(frozen=True, eq=False)
class Topology:
    """The fixed structure of one circuit under training (see module docstring).

    Build it with :meth:`Topology.build`. Sources are ordered voltage sources first (in
    ``circuit.arrays.vs_pos`` order), then current sources; ``inputs`` are positions in that
    order, ``w0`` the circuit's own values.

    Attributes
    ----------
    circuit, base : the circuit and its free :class:`Problem` at the circuit's own values
    input_names : names of the input sources; ``in_cols`` their positions among the sources
    outputs : (n_out,) node indices of the outputs
    P : csr (n_nodes, n_u); node_col : (n_nodes,) column of ``P`` holding each node (-1: fixed)
    Mc, Mi : csr (n_nodes, n_src); ``c = Mc w`` (V), ``inj = Mi w`` (A)
    D : csr (m, n_u) the ideal-diode rows (``base.D``); Dn : csr (m, n_nodes); vth : (m,) V
    Dd : csr (m, n_src), ``d = vth + Dd w``
    fixed_rows : positions (diode table) of diodes the sources fix; Df, vth_f : their voltages
    Q : csc (n_u, n_out) output columns; PA : csr (n_u, n_res) = P^T A; AM : csc (n_res, n_src)
    batchable : whether the batched solver handles this circuit (ideal diodes or none, no
        parallel diodes sharing a constraint); ``why_not`` says why not
    """

    circuit: Circuit
    base: Problem
    input_names: tuple
    in_cols: np.ndarray
    w0: np.ndarray
    outputs: np.ndarray
    P: sp.csr_matrix
    node_col: np.ndarray
    Mc: sp.csr_matrix
    Mi: sp.csr_matrix
    D: sp.csr_matrix
    Dn: sp.csr_matrix
    vth: np.ndarray
    Dd: sp.csr_matrix
    fixed_rows: np.ndarray
    Df: sp.csr_matrix
    vth_f: np.ndarray
    Q: sp.csc_matrix
    PA: sp.csr_matrix
    AM: sp.csc_matrix
    h_slots: np.ndarray
    h_res: np.ndarray
    h_sign: np.ndarray
    h_pattern: sp.csr_matrix
    batchable: bool
    why_not: str

    # --- construction ----------------------------------------------------------------------------
    @classmethod
    def build(cls, circuit: Circuit, inputs: Sequence[str] = (), outputs: Optional[Sequence[str]] = None
              ) -> "Topology":
        """Analyse ``circuit`` once: inputs are source names, outputs node names (default the targets)."""
        arr = circuit.arrays
        n = arr.n_nodes
        names = [str(s).strip().lower() for s in inputs]
        src_pos = np.concatenate([arr.vs_pos, arr.cs_pos]).astype(np.int64)
        src_index = {circuit.elements[p].name: i for i, p in enumerate(src_pos)}
        for s in names:
            el = circuit.element(s)
            if not isinstance(el, (VoltageSource, CurrentSource)):
                raise PhysgradError(f"input {s!r} is not an independent source")
        in_cols = np.array([src_index[s] for s in names], dtype=np.int64)
        w0 = np.concatenate([arr.vs_value, arr.cs_value])
        out_names = [t[0] for t in circuit.targets] if outputs is None else list(outputs)
        try:
            base = build_problem(circuit, FREE, outputs=out_names, conductances=np.ones_like(arr.g))
            shift = 0.0
        except (InfeasibleError, PhysgradError):
            # The circuit's own source values force a diode the sources fix (value-dependent, judged
            # per sample when solving); the structure is the same with every threshold raised alike.
            # Structural errors (source loops, floating nodes) are raised again here.
            if not arr.vth.size:
                raise
            shift = 1e6 + float(np.max(np.abs(np.concatenate([arr.vs_value, [0.0]])))) * len(arr.vs_value)
            raised = circuit.replace_elements([IdealDiode(e.name, e.anode, e.cathode, e.vth + shift)
                                               if isinstance(e, IdealDiode) else e for e in circuit.elements])
            base = build_problem(raised, FREE, outputs=out_names, conductances=np.ones_like(arr.g))
        out = base.outputs
        n_vs, n_cs = len(arr.vs_pos), len(arr.cs_pos)
        Mv = _offset_map(n, arr.vs_a, arr.vs_b)
        Mc = sp.hstack([Mv, sp.csr_matrix((n, n_cs))], format="csr")
        Acs = arr.A_cs
        Mi = sp.hstack([sp.csr_matrix((n, n_vs)), -Acs], format="csr")
        P = base.P.tocsr()
        node_col = np.full(n, -1, dtype=np.int64)
        Pc = P.tocoo()
        node_col[Pc.row] = Pc.col
        # diode rows in node space
        Dn_all = arr.A_dio.T.tocsr()  # (n_dio, n_nodes), +1 anode, -1 cathode
        rows = base.dio_rows
        Dn = Dn_all[rows].tocsr()
        vth = arr.vth[rows]
        Dd = (-(Dn @ Mc)).tocsr()
        fixed = base.dio_fixed_off
        Df = (Dn_all[fixed] @ Mc).tocsr()
        A = arr.A_res
        PA = (P.T @ A).tocsr()
        PA.eliminate_zeros()
        AM = (A.T @ Mc).tocsc()
        Q = P[out].T.tocsc() if len(out) else sp.csc_matrix((P.shape[1], 0))
        slots, res, sign, pattern = _h_pattern(PA)
        why = ""
        if arr.shk_a.size:
            why = "Shockley diodes (solved sample by sample by Newton)"
        elif len(rows) + len(fixed) != len(arr.vth) and not _parallel_groups_structural(
                Dn_all @ P, (Dn_all @ Mc)[:, in_cols], fixed):
            why = "parallel ideal diodes whose thresholds compare differently for different inputs"
        topo = cls(circuit, base, tuple(names), in_cols, w0, out, P, node_col, Mc, Mi, base.D.tocsr(), Dn, vth,
                   Dd, fixed, Df, arr.vth[fixed], Q, PA, AM, slots, res, sign, pattern, not why, why)
        # The maps must reproduce the reduction's own offsets and bounds at the circuit's values.
        c = Mc @ w0
        if not (np.allclose(c, base.c, rtol=0, atol=1e-12 * max(1.0, float(np.max(np.abs(w0), initial=0.0))))
                and np.allclose(vth + shift + Dd @ w0, base.d, rtol=1e-12, atol=1e-9)):
            object.__setattr__(topo, "batchable", False)
            object.__setattr__(topo, "why_not", "source offsets differ from the reduction's (internal check)")
        return topo

    # --- sizes -----------------------------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return self.P.shape[0]

    @property
    def n_u(self) -> int:
        return self.P.shape[1]

    @property
    def m(self) -> int:
        return self.D.shape[0]

    @property
    def n_src(self) -> int:
        return self.Mc.shape[1]

    @property
    def n_out(self) -> int:
        return len(self.outputs)

    # --- per batch -------------------------------------------------------------------------------
    def source_values(self, X: Optional[np.ndarray]) -> np.ndarray:
        """Source values ``w`` per sample, shape ``(B, n_src)`` (inputs from ``X`` (B, n_inputs))."""
        if X is None or not len(self.in_cols):
            return self.w0[None, :].copy()
        X = np.asarray(X, dtype=float)
        W = np.repeat(self.w0[None, :], X.shape[0], axis=0)
        W[:, self.in_cols] = X
        return W

    def offsets(self, W: np.ndarray) -> np.ndarray:
        """``c`` per sample (V), shape ``(B, n_nodes)``."""
        return np.asarray((self.Mc @ W.T).T)

    def injections(self, W: np.ndarray) -> np.ndarray:
        """Injected currents per sample (A), shape ``(B, n_nodes)``."""
        return np.asarray((self.Mi @ W.T).T)

    def bounds(self, W: np.ndarray) -> np.ndarray:
        """Diode bounds ``d`` per sample (V), shape ``(B, m)``."""
        return self.vth[None, :] + np.asarray((self.Dd @ W.T).T)

    def fixed_slack(self, W: np.ndarray) -> np.ndarray:
        """``vth - v_diode`` of the diodes the sources fix, per sample (V), shape ``(B, n_fixed)``."""
        return self.vth_f[None, :] - np.asarray((self.Df @ W.T).T)

    # --- per parameter value -----------------------------------------------------------------------
    def H0(self, g: np.ndarray) -> sp.csr_matrix:
        """Reduced conductance matrix ``P^T A diag(g) A^T P`` (S), sparse, fixed pattern."""
        data = np.bincount(self.h_slots, weights=g[self.h_res] * self.h_sign, minlength=self.h_pattern.nnz)
        pat = self.h_pattern
        return sp.csr_matrix((data, pat.indices, pat.indptr), shape=pat.shape)

    def Kf(self, g: np.ndarray) -> sp.csr_matrix:
        """``f = Kf w`` (A): ``P^T M_i - P^T A diag(g) A^T M_c``, shape ``(n_u, n_src)``."""
        return (self.P.T @ self.Mi - self.PA @ (self.AM.multiply(g[:, None]))).tocsr()

    def forces(self, g: np.ndarray, W: np.ndarray) -> np.ndarray:
        """``f`` per sample (A), shape ``(B, n_u)``."""
        return np.asarray((self.Kf(g) @ W.T).T)

    def diode_names(self, rows) -> tuple:
        """Names of the ideal diodes behind reduced rows ``rows``."""
        arr = self.circuit.arrays
        return tuple(self.circuit.elements[arr.dio_pos[self.base.dio_rows[int(r)]]].name for r in rows)

    def output_values(self, U: np.ndarray, C: np.ndarray) -> np.ndarray:
        """Output voltages ``Q^T u + c_o`` (V), shape ``(B, n_out)``."""
        return np.asarray((self.Q.T @ U.T).T) + C[:, self.outputs]

    def lift(self, U: np.ndarray, C: np.ndarray) -> np.ndarray:
        """Node voltages ``P u + c`` (V), shape ``(B, n_nodes)``."""
        return np.asarray((self.P @ U.T).T) + C


def _parallel_groups_structural(D_all: sp.spmatrix, DM_in: sp.spmatrix, fixed: np.ndarray) -> bool:
    """Whether diodes that share a reduced constraint (parallel diodes, rows of ``D_all``) have
    bounds that differ by constants: then which of them conducts (the lowest bound) does not depend
    on the inputs. ``DM_in``: how each diode's voltage offset depends on the inputs."""
    D_all = sp.csr_matrix(D_all)
    D_all.sort_indices()
    DM_in = sp.csr_matrix(DM_in).toarray() if DM_in.shape[1] else np.zeros((D_all.shape[0], 0))
    groups: dict = {}
    skip = set(int(k) for k in fixed)
    for k in range(D_all.shape[0]):
        if k in skip:
            continue
        lo, hi = D_all.indptr[k], D_all.indptr[k + 1]
        key = (D_all.indices[lo:hi].tobytes(), D_all.data[lo:hi].tobytes())
        groups.setdefault(key, []).append(k)
    return all(np.all(DM_in[g] == DM_in[g[0]]) for g in groups.values())


def _h_pattern(PA: sp.csr_matrix):
    """Scatter map of ``H0 = PA diag(g) PA^T``: every resistor's entries into a fixed CSR pattern."""
    n_u, n_res = PA.shape
    C = PA.tocsc()
    C.sort_indices()
    cnt = np.diff(C.indptr)
    if np.any(cnt > 2):  # cannot happen: a resistor touches two nodes
        raise PhysgradError("internal error: a resistor touches more than two reduced variables")
    rows_i, rows_j, res, sign = [], [], [], []
    for k_count in (1, 2):
        ks = np.flatnonzero(cnt == k_count)
        if not ks.size:
            continue
        starts = C.indptr[ks]
        if k_count == 1:
            j = C.indices[starts]
            v = C.data[starts]
            rows_i.append(j)
            rows_j.append(j)
            res.append(ks)
            sign.append(v * v)
        else:
            j1, j2 = C.indices[starts], C.indices[starts + 1]
            v1, v2 = C.data[starts], C.data[starts + 1]
            rows_i += [j1, j2, j1, j2]
            rows_j += [j1, j2, j2, j1]
            res += [ks, ks, ks, ks]
            sign += [v1 * v1, v2 * v2, v1 * v2, v1 * v2]
    if rows_i:
        ri, rj, rk, sg = (np.concatenate(x) for x in (rows_i, rows_j, res, sign))
    else:
        ri = rj = rk = np.zeros(0, np.int64)
        sg = np.zeros(0)
    # every diagonal entry exists (even at zero conductance) so the pattern is fixed
    ri = np.concatenate([ri, np.arange(n_u)])
    rj = np.concatenate([rj, np.arange(n_u)])
    key = ri * max(n_u, 1) + rj
    uniq, slot = np.unique(key, return_inverse=True)
    pattern = sp.csr_matrix((np.ones(len(uniq)), (uniq // max(n_u, 1), uniq % max(n_u, 1))), shape=(n_u, n_u))
    pattern.sort_indices()
    # map each unique key to its position in CSR data order (csr from sorted COO keeps the order)
    n_entries = len(rk)
    return slot[:n_entries].astype(np.int64), rk.astype(np.int64), sg.astype(float), pattern

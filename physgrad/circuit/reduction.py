r"""The circuit's total co-content as a reduced convex problem (Millar 1951).

The steady state of a circuit of resistors, diodes and independent sources minimizes its total
co-content subject to Kirchhoff's voltage law. physgrad eliminates the voltage sources exactly:
they form a forest (a loop is an error), each tree's node voltages are its root's voltage plus
fixed offsets, so every node voltage is

.. math:: v = P u + c,

with one free variable ``u_j`` per tree that does not contain ground (``P`` is a 0/1 selection
matrix, shape ``(n_nodes, n_u)``; ``c`` the offsets, V). In ``u`` the problem reads

.. math::

    \min_u \; \tfrac12 u^T H u - f^T u + \sum_k J_k(S_k u + e_k)
    \quad \text{s.t.} \quad D u \le d,

where ``H = P^T (L + beta E_o) P`` (S) with ``L`` the conductance Laplacian and ``E_o`` the
selector of the nudged outputs, ``f = P^T (i_inj + beta y - (L + beta E_o) c)`` (A), each ideal
diode contributes a row of ``D u <= d`` (``v_a - v_c <= vth``; its current is the Lagrange
multiplier), and each Shockley diode a smooth convex co-content ``J_k`` of its voltage
``S_k u + e_k``. Clamped outputs (contrastive and coupled learning) are voltage sources to ground.

References
----------
W. Millar, "Some general theorems for non-linear systems possessing resistance",
Phil. Mag. 42 (1951).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp

from physgrad.circuit.elements import Circuit
from physgrad.types import FREE, BadArgumentError, InfeasibleError, Nudge, PhysgradError, as_float_array
from physgrad.circuit.graphs import node_list, offset_forest, unreachable_from_ground
from physgrad.circuit.sparse import solve as sparse_solve


@dataclass(frozen=True, eq=False)
class Problem:
    """A circuit's co-content in the reduced variables ``u`` (see module docstring).

    Attributes
    ----------
    circuit : Circuit
    P : sparse (n_nodes, n_u)
    c : (n_nodes,) V
    H : sparse csr (n_u, n_u), S, symmetric positive definite on circuits that pass validation
        (positive semidefinite when only Shockley diodes tie a subnetwork down)
    f : (n_u,) A
    const : float, W, the co-content's constant part (so that ``E(u)`` is the true total)
    D : sparse csr (n_dio_active, n_u); d : (n_dio_active,) V
    dio_rows : (n_dio_active,) positions (in the circuit's ideal-diode table) of the rows of ``D``
    dio_fixed_off : positions of ideal diodes whose voltage the sources fix below threshold
    S : sparse csr (n_shk, n_u); e : (n_shk,) V — Shockley diode voltages ``S u + e``
    vs_fixed_nodes : bool (n_nodes,), nodes whose voltage is fixed (trees containing ground)
    nudge : Nudge; outputs : (n_out,) node indices of the nudged or clamped outputs
    inj : (n_nodes,) A — injected currents including the nudge's ``beta y``
    g : (n_resistors,) S — the conductances used; y : (n_out,) V — targets of a beta-nudge
    dio_shares : dict, diode-table position -> positions of parallel diodes (equal thresholds)
        sharing its current equally
    """

    circuit: Circuit
    P: sp.csr_matrix
    c: np.ndarray
    H: sp.csr_matrix
    f: np.ndarray
    const: float
    D: sp.csr_matrix
    d: np.ndarray
    dio_rows: np.ndarray
    dio_fixed_off: np.ndarray
    S: sp.csr_matrix
    e: np.ndarray
    nudge: Nudge
    outputs: np.ndarray
    inj: np.ndarray
    g: np.ndarray
    y: np.ndarray
    dio_shares: dict

    @property
    def n_u(self) -> int:
        return self.H.shape[0]

    def voltages(self, u: np.ndarray) -> np.ndarray:
        """Node voltages ``v = P u + c`` (V), shape ``(n_nodes,)``."""
        return self.P @ u + self.c

    def quadratic_energy(self, u: np.ndarray) -> float:
        """``1/2 u'Hu - f'u + const`` (W): the co-content without diode terms."""
        return float(0.5 * u @ (self.H @ u) - self.f @ u + self.const)

    @cached_property
    def columns(self) -> np.ndarray:
        """Reduced column of every node, shape ``(n_nodes + 1,)``: ``-1`` for nodes the sources fix
        and for ground (the last entry, so that index ``-1`` = ground maps to ``-1``)."""
        col = np.full(self.circuit.arrays.n_nodes + 1, -1, dtype=np.int64)
        coo = self.P.tocoo()
        col[coo.row] = coo.col
        return col

    @cached_property
    def voltage_scale(self) -> float:
        """The circuit's voltage scale from its data alone (V): ``max(1 V, max |c|, max |d|, max |e|,
        max |y|)`` (source-fixed voltages, ideal-diode bounds, Shockley-diode offsets, nudge targets);
        never from a candidate answer, so that a wrong answer cannot widen its own tolerance."""
        return max(1.0, *(float(np.max(np.abs(a), initial=0.0)) for a in (self.c, self.d, self.e, self.y)))

    def current_scale(self, u: np.ndarray, i_shk: np.ndarray, slope_shk: np.ndarray,
                      lam: Optional[np.ndarray] = None) -> np.ndarray:
        r"""Each free (super)node's own current scale (A), shape ``(n_u,)``: the KCL tolerances.

        .. math:: s_j = \sum_{k \ni j} \big(|i_k| + G_k V\big)

        summed over the elements ``k`` incident on the (super)node (elements inside a supernode, whose
        currents cancel in its KCL, are left out), with ``G_k`` their conductances (resistors' ``g``,
        Shockley diodes' slopes ``I'(v)``, a beta-nudge's ``beta``; S), ``V`` the circuit's voltage
        scale from its data (:attr:`voltage_scale`, V). Current sources and ideal diodes count their currents only. A KCL residual ``r_j`` is resolved
        to relative accuracy ``rtol`` when ``|r_j| <= rtol * s_j``: then ``r_j`` is what the node's
        own currents would carry after a voltage error of about ``rtol V``, and a node held only by
        diodes carrying 1e-14 A gets a tolerance of that order, not the circuit's largest current.
        ``V`` comes from the circuit's data, never from the answer being judged: an answer wrong by
        1e12 V cannot widen its own tolerance (with ``G_k |v|`` in its place, a forward diode's slope
        times a runaway voltage did). ``G_k V`` also bounds the residual's round-off wherever node
        voltages stay within ``V`` (no current source drives them beyond the sources' voltages).

        Parameters
        ----------
        u : (n_u,) V
        i_shk, slope_shk : (n_shk,) A and S
            Shockley diode currents and slopes at ``u``.
        lam : (n_rows_of_D,) A, optional
            Ideal-diode currents.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            return self._current_scale(u, i_shk, slope_shk, lam)

    def current_scale_map(self):
        """:meth:`current_scale` (without ideal-diode currents) as a callable ``(u, i_shk, slope_shk) ->
        (n_u,)`` A for many calls on this problem: :func:`node_current_scales`' sums precomputed as
        incidence matrices (:class:`NodeScaleMap`; equal to round-off, the terms summed in another
        order). ``None`` with a beta-nudge (its term depends on the outputs; use :meth:`current_scale`)."""
        if self.nudge.beta != 0.0 and len(self.outputs):
            return None
        return NodeScaleMap(self)

    def _current_scale(self, u, i_shk, slope_shk, lam):
        arr = self.circuit.arrays
        vg = np.concatenate([self.voltages(u), [0.0]])
        out = node_current_scales(self.columns, arr, self.n_u, self.g, np.array([self.voltage_scale]), vg[None, :],
                                  np.asarray(i_shk)[None, :], np.asarray(slope_shk)[None, :],
                                  np.asarray(arr.cs_value)[None, :], self.nudge.beta, self.outputs,
                                  np.asarray(self.y)[None, :])[0]
        if lam is not None and len(lam):
            out += abs(self.D).T @ np.abs(lam)
        return out


def node_current_scales(col, arr, n_u: int, g, V, VG, I_shk, SL_shk, CS, beta: float, outputs, Y) -> np.ndarray:
    r"""Each free (super)node's own current scale (A) for a batch: the formula of
    :meth:`Problem.current_scale` (the one definition; that method calls this with a batch of one).

    Parameters
    ----------
    col : (n_nodes + 1,) reduced column of every node (-1: fixed, last entry ground)
    arr : the circuit's arrays (incidences of resistors, current sources, Shockley diodes)
    n_u : number of reduced variables; g : (n_res,) S; V : (B,) V, voltage scales
    VG : (B, n_nodes + 1) V, node voltages with ground (0) last
    I_shk, SL_shk : (B, n_shk) A and S; CS : (B, n_cs) A current-source values
    beta : float S (0: free); outputs : (n_out,) node indices; Y : (B, n_out) V targets

    Returns
    -------
    (B, n_u) A; ideal-diode currents are added by the caller.
    """
    B = VG.shape[0]
    out = np.zeros(B * n_u)
    base = (np.arange(B) * n_u)[:, None]

    def add(a, b, amount):
        ja, jb = col[a], col[b]
        live = ja != jb
        for j in (ja, jb):
            m = live & (j >= 0)
            if np.any(m):
                out[:] += np.bincount((base + j[m][None, :]).ravel(), np.asarray(amount)[:, m].ravel(),
                                      minlength=B * n_u)

    with np.errstate(over="ignore", invalid="ignore"):
        add(arr.res_a, arr.res_b, g[None, :] * (np.abs(VG[:, arr.res_a] - VG[:, arr.res_b]) + V[:, None]))
        add(arr.cs_a, arr.cs_b, np.abs(np.broadcast_to(CS, (B, len(arr.cs_a)))))
        add(arr.shk_a, arr.shk_b, np.abs(I_shk) + np.abs(SL_shk) * V[:, None])
        if beta != 0.0 and len(outputs):
            jo = col[outputs]
            m = jo >= 0
            if np.any(m):
                amount = abs(beta) * (np.abs(VG[:, outputs] - Y) + V[:, None])
                out[:] += np.bincount((base + jo[m][None, :]).ravel(), amount[:, m].ravel(), minlength=B * n_u)
    return out.reshape(B, n_u)


# Incidence matrices with at most this many entries are dense (scipy.sparse's ~10 us per product
# dominated the 100-node Shockley grid's Newton iterations).
_SCALE_DENSE_MAX = 250_000


def _abs_incidence(col, a, b, n_u: int):
    """``(n_u, len(a))`` 0/1 matrix: element ``k`` (nodes ``a_k``, ``b_k``) counted at each of its two
    reduced columns that is free, unless both ends fold into one (super)node (as in
    :func:`node_current_scales`)."""
    ja, jb = col[a], col[b]
    live = ja != jb
    rows, cols = [], []
    for j in (ja, jb):
        m = live & (j >= 0)
        rows.append(j[m])
        cols.append(np.flatnonzero(m))
    r, c = np.concatenate(rows), np.concatenate(cols)
    if n_u * len(a) <= _SCALE_DENSE_MAX:
        M = np.zeros((n_u, len(a)))
        np.add.at(M, (r, c), 1.0)
        return M
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(n_u, len(a)))


class NodeScaleMap:
    r"""Each free (super)node's current scale :math:`s_j` (A) of one problem without a beta-nudge, for
    repeated calls (a Newton iteration's KCL tolerances): the formula of :func:`node_current_scales`
    as :math:`s = A_R (g (|v_a - v_b| + V)) + A_C |i_C| + A_D (|i_D| + |I'_D| V)` with the 0/1
    incidence matrices ``A`` (``(n_u, n_elements)``) built once. Equal to :func:`node_current_scales`
    to round-off (its bincounts add the same terms in element order)."""

    def __init__(self, problem: "Problem"):
        arr = problem.circuit.arrays
        col, n_u = problem.columns, problem.n_u
        self.problem, self.arr = problem, arr
        self.V = problem.voltage_scale
        self.A_res = _abs_incidence(col, arr.res_a, arr.res_b, n_u)
        self.A_shk = _abs_incidence(col, arr.shk_a, arr.shk_b, n_u)
        cs = np.abs(np.asarray(arr.cs_value, float))
        self.base = _abs_incidence(col, arr.cs_a, arr.cs_b, n_u) @ cs if len(cs) else np.zeros(n_u)
        self.g = problem.g
        P = problem.P
        self.P = P.toarray() if P.shape[0] * P.shape[1] <= _SCALE_DENSE_MAX else P
        self.c = problem.c

    def __call__(self, u: np.ndarray, i_shk: np.ndarray, slope_shk: np.ndarray) -> np.ndarray:
        """``(n_u,)`` A at ``u`` (V) with Shockley currents ``i_shk`` (A) and slopes ``slope_shk`` (S)."""
        arr, V = self.arr, self.V
        with np.errstate(over="ignore", invalid="ignore"):
            vg = np.concatenate([self.P @ u + self.c, [0.0]])  # Problem.voltages, P dense when small
            out = self.base + self.A_res @ (self.g * (np.abs(vg[arr.res_a] - vg[arr.res_b]) + V))
            if len(arr.shk_a):
                out = out + self.A_shk @ (np.abs(i_shk) + np.abs(slope_shk) * V)
        return out


def output_nodes(circuit: Circuit, outputs: Optional[Sequence[str]]) -> np.ndarray:
    """Indices of the output nodes (default: the circuit's ``.target`` nodes), shape ``(n_out,)``."""
    if outputs is not None and (isinstance(outputs, (str, bytes)) or not hasattr(outputs, "__iter__")):
        raise BadArgumentError(f"outputs must be a sequence of node names, got {type(outputs).__name__} {outputs!r:.60}")
    names = [t[0] for t in circuit.targets] if outputs is None else list(outputs)
    return np.array([circuit.index_of_node(n) for n in names], dtype=np.int64)


def nudge_values(circuit, nudge: Nudge, outputs: np.ndarray, key: str) -> np.ndarray:
    """The nudge's ``target`` or ``clamp`` (``key``) as one value per output node (V); a missing target
    defaults to the circuit's ``.target`` values."""
    values = getattr(nudge, key)
    if values is None:
        if key == "target" and circuit.targets:
            return np.array([t[1] for t in circuit.targets])
        raise PhysgradError(f"the nudge needs a {key} for the {len(outputs)} output nodes")
    values = as_float_array(values, f"nudge {key}").reshape(-1)
    if values.shape != (len(outputs),):
        raise PhysgradError(f"nudge {key} has {values.size} values for {len(outputs)} output nodes")
    return values


def _source_forest(circuit: Circuit, edges):
    """Offsets of every node from its tree's root. ``edges``: (name, a, b, value) with v_a - v_b = value.

    Returns (root, offset) per node (ground = index n, the root of its tree). A source closing a
    loop is an error naming every source of the loop.
    """
    n = circuit.arrays.n_nodes
    a = np.array([n if e[1] < 0 else e[1] for e in edges], dtype=np.int64)
    b = np.array([n if e[2] < 0 else e[2] for e in edges], dtype=np.int64)
    forest = offset_forest(n + 1, a, b, np.array([e[3] for e in edges], dtype=float), starts=(n,))
    if not forest.tree.all():
        k = int(np.flatnonzero(~forest.tree)[0])
        names = [edges[j][0] for j in forest.path_edges(int(a[k]), int(b[k]))] + [edges[k][0]]
        raise PhysgradError(
            "voltage sources form a loop (or fix one node twice): " + ", ".join(sorted(names))
            + "; the loop's currents are not determined (and its voltages may contradict)"
        )
    return forest.root, forest.offset


def _check_connected(circuit: Circuit, tree_root: np.ndarray, beta: float, outputs: np.ndarray, g: np.ndarray):
    """Every node needs a conducting path (resistor with ``g > 0``, Shockley diode, voltage source) to ground."""
    arr = circuit.arrays
    n = arr.n_nodes
    G = n  # ground's index in the graph
    keep = g > 0
    a = np.concatenate([arr.res_a[keep], arr.shk_a, np.arange(n), outputs if beta > 0 else []]).astype(np.int64)
    b = np.concatenate([arr.res_b[keep], arr.shk_b, tree_root, np.full(len(outputs) if beta > 0 else 0, G)])
    floating = [circuit.nodes[i] for i in unreachable_from_ground(n, a, b)]
    if floating:
        raise PhysgradError(
            f"floating subnetwork: node(s) {node_list(floating)} have no path through resistors, Shockley diodes or "
            "voltage sources to ground; their voltages are not unique"
        )


def check_arguments(circuit, nudge) -> None:
    """:class:`BadArgumentError` unless ``circuit`` is a :class:`Circuit` and ``nudge`` a :class:`Nudge`."""
    if not isinstance(circuit, Circuit):
        raise BadArgumentError(f"expected a physgrad Circuit, got {type(circuit).__name__} {circuit!r:.60}")
    if not isinstance(nudge, Nudge):
        raise BadArgumentError(f"nudge must be a physgrad Nudge, got {type(nudge).__name__} {nudge!r:.60}")


def build_problem(
    circuit: Circuit,
    nudge: Nudge = FREE,
    outputs: Optional[Sequence[str]] = None,
    conductances: Optional[np.ndarray] = None,
) -> Problem:
    """Validate ``circuit`` and reduce its co-content to a :class:`Problem`.

    Parameters
    ----------
    circuit : Circuit
    nudge : Nudge
        ``beta`` adds ``beta/2 sum (v_o - y_o)^2`` (targets from the nudge or the circuit's
        ``.target`` lines); ``clamp`` fixes the outputs.
    outputs : node names, optional
        Output nodes (default: the circuit's target nodes).
    conductances : (n_resistors,) S, optional
        Replaces the resistors' conductances (fast path for training).

    Raises
    ------
    PhysgradError
        Loops of voltage sources, floating subnetworks, a diode the sources hold exactly at its
        threshold, a nudge making the energy non-convex (with the largest admissible ``|beta|``);
        :class:`BadArgumentError` (a ``PhysgradError``) for arguments of the wrong type or shape.
    InfeasibleError
        An ideal diode the sources force beyond its threshold.
    """
    check_arguments(circuit, nudge)
    if circuit.transistors:
        names = ", ".join(el.name for el in circuit.transistors[:5])
        raise PhysgradError(
            f"the circuit has transistors ({names}{' ...' if len(circuit.transistors) > 5 else ''}): a transistor has "
            "no co-content (its channel is not reciprocal), so neither the co-content solvers nor equilibrium "
            "propagation apply. Solve it with physgrad.circuit.solve (solver mna-newton, which auto chooses); take "
            "the exact gradient with physgrad.circuit.adjoint.mna_gradient (physgrad grad --method exact); train it "
            "with coupled learning on free and clamped MNA solves (physgrad.netlists.twin)")
    if circuit.controlled_sources:
        names = ", ".join(el.name for el in circuit.controlled_sources[:5])
        raise PhysgradError(
            f"the circuit has controlled sources ({names}{' ...' if len(circuit.controlled_sources) > 5 else ''}): "
            "its co-content is not this reduced problem. Solve it with physgrad.circuit.solve (energy-based "
            "amplifier circuits go through their equivalent circuit, the others through the lcp or mna-newton "
            "solvers); train or estimate gradients by EP on physgrad.circuit.amplifiers.analyze(circuit)"
            ".equivalent().circuit (energy-based ones: multiply each conductance's gradient by its "
            "conductance_scale), or take the exact gradient of any of them with "
            "physgrad.circuit.adjoint.mna_gradient (physgrad grad --method exact)")
    arr = circuit.arrays
    n = arr.n_nodes
    out = output_nodes(circuit, outputs) if (not nudge.is_free or outputs is not None) else np.zeros(0, np.int64)
    edges = [(circuit.elements[p].name, a, b, v) for a, b, v, p in zip(arr.vs_a, arr.vs_b, arr.vs_value, arr.vs_pos)]
    if nudge.clamp is not None:
        clamp = nudge_values(circuit, nudge, out, "clamp")
        edges += [(f"clamp({circuit.nodes[o]})", o, -1, v) for o, v in zip(out, clamp)]
    g = arr.g if conductances is None else as_float_array(conductances, "conductances (S)", arr.g.shape,
                                                          nonnegative=True)
    root, offset = _source_forest(circuit, edges)
    _check_connected(circuit, root[:n], nudge.beta, out, g)

    G = n
    rows = np.flatnonzero(np.asarray(root[:n]) != G).astype(np.int64)
    free_roots = np.unique(root[rows])
    cols = np.searchsorted(free_roots, root[rows]).astype(np.int64)
    P = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, len(free_roots)))
    c = offset[:n].copy()
    quad = _quadratic_part(circuit, P, c, g, nudge, out)

    def diode_rows(a, b):
        Pa = _rows_or_zero(P, a)
        Pb = _rows_or_zero(P, b)
        ca = np.where(a >= 0, c[np.maximum(a, 0)], 0.0)
        cb = np.where(b >= 0, c[np.maximum(b, 0)], 0.0)
        return (Pa - Pb).tocsr(), ca - cb

    D_all, off = diode_rows(arr.dio_a, arr.dio_b)
    d_all = arr.vth - off
    D_all.eliminate_zeros()
    fixed = np.diff(D_all.indptr) == 0
    for k in np.flatnonzero(fixed):
        if d_all[k] <= 0:
            el = circuit.elements[arr.dio_pos[k]]
            message = (f"diode {el.name} is forced forward by voltage sources: v({el.anode}) - v({el.cathode}) = "
                       f"{arr.vth[k] - d_all[k]:.6g} V " + ("exceeds" if d_all[k] < 0 else "equals")
                       + f" its threshold {arr.vth[k]:.6g} V, so its current is "
                       + ("infinite (infeasible)" if d_all[k] < 0 else "not determined"))
            if d_all[k] < 0:  # no steady state: not solved (exit 1)
                raise InfeasibleError(message, (el.name,))
            raise PhysgradError(message)  # any current is a steady state: an ill-posed circuit (exit 2)
    active, shares = _distinct_rows(D_all, d_all, np.flatnonzero(~fixed))
    S, e = diode_rows(arr.shk_a, arr.shk_b)
    return Problem(
        circuit=circuit, P=P, c=c, D=D_all[active].tocsr(), d=d_all[active], dio_rows=active,
        dio_fixed_off=np.flatnonzero(fixed), S=S, e=e, outputs=out, dio_shares=shares, **quad,
    )


def _quadratic_part(circuit: Circuit, P, c, g, nudge: Nudge, out) -> dict:
    """``H, f, const, inj, y, g, nudge`` of :class:`Problem` for conductances ``g`` and ``nudge``.

    Assembled resistor by resistor in the reduced variables: with ``j_a, j_b`` the columns of ``P``
    holding the resistor's nodes (none for nodes fixed by sources) and ``dc = c_a - c_b``, the term
    ``g/2 (u_ja - u_jb + dc)^2`` adds ``g`` to ``H[ja, ja]`` and ``H[jb, jb]``, ``-g`` to ``H[ja, jb]``,
    ``-g dc`` to ``f[ja]`` and ``+g dc`` to ``f[jb]``. This never forms the full Laplacian: a resistor
    from a fixed input to a free node costs one diagonal entry (DRN input layers).
    """
    arr = circuit.arrays
    n_u = P.shape[1]
    col = np.full(arr.n_nodes + 1, -1, dtype=np.int64)  # last entry: ground
    rows_of_P = P.tocoo()
    col[rows_of_P.row] = rows_of_P.col
    cg = np.concatenate([c, [0.0]])
    ja, jb = col[arr.res_a], col[arr.res_b]
    dc = cg[arr.res_a] - cg[arr.res_b]
    live = ja != jb  # a resistor inside one supernode has a fixed voltage
    gl, ja, jb, dcl = g[live], ja[live], jb[live], dc[live]
    has_a, has_b = ja >= 0, jb >= 0
    diag = np.bincount(ja[has_a], gl[has_a], minlength=n_u) + np.bincount(jb[has_b], gl[has_b], minlength=n_u)
    f = np.bincount(jb[has_b], (gl * dcl)[has_b], minlength=n_u) - np.bincount(ja[has_a], (gl * dcl)[has_a],
                                                                               minlength=n_u)
    with np.errstate(over="ignore", invalid="ignore"):
        const = 0.5 * float(g @ dc**2)
    both = has_a & has_b
    inj = arr.injection()
    f = f + P.T @ inj
    const -= float(inj @ c)
    if nudge.beta != 0.0:
        y = nudge_values(circuit, nudge, out, "target")
        jo = col[out]
        free = jo >= 0
        diag = diag + np.bincount(jo[free], np.full(int(free.sum()), nudge.beta), minlength=n_u)
        f = f + np.bincount(jo[free], nudge.beta * (y - c[out])[free], minlength=n_u)
        const += 0.5 * nudge.beta * float(np.sum((c[out] - y) ** 2))
        inj = inj.copy()
        np.add.at(inj, out, nudge.beta * y)
    else:
        y = np.zeros(0)
    off_r = np.concatenate([ja[both], jb[both]])
    off_c = np.concatenate([jb[both], ja[both]])
    off_v = -np.concatenate([gl[both], gl[both]])
    idx = np.arange(n_u)
    H = sp.csr_matrix((np.concatenate([diag, off_v]), (np.concatenate([idx, off_r]), np.concatenate([idx, off_c]))),
                      shape=(n_u, n_u))
    if nudge.beta < 0:
        _check_negative_nudge(H, P, out, nudge.beta)
    return dict(H=H, f=np.asarray(f, dtype=float), const=const, inj=inj, y=y, g=g, nudge=nudge)


def reparametrize(problem: Problem, conductances: np.ndarray, nudge: Nudge = FREE) -> Problem:
    """``problem`` with new conductances (S) and a new beta-nudge, reusing its structure.

    The structure (``P, c, D, d, S, e``) depends on the sources and clamps only, so training loops
    rebuild just ``H, f`` (a sparse product). Conductances must stay > 0 where the structure needs
    them; a clamp, or zeros that could float a node, need :func:`build_problem`.
    """
    g = as_float_array(conductances, "conductances (S)", problem.g.shape)
    if np.any(g <= 0):
        raise PhysgradError("reparametrize needs finite conductances > 0 (use build_problem for open resistors)")
    if nudge.clamp is not None or problem.nudge.clamp is not None:
        raise PhysgradError("reparametrize handles free and beta-nudged problems; clamps need build_problem")
    quad = _quadratic_part(problem.circuit, problem.P, problem.c, g, nudge, problem.outputs)
    return replace(problem, **quad)


def _distinct_rows(D: sp.csr_matrix, d: np.ndarray, rows: np.ndarray):
    """Drop repeated diode constraints (diodes in parallel, same orientation).

    Of parallel diodes only the lowest threshold can conduct; the others are dropped (current 0).
    Parallel diodes with the *same* threshold are one constraint: the ideal model does not fix how
    they share the current, which is split equally (``shares`` maps a kept row's position in the
    diode table to all the positions that share its current).
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return rows.copy(), {}
    start, nnz = D.indptr[rows], np.diff(D.indptr)[rows]
    width = int(nnz.max())
    if width > 8:  # long rows (rare): one key per row
        best: dict = {}
        for k in rows.tolist():
            key = (D.indices[D.indptr[k]:D.indptr[k + 1]].tobytes(), D.data[D.indptr[k]:D.indptr[k + 1]].tobytes())
            best.setdefault(key, []).append(k)
        label = np.empty(rows.size, dtype=np.int64)
        where = {k: i for i, k in enumerate(rows.tolist())}
        for g, group in enumerate(best.values()):
            label[[where[k] for k in group]] = g
    else:  # a row's key: its length, column indices and the bits of its values, padded to one width
        col = np.arange(width)
        inside = col[None, :] < nnz[:, None]
        at = np.where(inside, start[:, None] + col[None, :], 0)
        key = np.concatenate([nnz[:, None], np.where(inside, D.indices[at], -1),
                              np.where(inside, D.data[at], 0.0).view(np.int64)], axis=1)
        _, label = np.unique(key, axis=0, return_inverse=True)
        label = label.reshape(-1)
    dr = np.asarray(d, dtype=float)[rows]
    dmin = np.full(int(label.max()) + 1, np.inf)
    np.minimum.at(dmin, label, dr)
    tied = dr == dmin[label]
    first = np.unique(label[tied], return_index=True)[1]
    keep = rows[np.flatnonzero(tied)[first]]
    shares = {}
    count = np.bincount(label[tied])
    if np.any(count > 1):
        for g in np.flatnonzero(count > 1).tolist():
            group = rows[tied & (label == g)].tolist()
            shares[group[0]] = tuple(group)
    return np.sort(keep), shares


def _rows_or_zero(P: sp.csr_matrix, idx: np.ndarray) -> sp.csr_matrix:
    """Rows ``P[idx]`` with index -1 (ground) giving a zero row."""
    E = sp.csr_matrix(
        (np.ones(int(np.sum(idx >= 0))), (np.flatnonzero(idx >= 0), idx[idx >= 0])), shape=(len(idx), P.shape[0])
    )
    return (E @ P).tocsr()


def max_negative_beta(H_free: sp.spmatrix, P: sp.spmatrix, outputs: np.ndarray) -> float:
    r"""Largest ``|beta|`` for which ``H_free - |beta| Q Q^T`` stays positive definite.

    ``Q = P^T E_o`` selects the outputs; the bound is ``1 / lambda_max(Q^T H_free^{-1} Q)``. Only the
    quadratic part of the co-content counts (diodes can only add convexity where they conduct).
    """
    Q = _rows_or_zero(P, outputs).T.tocsc()
    if Q.nnz == 0:
        return np.inf
    X = sparse_solve(H_free, Q.toarray())
    M = Q.T @ X
    lam = float(np.max(np.linalg.eigvalsh(0.5 * (M + M.T))))
    return np.inf if lam <= 0 else 1.0 / lam


def _check_negative_nudge(H, P, out, beta):
    n = P.shape[0]
    H_free = H + (P.T @ sp.csr_matrix((np.full(len(out), -beta), (out, out)), shape=(n, n)) @ P)
    try:
        bmax = max_negative_beta(H_free, P, out)
    except RuntimeError:  # singular H_free: already not strictly convex
        bmax = 0.0
    # A relative margin of 1e-12 keeps the check on the safe side of round-off.
    if -beta >= bmax * (1 - 1e-12):
        raise PhysgradError(
            f"beta = {beta:.6g} makes the nudged energy non-convex; negative nudges need "
            f"|beta| < {bmax:.6g} S for this circuit"
        )

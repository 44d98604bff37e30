r"""Modified nodal analysis (MNA) of any circuit, controlled sources included, and the LCP of its
ideal diodes.

Unknowns ``x = (v, i_b)``: the node voltages ``v`` (V, ``circuit.nodes`` order) and the currents
``i_b`` (A) of the elements defined by a voltage (independent voltage sources, VCVS (E), CCVS (H)
and output clamps), each flowing from its first node through it to its second. With the ideal
diodes' currents ``lambda`` (A, anode to cathode) and the Shockley diodes' law ``I`` the steady state
solves

.. math::

    K x + S^\top I(S x) + T(x) + N \lambda = b, \qquad
    w = d - N^\top x \ge 0, \quad \lambda \ge 0, \quad \lambda \cdot w = 0,

where the node rows of ``K x - b`` are Kirchhoff's current law (the current leaving each node
through resistors ``g``, branch currents, CCCS ``gain * i_ctrl``, VCCS ``gm (v_c+ - v_c-)``,
current sources and a beta-nudge ``beta (v_o - y_o)``) and the branch rows are the branch
equations (``v+ - v- = value``; ``v+ - v- - A (v_c+ - v_c-) = 0``; ``v+ - v- - r i_ctrl = 0``).
``N`` is the ideal diodes' incidence (+1 at the anode, -1 at the cathode, node rows only), ``d``
their thresholds (V), ``S`` the Shockley diodes' voltage rows, ``T(x)`` the currents the
transistors (MOSFETs, BJTs: :mod:`physgrad.circuit.transistors`) draw from each node. Without
Shockley diodes and transistors,
eliminating ``x`` gives the linear complementarity problem (LCP) on the diode ports

.. math:: w = M\lambda + q,\qquad M = N^\top K^{-1} N,\quad q = d - N^\top K^{-1} b.

For a reciprocal circuit (resistors, sources, diodes) ``K`` is symmetric and ``M`` positive
semidefinite: the LCP is the co-content's KKT system. Controlled sources make ``K`` (and ``M``)
non-symmetric; the LCP may then have several solutions (a VCVS loop with gain > 1: positive
feedback) or none.

References
----------
C.-W. Ho, A. Ruehli, P. Brennan, "The modified nodal approach to network analysis", IEEE Trans.
Circuits Syst. 22 (1975). R. W. Cottle, J.-S. Pang, R. E. Stone, "The Linear Complementarity
Problem", SIAM (2009).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from physgrad.circuit.graphs import node_list, unreachable_from_ground
from physgrad.circuit.diode import shockley_co_content, shockley_current, shockley_slope
from physgrad.circuit.elements import CCCS, CCVS, VCCS, VCVS, Circuit, VoltageSource
from physgrad.circuit.reduction import nudge_values, output_nodes
from physgrad.circuit.transistors import (TransistorTables, connections, device_currents, transistor_tables,
                                         transistor_terms)
from physgrad.circuit.solution import CERT_ATOL, CERT_RTOL, CircuitSolution, KKTCertificate, demote_unsound
from physgrad.types import FREE, BadArgumentError, Nudge, PhysgradError, SingularSystemError, as_float_array


@dataclass(frozen=True, eq=False)
class MNAProblem:
    """The MNA system of a circuit (see the module docstring).

    Attributes
    ----------
    circuit : Circuit
    n : int
        Number of node unknowns (``len(circuit.nodes)``).
    branches : tuple of str
        Names of the branch unknowns after the nodes (voltage sources, VCVS, CCVS, then
        ``clamp(node)`` for clamped outputs).
    K : sparse csc, shape ``(n + nb, n + nb)``
    b : (n + nb,) — right-hand side (A on node rows, V on branch rows)
    N : sparse csc, shape ``(n + nb, m)`` — ideal-diode ports (m = distinct diodes)
    d : (m,) V — the ports' thresholds
    dio_rows : (m,) int — positions, in the circuit's ideal-diode table, of the diodes kept as ports
    dio_shares : dict — kept position -> parallel diodes with equal thresholds sharing its current
    S : sparse csr, shape ``(n_shk, n + nb)`` — Shockley diode voltages ``S x``
    g : (n_resistors,) S — the conductances used
    nudge : Nudge; outputs : (n_out,) node indices; y : (n_out,) V (targets of a beta-nudge)
    """

    circuit: Circuit
    n: int
    branches: tuple
    K: sp.csc_matrix
    b: np.ndarray
    N: sp.csc_matrix
    d: np.ndarray
    dio_rows: np.ndarray
    dio_shares: dict
    S: sp.csr_matrix
    g: np.ndarray
    nudge: Nudge
    outputs: np.ndarray
    y: np.ndarray

    @property
    def size(self) -> int:
        return self.K.shape[0]

    @property
    def m(self) -> int:
        return self.N.shape[1]

    @cached_property
    def shockley(self):
        """``(IS, N, vt, gmin)`` arrays of the Shockley diodes."""
        arr = self.circuit.arrays
        return arr.shk_IS, arr.shk_N, arr.shk_vt, arr.shk_gmin

    @cached_property
    def transistors(self) -> TransistorTables:
        """Index and parameter arrays of the MOSFETs and BJTs (:mod:`physgrad.circuit.transistors`)."""
        return transistor_tables(self.circuit)

    @property
    def nonlinear(self) -> bool:
        """Whether the equations have smooth nonlinear terms (Shockley diodes or transistors)."""
        return bool(self.S.shape[0] or self.transistors.count)

    def transistor_terms(self, x: np.ndarray, jacobian: bool = True):
        """``(T, dT)``: the transistors' currents leaving each node (A, shape ``(size,)``) and their
        Jacobian (S, sparse; None with ``jacobian=False``)."""
        return transistor_terms(self.transistors, x, self.n, jacobian=jacobian)

    @cached_property
    def branch_index(self) -> dict:
        return {name: self.n + j for j, name in enumerate(self.branches)}

    @cached_property
    def voltage_scale(self) -> float:
        r"""The circuit's voltage scale from its data alone (V): ``max(1 V, |source values|,
        |thresholds|, |targets|, |clamps|)`` times ``max(1, |VCVS gains|)`` (an amplifier multiplies
        the voltages it copies); never from a candidate answer."""
        arr = self.circuit.arrays
        base = max(1.0, *(float(np.max(np.abs(a), initial=0.0)) for a in (arr.vs_value, self.d, self.y,
                                                                         self.clamp_values)))
        gains = [abs(el.gain) for el in self.circuit.of_type(VCVS)]
        return base * max(1.0, max(gains, default=1.0))

    @cached_property
    def clamp_values(self) -> np.ndarray:
        return np.asarray(self.nudge.clamp, float).reshape(-1) if self.nudge.clamp is not None else np.zeros(0)

    @cached_property
    def lu(self):
        """Sparse LU of ``K`` (SuperLU, partial pivoting: ``K`` has zeros on its branch diagonal)."""
        return factor_general(self.K)

    def shockley_terms(self, x: np.ndarray):
        """Voltages (V), currents (A) and slopes (S) of the Shockley diodes at ``x``."""
        vd = self.S @ x
        IS, N, vt, gmin = self.shockley
        return vd, shockley_current(vd, IS, N, vt, gmin), shockley_slope(vd, IS, N, vt, gmin)

    def residual(self, x: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """``K x + S^T I(S x) + N lam - b`` (A on node rows, V on branch rows)."""
        r = self.K @ x + self.N @ lam - self.b
        if self.S.shape[0]:
            r = r + self.S.T @ self.shockley_terms(x)[1]
        if self.transistors.count:
            r = r + self.transistor_terms(x, jacobian=False)[0]
        return r

    def slack(self, x: np.ndarray) -> np.ndarray:
        """Diode slacks ``w = d - N^T x`` (V): ``>= 0`` is feasible."""
        return self.d - self.N.T @ x

    def lcp(self):
        """Dense ``(M, q)`` of the LCP ``w = M lam + q`` (linear circuits only; ``m`` solves with ``K``)."""
        if self.nonlinear:
            raise PhysgradError("the LCP form needs a piecewise-linear circuit (no Shockley diodes, no transistors)")
        Kinv_N = self.lu.solve(self.N.toarray()) if self.m else np.zeros((self.size, 0))
        M = self.N.T @ Kinv_N
        q = self.d - self.N.T @ self.lu.solve(self.b)
        return np.asarray(M), np.asarray(q)

    # --- scales and the certificate -----------------------------------------------------------------
    def node_scales(self, x: np.ndarray, lam: np.ndarray) -> np.ndarray:
        r"""Each node's own current scale (A): the KCL tolerances, as in
        :meth:`physgrad.circuit.reduction.Problem.current_scale`.

        .. math:: s_i = \sum_{k \ni i} (|i_k| + G_k V)

        over the elements ``k`` at node ``i``: resistors (``G = g``), Shockley diodes (``G = I'``),
        VCCS (``G = |gm|``), a beta-nudge (``G = |beta|``), transistors (each terminal's ``|I|`` plus
        its row of ``|dI/dv|`` times ``V``); branch elements, CCCS, ideal diodes and current sources
        count their currents only. ``V`` is :attr:`voltage_scale`.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            return self._node_scales(x, lam)

    @cached_property
    def tables(self) -> dict:
        """Index arrays (node ``-1`` = ground) of the elements that are not in ``circuit.arrays``:
        branch elements (``br_*``, one per branch column; ``br_kind`` 0 = V or clamp, 1 = E, 2 = H,
        with E's control nodes / H's control column and gain), CCCS (``f_*``) and VCCS (``g_*``)."""
        circuit = self.circuit
        idx = circuit.node_index
        ix = (lambda name: -1 if name == "0" else idx[name])
        t = {k: [] for k in ("br_a", "br_b", "br_kind", "br_cp", "br_cn", "br_ctrl", "br_gain", "br_pos",
                             "f_a", "f_b", "f_ctrl", "f_gain", "f_pos", "g_a", "g_b", "g_cp", "g_cn", "g_gain", "g_pos")}
        for k, el in enumerate(circuit.elements):
            if isinstance(el, (VoltageSource, VCVS, CCVS)):
                kind = 1 if isinstance(el, VCVS) else 2 if isinstance(el, CCVS) else 0
                t["br_a"].append(ix(el.pos)), t["br_b"].append(ix(el.neg)), t["br_kind"].append(kind)
                t["br_cp"].append(ix(el.cpos) if kind == 1 else -1), t["br_cn"].append(ix(el.cneg) if kind == 1 else -1)
                t["br_ctrl"].append(self.branch_index[el.control] if kind == 2 else 0)
                t["br_gain"].append(el.gain if kind else 0.0), t["br_pos"].append(k)
            elif isinstance(el, CCCS):
                t["f_a"].append(ix(el.pos)), t["f_b"].append(ix(el.neg)), t["f_ctrl"].append(self.branch_index[el.control])
                t["f_gain"].append(el.gain), t["f_pos"].append(k)
            elif isinstance(el, VCCS):
                t["g_a"].append(ix(el.pos)), t["g_b"].append(ix(el.neg)), t["g_cp"].append(ix(el.cpos))
                t["g_cn"].append(ix(el.cneg)), t["g_gain"].append(el.gain), t["g_pos"].append(k)
        for o in self.outputs if self.nudge.clamp is not None else ():
            t["br_a"].append(int(o)), t["br_b"].append(-1), t["br_kind"].append(0), t["br_cp"].append(-1)
            t["br_cn"].append(-1), t["br_ctrl"].append(0), t["br_gain"].append(0.0)
        return {k: np.asarray(v, dtype=float if k.endswith("gain") else np.int64) for k, v in t.items()}

    def _node_scales(self, x, lam):
        arr, n, t = self.circuit.arrays, self.n, self.tables
        V = self.voltage_scale
        vg = np.concatenate([x[:n], [0.0]])
        out = np.zeros(n + 1)

        def add(a, b, amount):
            out[:] += np.bincount(np.where(a < 0, n, a), amount, minlength=n + 1)
            out[:] += np.bincount(np.where(b < 0, n, b), amount, minlength=n + 1)

        add(arr.res_a, arr.res_b, self.g * (np.abs(vg[arr.res_a] - vg[arr.res_b]) + V))
        add(arr.cs_a, arr.cs_b, np.abs(arr.cs_value))
        if self.S.shape[0]:
            _, i_shk, slope = self.shockley_terms(x)
            add(arr.shk_a, arr.shk_b, np.abs(i_shk) + np.abs(slope) * V)
        add(arr.dio_a, arr.dio_b, np.abs(self.diode_currents(lam)))
        add(t["br_a"], t["br_b"], np.abs(x[n:]))
        add(t["f_a"], t["f_b"], np.abs(t["f_gain"] * x[t["f_ctrl"]]) if t["f_a"].size else np.zeros(0))
        add(t["g_a"], t["g_b"], np.abs(t["g_gain"]) * (np.abs(vg[t["g_cp"]] - vg[t["g_cn"]]) + V))
        if self.transistors.count:
            T_abs, dT = self._transistor_scale(x)
            out[:n] += T_abs[:n] + V * dT[:n]
        if self.nudge.beta != 0.0 and self.nudge.clamp is None:
            out[:] += np.bincount(self.outputs, abs(self.nudge.beta) * (np.abs(vg[self.outputs] - self.y) + V),
                                  minlength=n + 1)
        return out[:n]

    def _transistor_scale(self, x):
        """Per row: the sum of the transistors' ``|terminal current|`` (A) and of ``|dI/dv|`` (S)."""
        tab, n = self.transistors, self.n
        mos, bjt = device_currents(tab, x, n)
        T_abs = np.zeros(self.size)
        for nodes, cur in ((tab.mos_nodes, mos), (tab.bjt_nodes, bjt)):
            keep = nodes >= 0
            np.add.at(T_abs, nodes[keep], np.abs(cur[keep]))
        _, dT = self.transistor_terms(x)
        return T_abs, np.asarray(abs(dT).sum(axis=1)).ravel()

    def branch_scales(self, x: np.ndarray) -> np.ndarray:
        """Each branch equation's voltage scale (V): ``V + |v+ - v-|`` plus ``|A (v_c+ - v_c-)|`` (VCVS)
        or ``|r i_ctrl|`` (CCVS)."""
        n, t = self.n, self.tables
        vg = np.concatenate([x[:n], [0.0]])
        kind, gain = t["br_kind"], t["br_gain"]
        extra = np.where(kind == 1, np.abs(gain * (vg[t["br_cp"]] - vg[t["br_cn"]])),
                         np.where(kind == 2, np.abs(gain * x[t["br_ctrl"]]) if x.size else 0.0, 0.0))
        return self.voltage_scale + np.abs(vg[t["br_a"]] - vg[t["br_b"]]) + extra

    def diode_currents(self, lam: np.ndarray) -> np.ndarray:
        """Current (A) of every ideal diode of the circuit from the ports' ``lam`` (parallel diodes
        with equal thresholds share equally; the others carry 0)."""
        out = np.zeros(len(self.circuit.arrays.vth))
        out[self.dio_rows] = lam
        for k, group in self.dio_shares.items():
            out[list(group)] = out[k] / len(group)
        return out


def certify_mna(mp: MNAProblem, x: np.ndarray, lam: np.ndarray) -> KKTCertificate:
    """KKT certificate of ``(x, lam)``: the physical circuit's equations, whatever route found them.

    KCL per node ``i``: ``|r_i| <= CERT_RTOL * s_i + CERT_ATOL`` (``s_i``: :meth:`MNAProblem.node_scales`);
    each branch equation (V, E, H, clamp) ``|r_j| <= CERT_RTOL * (its voltage scale)``; diode
    feasibility ``-w <= CERT_RTOL * v_scale`` (V); diode current signs ``-lam <= CERT_RTOL * i_scale``
    (A); complementarity ``|lam w| <= CERT_RTOL * i_scale * v_scale`` (W), with ``v_scale`` the
    voltage scale and ``i_scale`` the largest node scale — the tolerances of
    :func:`physgrad.circuit.solution.certify`. ``kcl`` reports the largest KCL residual (A); the
    worst ratio over nodes and branches is ``kcl_ratio`` (its node or element in ``kcl_node``).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        n = mp.n
        r = mp.residual(x, lam)
        node_tol = CERT_RTOL * mp.node_scales(x, lam) + CERT_ATOL
        br_tol = CERT_RTOL * mp.branch_scales(x)
        ratios = np.abs(r) / np.concatenate([node_tol, br_tol])
        names = list(mp.circuit.nodes) + list(mp.branches)
        ratio, where, tol = 0.0, "", 0.0
        if ratios.size:
            j = int(np.argmax(np.where(np.isfinite(ratios), ratios, np.inf)))
            ratio, where = float(ratios[j]), names[j]
            tol = float(np.concatenate([node_tol, br_tol])[j])
        w = mp.slack(x)
        v_scale = max(mp.voltage_scale, float(np.max(np.abs(x[:n]), initial=0.0)))
        i_scale = max(float(np.max(node_tol, initial=0.0)) / CERT_RTOL, float(np.max(np.abs(lam), initial=0.0)), 1e-30)
        tol_i, tol_v = CERT_RTOL * i_scale, CERT_RTOL * v_scale
        primal = max(0.0, float(np.max(-w, initial=0.0)))
        dual = max(0.0, float(np.max(-lam, initial=0.0)))
        comp = float(np.max(np.abs(lam * w), initial=0.0))
        kcl = float(np.max(np.abs(r[:n]), initial=0.0))
        ok = bool(ratio <= 1.0 and primal <= tol_v and dual <= tol_i and comp <= tol_i * tol_v / CERT_RTOL
                  and np.all(np.isfinite(x)) and np.all(np.isfinite(lam)))
    return KKTCertificate(kcl, primal, dual, comp, tol_i, tol_v, ok, ratio, where, tol)


# --- building the system ----------------------------------------------------------------------------
def factor_general(K: sp.spmatrix):
    """Sparse LU of a general (non-symmetric, zero-diagonal) matrix; :class:`SingularSystemError` if
    exactly singular."""
    try:
        lu = spla.splu(sp.csc_matrix(K))
    except RuntimeError as exc:
        raise SingularSystemError(str(exc)) from None
    # SuperLU may finish a rank-deficient factorisation with zero pivots (its triangular solves then
    # fail inside BLAS): refuse it here
    diag = lu.U.diagonal()
    if not np.all(np.isfinite(diag)) or np.any(diag == 0):
        raise SingularSystemError("matrix is exactly singular (a zero pivot)")
    return lu


def build_mna(circuit: Circuit, nudge: Nudge = FREE, outputs: Optional[Sequence[str]] = None,
              conductances: Optional[np.ndarray] = None) -> MNAProblem:
    """The :class:`MNAProblem` of ``circuit`` (any elements), with a nudge and conductances (S) as in
    :func:`physgrad.circuit.reduction.build_problem`.

    Raises
    ------
    PhysgradError
        A floating subnetwork (nodes without a path to ground through resistors, Shockley diodes,
        voltage sources or the outputs of E/H sources; control ports and current outputs do not
        connect), or an exactly singular system (a loop of voltage sources and E/H outputs, an
        amplifier loop of gain exactly 1), naming what it can.
    """
    if not isinstance(circuit, Circuit):
        raise BadArgumentError(f"expected a physgrad Circuit, got {type(circuit).__name__}")
    if not isinstance(nudge, Nudge):
        raise BadArgumentError(f"nudge must be a physgrad Nudge, got {type(nudge).__name__}")
    arr = circuit.arrays
    n = arr.n_nodes
    out = output_nodes(circuit, outputs) if (not nudge.is_free or outputs is not None) else np.zeros(0, np.int64)
    g = arr.g if conductances is None else as_float_array(conductances, "conductances (S)", arr.g.shape,
                                                          nonnegative=True)
    idx = circuit.node_index
    ix = (lambda name: -1 if name == "0" else idx[name])
    branch_els = [el for el in circuit.elements if isinstance(el, (VoltageSource, VCVS, CCVS))]
    branches = [el.name for el in branch_els]
    clamp = None
    if nudge.clamp is not None:
        clamp = nudge_values(circuit, nudge, out, "clamp")
        branches += [f"clamp({circuit.nodes[o]})" for o in out]
    nb = len(branches)
    col = {name: n + j for j, name in enumerate(branches)}
    size = n + nb
    rows, cols, vals = [], [], []

    def put(r, c, v):
        if r >= 0 and c >= 0:
            rows.append(r)
            cols.append(c)
            vals.append(v)

    ra, rb = arr.res_a, arr.res_b
    rows += list(np.concatenate([ra, rb, ra, rb]))
    cols += list(np.concatenate([ra, rb, rb, ra]))
    vals += list(np.concatenate([g, g, -g, -g]))
    b = np.zeros(size)
    b[:n] = arr.injection()
    for el in branch_els:
        j = col[el.name]
        p, q = ix(el.pos), ix(el.neg)
        put(p, j, 1.0), put(q, j, -1.0), put(j, p, 1.0), put(j, q, -1.0)
        if isinstance(el, VoltageSource):
            b[j] = el.value
        elif isinstance(el, VCVS):
            put(j, ix(el.cpos), -el.gain), put(j, ix(el.cneg), el.gain)
        else:
            put(j, col[el.control], -el.gain)
    for el in circuit.elements:
        p, q = ix(el.pos) if hasattr(el, "pos") else -1, ix(el.neg) if hasattr(el, "neg") else -1
        if isinstance(el, CCCS):
            c = col[el.control]
            put(p, c, el.gain), put(q, c, -el.gain)
        elif isinstance(el, VCCS):
            cp, cn = ix(el.cpos), ix(el.cneg)
            put(p, cp, el.gain), put(p, cn, -el.gain), put(q, cp, -el.gain), put(q, cn, el.gain)
    y = np.zeros(0)
    if clamp is not None:
        for k, (o, value) in enumerate(zip(out, clamp)):
            j = n + len(branch_els) + k
            put(int(o), j, 1.0), put(j, int(o), 1.0)
            b[j] = value
    elif nudge.beta != 0.0:
        y = nudge_values(circuit, nudge, out, "target")
        for o, yo in zip(out, y):
            put(int(o), int(o), nudge.beta)
            b[o] += nudge.beta * yo
    rows, cols, vals = np.asarray(rows, np.int64), np.asarray(cols, np.int64), np.asarray(vals, float)
    keep = (rows >= 0) & (cols >= 0)
    K = sp.csc_matrix((vals[keep], (rows[keep], cols[keep])), shape=(size, size))
    K.sum_duplicates()
    _check_connected(circuit, g, out if (nudge.beta != 0.0 or clamp is not None) else np.zeros(0, np.int64))
    keep, shares = _distinct_diodes(arr)
    m = len(keep)
    na, nc = arr.dio_a[keep], arr.dio_b[keep]
    nr = np.concatenate([na[na >= 0], nc[nc >= 0]])
    ncol = np.concatenate([np.flatnonzero(na >= 0), np.flatnonzero(nc >= 0)])
    nv = np.concatenate([np.ones(int(np.sum(na >= 0))), -np.ones(int(np.sum(nc >= 0)))])
    N = sp.csc_matrix((nv, (nr, ncol)), shape=(size, m))
    sa, sb = arr.shk_a, arr.shk_b
    k_shk = len(sa)
    sr = np.concatenate([np.flatnonzero(sa >= 0), np.flatnonzero(sb >= 0)])
    sc = np.concatenate([sa[sa >= 0], sb[sb >= 0]])
    sv = np.concatenate([np.ones(int(np.sum(sa >= 0))), -np.ones(int(np.sum(sb >= 0)))])
    S = sp.csr_matrix((sv, (sr, sc)), shape=(k_shk, size))
    mp = MNAProblem(circuit, n, tuple(branches), K, b, N, arr.vth[keep].astype(float), keep, shares, S, g, nudge,
                    out, y)
    try:
        if mp.transistors.count:  # nodes may hang on transistors only: check the source loops with a shunt
            factor_general(K + sp.diags(np.r_[np.ones(n), np.zeros(size - n)]))
        else:
            mp.lu
    except SingularSystemError:
        raise PhysgradError(
            "the circuit's equations are singular (its MNA matrix is exactly singular): a loop of voltage sources "
            "and E/H outputs, a current source or F/G output in series with nothing that fixes a voltage, or an "
            "amplifier loop whose gain is exactly 1") from None
    return mp


def _check_connected(circuit: Circuit, g: np.ndarray, outputs: np.ndarray):
    arr = circuit.arrays
    n = arr.n_nodes
    G = n
    idx = circuit.node_index
    ix = (lambda name: G if name == "0" else idx[name])
    ta, tb = connections(transistor_tables(circuit))
    a = [arr.res_a[g > 0], arr.shk_a, arr.vs_a, outputs, ta]
    b = [arr.res_b[g > 0], arr.shk_b, arr.vs_b, np.full(len(outputs), -1), tb]
    volt = [el for el in circuit.elements if isinstance(el, (VCVS, CCVS))]
    a.append(np.array([ix(el.pos) for el in volt], dtype=np.int64))
    b.append(np.array([ix(el.neg) for el in volt], dtype=np.int64))
    floating = [circuit.nodes[i] for i in unreachable_from_ground(n, np.concatenate(a), np.concatenate(b))]
    if floating:
        raise PhysgradError(
            f"floating subnetwork: node(s) {node_list(floating)} have no path to ground through resistors, Shockley diodes, voltage "
            "sources, the outputs of E/H sources or transistor junctions (control ports, MOSFET gates and F/G outputs "
            "do not fix a voltage); their voltages are not unique")


def _distinct_diodes(arr):
    """Ideal diodes with the same anode and cathode are one port: the lowest threshold is kept (the
    others never conduct); equal thresholds share the current equally (as in
    :func:`physgrad.circuit.reduction._distinct_rows`)."""
    groups: dict = {}
    for k, (a, c) in enumerate(zip(arr.dio_a, arr.dio_b)):
        groups.setdefault((int(a), int(c)), []).append(k)
    keep, shares = [], {}
    for group in groups.values():
        vmin = min(arr.vth[k] for k in group)
        tied = [k for k in group if arr.vth[k] == vmin]
        keep.append(tied[0])
        if len(tied) > 1:
            shares[tied[0]] = tuple(tied)
    return np.array(sorted(keep), dtype=np.int64), shares


# --- the user's view ----------------------------------------------------------------------------------
def element_currents(mp: MNAProblem, x: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Current (A) of every element, ``circuit.elements`` order, first node -> second node (MOSFET:
    into the drain; BJT: into the collector)."""
    circuit, arr, n = mp.circuit, mp.circuit.arrays, mp.n
    vg = np.concatenate([x[:n], [0.0]])
    cur = np.zeros(len(circuit.elements))
    cur[arr.res_pos] = mp.g * (vg[arr.res_a] - vg[arr.res_b])
    cur[arr.dio_pos] = mp.diode_currents(lam)
    if mp.S.shape[0]:
        cur[arr.shk_pos] = mp.shockley_terms(x)[1]
    cur[arr.cs_pos] = arr.cs_value
    t = mp.tables
    nb = len(t["br_pos"])
    cur[t["br_pos"]] = x[n:n + nb]
    cur[t["f_pos"]] = t["f_gain"] * x[t["f_ctrl"]] if t["f_pos"].size else 0.0
    cur[t["g_pos"]] = t["g_gain"] * (vg[t["g_cp"]] - vg[t["g_cn"]])
    tab = mp.transistors
    if tab.count:
        mos, bjt = device_currents(tab, x, n)
        cur[tab.mos_pos] = mos[:, 0]  # drain current (into the drain)
        cur[tab.bjt_pos] = bjt[:, 0]  # collector current (into the collector)
    return cur


def assemble_mna(mp: MNAProblem, x: np.ndarray, lam: np.ndarray, *, status, solver: str, n_iter: int,
                 message: str = "", info: Optional[dict] = None, weights: Optional[np.ndarray] = None
                 ) -> CircuitSolution:
    """The :class:`CircuitSolution` of an MNA answer ``(x, lam)``, certified by :func:`certify_mna`.

    ``co_content`` is the two-terminal elements' total co-content (W; controlled sources and
    transistors have none);
    ``energy`` is the minimised objective ``sum_I c_I E_I + beta C`` when per-element island weights
    ``weights`` (one per element, :mod:`physgrad.circuit.amplifiers`) are given, else the
    co-content plus the nudge; ``power`` the power dissipated in resistors and diodes (W).
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        circuit, arr, n = mp.circuit, mp.circuit.arrays, mp.n
        v = x[:n]
        vg = np.concatenate([v, [0.0]])
        currents = element_currents(mp, x, lam)
        dv = vg[arr.res_a] - vg[arr.res_b]
        e_res = 0.5 * mp.g * dv**2
        IS, N, vt, gmin = mp.shockley
        vd = vg[arr.shk_a] - vg[arr.shk_b]
        e_shk = shockley_co_content(vd, IS, N, vt, gmin)
        J = arr.injection()
        e_inj = -J * v  # per node
        co = float(np.sum(e_res) + np.sum(e_shk) + np.sum(e_inj))
        if weights is not None:
            w_el = np.asarray(weights, float)
            # the injection -i v of a current source belongs to its own element's island
            e_cs = -arr.cs_value * (vg[arr.cs_b] - vg[arr.cs_a])
            energy = float(w_el[arr.res_pos] @ e_res + w_el[arr.shk_pos] @ e_shk + w_el[arr.cs_pos] @ e_cs)
        else:
            energy = co
        if mp.nudge.beta != 0.0 and len(mp.outputs):
            energy += 0.5 * mp.nudge.beta * float(np.sum((v[mp.outputs] - mp.y) ** 2))
        i_dio = currents[arr.dio_pos]
        power = float(mp.g @ dv**2) + float(i_dio @ arr.vth) + float(currents[arr.shk_pos] @ vd)
        tab = mp.transistors
        if tab.count:  # sum over terminals of (current into the device) x (terminal voltage)
            mos, bjt = device_currents(tab, x, n)
            power += float(np.sum(mos * vg[tab.mos_nodes])) + float(np.sum(bjt * vg[tab.bjt_nodes]))
        cert = certify_mna(mp, x, lam)
        finite = bool(np.all(np.isfinite(v)) and np.all(np.isfinite(currents)) and math.isfinite(co))
    status, message = demote_unsound(circuit, status, message, currents, finite, cert, vd)
    info = dict(info or {})
    info.update(x=x, diode_multipliers=lam)
    if mp.nudge.clamp is not None:
        info["clamp_currents"] = x[n + len(mp.branches) - len(mp.outputs):]
    return CircuitSolution(circuit, np.asarray(v, float), currents, co, energy, power, status, solver, n_iter, cert,
                           message, info)

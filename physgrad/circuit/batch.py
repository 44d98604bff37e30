r"""Equilibria of one circuit for a whole batch of inputs: ``solve_batch`` and :class:`BatchSolver`.

For circuits of resistors, ideal diodes and sources, every sample and every phase (free, beta-nudged,
clamped) of a batch shares one factorization per parameter value (the reduced conductance matrix,
or a reference KKT matrix with the batch's majority set of conducting diodes); each sample's
conducting diodes, nudge or clamp are low-rank borders of it (:mod:`physgrad.circuit.solvers.bordered`),
and the primal-dual active-set iteration runs on the whole batch at once. Warm starts: a phase may
start from a state ``s0`` (the diodes tight at ``s0`` conduct first), and the free phase of an
input seen before starts from that input's last conducting set (a bounded LRU of bit masks), of
an input not seen before from the set of the nearest remembered input (:meth:`BatchSolver.warm_sets`).
A start changes the speed, never the answer: the iteration only stops on the KKT conditions.
:func:`solve_batch` hands circuits of Shockley diodes (no ideal diodes) to the batched Newton of
:mod:`physgrad.circuit.shockley_batch`.

Every answer carries a KKT certificate computed exactly as :func:`physgrad.circuit.solution.certify`
would on the sample's own :class:`~physgrad.circuit.reduction.Problem`. A sample the batched route
cannot certify (a cycling iteration, dependent constraints, a diode fixed by the sources at or
beyond its threshold) is solved again alone by the one-sample route
(:func:`physgrad.circuit.solvers.kkt.solve_active_set` on its own problem).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from itertools import islice
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from physgrad.circuit.elements import Circuit
from physgrad.circuit.reduction import build_problem
from physgrad.circuit.shockley_batch import ShockleyBatchSolver, supports as shockley_supports
from physgrad.circuit.solution import CERT_RTOL, KKTCertificate, certify, ideal_diode_currents
from physgrad.circuit.solvers.kkt import solve_active_set
from physgrad.circuit.solvers.qdkkt import QDPattern
from physgrad.circuit.solvers.strategy import blas_threads
from physgrad.circuit.solvers.bordered import (FULL_MASK_MAX, PatternPool, RowData, Router, SharedSystem,
                                               max_negative_beta, pdas_batch, solve_on_sets, tolerances)
from physgrad.circuit.topology import Topology
from physgrad.types import FREE, InfeasibleError, NotSolvedError, Nudge, PhysgradError, SingularSystemError

# A reference set is worth a refactorization when it cuts the mean number of corrections per
# sample by at least this factor and they exceed REF_MIN (below, the small Schur systems are cheaper
# than a factorization).
REF_MIN = 24
REF_GAIN = 2.0
MAX_REFACTORS = 8
# The equality-constrained solves' route of a BatchSolver built without ``kkt_route``: "auto" (see
# :meth:`BatchSolver.route`), "schur" or "ldl".
DEFAULT_KKT_ROUTE = "auto"
# The free phase of an unseen input starts from the set of the nearest of at most this many remembered
# inputs (the most recent), and at most NEAREST_ENTRIES input values are compared (wide inputs: fewer).
NEAREST_MAX = 4096
NEAREST_ENTRIES = 2_000_000
# Topologies with at most this many entries in their node x reduced-variable maps keep dense copies
# of them: for small circuits scipy.sparse's per-call overhead (~20-50 us) dominates the arithmetic.
DENSE_OPS_MAX = 250_000


def _apply(A, X: np.ndarray) -> np.ndarray:
    """``A`` applied to each row of ``X``: ``X @ A^T`` (``A`` dense or sparse)."""
    if isinstance(A, np.ndarray):
        return X @ A.T
    return np.asarray((A @ X.T).T)


class _Mats:
    """The topology's maps, dense copies when small (see :data:`DENSE_OPS_MAX`)."""

    def __init__(self, topo: Topology):
        self.dense = topo.n_nodes * max(topo.n_u, topo.m, topo.n_src, 1) <= DENSE_OPS_MAX
        conv = (lambda A: A.toarray()) if self.dense else (lambda A: A)
        for name in ("P", "D", "Dn", "Q", "Mc", "Mi", "Dd", "Df"):
            setattr(self, name, conv(getattr(topo, name)))
        self.DT = conv(topo.D.T.tocsr())
        self.QT = conv(topo.Q.T.tocsr())
        self.qq = np.asarray(topo.Q.multiply(topo.Q).sum(axis=1)).ravel()
        self.rows = RowData(topo.D, topo.Q)
        if self.dense and topo.n_u * topo.PA.shape[1] <= DENSE_OPS_MAX:
            self.PA = topo.PA.toarray()
            self.AM = topo.AM.toarray()
            self.PTMi = (topo.P.T @ topo.Mi).toarray()
        else:
            self.PA = None


def _digest(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a)
    return hashlib.blake2b(a.view(np.uint8), digest_size=16).digest() + str(a.shape).encode()


@dataclass(frozen=True, eq=False)
class BatchSolution:
    """Equilibria of a batch (every array's first axis is the sample).

    Attributes
    ----------
    voltages : (B, n_nodes) V; u : (B, n_u) V (reduced variables)
    lam : (B, m) A — currents of the reduced diode rows; active : (B, m) bool — the solver's
        conducting rows; diode_currents : (B, n_ideal_diodes) A, in the circuit's diode order
    z_out : (B, n_out) A — nudge currents ``beta (v_o - y_o)`` or clamp currents (0 when free)
    status : (B,) str; n_iter : (B,) int; certificates : tuple of KKTCertificate or None
    messages : tuple of str (empty where none); info : counts (fallbacks, refactorizations, ...)
    """

    voltages: np.ndarray
    u: np.ndarray
    lam: np.ndarray
    active: np.ndarray
    diode_currents: np.ndarray
    z_out: np.ndarray
    status: np.ndarray
    n_iter: np.ndarray
    certificates: tuple
    messages: tuple
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        return bool(np.all(self.status == "converged"))


class _Entry:
    """Everything shared by the samples and phases at one parameter value."""

    def __init__(self, topo: Topology, g: np.ndarray, M: "_Mats"):
        self.g = g
        if M.PA is not None:  # small: dense products, no sparse bookkeeping
            PAg = M.PA * g
            self.H0 = self.H0m = PAg @ M.PA.T
            self.Kf = self.Kfm = M.PTMi - PAg @ M.AM
        else:
            self.H0 = topo.H0(g)
            self.Kf = topo.Kf(g)
            self.H0m = self.H0.toarray() if M.dense else self.H0
            self.Kfm = self.Kf.toarray() if M.dense else self.Kf
        self.system: Optional[SharedSystem] = None
        self.pool: Optional[PatternPool] = None  # factors of whole conducting sets (refactor per pattern)
        self.free_system: Optional[SharedSystem] = None  # factor of H0 itself (empty reference)
        self.qd = None  # the per-sample LDL^T route's system (QDSystem) at this parameter value
        self.data: OrderedDict = OrderedDict()  # X digest -> batch data (bounded)
        self._bmax = None
        self.h_diag = np.diagonal(self.H0m).copy() if isinstance(self.H0m, np.ndarray) else self.H0.diagonal()

    def h0_system(self, topo: Topology, rows: RowData) -> SharedSystem:
        """The shared system on the factor of ``H0`` itself (empty reference set), built once."""
        if self.free_system is None:
            if self.system is not None and not self.system.ref_rows.size:
                self.free_system = self.system
            else:
                self.free_system = SharedSystem(self.H0, topo.D, topo.Q, rows=rows)
        return self.free_system

    def max_negative_beta(self, topo: Topology, rows: RowData, qd=None) -> float:
        """Largest admissible ``|beta|`` of a negative nudge (the quadratic part stays convex), from
        the factor of ``H0`` at hand (dense: one small solve; ``qd``, a :class:`QDSystem`: its LDL^T)."""
        if self._bmax is None:
            M = None
            if rows.n_out == 0:
                self._bmax = np.inf
            elif isinstance(self.H0m, np.ndarray) and rows.Qd is not None:
                M = rows.Qd.T @ np.linalg.solve(self.H0m, rows.Qd)
            elif qd is not None:
                M = qd.output_gram()
            if M is not None:
                lam = float(np.max(np.linalg.eigvalsh(0.5 * (M + M.T))))
                self._bmax = np.inf if lam <= 0 else 1.0 / lam
            elif self._bmax is None:
                self._bmax = max_negative_beta(self.h0_system(topo, rows))
        return self._bmax


class BatchSolver:
    """Batched, warm-started, certified equilibria of one :class:`Topology`.

    Keeps (bounded) the factorizations of the last ``n_params`` parameter values (so the phases
    of one training step share one) and the conducting sets of the last ``n_warm`` distinct inputs
    (bit masks, for the next step's free phase). Memory does not grow with the dataset.
    """

    def __init__(self, topology: Topology, n_params: int = 2, n_warm: int = 65536, threads: Optional[int] = 1,
                 kkt_route: Optional[str] = None):
        if kkt_route not in (None, "auto", "schur", "ldl"):
            raise ValueError(f"kkt_route must be 'auto', 'schur' or 'ldl', got {kkt_route!r}")
        self.topo = topology
        self.kkt_route = kkt_route
        self._qd_pattern = None
        self.threads = threads
        self.n_params = n_params
        self.n_warm = n_warm
        self._entries: OrderedDict = OrderedDict()
        self._warm: OrderedDict = OrderedDict()
        self.stats = {"factorizations": 0, "fallbacks": 0, "batches": 0}
        self.M = _Mats(topology)
        self._last_ref = None
        self._last_free = None  # (digest of the last free voltages, their conducting sets)

    # --- caches ---------------------------------------------------------------------------------
    def entry(self, g: np.ndarray) -> _Entry:
        key = _digest(g)
        e = self._entries.get(key)
        if e is None or not np.array_equal(e.g, g):
            e = _Entry(self.topo, np.array(g, dtype=float, copy=True), self.M)
            self._entries[key] = e
            while len(self._entries) > self.n_params:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return e

    def _batch_data(self, e: _Entry, X: Optional[np.ndarray]) -> dict:
        topo = self.topo
        key = b"" if X is None else _digest(np.asarray(X, float))
        data = e.data.get(key)
        if data is None:
            W = topo.source_values(X)
            M = self.M
            data = {"W": W, "C": _apply(M.Mc, W), "F": _apply(e.Kfm, W), "d": topo.vth[None, :] + _apply(M.Dd, W),
                    "fixed": topo.vth_f[None, :] - _apply(M.Df, W), "X0": ()}
            e.data[key] = data
            while len(e.data) > 2:
                e.data.popitem(last=False)
        else:
            e.data.move_to_end(key)
        return data

    def _x0(self, system: SharedSystem, data: dict) -> np.ndarray:
        """Base solutions of the batch on ``system`` (kept for one reference factorization at a time)."""
        held = data["X0"]
        if held and held[0] is system:
            return held[1]
        X0 = system.base(data["F"], data["d"])
        data["X0"] = (system, X0)
        return X0

    def warm_sets(self, X: Optional[np.ndarray], nearest: bool = True) -> Optional[np.ndarray]:
        """Start sets of the free phase for the inputs ``X`` (B, n_inputs): an input seen before starts
        from its last conducting set; with ``nearest``, any other input from the set of the nearest
        (Euclidean, in the inputs' own units) of the last :data:`NEAREST_MAX` remembered inputs.

        Conducting sets are piecewise constant in the inputs, so a near input's set is a near start:
        on the issue-17 ``indep`` network (1k nodes, fresh random inputs every step) the start
        differs from the final set in ~20 of 250 diodes instead of ~110 from the batch's reference
        set, and the free phase takes ~3.8 active-set iterations per sample instead of ~5.2. The
        start changes the iteration count only: the iteration stops on the KKT conditions.
        ``None`` when nothing is remembered.
        """
        if X is None or not self._warm:
            return None
        m = self.topo.m
        X = np.asarray(X, float)
        out = np.zeros((len(X), m), bool)
        hit = np.zeros(len(X), bool)
        for b, row in enumerate(X):
            packed = self._warm.get(row.tobytes())
            if packed is not None:
                out[b] = np.unpackbits(packed, count=m).astype(bool)
                hit[b] = True
        if nearest and not np.all(hit) and X.shape[1]:
            n_max = max(1, min(NEAREST_MAX, NEAREST_ENTRIES // X.shape[1]))
            keys = list(islice(reversed(self._warm), n_max))  # the most recent first
            P = np.frombuffer(b"".join(keys), dtype=float).reshape(len(keys), X.shape[1])
            miss = np.flatnonzero(~hit)
            Xm = X[miss]
            # |x - p|^2 = |x|^2 - 2 x.p + |p|^2 (one product for the batch)
            dist = (Xm * Xm).sum(axis=1)[:, None] - 2.0 * (Xm @ P.T) + (P * P).sum(axis=1)[None, :]
            j = np.argmin(dist, axis=1)
            packed = np.array([self._warm[keys[i]] for i in j], dtype=np.uint8).reshape(len(miss), -1)
            out[miss] = np.unpackbits(packed, axis=1, count=m).astype(bool)
            hit[miss] = True
        return out if np.any(hit) else None

    def _remember(self, X: Optional[np.ndarray], active: np.ndarray, ok: np.ndarray):
        if X is None or not self.topo.m:
            return
        for b, row in enumerate(np.asarray(X, float)):
            if ok[b]:
                k = row.tobytes()
                self._warm[k] = np.packbits(active[b])
                self._warm.move_to_end(k)
        while len(self._warm) > self.n_warm:
            self._warm.popitem(last=False)

    def clear_factors(self) -> None:
        """Forget the factorizations (the warm-start sets stay)."""
        self._entries.clear()

    def warm_state(self) -> dict:
        """The warm-start memory as arrays (inputs, packed sets in LRU order, the last reference
        set), e.g. for a checkpoint; :meth:`set_warm_state` restores it exactly."""
        n_in = len(self.topo.in_cols)
        keys = list(self._warm)
        X = np.array([np.frombuffer(k, dtype=float) for k in keys]).reshape(len(keys), n_in)
        nbytes = (self.topo.m + 7) // 8
        sets = np.array([self._warm[k] for k in keys], dtype=np.uint8).reshape(len(keys), nbytes)
        last = self._last_ref
        return {"inputs": X, "sets": sets, "last_ref": np.zeros(0, bool) if last is None else np.asarray(last, bool),
                "has_last_ref": np.array(last is not None)}

    def set_warm_state(self, state: dict) -> None:
        self._warm = OrderedDict((np.asarray(x, float).tobytes(), np.asarray(p, np.uint8))
                                 for x, p in zip(state["inputs"], state["sets"]))
        self._last_ref = np.asarray(state["last_ref"], bool).copy() if bool(state["has_last_ref"]) else None

    # --- solve ----------------------------------------------------------------------------------
    def solve(self, g: np.ndarray, X: Optional[np.ndarray] = None, nudge: Nudge = FREE,
              s0: Optional[np.ndarray] = None, warm: bool = True) -> BatchSolution:
        """Equilibria of every sample of ``X`` (B, n_inputs) at conductances ``g`` (S).

        ``nudge.target`` / ``nudge.clamp`` are ``(n_out,)`` or ``(B, n_out)``. ``s0`` (B, n_nodes):
        a start state (its tight diodes start conducting); ``warm=False`` ignores ``s0`` and the
        remembered sets (a cold start from no conducting diode). BLAS runs on ``threads`` threads.
        """
        with blas_threads(self.threads):
            return self._solve(g, X, nudge, s0, warm)

    def _solve(self, g, X, nudge, s0, warm) -> BatchSolution:
        topo = self.topo
        g = np.asarray(g, dtype=float)
        if g.shape != topo.base.g.shape:
            raise PhysgradError(f"expected {topo.base.g.size} conductances, got shape {g.shape}")
        if not np.all(np.isfinite(g)) or np.any(g < 0):
            raise PhysgradError("conductances must be finite and >= 0")
        B = 1 if X is None else len(X)
        if not topo.batchable or np.any(g == 0):
            return self._one_by_one(g, X, nudge, np.arange(B), None, reason=topo.why_not or "open resistors")
        self.stats["batches"] += 1
        e = self.entry(g)
        data = self._batch_data(e, X)
        F, d, C = data["F"], data["d"], data["C"]
        # outputs: nudge or clamp
        out_rhs, out_lambda, beta = None, 0.0, 0.0
        kind = "free"
        if nudge.clamp is not None:
            kind = "clamp"
            if np.any(topo.node_col[topo.outputs] < 0):
                return self._one_by_one(g, X, nudge, np.arange(B), None, reason="clamp on a fixed node")
            vals = np.broadcast_to(np.asarray(nudge.clamp, float), (B, topo.n_out))
            out_rhs = vals - C[:, topo.outputs]
        elif nudge.beta != 0.0:
            kind = "nudge"
            beta = nudge.beta
            y = np.broadcast_to(np.asarray(nudge.target, float), (B, topo.n_out))
            if beta < 0:
                bmax = e.max_negative_beta(topo, self.M.rows, self._qd(e) if self.route() == "ldl" else None)
                if -beta >= bmax * (1 - 1e-12):
                    raise PhysgradError(
                        f"beta = {beta:.6g} makes the nudged energy non-convex; negative nudges need "
                        f"|beta| < {bmax:.6g} S for this circuit")
            out_rhs = y - C[:, topo.outputs]
            out_lambda = 1.0 / beta
        # samples whose fixed diodes are at or beyond threshold: the one-sample route names them
        special = np.flatnonzero(np.any(data["fixed"] <= 0, axis=1)) if data["fixed"].size else np.zeros(0, int)
        # start: the tight diodes of s0, else the inputs' last sets, else the reference set
        system = e.system
        W0 = np.zeros((B, topo.m), bool)
        own_start = False  # W0 holds each sample's own predicted set (s0's, or a remembered input's)
        if warm and topo.m:
            if s0 is not None and np.shape(s0) == (B, topo.n_nodes) and np.all(np.isfinite(s0)):
                s0 = np.asarray(s0, float)
                held = self._last_free
                if held is not None and held[0] == _digest(s0):
                    # s0 is the last free solution: start from its conducting set exactly (weakly
                    # active diodes, tight but carrying no current, would otherwise start conducting)
                    W0 = held[1].copy()
                    own_start = True
                else:
                    slack0 = topo.vth[None, :] - _apply(self.M.Dn, s0)
                    W0 = slack0 <= 1e-9 * max(1.0, float(np.max(np.abs(s0), initial=0.0)))
                    own_start = True
            else:
                known = self.warm_sets(X) if kind == "free" else None
                if known is not None:
                    W0 = known
                    own_start = True
                elif system is not None:
                    W0 = np.repeat(system.ref[None, :], B, axis=0)
                elif self._last_ref is not None:  # a new parameter value: the last reference set
                    W0 = np.repeat(self._last_ref[None, :], B, axis=0)
        h_scale = np.full(B, float(np.max(np.abs(e.h_diag), initial=1.0)) + abs(beta))
        tol_v, tol_i = tolerances(h_scale, F, d)
        if self.route() == "ldl":
            return self._conclude(e, data, X, nudge, kind, beta, out_rhs, special,
                                *self._solve_ldl(e, data, W0, out_rhs, out_lambda, beta, kind, tol_v, tol_i))
        n_ref = 0
        if system is None or (warm and self._worth_reference(system, W0)):
            system = self._new_system(e, W0 if warm else None)
            n_ref += 1
        elif not warm and system.ref_rows.size > REF_MIN:
            # a cold start (no diode conducts) on a large reference set would border every
            # reference row: start on the factor of H0 itself (then the iteration picks a reference)
            system = e.h0_system(self.topo, self.M.rows)
        X0 = self._x0(system, data)
        refactors = [n_ref]
        # A start from each sample's own predicted set already gave the reference (their majority):
        # refactoring mid-iteration then cost more than it saved (1k-node indep network: 790 against
        # 600 equilibria per CPU second); from a shared start the iteration may pick a better one.
        max_refactors = n_ref if own_start else MAX_REFACTORS

        def refactor(W, todo):
            if refactors[0] >= max_refactors or not self._worth_reference(cur[0], W[todo]):
                return None
            s = self._new_system(e, W[todo])
            refactors[0] += 1
            cur[0] = s
            return s, self._x0(s, data)

        cur = [system]
        router = None
        if not system.dense and topo.m:
            if e.pool is None:
                e.pool = PatternPool(lambda pattern: self._pattern_system(e, pattern))
            router = Router(system, X0, F, d, out_rhs, out_lambda, e.pool)
        u, lam, z_out, W, status, n_iter, system, X0 = pdas_batch(
            system, X0, d, W0, out_rhs, out_lambda, tol_v, tol_i, refactor=refactor, router=router)
        e.system = system
        self._last_ref = system.ref
        info = {"refactorizations": refactors[0], "reference_size": int(system.ref_rows.size), "dense": system.dense,
                "route": "schur",
                **(router.stats if router is not None else
                   {"border_samples": int(np.sum(n_iter)), "pattern_samples": 0, "pattern_factorizations": 0})}
        return self._conclude(e, data, X, nudge, kind, beta, out_rhs, special, u, lam, z_out, W, status, n_iter, info)

    def route(self) -> str:
        """The equality-constrained solves' route: ``"schur"`` (borders of one shared factorization,
        :mod:`~physgrad.circuit.solvers.bordered`) or ``"ldl"`` (each sample's own quasi-definite KKT
        system, one symbolic LDL^T for all, :mod:`~physgrad.circuit.solvers.qdkkt`). ``"auto"``: the
        Schur route where every diode row and output fits one small dense Schur system
        (``m + n_out <= FULL_MASK_MAX``), the LDL^T route otherwise (measured in
        ``reports/benchmarks/graphs.md``)."""
        route = DEFAULT_KKT_ROUTE if self.kkt_route is None else self.kkt_route
        if route != "auto":
            return route if self.topo.m else "schur"
        return "ldl" if self.topo.m + self.topo.n_out > FULL_MASK_MAX else "schur"

    def _qd(self, e: _Entry):
        """The LDL^T route's system at ``e``'s parameter value (the pattern's symbolic analysis once
        per topology)."""
        if self._qd_pattern is None:
            self._qd_pattern = QDPattern(e.H0, self.topo.D, self.topo.Q)
        if e.qd is None:
            e.qd = self._qd_pattern.system(e.H0)
        return e.qd

    def _solve_ldl(self, e: _Entry, data: dict, W0, out_rhs, out_lambda, beta, kind, tol_v, tol_i):
        """The active-set iteration with each sample's own KKT system factorized (:mod:`qdkkt`)."""
        qd = self._qd(e).configure(data["F"], data["d"], out_rhs, beta, kind == "clamp")
        stats0 = dict(qd.stats)
        B = data["F"].shape[0]
        u, lam, z_out, W, status, n_iter, _, _ = pdas_batch(
            qd, np.zeros((0, B)), data["d"], W0, out_rhs, out_lambda, tol_v, tol_i, router=qd)
        if W.size:
            self._last_ref = np.mean(W, axis=0) > 0.5
        info = {"refactorizations": 0, "reference_size": 0, "dense": False, "route": "ldl",
                "border_samples": 0, "pattern_samples": 0, "pattern_factorizations": 0,
                **{k: v - stats0[k] for k, v in qd.stats.items()}}
        return u, lam, z_out, W, status, n_iter, info

    def _conclude(self, e: _Entry, data: dict, X, nudge: Nudge, kind: str, beta: float, out_rhs, special,
                u, lam, z_out, W, status, n_iter, info: dict) -> BatchSolution:
        """Certify, fall back where needed, remember the free sets: the :class:`BatchSolution`."""
        topo = self.topo
        g = e.g
        B = u.shape[0]
        C = data["C"]
        V = _apply(self.M.P, u) + C
        certs, passed = self._certify(e, data, u, V, lam, z_out, kind, beta, out_rhs)
        status = np.where((status == "converged") & passed, "converged", status).astype(object)
        redo = np.flatnonzero((status != "converged") | ~passed)
        redo = np.union1d(redo, special).astype(np.int64)
        diode = np.zeros((B, len(topo.circuit.arrays.vth)))
        diode[:, topo.base.dio_rows] = lam
        for k, group in topo.base.dio_shares.items():  # parallel diodes with equal thresholds share
            diode[:, list(group)] = diode[:, [k]] / len(group)
        sol = dict(voltages=V, u=u, lam=lam, active=W, diode_currents=diode, z_out=z_out,
                   status=status, n_iter=n_iter, certificates=list(certs), messages=[""] * B)
        if redo.size:
            self._one_by_one(g, X, nudge, redo, sol, reason="batched route not certified")
        if kind == "free":
            self._remember(X, sol["active"], sol["status"] == "converged")
            self._last_free = (_digest(np.asarray(sol["voltages"], float)), np.array(sol["active"], bool))
        return BatchSolution(**{k: (tuple(v) if k in ("certificates", "messages") else v) for k, v in sol.items()},
                             info={"fallbacks": int(redo.size), **info})

    def _worth_reference(self, system: SharedSystem, W: np.ndarray) -> bool:
        """Whether the majority set of ``W`` would cut the corrections enough to refactor."""
        if not W.size or not W.shape[1] or not np.any(W):
            return False
        now = float(np.mean(np.sum(W ^ system.ref[None, :], axis=1)))
        if now <= REF_MIN:
            return False
        maj = np.mean(W, axis=0) > 0.5
        then = float(np.mean(np.sum(W ^ maj[None, :], axis=1)))
        return then * REF_GAIN <= now

    def _new_system(self, e: _Entry, W: Optional[np.ndarray]) -> SharedSystem:
        ref = None if W is None or not W.size else (np.mean(W, axis=0) > 0.5)
        self.stats["factorizations"] += 1
        try:
            return SharedSystem(e.H0, self.topo.D, self.topo.Q, ref, rows=self.M.rows)
        except SingularSystemError:  # dependent reference rows: fall back to H0 itself
            return SharedSystem(e.H0, self.topo.D, self.topo.Q, rows=self.M.rows)

    def _pattern_system(self, e: _Entry, pattern: np.ndarray) -> SharedSystem:
        """A reference factorization of one whole conducting set (the refactor-per-pattern route)."""
        self.stats["factorizations"] += 1
        try:
            return SharedSystem(e.H0, self.topo.D, self.topo.Q, np.asarray(pattern, bool), rows=self.M.rows)
        except SingularSystemError:  # dependent rows in the set: the factor of H0, rows as borders
            return e.h0_system(self.topo, self.M.rows)

    # --- certificates ----------------------------------------------------------------------------
    def _certify(self, e: _Entry, data: dict, u, V, lam, z_out, kind: str, beta: float, out_rhs):
        """KKT certificates as :func:`physgrad.circuit.solution.certify` computes them on each
        sample's own problem (free, beta-nudged, or clamped: the clamped outputs' trees are fixed)."""
        topo = self.topo
        F, d = data["F"], data["d"]
        B = u.shape[0]
        M = self.M
        HU = _apply(e.H0m, u)
        r = HU - F + (_apply(M.DT, lam) if topo.m else 0.0)
        f_eff = F
        h_diag = e.h_diag
        primal_extra = np.zeros(B)
        if kind == "nudge":
            o_u = _apply(M.QT, u)  # Q^T u
            r = r + beta * _apply(M.Q, o_u - out_rhs)
            f_eff = F + beta * _apply(M.Q, out_rhs)
            h_diag = h_diag + beta * M.qq
        elif kind == "clamp":
            cols = np.unique(topo.node_col[topo.outputs])
            keep = np.ones(topo.n_u, bool)
            keep[cols] = False
            # the clamped problem: clamped trees fixed, their voltages moved into f
            Uc = np.zeros_like(u)
            Uc[:, cols] = u[:, cols]
            f_eff = (F - _apply(e.H0m, Uc))[:, keep]
            r = r[:, keep]
            h_diag = h_diag[keep]
            o_u = _apply(M.QT, u)
            primal_extra = np.max(np.abs(o_u - out_rhs), axis=1, initial=0.0)
        slack = d - (_apply(M.D, u) if topo.m else np.zeros((B, 0)))
        v_scale = np.maximum.reduce([np.ones(B), np.max(np.abs(V), axis=1, initial=0.0),
                                     np.max(np.abs(d), axis=1, initial=0.0)])
        h = float(np.max(np.abs(h_diag), initial=0.0)) if h_diag.size else 0.0
        i_scale = np.maximum.reduce([np.max(np.abs(f_eff), axis=1, initial=0.0), h * v_scale,
                                     np.max(np.abs(lam), axis=1, initial=0.0), np.full(B, 1e-30)])
        tol_i, tol_v = CERT_RTOL * i_scale, CERT_RTOL * v_scale
        kcl = np.max(np.abs(r), axis=1, initial=0.0)
        primal = np.maximum(np.maximum(0.0, np.max(-slack, axis=1, initial=0.0)), primal_extra)
        dual = np.maximum(0.0, np.max(-lam, axis=1, initial=0.0))
        comp = np.max(np.abs(lam * slack), axis=1, initial=0.0)
        finite = np.all(np.isfinite(u), axis=1)
        ok = (kcl <= tol_i) & (primal <= tol_v) & (dual <= tol_i) & (comp <= tol_i * tol_v / CERT_RTOL) & finite
        certs = [KKTCertificate(float(kcl[b]), float(primal[b]), float(dual[b]), float(comp[b]), float(tol_i[b]),
                                float(tol_v[b]), bool(ok[b])) for b in range(B)]
        return certs, ok

    # --- the one-sample route ----------------------------------------------------------------------
    def _one_by_one(self, g, X, nudge: Nudge, samples, sol: Optional[dict], reason: str) -> BatchSolution:
        """Solve ``samples`` one at a time on their own problems (the robust route); fills ``sol``."""
        topo = self.topo
        B = 1 if X is None else len(X)
        n_dio = len(topo.circuit.arrays.vth)
        if sol is None:
            sol = dict(voltages=np.full((B, topo.n_nodes), np.nan), u=np.full((B, topo.n_u), np.nan),
                       lam=np.zeros((B, topo.m)), active=np.zeros((B, topo.m), bool),
                       diode_currents=np.zeros((B, n_dio)), z_out=np.zeros((B, topo.n_out)),
                       status=np.full(B, "converged", dtype=object), n_iter=np.zeros(B, np.int64),
                       certificates=[None] * B, messages=[""] * B)
            standalone = True
        else:
            standalone = False
        self.stats["fallbacks"] += len(samples)
        for b in samples:
            b = int(b)
            nb = _nudge_row(nudge, b)
            circuit = topo.circuit
            if X is not None and topo.input_names:
                circuit = circuit.with_sources(dict(zip(topo.input_names, np.asarray(X, float)[b])))
            try:
                pb = build_problem(circuit, nb, outputs=[topo.circuit.nodes[o] for o in topo.outputs],
                                   conductances=g)
            except InfeasibleError as err:
                self._mark(sol, b, "infeasible", str(err))
                continue
            if pb.S.shape[0]:
                raise PhysgradError("the batched active-set route handles ideal diodes only; "
                                    "Shockley diodes need the Newton solver")
            try:
                res = solve_active_set(pb.H, pb.f, pb.D, pb.d)
            except InfeasibleError as err:
                self._mark(sol, b, "infeasible", str(err))
                continue
            except NotSolvedError as err:
                self._mark(sol, b, "solver_error", str(err))
                continue
            cert = certify(pb, res.u, res.lam)
            sol["voltages"][b] = pb.voltages(res.u)
            currents = ideal_diode_currents(pb, res.lam)
            sol["diode_currents"][b] = currents
            pos = {int(k): i for i, k in enumerate(topo.base.dio_rows)}
            lam_b = np.zeros(topo.m)
            act_b = np.zeros(topo.m, bool)
            for i, k in enumerate(pb.dio_rows):
                if int(k) in pos:
                    lam_b[pos[int(k)]] = res.lam[i]
                    act_b[pos[int(k)]] = bool(res.active[i]) if res.active is not None else res.lam[i] > 0
            sol["lam"][b] = lam_b
            sol["active"][b] = act_b
            if pb.P.shape == topo.P.shape and nb.clamp is None:
                sol["u"][b] = res.u
            status = "converged" if res.converged else "max_iter"
            message = "" if res.converged else res.message
            if status == "converged" and not cert.passed:
                status = "solver_error"
                message = "KKT certificate failed: " + cert.describe()
            sol["status"][b] = status
            sol["n_iter"][b] = res.n_iter
            sol["certificates"][b] = cert
            sol["messages"][b] = message
            if nb.beta != 0.0:
                v = sol["voltages"][b][topo.outputs]
                sol["z_out"][b] = nb.beta * (v - np.asarray(nb.target, float))
        if standalone:
            return BatchSolution(**{k: (tuple(v) if k in ("certificates", "messages") else v) for k, v in sol.items()},
                                 info={"fallbacks": len(samples), "reason": reason})
        return None

    @staticmethod
    def _mark(sol, b, status, message):
        sol["voltages"][b] = np.nan
        sol["status"][b] = status
        sol["messages"][b] = message
        sol["certificates"][b] = None

    # --- the adjoint ----------------------------------------------------------------------------
    def adjoint_scales(self, g: np.ndarray, W: np.ndarray) -> tuple:
        """Scales of the reduced system at conductances ``g`` (S) and source values ``W``
        ``(B, n_src)``: ``(h, f)`` with ``h`` the largest diagonal conductance of ``H_0`` (S) and
        ``f`` the largest forcing current ``|K_f w|`` (A), for the adjoint's tolerances."""
        e = self.entry(np.asarray(g, float))
        F = e.Kf @ np.asarray(W, float).T
        return (float(np.max(np.abs(e.h_diag), initial=0.0)), float(np.max(np.abs(F), initial=0.0)))

    def adjoint(self, g: np.ndarray, active: np.ndarray, out_grad: np.ndarray):
        """Adjoint node potentials ``P p_b`` (V^2/A per unit of cost) of the free equilibria with
        conducting sets ``active`` (B, m): ``K_b [p; q] = [Q a_b; 0]``, ``a_b = dC/do_b`` (V).

        Returns ``(Pp, ok)``: ``Pp`` of shape ``(B, n_nodes)``, ``ok`` False where the sample's
        KKT system was singular. Uses the factor at hand for ``g`` (cached by :meth:`solve`).
        """
        with blas_threads(self.threads):
            return self._adjoint(g, active, out_grad)

    def _adjoint(self, g: np.ndarray, active: np.ndarray, out_grad: np.ndarray):
        topo = self.topo
        e = self.entry(np.asarray(g, float))
        system = e.system or self._new_system(e, active)
        e.system = system
        B = out_grad.shape[0]
        keys = topo.m + np.arange(topo.n_out)
        system.ensure(keys)
        Yo = system.Y[:, system.col[keys]]
        X0 = Yo @ np.asarray(out_grad, float).T  # K^{-1} [Q a; 0]
        p, _, _, ok = solve_on_sets(system, X0, np.zeros((B, topo.m)), np.asarray(active, bool), None, 0.0)
        return _apply(self.M.P, p), ok


def _nudge_row(nudge: Nudge, b: int) -> Nudge:
    """Sample ``b``'s nudge (values ``(n_out,)`` or ``(B, n_out)``)."""
    def row(values):
        a = np.asarray(values, dtype=float)
        if a.ndim <= 1:
            return a
        return a[b] if a.shape[0] > 1 else a[0]

    if nudge.is_free:
        return nudge
    if nudge.clamp is not None:
        return Nudge(clamp=row(nudge.clamp))
    return Nudge(nudge.beta, target=row(nudge.target))


def solve_batch(circuit: Circuit, X: Optional[np.ndarray] = None, inputs: Sequence[str] = (), *,
                nudge: Nudge = FREE, outputs: Optional[Sequence[str]] = None,
                conductances: Optional[np.ndarray] = None, s0: Optional[np.ndarray] = None,
                warm: bool = True) -> BatchSolution:
    """Equilibria of ``circuit`` for every row of ``X`` (values of the sources ``inputs``).

    Parameters
    ----------
    circuit : Circuit
    X : (B, n_inputs), optional — V for voltage sources, A for current sources (None: batch 1, the
        circuit's own values)
    inputs : names of the independent sources ``X`` sets
    nudge : Nudge — free, ``beta`` towards ``target`` or ``clamp`` of the outputs (per sample or shared)
    outputs : output node names (default the ``.target`` nodes)
    conductances : (n_resistors,) S (default the circuit's)
    s0 : (B, n_nodes) V, optional start state; warm : use it (and nothing else) when True

    For repeated calls on one circuit keep a :class:`BatchSolver` (``BatchSolver(Topology.build(...))``):
    it reuses the topology analysis and the factorization of the last parameter values.
    """
    topo = Topology.build(circuit, inputs, outputs)
    g = circuit.arrays.g if conductances is None else np.asarray(conductances, float)
    if X is not None:
        X = np.asarray(X, float)
        if X.ndim != 2 or X.shape[1] != len(topo.input_names):
            raise PhysgradError(f"X must have shape (batch, {len(topo.input_names)}), got {X.shape}")
    if shockley_supports(topo, nudge):  # Shockley diodes only: the batched Newton
        return _shockley_solution(topo, g, X, nudge, s0, warm)
    return BatchSolver(topo).solve(g, X, nudge, s0=s0, warm=warm)


def _shockley_solution(topo: Topology, g, X, nudge: Nudge, s0, warm: bool) -> BatchSolution:
    """:class:`BatchSolution` of a Shockley circuit by :class:`ShockleyBatchSolver` (samples it does not
    certify solved again alone); no ideal diodes, so ``lam``, ``active``, ``diode_currents`` are empty."""
    solver = ShockleyBatchSolver(topo)
    res = solver.solve(g, X, nudge, s0=s0, warm=warm)
    redo = np.flatnonzero(res["status"] != "converged")
    solver.solve_alone(g, X, nudge, res, redo)
    B = len(res["status"])
    z_out = np.zeros((B, topo.n_out))
    if nudge.beta != 0.0 and nudge.clamp is None:
        y = np.broadcast_to(np.asarray(nudge.target, float), (B, topo.n_out))
        z_out = nudge.beta * (res["voltages"][:, topo.outputs] - y)
    return BatchSolution(voltages=res["voltages"], u=res["u"], lam=np.zeros((B, 0)), active=np.zeros((B, 0), bool),
                         diode_currents=np.zeros((B, 0)), z_out=z_out, status=np.asarray(res["status"], object),
                         n_iter=res["n_iter"], certificates=tuple(res["certificates"]),
                         messages=tuple(res["messages"]), info=dict(res["info"], fallbacks=int(redo.size)))

r"""Equilibria of one Shockley-diode circuit for a whole batch of inputs, and their exact gradient.

:class:`ShockleyBatchSolver` is the Shockley counterpart of :class:`physgrad.circuit.batch.BatchSolver`
for circuits of resistors, Shockley diodes and sources (no ideal diodes). From the fixed
:class:`~physgrad.circuit.topology.Topology` it forms every sample's reduced problem as a few sparse
products over the whole batch (no per-sample circuit rebuild),

.. math:: f_b = K_f w_b\,[+\beta Q(y_b - c_{o,b})],\quad e_b = A_{\rm shk}^\top M_c w_b,\quad
          H = H_0(g)\,[+\beta Q Q^\top],\quad S = A_{\rm shk}^\top P,

and runs :func:`physgrad.circuit.solvers.batch_newton.newton_batch` on all of them with one symbolic
LDL^T per topology. Starts, in order: ``s0`` when given (a nudged phase from the free state), the
last solution of the same input (free phase; a bounded LRU, e.g. the previous training step or epoch),
else ``u = 0`` (every free node at the offset its sources give it) unless that puts a diode beyond its
critical voltage (:func:`~physgrad.circuit.solvers.batch_newton.forward_at`: such a sample goes to the
one-sample route and its ideal-diode start). Measured on the 1k-node
``indep`` network (``benchmarks/graphs.py``), the ideal-diode start of the one-sample route
(an active-set solve per sample) cost more than the Newton iterations it saved; it stays in the
one-sample route, which every sample the batch does not certify is handed to (with its homotopies).
A start changes the iterations, never the answer: the iteration stops on the per-node KCL test only.

Every answer carries the KKT certificate :func:`physgrad.circuit.solution.certify` would give on the
sample's own :class:`~physgrad.circuit.reduction.Problem` (same residual, same per-node scales).

The exact gradient (:meth:`ShockleyBatchSolver.adjoint`): at the free equilibrium ``u_b`` the KCL
``r(u, g) = H(g) u - f(g) + S^T I(S u + e) = 0`` gives, with ``K_b = dr/du`` (the Newton matrix at
``u_b``, refactorized numerically on the same symbolic analysis) and ``K_b p_b = Q a_b``
(``a_b = dC/do_b``), :math:`dC/dg_k = -\sum_b \Delta\bar v_{b,k} \Delta v_{b,k}` with
:math:`\bar v_b = P p_b`: the same formula as the ideal-diode adjoint.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import numpy as np
import scipy.sparse as sp

from physgrad.circuit.diode import shockley_current, shockley_slope
from physgrad.circuit.reduction import max_negative_beta, node_current_scales
from physgrad.circuit.solution import CERT_ATOL, CERT_RTOL, KKTCertificate
from physgrad.circuit.solvers.batch_newton import BatchProblem, NewtonPattern, forward_at, newton_batch
from physgrad.circuit.solvers.strategy import blas_threads
from physgrad.circuit.topology import Topology
from physgrad.types import FREE, Nudge, PhysgradError

# Warm-start memory: at most this many stored floats (8 bytes each) over all remembered inputs.
WARM_FLOATS = 4_000_000


def supports(topology: Topology, nudge: Nudge = FREE) -> bool:
    """Whether the batched Shockley route handles this circuit and phase: Shockley diodes and no
    ideal diodes (those go through the one-sample Newton's active-set loop), free or beta-nudged."""
    arr = topology.circuit.arrays
    return bool(arr.shk_a.size) and not arr.vth.size and nudge.clamp is None


class ShockleyBatchSolver:
    """Batched Newton equilibria of one Shockley :class:`Topology` (module docstring).

    Keeps the symbolic LDL^T (per topology), ``H0`` of the last ``n_params`` conductance vectors and
    the last solutions of recent inputs (bounded by :data:`WARM_FLOATS`).
    """

    def __init__(self, topology: Topology, n_params: int = 2, threads: Optional[int] = 1):
        self.topo = topology
        arr = topology.circuit.arrays
        self.threads = threads
        self.n_params = n_params
        self.Sn = arr.A_shk.T.tocsr()  # (n_shk, n_nodes)
        self.S = (self.Sn @ topology.P).tocsr()
        self.S.eliminate_zeros()
        self.params = (arr.shk_IS, arr.shk_N, arr.shk_vt, arr.shk_gmin)
        self.col = np.concatenate([topology.node_col, [-1]])
        self.counts = np.maximum(np.asarray(abs(topology.P).sum(axis=0)).ravel(), 1.0)
        self.Q = topology.Q.tocsc()
        self.QQ = (self.Q @ self.Q.T).tocsr()
        self._pattern: Optional[NewtonPattern] = None
        self._H: OrderedDict = OrderedDict()
        self._bmax: dict = {}
        self._warm: OrderedDict = OrderedDict()
        self.stats = {"batches": 0, "factorizations": 0, "warm_starts": 0, "cold_starts": 0}

    @property
    def pattern(self) -> NewtonPattern:
        if self._pattern is None:
            topo = self.topo
            self._pattern = NewtonPattern(topo.h_pattern + self.QQ, self.S)
        return self._pattern

    def _h0(self, g: np.ndarray):
        key = g.tobytes()
        held = self._H.get(key)
        if held is None:
            held = (self.topo.H0(g), self.topo.Kf(g))
            self._H[key] = held
            while len(self._H) > self.n_params:
                self._H.popitem(last=False)
        else:
            self._H.move_to_end(key)
        return held

    # --- the batch's problems ------------------------------------------------------------------
    def problems(self, g: np.ndarray, X: Optional[np.ndarray], nudge: Nudge = FREE):
        """The :class:`BatchProblem` of inputs ``X`` (B, n_inputs) at conductances ``g`` (S), and the
        offsets ``C`` (B, n_nodes) V."""
        topo = self.topo
        arr = topo.circuit.arrays
        W = topo.source_values(X)
        B = W.shape[0]
        H0, Kf = self._h0(g)
        C = topo.offsets(W)
        F = np.asarray((Kf @ W.T).T)
        E = np.asarray((self.Sn @ C.T).T)
        inj = topo.injections(W)
        dc = np.asarray((topo.AM @ W.T).T)
        with np.errstate(over="ignore", invalid="ignore"):
            const = 0.5 * np.sum(g[None, :] * dc**2, axis=1) - np.sum(inj * C, axis=1)
        beta = float(nudge.beta) if nudge.clamp is None else 0.0
        out = topo.outputs
        Y = np.zeros((B, len(out)))
        H = H0
        if beta != 0.0:
            if beta < 0:
                key = (g.tobytes(), "bmax")
                if key not in self._bmax:
                    self._bmax = {key: max_negative_beta(H0, topo.P, out)}
                bmax = self._bmax[key]
                if -beta >= bmax * (1 - 1e-12):
                    raise PhysgradError(f"beta = {beta:.6g} makes the nudged energy non-convex; negative nudges "
                                        f"need |beta| < {bmax:.6g} S for this circuit")
            Y = np.array(np.broadcast_to(np.asarray(nudge.target, float), (B, len(out))))
            H = (H0 + beta * self.QQ).tocsr()
            F = F + beta * np.asarray((self.Q @ (Y - C[:, out]).T).T)
            const = const + 0.5 * beta * np.sum((C[:, out] - Y) ** 2, axis=1)
        CS = W[:, len(arr.vs_pos):]
        V = np.maximum.reduce([np.ones(B), np.max(np.abs(C), axis=1, initial=0.0),
                               np.max(np.abs(E), axis=1, initial=0.0), np.max(np.abs(Y), axis=1, initial=0.0)])
        P, col, n_u = topo.P, self.col, topo.n_u

        def scales(rows, U, I, SL):
            VG = np.concatenate([np.asarray((P @ U.T).T) + C[rows], np.zeros((len(rows), 1))], axis=1)
            return node_current_scales(col, arr, n_u, g, V[rows], VG, I, SL, CS[rows], beta, out, Y[rows])

        return BatchProblem(H.tocsr(), F, self.S, E, const, self.params, scales, V), C

    def reduce(self, state: np.ndarray, C: np.ndarray) -> np.ndarray:
        """Reduced variables of node voltages ``state`` (B, n_nodes): each (super)node's mean."""
        return np.asarray((self.topo.P.T @ (np.asarray(state, float) - C).T).T) / self.counts[None, :]

    # --- warm starts ------------------------------------------------------------------------------
    def _recall(self, X: Optional[np.ndarray], U: np.ndarray, have: np.ndarray):
        if X is None or not self._warm:
            return
        for b, row in enumerate(np.asarray(X, float)):
            if not have[b]:
                u = self._warm.get(row.tobytes())
                if u is not None:
                    U[b] = u
                    have[b] = True
                    self._warm.move_to_end(row.tobytes())

    def _remember(self, X: Optional[np.ndarray], U: np.ndarray, ok: np.ndarray):
        if X is None:
            return
        cap = max(1, WARM_FLOATS // max(self.topo.n_u, 1))
        for b, row in enumerate(np.asarray(X, float)):
            if ok[b]:
                k = row.tobytes()
                self._warm[k] = np.array(U[b])
                self._warm.move_to_end(k)
        while len(self._warm) > cap:
            self._warm.popitem(last=False)

    # --- solve ------------------------------------------------------------------------------------
    def solve(self, g: np.ndarray, X: Optional[np.ndarray] = None, nudge: Nudge = FREE,
              s0: Optional[np.ndarray] = None, warm: bool = True, rtol: float = 1e-13, max_iter: int = 200) -> dict:
        """Equilibria of every sample of ``X`` (B, n_inputs) at conductances ``g`` (S).

        Returns a dict: ``voltages`` (B, n_nodes) V, ``u`` (B, n_u) V, ``status`` (B,) str,
        ``n_iter`` (B,) int, ``messages`` (B,) str (failures only), ``certificates`` (list of
        :class:`KKTCertificate`), ``info`` (counts). ``s0`` (B, n_nodes) V: start state;
        ``warm=False``: every sample starts from ``u = 0``.
        """
        if not supports(self.topo, nudge):
            raise PhysgradError("the batched Shockley route handles circuits of resistors, Shockley diodes and "
                                "sources (no ideal diodes), free or beta-nudged")
        g = np.asarray(g, float)
        with blas_threads(self.threads):
            return self._solve(g, X, nudge, s0, warm, rtol, max_iter)

    def _solve(self, g, X, nudge, s0, warm, rtol, max_iter) -> dict:
        self.stats["batches"] += 1
        bp, C = self.problems(g, X, nudge)
        B, n_u = bp.F.shape
        U0 = np.zeros((B, n_u))
        have = np.zeros(B, bool)
        if warm and s0 is not None:
            s0 = np.asarray(s0, float)
            if s0.shape == C.shape:
                fin = np.all(np.isfinite(s0), axis=1)
                U0[fin] = self.reduce(s0[fin], C[fin])
                have |= fin
        if warm and nudge.is_free:
            self._recall(X, U0, have)
        self.stats["warm_starts"] += int(have.sum())
        self.stats["cold_starts"] += int((~have).sum())
        far = ~have & forward_at(bp, U0)  # cold samples the one-sample route starts better (ideal diodes)
        res = newton_batch(bp, self.pattern, U0, rtol=rtol, max_iter=max_iter, skip=far)
        self.stats["factorizations"] += res.factorizations
        V = np.asarray((self.topo.P @ res.u.T).T) + C
        certs, passed = self.certify(bp, res.u, V)
        status = res.status.copy()
        bad = (status == "converged") & ~passed
        status[bad] = "solver_error"
        msgs = np.where(status == "converged", "", res.messages).astype(object)
        msgs[bad] = "KKT certificate failed"
        if nudge.is_free and warm:
            self._remember(X, res.u, status == "converged")
        return dict(voltages=V, u=res.u, status=status, n_iter=res.n_iter, messages=msgs, certificates=certs,
                    info={"route": "batched newton", "factorizations": res.factorizations,
                          "warm_starts": int(have.sum())})

    def certify(self, bp: BatchProblem, U: np.ndarray, V: np.ndarray):
        """Certificates as :func:`physgrad.circuit.solution.certify` computes them per sample."""
        B = U.shape[0]
        rows = np.arange(B)
        VD = np.asarray((bp.S @ U.T).T) + bp.E
        with np.errstate(over="ignore", invalid="ignore"):
            I = shockley_current(VD, *bp.params)
            SL = shockley_slope(VD, *bp.params)
            R = np.asarray((bp.H @ U.T).T) - bp.F + np.asarray((bp.S.T @ I.T).T)
            node_tol = CERT_RTOL * bp.scales(rows, U, I, SL) + CERT_ATOL
            ratios = np.abs(R) / node_tol
        v_scale = np.maximum(1.0, np.max(np.abs(V), axis=1, initial=0.0))
        h = float(np.max(np.abs(bp.H.diagonal()), initial=0.0)) if U.shape[1] else 0.0
        i_scale = np.maximum.reduce([np.max(np.abs(bp.F), axis=1, initial=0.0), h * v_scale,
                                     np.max(np.abs(I), axis=1, initial=0.0), np.full(B, 1e-30)])
        kcl = np.max(np.abs(R), axis=1, initial=0.0)
        certs, ok = [], np.zeros(B, bool)
        nodes = self.topo.circuit.nodes
        node_col = self.topo.node_col
        for b in range(B):
            kr, kn, kt = 0.0, "", 0.0
            if ratios.shape[1]:
                j = int(np.argmax(np.where(np.isfinite(ratios[b]), ratios[b], np.inf)))
                kr, kt = float(ratios[b, j]), float(node_tol[b, j])
                members = np.flatnonzero(node_col == j)
                kn = nodes[int(members[0])] if members.size else ""
            passed = bool(kr <= 1.0 and np.all(np.isfinite(U[b])))
            ok[b] = passed
            certs.append(KKTCertificate(float(kcl[b]), 0.0, 0.0, 0.0, float(CERT_RTOL * i_scale[b]),
                                        float(CERT_RTOL * v_scale[b]), passed, kr, kn, kt))
        return certs, ok

    # --- the adjoint ------------------------------------------------------------------------------
    def adjoint(self, g: np.ndarray, X: Optional[np.ndarray], state: np.ndarray, out_grad: np.ndarray):
        """Adjoint node potentials ``P p_b`` (B, n_nodes) of the free equilibria ``state`` (B, n_nodes):
        ``K_b p_b = Q a_b`` with ``K_b`` the Newton matrix at the equilibrium (module docstring).

        Returns ``(Pp, ok)``; ``ok`` False where a sample's matrix was singular."""
        with blas_threads(self.threads):
            g = np.asarray(g, float)
            bp, C = self.problems(g, X, FREE)
            U = self.reduce(state, C)
            VD = np.asarray((bp.S @ U.T).T) + bp.E
            with np.errstate(over="ignore"):
                SL = shockley_slope(VD, *self.params)
            pat = self.pattern
            KV = pat.values(pat.h_values(bp.H), SL)
            rhs = np.asarray((self.Q @ np.asarray(out_grad, float).T).T)
            p, ok = pat.symbolic.factor_solve(KV, rhs)
            self.stats["factorizations"] += len(p)
            return np.asarray((self.topo.P @ p.T).T), ok & np.all(np.isfinite(SL), axis=1)

    def solve_alone(self, g: np.ndarray, X: Optional[np.ndarray], nudge: Nudge, res: dict, samples) -> None:
        """Solve ``samples`` of ``res`` (a :meth:`solve` result, updated in place) one at a time on
        their own problems by :func:`physgrad.circuit.solvers.newton.minimize` (ideal-diode start,
        gmin and source stepping) and certify them with :func:`physgrad.circuit.solution.certify`."""
        from physgrad.circuit.reduction import build_problem
        from physgrad.circuit.solution import certify
        from physgrad.circuit.solvers import newton
        from physgrad.types import InfeasibleError

        topo = self.topo
        outs = [topo.circuit.nodes[o] for o in topo.outputs]
        for b in samples:
            b = int(b)
            circuit = topo.circuit
            if X is not None and topo.input_names:
                circuit = circuit.with_sources(dict(zip(topo.input_names, np.asarray(X, float)[b])))
            nb = nudge
            if not nudge.is_free:
                t = np.asarray(nudge.target, float)
                nb = Nudge(nudge.beta, target=t[b] if t.ndim == 2 and t.shape[0] > 1 else t.reshape(-1))
            try:
                pb = build_problem(circuit, nb, outputs=outs, conductances=g)
            except InfeasibleError as err:
                res["status"][b], res["messages"][b], res["certificates"][b] = "infeasible", str(err), None
                res["voltages"][b] = np.nan
                continue
            r = newton.minimize(pb)
            cert = certify(pb, r.u, r.lam) if np.all(np.isfinite(r.u)) else None
            ok = r.converged and cert is not None and cert.passed
            res["voltages"][b] = pb.voltages(r.u)
            res["u"][b] = r.u
            res["status"][b] = "converged" if ok else (r.status if r.status != "converged" else "solver_error")
            res["n_iter"][b] += r.n_iter
            res["certificates"][b] = cert
            res["messages"][b] = "" if ok else r.message

    def clear(self) -> None:
        self._H.clear()
        self._warm.clear()

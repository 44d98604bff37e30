r"""Minimizer of a circuit's co-content (:class:`physgrad.energies.co_content.CoContentEnergy`).

It wraps the circuit core: for circuits of resistors and ideal diodes the batched, warm-started
active-set solver (:class:`physgrad.circuit.batch.BatchSolver`: one factorization per parameter
value shared by every sample and phase, conducting diodes, nudges and clamps as low-rank updates,
every answer KKT-certified); for circuits of Shockley diodes (no ideal diodes; free and beta-nudged
phases) the batched Newton (:class:`physgrad.circuit.shockley_batch.ShockleyBatchSolver`: one symbolic
LDL^T per topology, warm starts, every sample certified, its sparse adjoint for the exact gradient);
otherwise (ideal and Shockley diodes together, clamps, or a named solver)
:func:`physgrad.circuit.solve.solve` sample by sample. It also has the pure, traceable coordinate-descent ``step`` that truncated
backprop differentiates through, and the sparse adjoint (:meth:`CoContentMinimizer.implicit_gradient`)
that the exact gradient uses.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import autograd.numpy as anp
import numpy as np

from physgrad.circuit.batch import BatchSolver
from physgrad.circuit.shockley_batch import ShockleyBatchSolver, supports as shockley_batch_supports
from physgrad.circuit.solution import KKTCertificate
from physgrad.circuit.reduction import build_problem
from physgrad.circuit.solve import SOLVERS, solve, solve_problem
from physgrad.energies.co_content import CoContentEnergy
from physgrad.types import FREE, Equilibrium, Nudge, PhysgradError


def _sample_row(values, b: int) -> np.ndarray:
    """Row ``b`` of per-sample values ``(batch, n_out)`` (or the shared ``(n_out,)`` / ``(1, n_out)``)."""
    a = np.asarray(values, dtype=float)
    if a.ndim <= 1:
        return a
    return a[b] if a.shape[0] > 1 else a[0]


def _nudge_row(nudge: Nudge, b: int) -> Nudge:
    """Sample ``b``'s nudge."""
    if nudge.is_free:
        return nudge
    if nudge.clamp is not None:
        return Nudge(clamp=_sample_row(nudge.clamp, b))
    return Nudge(nudge.beta, target=_sample_row(nudge.target, b))



MESSAGE_SAMPLES = 3
"""A batch's message names at most this many samples' messages, then counts the rest."""


def join_messages(msgs, limit: int = MESSAGE_SAMPLES) -> str:
    """``"; "``-joined ``msgs``, the first ``limit`` of them and ``"... and N more"`` (a batch of
    thousands of failed samples gives one readable line, not thousands)."""
    msgs = list(msgs)
    head = "; ".join(msgs[:limit])
    return head if len(msgs) <= limit else f"{head}; ... and {len(msgs) - limit} more"

class SolverCache:
    """The minimizer's state: one :class:`BatchSolver` per circuit topology (an LRU of at most
    ``n_topologies``), each holding the factorizations of its last parameter values and the
    conducting sets of recent inputs (bounded). Keyed by the energy's
    :class:`~physgrad.circuit.topology.Topology` object (identity)."""

    def __init__(self, n_topologies: int = 4):
        self.n_topologies = int(n_topologies)
        self._solvers: OrderedDict = OrderedDict()

    def solver(self, energy: CoContentEnergy, kind=BatchSolver):
        """The batched solver of ``energy``'s topology (built on first use): ``kind`` is
        :class:`BatchSolver` (ideal diodes) or :class:`ShockleyBatchSolver` (Shockley diodes)."""
        topo = energy.topology
        key = (id(topo), kind.__name__)
        held = self._solvers.get(key)
        if held is None or held.topo is not topo:
            held = kind(topo)
            self._solvers[key] = held
            while len(self._solvers) > self.n_topologies:
                self._solvers.popitem(last=False)
        else:
            self._solvers.move_to_end(key)
        return held

    def clear(self) -> None:
        self._solvers.clear()


@dataclass(frozen=True)
class CoContentMinimizer:
    """Minimizer of a :class:`CoContentEnergy` for a whole batch, plus a pure coordinate-descent ``step``.

    Parameters
    ----------
    solver : str
        ``"auto"`` (default): for ideal-diode (and linear) circuits the batched exact active-set
        solve of the reduced QP (:class:`physgrad.circuit.batch.BatchSolver`), every sample
        certified; with Shockley diodes only (free and beta-nudged phases) the batched Newton of
        :class:`physgrad.circuit.shockley_batch.ShockleyBatchSolver` (a sample it does not certify is
        solved again alone); otherwise :func:`physgrad.circuit.solve.solve` (damped Newton) sample
        by sample. ``"activeset"`` forces the batched route; any other value (``"qp"``,
        ``"coordinate"``, ``"newton"``, ``"linear"``) is passed to :func:`physgrad.circuit.solve.solve`.
    warm : bool
        Warm starts (default True): a phase given ``s0`` starts from the diodes tight at ``s0``
        (the nudged and clamped phases of the learning rules pass the free state), the free
        phase of an input seen before from that input's last conducting set, else from the
        batch's reference set. ``False``: every solve starts from "no diode conducts". A start
        changes the number of iterations, never the answer.

    The minimizer owns its caches (:class:`SolverCache`: factorizations and warm-start sets per
    topology, bounded); the energy holds none. Keep one minimizer across the steps of a training
    run for warm starts; :meth:`warm_state` / :meth:`set_warm_state` checkpoint them.
    """

    solver: str = "auto"
    warm: bool = True
    cache: SolverCache = field(default_factory=SolverCache, repr=False, compare=False)

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise PhysgradError(f"unknown solver {self.solver!r}; choose one of {', '.join(SOLVERS)}")

    def accepts(self, energy) -> None:
        if not isinstance(energy, CoContentEnergy):
            raise PhysgradError(f"CoContentMinimizer handles CoContentEnergy, not {type(energy).__name__}")

    def _batched(self, energy) -> bool:
        if self.solver == "activeset" and energy.has_shockley:
            raise PhysgradError("the active-set route handles ideal diodes only; use solver='newton' for Shockley diodes")
        return self.solver == "activeset" or (self.solver == "auto" and not energy.has_shockley)

    def batch_solver(self, energy) -> BatchSolver:
        """The batched solver this minimizer keeps for ``energy``'s topology."""
        self.accepts(energy)
        return self.cache.solver(energy)

    def warm_state(self, energy) -> dict:
        """Warm-start memory for ``energy`` as arrays (a checkpoint); see :meth:`BatchSolver.warm_state`."""
        return self.batch_solver(energy).warm_state()

    def set_warm_state(self, energy, state: dict) -> None:
        """Restore :meth:`warm_state` exactly."""
        self.batch_solver(energy).set_warm_state(state)

    def clear_factors(self) -> None:
        """Forget every factorization (warm-start sets stay): the next solves depend on the
        parameters, the inputs and the warm sets only. For Shockley circuits the remembered
        solutions of the batched Newton are forgotten too (they are not part of :meth:`warm_state`)."""
        for s in self.cache._solvers.values():
            if isinstance(s, BatchSolver):
                s.clear_factors()
            else:  # Shockley: its remembered solutions too (they are not in warm_state's checkpoint)
                s.clear()

    def minimize(self, energy, theta, x, *, nudge: Nudge = FREE, s0=None) -> Equilibrium:
        """Equilibrium of every sample; state shape ``(batch, n_nodes)`` (V).

        ``info`` holds per sample the KKT ``certificates``, the ideal ``diode_currents`` (A, shape
        ``(batch, n_ideal_diodes)``) and ``active``: the solver's conducting diode rows of the
        reduced problem (bool, ``(batch, m)``; ``None`` entries where the solver keeps no working
        set), used by the exact gradient.
        """
        self.accepts(energy)
        xs = energy.batch_inputs(x)
        if self._batched(energy):
            g = np.asarray(energy.conductances(np.asarray(theta, float)), dtype=float)
            sol = self.batch_solver(energy).solve(g, xs if energy.inputs else None, nudge, s0=s0, warm=self.warm)
            statuses = sol.status
            certs = sol.certificates
            msgs = [f"sample {b}: {m}" for b, m in enumerate(sol.messages) if m]
            n_iter = int(np.sum(sol.n_iter))
            extra = {"solver_info": dict(sol.info), "nudge_currents": sol.z_out}
            state = sol.voltages
            currents, active = sol.diode_currents, sol.active
        elif self._shockley_batched(energy, nudge):
            state, statuses, certs, msgs, n_iter, currents, active, extra = self._minimize_shockley(
                energy, theta, xs, nudge, s0)
        else:
            starts = None
            if self.warm and s0 is not None and np.shape(s0) == (len(xs), len(energy.circuit.nodes)):
                starts = np.asarray(s0, float)
            samples = [_solve_with_circuit_solver(energy, theta, row, _nudge_row(nudge, b), self.solver,
                                                  None if starts is None else starts[b])
                       for b, row in enumerate(xs)]
            statuses = [r.status for r in samples]
            certs = tuple(r.certificate for r in samples)
            msgs = [f"sample {b}: {r.message}" for b, r in enumerate(samples) if r.message]
            n_iter = sum(r.n_iter for r in samples)
            extra = {}
            state = np.stack([r.voltages for r in samples])
            currents = tuple(r.diode_currents for r in samples)
            active = tuple(r.active for r in samples)
        status = next((s for s in ("solver_error", "infeasible", "max_iter") if s in set(statuses)), "converged")
        if status == "converged" and any(c is not None and not c.passed for c in certs):
            status = "solver_error"
            failed = [c.describe() for c in certs if c is not None and not c.passed]
            msgs.append("KKT certificate failed: " + join_messages(failed))
        return Equilibrium(state=state, energy=np.asarray(energy.energy(state, theta, xs)), status=status,
                           n_iter=n_iter, residual=max([c.kcl for c in certs if c is not None], default=0.0),
                           solver=f"co-content/{self.solver}", message=join_messages(msgs),
                           info={"certificates": tuple(certs), "diode_currents": currents, "active": active,
                                 "residual_kind": "max KCL residual (A)", **extra})

    def _shockley_batched(self, energy, nudge: Nudge) -> bool:
        return (self.solver == "auto" and energy.has_shockley
                and shockley_batch_supports(energy.topology, nudge))

    def _minimize_shockley(self, energy, theta, xs, nudge: Nudge, s0):
        """The whole batch by :class:`ShockleyBatchSolver` (one symbolic factorization, batched
        Newton); a sample it does not certify is solved again alone by the one-sample route
        (:func:`physgrad.circuit.solve.solve`: ideal-diode start, gmin and source stepping)."""
        g = np.asarray(energy.conductances(np.asarray(theta, float)), dtype=float)
        solver = self.cache.solver(energy, ShockleyBatchSolver)
        X = xs if energy.inputs else None
        res = solver.solve(g, X, nudge, s0=s0, warm=self.warm)
        state = np.array(res["voltages"])
        statuses = list(res["status"])
        certs = list(res["certificates"])
        n_iter = int(np.sum(res["n_iter"]))
        redo = [b for b, st in enumerate(statuses) if st != "converged"]
        msgs = []
        for b in redo:
            first = res["messages"][b]
            r = _solve_with_circuit_solver(energy, theta, xs[b], _nudge_row(nudge, b), self.solver)
            state[b], statuses[b], certs[b] = r.voltages, r.status, r.certificate
            n_iter += r.n_iter
            if r.status != "converged":
                msgs.append(f"sample {b}: {r.message} (batched Newton: {first})")
        B = len(statuses)
        info = dict(res["info"], fallbacks=len(redo))
        return (state, statuses, tuple(certs), msgs, n_iter, tuple(np.zeros(0) for _ in range(B)),
                tuple(np.zeros(0, bool) for _ in range(B)), {"solver_info": info})

    def implicit_gradient(self, energy, theta, x, free: Equilibrium, out_grad):
        r"""Exact :math:`d\bar C/dg` of the trainable conductances by one sparse adjoint solve.

        With the free equilibria's conducting sets ``W_b`` (``free.info["active"]``) and
        ``a_b = d\bar C/do_b`` (``out_grad``, shape ``(batch, n_out)``), the adjoint
        ``K_b [p_b; q_b] = [Q a_b; 0]`` (the same KKT matrix as the equilibrium, solved on the
        factor at hand) gives node potentials :math:`\bar v_b = P p_b` and

        .. math:: \frac{d\bar C}{dg_k} = -\sum_b \Delta\bar v_{b,k}\,\Delta v_{b,k},

        the product of the adjoint's and the equilibrium's voltages across resistor ``k``.

        Returns a dict (``grad``, ``rows``, ``min_slack`` (V), ``min_current`` (A), ``kkt_residual`` (A),
        ``v_scale``, ``i_scale``) or ``None`` when this route does not apply (Shockley diodes,
        a one-sample route, dependent constraints): the caller then differentiates the dense form.
        """
        self.accepts(energy)
        if self._shockley_batched(energy, FREE):
            return self._shockley_gradient(energy, theta, x, free, out_grad)
        if not self._batched(energy) or not energy.topology.batchable:
            return None
        active = free.info.get("active") if hasattr(free, "info") else None
        topo = energy.topology
        try:
            active = np.asarray(active, dtype=bool)
        except (TypeError, ValueError):
            return None
        state = np.asarray(free.state, float)
        B = state.shape[0]
        if active.shape != (B, topo.m):
            return None
        g = np.asarray(energy.conductances(np.asarray(theta, float)), dtype=float)
        if np.any(g <= 0):
            return None
        Pp, ok = self.batch_solver(energy).adjoint(g, active, np.asarray(out_grad, float))
        if not np.all(ok):
            return None
        grad = -np.sum(energy.branch_voltages(Pp) * energy.branch_voltages(state), axis=0)
        xs = energy.batch_inputs(x)
        W = topo.source_values(xs if energy.inputs else None)
        d = topo.bounds(W)
        slack = topo.vth[None, :] - np.asarray((topo.Dn @ state.T).T)
        lam = np.asarray(free.info["diode_currents"], float)[:, topo.base.dio_rows] if topo.m else np.zeros((B, 0))
        h, f_max = self.batch_solver(energy).adjoint_scales(g, W)
        v_scale = max(float(np.max(np.abs(state), initial=0.0)), float(np.max(np.abs(d), initial=0.0)), 1e-30)
        i_scale = max(h * v_scale, f_max, 1e-300)
        certs = free.info.get("certificates", ())
        return dict(grad=grad, rows=tuple(tuple(int(i) for i in np.flatnonzero(a)) for a in active),
                    min_slack=float(np.min(np.where(active, np.inf, slack), initial=np.inf)),
                    min_current=float(np.min(np.where(active, lam, np.inf), initial=np.inf)),
                    kkt_residual=max([c.kcl for c in certs if c is not None], default=0.0),
                    v_scale=v_scale, i_scale=i_scale)

    def _shockley_gradient(self, energy, theta, x, free: Equilibrium, out_grad):
        """:meth:`implicit_gradient` of a Shockley circuit: one adjoint solve per sample with the Newton
        matrix at the equilibrium (:meth:`ShockleyBatchSolver.adjoint`); no active set, so the margins are
        infinite. ``None`` where a matrix is singular (the caller then takes the dense route)."""
        state = np.asarray(free.state, float)
        xs = energy.batch_inputs(x)
        g = np.asarray(energy.conductances(np.asarray(theta, float)), dtype=float)
        solver = self.cache.solver(energy, ShockleyBatchSolver)
        X = xs if energy.inputs else None
        if state.ndim != 2 or state.shape[0] != (len(xs) if X is not None else 1):
            return None
        Pp, ok = solver.adjoint(g, X, state, np.asarray(out_grad, float))
        if not np.all(ok):
            return None
        grad = -np.sum(energy.branch_voltages(Pp) * energy.branch_voltages(state), axis=0)
        certs = free.info.get("certificates", ()) if hasattr(free, "info") else ()
        B = state.shape[0]
        v_scale = max(float(np.max(np.abs(state), initial=0.0)), 1e-30)
        return dict(grad=grad, rows=tuple(() for _ in range(B)), min_slack=np.inf, min_current=np.inf,
                    kkt_residual=max([c.kcl for c in certs if c is not None], default=0.0),
                    v_scale=v_scale, i_scale=1e-300)

    def step(self, energy, theta, x, s, nudge: Nudge = FREE):
        """One Gauss-Seidel sweep over the reduced variables (exact per coordinate, diode-projected).

        Traceable by autograd in ``theta`` and ``s`` (shape ``(batch, n_nodes)``). Each reduced
        variable ``u_j`` (a node, or a tree of nodes tied by floating voltage sources) is set to
        the minimizer of the co-content with the others fixed, clipped to the interval its diodes
        allow. Supports free and beta-nudged phases.
        """
        if nudge.clamp is not None:
            raise PhysgradError("the coordinate step supports free and beta-nudged phases, not clamps")
        qf = energy.quadratic_form(theta, x)
        if qf.has_smooth:
            raise PhysgradError("the coordinate step handles ideal diodes only, not Shockley diodes")
        P = qf.P
        Pinv = np.linalg.pinv(P)
        H, f = qf.H, qf.f
        if nudge.beta != 0.0:
            out = list(energy.output_rows)
            Po = P[out]
            y = np.broadcast_to(np.asarray(nudge.target, float), (f.shape[0], len(out)))
            H = H + nudge.beta * anp.dot(Po.T, Po)
            f = f + nudge.beta * anp.dot(y - qf.c[:, out], Po)
        D = np.asarray(qf.D)
        u = anp.dot(s - qf.c, Pinv.T)
        eye = np.eye(P.shape[1])
        for j in range(P.shape[1]):
            uj = u[:, j]
            val = uj + (f[:, j] - anp.dot(u, H[:, j])) / H[j, j]
            rows = np.flatnonzero(D[:, j])
            if rows.size:
                dj = D[rows, j]
                bound = uj[:, None] + (qf.d[:, rows] - anp.dot(u, D[rows].T)) / dj
                if np.any(dj > 0):
                    val = anp.minimum(val, anp.min(bound[:, dj > 0], axis=1))
                if np.any(dj < 0):
                    val = anp.maximum(val, anp.max(bound[:, dj < 0], axis=1))
            u = u + (val - uj)[:, None] * eye[j]
        # Moves along each two-node diode's direction |D_r| (keeps its voltage fixed): without them an
        # active diode between two free nodes pins both, and coordinate descent stalls (eigenvalue 1).
        for r in range(D.shape[0]):
            if np.count_nonzero(D[r]) != 2 or D[r].sum() != 0:
                continue
            direc = np.abs(D[r])
            curv = anp.dot(anp.dot(H, direc), direc)
            slope = anp.dot(anp.dot(u, H) - f, direc)
            t = -slope / curv
            Dd = D @ direc
            slack = qf.d - anp.dot(u, D.T)
            pos, neg = Dd > 1e-12, Dd < -1e-12
            if np.any(pos):
                t = anp.minimum(t, anp.min(slack[:, pos] / Dd[pos], axis=1))
            if np.any(neg):
                t = anp.maximum(t, anp.max(slack[:, neg] / Dd[neg], axis=1))
            u = u + t[:, None] * direc
        return qf.lift(u)


class _Sample(NamedTuple):
    """One sample's answer: node voltages (V), status, iterations, certificate, message, ideal-diode
    currents (A) and the solver's conducting rows (bool mask over the reduced diode rows, or None)."""

    voltages: np.ndarray
    status: str
    n_iter: int
    certificate: Optional[KKTCertificate]
    message: str
    diode_currents: Optional[np.ndarray]
    active: Optional[np.ndarray]


def _solve_with_circuit_solver(energy, theta, x_row, nudge, solver, s0_row=None) -> _Sample:
    """One sample through :func:`physgrad.circuit.solve.solve` (Newton for Shockley diodes, or a named solver).

    ``s0_row`` (V, ``(n_nodes,)``): Newton starts there (e.g. a nudged phase from the free state:
    a few Newton steps instead of a solve from the ideal-diode start; the answer is the same to the
    solver's tolerance)."""
    c = energy.circuit if not energy.inputs else energy.circuit.with_sources(dict(zip(energy.inputs, x_row)))
    g = np.asarray(energy.conductances(np.asarray(theta, float)))
    sol = None
    if s0_row is not None and solver in ("auto", "newton") and energy.has_shockley and np.all(np.isfinite(s0_row)):
        try:
            pb = build_problem(c, nudge, outputs=energy.output_nodes, conductances=g)
        except PhysgradError:  # infeasible or bad input: the plain route reports it
            pb = None
        if pb is not None and pb.n_u:
            counts = np.maximum(np.asarray(abs(pb.P).sum(axis=0)).ravel(), 1.0)
            u0 = (pb.P.T @ (np.asarray(s0_row, float) - pb.c)) / counts  # each (super)node's mean voltage
            sol = solve_problem(pb, "newton", u0=u0)
    if sol is None:
        sol = solve(c, solver, nudge=nudge, outputs=energy.output_nodes, conductances=g, strict=False)
    arr = energy.circuit.arrays
    currents = np.asarray(sol.currents)[arr.dio_pos] if len(arr.dio_pos) else np.zeros(0)
    return _Sample(np.asarray(sol.voltages), sol.status, sol.n_iter, sol.certificate, sol.message, currents,
                   sol.info.get("active"))

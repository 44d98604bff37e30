r"""Minimizer of a circuit's co-content (:class:`physgrad.energies.co_content.CoContentEnergy`).

It wraps the circuit core: for circuits of resistors and ideal diodes the exact active-set KKT solve
of the reduced problem (:func:`physgrad.circuit.solvers.kkt.solve_active_set`, certified by
:func:`physgrad.circuit.solution.certify`) is called directly, sample by sample; with Shockley diodes
(or a named solver) :func:`physgrad.circuit.solve.solve`. It also has the pure, traceable
coordinate-descent ``step`` that truncated backprop differentiates through.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import autograd.numpy as anp
import numpy as np

from physgrad.circuit.solution import KKTCertificate, certify, ideal_diode_currents
from physgrad.circuit.solve import SOLVERS, solve
from physgrad.circuit.solvers.kkt import solve_active_set
from physgrad.energies.co_content import CoContentEnergy
from physgrad.types import FREE, Equilibrium, InfeasibleError, Nudge, NotSolvedError, PhysgradError


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


@dataclass(frozen=True)
class CoContentMinimizer:
    """Minimizer of a :class:`CoContentEnergy`, per sample, plus a pure coordinate-descent ``step``.

    Parameters
    ----------
    solver : str
        ``"auto"`` (default): for ideal-diode circuits the exact KKT solve of the reduced QP on the
        active set (:func:`physgrad.circuit.solvers.kkt.solve_active_set`, certified by
        :func:`physgrad.circuit.solution.certify`) called directly, without building a CircuitSolution;
        with Shockley diodes :func:`physgrad.circuit.solve.solve` (damped Newton). ``"activeset"`` forces the
        direct route; any other value (``"qp"``, ``"coordinate"``, ``"newton"``, ``"linear"``) is passed
        to :func:`physgrad.circuit.solve.solve`.
    """

    solver: str = "auto"

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise PhysgradError(f"unknown solver {self.solver!r}; choose one of {', '.join(SOLVERS)}")

    def accepts(self, energy) -> None:
        if not isinstance(energy, CoContentEnergy):
            raise PhysgradError(f"CoContentMinimizer handles CoContentEnergy, not {type(energy).__name__}")

    def minimize(self, energy, theta, x, *, nudge: Nudge = FREE, s0=None) -> Equilibrium:
        """Equilibrium of every sample; state shape ``(batch, n_nodes)`` (V).

        ``info`` holds per sample the KKT ``certificates``, the ideal ``diode_currents`` (A) and
        ``active``: the solver's conducting diode rows of the reduced problem (bool masks; ``None``
        where the solver keeps no working set), used by the exact gradient.
        """
        self.accepts(energy)
        xs = energy.batch_inputs(x)
        direct = self.solver == "activeset" or (self.solver == "auto" and not energy._cache["shk"])
        samples = [_solve_activeset(energy, theta, row, _nudge_row(nudge, b)) if direct
                   else _solve_with_circuit_solver(energy, theta, row, _nudge_row(nudge, b), self.solver)
                   for b, row in enumerate(xs)]
        statuses = [r.status for r in samples]
        certs = [r.certificate for r in samples]
        msgs = [f"sample {b}: {r.message}" for b, r in enumerate(samples) if r.message]
        status = next((s for s in ("solver_error", "infeasible", "max_iter") if s in statuses), "converged")
        if status == "converged" and any(c is not None and not c.passed for c in certs):
            status = "solver_error"
            msgs.append("KKT certificate failed: " + "; ".join(c.describe() for c in certs if c is not None and not c.passed))
        state = np.stack([r.voltages for r in samples])
        return Equilibrium(state=state, energy=np.asarray(energy.energy(state, theta, xs)), status=status,
                           n_iter=sum(r.n_iter for r in samples),
                           residual=max([c.kcl for c in certs if c is not None], default=0.0),
                           solver=f"co-content/{self.solver}", message="; ".join(msgs),
                           info={"certificates": tuple(certs), "diode_currents": tuple(r.diode_currents for r in samples),
                                 "active": tuple(r.active for r in samples),
                                 "residual_kind": "max KCL residual (A)"})

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


def _not_solved(energy, status: str, message: str) -> _Sample:
    return _Sample(np.full(energy.circuit.arrays.n_nodes, np.nan), status, 0, None, message, None, None)


def _solve_activeset(energy, theta, x_row, nudge) -> _Sample:
    """The exact active-set KKT solve of one sample's reduced problem, certified."""
    try:
        pb = energy.problem(theta, x_row, nudge)
    except InfeasibleError as err:
        return _not_solved(energy, "infeasible", str(err))
    if energy._cache["shk"]:
        raise PhysgradError("the active-set route handles ideal diodes only; use solver='newton' for Shockley diodes")
    try:
        res = solve_active_set(pb.H, pb.f, pb.D, pb.d)
    except InfeasibleError as err:
        return _not_solved(energy, "infeasible", str(err))
    except NotSolvedError as err:
        return _not_solved(energy, "solver_error", str(err))
    return _Sample(pb.voltages(res.u), "converged" if res.converged else "max_iter", res.n_iter,
                   certify(pb, res.u, res.lam), "" if res.converged else res.message,
                   ideal_diode_currents(pb, res.lam), res.active)


def _solve_with_circuit_solver(energy, theta, x_row, nudge, solver) -> _Sample:
    """One sample through :func:`physgrad.circuit.solve.solve` (Newton for Shockley diodes, or a named solver)."""
    c = energy.circuit if not energy.inputs else energy.circuit.with_sources(dict(zip(energy.inputs, x_row)))
    sol = solve(c, solver, nudge=nudge, outputs=energy.output_nodes,
                conductances=np.asarray(energy.conductances(np.asarray(theta, float))), strict=False)
    arr = energy.circuit.arrays
    currents = np.asarray(sol.currents)[arr.dio_pos] if len(arr.dio_pos) else np.zeros(0)
    return _Sample(np.asarray(sol.voltages), sol.status, sol.n_iter, sol.certificate, sol.message, currents,
                   sol.info.get("active"))

r"""A linear resistor network written independently of the circuit core, with known answers.

Used by the tests of the generic learning rules and by the verification catalogue. The state is
the free node voltages ``v`` (batch, n) (V); ``x`` (batch, n_in) are the input source voltages
(V); ``theta = g`` (n_edges,) are edge conductances (S). Edge ``e = (a, b)`` joins two entries of
the extended vector ``[v, x, 0]`` (index ``n + i`` is input ``i``, ``n + n_in`` is ground).

.. math::  E(v, g, x) = \tfrac12 \sum_e g_e\,(w_a - w_b)^2,\qquad w = [v, x, 0].

:func:`chain_cost_and_gradient` gives the closed-form cost and gradient of a series chain
(input -> n nodes -> ground, output = last node): :math:`v_n = x\,r_{n+1} / \sum_k r_k` with
:math:`r = 1/g`.
"""
from __future__ import annotations

from dataclasses import dataclass

import autograd.numpy as anp
import numpy as np

from physgrad.types import FREE, Equilibrium, PhysgradError
from physgrad.types import QuadraticForm


@dataclass(frozen=True)
class LinearNetworkEnergy:
    """Co-content of a linear resistor network with fixed input sources (see module docstring)."""

    n: int
    n_in: int
    edges: tuple
    output_nodes: tuple

    def __post_init__(self):
        top = self.n + self.n_in
        for a, b in self.edges:
            if not (0 <= a <= top and 0 <= b <= top) or a == b:
                raise PhysgradError(f"bad edge {(a, b)}")
        if any(not 0 <= o < self.n for o in self.output_nodes):
            raise PhysgradError("output nodes must be free nodes")

    @property
    def n_outputs(self) -> int:
        return len(self.output_nodes)

    @property
    def output_rows(self) -> tuple:
        return tuple(self.output_nodes)

    def _x(self, x, batch):
        return anp.zeros((batch, 0)) if self.n_in == 0 else anp.reshape(anp.asarray(x, float), (-1, self.n_in))

    def _ext(self, v, x):
        v = anp.reshape(v, (-1, self.n))
        return anp.concatenate([v, self._x(x, v.shape[0]), anp.zeros((v.shape[0], 1))], axis=1)

    def _drops(self, v, x):
        w = self._ext(v, x)
        a = [e[0] for e in self.edges]
        b = [e[1] for e in self.edges]
        return w[:, a] - w[:, b]

    def energy(self, state, theta, x):
        return 0.5 * anp.sum(theta * self._drops(state, x) ** 2, axis=1)

    def theta_grad(self, state, theta, x):
        return 0.5 * anp.mean(self._drops(state, x) ** 2, axis=0)

    def outputs(self, state):
        return anp.reshape(state, (-1, self.n))[:, list(self.output_nodes)]

    def project(self, theta):
        return np.maximum(theta, 0.0)

    def quadratic_form(self, theta, x) -> QuadraticForm:
        """Reduced form: ``u = v``, ``H = sum_e g_e b_e b_e^T`` on free nodes, ``f`` from the sources."""
        xs = np.reshape(np.asarray(x, float), (-1, self.n_in)) if self.n_in else np.zeros((1, 0))
        batch = xs.shape[0]
        top = self.n + self.n_in
        B = np.zeros((len(self.edges), top + 1))
        for k, (a, b) in enumerate(self.edges):
            B[k, a] += 1.0
            B[k, b] -= 1.0
        Bf, Bx = B[:, : self.n], B[:, self.n: top]
        H = anp.dot(anp.transpose(Bf) * theta, Bf)
        f = -anp.dot(anp.dot(xs, anp.transpose(Bx)) * theta, Bf)
        return QuadraticForm(H=H, f=f, D=np.zeros((0, self.n)), d=np.zeros((batch, 0)),
                             P=np.eye(self.n), c=np.zeros((batch, self.n)))


def chain(n: int, outputs=None) -> LinearNetworkEnergy:
    """Series chain: input (index n) - node 0 - ... - node n-1 - ground; output the last node."""
    edges = [(n, 0)] + [(k, k + 1) for k in range(n - 1)] + [(n - 1, n + 1)]
    return LinearNetworkEnergy(n=n, n_in=1, edges=tuple(edges), output_nodes=tuple(outputs or (n - 1,)))


def chain_cost_and_gradient(g, x: float, y: float):
    """Closed-form cost ``1/2 (v_out - y)^2`` and ``dC/dg`` of :func:`chain` (output = last node)."""
    g = np.asarray(g, float)
    r = 1.0 / g
    S = r.sum()
    v = x * r[-1] / S
    dv_dr = np.full(r.shape, -x * r[-1] / S**2)
    dv_dr[-1] += x / S
    dC_dg = (v - y) * dv_dr * (-1.0 / g**2)
    return 0.5 * (v - y) ** 2, dC_dg


@dataclass(frozen=True)
class LinearSolveMinimizer:
    """Exact minimizer of :class:`LinearNetworkEnergy` (dense linear solve) with a Gauss-Seidel ``step``."""

    def accepts(self, energy):
        if not isinstance(energy, LinearNetworkEnergy):
            raise PhysgradError("LinearSolveMinimizer only handles LinearNetworkEnergy")

    def _system(self, energy, theta, x, nudge):
        qf = energy.quadratic_form(np.asarray(theta, float), x)
        H, f = np.array(qf.H), np.array(qf.f)
        out = list(energy.output_nodes)
        if nudge.beta != 0.0:
            y = np.broadcast_to(nudge.target, (f.shape[0], len(out)))
            H[out, out] += nudge.beta
            f[:, out] += nudge.beta * y
        return H, f, out

    def minimize(self, energy, theta, x, *, nudge=FREE, s0=None):
        self.accepts(energy)
        H, f, out = self._system(energy, theta, x, nudge)
        if nudge.clamp is not None:
            clamp = np.broadcast_to(nudge.clamp, (f.shape[0], len(out)))
            rest = [i for i in range(energy.n) if i not in out]
            v = np.zeros_like(f)
            v[:, out] = clamp
            rhs = f[:, rest] - clamp @ H[np.ix_(rest, out)].T
            v[:, rest] = np.linalg.solve(H[np.ix_(rest, rest)], rhs.T).T
        else:
            if np.min(np.linalg.eigvalsh(H)) <= 0:
                raise PhysgradError(f"nudged energy not convex at beta={nudge.beta}")
            v = np.linalg.solve(H, f.T).T
        e = energy.energy(v, theta, x)
        return Equilibrium(state=v, energy=e, status="converged", n_iter=1, residual=0.0, solver="linear-solve")

    def step(self, energy, theta, x, s, nudge):
        """One Gauss-Seidel sweep (exact minimization node by node), traceable by autograd."""
        w = [s[:, i] for i in range(energy.n)]
        xs = energy._x(x, s.shape[0])
        for i in range(energy.n):
            num, den = 0.0, 0.0
            for k, (a, b) in enumerate(energy.edges):
                if i not in (a, b):
                    continue
                other = b if a == i else a
                if other < energy.n:
                    val = w[other]
                elif other < energy.n + energy.n_in:
                    val = xs[:, other - energy.n]
                else:
                    val = 0.0
                num = num + theta[k] * val
                den = den + theta[k]
            if nudge.beta != 0.0 and i in energy.output_nodes:
                j = energy.output_nodes.index(i)
                num = num + nudge.beta * np.broadcast_to(nudge.target, (s.shape[0], energy.n_outputs))[:, j]
                den = den + nudge.beta
            w[i] = num / den
        return anp.stack(w, axis=1)

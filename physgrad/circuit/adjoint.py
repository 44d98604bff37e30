r"""Exact gradient of the cost of any circuit (controlled sources included) by the adjoint method.

At a steady state on the active set ``W`` (conducting ideal diodes) the equations are smooth,
``R(z, g) = 0`` with ``z = (x, lambda_W)`` (:mod:`physgrad.circuit.mna`):

.. math:: R = \begin{pmatrix} K(g)\,x + S^\top I(Sx) + N_W\lambda_W - b \\ N_W^\top x - d_W \end{pmatrix},
          \qquad J = \frac{\partial R}{\partial z} = \begin{pmatrix} K + S^\top \mathrm{diag}(I') S & N_W \\
          N_W^\top & 0 \end{pmatrix}.

With the cost :math:`C = \tfrac12\sum_o (v_o - y_o)^2`, one solve of the transposed system
:math:`J^\top \mu = \partial C/\partial z` gives every conductance's derivative at once:

.. math:: \frac{dC}{dg_k} = -\mu^\top \frac{\partial R}{\partial g_k} = -\Delta v_k\,(\mu_a - \mu_b)

for a resistor ``k`` from node ``a`` to node ``b`` (``Delta v_k = v_a - v_b``; ``mu`` on ground is 0).
The same ``mu`` gives every independent source's derivative (``R`` holds ``-b``): ``dC/dV_j = mu_j``
on a voltage source's branch row, ``dC/dI_k = mu_b - mu_a`` for a current source from ``a`` to
``b``. Transistors add their Jacobian ``dT/dx`` (:mod:`physgrad.circuit.transistors`) to ``J``.
It is the true gradient wherever the active set is locally constant (strict complementarity); the
margins (smallest slack of an off diode, V; smallest current of a conducting one, A) are reported,
and ``near_kink`` flags them below ``kink_tol`` relative to the voltage and current scales, as in
:class:`physgrad.learning.exact.ExactGradient`. No energy is needed: it holds for one-way
amplifiers, positive feedback and any equilibrium of a circuit with several.

References
----------
S. W. Director, R. A. Rohrer, "The generalized adjoint network and network sensitivities", IEEE
Trans. Circuit Theory 16 (1969).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp

from physgrad.circuit.elements import Circuit, CurrentSource, VoltageSource
from physgrad.circuit.mna import build_mna, factor_general
from physgrad.circuit.solution import CircuitSolution
from physgrad.circuit.solve import solve
from physgrad.types import NotSolvedError, PhysgradError, SingularSystemError


@dataclass(frozen=True)
class AdjointResult:
    """``grad`` (V^2/S, one per trainable resistor, ``circuit.trainable_names`` order), ``cost`` (V^2),
    the conducting diodes, the margins and ``near_kink`` (see the module docstring)."""

    grad: np.ndarray
    cost: float
    names: tuple
    active_diodes: tuple
    min_slack: float
    min_current: float
    near_kink: bool
    solution: CircuitSolution
    source_grad: np.ndarray = field(default_factory=lambda: np.zeros(0))  # V^2/V or V^2/A, per ``source_names``
    source_names: tuple = ()


def mna_gradient(circuit: Circuit, solution: Optional[CircuitSolution] = None, *, kink_tol: float = 1e-7,
                 solver: str = "auto", sources: Sequence[str] = (), resistors: Optional[Sequence[str]] = None
                 ) -> AdjointResult:
    """``dC/dg`` for the trainable resistors of ``circuit`` (its ``.target`` lines define ``C``), and
    ``dC/d(value)`` for the independent sources named in ``sources`` (``source_grad``).

    ``resistors`` (names) replaces the circuit's trainable resistors (may be empty when sources are
    asked for).

    ``solution`` (a converged free steady state of ``circuit``, with the MNA unknowns ``info["x"]``)
    is computed with ``solver`` when not given. Raises :class:`PhysgradError` without targets or
    trainable resistors, :class:`NotSolvedError` when the steady state is not converged or ``J`` is
    singular there.
    """
    if not circuit.targets:
        raise PhysgradError("the circuit has no output nodes: add `.target NODE VALUE` lines")
    names = tuple(circuit.trainable_names if resistors is None else resistors)
    sources = tuple(sources)
    if not names and not sources:
        raise PhysgradError("the circuit has no trainable resistors (and no sources were asked for)")
    sol = solve(circuit, solver) if solution is None else solution
    if not sol.converged:
        raise NotSolvedError(f"the free steady state is not converged: {sol.status}: {sol.message}")
    mp = build_mna(circuit)
    x = sol.info.get("x")
    if x is not None and np.shape(x) == (mp.size,):  # an MNA solution: its own unknowns and port currents
        lam = np.asarray(sol.info["diode_multipliers"], float)
    else:  # an ordinary circuit solved by a co-content route: rebuild the MNA unknowns from the solution
        x = np.concatenate([sol.voltages, [sol.current(b) for b in mp.branches]])
        lam_full = np.asarray(sol.currents)[circuit.arrays.dio_pos]
        lam = np.array([lam_full[list(mp.dio_shares.get(int(k), (k,)))].sum() for k in mp.dio_rows])
    W = np.asarray(sol.info.get("active_ports", lam > 0), bool)
    if W.shape != (mp.m,):
        W = lam > 0
    idx = np.flatnonzero(W)
    A = mp.K
    if mp.S.shape[0]:
        _, _, slope = mp.shockley_terms(x)
        A = A + mp.S.T @ sp.diags(slope) @ mp.S
    if mp.transistors.count:
        A = A + mp.transistor_terms(x)[1]
    NW = mp.N[:, idx]
    J = sp.bmat([[A, NW], [NW.T, None]], format="csc") if idx.size else sp.csc_matrix(A)
    out = np.array([circuit.index_of_node(t[0]) for t in circuit.targets])
    y = np.array([t[1] for t in circuit.targets])
    v = x[:mp.n]
    rhs = np.zeros(J.shape[0])
    np.add.at(rhs, out, v[out] - y)
    try:
        mu = factor_general(J.T).solve(rhs)
    except SingularSystemError:
        raise NotSolvedError("the circuit's Jacobian on its active set is singular at the steady state: the "
                             "gradient is not defined (dependent conducting diodes?)") from None
    arr = circuit.arrays
    mug = np.concatenate([mu[:mp.n], [0.0]])
    vg = np.concatenate([v, [0.0]])
    dv = vg[arr.res_a] - vg[arr.res_b]
    g_all = -dv * (mug[arr.res_a] - mug[arr.res_b])
    res_names = [circuit.elements[p].name for p in arr.res_pos]
    pos = {nm: k for k, nm in enumerate(res_names)}
    grad = np.array([g_all[pos[nm]] for nm in names])
    src = np.zeros(len(sources))
    for k, nm in enumerate(sources):
        el = circuit.element(nm)
        if isinstance(el, VoltageSource):
            src[k] = mu[mp.branch_index[el.name]]
        elif isinstance(el, CurrentSource):
            ia, ib = circuit.arrays.cs_a, circuit.arrays.cs_b
            j = list(circuit.arrays.cs_pos).index(circuit.element_index[el.name])
            src[k] = mug[ib[j]] - mug[ia[j]]
        else:
            raise PhysgradError(f"{nm!r} is not an independent source (V or I)")
    cost = 0.5 * float(np.sum((v[out] - y) ** 2))
    w = mp.slack(x)
    min_slack = float(np.min(w[~W], initial=np.inf))
    min_current = float(np.min(lam[W], initial=np.inf))
    v_scale = max(1.0, float(np.max(np.abs(v), initial=0.0)), float(np.max(np.abs(mp.d), initial=0.0)))
    i_scale = max(float(np.max(mp.node_scales(x, lam), initial=0.0)), 1e-300)
    near = min_slack < kink_tol * v_scale or min_current < kink_tol * i_scale
    dio_names = [circuit.elements[p].name for p in arr.dio_pos[mp.dio_rows]]
    return AdjointResult(grad, cost, tuple(names), tuple(dio_names[k] for k in idx), min_slack, min_current,
                         bool(near), sol, src, tuple(circuit.element(nm).name for nm in sources))


__all__ = ["AdjointResult", "mna_gradient"]

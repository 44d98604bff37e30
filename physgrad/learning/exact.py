r"""Exact gradient of the cost by implicit differentiation of the equilibrium (autograd).

**Piecewise-quadratic energies** (circuit co-content with ideal diodes; any energy exposing
``quadratic_form(theta, x)``): in reduced coordinates :math:`u` (shape ``(n,)`` per sample) the
equilibrium solves

.. math::  \min_u \tfrac12 u^\top H(\theta) u - f(\theta, x)^\top u \quad\text{s.t.}\quad D u \le d,

and the state is :math:`s = P u + c`. On the active set :math:`A` (diodes with zero slack) the KKT
conditions are the linear system

.. math::

    \begin{pmatrix} H & D_A^\top \\ D_A & 0 \end{pmatrix}
    \begin{pmatrix} u \\ \lambda_A \end{pmatrix} = \begin{pmatrix} f \\ d_A \end{pmatrix},

which we solve inside autograd (``autograd.numpy.linalg.solve``) as a function of :math:`\theta`
and differentiate :math:`\bar C(P u(\theta) + c)`. The result is the true gradient wherever the
active set is locally constant, i.e. under strict complementarity: every inactive diode has slack
> 0 and every active one carries current :math:`\lambda > 0`. Both **margins** (smallest slack, V;
smallest active current, A) are reported so that cases near a kink are flagged, not silently wrong.

**Sparse adjoint** (the default for circuits whose minimizer offers ``implicit_gradient``): the same
derivative without autograd or dense matrices, by one adjoint solve on the active set with the
minimizer's factorization at hand,

.. math:: K_b \begin{pmatrix} p_b \\ q_b \end{pmatrix} = \begin{pmatrix} \partial \bar C/\partial u_b \\ 0 \end{pmatrix},\qquad
          \frac{d\bar C}{d\theta} = -\sum_b p_b^\top\, \partial_\theta (H u_b - f_b),

which for conductances is the product of the adjoint's and the equilibrium's branch voltages. The
autograd route above stays as the independent check (``route="autograd"``).

**Smooth energies with box bounds on the state** (no ``quadratic_form``; layered DRNs and Hopfield
models through ``energy.bounds(k)``, or unbounded): with :math:`F` the components not at a bound,

.. math::  \frac{d\bar C}{d\theta} = -\,\partial_\theta\!\left[\partial_s E(s^\ast,\theta)\cdot\lambda\right],
           \qquad [\nabla^2_{ss}E]_{FF}\,\lambda_F = [\partial_s\bar C(s^\ast)]_F,\quad \lambda_{\bar F} = 0,

with the Hessian formed densely by autograd (small models only); the margins are the smallest
distance of a free unit to its bound and the smallest bound force :math:`|\partial_s E|` of a held one.

References
----------
Amos & Kolter (2017), "OptNet: differentiable optimization as a layer in neural networks", ICML
(differentiating the KKT system of a QP).
Scellier (2021), thesis, sec. 2.2 (implicit differentiation of the equilibrium).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import autograd.numpy as anp
import numpy as np
import scipy.linalg
from autograd import grad as ag_grad
from autograd import jacobian

from physgrad.types import ImplicitGradient, PhysgradError, QuadraticForm
from physgrad.learning._phase import check_choice, check_positive, free_phase
from physgrad.learning.cost import check_targets, cost_per_sample, mean_cost
from physgrad.pytree import as_float_tree, tree_flatten, tree_map


ROUTES = ("auto", "adjoint", "autograd")


@dataclass(frozen=True)
class ActiveSet:
    """Active set of one free equilibrium and its margins.

    Attributes
    ----------
    rows : tuple of tuple of int
        Per sample, the independent active constraint rows used in the KKT system.
    active : tuple of tuple of int
        Per sample, every constraint with slack <= ``active_tol``.
    min_slack : float
        Smallest slack of an inactive constraint over the batch (V); ``inf`` if none.
    min_current : float
        Smallest multiplier (diode current, A) of an active constraint; ``inf`` if none.
    kkt_residual : float
        Max-norm of :math:`H u - f + D_A^\\top\\lambda_A` (A).
    degenerate : bool
        Some active rows were linearly dependent and were dropped.
    """

    rows: tuple
    active: tuple
    min_slack: float
    min_current: float
    kkt_residual: float
    degenerate: bool


@dataclass(frozen=True)
class ExactResult:
    """Exact gradient with its cost and active-set margins.

    ``near_kink`` is True when ``min_slack`` or ``min_current`` is below the estimator's
    ``kink_tol``: the active set may change under a small parameter change and the gradient is
    then one of several one-sided derivatives.
    """

    grad: Any
    cost: float
    active_set: Optional[ActiveSet]
    near_kink: bool


def _scales(qf: QuadraticForm, state):
    """Voltage scale (V) and current scale (A) of a problem, for relative kink tolerances."""
    v_scale = max(float(np.max(np.abs(state), initial=0.0)), float(np.max(np.abs(np.asarray(qf.d)), initial=0.0)), 1e-30)
    h = float(np.max(np.abs(np.diag(np.asarray(qf.H))), initial=0.0))
    i_scale = max(h * v_scale, float(np.max(np.abs(np.asarray(qf.f)), initial=0.0)), 1e-300)
    return v_scale, i_scale


def _newton_step_solver(qf0: QuadraticForm, u0: np.ndarray, aset: ActiveSet):
    r"""``qf -> u(theta)`` for energies with smooth terms: one Newton step from the solution.

    .. math:: u(\theta) = u^\ast - \left[K^{-1} \begin{pmatrix} H(\theta)u^\ast - f(\theta) + S^\top J'(Su^\ast+e)
              + D_A^\top\lambda^\ast \\ 0 \end{pmatrix}\right]_u,\qquad
              K = \begin{pmatrix} H + S^\top \mathrm{diag}(J'') S & D_A^\top \\ D_A & 0\end{pmatrix}

    with ``K``, :math:`u^\ast`, :math:`\lambda^\ast` frozen at the solution: the residual vanishes
    at :math:`\theta_0`, so the value is :math:`u^\ast` and the derivative is exactly the implicit one
    :math:`-K^{-1}\partial_\theta r`.
    """
    H0, f0, D = (np.asarray(a, float) for a in (qf0.H, qf0.f, qf0.D))
    S = np.asarray(qf0.S, float)
    n = H0.shape[0]
    frozen = []
    for b in range(u0.shape[0]):
        cur, slope = qf0.smooth_terms(u0[b], b)
        rows = list(aset.rows[b])
        DA = D[rows]
        k = len(rows)
        K = np.block([[H0 + S.T @ (slope[:, None] * S), DA.T], [DA, np.zeros((k, k))]])
        g = H0 @ u0[b] - f0[b] + S.T @ cur
        lam = np.linalg.lstsq(DA.T, -g, rcond=None)[0] if k else np.zeros(0)
        Kinv = np.linalg.inv(K)[:n, :n]  # only the u-block acts on the (u-only) residual
        frozen.append((Kinv, S.T @ cur + (DA.T @ lam if k else 0.0)))

    def solve_u(qf):
        us = []
        for b, (Kinv, const) in enumerate(frozen):
            r = anp.dot(qf.H, u0[b]) - qf.f[b] + const
            us.append(u0[b] - anp.dot(Kinv, r))
        return anp.stack(us, axis=0)

    return solve_u


def independent_rows(M: np.ndarray, tol: float = 1e-10) -> list:
    """Indices of a maximal set of linearly independent rows of ``M`` (QR with column pivoting)."""
    if M.shape[0] == 0:
        return []
    _, R, piv = scipy.linalg.qr(M.T, pivoting=True, mode="economic")
    diag = np.abs(np.diag(R))
    rank = int(np.sum(diag > tol * max(1.0, diag[0] if diag.size else 1.0)))
    return sorted(int(i) for i in piv[:rank])


def find_active_set(qf: QuadraticForm, u: np.ndarray, active_tol: float, known=None) -> ActiveSet:
    """The active constraints of ``u`` (shape ``(batch, n)``) and the KKT multipliers.

    ``known[b]`` (bool mask over the rows of ``D``), when given, is the set the minimizer solved on
    (``Equilibrium.info["active"]``) and is used as it is; otherwise (``None``) the set is detected
    as the rows with slack ``<= active_tol`` (V).
    """
    H, f, D, d = (np.asarray(a, float) for a in (qf.H, qf.f, qf.D, qf.d))
    rows, actives, slacks, currents, resid = [], [], [], [], 0.0
    degenerate = False
    for b in range(u.shape[0]):
        slack = d[b] - D @ u[b]
        mask = None if known is None else known[b]
        act = np.flatnonzero(mask) if mask is not None else np.flatnonzero(slack <= active_tol)
        keep = [int(act[i]) for i in independent_rows(D[act])] if act.size else []
        degenerate |= len(keep) < act.size
        g = H @ u[b] - f[b]
        if qf.has_smooth:
            g = g + np.asarray(qf.S, float).T @ qf.smooth_terms(u[b], b)[0]
        if act.size:
            lam = np.linalg.lstsq(D[act].T, -g, rcond=None)[0]
            currents.extend(lam.tolist())
            g = g + D[act].T @ lam
        resid = max(resid, float(np.max(np.abs(g))) if g.size else 0.0)
        inactive = np.setdiff1d(np.arange(D.shape[0]), act)
        slacks.extend(slack[inactive].tolist())
        rows.append(tuple(keep))
        actives.append(tuple(int(i) for i in act))
    return ActiveSet(tuple(rows), tuple(actives), float(min(slacks, default=np.inf)),
                     float(min(currents, default=np.inf)), resid, degenerate)


def _solver_active_set(free, qf: QuadraticForm):
    """The minimizer's own active sets (``free.info["active"]``, one bool mask per sample over the rows
    of ``qf.D``), or ``None`` when it did not report one for every sample."""
    known = free.info.get("active") if hasattr(free, "info") else None
    m = np.shape(qf.D)[0]
    if known is None or len(known) != np.shape(qf.f)[0] or any(k is None or np.shape(k) != (m,) for k in known):
        return None
    return tuple(np.asarray(k, bool) for k in known)


def kkt_solve(qf: QuadraticForm, rows, extra_rows=None, extra_rhs=None):
    r"""Reduced state ``u`` (batch, n) solving the equality-constrained KKT system (traceable).

    ``rows[b]`` are the active constraint rows of sample ``b``; ``extra_rows`` (k, n) and
    ``extra_rhs`` (batch, k) add equality constraints (e.g. clamped outputs) to every sample.
    """
    n = qf.H.shape[0]
    us = []
    for b in range(qf.f.shape[0]):
        idx = list(rows[b])
        blocks_A = [qf.D[idx, :]] if idx else []
        blocks_r = [qf.d[b, idx]] if idx else []
        if extra_rows is not None:
            blocks_A = [extra_rows] + blocks_A
            blocks_r = [extra_rhs[b]] + blocks_r
        if blocks_A:
            A = anp.concatenate(blocks_A, axis=0)
            k = A.shape[0]
            K = anp.concatenate([anp.concatenate([qf.H, anp.transpose(A)], axis=1),
                                 anp.concatenate([A, anp.zeros((k, k))], axis=1)], axis=0)
            sol = anp.linalg.solve(K, anp.concatenate([qf.f[b]] + blocks_r))
            us.append(sol[:n])
        else:
            us.append(anp.linalg.solve(qf.H, qf.f[b]))
    return anp.stack(us, axis=0)


@dataclass(frozen=True)
class ExactGradient:
    """Exact :math:`d\\bar C/d\\theta` by implicit differentiation (see module docstring).

    Parameters
    ----------
    active_tol : float
        A constraint is active when its slack is <= this times ``max(1, voltage scale)`` (V for
        circuits; the circuit core's certificate uses the same form). Default 1e-9: three orders
        above the equilibrium accuracy of the exact minimizers (~1e-12 V) and far below any
        physically meaningful slack.
    kink_tol : float
        ``near_kink`` is flagged when the smallest slack or active current is below this, relative
        to the problem's voltage scale (V: max of |state| and |d|) and current scale (A: max of
        diag(H) times the voltage scale and |f|) for quadratic forms; absolute (V, A) for
        the dense-Hessian route. Default 1e-7: far above solver round-off (~1e-12 relative), and a
        margin this small means a parameter change of ~1e-7 relative can switch a diode.
    strict : bool
        Raise when the free phase is not converged.
    route : {"auto", "adjoint", "autograd"}
        ``"adjoint"``: the minimizer's sparse adjoint (``minimizer.implicit_gradient``, one solve
        on the factor at hand, O(nnz) memory); ``"autograd"``: differentiate the dense quadratic
        form (small problems; the independent check); ``"auto"`` (default): the adjoint where the
        minimizer offers it for this energy, else autograd.
    """

    active_tol: float = 1e-9
    kink_tol: float = 1e-7
    strict: bool = True
    route: str = "auto"
    code = "exact"

    def __post_init__(self):
        object.__setattr__(self, "active_tol", check_positive("active_tol", self.active_tol))
        object.__setattr__(self, "kink_tol", check_positive("kink_tol", self.kink_tol))
        check_choice("route", self.route, ROUTES)

    def compute(self, energy, theta, x, y, minimizer, free=None) -> ExactResult:
        """Gradient, cost and active-set margins at the free equilibrium.

        The autograd route raises :class:`physgrad.types.DenseTooLargeError` (a ``PhysgradError``)
        before building a dense form that would exceed the memory limit (``energy.check_dense``).
        """
        free = free_phase(energy, theta, x, minimizer, free, self.strict)
        y = check_targets(energy, free.state, y)
        theta = as_float_tree(theta)
        if self.route != "autograd" and isinstance(minimizer, ImplicitGradient):
            outputs = np.asarray(energy.outputs(free.state), float)
            out_grad = ag_grad(lambda o: anp.mean(cost_per_sample(o, y)))(outputs)
            res = minimizer.implicit_gradient(energy, theta, x, free, out_grad)
            if res is not None:
                aset = ActiveSet(res["rows"], res["rows"], res["min_slack"], res["min_current"], res["kkt_residual"],
                                 False)
                near = (aset.min_slack < self.kink_tol * res["v_scale"]
                        or aset.min_current < self.kink_tol * res["i_scale"])
                return ExactResult(res["grad"], float(mean_cost(energy, free.state, y)), aset, bool(near))
        if self.route == "adjoint":
            raise PhysgradError(f"{type(minimizer).__name__} offers no sparse adjoint for this energy "
                                "(use route='autograd' or 'auto')")
        if hasattr(energy, "quadratic_form"):
            if hasattr(energy, "check_dense"):
                energy.check_dense("the exact gradient's autograd route")
            qf0 = energy.quadratic_form(theta, x)
            u0 = qf0.reduce(free.state)
            v_scale, i_scale = _scales(qf0, free.state)
            aset = find_active_set(qf0, u0, self.active_tol * max(1.0, v_scale), _solver_active_set(free, qf0))

            if qf0.has_smooth:
                solve_u = _newton_step_solver(qf0, u0, aset)
            else:
                def solve_u(qf):
                    return kkt_solve(qf, aset.rows)

            def cost_of_theta(th):
                qf = energy.quadratic_form(th, x)
                return mean_cost(energy, qf.lift(solve_u(qf)), y)

            value = float(cost_of_theta(theta))
            grad = ag_grad(cost_of_theta)(theta)
            near = aset.min_slack < self.kink_tol * v_scale or aset.min_current < self.kink_tol * i_scale
            return ExactResult(grad, value, aset, bool(near))
        aset = box_active_set(energy, theta, x, free.state, self.active_tol)
        grad = smooth_implicit_gradient(energy, theta, x, y, free.state, aset.active[0])
        near = min(aset.min_slack, aset.min_current) < self.kink_tol
        return ExactResult(grad, float(mean_cost(energy, free.state, y)), aset, bool(near))

    def estimate(self, energy, theta, x, y, minimizer, free=None):
        """The exact gradient, shaped like ``theta``."""
        return self.compute(energy, theta, x, y, minimizer, free).grad


def state_bounds(energy, state):
    """Flattened ``(lo, hi)`` bounds of the state (V): from ``energy.bounds(k)`` per layer (layered
    energies, ``k = 1..n_layers``) or unbounded."""
    flat, _ = tree_flatten(state)
    if not (hasattr(energy, "bounds") and hasattr(energy, "n_layers") and isinstance(state, (tuple, list))):
        return np.full(flat.shape, -np.inf), np.full(flat.shape, np.inf)
    lo, hi = [], []
    for k, shp in enumerate((np.shape(a) for a in state), start=1):
        a, b = energy.bounds(k)
        lo.append(np.broadcast_to(a, shp).ravel())
        hi.append(np.broadcast_to(b, shp).ravel())
    return np.concatenate(lo), np.concatenate(hi)


def box_active_set(energy, theta, x, state, active_tol: float):
    """Active bounds of a box-constrained smooth energy, as an :class:`ActiveSet` (one "sample").

    ``min_slack``: smallest distance of a free component to its bound (V); ``min_current``: smallest
    bound force ``|dE/ds|`` on a component held at its bound (A for circuits).
    """
    flat, unflatten = tree_flatten(state)
    lo, hi = state_bounds(energy, state)
    g = ag_grad(lambda z: anp.sum(energy.energy(unflatten(z), theta, x)))(flat)
    at_lo, at_hi = flat - lo <= active_tol, hi - flat <= active_tol
    act = at_lo | at_hi
    slack = np.minimum(flat - lo, hi - flat)[~act]
    force = np.where(at_lo, g, -g)[act]  # > 0 when the bound holds the unit back
    resid = float(np.max(np.abs(g[~act]), initial=0.0))
    idx = tuple(int(i) for i in np.flatnonzero(act))
    return ActiveSet((idx,), (idx,), float(np.min(slack, initial=np.inf)), float(np.min(force, initial=np.inf)),
                     resid, False)


def smooth_implicit_gradient(energy, theta, x, y, state, active=()):
    """Implicit gradient of a smooth energy with the components ``active`` (flat indices) held fixed.

    Dense Hessian of the free components by autograd (small models only). States may be arrays or
    tuples of arrays (layered models).
    """
    flat, unflatten = tree_flatten(state)
    free = np.setdiff1d(np.arange(flat.size), np.asarray(active, dtype=int))

    def grad_s(z, th):
        return ag_grad(lambda w: anp.sum(energy.energy(unflatten(w), th, x)))(z)

    hess = jacobian(lambda z: grad_s(z, theta))(flat)[np.ix_(free, free)]
    dC = ag_grad(lambda z: mean_cost(energy, unflatten(z), y))(flat)[free]
    try:
        lam_free = np.linalg.solve(hess, dC)
    except np.linalg.LinAlgError:
        raise PhysgradError("the energy's Hessian at the equilibrium is singular; the exact gradient is "
                            "undefined (is the energy strictly convex in the free state components?)") from None
    lam = np.zeros_like(flat)
    lam[free] = lam_free
    g = ag_grad(lambda th: anp.sum(grad_s(flat, th) * lam))(theta)
    return tree_map(lambda a: -a, g)

r"""The contour family of EP estimators: ``dE/dtheta`` at several nudges, combined with weights.

With :math:`f(\beta) = \partial_\theta E(s_\beta, \theta, x)` (the energy's ``theta_grad`` at the
equilibrium of :math:`E + \beta C`), EP's identity :math:`f'(0) = d\bar C/d\theta` turns every
numerical derivative of :math:`f` at 0 into a gradient estimator:

.. math:: \widehat{\nabla} = \sum_n w_n\, f(\beta_n).

* ``pep``: nodes :math:`0, b`, weights :math:`-1/b, 1/b`; bias O(b).
* ``nep``: nodes :math:`-b, 0`, weights :math:`-1/b, 1/b`; bias O(b).
* ``cep``: nodes :math:`-b, b`, weights :math:`-1/(2b), 1/(2b)`; bias O(b^2).
* ``ep4``: nodes :math:`-2b, -b, b, 2b`, weights :math:`(1, -8, 8, -1)/(12 b)`; bias O(b^4).
* ``fp``: nodes :math:`b\cos t_n`, :math:`t_n = 2\pi n/N`, weights :math:`2\cos t_n/(N b)`; bias O(b^2).
* ``hep``: complex nodes :math:`b\,e^{2\pi i n/N}`, weights :math:`e^{-2\pi i n/N}/(N b)` (real part
  taken); bias O(b^N).

(P-, N- and C-EP live in :mod:`physgrad.learning.ep`; this module adds the others.)

* ``ep4``, the 4-point central stencil, needs the nudged energy convex at :math:`-2b` (the minimizer
  checks it and raises a clear error otherwise).
* ``fp`` is frequency propagation in its quasi-static form (Anisetti et al. 2024): a periodic nudge
  :math:`b\cos t` sampled at ``N`` phases and the first Fourier coefficient of the response. For
  ``N >= 5`` its bias is :math:`f'''(0) b^2/8`, 3/4 of C-EP's :math:`f'''(0) b^2/6` (``N = 4``
  samples only :math:`\pm b`: it is C-EP; ``N = 3`` aliases the :math:`\cos 3t` harmonic, so it is
  refused). Equal nodes (:math:`\cos t_n` repeats) are solved once; the node at 0 has weight 0. With ideal diodes the estimate is exact only
  while no diode switches within :math:`|\beta| \le b`: :func:`switching_radius` measures that radius.
* ``hep`` is holomorphic EP (Laborieux & Zenke 2022): the equilibria at complex nudges on a circle,
  found by complex Newton continued around the circle from the free state; by Cauchy's formula the
  bias is :math:`O(|b|^N)`. It needs a co-content that is holomorphic in the state: linear resistors
  and Shockley diodes (energies with ``quadratic_form`` and no ideal-diode constraints); ideal diodes
  are refused.

References
----------
Scellier & Bengio (2017), equilibrium propagation; Laborieux et al. (2021), centered EP;
Laborieux & Zenke (2022), "Holomorphic equilibrium propagation computes exact gradients through
finite size oscillations", NeurIPS; Anisetti, Kandala, Scellier & Schwarz (2024), "Frequency
propagation: multimechanism learning in nonlinear physical networks", Neural Computation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from physgrad.learning._phase import check_choice, check_positive, free_phase, solve_phase
from physgrad.learning.cost import check_targets
from physgrad.pytree import as_float_tree, tree_map
from physgrad.types import HasQuadraticForm, Nudge, NotSolvedError, PhysgradError

Stencil = Literal["ep4", "fp"]
STENCILS = get_args(Stencil)


MAX_POINTS = 1024
"""Most nudges per period (fp, hep): each is one equilibrium; past a few dozen the estimate's error is
round-off, not the stencil's."""


def _check_points(points, minimum: int, name: str = "points", maximum: int = MAX_POINTS) -> int:
    if isinstance(points, bool) or int(points) != points or not minimum <= points <= maximum:
        raise PhysgradError(f"{name} must be an integer in [{minimum}, {maximum}], got {points!r}")
    return int(points)


def stencil(kind: str, beta: float, points: int = 8) -> tuple:
    r"""Nodes :math:`\beta_n` and weights :math:`w_n` of a real stencil (see the module table).

    Nodes are distinct and sorted; zero-weight nodes are dropped.

    Returns
    -------
    (nodes, weights) : tuples of float
    """
    check_choice("stencil", kind, STENCILS)
    b = check_positive("beta", beta)
    if kind == "ep4":
        return (-2 * b, -b, b, 2 * b), (1 / (12 * b), -8 / (12 * b), 8 / (12 * b), -1 / (12 * b))
    n = _check_points(points, 4)
    nodes, weights = [], []
    for k in range(n // 2 + 1):  # t_k and t_{n-k} share their cosine: one node of double weight
        c = float(np.cos(2 * np.pi * k / n))
        if abs(c) < 1e-12:
            continue  # the free state: weight 0
        mult = 1 if k == 0 or 2 * k == n else 2
        nodes.append(b * c)
        weights.append(mult * 2 * c / (n * b))
    order = np.argsort(nodes)
    return tuple(nodes[i] for i in order), tuple(weights[i] for i in order)


def _weighted_sum(energy, theta, x, states, weights):
    total = None
    for s, w in zip(states, weights):
        g = tree_map(lambda a: w * np.asarray(a), energy.theta_grad(s, theta, x))
        total = g if total is None else tree_map(np.add, total, g)
    return total


@dataclass(frozen=True)
class ContourEP:
    """A real-stencil EP estimator: ``ep4`` (4-point, bias O(beta^4)) or ``fp`` (quasi-static
    frequency propagation, ``points`` phases, bias O(beta^2)).

    Parameters
    ----------
    beta : float
        Nudge amplitude ``b > 0`` (S for circuits).
    stencil : {"ep4", "fp"}
    points : int
        Phases per period for ``fp`` (>= 4; ignored by ``ep4``).
    strict : bool
        Raise :class:`~physgrad.types.NotSolvedError` when a phase is not converged.
    """

    beta: float = 1e-2
    stencil: Stencil = "ep4"
    points: int = 8
    strict: bool = True

    def __post_init__(self):
        object.__setattr__(self, "beta", check_positive("beta", self.beta))
        check_choice("stencil", self.stencil, STENCILS)
        object.__setattr__(self, "points", _check_points(self.points, 4))

    @property
    def code(self) -> str:
        return self.stencil

    def estimate(self, energy, theta, x, y, minimizer, free=None):
        """:math:`\\sum_n w_n \\partial_\\theta E(s_{\\beta_n})`, shaped like ``theta``."""
        free = free_phase(energy, theta, x, minimizer, free, self.strict)
        y = check_targets(energy, free.state, y)
        nodes, weights = stencil(self.stencil, self.beta, self.points)
        states = [solve_phase(energy, theta, x, minimizer, Nudge(bn, target=y), free.state, self.strict).state
                  for bn in nodes]
        return _weighted_sum(energy, theta, x, states, weights)


@dataclass(frozen=True)
class HolomorphicEP:
    """Holomorphic EP: ``points`` complex nudges ``b exp(2 pi i n / N)`` (bias O(b^N)).

    Parameters
    ----------
    beta : float
        Radius ``b > 0`` of the circle of nudges (S for circuits).
    points : int
        ``N >= 2`` (``N = 2`` is C-EP).
    rtol : float
        Complex Newton stops when the residual is below ``rtol`` times the problem's current scale
        (A: max of |f| and diag(H) x the voltage scale); default 1e-13.
    max_iter : int
        Newton iterations per node.
    strict : bool
    """

    beta: float = 1e-2
    points: int = 6
    rtol: float = 1e-13
    max_iter: int = 50
    strict: bool = True
    code = "hep"

    def __post_init__(self):
        object.__setattr__(self, "beta", check_positive("beta", self.beta))
        object.__setattr__(self, "points", _check_points(self.points, 2))
        object.__setattr__(self, "rtol", check_positive("rtol", self.rtol))
        object.__setattr__(self, "max_iter", _check_points(self.max_iter, 1, "max_iter", 10_000))

    def estimate(self, energy, theta, x, y, minimizer, free=None):
        """The real part of :math:`\\frac{1}{N b}\\sum_n e^{-2\\pi i n/N} \\partial_\\theta E(s_{\\beta_n})`."""
        if not isinstance(energy, HasQuadraticForm):
            raise PhysgradError(f"holomorphic EP needs an energy with quadratic_form and output_rows (a circuit's "
                                f"co-content); {type(energy).__name__} has not: use cep or ep4")
        free = free_phase(energy, theta, x, minimizer, free, self.strict)
        y = check_targets(energy, free.state, y)
        theta = as_float_tree(theta)
        qf = energy.quadratic_form(theta, x)
        if np.shape(qf.D)[0]:
            raise PhysgradError("holomorphic EP needs a co-content holomorphic in the state: this circuit has ideal "
                                "diodes (constraints, not analytic terms); use cep, ep4 or the exact gradient")
        H, f, P, c = (np.asarray(a, float) for a in (qf.H, qf.f, qf.P, qf.c))
        out = list(energy.output_rows)
        Po, co = P[out], c[:, out]
        S = np.asarray(qf.S, float) if qf.has_smooth else np.zeros((0, H.shape[0]))
        e = np.asarray(qf.e, float) if qf.has_smooth else np.zeros((f.shape[0], 0))
        yb = np.broadcast_to(np.asarray(y, float), co.shape)
        u = qf.reduce(free.state).astype(complex)
        N = self.points
        v_scale = max(1.0, float(np.max(np.abs(free.state))))
        i_scale = max(float(np.max(np.abs(f), initial=0.0)), float(np.max(np.abs(np.diag(H)), initial=0.0)) * v_scale,
                      1e-300)
        total = None
        for k in range(N):
            z = np.exp(2j * np.pi * k / N)
            bk = self.beta * z
            for b in range(u.shape[0]):
                u[b] = self._newton(H, f[b], S, e[b], qf.smooth, Po, co[b] - yb[b], bk, u[b], i_scale)
            g = energy.theta_grad(u @ P.T + c, theta, x)
            term = tree_map(lambda a: np.asarray(a) * (np.conj(z) / (N * self.beta)), g)
            total = term if total is None else tree_map(np.add, total, term)
        return tree_map(lambda a: np.real(a), total)

    def _newton(self, H, f, S, e, smooth, Po, offset, beta, u, i_scale):
        """Complex Newton on ``H u - f + S' J'(S u + e) + beta Po' (Po u + offset) = 0``."""
        K0 = H + beta * (Po.T @ Po)
        for _ in range(self.max_iter):
            r = K0 @ u - f + beta * (Po.T @ offset)
            K = K0
            if S.shape[0]:
                cur, slope = smooth(S @ u + e)
                r = r + S.T @ cur
                K = K0 + S.T @ (slope[:, None] * S)
            if np.max(np.abs(r)) <= self.rtol * i_scale:
                return u
            u = u - np.linalg.solve(K, r)
        if self.strict:
            raise NotSolvedError(f"holomorphic EP: complex Newton did not converge at beta = {beta:.3g} in "
                                 f"{self.max_iter} iterations (residual {np.max(np.abs(r)):.3g} A); lower beta")
        return u


def switching_radius(energy, theta, x, y, minimizer, beta_max: float, rtol: float = 1e-3, free=None):
    """The smallest ``|beta| <= beta_max`` at which the minimizer's active set differs from the free one.

    Found by bisection on each sign (to ``rtol`` relative, down to ``1e-12 beta_max``: a diode sitting
    on its kink switches at any nudge), from the ``active`` masks the minimizer reports in
    ``Equilibrium.info``; ``inf`` when the set does not change up to ``beta_max``, ``None``
    when the minimizer reports no active set. Estimators built on nudges within this radius see one
    smooth (quadratic) branch of the equilibrium.
    """
    free = free_phase(energy, theta, x, minimizer, free)
    y = check_targets(energy, free.state, y)

    def key(eq):
        act = eq.info.get("active")
        return None if act is None or any(a is None for a in act) else tuple(np.asarray(a, bool).tobytes() for a in act)

    k0 = key(free)
    if k0 is None:
        return None

    def same(beta):
        try:
            eq = solve_phase(energy, theta, x, minimizer, Nudge(beta, target=y), free.state)
        except PhysgradError:  # non-convex at this negative nudge: the branch ends here
            return False
        return key(eq) == k0

    radius = np.inf
    for sign in (1.0, -1.0):
        if same(sign * beta_max):
            continue
        lo, hi = 0.0, beta_max
        while hi - lo > rtol * hi and hi > 1e-12 * beta_max:  # a diode on its kink switches at any nudge
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if same(sign * mid) else (lo, mid)
        radius = min(radius, hi)
    return radius

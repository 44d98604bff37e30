r"""Damped Newton on the smooth, strictly convex co-content of circuits with Shockley diodes
(and, through an active-set loop, ideal diodes too), with SPICE's safeguards.

Minimises :math:`E(u) = \tfrac12 u^T H u - f^T u + \sum_k J_k(S_k u + e_k)` where ``J_k`` is the
diode's co-content (:mod:`physgrad.circuit.diode`). Gradient ``H u - f + S^T I(v)`` (the KCL residual,
A), Hessian ``H + S^T diag(I'(v)) S`` (S, sparse, factorised by SuperLU).

Each Newton step is tried in full first and halved until ``E`` decreases enough (Armijo,
``c = 1e-4``); the junction-limited length ``t_lim`` (one factor for the whole step, so it stays a
descent direction, such that no diode voltage moves further than SPICE's junction limiting allows,
:func:`physgrad.circuit.diode.pnjlim`) is always among the lengths tried, and a trial whose ``E``
overflows jumps straight to it.
Where ``E``'s change is below its own round-off (``16 eps`` times the sum of the magnitudes of its
terms), a step is accepted when it lowers the scaled KCL residual instead.

Stopping rule (per node): every free (super)node's KCL residual ``|r_j| <= rtol * scale_j`` with
``scale_j`` the node's own current scale (:meth:`physgrad.circuit.reduction.Problem.current_scale`:
the magnitudes of its incident currents and of conductance x voltage), so that a node held only by
diodes carrying 1e-14 A is solved to the same relative accuracy as the others, followed by up to three
full Newton steps while the step is above ``1e-13 |u|`` (they tighten soft modes that the residual
test alone leaves loose) unless the last full step was already below ``1e-7 |u|`` (quadratic
convergence); or the Newton correction is below round-off (``|du_j| <= 8 eps |u_j|``). The circuit core's KKT
certificate checks the answer independently.

Without ideal diodes the iteration is :func:`physgrad.circuit.solvers.batch_newton.newton_batch` on a
batch of one (the same rules, one symbolic LDL^T for every iteration; its one-sample loop, and up to
150 variables below :data:`DENSE_FACTOR_VMAX` a dense Cholesky instead of the LDL^T), started at ``u0`` or else at
``u = 0`` (every free node at the offset its sources give it) where ``E`` is finite there and no
diode is beyond its critical voltage (a 17 V rectifier from 0 V: 200 limited steps): on the
benchmark families (``benchmarks/graphs.py``) the ideal-diode start saved 0-1 Newton iterations and
cost about a quarter of the solve. If that run does not converge within :data:`PLAIN_MAX_ITER`, and with
ideal diodes always, the start is the ideal-diode solution (every diode at ``v <= 0``, where ``E`` is finite whatever the
emission coefficient; 0 V at every free node where no such solution exists, e.g. two diodes in series
that a source drives forward), so near-ideal diodes (``N <= 1e-3``) cannot overflow at the start. When plain
Newton fails, two homotopies follow, as in SPICE: gmin stepping (a shunt conductance from every free
node to ground, 1e-2 S down to 0 by decades) and source stepping (sources scaled from 0 to 1).

``scipy.optimize.minimize`` was measured to fail on this problem (Newton-CG reporting success 12 mV
off, overflow, stalls), hence this solver.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from physgrad.circuit.solvers.kkt import Infeasible, eliminate, multipliers, pdas_step, solve_active_set
from physgrad.circuit.solvers.result import ReducedSolution
from physgrad.circuit.reduction import Problem
from physgrad.circuit.diode import (shockley_co_content, shockley_current, shockley_slope,
                                    shockley_vcrit)
from physgrad.circuit.solvers.batch_newton import (EPS, POLISH_ATOL, POLISH_RTOL, POLISH_STEPS,  # noqa: F401
                                                   SETTLED_RTOL, TINY_CURRENT, BatchProblem, NewtonPattern,
                                                   junction_step_length, newton_batch)
from physgrad.circuit.solvers.strategy import SPDFactor
from physgrad.types import SingularSystemError

# Homotopy stages: shunt conductances (S) of gmin stepping; loose rtol of the intermediate stages.
GMIN_STEPS = tuple(10.0 ** -k for k in range(2, 13))
STAGE_RTOL = 1e-8
STAGE_MAX_ITER = 50
# Iterations allowed to the first attempt from u = 0 (no start given) before the ideal-diode start.
PLAIN_MAX_ITER = 100
# Dense Cholesky for small circuits (batch_newton.DENSE_FACTOR_MAX) only where the voltage scale (V) and
# the answer's node voltages are at most this (else the LDL^T route runs again from the start): its
# round-off-level differences from the LDL^T route (measured <= 4.8e-15 relative, <= 9.2e-14 V on
# circuits below 100 V) stay below 1e-12 V.
DENSE_FACTOR_VMAX = 100.0


def accepts(problem: Problem) -> None:
    """Newton handles any circuit of this reduced form (linear, Shockley and ideal diodes)."""


def _params(problem):
    a = problem.circuit.arrays
    return a.shk_IS, a.shk_N, a.shk_vt, a.shk_gmin


def energy(problem: Problem, u: np.ndarray) -> float:
    """Reduced co-content ``E(u)`` (W); ``inf`` where an exponential overflows."""
    vd = problem.S @ u + problem.e
    with np.errstate(over="ignore", invalid="ignore"):
        val = problem.quadratic_energy(u) + float(np.sum(shockley_co_content(vd, *_params(problem))))
    return val if np.isfinite(val) else np.inf


def _energy_noise(problem: Problem, u: np.ndarray) -> float:
    """Round-off of :func:`energy` at ``u`` (W): ``16 eps`` times the sum of its terms' magnitudes
    (``|u|'|H||u|/2 + |f|'|u| + |const| + sum |J_k|``: the quadratic part cancels, its round-off does not)."""
    vd = problem.S @ u + problem.e
    with np.errstate(over="ignore", invalid="ignore"):
        au = np.abs(u)
        mag = (0.5 * float(au @ (abs(problem.H) @ au)) + float(np.abs(problem.f) @ au) + abs(problem.const)
               + float(np.sum(np.abs(shockley_co_content(vd, *_params(problem))))))
    return 16 * EPS * mag if np.isfinite(mag) else np.inf


def gradient(problem: Problem, u: np.ndarray) -> np.ndarray:
    vd = problem.S @ u + problem.e
    return problem.H @ u - problem.f + problem.S.T @ shockley_current(vd, *_params(problem))


def _start(problem: Problem) -> np.ndarray:
    """Every Shockley diode replaced by an ideal one (vth = 0) plus its gmin, ideal diodes kept.

    All Shockley diode voltages are then <= 0, where the co-content is finite for any N.
    """
    gmin = _params(problem)[3]
    H0 = (problem.H + problem.S.T @ sp.diags(gmin) @ problem.S).tocsr()
    f0 = problem.f - problem.S.T @ (gmin * problem.e)
    rows = np.diff(problem.S.tocsr().indptr) > 0
    D = sp.vstack([problem.S[rows], problem.D]).tocsr()
    d = np.concatenate([-problem.e[rows], problem.d])
    try:
        return solve_active_set(H0, f0, D, d).u
    except (Infeasible, SingularSystemError):
        # Shockley diodes in series that the sources drive forward (no ideal-diode solution): start
        # from 0 V at every free node; junction limiting and the homotopies take it from there.
        return np.zeros(problem.n_u)


class _Residual:
    """KCL residual of ``E(T z + t0)`` and its per-node tolerance at ``u``."""

    def __init__(self, problem: Problem, T, rtol: float):
        self.problem, self.T, self.absT, self.rtol = problem, T, abs(T), rtol
        self.params = _params(problem)

    def __call__(self, u):
        """``(g, ratio)``: reduced residual (A) and ``max_j |g_j| / tol_j`` (dimensionless)."""
        pb = self.problem
        vd = pb.S @ u + pb.e
        i_d = shockley_current(vd, *self.params)
        sl = shockley_slope(vd, *self.params)
        g = self.T.T @ (pb.H @ u - pb.f + pb.S.T @ i_d)
        tol = self.rtol * (self.absT.T @ pb.current_scale(u, i_d, sl)) + TINY_CURRENT
        with np.errstate(invalid="ignore", over="ignore"):
            ratio = float(np.max(np.abs(g) / tol, initial=0.0))
        return g, (ratio if np.isfinite(ratio) else np.inf), vd, sl


def _newton(problem: Problem, T, t0, u, rtol: float, max_iter: int):
    """Damped, junction-limited Newton on ``E(T z + t0)`` from ``u`` (projected onto the affine set).

    Returns ``(u, status, iterations, message)``; the residual is the reduced KCL ``T^T grad E``.
    """
    IS, N, vt, gmin = _params(problem)
    nvt = N * vt
    vcrit = shockley_vcrit(IS, N, vt)
    counts = np.maximum(np.asarray(T.sum(axis=0)).ravel(), 1.0)
    z = (T.T @ (u - t0)) / counts
    u = T @ z + t0
    E = energy(problem, u)
    if not np.isfinite(E):
        return u, "solver_error", 0, "co-content overflows at the start point"
    residual = _Residual(problem, T, rtol)
    g, ratio, vd, sl = residual(u)
    polish = 0
    settled = False  # the last step was a full Newton step below SETTLED_RTOL |u|
    for it in range(1, max_iter + 1):
        res = float(np.max(np.abs(g), initial=0.0))
        if ratio <= 1.0 and settled:
            # quadratic convergence: the next correction would be ~ (SETTLED_RTOL)^2 |u|; no factorisation
            return u, "converged", it - 1, (f"KCL residual {res:.2e} A, within rtol={rtol:g} of every node's "
                                            "own current scale")
        K = T.T @ (problem.H + problem.S.T @ sp.diags(sl) @ problem.S) @ T
        try:
            dz = SPDFactor(K).solve(-g)  # LDL^T (qdldl), SuperLU where it meets a zero pivot
        except SingularSystemError:  # e.g. slopes of 1e60 S swamping the rest in float64
            return u, "solver_error", it - 1, f"singular Newton matrix at KCL residual {res:.2e} A"
        du = T @ dz
        if np.all(np.abs(du) <= 8 * EPS * np.abs(u)):
            return u, "converged", it - 1, (f"KCL residual {res:.2e} A; the Newton correction is below "
                                            "round-off")
        if ratio <= 1.0:
            # Within tolerance. The residual test alone leaves soft modes (a node tied by large
            # conductances to others, but to ground only through small ones) loose by up to
            # tol / (small conductance): polish with full Newton steps while they stay within
            # tolerance, until the step is below POLISH_RTOL |u| (or POLISH_STEPS steps).
            done = bool(np.all(np.abs(du) <= POLISH_RTOL * np.abs(u) + POLISH_ATOL))
            if not done and polish < POLISH_STEPS:
                g_t, ratio_t, vd_t, sl_t = residual(u + du)
                if ratio_t <= 1.0:
                    settled = bool(np.all(np.abs(du) <= SETTLED_RTOL * np.abs(u)))
                    u = u + du
                    g, ratio, vd, sl = g_t, ratio_t, vd_t, sl_t
                    E = energy(problem, u)
                    polish += 1
                    continue
            return u, "converged", it - 1, (f"KCL residual {res:.2e} A, within rtol={rtol:g} of every node's "
                                            "own current scale")
        slope = float(g @ dz)
        # SPICE junction limiting, as one factor on the whole step.
        t_lim = float(junction_step_length(vd, problem.S @ du, nvt, vcrit))
        noise = _energy_noise(problem, u)
        t = 1.0  # the full step first; if it fails, the junction-limited one, then halving
        while t > 1e-20:
            trial = u + t * du
            E_trial = energy(problem, trial)
            if E_trial <= E + 1e-4 * t * slope:
                g, ratio, vd, sl = residual(trial)
                break
            if E_trial <= E + noise and np.all(np.abs(trial - u) <= 1e-6 * (np.abs(u) + problem.voltage_scale)):
                # round-off regime (tiny steps only): accept if the scaled KCL residual falls
                g_t, ratio_t, vd_t, sl_t = residual(trial)
                if ratio_t < ratio:
                    g, ratio, vd, sl = g_t, ratio_t, vd_t, sl_t
                    break
            if t > t_lim and (not np.isfinite(E_trial) or 0.5 * t < t_lim):
                t = t_lim  # an overflowing trial jumps to the junction-limited step; halving stops there once
            else:
                t *= 0.5
        else:
            return u, "max_iter", it, f"line search failed at KCL residual {res:.2e} A"
        settled = t == 1.0 and bool(np.all(np.abs(trial - u) <= SETTLED_RTOL * np.abs(u)))
        u, E = trial, E_trial
    res = float(np.max(np.abs(g), initial=0.0))
    if ratio <= 1.0:
        return u, "converged", max_iter, f"KCL residual {res:.2e} A"
    return u, "max_iter", max_iter, f"{max_iter} iterations, KCL residual {res:.2e} A"


def _plain_newton(problem: Problem, u, rtol: float, max_iter: int):
    """Newton without ideal diodes by :func:`physgrad.circuit.solvers.batch_newton.newton_batch` (a
    batch of one: the same rules as :func:`_newton`, one symbolic LDL^T for all iterations)."""
    n = problem.n_u
    smap = problem.current_scale_map()  # the KCL tolerances' scales, precomputed (None with a beta-nudge)
    scale = problem.current_scale if smap is None else smap

    def scales(rows, U, I, SL):
        if len(rows) == 1:
            return scale(U[0], I[0], SL[0]).reshape(1, n)
        return np.stack([scale(U[k], I[k], SL[k]) for k in range(len(rows))]).reshape(len(rows), n)

    bp = BatchProblem(problem.H.tocsr(), problem.f[None, :], problem.S.tocsr(), problem.e[None, :],
                      np.array([problem.const]), _params(problem), scales, np.array([problem.voltage_scale]))
    pattern, U0 = NewtonPattern(problem.H, problem.S), np.asarray(u, float)[None, :]
    dense = problem.voltage_scale <= DENSE_FACTOR_VMAX
    res = newton_batch(bp, pattern, U0, rtol=rtol, max_iter=max_iter, dense_factor=dense)
    if dense and not (res.status[0] == "converged" and np.max(np.abs(res.u), initial=0.0) <= DENSE_FACTOR_VMAX):
        # beyond the dense route's scope (current sources driving nodes past DENSE_FACTOR_VMAX) or not
        # solved: the LDL^T route from the same start decides, as without the dense route
        res = newton_batch(bp, pattern, U0, rtol=rtol, max_iter=max_iter)
    return res.u[0], str(res.status[0]), int(res.n_iter[0]), str(res.messages[0])


def _robust_newton(problem: Problem, T, t0, u, rtol: float, max_iter: int):
    """:func:`_newton`; if it fails, gmin stepping, then source stepping (SPICE's fallbacks)."""
    u1, status, it, msg = _newton(problem, T, t0, u, rtol, max_iter)
    if status == "converged":
        return u1, status, it, msg
    total = it
    n = problem.n_u
    # gmin stepping: shunt conductance gs (S) from every free node to ground, stepped down.
    v = u
    ok = True
    for gs in GMIN_STEPS:
        stage = replace(problem, H=(problem.H + gs * sp.identity(n, format="csr")).tocsr())
        v, st, k, _ = _newton(stage, T, t0, v, STAGE_RTOL, min(max_iter, STAGE_MAX_ITER))
        total += k
        if st != "converged":
            ok = False
            break
    if ok:
        u2, status, k, msg2 = _newton(problem, T, t0, v, rtol, max_iter)
        total += k
        if status == "converged":
            return u2, status, total, f"{msg2} (after gmin stepping)"
    # source stepping: f, e scaled by alpha from 0 to 1 (adaptive steps).
    alpha, step, v = 0.0, 0.25, np.zeros(n) if T.shape[1] == n and not np.any(t0) else u
    while alpha < 1.0 and step >= 1e-4:
        a = min(1.0, alpha + step)
        stage = replace(problem, f=a * problem.f, e=a * problem.e)
        w, st, k, _ = _newton(stage, T, t0, v, STAGE_RTOL if a < 1.0 else rtol, min(max_iter, STAGE_MAX_ITER))
        total += k
        if st == "converged":
            alpha, v, step = a, w, min(2 * step, 0.5)
        else:
            step *= 0.25
    if alpha == 1.0:
        u3, status, k, msg3 = _newton(problem, T, t0, v, rtol, max_iter)
        total += k
        if status == "converged":
            return u3, status, total, f"{msg3} (after source stepping)"
    return u1, "max_iter", total, f"{msg}; gmin and source stepping failed too"


def minimize(problem: Problem, *, rtol: float = 1e-13, max_iter: int = 200, max_outer: int = 50,
             u0=None) -> ReducedSolution:
    """Newton; with ideal diodes, inside a primal-dual active-set loop over them.

    ``rtol`` (dimensionless) is the per-node relative KCL tolerance (see the module docstring);
    ``max_iter`` bounds each Newton run (the homotopy fallbacks run several).

    For a working set ``W`` of conducting ideal diodes the constraints ``D_W u = d_W`` are
    eliminated (``u = T z + t0``, :func:`physgrad.circuit.solvers.kkt.eliminate`) and Newton runs
    on the smooth problem in ``z``; the diode currents follow from Kirchhoff's law, and ``W`` is
    updated as in :func:`physgrad.circuit.solvers.kkt.pdas` until currents are >= 0 and the
    blocking diodes' constraints hold.
    """
    accepts(problem)
    n = problem.n_u
    m = problem.D.shape[0]
    IS, N, vt, gmin = _params(problem)
    fixed = np.diff(problem.S.tocsr().indptr) == 0
    if np.any(fixed):
        i_fixed = shockley_current(problem.e[fixed], IS[fixed], N[fixed], vt[fixed], gmin[fixed])
        if not np.all(np.isfinite(i_fixed)):
            return ReducedSolution(np.full(n, np.nan), np.zeros(m), "infeasible", 0, "newton",
                               "a diode whose voltage the sources fix carries a current that overflows float64")
    if m == 0:
        # Shockley diodes only: first the lockstep Newton of batch_newton (one symbolic LDL^T for every
        # iteration) from u0, else from u = 0 where the co-content is finite there (measured: the
        # ideal-diode start saved 0-1 iterations on the benchmark families and cost a quarter of the
        # solve); if that does not converge, the ideal-diode start and the homotopies below.
        u = np.zeros(n) if u0 is None else np.asarray(u0, float)
        total = 0
        vcrit = shockley_vcrit(IS, N, vt)
        live = np.diff(problem.S.tocsr().indptr) > 0
        far = u0 is None and bool(np.any((problem.S @ u + problem.e)[live] > vcrit[live]))
        if not far and np.isfinite(energy(problem, u)):
            u1, status, it, msg = _plain_newton(problem, u, rtol, max_iter if u0 is not None else PLAIN_MAX_ITER)
            total += it
            if status == "converged":
                return ReducedSolution(u1, np.zeros(0), status, total, "newton", msg, active=np.zeros(0, bool))
        if u0 is None:
            u = _start(problem)
        u, status, it, msg = _robust_newton(problem, sp.identity(n, format="csr"), np.zeros(n), u, rtol, max_iter)
        return ReducedSolution(u, np.zeros(0), status, total + it, "newton", msg, active=np.zeros(0, bool))
    u = _start(problem) if u0 is None else np.asarray(u0, float)
    if not np.all(problem.d - problem.D @ u >= -1e-9 * max(1.0, float(np.max(np.abs(problem.d))))):
        return ReducedSolution(np.full(n, np.nan), np.zeros(m), "infeasible", 0, "newton",
                           "the ideal diodes' constraints cannot all hold (diodes forced forward)")
    v_scale = max(1.0, float(np.max(np.abs(problem.d))))
    W = problem.d - problem.D @ u <= 1e-12 * v_scale
    total, seen = 0, set()
    for _ in range(max_outer):
        el = eliminate(problem.D, problem.d, W, n)
        if el is None:
            return ReducedSolution(u, np.zeros(m), "solver_error", total, "newton",
                               "dependent ideal-diode constraints in the working set")
        u, status, it, msg = _robust_newton(problem, el[0], el[1], u, rtol, max_iter)
        total += it
        if status != "converged":
            return ReducedSolution(u, np.zeros(m), status, total, "newton", msg)
        r = -gradient(problem, u)  # = D_W^T lam at a KKT point
        lam = multipliers(problem.D, problem.d, W, r, el[2])
        i_scale = max(float(np.max(np.abs(r), initial=0.0)), float(np.max(np.abs(problem.f), initial=0.0)), 1e-30)
        slack = problem.d - problem.D @ u
        tol_v, tol_i = 1e-11 * v_scale, 1e-11 * i_scale
        ok, newW = pdas_step(W, lam, slack, tol_i, tol_v)
        if ok:
            return ReducedSolution(u, np.where(W, np.maximum(lam, 0.0), 0.0), "converged", total, "newton",
                                   f"{msg}; {int(W.sum())} ideal diodes conduct", active=W)
        W = newW
        if W.tobytes() in seen:
            break
        seen.add(W.tobytes())
    return ReducedSolution(u, np.zeros(m), "max_iter", total, "newton", "the ideal-diode active set did not settle")

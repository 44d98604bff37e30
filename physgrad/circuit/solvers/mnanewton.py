r"""Newton on the MNA equations: Shockley diodes and transistors with controlled sources (and ideal
diodes).

Solves (:mod:`physgrad.circuit.mna`)

.. math:: F(x) = K x + S^\top I(S x) + T(x) + N\lambda - b = 0,\qquad
          \phi(\lambda, \sigma w) = 0,\; w = d - N^\top x,

with ``I`` the Shockley law of :mod:`physgrad.circuit.diode` (ngspice's), ``T`` the transistors'
currents (:mod:`physgrad.circuit.transistors`: MOSFET level 1, Gummel-Poon BJT) and ``phi`` the
Fischer-Burmeister function (ideal diodes; ``sigma`` a conductance scale, S). There is no energy
to descend when controlled sources break reciprocity, so the iteration is SPICE's: Newton steps
limited by junction-voltage limiting (:func:`physgrad.circuit.diode.pnjlim`; for transistors
also SPICE's ``fetlim``/``limvds``: :func:`physgrad.circuit.transistors.limit_fraction`; one factor
for the whole step), every step taken (SPICE's iteration); if that fails, the same steps backtracked on
the squared scaled residual (a limited step taken without decrease when no shorter one decreases
it). Fallbacks as in SPICE: gmin stepping (a shunt from every node to ground, 1e-2 S down by
decades) and source stepping (sources and thresholds scaled from 0 to 1).

With ideal diodes: from the start's conducting diodes ``W``, Newton on the smooth system with ``W``
held conducting (``w_W = 0``) to round-off, then the signs are checked and ``W`` corrected
(primal-dual active-set updates); if that fails, the semismooth Newton on all ports at once gives a
new ``W`` and the loop runs again.

Start: the circuit with each Shockley diode replaced by an ideal one (threshold 0) plus its gmin,
solved as an LCP (all junctions at ``v <= 0``, where the law cannot overflow); 0 V where that fails
and for circuits with transistors.

Stopping rule: every row's residual within ``rtol`` of its own scale (node rows:
:meth:`physgrad.circuit.mna.MNAProblem.node_scales`; branch rows: ``branch_scales``), then up to
three full Newton steps while they shrink the residual (quadratic convergence to round-off).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from physgrad.circuit.diode import pnjlim, shockley_vcrit
from physgrad.circuit.elements import IdealDiode, Resistor, ShockleyDiode
from physgrad.circuit.mna import MNAProblem, build_mna, factor_general
from physgrad.circuit.solvers import lcp
from physgrad.circuit.solvers.result import ReducedSolution
from physgrad.circuit.transistors import limit_fraction
from physgrad.types import PhysgradError, SingularSystemError

GMIN_STEPS = tuple(10.0 ** -k for k in range(2, 13))
SOURCE_STEPS_MIN = 1e-4
POLISH_STEPS = 3


def accepts(mp: MNAProblem) -> None:
    """Any MNA problem (linear, Shockley, ideal diodes, controlled sources, transistors)."""


class _System:
    """The equations at one homotopy stage: shunt ``gsh`` (S) on every node, sources scaled by
    ``alpha``; ``W`` None = all ports by Fischer-Burmeister, else the ports ``W`` held at ``w = 0``."""

    def __init__(self, mp: MNAProblem, W=None, gsh: float = 0.0, alpha: float = 1.0):
        self.mp, self.W, self.alpha = mp, W, alpha
        n, size = mp.n, mp.size
        self.K = mp.K if gsh == 0.0 else (mp.K + sp.diags(np.r_[np.full(n, gsh), np.zeros(size - n)])).tocsc()
        self.sigma = lcp.conductance_scale(mp)
        self.ports = np.arange(mp.m) if W is None else np.flatnonzero(W)
        self.NP = mp.N[:, self.ports]
        k = len(self.ports)
        self.row_scale = np.ones(size + k)
        self.row_scale[n:size] = self.sigma
        if W is not None:
            self.row_scale[size:] = self.sigma
        IS, N, vt, _ = mp.shockley
        self.nvt = N * vt
        self.vcrit = shockley_vcrit(IS, N, vt)

    def unpack(self, z):
        mp = self.mp
        lam = np.zeros(mp.m)
        lam[self.ports] = z[mp.size:]
        return z[:mp.size], lam

    def F(self, z):
        """Scaled residual and the Jacobian pieces at ``z = (x, lam_ports)``."""
        mp = self.mp
        x, lp = z[:mp.size], z[mp.size:]
        vd, i_shk, slope = mp.shockley_terms(x)
        r = self.K @ x + self.NP @ lp - self.alpha * mp.b
        if mp.S.shape[0]:
            r = r + mp.S.T @ i_shk
        dT = None
        if mp.transistors.count:
            T, dT = mp.transistor_terms(x)
            r = r + T
        wP = self.alpha * mp.d[self.ports] - self.NP.T @ x
        if self.W is None:
            phi, da, db = lcp.fischer_burmeister(lp, self.sigma * wP)
        else:
            phi, da, db = -wP, None, None
        return np.concatenate([r, phi]) * self.row_scale, (vd, slope, da, db, dT)

    def jacobian(self, parts):
        mp = self.mp
        vd, slope, da, db, dT = parts
        A = self.K + (mp.S.T @ sp.diags(slope) @ mp.S if mp.S.shape[0] else 0)
        if dT is not None:
            A = A + dT
        if self.W is None:
            J = sp.bmat([[A, self.NP], [-(sp.diags(self.sigma * db) @ self.NP.T), sp.diags(da)]], format="csc")
        else:
            k = len(self.ports)
            J = sp.bmat([[A, self.NP], [self.NP.T, sp.csc_matrix((k, k))]], format="csc")
        return sp.diags(self.row_scale) @ J

    def ratio(self, z, Fz):
        """Largest ``|F_i| / tol_i`` (dimensionless): rows against their own scales."""
        mp = self.mp
        x, lam = self.unpack(z)
        size = mp.size
        scale = np.concatenate([mp.node_scales(x, lam), mp.branch_scales(x) * self.sigma])
        # port rows: held diodes' slack (V, times sigma) against the voltage scale; Fischer-Burmeister
        # rows (A) against the ports' own current and sigma times the voltage scale
        v_scale = max(mp.voltage_scale, float(np.max(np.abs(x[:mp.n]), initial=0.0)))
        port = self.sigma * v_scale + (np.abs(lam[self.ports]) if self.W is None else 0.0)
        scale = np.concatenate([scale, np.broadcast_to(port, (len(self.ports),))])
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.abs(Fz) / np.maximum(scale, 1e-30)
        r[:size][~np.isfinite(r[:size])] = np.inf
        return float(np.max(r, initial=0.0))

    def limit(self, z, dz):
        """Junction-limited step length (SPICE's pnjlim on every Shockley diode, one factor)."""
        mp = self.mp
        if not mp.nonlinear:
            return 1.0
        x, dx = z[:mp.size], dz[:mp.size]
        t_tr = limit_fraction(mp.transistors, x, dx, mp.n) if mp.transistors.count else 1.0
        if not mp.S.shape[0]:
            return t_tr
        vd, dvd = mp.S @ x, mp.S @ dx
        vnew = vd + dvd
        lim = pnjlim(vnew, vd, self.nvt, self.vcrit)
        limited = (lim != vnew) & (np.abs(dvd) > 0)
        if not np.any(limited):
            return t_tr
        t = float(np.min(np.clip((lim[limited] - vd[limited]) / dvd[limited], 0.0, 1.0)))
        return max(min(t, t_tr), 1e-6)


def _newton(sys: _System, z, rtol: float, max_iter: int, damped: bool = False):
    """Junction-limited Newton on ``sys`` from ``z``: ``(z, converged, iterations)``.

    ``damped=False`` is SPICE's iteration (every step taken at its junction-limited length);
    ``damped=True`` backtracks each step on the squared scaled residual (Armijo), taking a
    junction-limited step without decrease only when no shorter one decreases it.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        Fz, parts = sys.F(z)
        theta = 0.5 * float(Fz @ Fz)
        polish = 0
        for it in range(1, max_iter + 1):
            ratio = sys.ratio(z, Fz)
            if ratio <= rtol and (polish >= POLISH_STEPS or not np.isfinite(theta)):
                return z, True, it - 1
            if not np.all(np.isfinite(Fz)):
                return z, False, it
            try:
                dz = factor_general(sys.jacobian(parts)).solve(-Fz)
            except SingularSystemError:
                return z, ratio <= rtol, it
            if not np.all(np.isfinite(dz)):
                return z, ratio <= rtol, it
            if ratio <= rtol:  # polishing: full steps while they do not raise the residual
                zt = z + dz
                Ft, pt = sys.F(zt)
                if sys.ratio(zt, Ft) <= ratio:
                    z, Fz, parts, theta = zt, Ft, pt, 0.5 * float(Ft @ Ft)
                    polish += 1
                    if np.all(np.abs(dz) <= 1e-15 * np.abs(z)):
                        return z, True, it
                    continue
                return z, True, it
            t_lim = sys.limit(z, dz)
            if not damped:
                zt = z + t_lim * dz
                Ft, pt = sys.F(zt)
                z, Fz, parts, theta = zt, Ft, pt, 0.5 * float(Ft @ Ft)
                continue
            accepted = False
            t = t_lim
            for _ in range(30):
                zt = z + t * dz
                Ft, pt = sys.F(zt)
                th = 0.5 * float(Ft @ Ft)
                if np.isfinite(th) and th <= (1 - 1e-4 * t) * theta:
                    accepted = True
                    break
                t *= 0.5
            if not accepted:
                if t_lim < 1.0:  # as SPICE: a junction-limited step is taken even without decrease
                    zt = z + t_lim * dz
                    Ft, pt = sys.F(zt)
                    th = 0.5 * float(Ft @ Ft)
                    if not np.isfinite(th):
                        return z, False, it
                else:
                    return z, False, it
            z, Fz, parts, theta = zt, Ft, pt, th
        return z, sys.ratio(z, Fz) <= rtol, max_iter


def _robust(mp: MNAProblem, z0, W, rtol, max_iter):
    """SPICE's iteration, the damped one, gmin stepping, source stepping: ``(z, converged, iterations,
    how)``."""
    z, ok, total = _newton(_System(mp, W), z0, rtol, max_iter)
    if ok:
        return z, True, total, ""
    z1, ok, k = _newton(_System(mp, W), z0, rtol, max_iter, damped=True)
    total += k
    if ok:
        return z1, True, total, " (damped)"
    v = z0
    good = True
    for gsh in GMIN_STEPS:
        v, ok, k = _newton(_System(mp, W, gsh=gsh), v, 1e-8, 100)
        total += k
        if not ok:
            good = False
            break
    if good:
        z2, ok, k = _newton(_System(mp, W), v, rtol, max_iter)
        total += k
        if ok:
            return z2, True, total, " (after gmin stepping)"
    alpha, step, v = 0.0, 0.25, np.zeros_like(z0)
    while alpha < 1.0 and step >= SOURCE_STEPS_MIN:
        a = min(1.0, alpha + step)
        w, ok, k = _newton(_System(mp, W, alpha=a), v, 1e-8 if a < 1 else rtol, 100)
        total += k
        if ok:
            alpha, v, step = a, w, min(2 * step, 0.5)
        else:
            step *= 0.25
    if alpha == 1.0:
        z3, ok, k = _newton(_System(mp, W), v, rtol, max_iter)
        total += k
        if ok:
            return z3, True, total, " (after source stepping)"
    return z, False, total, ""


def start(mp: MNAProblem):
    """Start ``(x, lam)``: Shockley diodes as ideal diodes (threshold 0) in parallel with their gmin,
    solved as an LCP; zeros where that fails."""
    zero = (np.zeros(mp.size), np.zeros(mp.m))
    circuit = mp.circuit
    if not mp.S.shape[0] or mp.transistors.count:
        return zero
    els, extra = [], []
    for el in circuit.elements:
        if isinstance(el, ShockleyDiode):
            els.append(IdealDiode(el.name, el.anode, el.cathode, 0.0))
            if el.model.gmin > 0:
                extra.append(Resistor(f"r.pgstart.{el.name}", el.anode, el.cathode, el.model.gmin))
        else:
            els.append(el)
    try:
        c0 = circuit.replace_elements(els + extra)
        g = np.concatenate([mp.g, [r.conductance for r in extra]])
        mp0 = build_mna(c0, mp.nudge, [circuit.nodes[o] for o in mp.outputs] if len(mp.outputs) else None, g)
        res = lcp.minimize(mp0)
    except (PhysgradError, SingularSystemError):
        return zero
    if not res.converged:
        return zero
    x = res.u
    # the original ideal diodes are the last ports of mp0 (Shockley-replacements come first in table order)
    lam = np.zeros(mp.m)
    arr0 = c0.arrays
    names0 = [c0.elements[p].name for p in arr0.dio_pos[mp0.dio_rows]]
    names = [circuit.elements[p].name for p in circuit.arrays.dio_pos[mp.dio_rows]]
    pos = {nm: k for k, nm in enumerate(names0)}
    for k, nm in enumerate(names):
        if nm in pos:
            lam[k] = res.lam[pos[nm]]
    return x, lam


STEEP_IS, STEEP_N = 1e-9, 1e-3  # A, dimensionless: ngspice's stand-in for an ideal diode (netlist export)


def _transfer(src: MNAProblem, x: np.ndarray, dst: MNAProblem) -> np.ndarray:
    """``dst``'s unknowns from ``src``'s by node and branch names (0 where ``src`` has none)."""
    out = np.zeros(dst.size)
    vs = dict(zip(src.circuit.nodes, x[:src.n]))
    out[:dst.n] = [vs.get(nd, 0.0) for nd in dst.circuit.nodes]
    bs = {b: x[src.n + j] for j, b in enumerate(src.branches)}
    out[dst.n:] = [bs.get(b, 0.0) for b in dst.branches]
    return out


def steep_start(mp: MNAProblem):
    """``(x, lam, iterations)`` from the circuit with every ideal diode replaced by a steep Shockley
    diode (``IS = 1e-9 A``, ``N = 1e-3``) in series with a source at its threshold, solved by
    :func:`_robust`; ``lam`` is those diodes' forward currents (0 below ``10 IS``). ``None`` if that
    circuit is not solved."""
    from physgrad.circuit.elements import DiodeModel, VoltageSource

    circuit = mp.circuit
    steep = DiodeModel("pg_steep_start", IS=STEEP_IS, N=STEEP_N)
    els = []
    for el in circuit.elements:
        if isinstance(el, IdealDiode):
            if el.vth:
                mid = f"pgx_{el.name}_start"
                els += [ShockleyDiode(el.name, el.anode, mid, steep), VoltageSource(f"v.pgstart.{el.name}", mid,
                                                                                   el.cathode, el.vth)]
            else:
                els.append(ShockleyDiode(el.name, el.anode, el.cathode, steep))
        else:
            els.append(el)
    try:
        c2 = circuit.replace_elements(els)
        mp2 = build_mna(c2, mp.nudge, [circuit.nodes[o] for o in mp.outputs] if len(mp.outputs) else None, mp.g)
    except (PhysgradError, SingularSystemError):
        return None
    x0 = start(mp2)[0]
    z, ok, k, _ = _robust(mp2, x0, np.zeros(0, bool), 1e-10, 200)
    if not ok:
        return None
    _, i_shk, _ = mp2.shockley_terms(z)
    names2 = [c2.elements[p].name for p in c2.arrays.shk_pos]
    cur = dict(zip(names2, i_shk))
    names = [circuit.elements[p].name for p in circuit.arrays.dio_pos[mp.dio_rows]]
    lam = np.array([cur[nm] if cur[nm] > 10 * STEEP_IS else 0.0 for nm in names])
    return _transfer(mp2, z, mp), lam, k


def minimize(mp: MNAProblem, *, rtol: float = 1e-12, max_iter: int = 200, max_outer: int = 30,
             u0=None) -> ReducedSolution:
    """Solve the MNA equations (see the module docstring).

    Parameters
    ----------
    rtol : float
        Per-row relative residual tolerance (dimensionless).
    max_iter : int
        Newton iterations per run (each homotopy stage runs its own).
    max_outer : int
        Active-set corrections of the ideal-diode polish.
    u0 : array (size,), optional
        Start for ``x`` (V, A) instead of :func:`start`.
    """
    m = mp.m
    x0, lam0 = start(mp) if u0 is None else (np.asarray(u0, float), np.zeros(m))
    if m == 0:
        z, ok, it, how = _robust(mp, x0, np.zeros(0, bool), rtol, max_iter)
        return ReducedSolution(z, np.zeros(0), "converged" if ok else "max_iter", it, "mna-newton",
                               ("Newton converged" + how) if ok else "Newton did not converge (gmin and source "
                               "stepping too)", {}, np.zeros(0, bool))
    total, notes = 0, []
    x, lam = x0, lam0
    W = lam0 > 0  # the start's conducting diodes (Shockley diodes as ideal ones: the LCP's active set)
    for stage in ("active set", "steep diodes", "Fischer-Burmeister"):
        if stage == "steep diodes":  # ideal diodes as steep Shockley diodes (as ngspice sees them)
            guess = steep_start(mp)
            if guess is None:
                notes.append("the steep-diode circuit was not solved")
                continue
            x, lam, k = guess
            total += k
            W = lam > 0
        if stage == "Fischer-Burmeister":  # all ports at once by the semismooth Newton, then the loop again
            z, ok, k, how = _robust(mp, np.concatenate([x0, lam0]), None, rtol, max_iter)
            total += k
            if not ok:
                notes.append("the semismooth (Fischer-Burmeister) Newton did not converge either")
                break
            sigma = lcp.conductance_scale(mp)
            x, lam = z[:mp.size], z[mp.size:]
            W = lam > sigma * mp.slack(x)
        res = _active_set_loop(mp, x, lam, W, rtol, max_iter, max_outer)
        total += res[-1]
        x, lam, W, ok, msg = res[:5]
        if ok:
            return ReducedSolution(x, lam, "converged", total, "mna-newton",
                                   f"Newton converged{msg}; {int(W.sum())} ideal diodes conduct", {}, W)
        notes.append(f"{stage} stage: {msg}")
    return ReducedSolution(x, lam, "max_iter", total, "mna-newton", "; ".join(notes), {}, W)


def _active_set_loop(mp, x, lam, W, rtol, max_iter, max_outer):
    """Newton with the ideal diodes ``W`` held conducting, then primal-dual active-set updates of
    ``W`` until the signs hold: ``(x, lam, W, ok, message, iterations)``."""
    seen, total = set(), 0
    for _ in range(max_outer):
        sys = _System(mp, W)
        zW, okW, k, how = _robust(mp, np.concatenate([x, lam[W]]), W, rtol, max_iter)
        total += k
        if not okW:
            return x, lam, W, False, "Newton on the conducting ideal diodes' system did not converge", total
        x, lam = sys.unpack(zW)
        w = mp.slack(x)
        tol_v, tol_i = lcp.tolerances(mp, x, lam)
        if np.all(lam[W] >= -tol_i) and np.all(w[~W] >= -tol_v):
            return x, np.where(W, np.maximum(lam, 0.0), 0.0), W, True, how, total
        seen.add(W.tobytes())
        W = np.where(W, lam > -tol_i, w < -tol_v)
        if W.tobytes() in seen:
            return x, lam, W, False, "the ideal-diode active set cycled", total
    return x, lam, W, False, "the ideal-diode active set did not settle", total


r"""DC laws of the transistors (MOSFET level 1, Gummel-Poon BJT), their analytic Jacobians and
SPICE's step limiting: the one definition the MNA route uses (:mod:`physgrad.circuit.mna`).

MOSFET, level 1 (Shichman-Hodges), as ngspice's MOS1 (``mos1load.c``) evaluates it at 27 C = TNOM.
With ``t = +1`` (NMOS) or ``-1`` (PMOS) the device voltages are ``v_gs = t (v_g - v_s)``,
``v_ds = t (v_d - v_s)``, ``v_bs = t (v_b - v_s)``. In normal mode (``v_ds >= 0``)

.. math::

    s = \begin{cases} \sqrt{\phi - v_{bs}} & v_{bs} \le 0 \\
                      \max\big(0, \sqrt\phi - v_{bs} / (2\sqrt\phi)\big) & v_{bs} > 0 \end{cases},\qquad
    V_{on} = t\,V_{TO} + \gamma\,(s - \sqrt\phi),\qquad v_{gst} = v_{gs} - V_{on},

    I_{ds} = \begin{cases} 0 & v_{gst} \le 0 \ \text{(cutoff)}\\
        \tfrac12 \beta (1 + \lambda v_{ds})\, v_{gst}^2 & 0 < v_{gst} \le v_{ds}\ \text{(saturation)}\\
        \beta (1 + \lambda v_{ds})\, v_{ds}\,(v_{gst} - v_{ds}/2) & \text{else (linear)}\end{cases}

with ``beta = KP m W / L``. Note MOS1's details, copied here: the factor ``1 + lambda v_ds`` also
multiplies the linear region; for ``v_bs > 0`` the square root is replaced by its tangent at 0
(clipped at 0). In inverse mode (``v_ds < 0``) drain and source swap: ``I_ds = -I(v_gd, -v_ds,
v_bd)``. The channel current (A) flowing from drain to source is ``t I_ds``. Bulk-drain and
bulk-source junctions (``IS m``, emission 1) carry ``t j(v_bd)`` and ``t j(v_bs)`` from bulk to
drain and source, with MOS1's junction law ``j(v) = IS (e^{v/v_t} - 1) + g_min v`` for
``v > -3 v_t`` and ``g_min v - IS`` below (a jump of ``IS e^{-3}``, ~5e-16 A, as in ngspice).
The gate draws no current.

BJT, Gummel-Poon without series resistances, as ngspice's ``bjtload.c``: ``v_be = t (v_b - v_e)``,
``v_bc = t (v_b - v_c)``,

.. math::

    I_{be} = I_S\,(e^{v_{be}/(N_F v_t)} - 1),\quad I_{bc} = I_S\,(e^{v_{bc}/(N_R v_t)} - 1)
    \quad\text{(the diode's cubic reverse branch below } -3 N v_t\text{)},

    q_1 = \frac{1}{1 - v_{bc}/V_{AF} - v_{be}/V_{AR}},\quad
    q_b = \frac{q_1}{2}\Big(1 + \sqrt{1 + 4 (I_{be}/I_{KF} + I_{bc}/I_{KR})}\Big),

    I_c = \frac{I_{be} - I_{bc}}{q_b} - \frac{I_{bc}}{B_R} - I_{bcn},\qquad
    I_b = \frac{I_{be}}{B_F} + I_{ben} + \frac{I_{bc}}{B_R} + I_{bcn},

with the leakage diodes ``I_ben = ISE (e^{v_be/(NE v_t)} - 1) + g_min v_be`` and ``I_bcn`` (ISC, NC)
likewise (ngspice puts its gmin there). Terminal currents (into the device) are ``t I_c`` at the
collector, ``t I_b`` at the base and ``-t (I_c + I_b)`` at the emitter. The substrate junction
(ISS = 0) is ngspice's gmin alone, from the collector (vertical, NPN's default) or the base
(lateral, PNP's default) to the substrate node: a conductance ``gmin`` (measured against
ngspice-39: a PNP's base held at 3 V through 1 GOhm loses ``gmin * 3 V`` to ground).

References
----------
H. Shichman, D. A. Hodges, IEEE J. Solid-State Circuits 3 (1968); H. K. Gummel, H. C. Poon, Bell
Syst. Tech. J. 49 (1970); ngspice ``src/spicelib/devices/mos1/mos1load.c``, ``bjt/bjtload.c`` and
``devsup.c`` (``DEVfetlim``, ``DEVlimvds``, ``DEVpnjlim``). Checked against the ngspice binary in
``tests/test_transistors.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from physgrad.circuit.diode import pnjlim, shockley_current, shockley_slope, shockley_vcrit
from physgrad.circuit.elements import GROUND, Bjt, Circuit, Mosfet

MOS_TERMINALS = ("drain", "gate", "source", "bulk")
BJT_TERMINALS = ("collector", "base", "emitter")


# --- MOSFET -------------------------------------------------------------------------------------------
def mos1_channel(vgs, vds, vbs, von0, beta, lam, gamma, phi):
    """Normalised channel current ``I_ds`` (A) of MOS1 for ``vds >= 0`` and its derivatives.

    Parameters are arrays (one per device): ``vgs, vds, vbs`` (V, multiplied by the polarity),
    ``von0 = t VTO`` (V), ``beta`` (A/V^2), ``lam`` (1/V), ``gamma`` (V^0.5), ``phi`` (V).

    Returns
    -------
    (I, dI/dvgs, dI/dvds, dI/dvbs) : arrays (A, S, S, S)
    """
    sphi = np.sqrt(phi)
    neg = vbs <= 0
    with np.errstate(invalid="ignore", divide="ignore"):
        s_neg = np.sqrt(np.where(neg, phi - vbs, phi))
        s_pos = np.maximum(0.0, sphi - vbs / (2 * sphi))
        sarg = np.where(neg, s_neg, s_pos)
        ds = np.where(neg, -0.5 / s_neg, np.where(s_pos > 0, -0.5 / sphi, 0.0))
    von = von0 + gamma * (sarg - sphi)
    vgst = vgs - von
    dvgst_dvbs = -gamma * ds
    betap = beta * (1 + lam * vds)
    on = vgst > 0
    sat = on & (vgst <= vds)
    lin = on & ~sat
    I = np.where(sat, 0.5 * betap * vgst**2, np.where(lin, betap * vds * (vgst - 0.5 * vds), 0.0))
    dI_dvgst = np.where(sat, betap * vgst, np.where(lin, betap * vds, 0.0))
    dI_dvds = np.where(sat, 0.5 * lam * beta * vgst**2,
                       np.where(lin, betap * (vgst - vds) + lam * beta * vds * (vgst - 0.5 * vds), 0.0))
    return I, dI_dvgst, dI_dvds, dI_dvgst * dvgst_dvbs


def mos1_ids(vgs, vds, vbs, von0, beta, lam, gamma, phi):
    """``I_ds`` (A) in either mode (drain and source swapped for ``vds < 0``) and its derivatives
    ``(dI/dvgs, dI/dvds, dI/dvbs)``."""
    fwd = vds >= 0
    vg_ = np.where(fwd, vgs, vgs - vds)
    vd_ = np.abs(vds)
    vb_ = np.where(fwd, vbs, vbs - vds)
    f, fg, fd, fb = mos1_channel(vg_, vd_, vb_, von0, beta, lam, gamma, phi)
    I = np.where(fwd, f, -f)
    d_gs = np.where(fwd, fg, -fg)
    d_bs = np.where(fwd, fb, -fb)
    d_ds = np.where(fwd, fd, fg + fd + fb)
    return I, d_gs, d_ds, d_bs


def mos1_junction(v, IS, vt, gmin):
    """MOS1's bulk junction: current (A) and slope (S) at ``v`` (V)."""
    with np.errstate(over="ignore"):
        e = np.exp(np.minimum(v / vt, 709.0))
    rev = v <= -3 * vt
    return (np.where(rev, gmin * v - IS, IS * (e - 1) + gmin * v),
            np.where(rev, gmin, IS * e / vt + gmin))


# --- BJT ----------------------------------------------------------------------------------------------
def gummel_poon(vbe, vbc, p):
    """``(Ic, Ib, dIc/dvbe, dIc/dvbc, dIb/dvbe, dIb/dvbc)`` (A, S) of the normalised BJT law.

    ``p`` is a mapping of arrays: ``IS BF BR NF NR iVAF iVAR iIKF iIKR ISE NE ISC NC gmin vt``
    (``i*`` are reciprocals, 0 for none; currents already scaled by the area)."""
    z = np.zeros_like(vbe)
    ibe, gbe = shockley_current(vbe, p["IS"], p["NF"], p["vt"], z), shockley_slope(vbe, p["IS"], p["NF"], p["vt"], z)
    ibc, gbc = shockley_current(vbc, p["IS"], p["NR"], p["vt"], z), shockley_slope(vbc, p["IS"], p["NR"], p["vt"], z)
    ise, isc = p["ISE"], p["ISC"]
    has_e, has_c = ise > 0, isc > 0
    safe_e, safe_c = np.where(has_e, ise, 1.0), np.where(has_c, isc, 1.0)
    iben = np.where(has_e, shockley_current(vbe, safe_e, p["NE"], p["vt"], z), 0.0) + p["gmin"] * vbe
    gben = np.where(has_e, shockley_slope(vbe, safe_e, p["NE"], p["vt"], z), 0.0) + p["gmin"]
    ibcn = np.where(has_c, shockley_current(vbc, safe_c, p["NC"], p["vt"], z), 0.0) + p["gmin"] * vbc
    gbcn = np.where(has_c, shockley_slope(vbc, safe_c, p["NC"], p["vt"], z), 0.0) + p["gmin"]
    q1 = 1.0 / (1.0 - p["iVAF"] * vbc - p["iVAR"] * vbe)
    q2 = p["iIKF"] * ibe + p["iIKR"] * ibc
    knee = (p["iIKF"] > 0) | (p["iIKR"] > 0)
    arg = np.maximum(0.0, 1 + 4 * q2)
    sq = np.where(arg != 0, np.sqrt(arg), 1.0)
    qb = np.where(knee, q1 * (1 + sq) / 2, q1)
    dqb_e = np.where(knee, q1 * (qb * p["iVAR"] + p["iIKF"] * gbe / sq), q1 * qb * p["iVAR"])
    dqb_c = np.where(knee, q1 * (qb * p["iVAF"] + p["iIKR"] * gbc / sq), q1 * qb * p["iVAF"])
    t = ibe - ibc
    Ic = t / qb - ibc / p["BR"] - ibcn
    Ib = ibe / p["BF"] + iben + ibc / p["BR"] + ibcn
    dIc_e = gbe / qb - t * dqb_e / qb**2
    dIc_c = -gbc / qb - t * dqb_c / qb**2 - gbc / p["BR"] - gbcn
    dIb_e = gbe / p["BF"] + gben
    dIb_c = gbc / p["BR"] + gbcn
    return Ic, Ib, dIc_e, dIc_c, dIb_e, dIb_c


# --- step limiting (SPICE's devsup.c) -------------------------------------------------------------------
def fetlim(vnew, vold, vto):
    """SPICE's ``DEVfetlim``: limits a gate voltage step (V) around the threshold ``vto`` (V)."""
    vnew, vold, vto = np.broadcast_arrays(np.asarray(vnew, float), np.asarray(vold, float), np.asarray(vto, float))
    out = vnew.copy()
    vtsthi = np.abs(2 * (vold - vto)) + 2
    vtstlo = np.abs(vold - vto) + 1
    vtox = vto + 3.5
    delv = vnew - vold
    on, high = vold >= vto, vold >= vtox
    # on, high: going off (delv <= 0) / staying on
    a = on & high & (delv <= 0)
    out = np.where(a & (vnew >= vtox) & (-delv > vtstlo), vold - vtstlo, out)
    out = np.where(a & (vnew < vtox), np.maximum(vnew, vto + 2), out)
    out = np.where(on & high & (delv > 0) & (delv >= vtsthi), vold + vtsthi, out)
    # on, middle region
    mid = on & ~high
    out = np.where(mid & (delv <= 0), np.maximum(vnew, vto - 0.5), out)
    out = np.where(mid & (delv > 0), np.minimum(vnew, vto + 4), out)
    # off
    off = ~on
    out = np.where(off & (delv <= 0) & (-delv > vtsthi), vold - vtsthi, out)
    vtemp = vto + 0.5
    out = np.where(off & (delv > 0) & (vnew <= vtemp) & (delv > vtstlo), vold + vtstlo, out)
    out = np.where(off & (delv > 0) & (vnew > vtemp), vtemp, out)
    return out


def limvds(vnew, vold):
    """SPICE's ``DEVlimvds``: limits a drain-source voltage step (V)."""
    vnew, vold = np.broadcast_arrays(np.asarray(vnew, float), np.asarray(vold, float))
    up = vnew > vold
    hi = vold >= 3.5
    return np.where(hi, np.where(up, np.minimum(vnew, 3 * vold + 2), np.where(vnew < 3.5, np.maximum(vnew, 2.0), vnew)),
                    np.where(up, np.minimum(vnew, 4.0), np.maximum(vnew, -0.5)))


def _fraction(vold, vnew, vlim):
    """The step fraction ``(vlim - vold)/(vnew - vold)`` in ``[0, 1]`` where limiting changed ``vnew``."""
    d = vnew - vold
    changed = (vlim != vnew) & (np.abs(d) > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(changed, np.clip((vlim - vold) / np.where(changed, d, 1.0), 0.0, 1.0), 1.0)
    return float(np.min(t, initial=1.0))


# --- tables and stamps ------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TransistorTables:
    """Index and parameter arrays of a circuit's transistors (node ``-1`` = ground).

    ``mos_nodes`` (k_m, 4): drain, gate, source, bulk; ``bjt_nodes`` (k_q, 3): collector, base,
    emitter; ``mos`` / ``bjt``: dicts of per-device parameter arrays; ``mos_pos`` / ``bjt_pos``:
    positions in ``circuit.elements``.
    """

    mos_nodes: np.ndarray
    mos: dict
    mos_pos: np.ndarray
    bjt_nodes: np.ndarray
    bjt: dict
    bjt_pos: np.ndarray
    sub_nodes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))  # (k_q, 2): junction node, substrate

    @property
    def count(self) -> int:
        return len(self.mos_pos) + len(self.bjt_pos)


def transistor_tables(circuit: Circuit) -> TransistorTables:
    """The :class:`TransistorTables` of ``circuit``."""
    idx = circuit.node_index
    ix = (lambda nd: -1 if nd == GROUND else idx[nd])
    mos = [(k, el) for k, el in enumerate(circuit.elements) if isinstance(el, Mosfet)]
    bjt = [(k, el) for k, el in enumerate(circuit.elements) if isinstance(el, Bjt)]
    col = (lambda rows, f: np.array([f(el) for _, el in rows], dtype=float))
    mos_nodes = np.array([[ix(getattr(el, t)) for t in MOS_TERMINALS] for _, el in mos], dtype=np.int64).reshape(-1, 4)
    mp = {"t": col(mos, lambda e: e.model.sign), "von0": col(mos, lambda e: e.model.sign * e.model.VTO),
          "vto": col(mos, lambda e: e.model.VTO), "beta": col(mos, lambda e: e.beta),
          "lam": col(mos, lambda e: e.model.LAMBDA), "gamma": col(mos, lambda e: e.model.GAMMA),
          "phi": col(mos, lambda e: e.model.PHI), "IS": col(mos, lambda e: e.model.IS * e.m),
          "gmin": col(mos, lambda e: e.model.gmin), "vt": col(mos, lambda e: e.model.vt)}
    inv = (lambda x: 0.0 if np.isinf(x) else 1.0 / x)
    bjt_nodes = np.array([[ix(getattr(el, t)) for t in BJT_TERMINALS] for _, el in bjt], dtype=np.int64).reshape(-1, 3)
    bp = {"t": col(bjt, lambda e: e.model.sign), "IS": col(bjt, lambda e: e.model.IS * e.area),
          "BF": col(bjt, lambda e: e.model.BF), "BR": col(bjt, lambda e: e.model.BR),
          "NF": col(bjt, lambda e: e.model.NF), "NR": col(bjt, lambda e: e.model.NR),
          "iVAF": col(bjt, lambda e: inv(e.model.VAF)), "iVAR": col(bjt, lambda e: inv(e.model.VAR)),
          "iIKF": col(bjt, lambda e: inv(e.model.IKF * e.area)), "iIKR": col(bjt, lambda e: inv(e.model.IKR * e.area)),
          "ISE": col(bjt, lambda e: e.model.ISE * e.area), "NE": col(bjt, lambda e: e.model.NE),
          "ISC": col(bjt, lambda e: e.model.ISC * e.area), "NC": col(bjt, lambda e: e.model.NC),
          "gmin": col(bjt, lambda e: e.model.gmin), "vt": col(bjt, lambda e: e.model.vt)}
    sub_nodes = np.array([[ix(e.collector if e.model.vertical else e.base), ix(e.substrate)] for _, e in bjt],
                         dtype=np.int64).reshape(-1, 2)
    return TransistorTables(mos_nodes, mp, np.array([k for k, _ in mos], dtype=np.int64), bjt_nodes, bp,
                            np.array([k for k, _ in bjt], dtype=np.int64), sub_nodes)


def _gather(vg: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    return vg[np.where(nodes < 0, len(vg) - 1, nodes)]


def mos_terminal_currents(tab: TransistorTables, vg: np.ndarray):
    """``(I, J)``: currents (A) into each MOSFET at (drain, gate, source, bulk), shape (k, 4), and
    their derivatives ``J[k, i, j] = dI_i / dv_j`` (S), shape (k, 4, 4). ``vg``: node voltages with
    ground appended (V)."""
    p = tab.mos
    V = _gather(vg, tab.mos_nodes)
    t = p["t"]
    vd, vgt, vs, vb = V[:, 0], V[:, 1], V[:, 2], V[:, 3]
    vgs, vds, vbs = t * (vgt - vs), t * (vd - vs), t * (vb - vs)
    ids, a_gs, a_ds, a_bs = mos1_ids(vgs, vds, vbs, p["von0"], p["beta"], p["lam"], p["gamma"], p["phi"])
    cbs, gbs = mos1_junction(vbs, p["IS"], p["vt"], p["gmin"])
    cbd, gbd = mos1_junction(vbs - vds, p["IS"], p["vt"], p["gmin"])
    k = len(t)
    I = np.zeros((k, 4))
    I[:, 0] = t * ids - t * cbd
    I[:, 2] = -t * ids - t * cbs
    I[:, 3] = t * (cbs + cbd)
    J = np.zeros((k, 4, 4))
    # channel t*ids(vgs, vds, vbs): d/d(vd, vg, vs, vb)
    ch = np.stack([a_ds, a_gs, -(a_ds + a_gs + a_bs), a_bs], axis=1)
    J[:, 0, :] += ch
    J[:, 2, :] -= ch
    # junctions: t*cbs(t (vb - vs)) from bulk to source, t*cbd(t (vb - vd)) from bulk to drain
    js = np.zeros((k, 4))
    js[:, 3], js[:, 2] = gbs, -gbs
    jd = np.zeros((k, 4))
    jd[:, 3], jd[:, 0] = gbd, -gbd
    J[:, 2, :] -= js
    J[:, 0, :] -= jd
    J[:, 3, :] += js + jd
    return I, J


def bjt_terminal_currents(tab: TransistorTables, vg: np.ndarray):
    """``(I, J)``: currents (A) into each BJT at (collector, base, emitter), shape (k, 3), and
    ``J[k, i, j] = dI_i / dv_j`` (S), shape (k, 3, 3)."""
    p = tab.bjt
    V = _gather(vg, tab.bjt_nodes)
    t = p["t"]
    vc, vb, ve = V[:, 0], V[:, 1], V[:, 2]
    Ic, Ib, ce, cc, be, bc = gummel_poon(t * (vb - ve), t * (vb - vc), p)
    k = len(t)
    I = np.stack([t * Ic, t * Ib, -t * (Ic + Ib)], axis=1)
    dC = np.stack([-cc, ce + cc, -ce], axis=1)  # d(t Ic)/d(vc, vb, ve)
    dB = np.stack([-bc, be + bc, -be], axis=1)
    J = np.zeros((k, 3, 3))
    J[:, 0, :], J[:, 1, :], J[:, 2, :] = dC, dB, -(dC + dB)
    return I, J


def transistor_terms(tab: TransistorTables, x: np.ndarray, n: int, *, jacobian: bool = True):
    """``(T, dT)``: the transistors' currents leaving each node (A, shape ``(len(x),)``, zero on
    branch rows) and their Jacobian (S, sparse csc ``(len(x), len(x))``; None when not asked)."""
    size = len(x)
    vg = np.concatenate([x[:n], [0.0]])
    T = np.zeros(size)
    rows, cols, vals = [], [], []
    for nodes, fn in ((tab.mos_nodes, mos_terminal_currents), (tab.bjt_nodes, bjt_terminal_currents)):
        if not len(nodes):
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            I, J = fn(tab, vg)
        keep = nodes >= 0
        np.add.at(T, nodes[keep], I[keep])
        if jacobian:
            m = nodes.shape[1]
            r = np.repeat(nodes[:, :, None], m, axis=2)
            c = np.repeat(nodes[:, None, :], m, axis=1)
            ok = (r >= 0) & (c >= 0)
            rows.append(r[ok]), cols.append(c[ok]), vals.append(J[ok])
    if len(tab.sub_nodes):  # substrate junctions: gmin each
        a, b = tab.sub_nodes[:, 0], tab.sub_nodes[:, 1]
        g = tab.bjt["gmin"]
        i = g * (vg[a] - vg[b])
        np.add.at(T, a[a >= 0], i[a >= 0])
        np.add.at(T, b[b >= 0], -i[b >= 0])
        if jacobian:
            for r, c, sgn in ((a, a, 1.0), (b, b, 1.0), (a, b, -1.0), (b, a, -1.0)):
                ok = (r >= 0) & (c >= 0)
                rows.append(r[ok]), cols.append(c[ok]), vals.append(sgn * g[ok])
    if not jacobian:
        return T, None
    if rows:
        dT = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(size, size))
    else:
        dT = sp.csc_matrix((size, size))
    return T, dT


def device_currents(tab: TransistorTables, x: np.ndarray, n: int) -> tuple:
    """``(mos, bjt)``: terminal currents into each device (A): shapes (k_m, 4) and (k_q, 3)."""
    vg = np.concatenate([x[:n], [0.0]])
    with np.errstate(over="ignore", invalid="ignore"):
        mos = mos_terminal_currents(tab, vg)[0] if len(tab.mos_pos) else np.zeros((0, 4))
        bjt = bjt_terminal_currents(tab, vg)[0] if len(tab.bjt_pos) else np.zeros((0, 3))
    return mos, bjt


def limit_fraction(tab: TransistorTables, x: np.ndarray, dx: np.ndarray, n: int) -> float:
    """The fraction (0, 1] of a Newton step ``dx`` that SPICE's limiting allows: ``fetlim`` on the
    gate voltage, ``limvds`` on the drain voltage and ``pnjlim`` on the bulk junction of every
    MOSFET (in its current mode), ``pnjlim`` on both junctions of every BJT; one factor for the
    whole step (the smallest)."""
    vg0 = np.concatenate([x[:n], [0.0]])
    vg1 = np.concatenate([x[:n] + dx[:n], [0.0]])
    frac = 1.0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if len(tab.mos_pos):
            p, t = tab.mos, tab.mos["t"]
            V0, V1 = _gather(vg0, tab.mos_nodes), _gather(vg1, tab.mos_nodes)
            vds0, vds1 = t * (V0[:, 0] - V0[:, 2]), t * (V1[:, 0] - V1[:, 2])
            fwd = vds0 >= 0
            # gate: vgs (normal mode) or vgd (inverse), against t * VTO
            vgo = np.where(fwd, t * (V0[:, 1] - V0[:, 2]), t * (V0[:, 1] - V0[:, 0]))
            vgn = np.where(fwd, t * (V1[:, 1] - V1[:, 2]), t * (V1[:, 1] - V1[:, 0]))
            frac = min(frac, _fraction(vgo, vgn, fetlim(vgn, vgo, p["von0"])))
            frac = min(frac, _fraction(np.abs(vds0), np.where(fwd, vds1, -vds1),
                                       limvds(np.where(fwd, vds1, -vds1), np.abs(vds0))))
            vbo = np.where(fwd, t * (V0[:, 3] - V0[:, 2]), t * (V0[:, 3] - V0[:, 0]))
            vbn = np.where(fwd, t * (V1[:, 3] - V1[:, 2]), t * (V1[:, 3] - V1[:, 0]))
            IS = np.maximum(p["IS"], 1e-300)
            frac = min(frac, _fraction(vbo, vbn, pnjlim(vbn, vbo, p["vt"], shockley_vcrit(IS, 1.0, p["vt"]))))
        if len(tab.bjt_pos):
            p, t = tab.bjt, tab.bjt["t"]
            V0, V1 = _gather(vg0, tab.bjt_nodes), _gather(vg1, tab.bjt_nodes)
            for a, N in ((2, p["NF"]), (0, p["NR"])):
                vo, vn = t * (V0[:, 1] - V0[:, a]), t * (V1[:, 1] - V1[:, a])
                nvt = N * p["vt"]
                frac = min(frac, _fraction(vo, vn, pnjlim(vn, vo, nvt, shockley_vcrit(p["IS"], N, p["vt"]))))
    return max(frac, 1e-6)


def connections(tab: TransistorTables) -> tuple:
    """``(a, b)`` node pairs (ground ``-1``) that fix relative voltages: each junction (MOSFET
    bulk-drain, bulk-source; BJT base-emitter, base-collector). A gate fixes nothing."""
    m, q, sub = tab.mos_nodes, tab.bjt_nodes, tab.sub_nodes
    a = np.concatenate([m[:, 3], m[:, 3], q[:, 1], q[:, 1], sub[:, 0]]).astype(np.int64)
    b = np.concatenate([m[:, 0], m[:, 2], q[:, 2], q[:, 0], sub[:, 1]]).astype(np.int64)
    return a, b


__all__ = ["MOS_TERMINALS", "BJT_TERMINALS", "TransistorTables", "transistor_tables", "mos1_channel", "mos1_ids",
           "mos1_junction", "gummel_poon", "fetlim", "limvds", "mos_terminal_currents", "bjt_terminal_currents",
           "transistor_terms", "device_currents", "limit_fraction", "connections"]

"""Random transistor circuits (MOSFETs and BJTs of both polarities, with resistors, Shockley diodes
and sources), shared by ``tests/test_transistors.py`` and the reports; and the operating region of
each transistor at a steady state.
"""
from __future__ import annotations

import numpy as np

from physgrad.circuit.elements import (Bjt, BjtModel, Circuit, DiodeModel, Mosfet, MosfetModel, Resistor,
                                       ShockleyDiode, VoltageSource)

MOS_REGIONS = ("cutoff", "linear", "saturation")
BJT_REGIONS = ("cutoff", "active", "saturation", "reverse")


def random_transistor_circuit(rng: np.random.Generator, n_mos: int = 3, n_bjt: int = 2, n_nodes: int = 6,
                              diodes: bool = True) -> Circuit:
    """A random DC circuit: supplies ``vdd`` (1-5 V) and ``vss`` (-3-0 V), an input source, ``n_nodes``
    internal nodes each tied by a resistor (1-100 kOhm) to an earlier node or a supply, extra random
    resistors, MOSFETs (random polarity, VTO, KP, LAMBDA, GAMMA, PHI, W/L; bulk at the matching supply
    or the source) and BJTs (random polarity, IS, BF, BR, NF, NR, VAF) on random nodes, and a
    Shockley diode or two. No junction sits directly between two sources (ngspice then "solves"
    with currents of 1e80 A)."""
    vdd, vss = float(rng.uniform(1, 5)), float(-rng.uniform(0, 3))
    els = [VoltageSource("vdd", "dd", "0", vdd), VoltageSource("vss", "ss", "0", vss),
           VoltageSource("vin", "in", "0", float(rng.uniform(vss, vdd)))]
    fixed = ["dd", "ss", "in", "0"]
    nodes = [f"n{k}" for k in range(n_nodes)]
    pool = list(fixed)
    for k, nd in enumerate(nodes):
        els.append(Resistor(f"rt{k}", nd, str(rng.choice(pool)), float(1.0 / rng.uniform(1e3, 1e5))))
        pool.append(nd)
    for k in range(n_nodes // 2):
        a, b = rng.choice(pool, 2, replace=False)
        els.append(Resistor(f"rx{k}", str(a), str(b), float(1.0 / rng.uniform(1e3, 1e5))))
    for k in range(n_mos):
        pol = "nmos" if rng.random() < 0.5 else "pmos"
        sign = 1.0 if pol == "nmos" else -1.0
        model = MosfetModel(f"mm{k}", pol, VTO=sign * float(rng.uniform(0.2, 1.0)), KP=float(rng.uniform(2e-5, 2e-4)),
                            LAMBDA=float(rng.uniform(0, 0.1)), GAMMA=float(rng.uniform(0, 0.6)),
                            PHI=float(rng.uniform(0.5, 0.8)))
        d, g, s = (str(x) for x in rng.choice(nodes + fixed, 3, replace=False))
        if d in fixed and s in fixed:  # a bulk junction could sit forward across two sources
            d = str(rng.choice(nodes))
        if d == s or d == g:
            continue
        b = s if rng.random() < 0.3 else ("ss" if pol == "nmos" else "dd")
        els.append(Mosfet(f"m{k}", d, g, s, b, model, W=float(rng.uniform(1e-6, 2e-5)), L=float(rng.uniform(1e-6, 5e-6))))
    for k in range(n_bjt):
        pol = "npn" if rng.random() < 0.5 else "pnp"
        model = BjtModel(f"qm{k}", pol, IS=float(10 ** rng.uniform(-16, -13)), BF=float(rng.uniform(20, 300)),
                         BR=float(rng.uniform(0.5, 5)), NF=float(rng.uniform(1, 1.3)), NR=float(rng.uniform(1, 1.3)),
                         VAF=float(rng.uniform(20, 200)) if rng.random() < 0.7 else np.inf)
        bb = str(rng.choice(nodes))  # the base internal: no junction directly across two sources
        c, e = (str(x) for x in rng.choice([x for x in nodes + fixed if x != bb], 2, replace=False))
        els.append(Bjt(f"q{k}", c, bb, e, model))
    if diodes:
        dm = DiodeModel("dm", IS=1e-14, N=1.2)
        for k in range(int(rng.integers(1, 3))):
            a = str(rng.choice(nodes))
            c = str(rng.choice([x for x in nodes + fixed if x != a]))
            if rng.random() < 0.5:
                a, c = c, a
            els.append(ShockleyDiode(f"d{k}", str(a), str(c), dm))
    return Circuit(tuple(els), "random transistor circuit")


def mos_region(el: Mosfet, v: dict) -> str:
    """``cutoff``, ``linear`` or ``saturation`` (with ``-inverse`` when drain and source swap) of a
    MOSFET at node voltages ``v`` (V; ground ``0``), by the level-1 law."""
    t = el.model.sign
    vg = (lambda nd: 0.0 if nd == "0" else v[nd])
    vds = t * (vg(el.drain) - vg(el.source))
    inverse = vds < 0
    ref = el.drain if inverse else el.source
    vgs, vbs = t * (vg(el.gate) - vg(ref)), t * (vg(el.bulk) - vg(ref))
    sphi = np.sqrt(el.model.PHI)
    sarg = np.sqrt(el.model.PHI - vbs) if vbs <= 0 else max(0.0, sphi - vbs / (2 * sphi))
    vgst = vgs - (t * el.model.VTO + el.model.GAMMA * (sarg - sphi))
    region = "cutoff" if vgst <= 0 else ("saturation" if vgst <= abs(vds) else "linear")
    return region + ("-inverse" if inverse and region != "cutoff" else "")


def bjt_region(el: Bjt, v: dict, von: float = 0.5) -> str:
    """``cutoff``, ``active``, ``saturation`` or ``reverse`` by which junctions are forward biased
    beyond ``von`` (V)."""
    t = el.model.sign
    vg = (lambda nd: 0.0 if nd == "0" else v[nd])
    vbe, vbc = t * (vg(el.base) - vg(el.emitter)), t * (vg(el.base) - vg(el.collector))
    return {(False, False): "cutoff", (True, False): "active", (True, True): "saturation",
            (False, True): "reverse"}[(vbe > von, vbc > von)]

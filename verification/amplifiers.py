"""Circuits with controlled sources, shared by the tests and ``benchmarks/amplifiers.py``.

- :func:`amplifier` / :func:`kendall_chain`: bidirectional amplifiers as ngspice writes them (E + 0 V
  sense source + F) joining islands in a chain: energy-based, with known island weights.
- :func:`three_equilibria_cell`: the issue's cell with equilibria at -1, 0 and +1 V.
- :func:`random_controlled`: one-way VCVS and VCCS with ideal diodes (LCP enumeration checks).
- :func:`random_shockley_controlled`: Shockley diodes with every controlled source (ngspice fuzz).
- :func:`amplifier_chain`: random Shockley chains with bidirectional or one-way amplifiers, G and H.
- :func:`all_equilibria`: every solution of a circuit's diode LCP by enumerating its active sets.
"""
from __future__ import annotations

import itertools

import numpy as np

from physgrad.circuit.elements import (CCCS, CCVS, VCCS, VCVS, Circuit, DiodeModel, IdealDiode, Resistor,
                                       ShockleyDiode, VoltageSource)


def amplifier(k, inp, out_node, A, B, *, inverted_sense=False) -> list:
    """A bidirectional amplifier: E (gain ``A``) + 0 V sense source + F drawing ``B`` times the current
    delivered at the output from node ``inp`` (``B = 1/A``: Kendall et al.; ``B = A``: a transformer)."""
    mid = f"a{k}"
    if not inverted_sense:
        return [VCVS(f"e{k}", mid, "0", inp, "0", A), VoltageSource(f"vs{k}", mid, out_node, 0.0),
                CCCS(f"f{k}", inp, "0", f"vs{k}", B)]
    return [VCVS(f"e{k}", mid, "0", inp, "0", A), VoltageSource(f"vs{k}", out_node, mid, 0.0),
            CCCS(f"f{k}", "0", inp, f"vs{k}", B)]


def kendall_chain(gains=(4.0, -2.0), backward=None, shockley=True, ideal=True, vin=2.0) -> Circuit:
    """Islands ``x0 | x1 | ...`` joined by bidirectional amplifiers; Shockley and ideal diodes inside;
    the target on the last island."""
    backward = backward or [1.0 / A for A in gains]
    els = [VoltageSource("v1", "in", "0", vin), Resistor("r1", "in", "x0", 1e-3), Resistor("r2", "x0", "0", 5e-4)]
    model = DiodeModel("dm", IS=1e-12, N=1.5)
    for k, (A, B) in enumerate(zip(gains, backward), start=1):
        els += amplifier(k, f"x{k - 1}", f"y{k}", A, B)
        els += [Resistor(f"ra{k}", f"y{k}", f"x{k}", 5e-4), Resistor(f"rb{k}", f"x{k}", "0", 1e-3)]
        if shockley:
            els.append(ShockleyDiode(f"ds{k}", f"x{k}", "0", model))
        if ideal:
            els += [VoltageSource(f"vt{k}", f"t{k}", "0", 0.3), IdealDiode(f"di{k}", f"x{k}", f"t{k}", 0.1)]
    return Circuit(tuple(els), "kendall chain", targets=((f"x{len(gains)}", 0.05),))


def three_equilibria_cell() -> Circuit:
    """A node ``x`` with 1 S to ground and 1 S to the output of a VCVS of gain 3 driven by ``x``,
    clamped to [-1, 1] V by two ideal diodes. KCL at ``x``: ``x + (x - 3x) + i_1 - i_2 = 0``, i.e.
    ``-x + i_1 - i_2 = 0``: equilibria ``x = 0`` (both off), ``x = 1`` (``i_1 = 1 A``) and ``x = -1``
    (``i_2 = 1 A``)."""
    return Circuit((Resistor("r1", "x", "0", 1.0), Resistor("r2", "x", "y", 1.0), VCVS("e1", "y", "0", "x", "0", 3.0),
                    VoltageSource("vp", "p", "0", 1.0), VoltageSource("vm", "m", "0", -1.0),
                    IdealDiode("d1", "x", "p"), IdealDiode("d2", "m", "x")))


def random_controlled(rng, n=8, m=12, n_ctrl=3, gain=3.0) -> Circuit:
    """A resistor tree with leaks to ground, two sources, ``n_ctrl`` one-way VCVS or VCCS and ``m``
    ideal diodes between random nodes (some to ground)."""
    nodes = [f"n{i}" for i in range(n)]
    els = [VoltageSource("v1", nodes[0], "0", rng.uniform(-2, 2)), VoltageSource("v2", nodes[1], "0", rng.uniform(-2, 2))]
    for i in range(2, n):
        els.append(Resistor(f"rt{i}", nodes[i], nodes[int(rng.integers(0, i))], rng.uniform(0.5, 2)))
        els.append(Resistor(f"rg{i}", nodes[i], "0", rng.uniform(0.1, 1)))
    for c in range(n_ctrl):
        a, b = rng.choice(np.arange(2, n), 2, replace=False)
        if rng.integers(0, 2) == 0:
            els.append(VCVS(f"e{c}", f"o{c}", "0", nodes[a], "0", rng.uniform(-gain, gain)))
            els.append(Resistor(f"ro{c}", f"o{c}", nodes[b], rng.uniform(0.5, 2)))
        else:
            els.append(VCCS(f"g{c}", nodes[b], "0", nodes[a], "0", rng.uniform(-1, 1)))
    for d in range(m):
        a, b = rng.choice(np.arange(0, n), 2, replace=False)
        other = "0" if rng.random() < 0.3 else nodes[b]
        els.append(IdealDiode(f"d{d}", nodes[a], other, rng.uniform(0, 1)))
    return Circuit(tuple(els))


def random_shockley_controlled(rng, n=10, nd=6, nc=4, gain=10.0) -> Circuit:
    """Random resistor trees with Shockley diodes and every kind of controlled source (one-way E, G,
    F and H sensing 0 V sources), gains up to ``gain``: positive feedback included."""
    nodes = [f"n{i}" for i in range(n)]
    m = DiodeModel("dm", IS=10 ** rng.uniform(-15, -9), N=rng.uniform(0.8, 2))
    els = [VoltageSource("v1", nodes[0], "0", rng.uniform(-5, 5))]
    for i in range(1, n):
        els.append(Resistor(f"rt{i}", nodes[i], nodes[int(rng.integers(0, i))], 10 ** rng.uniform(-4, -1)))
        els.append(Resistor(f"rg{i}", nodes[i], "0", 10 ** rng.uniform(-5, -2)))
    for c in range(nc):
        a, b = rng.choice(np.arange(1, n), 2, replace=False)
        k = rng.integers(0, 4)
        if k == 0:
            els += [VCVS(f"e{c}", f"o{c}", "0", nodes[a], "0", rng.uniform(-gain, gain)),
                    Resistor(f"ro{c}", f"o{c}", nodes[b], 10 ** rng.uniform(-4, -2))]
        elif k == 1:
            els.append(VCCS(f"g{c}", nodes[b], "0", nodes[a], "0", rng.uniform(-1e-3, 1e-3)))
        else:
            els += [VoltageSource(f"vs{c}", nodes[a], f"s{c}", 0.0), Resistor(f"rs{c}", f"s{c}", "0", 1e-3)]
            if k == 2:
                els.append(CCCS(f"f{c}", nodes[b], "0", f"vs{c}", rng.uniform(-2, 2)))
            else:
                els += [CCVS(f"h{c}", f"q{c}", "0", f"vs{c}", rng.uniform(-100, 100)),
                        Resistor(f"rq{c}", f"q{c}", nodes[b], 1e-3)]
    for d in range(nd):
        a, b = rng.choice(np.arange(0, n), 2, replace=False)
        els.append(ShockleyDiode(f"d{d}", nodes[a], "0" if rng.random() < 0.4 else nodes[b], m))
    return Circuit(tuple(els))


def amplifier_chain(rng, *, backward=True, shockley=True, extra=False, stages=2) -> Circuit:
    """A chain of islands joined by E + 0 V sense source (+ F with ``B = 1/A`` when ``backward``),
    Shockley diodes in the islands, optionally a G and an H element; target on the last island."""
    m = DiodeModel("dm", IS=10 ** rng.uniform(-15, -12), N=rng.uniform(1.0, 2.0))
    els = [VoltageSource("v1", "in", "0", rng.uniform(0.5, 2.0)), Resistor("r1", "in", "x0", rng.uniform(1e-4, 1e-2)),
           Resistor("r2", "x0", "0", rng.uniform(1e-4, 1e-2))]
    for k in range(1, stages + 1):
        A = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 3.0)
        els += [VCVS(f"e{k}", f"a{k}", "0", f"x{k - 1}", "0", A), VoltageSource(f"vs{k}", f"a{k}", f"y{k}", 0.0)]
        if backward:
            els.append(CCCS(f"f{k}", f"x{k - 1}", "0", f"vs{k}", 1.0 / A))
        els += [Resistor(f"ra{k}", f"y{k}", f"x{k}", rng.uniform(1e-4, 1e-2)),
                Resistor(f"rb{k}", f"x{k}", "0", rng.uniform(1e-4, 1e-2))]
        if shockley:
            els.append(ShockleyDiode(f"d{k}", f"x{k}", "0", m) if rng.random() < 0.5 else
                       ShockleyDiode(f"d{k}", "0", f"x{k}", m))
    if extra:
        els += [VCCS("g1", "x1", "0", "x0", "0", rng.uniform(-1e-3, 1e-3)), CCVS("h1", "h", "0", "vs1", 50.0),
                Resistor("rh", "h", "x2", 1e-3)]
    return Circuit(tuple(els), targets=((f"x{stages}", 0.1),))


def all_equilibria(mp, tol: float = 1e-9) -> list:
    """Node voltages of every solution of the diode LCP of an MNA problem (piecewise-linear circuit),
    by enumerating the ``2^m`` active sets with dense solves; ``tol`` (A, V) on the signs."""
    K = mp.K.toarray()
    N = mp.N.toarray()
    out = []
    for bits in itertools.product([False, True], repeat=mp.m):
        W = np.array(bits, bool)
        idx = np.flatnonzero(W)
        A = np.block([[K, N[:, idx]], [N[:, idx].T, np.zeros((idx.size, idx.size))]])
        rhs = np.concatenate([mp.b, mp.d[idx]])
        try:
            sol = np.linalg.solve(A, rhs)
        except np.linalg.LinAlgError:
            continue
        if not np.allclose(A @ sol, rhs, atol=1e-10):
            continue
        x, lam = sol[:mp.size], sol[mp.size:]
        if np.all(lam >= -tol) and np.all(mp.slack(x)[~W] >= -tol):
            out.append(x[:mp.n])
    return out

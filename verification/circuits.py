"""Circuits with hand-derived steady states, and the seeded random circuit generators.

Shared by the tests and the verification suite: each :class:`KnownCircuit` carries the voltages
(V) and currents (A, first node -> second node) derived by hand in its ``derivation``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import DisjointSet

from physgrad.circuit.elements import (
    Circuit,
    CurrentSource,
    DiodeModel,
    IdealDiode,
    Resistor,
    ShockleyDiode,
    VoltageSource,
)


@dataclass(frozen=True)
class KnownCircuit:
    name: str
    circuit: Circuit
    voltages: dict
    currents: dict
    derivation: str


def _R(name, a, b, ohms):
    return Resistor(name, a, b, 1.0 / ohms)


def known_circuits() -> tuple:
    """The analytic catalogue (ideal-diode and linear circuits)."""
    cases = []
    cases.append(KnownCircuit(
        "divider",
        Circuit((VoltageSource("v1", "in", "0", 10.0), _R("r1", "in", "out", 1e3), _R("r2", "out", "0", 3e3))),
        {"in": 10.0, "out": 7.5}, {"r1": 2.5e-3, "r2": 2.5e-3, "v1": -2.5e-3},
        "I = 10 V / 4 kohm = 2.5 mA; v_out = 3 kohm * I. The source current flows from + through the source "
        "to -, i.e. -2.5 mA.",
    ))
    cases.append(KnownCircuit(
        "ladder",
        Circuit((VoltageSource("v1", "in", "0", 1.0), _R("r1", "in", "a", 1e3), _R("r2", "a", "0", 2e3),
                 _R("r3", "a", "b", 1e3), _R("r4", "b", "0", 1e3))),
        {"in": 1.0, "a": 0.5, "b": 0.25}, {"r1": 0.5e-3, "r2": 0.25e-3, "r3": 0.25e-3, "r4": 0.25e-3},
        "r3+r4 = 2k in parallel with r2 = 2k gives 1k; with r1 the source sees 2k: I = 0.5 mA, v_a = 0.5 V, "
        "v_b = v_a / 2.",
    ))
    cases.append(KnownCircuit(
        "clipper_on",
        Circuit((VoltageSource("v1", "in", "0", 5.0), _R("r1", "in", "out", 1e3),
                 IdealDiode("d1", "out", "0", 0.7), _R("r2", "out", "0", 7e3))),
        {"out": 0.7}, {"r1": 4.3e-3, "r2": 1e-4, "d1": 4.2e-3},
        "Without the diode v_out = 5 * 7/8 = 4.375 V > 0.7 V, so it conducts: v_out = 0.7 V, "
        "I(r1) = 4.3 mA, I(r2) = 0.1 mA, I(d1) = 4.2 mA.",
    ))
    cases.append(KnownCircuit(
        "clipper_off",
        Circuit((VoltageSource("v1", "in", "0", 0.5), _R("r1", "in", "out", 1e3),
                 IdealDiode("d1", "out", "0", 0.7), _R("r2", "out", "0", 1e3))),
        {"out": 0.25}, {"d1": 0.0, "r1": 0.25e-3},
        "v_out = 0.25 V < 0.7 V: the diode blocks, a plain divider.",
    ))
    for v in (2.0, -2.0):
        cases.append(KnownCircuit(
            f"half_wave_{'pos' if v > 0 else 'neg'}",
            Circuit((VoltageSource("v1", "in", "0", v), IdealDiode("d1", "in", "out"), _R("rl", "out", "0", 1e3))),
            {"out": max(v, 0.0)}, {"d1": max(v, 0.0) / 1e3, "rl": max(v, 0.0) / 1e3},
            "An ideal diode (vth = 0) passes the positive half-wave to the load and blocks the negative one.",
        ))
    cases.append(KnownCircuit(
        "current_source",
        Circuit((CurrentSource("i1", "0", "a", 1e-3), _R("r1", "a", "0", 2e3))),
        {"a": 2.0}, {"i1": 1e-3, "r1": 1e-3},
        "1 mA flows from ground through the source into a, then through 2 kohm: v_a = 2 V.",
    ))
    cases.append(KnownCircuit(
        "diodes_in_series",
        Circuit((VoltageSource("v1", "in", "0", 5.0), IdealDiode("d1", "in", "m", 0.3), _R("rm", "m", "0", 1e6),
                 IdealDiode("d2", "m", "out", 0.4), _R("rl", "out", "0", 1e3))),
        {"m": 4.7, "out": 4.3}, {"d2": 4.3e-3, "d1": 4.3e-3 + 4.7e-6, "rl": 4.3e-3, "rm": 4.7e-6},
        "Both diodes conduct: v_m = 5 - 0.3, v_out = v_m - 0.4; I(rl) = 4.3 mA, the 1 Mohm bleed at m "
        "draws 4.7 uA through d1 as well.",
    ))
    for v in (5.0, -5.0):
        on, off = ("d1", "d2") if v > 0 else ("d2", "d1")
        cases.append(KnownCircuit(
            f"anti_parallel_{'pos' if v > 0 else 'neg'}",
            Circuit((VoltageSource("v1", "in", "0", v), _R("r1", "in", "a", 1e3),
                     IdealDiode("d1", "a", "0", 0.6), IdealDiode("d2", "0", "a", 0.6))),
            {"a": 0.6 * np.sign(v)}, {on: 4.4e-3, off: 0.0, "r1": np.sign(v) * 4.4e-3},
            "Anti-parallel diodes clamp a at +-0.6 V; the forward one carries (|v| - 0.6) / 1k = 4.4 mA.",
        ))
    cases.append(KnownCircuit(
        "floating_source_supernode",
        Circuit((VoltageSource("v1", "a", "b", 2.0), _R("r1", "a", "0", 1e3), _R("r2", "b", "0", 1e3))),
        {"a": 1.0, "b": -1.0}, {"r1": 1e-3, "r2": -1e-3, "v1": -1e-3},
        "A source between two free nodes: by symmetry v_a = -v_b = 1 V; 1 mA leaves a through r1 and "
        "returns into b through r2, so the source carries 1 mA from b to a.",
    ))
    return tuple(cases)


def random_circuit(
    n_nodes: int,
    seed: int,
    *,
    extra_edges: float = 1.0,
    n_vsources: int = 3,
    n_isources: int = 2,
    diode_fraction: float = 0.3,
    shockley: bool = False,
    floating_source: bool = True,
) -> Circuit:
    """A seeded random connected circuit with sources and diodes that is always feasible.

    Conductances are uniform in [1e-4, 1e-2] S; sources from ground, one source between two free
    nodes (a supernode) when ``floating_source``; diodes (ideal with thresholds in [0, 0.5] V, or
    Shockley with IS in [1e-15, 1e-12] A and N in [1, 2]) between random node pairs, free-free and
    to fixed nodes.
    Each ideal diode is oriented so that a reference state satisfies it: the solution of the
    diode-free circuit with extra random currents injected at every node (same sources, so
    Kirchhoff's voltage law holds). That proves the constraints feasible while the diode-free
    optimum violates many of them, so the catalogue exercises conducting and blocking diodes.
    """
    rng = np.random.default_rng(seed)
    nodes = [f"n{i}" for i in range(1, n_nodes + 1)]
    els = []
    k = 0
    for i in range(1, n_nodes):  # random spanning tree, rooted at ground through n1
        j = int(rng.integers(0, i))
        els.append(Resistor(f"r{k}", nodes[i], nodes[j], rng.uniform(1e-4, 1e-2)))
        k += 1
    els.append(Resistor(f"r{k}", nodes[0], "0", rng.uniform(1e-4, 1e-2)))
    k += 1
    for _ in range(int(extra_edges * n_nodes)):
        a, b = rng.choice(n_nodes + 1, size=2, replace=False)
        na = "0" if a == n_nodes else nodes[a]
        nb = "0" if b == n_nodes else nodes[b]
        els.append(Resistor(f"r{k}", na, nb, rng.uniform(1e-4, 1e-2)))
        k += 1
    perm = rng.permutation(n_nodes)
    used = set()
    for s in range(min(n_vsources, n_nodes - 2)):
        node = nodes[perm[s]]
        used.add(node)
        els.append(VoltageSource(f"v{s}", node, "0", rng.uniform(-5, 5)))
    if floating_source and n_nodes >= n_vsources + 4:
        a, b = nodes[perm[n_vsources]], nodes[perm[n_vsources + 1]]
        els.append(VoltageSource("vf", a, b, rng.uniform(-1, 1)))
    for s in range(n_isources):
        a = nodes[int(rng.integers(n_nodes))]
        els.append(CurrentSource(f"i{s}", "0", a, rng.uniform(-1e-3, 1e-3)))
    base = Circuit(tuple(els))
    n_d = int(diode_fraction * n_nodes)
    if shockley:
        for s in range(n_d):
            a, b = rng.choice(n_nodes + 1, size=2, replace=False)
            na = "0" if a == n_nodes else nodes[a]
            nb = "0" if b == n_nodes else nodes[b]
            model = DiodeModel(f"m{s}", IS=10 ** rng.uniform(-15, -12), N=rng.uniform(1, 2))
            els.append(ShockleyDiode(f"d{s}", na, nb, model))
        return Circuit(tuple(els))
    from physgrad.circuit.solve import solve

    kicks = [CurrentSource(f"ikick{i}", "0", n, rng.uniform(-2e-2, 2e-2)) for i, n in enumerate(nodes)]
    v = np.concatenate([solve(base.with_elements(*kicks), "linear").voltages, [0.0]])
    index = {n: i for i, n in enumerate(base.nodes)}
    index["0"] = len(base.nodes)
    for s in range(n_d):
        a, b = rng.choice(n_nodes + 1, size=2, replace=False)
        na = "0" if a == n_nodes else nodes[a]
        nb = "0" if b == n_nodes else nodes[b]
        vth = float(rng.choice([0.0, rng.uniform(0, 0.5)]))
        if v[index[na]] - v[index[nb]] > vth:
            na, nb = nb, na
        els.append(IdealDiode(f"d{s}", na, nb, vth))
    return Circuit(tuple(els))


# Shockley diodes of the benchmark's shockley-N circuits: a small-signal silicon diode, ngspice's law.
SHOCKLEY_MODEL = DiodeModel("dsi", IS=1e-14, N=1.0)


def random_diode_graph(n_nodes: int, seed: int = 0) -> Circuit:
    """Random connected resistor / ideal-diode graph with ``n_nodes`` non-ground nodes.

    Conductances (S) uniform in [1e-3, 1e-2]; ``max(2, n/50)`` voltage sources to ground (-5..5 V),
    ``max(1, n/100)`` current sources (-1..1 mA), ``n/4`` ideal diodes (vth 0) between nodes no source
    drives, so the circuit is always feasible (all free nodes at 0 V satisfy every diode). The diodes
    form a forest (ground included): a loop of ideal diodes that all conduct at 0 V has unique
    voltages but non-unique currents. The solve benchmark's "uniform" circuits.
    """
    rng = np.random.default_rng(seed)
    names = ["0"] + [f"n{i}" for i in range(1, n_nodes + 1)]
    els = []
    parents = [int(rng.integers(0, i)) for i in range(1, n_nodes + 1)]
    g_tree = rng.uniform(1e-3, 1e-2, n_nodes)
    for i in range(1, n_nodes + 1):
        els.append(Resistor(f"rt{i}", names[i], names[parents[i - 1]], float(g_tree[i - 1])))
    extra = rng.integers(0, n_nodes + 1, size=(n_nodes, 2))
    g_extra = rng.uniform(1e-3, 1e-2, n_nodes)
    for k, (a, b) in enumerate(extra):
        if a != b:
            els.append(Resistor(f"rx{k}", names[a], names[b], float(g_extra[k])))
    n_v, n_i, n_d = max(2, n_nodes // 50), max(1, n_nodes // 100), n_nodes // 4
    driven = rng.choice(np.arange(1, n_nodes + 1), size=n_v, replace=False)
    for k, node in enumerate(driven):
        els.append(VoltageSource(f"v{k}", names[node], "0", float(rng.uniform(-5, 5))))
    for k in range(n_i):
        node = int(rng.integers(1, n_nodes + 1))
        els.append(CurrentSource(f"i{k}", "0", names[node], float(rng.uniform(-1e-3, 1e-3))))
    free = np.setdiff1d(np.arange(0, n_nodes + 1), driven)  # includes ground
    forest = DisjointSet(range(n_nodes + 1))
    k = 0
    while k < n_d:
        a, b = rng.choice(free, size=2, replace=False)
        if forest.merge(int(a), int(b)):  # no diode loops (see the docstring)
            els.append(IdealDiode(f"d{k}", names[a], names[b], 0.0))
            k += 1
    return Circuit(tuple(els), f"random resistor-diode graph, {n_nodes} nodes, seed {seed}")


def _kruskal_tree(n: int, edges: np.ndarray, rng) -> np.ndarray:
    """Mask of a random spanning forest of ``edges`` (shape ``(m, 2)``) over nodes ``0..n-1``."""
    forest = DisjointSet(range(n))
    keep = np.zeros(len(edges), bool)
    for k in rng.permutation(len(edges)):
        keep[k] = forest.merge(int(edges[k, 0]), int(edges[k, 1]))
    return keep


def random_grid_graph(n_nodes: int, seed: int = 0, shockley: bool = False) -> Circuit:
    """Random resistor / ideal-diode graph with local connections (``n_nodes`` nodes).

    Nodes sit on a ``w x w`` lattice (``w = ceil(sqrt(n_nodes))``, row-major, the last row
    partial). Resistors (1e-3..1e-2 S): a random spanning tree of the lattice edges plus each
    other lattice edge with probability 1/2, and ``n_nodes // 20`` resistors to ground. Ideal
    diodes (``n_nodes // 4``, vth = 0, random orientation) on unused lattice edges or to ground,
    never touching a source-driven node; sources as in :func:`random_diode_graph`. Like a laid-out
    circuit, the graph has small separators, so sparse factorisations stay cheap (unlike the
    expander-like :func:`random_diode_graph`). ``shockley=True`` puts :data:`SHOCKLEY_MODEL`
    Shockley diodes where the ideal ones would be (the same physics in physgrad and ngspice).
    """
    rng = np.random.default_rng(seed)
    w = math.isqrt(n_nodes - 1) + 1
    idx = np.arange(n_nodes)
    c = idx % w
    right = idx[(c + 1 < w) & (idx + 1 < n_nodes)]
    down = idx[idx + w < n_nodes]
    edges = np.concatenate([np.stack([right, right + 1], 1), np.stack([down, down + w], 1)])
    tree = _kruskal_tree(n_nodes, edges, rng)
    extra = (~tree) & (rng.random(len(edges)) < 0.5)
    res_edges = edges[tree | extra]
    unused = edges[~(tree | extra)]
    names = [f"n{i + 1}" for i in range(n_nodes)]
    g = rng.uniform(1e-3, 1e-2, len(res_edges))
    els = [Resistor(f"r{k}", names[a], names[b], float(g[k])) for k, (a, b) in enumerate(res_edges)]
    to_ground = rng.choice(n_nodes, size=max(1, n_nodes // 20), replace=False)
    g0 = rng.uniform(1e-3, 1e-2, len(to_ground))
    els += [Resistor(f"rg{k}", names[i], "0", float(g0[k])) for k, i in enumerate(to_ground)]
    n_v, n_i, n_d = max(2, n_nodes // 50), max(1, n_nodes // 100), n_nodes // 4
    driven = rng.choice(n_nodes, size=n_v, replace=False)
    for k, i in enumerate(driven):
        els.append(VoltageSource(f"v{k}", names[i], "0", float(rng.uniform(-5, 5))))
    for k in range(n_i):
        els.append(CurrentSource(f"i{k}", "0", names[int(rng.integers(n_nodes))],
                                 float(rng.uniform(-1e-3, 1e-3))))
    is_driven = np.zeros(n_nodes, bool)
    is_driven[driven] = True
    candidates = [(names[a], names[b]) for a, b in unused if not (is_driven[a] or is_driven[b])]
    candidates += [(names[i], "0") for i in np.flatnonzero(~is_driven)]
    forest = DisjointSet(range(n_nodes + 1))
    node_id = {name: i for i, name in enumerate(names)}
    node_id["0"] = n_nodes
    k = 0
    for j in rng.permutation(len(candidates)):
        if k == n_d:
            break
        a, b = candidates[j]
        if not forest.merge(node_id[a], node_id[b]):
            continue  # no diode loops (see the docstring)
        if rng.random() < 0.5:
            a, b = b, a
        els.append(ShockleyDiode(f"d{k}", a, b, SHOCKLEY_MODEL) if shockley
                   else IdealDiode(f"d{k}", a, b, 0.0))
        k += 1
    kind = "Shockley" if shockley else "ideal"
    return Circuit(tuple(els), f"random grid resistor / {kind}-diode graph, {n_nodes} nodes, seed {seed}")


def training_graph(n_nodes: int, seed: int = 0, n_inputs: int = 5, n_outputs: int = 3, shockley: bool = False):
    """A :func:`random_grid_graph` set up for training: ``n_inputs`` input voltage sources
    (``vin0..``, 0 V, each on its own node joined by a resistor to a random lattice node) and
    ``n_outputs`` output nodes (random nodes no source drives). Returns ``(circuit, inputs, outputs)``.

    The issue-9 benchmark graphs (``benchmarks/graphs.py``) and the verification suite's
    random training circuits.
    """
    c = random_grid_graph(n_nodes, seed, shockley=shockley)
    rng = np.random.default_rng(seed + 7919)
    nodes = c.nodes
    els = list(c.elements)
    for k in range(n_inputs):
        els.append(VoltageSource(f"vin{k}", f"in{k}", "0", 0.0))
        els.append(Resistor(f"rin{k}", f"in{k}", nodes[int(rng.integers(len(nodes)))],
                            float(rng.uniform(1e-3, 1e-2))))
    c = c.replace_elements(els)
    driven = {e.pos for e in c.elements if isinstance(e, VoltageSource)}
    candidates = [x for x in nodes if x not in driven]
    outputs = tuple(candidates[int(i)] for i in rng.choice(len(candidates), n_outputs, replace=False))
    return c, tuple(f"vin{k}" for k in range(n_inputs)), outputs


NMOS_EDGES_DECK = """* three NMOS edges whose gates sit on sources vg1..vg3 (the twin-network edge in small)
vin in 0 0.5
vdd dd 0 2
vg1 g1 0 2.0
vg2 g2 0 2.0
vg3 g3 0 2.0
m1 dd g1 out 0 nch W=10u L=1u
m2 in g2 out 0 nch W=10u L=1u
m3 out g3 0 0 nch W=10u L=1u
r1 out 0 100k
.model nch NMOS(LEVEL=1 VTO=0.7 KP=2e-5 LAMBDA=0.02)
.end
"""
"""A small transistor network for ``physgrad fit --method exact --trainable 'vg*'`` (the gate voltages
trained): input source ``vin``, output node ``out``; with :data:`NMOS_EDGES_CSV` the fuzz baselines of
``benchmarks/fuzz_options.py`` and ``benchmarks/fuzz_runs.py``."""
NMOS_EDGES_CSV = "vin,out\n0.0,0.3\n0.25,0.35\n0.5,0.45\n0.75,0.6\n1.0,0.8\n"
"""Five samples ``vin, out`` (V) for :data:`NMOS_EDGES_DECK`."""

"""Catalogue of verification cases: analytic circuits and seeded random graphs with ideal diodes.

Each :class:`Case` bundles an energy, parameters, inputs, targets and a minimizer, so that pytest
and ``python -m verification`` check the same things. Random circuits are built from a seed only.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np

from physgrad.circuit.elements import Circuit, IdealDiode, Resistor, VoltageSource
from physgrad.energies.co_content import CoContentEnergy
from physgrad.minimizers.co_content import CoContentMinimizer
from verification.analytic import LinearSolveMinimizer, chain, chain_cost_and_gradient


@dataclass(frozen=True, eq=False)
class Case:
    """One verification case.

    Attributes
    ----------
    name : str
    energy, theta, x, y, minimizer
        As in every learning rule (``docs/interfaces.md``).
    known_cost, known_grad : optional closed-form cost (V^2) and gradient (V^2/S).
    circuit : Circuit, optional (circuit cases)
    has_step : bool
        The minimizer has a pure ``step`` (TBP, RBP apply).
    solvers : tuple of str, optional
        The circuit core's solvers to compare with (default: the suite's ``VerifyConfig.solvers``).
    tags : tuple of str (``analytic``, ``random``, ``diodes``, ``quick``; ``read_noise``: also run the
        read-noise family, :func:`verification.checks.check_read_noise`)
    beta_scale : float
        Conductance scale (S) of the case: the suite's beta grid is multiplied by it.
    """

    name: str
    energy: Any
    theta: Any
    x: Any
    y: Any
    minimizer: Any
    known_cost: Optional[float] = None
    known_grad: Optional[np.ndarray] = None
    circuit: Optional[Circuit] = None
    has_step: bool = True
    tags: tuple = ()
    beta_scale: float = 1.0
    solvers: Optional[tuple] = None


def analytic_chain(n: int = 3) -> Case:
    """Series chain input -> n nodes -> ground, closed-form gradient (:mod:`verification.analytic`)."""
    g = np.linspace(0.5, 2.0, n + 1)
    c, grad = chain_cost_and_gradient(g, 1.0, 0.1)
    return Case(f"chain{n}", chain(n), g, np.array([[1.0]]), np.array([0.1]), LinearSolveMinimizer(),
                c, grad, tags=("analytic", "quick", "read_noise"))


def divider_circuit() -> Case:
    """Voltage divider built with the circuit core: V1=1 V, R1 (1 S) in, R2 (0.5 S) to ground; target 0.1 V."""
    circ = Circuit((VoltageSource("v1", "in", "0", 1.0), Resistor("r1", "in", "out", 1.0),
                    Resistor("r2", "out", "0", 0.5)), "divider", targets={"out": 0.1})
    c, grad = chain_cost_and_gradient(np.array([1.0, 0.5]), 1.0, 0.1)
    return _circuit_case("divider", circ, known=(c, grad), tags=("analytic", "circuit", "quick"))


def kink_circuit() -> Circuit:
    """A circuit built to sit exactly on a diode kink: without D1 node ``a`` would be at 0.3 V, which
    is exactly D1's limit (0.2 V source + 0.1 V threshold), so D1 is active with zero current."""
    return Circuit((VoltageSource("v1", "in", "0", 1.0), Resistor("r1", "in", "a", 1.0), Resistor("r4", "a", "0", 2.0),
                    IdealDiode("d1", "a", "b", 0.1), VoltageSource("v2", "b", "0", 0.2),
                    Resistor("r2", "a", "out", 0.5), Resistor("r3", "out", "0", 1.0)), "kink", targets={"out": 0.2})


def kink_case() -> Case:
    """The kink circuit: the suite must flag it (skip with the reason), not fail or pass it blindly."""
    return _circuit_case("kink", kink_circuit(), tags=("circuit", "diodes", "kink", "quick"))


def _circuit_case(name, circ, known=(None, None), tags=()):
    energy = CoContentEnergy(circ)
    return Case(name, energy, energy.theta0(), None, energy.targets(), CoContentMinimizer(), known[0], known[1],
                circuit=circ, tags=tags)


def random_learning_circuit(seed: int, n_free: int = 6, n_sources: int = 2, n_diodes: int = 3, n_extra: int = 4,
                            n_outputs: int = 2) -> Circuit:
    """A seeded random resistive graph with ideal diodes.

    ``n_free`` internal nodes ``n1..``; ``n_sources`` voltage sources ``s1..`` to ground (-1..1 V);
    a random spanning tree of resistors over nodes and sources plus ``n_extra`` random resistors
    (0.2-2 S); ideal diodes (threshold 0-0.3 V) between random internal nodes or from an internal
    node to a source node; ``n_outputs`` target nodes with targets in -0.5..0.5 V.
    """
    rng = np.random.default_rng(seed)
    nodes = [f"n{i + 1}" for i in range(n_free)]
    srcs = [f"s{i + 1}" for i in range(n_sources)]
    els = [VoltageSource(f"v{i + 1}", s, "0", float(rng.uniform(-1, 1))) for i, s in enumerate(srcs)]
    allnodes = nodes + srcs + ["0"]
    order = list(rng.permutation(nodes))
    pairs = set()
    k = 0
    for i, a in enumerate(order):  # spanning tree: each node to an earlier node, a source or ground
        pool = order[:i] + srcs + ["0"]
        b = pool[rng.integers(len(pool))]
        pairs.add(tuple(sorted((a, b))))
    while len(pairs) < n_free + n_extra:
        a = nodes[rng.integers(n_free)]
        b = allnodes[rng.integers(len(allnodes))]
        if a != b:
            pairs.add(tuple(sorted((a, b))))
    for a, b in sorted(pairs):
        k += 1
        els.append(Resistor(f"r{k}", a, b, float(rng.uniform(0.2, 2.0))))
    outs = rng.choice(nodes, size=n_outputs, replace=False)
    inner = [n for n in nodes if n not in outs]  # diodes avoid the outputs so that clamping them stays feasible
    for j in range(n_diodes):
        a = inner[rng.integers(len(inner))]
        pool = [n for n in inner + srcs if n != a]
        b = pool[rng.integers(len(pool))]
        if rng.random() < 0.5:
            a, b = b, a
        els.append(IdealDiode(f"d{j + 1}", a, b, float(rng.uniform(0.0, 0.3))))
    targets = {str(o): float(rng.uniform(-0.5, 0.5)) for o in outs}
    return Circuit(tuple(els), f"random seed {seed}", targets=targets)


def feasible_random_circuit(seed: int, **kw) -> Circuit:
    """:func:`random_learning_circuit` for seeds ``1000 * seed + k``, ``k = 0, 1, ...``: the first whose diodes
    admit a solution (a chain of diodes between two sources can be forced forward)."""
    for k in range(100):
        circ = random_learning_circuit(1000 * seed + k, **kw)
        energy = CoContentEnergy(circ)
        if CoContentMinimizer().minimize(energy, energy.theta0(), None).converged:
            return circ
    raise RuntimeError(f"no feasible random circuit for seed {seed}")


def random_case(seed: int, **kw) -> Case:
    return _circuit_case(f"random{seed}", feasible_random_circuit(seed, **kw), tags=("random", "diodes", "circuit"))


def drn_case(seed: int = 0, hidden=(4,), n_inputs: int = 3, n_outputs: int = 2, batch: int = 2) -> Case:
    """A small deep resistive network (layered mode, block coordinate descent), seeded.

    Weights ``max(0, U(-1, 1) * 1.5 / sqrt(fan_in))`` plus ``U(0, 0.05)`` S so that no unit sits exactly
    on a diode kink, biases ``N(0, 0.1)`` A, inputs ``U(0, 1)``, targets ``U(-0.3, 0.3)`` V. The
    weights are drawn here (float64), not by the energy's ``init_theta``, so that the catalogue does
    not move when the training initialisation does.
    """
    from physgrad.energies.layered import DeepResistive
    from physgrad.minimizers.block import BlockCoordinateDescent

    energy = DeepResistive(n_inputs=n_inputs, hidden=tuple(hidden), n_outputs=n_outputs)
    rng = np.random.default_rng(seed)
    sizes = energy.sizes
    th = tuple(np.maximum(rng.uniform(-1, 1, size=(a, b)) * (1.5 / np.sqrt(a)), 0.0)
               for a, b in zip(sizes[:-1], sizes[1:])) + tuple(np.zeros(n) for n in sizes[1:])
    theta = tuple(t + (0.05 * rng.uniform(size=t.shape) if t.ndim == 2 else 0.1 * rng.normal(size=t.shape)) for t in th)
    x = rng.uniform(size=(batch, n_inputs))
    y = rng.uniform(-0.3, 0.3, size=(batch, n_outputs))
    # tol 1e-14 V: EP differences at beta = 1e-3 need equilibria far more accurate than the 1e-10 default
    minimizer = BlockCoordinateDescent(sweeps=20000, tol=1e-14)
    return Case(f"drn{seed}", energy, theta, x, y, minimizer, tags=("layered", "diodes", "quick"))


def shockley_case() -> Case:
    """A diode network with Shockley diodes (IS = 1e-9 A, N = 1) and mA-scale conductances: the exact
    gradient differentiates one Newton step; no coordinate step (TBP/RBP skipped)."""
    from physgrad.circuit.elements import DiodeModel, ShockleyDiode

    m = DiodeModel("dm", IS=1e-9, N=1.0)
    circ = Circuit((VoltageSource("v1", "in", "0", 1.0), Resistor("r1", "in", "a", 1e-3),
                    ShockleyDiode("d1", "a", "out", m), Resistor("r2", "out", "0", 1e-3), Resistor("r3", "a", "0", 2e-3),
                    ShockleyDiode("d2", "out", "b", m), VoltageSource("v2", "b", "0", 0.3),
                    Resistor("r4", "out", "c", 1e-3), Resistor("r5", "c", "0", 1e-3)), "shockley", targets={"c": 0.05})
    energy = CoContentEnergy(circ)
    return Case("shockley", energy, energy.theta0(), None, energy.targets(), CoContentMinimizer(), circuit=circ,
                has_step=False, tags=("circuit", "shockley", "quick"), solvers=("ngspice",), beta_scale=1e-3)


def catalogue(quick: bool = True) -> list:
    """The cases of the verification suite (``quick``: the subset that runs in seconds)."""
    cases = [analytic_chain(3), divider_circuit()]
    seeds = range(4) if quick else range(12)
    cases += [random_case(s) for s in seeds]
    cases += [kink_case(), shockley_case()]
    cases += [drn_case(0)] if quick else [drn_case(s) for s in range(3)] + [drn_case(10, hidden=(4, 4))]
    if not quick:
        cases += [random_case(100 + s, n_free=10, n_sources=3, n_diodes=6, n_extra=8, n_outputs=2) for s in range(4)]
        # the read-noise family also on a diode circuit and a layered network (tens of seconds)
        cases = [replace(c, tags=c.tags + ("read_noise",)) if c.name in ("random0", "drn0") else c for c in cases]
    return cases

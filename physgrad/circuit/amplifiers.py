r"""Amplifiers and the co-content: islands, island weights and the equivalent circuit.

**Islands.** Cut a circuit at its controlled sources: the islands are the connected components of
its nodes joined by the two-terminal elements (resistors, diodes, independent sources), ground
left out (it belongs to every island). Each two-terminal element lies in one island ``I`` and has
its co-content there; ``E_I`` is the island's total.

**Bidirectional amplifiers.** A VCVS ``E`` (gain ``A``) whose output current is sensed by a
voltage source in series with it (the only other element at the node between them) and a CCCS
``F`` across ``E``'s control port controlled by that source is a bidirectional amplifier from the
island ``P`` of its input to the island ``Q`` of its output. With ``i_out`` the current ``E``
delivers into ``Q`` and the CCCS drawing ``B * i_out`` out of the input node (``B`` is read from the
netlist's signs and orientations: Kendall et al.'s amplifier has ``B = 1/A``, an ideal transformer
``B = A``), the steady state is a stationary point of

.. math:: \sum_I c_I E_I(v) \quad\text{s.t.}\quad v_{\rm out} = A\, v_{\rm in},\qquad
          c_Q = c_P\,\frac{B}{A}

(stationarity at ``v_in``: ``c_P dE_P/dv_in + c_Q A dE_Q/dv_out = 0``, which is KCL
``dE_P/dv_in + B i_out = 0`` exactly when ``c_Q A = c_P B``). Positive weights exist iff every
amplifier has ``B/A > 0`` and every cycle of the island graph has a product of ``B/A`` equal to 1
(always, for a chain or a tree of islands). Then the weighted co-content is strictly convex: the
steady state is its unique minimiser, and equilibrium propagation stays exact with the factor
``c_I / c_L`` on the local rule of a resistor in island ``I`` (``L`` the outputs' island).
Any other controlled source (a one-way VCVS, a G or H element, positive feedback ``B/A < 0``, a
gain-mismatched loop) leaves the circuit without weights: it is solved by the MNA routes only
(:mod:`physgrad.circuit.solvers.lcp`, :mod:`physgrad.circuit.solvers.mnanewton`).

**The equivalent circuit.** When, moreover, every amplifier's ports are referenced to ground (one
non-ground node on each side) and every cycle has a product of gains ``A`` equal to 1, scale each
island's voltages: ``v = a_I w`` with ``a_Q = A a_P`` (and ``a = 1``, ``c = 1`` on a reference
island). In ``w`` each amplifier is a 0 V wire from its input to its output node and ``sum_I c_I
E_I`` is the co-content of an ordinary circuit: conductances ``c_I a_I^2 g``, voltage sources and
diode thresholds divided by ``a_I``, current sources times ``c_I a_I``, Shockley laws with ``IS``
times ``c_I |a_I|``, ``N`` divided by ``|a_I|`` and ``gmin`` times ``c_I a_I^2`` (diodes reversed
where ``a_I < 0``). Every co-content route (active set, QP, coordinate descent, Newton, the EP
estimators, the exact gradient) then runs unchanged on it; the answer maps back by ``v = a w`` and
each conductance's gradient by ``dC/dg = c_I a_I^2 dC/dg'``.

References
----------
J. Kendall, R. Pantone, K. Manickavasagam, Y. Bengio, B. Scellier, "Training end-to-end analog
neural networks with equilibrium propagation", arXiv:2006.01981 (2020).
W. Millar, Phil. Mag. 42 (1951) (the co-content).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from physgrad.circuit.elements import (CCCS, CCVS, GROUND, VCCS, VCVS, Circuit, CurrentSource, DiodeModel,
                                       IdealDiode, Resistor, ShockleyDiode, VoltageSource)
from physgrad.types import PhysgradError

TWO_TERMINAL = (Resistor, IdealDiode, ShockleyDiode, VoltageSource, CurrentSource)
RATIO_RTOL = 1e-9
"""Relative tolerance (dimensionless) on a cycle's product of ``B/A`` (or of ``A``) being 1."""


@dataclass(frozen=True)
class Amplifier:
    """A bidirectional amplifier found in a circuit.

    Attributes
    ----------
    vcvs, sense, cccs : str
        Its E element, the voltage source sensing E's output current, the F element across E's input.
    source, target : int
        Island of the input (``P``) and of the output (``Q``).
    forward, backward : float
        ``A`` (E's gain, V/V) and ``B`` (the CCCS draws ``B`` times the delivered current from the input).
    """

    vcvs: str
    sense: str
    cccs: str
    source: int
    target: int
    forward: float
    backward: float

    @property
    def ratio(self) -> float:
        """``c_Q / c_P = B / A``."""
        return self.backward / self.forward


@dataclass(frozen=True, eq=False)
class IslandAnalysis:
    """Islands, amplifiers and (when they exist) island weights and voltage scales of a circuit.

    Attributes
    ----------
    circuit : Circuit
    island : dict, node name -> island index (ground excluded)
    islands : tuple of tuples of node names
    amplifiers : tuple of Amplifier
    weights : (n_islands,) array or None
        ``c_I`` (dimensionless, > 0; 1 on each component's reference island) when energy-based.
    reason : str
        Why the circuit is not energy-based ("" when it is).
    scales : (n_islands,) array or None
        ``a_I`` (V/V) when the equivalent circuit exists.
    why_not_equivalent : str
        Why there is no equivalent circuit ("" when there is).
    """

    circuit: Circuit
    island: dict
    islands: tuple
    amplifiers: tuple
    weights: Optional[np.ndarray]
    reason: str
    scales: Optional[np.ndarray]
    why_not_equivalent: str
    reference: tuple

    @property
    def energy_based(self) -> bool:
        return self.weights is not None

    @property
    def has_equivalent(self) -> bool:
        return self.scales is not None

    def element_island(self, el) -> int:
        """Island of a two-terminal element (or of a controlled source's output port); -1 if none."""
        for n in el.nodes[:2]:
            if n != GROUND:
                return self.island[n]
        return -1

    def element_weights(self) -> np.ndarray:
        """``c_I`` of every element's island (``circuit.elements`` order; 1 for controlled sources)."""
        if self.weights is None:
            raise PhysgradError(f"the circuit is not energy-based: {self.reason}")
        out = np.ones(len(self.circuit.elements))
        for k, el in enumerate(self.circuit.elements):
            if isinstance(el, TWO_TERMINAL):
                out[k] = self.weights[self.element_island(el)]
        return out

    def node_scales(self) -> np.ndarray:
        """``a_I`` of every node (``circuit.nodes`` order)."""
        if self.scales is None:
            raise PhysgradError(f"the circuit has no equivalent circuit: {self.why_not_equivalent}")
        return np.array([self.scales[self.island[n]] for n in self.circuit.nodes])

    def describe(self) -> str:
        """One line: islands, amplifiers, weights or the reason there are none."""
        head = f"{len(self.islands)} island(s), {len(self.amplifiers)} bidirectional amplifier(s)"
        if self.weights is None:
            return f"{head}; not energy-based: {self.reason}"
        w = ", ".join(f"{c:.6g}" for c in self.weights)
        return f"{head}; energy-based, island weights c = [{w}]"

    def equivalent(self) -> "EquivalentCircuit":
        """The ordinary circuit whose co-content is ``sum_I c_I E_I`` in the scaled voltages (module
        docstring); :class:`PhysgradError` naming why when there is none."""
        if self.weights is None:
            raise PhysgradError(f"the circuit is not energy-based ({self.reason}); it has no co-content to minimise")
        if self.scales is None:
            raise PhysgradError(f"the circuit is energy-based but has no equivalent circuit: {self.why_not_equivalent}")
        return _equivalent(self)


@dataclass(frozen=True, eq=False)
class EquivalentCircuit:
    """An energy-based amplifier circuit as an ordinary circuit (module docstring).

    Attributes
    ----------
    circuit : Circuit
        The equivalent circuit (same resistor names and order; its resistors' conductances are
        ``c a^2 g``); its node voltages are ``w = v / a``.
    analysis : IslandAnalysis
    conductance_scale : (n_resistors,) array
        ``c_I a_I^2`` of each resistor (the order of ``circuit.resistors``): ``g' = scale * g`` and
        ``dC/dg = scale * dC/dg'``.
    diode_scale : (n_ideal_diodes,) array
        ``c_I |a_I|``: a physical ideal-diode current is the equivalent one divided by it.
    """

    circuit: Circuit
    analysis: IslandAnalysis
    conductance_scale: np.ndarray
    diode_scale: np.ndarray

    @property
    def trainable_scale(self) -> np.ndarray:
        """``c_I a_I^2`` of each trainable resistor (``circuit.trainable_names`` order): an estimate
        of ``dC/dg'`` on the equivalent circuit (any estimator of :mod:`physgrad.learning` on
        ``CoContentEnergy(self.circuit)``) times this is the physical ``dC/dg``."""
        pos = {r.name: k for k, r in enumerate(self.circuit.resistors)}
        return np.array([self.conductance_scale[pos[nm]] for nm in self.circuit.trainable_names])

    def voltages(self, w_by_node: dict) -> np.ndarray:
        """Physical node voltages (V, the original circuit's node order) from the equivalent
        circuit's ``{node: w}``."""
        a = self.analysis
        return np.array([a.scales[a.island[n]] * w_by_node[n] for n in a.circuit.nodes])


def _islands(circuit: Circuit):
    nodes = list(circuit.nodes)
    idx = {n: i for i, n in enumerate(nodes)}
    parent = list(range(len(nodes)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for el in circuit.elements:
        if isinstance(el, TWO_TERMINAL):
            a, b = el.nodes
            if a != GROUND and b != GROUND:
                ra, rb = find(idx[a]), find(idx[b])
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    roots, island = {}, {}
    for n in nodes:
        island[n] = roots.setdefault(find(idx[n]), len(roots))
    groups = [[] for _ in roots]
    for n in nodes:
        groups[island[n]].append(n)
    return island, tuple(tuple(g) for g in groups)


def _terminals(circuit: Circuit) -> dict:
    """Current-carrying terminals at each node: ``node -> [(element, terminal index)]`` (control
    ports of E and G carry no current and are left out)."""
    out: dict = {}
    for el in circuit.elements:
        for k, n in enumerate(el.nodes[:2]):
            out.setdefault(n, []).append((el, k))
    return out


def _find_amplifiers(circuit: Circuit, island: dict):
    """Pair each VCVS with its sense source and CCCS; returns ``(amplifiers, unpaired names + why)``."""
    terms = _terminals(circuit)
    by_control: dict = {}
    for el in circuit.of_type(CCCS):
        by_control.setdefault(el.control, []).append(el)
    used_f, used_v = set(), set()
    amps, loose = [], []
    for e in circuit.of_type(VCVS):
        found = None
        for k, n in enumerate((e.pos, e.neg)):
            if n == GROUND or found:
                continue
            at = terms.get(n, [])
            if len(at) != 2:
                continue
            (o, ko), = [t for t in at if t[0] is not e]
            if not isinstance(o, VoltageSource) or o.name in used_v:
                continue
            # KCL at n: i_E leaves n through E when n = E.pos (k = 0); the sense current i_vs leaves
            # n through the source when n is its pos (ko = 0):  (+-)i_E + (+-)i_vs = 0
            s = -1.0 if (k == 0) == (ko == 0) else 1.0  # i_vs = s * i_E
            for f in by_control.get(o.name, []):
                if f.name in used_f:
                    continue
                if (f.pos, f.neg) == (e.cpos, e.cneg):
                    orient = 1.0
                elif (f.pos, f.neg) == (e.cneg, e.cpos):
                    orient = -1.0
                else:
                    continue
                found = (o, f, s, orient)
                break
        if found is None:
            loose.append(f"{e.name} is a one-way VCVS (no CCCS across its input sensing its output current through a "
                         "voltage source in series with it)")
            continue
        o, f, s, orient = found
        used_v.add(o.name)
        used_f.add(f.name)
        # F's current from cpos to cneg is orient * f.gain * i_vs = orient * s * f.gain * i_E; the
        # current delivered into the output island at E.pos is -i_E, so B = -orient * s * f.gain.
        B = -orient * s * f.gain
        src = [island[n] for n in (e.cpos, e.cneg) if n != GROUND]
        dst = [island[n] for n in (e.pos, e.neg) if n != GROUND]
        amps.append((Amplifier(e.name, o.name, f.name, src[0], dst[0], e.gain, B), src, dst))
    for f in circuit.of_type(CCCS):
        if f.name not in used_f:
            loose.append(f"{f.name} is a CCCS that is not the backward half of a bidirectional amplifier")
    for el in circuit.of_type(VCCS):
        loose.append(f"{el.name} is a VCCS (G)")
    for el in circuit.of_type(CCVS):
        loose.append(f"{el.name} is a CCVS (H)")
    return amps, loose


def _propagate(n_islands: int, edges, start_order):
    """Multiplicative labels ``x_Q = r x_P`` over the edges ``(P, Q, r, what)``; 1 on the first island
    of each component in ``start_order``. Returns ``(x, None, roots)`` or ``(None, message, roots)`` for
    a cycle whose product is not 1 (``roots``: the islands labelled 1)."""
    adj = [[] for _ in range(n_islands)]
    for P, Q, r, what in edges:
        adj[P].append((Q, r, what))
        adj[Q].append((P, 1.0 / r, what))
    x = np.full(n_islands, np.nan)
    via = {}
    order = list(start_order) + [i for i in range(n_islands) if i not in start_order]
    refs = []
    for s in order:
        if not np.isnan(x[s]):
            continue
        x[s] = 1.0
        refs.append(s)
        stack = [s]
        while stack:
            P = stack.pop()
            for Q, r, what in adj[P]:
                want = x[P] * r
                if np.isnan(x[Q]):
                    x[Q] = want
                    via[Q] = what
                    stack.append(Q)
                elif abs(x[Q] - want) > RATIO_RTOL * max(abs(x[Q]), abs(want)):
                    return None, (f"a loop of islands through {what} has a product of {want / x[Q]:.9g}, not 1"), refs
    return x, None, refs


def analyze(circuit: Circuit, reference: Sequence[str] = ()) -> IslandAnalysis:
    """Islands, bidirectional amplifiers, weights and scales of ``circuit`` (module docstring).

    Parameters
    ----------
    circuit : Circuit
    reference : node names, optional
        Nodes whose islands get ``c = 1`` and ``a = 1`` (default: the circuit's target nodes); each
        connected component of the island graph without one is normalised on its first island.
    """
    if not isinstance(circuit, Circuit):
        raise PhysgradError(f"expected a physgrad Circuit, got {type(circuit).__name__}")
    island, islands = _islands(circuit)
    found, loose = _find_amplifiers(circuit, island)
    amps = tuple(a for a, _, _ in found)
    ref_nodes = list(reference) or [t[0] for t in circuit.targets]
    start = []
    for nd in ref_nodes:
        if nd in island and island[nd] not in start:
            start.append(island[nd])
    weights = None
    edges_c, edges_a, why_a = [], [], []
    for amp, src, dst in found:
        for other in src[1:]:
            edges_c.append((src[0], other, 1.0, f"{amp.vcvs}'s input port"))
        for other in dst[1:]:
            edges_c.append((dst[0], other, 1.0, f"{amp.vcvs}'s output port"))
        if amp.forward != 0:
            edges_c.append((amp.source, amp.target, amp.ratio, f"{amp.vcvs} (B/A = {amp.ratio:.6g})"))
        if amp.forward == 0:
            loose.append(f"{amp.vcvs} has gain 0")
        elif amp.ratio <= 0:
            loose.append(f"{amp.vcvs}/{amp.cccs}: B/A = {amp.ratio:.6g} <= 0 (positive feedback: the island weight "
                         "would not be positive)")
        e = circuit.element(amp.vcvs)
        out_nodes = [(n, sgn) for n, sgn in ((e.pos, 1.0), (e.neg, -1.0)) if n != GROUND]
        in_nodes = [(n, sgn) for n, sgn in ((e.cpos, 1.0), (e.cneg, -1.0)) if n != GROUND]
        if len(out_nodes) != 1 or len(in_nodes) != 1:
            why_a.append(f"{amp.vcvs}'s ports are not both referenced to ground")
        elif amp.forward != 0:
            edges_a.append((island[in_nodes[0][0]], island[out_nodes[0][0]], amp.forward * out_nodes[0][1]
                            * in_nodes[0][1], f"{amp.vcvs} (gain {amp.forward:.6g})"))
    reason = "; ".join(loose[:3]) + (f"; and {len(loose) - 3} more controlled sources alike" if len(loose) > 3 else "")
    refs = tuple(start)
    if not loose:
        weights, msg, refs = _propagate(len(islands), edges_c, start)
        if weights is None:
            reason = f"mismatched amplifier loop: {msg}"
        elif np.any(weights <= 0):
            weights, reason = None, "an island weight would not be positive"
    scales, why = None, "; ".join(why_a)
    if weights is not None and not why_a:
        scales, msg, _ = _propagate(len(islands), edges_a, start)
        if scales is None:
            why = f"the voltage gains around a loop of islands do not multiply to 1 ({msg})"
    elif weights is None:
        why = f"not energy-based: {reason}"
    return IslandAnalysis(circuit, island, islands, amps, weights, reason, scales, why, tuple(refs))


def _unique_name(base: str, taken: set) -> str:
    name, k = base, 1
    while name in taken:
        name, k = f"{base}.{k}", k + 1
    taken.add(name)
    return name


def _equivalent(an: IslandAnalysis) -> EquivalentCircuit:
    circuit = an.circuit
    c, a = an.weights, an.scales
    taken = {el.name for el in circuit.elements}
    drop = {amp.cccs for amp in an.amplifiers}
    models: dict = {}
    els, gscale, dscale = [], [], []
    for el in circuit.elements:
        if el.name in drop:
            continue
        if isinstance(el, VCVS):  # an amplifier (energy-based: every VCVS is one): a 0 V wire in w
            out = el.pos if el.pos != GROUND else el.neg
            inp = el.cpos if el.cpos != GROUND else el.cneg
            els.append(VoltageSource(_unique_name("v." + el.name, taken), inp, out, 0.0))
            continue
        I = an.element_island(el)
        cI, aI = c[I], a[I]
        if isinstance(el, Resistor):
            gscale.append(cI * aI * aI)
            els.append(Resistor(el.name, el.n1, el.n2, cI * aI * aI * el.conductance))
        elif isinstance(el, VoltageSource):
            els.append(VoltageSource(el.name, el.pos, el.neg, el.value / aI))
        elif isinstance(el, CurrentSource):
            els.append(CurrentSource(el.name, el.pos, el.neg, el.value * cI * aI))
        elif isinstance(el, IdealDiode):
            dscale.append(cI * abs(aI))
            an_, ca_ = (el.anode, el.cathode) if aI > 0 else (el.cathode, el.anode)
            els.append(IdealDiode(el.name, an_, ca_, el.vth / abs(aI)))
        elif isinstance(el, ShockleyDiode):
            key = (el.model, I)
            if key not in models:
                m = el.model
                name = m.name if (cI == 1.0 and abs(aI) == 1.0) else _unique_name(f"{m.name}.i{I}", taken)
                models[key] = DiodeModel(name, IS=m.IS * cI * abs(aI), N=m.N / abs(aI), gmin=m.gmin * cI * aI * aI,
                                         vt=m.vt)
            an_, ca_ = (el.anode, el.cathode) if aI > 0 else (el.cathode, el.anode)
            els.append(ShockleyDiode(el.name, an_, ca_, models[key]))
        else:  # pragma: no cover - every other controlled source makes the circuit non-energy-based
            raise PhysgradError(f"unexpected element {el.name} in an energy-based circuit")
    targets = []
    for node, y in circuit.targets:
        targets.append((node, y / a[an.island[node]]))
    eq = Circuit(tuple(els), circuit.title, tuple(targets), circuit.trainable)
    return EquivalentCircuit(eq, an, np.array(gscale), np.array(dscale))

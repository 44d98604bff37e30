r"""Power of every element of a solved circuit, and Tellegen's balance.

Each element carries its current :math:`I_e` (A) from its first node through it to its second node
(the convention of :mod:`physgrad.circuit.elements`), so the power it absorbs is

.. math:: P_e = (v_{a(e)} - v_{b(e)})\, I_e \quad \text{(W)},

positive for an element that dissipates (resistors, diodes) and negative for a source that delivers
power (independent V and I sources, and the E, F, G, H controlled sources, whose control ports draw
no current). Tellegen's theorem: whenever the currents satisfy Kirchhoff's current law and the
voltages are node potentials, :math:`\sum_e P_e = 0`, i.e. the power the sources deliver equals
what the passive elements dissipate. :func:`tellegen` measures how far a solution is from that.

A nudged solution (``beta != 0`` or an output clamp) has extra currents into the output nodes that
belong to no element; :func:`tellegen` then does not balance and is not meant to.

References
----------
B. D. H. Tellegen, "A general network theorem, with applications", Philips Research Reports 7,
259-269 (1952).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from physgrad.circuit.elements import Circuit, IdealDiode, Resistor, ShockleyDiode, VoltageSource
from physgrad.types import PhysgradError

PASSIVE_TYPES = (Resistor, IdealDiode, ShockleyDiode)


def element_powers(circuit: Circuit, voltages: np.ndarray, currents: np.ndarray) -> np.ndarray:
    r"""Power absorbed by each element, :math:`P_e = (v_a - v_b) I_e` (W).

    Parameters
    ----------
    circuit : Circuit
    voltages : (n_nodes,) V, in the order of ``circuit.nodes`` (ground is 0 V)
    currents : (n_elements,) A, in the order of ``circuit.elements``, first node -> second node

    Returns
    -------
    (n_elements,) W: positive absorbed (dissipated), negative delivered.
    """
    v = np.asarray(voltages, dtype=float)
    i = np.asarray(currents, dtype=float)
    vg = np.concatenate([v, [0.0]])  # index -1 (ground) reads the appended 0 V
    a, b = circuit.terminals
    with np.errstate(over="ignore", invalid="ignore"):
        return (vg[a] - vg[b]) * i


def is_passive(element) -> bool:
    """True for resistors and diodes (they only dissipate); False for every kind of source."""
    return isinstance(element, PASSIVE_TYPES)


@dataclass(frozen=True)
class PowerBalance:
    r"""Tellegen's balance of a solution.

    Attributes
    ----------
    dissipated : float, W -- sum of :math:`P_e` over resistors and diodes (>= 0)
    delivered : float, W -- minus the sum of :math:`P_e` over all sources (V, I, E, F, G, H)
    residual : float, W -- :math:`\sum_e P_e` (0 by Tellegen's theorem)
    scale : float, W -- :math:`\sum_e |P_e|` (what ``residual`` is relative to)
    """

    dissipated: float
    delivered: float
    residual: float
    scale: float

    @property
    def relative(self) -> float:
        """``|residual| / scale`` (0 for a circuit that carries no power)."""
        if not (np.isfinite(self.residual) and np.isfinite(self.scale)):
            return float("nan")
        return abs(self.residual) / self.scale if self.scale > 0 else 0.0


def tellegen(circuit: Circuit, powers: np.ndarray) -> PowerBalance:
    """Split element powers (W, from :func:`element_powers`) into dissipated and delivered."""
    p = np.asarray(powers, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        return _balance(circuit, p)


def _balance(circuit: Circuit, p: np.ndarray) -> PowerBalance:
    passive = np.array([is_passive(el) for el in circuit.elements], dtype=bool)
    return PowerBalance(dissipated=float(np.sum(p[passive])), delivered=float(-np.sum(p[~passive])),
                        residual=float(np.sum(p)), scale=float(np.sum(np.abs(p))))


# --- Energy of a settling phase (RC model) ---------------------------------------------------------
NODE_CAPACITANCE = 1e-12
"""F: default capacitance of each circuit node to ground (a crossbar line of ~100 cells, or a pad)."""
SETTLING_MULTIPLE = 5.0
"""Settling time in RC time constants: ``exp(-5)`` (0.7 %) of the initial error is left."""


def settling_time(node_capacitance: float, g_min: float, k: float = SETTLING_MULTIPLE) -> float:
    r"""Settling time (s) of an RC network: :math:`t_s = k\, C_\mathrm{node} / G_\mathrm{min}`.

    ``g_min`` (S) is the smallest total conductance from any free node to the rest of the circuit
    (the slowest node's time constant is :math:`C/G`; for a uniform ``C`` the exact slowest mode is
    :math:`C/\lambda_\mathrm{min}(L)` of the free-node conductance matrix ``L``, which is at most
    this). ``k`` time constants leave :math:`e^{-k}` of the initial error.
    """
    c, g, k = float(node_capacitance), float(g_min), float(k)
    if not (np.isfinite(c) and c >= 0 and np.isfinite(g) and g > 0 and np.isfinite(k) and k > 0):
        raise PhysgradError(f"settling_time needs C >= 0 F, G > 0 S and k > 0; got C={c!r}, G={g!r}, k={k!r}")
    return k * c / g


def phase_energy(power, t_settle: float, node_capacitance: float = 0.0, voltages=()):
    r"""Energy (J) a circuit draws from its sources during one phase of length ``t_settle`` (s).

    ``power`` a float (W) and ``voltages`` ``(n_nodes,)`` give a float; ``power`` of shape
    ``(batch,)`` and ``voltages`` ``(batch, n_nodes)`` give ``(batch,)`` J (one phase per example).

    :math:`E = P\, t_s + C \sum_n v_n^2`: the equilibrium dissipation ``power`` (W) taken over the
    whole window (the model ignores that the power differs while the state is still settling), plus charging each node's
    capacitance ``C`` (F) from 0 to ``v_n`` (V): the source delivers :math:`C v^2`, half stored and
    half dissipated in the charging path, and the stored half is dissipated when the node is
    discharged before the next phase.
    """
    v = np.asarray(voltages, dtype=float)
    p = np.asarray(power, dtype=float)
    if p.ndim == 0:
        return float(p) * float(t_settle) + float(node_capacitance) * float(np.sum(v * v))
    # batched: power (batch,) W, voltages (batch, n_nodes) V -> (batch,) J
    return p * float(t_settle) + float(node_capacitance) * np.sum(v * v, axis=-1)


def min_node_conductance(circuit: Circuit) -> float:
    """Smallest total resistor conductance (S) at any node that settles: a non-ground node with a
    resistor of ``G > 0``, not held by a voltage source to ground (a source sets such a node at once;
    its line charges through the source, counted by :func:`phase_energy`'s ``C v^2``). Diodes and
    sources are not counted; 0 when no node qualifies."""
    held = set()
    for el in circuit.elements:
        if isinstance(el, VoltageSource) and "0" in (el.pos, el.neg):
            held.add(el.neg if el.pos == "0" else el.pos)
    total: dict = {}
    for el in circuit.elements:
        if isinstance(el, Resistor) and el.conductance > 0:
            for n in el.nodes:
                total[n] = total.get(n, 0.0) + el.conductance
    for n in held | {"0"}:
        total.pop(n, None)
    return min(total.values()) if total else 0.0


def settling_phase(solution, node_capacitance: float = NODE_CAPACITANCE, k: float = SETTLING_MULTIPLE) -> dict:
    """The energy of one settling phase of a solved circuit as a JSON-able dict (strict: non-finite
    values become None): ``node_capacitance_F``, ``settling_multiple``, ``g_min_S``,
    ``settling_time_s`` (:func:`settling_time` with :func:`min_node_conductance`) and ``energy_J`` (:func:`phase_energy` with the
    solution's dissipated power and node voltages). ``None`` time and energy without resistors."""
    c = float(node_capacitance)
    if not (np.isfinite(c) and c >= 0):
        raise PhysgradError(f"node capacitance must be a finite number >= 0 F, got {node_capacitance!r}")
    if not (np.isfinite(float(k)) and float(k) > 0):
        raise PhysgradError(f"settling multiple must be a finite number > 0, got {k!r}")
    g = min_node_conductance(solution.circuit)
    t = settling_time(c, g, k) if g > 0 else None
    e = phase_energy(solution.power, t, c, solution.voltages) if t is not None else None

    def fin(x):
        return x if x is not None and np.isfinite(x) else None

    return {"node_capacitance_F": c, "settling_multiple": float(k), "g_min_S": g, "settling_time_s": fin(t),
            "energy_J": fin(e)}


def passive_power(circuit: Circuit, voltages, conductances=None, diode_currents=None) -> np.ndarray:
    r"""Power (W) the resistors and diodes dissipate at node voltages ``voltages``, per example.

    The same :math:`P_e = (v_a - v_b) I_e` as :func:`element_powers`, summed over the passive
    elements, with each current from its element law instead of a solution's current list:

    .. math:: P = \sum_{r} g_r (v_{a_r} - v_{b_r})^2 + \sum_{s} v_s I_\mathrm{shk}(v_s)
              + \sum_{d} v_d\, i_d,

    resistors ``r`` (conductance ``g_r``, S), Shockley diodes ``s`` (:func:`physgrad.circuit.diode.shockley_current`)
    and ideal diodes ``d`` with their currents ``i_d`` (A; the KKT duals a solver returns, which
    are 0 where a diode blocks, so a conducting diode adds :math:`v_\mathrm{th} i_d`). At an
    equilibrium (KCL holds) this equals the power the sources deliver (Tellegen's theorem).

    Parameters
    ----------
    circuit : Circuit
    voltages : (n_nodes,) or (batch, n_nodes) V, in the order of ``circuit.nodes``
    conductances : (n_resistors,) S, optional
        Every resistor's conductance in the order of ``circuit.arrays.g`` (default: the circuit's).
    diode_currents : (batch, n_ideal_diodes) A, optional
        Required when the circuit has ideal diodes with a threshold ``vth > 0``; with ``vth = 0``
        only (a conducting diode has 0 V across it) their power is 0 and may be left out.

    Returns
    -------
    (batch,) W (a float for 1-D ``voltages``)
    """
    from physgrad.circuit.diode import shockley_current

    v = np.asarray(voltages, dtype=float)
    one = v.ndim == 1
    v = np.atleast_2d(v)
    arr = circuit.arrays
    ext = np.concatenate([v, np.zeros((len(v), 1))], axis=1)  # ground (index -1) at 0 V

    def across(a, b):
        return ext[:, a] - ext[:, b]

    g = arr.g if conductances is None else np.asarray(conductances, dtype=float)
    dv = across(arr.res_a, arr.res_b)
    p = np.sum(g * dv * dv, axis=1)
    if len(arr.shk_a):
        vs = across(arr.shk_a, arr.shk_b)
        p = p + np.sum(vs * shockley_current(vs, arr.shk_IS, arr.shk_N, arr.shk_vt, arr.shk_gmin), axis=1)
    if len(arr.dio_a):
        if diode_currents is None:
            if any(getattr(circuit.elements[int(k)], "vth", 0.0) > 0 for k in arr.dio_pos):
                raise PhysgradError("ideal diodes with a threshold dissipate vth * i: pass their diode_currents")
        else:
            i = np.asarray(diode_currents, dtype=float).reshape(len(v), len(arr.dio_a))
            p = p + np.sum(across(arr.dio_a, arr.dio_b) * i, axis=1)
    return float(p[0]) if one else p

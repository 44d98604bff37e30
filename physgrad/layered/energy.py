r"""Physical energy of layered training (``physgrad train --energy``), per example.

Two physical pictures, one per kind of preset (:func:`energy_kind`):

**Deep resistive networks** (``drn-*``). The network *is* a resistive circuit: input sources at
:math:`s_0 = g\,(x, -x)` (V), conductances :math:`W_k \ge 0` (S) between the nodes of consecutive
layers, ideal diodes to ground in the hidden layers, bias current sources. At an equilibrium the
power it dissipates is the Joule heat of its conductances,

.. math:: P = \sum_{k=1}^{L} \sum_{i,j} W_k[i,j]\, (A_k s_{k-1,i} - s_{k,j})^2 \quad \text{(W)},

(:func:`drn_power`; ``A_k`` the amplifier gains, 1 without amplifiers; the diodes to ground have
0 V across them when they conduct, so they dissipate nothing; the sources deliver :math:`P`,
Tellegen's theorem, and are not counted twice). The nudged phase adds EP's nudge as the physics it
stands for: a conductance ``beta`` (S) from each output to a source at its target,
:math:`\beta \sum_o (s_{L,o} - y_o)^2` (:func:`physgrad.netlists.energy.nudged_circuit`). Each
phase then costs :func:`physgrad.circuit.power.phase_energy`:
:math:`E = P\,t_s + C \sum_n v_n^2` with :math:`t_s = k\,C/G_\min`
(:func:`~physgrad.circuit.power.settling_time`), ``C`` = ``node_capacitance`` per node (inputs,
units, and in the nudged phase the nudge nodes at their targets), :math:`G_\min` the smallest
total conductance at a free unit (:math:`\mathbf 1 W_k + W_{k+1}\mathbf 1`, plus ``beta`` at the
outputs when nudged) -- the definitions :func:`physgrad.circuit.power.min_node_conductance` applies
to a netlist (diodes and sources not counted). Amplifiers' own supply power is not counted.

**Crossbar presets** (``crossbar-*``, a deep Hopfield network on one crossbar of differential
pairs, :mod:`physgrad.layered.crossbar`). A Hopfield network is not a resistive circuit; on the
crossbar it relaxes by vector-matrix reads of the array with its states held digitally, so each
phase costs :func:`physgrad.layered.crossbar.phase_read_energy` (one ``W_1`` read and, per sweep,
one backward and one forward ``W_2`` read, each :math:`P\,t_s + C \sum v^2` of the driven lines).

Other presets (``dhn-*`` deep Hopfield networks not on a crossbar, ``dchn-*``): no physical
picture is defined and ``--energy`` is refused.

**Programming** (both): :func:`physgrad.devices.energy.leaf_programming_energy` of each device
array's update (both devices of a pair; pulses of ``dw0``) with the device preset's write model
(:func:`physgrad.devices.energy.write_energy_of`); the column is empty for devices that state none
(``ideal``, ``levels{N}-*``): no number is invented. Per example = the update's energy / batch size.

Units: the presets' own (DRN: S and V, so W and J; crossbar: weights mapped to S by
:func:`physgrad.layered.crossbar.crossbar_units`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from physgrad.circuit.power import NODE_CAPACITANCE, SETTLING_MULTIPLE, phase_energy, settling_time
from physgrad.devices.energy import WriteEnergy, leaf_programming_energy
from physgrad.layered.crossbar import CrossbarPhysics, crossbar_units, pair_conductances, phase_read_energy
from physgrad.types import PhysgradError

ENERGY_PARTS = ("free", "nudged", "program")
ENERGY_COLUMNS = tuple(f"energy_{k}_J" for k in ENERGY_PARTS)


def energy_kind(preset) -> Optional[str]:
    """``"drn"`` (a resistive circuit), ``"crossbar"`` (a Hopfield network on a crossbar) or None."""
    if getattr(preset, "crossbar", ()):
        return "crossbar"
    if preset.model == "drn":
        return "drn"
    return None


def drn_power(energy, theta, x, state) -> np.ndarray:
    r"""Joule power (W) of a DRN's conductances at ``state``, per example, shape ``(batch,)``.

    :math:`\sum_k \sum_{ij} W_k[i,j] (a_i - b_j)^2` with :math:`a = A_k s_{k-1}`, :math:`b = s_k`,
    computed as :math:`a^2 \cdot W\mathbf 1 + b^2 \cdot \mathbf 1 W - 2\, b \cdot (a W)` in float64
    (one product per layer: about one relaxation sweep's arithmetic).
    """
    Ws, _ = energy.split(theta)
    layers = [energy.input_layer(x)] + [np.asarray(s, dtype=float) for s in state]
    p = np.zeros(len(layers[0]))
    for k, W in enumerate(Ws, start=1):
        W = np.asarray(W, dtype=float)
        a = energy.gain(k) * layers[k - 1]
        b = layers[k]
        p += (a * a) @ W.sum(axis=1) + (b * b) @ W.sum(axis=0) - 2.0 * np.sum(b * (a @ W), axis=1)
    return p


def drn_g_min(energy, theta, beta: float = 0.0) -> float:
    """Smallest total conductance (S) at a free unit: column sums of ``W_k`` plus row sums of
    ``W_{k+1}`` (plus ``beta`` at the outputs of a nudged phase)."""
    Ws, _ = energy.split(theta)
    g = np.inf
    for k, W in enumerate(Ws):
        total = np.asarray(W, dtype=float).sum(axis=0)
        if k + 1 < len(Ws):
            total = total + np.asarray(Ws[k + 1], dtype=float).sum(axis=1)
        else:
            total = total + float(beta)
        g = min(g, float(np.min(total)))
    return g


@dataclass(frozen=True)
class LayeredEnergyMeter:
    """Per-example energy of one training step of a layered preset (module docstring).

    Parameters
    ----------
    kind : {"drn", "crossbar"}
    node_capacitance : float, F
    settling_multiple : float
    write : WriteEnergy -- the device's write model
    units : tuple of float -- S per weight unit of each device array (1 for a DRN's conductances)
    phys : CrossbarPhysics -- the crossbar's read model (crossbar presets)
    """

    kind: str
    node_capacitance: float = NODE_CAPACITANCE
    settling_multiple: float = SETTLING_MULTIPLE
    write: WriteEnergy = WriteEnergy()
    units: tuple = ()
    phys: CrossbarPhysics = field(default_factory=CrossbarPhysics)

    @classmethod
    def for_preset(cls, preset, theta0, write: WriteEnergy, node_capacitance: float = NODE_CAPACITANCE,
                   settling_multiple: float = SETTLING_MULTIPLE) -> "LayeredEnergyMeter":
        """The meter of ``preset`` (initial parameters ``theta0`` fix the crossbar's S per weight unit)."""
        kind = energy_kind(preset)
        if kind is None:
            raise PhysgradError(f"--energy: preset {preset.name!r} ({preset.model}) is not a resistive circuit nor on a "
                                f"crossbar; energy is defined for drn-* and crossbar-* presets")
        n_arrays = len(preset.hidden) + 1
        phys = CrossbarPhysics(node_capacitance=float(node_capacitance), settling_multiple=float(settling_multiple),
                               write=write)
        units = crossbar_units(theta0, phys, n_arrays) if kind == "crossbar" else (1.0,) * n_arrays
        return cls(kind, float(node_capacitance), float(settling_multiple), write, units, phys)

    def _drn_phase(self, energy, theta, x, state, beta: float = 0.0, y=None) -> Optional[np.ndarray]:
        g = drn_g_min(energy, theta, beta)
        if not g > 0:
            return None
        power = drn_power(energy, theta, x, state)
        volts = [energy.input_layer(x)] + [np.asarray(s, dtype=float) for s in state]
        if beta:
            y = np.asarray(y, dtype=float)
            power = power + float(beta) * np.sum((np.asarray(state[-1], dtype=float) - y) ** 2, axis=1)
            volts.append(y)
        t = settling_time(self.node_capacitance, g, self.settling_multiple)
        return phase_energy(power, t, self.node_capacitance, np.concatenate(volts, axis=1))

    def _crossbar_phase(self, theta, x, eq, leaves) -> np.ndarray:
        cond = tuple(pair_conductances(np.asarray(theta[i], dtype=float), None if leaves is None else leaves[i],
                                       self.units[i]) for i in range(2))
        return phase_read_energy(cond, x, eq.state, int(eq.n_iter), self.phys)

    def phase(self, energy, theta, x, eq, beta: float = 0.0, y=None, leaves=None) -> Optional[np.ndarray]:
        """(batch,) J of one phase at equilibrium ``eq`` (parameters ``theta`` as the circuit read
        them; ``beta``, ``y``: the nudge of a positively nudged phase; ``leaves``: the device
        states of the arrays, for a crossbar's pair conductances). None when undefined."""
        if self.kind == "drn":
            return self._drn_phase(energy, theta, x, eq.state, beta, y)
        return self._crossbar_phase(theta, x, eq, leaves)

    def programming(self, before, after, leaves_before, leaves_after) -> Optional[float]:
        """J of one update of the device arrays (``before``/``after``: the weights; ``leaves_*``:
        their :class:`~physgrad.devices.state.LeafState` or None); None when unknown."""
        total = 0.0
        for i, u in enumerate(self.units):
            lb = None if leaves_before is None else leaves_before[i]
            la = None if leaves_after is None else leaves_after[i]
            e = leaf_programming_energy(self.write, before[i], after[i], lb, la, u)
            if e is None:
                return None
            total += e
        return total

r"""Physical energy of one equilibrium-propagation step on a circuit, per example.

The free phase is the circuit as it is; the nudged phase is the circuit with EP's nudge built as
the physics it stands for: a resistor of conductance ``beta`` (S) from each output node to a
voltage source at its target (V) (:func:`nudged_circuit`; its solution equals
``solve(circuit, nudge=Nudge(beta, y))``, ``tests/test_energy.py``). Each phase draws

.. math:: E_\text{phase} = P\, t_s + C \sum_n v_n^2, \qquad t_s = k\, C / G_\min

(:func:`physgrad.circuit.power.settling_phase`: ``P`` the power the resistors, diodes and nudge
resistors dissipate at equilibrium, ``C`` each node's capacitance, ``G_min`` the smallest total
resistor conductance at a node, ``k`` time constants). The update costs
:func:`physgrad.devices.energy.programming_energy`. Only positive nudges are physical (a
negative ``beta`` is a negative resistor), so only the positive variant is accounted for.

``physgrad fit --energy`` records the same quantities per example from the equilibria its
learning step already has (:class:`FitEnergyMeter`: no extra solve): the free phase, the positively
nudged phase (``pep``, and ``cep``'s ``+beta`` phase; ``nep`` and the coupled/clamped and exact
rules have no physical nudged phase here, so that column stays empty) and the devices' programming
energy (:func:`physgrad.devices.energy.leaf_programming_energy`; empty when the device states none).
With a device that reads non-ideally (read noise, drift) the equilibria are those at the read
conductances while the meter's power uses the devices' true conductances (an approximation of the
order of the read noise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from physgrad.circuit.elements import Circuit, Resistor, VoltageSource, node_name
from physgrad.circuit.power import (NODE_CAPACITANCE, SETTLING_MULTIPLE, min_node_conductance, passive_power,
                                    phase_energy, settling_phase, settling_time)
from physgrad.circuit.solve import solve
from physgrad.devices.energy import WriteEnergy, leaf_programming_energy, programming_energy, write_energy_of
from physgrad.types import PhysgradError


def nudged_circuit(circuit: Circuit, outputs: Sequence[str], targets, beta: float) -> Circuit:
    """``circuit`` with a resistor ``rnudge_k`` of ``beta`` S from output ``k`` to a source
    ``vnudge_k`` at ``targets[k]`` V (through node ``nudge_k``)."""
    beta = float(beta)
    if not (np.isfinite(beta) and beta > 0):
        raise PhysgradError(f"a physical nudge needs a finite beta > 0 S, got {beta!r}")
    y = np.asarray(targets, dtype=float).reshape(-1)
    if len(y) != len(outputs) or not np.all(np.isfinite(y)):
        raise PhysgradError(f"{len(outputs)} outputs need as many finite targets, got {y.tolist()}")
    names = {el.name for el in circuit.elements} | set(circuit.nodes)
    els = []
    for k, (node, v) in enumerate(zip(outputs, y)):
        extra = (f"rnudge_{k}", f"vnudge_{k}", f"nudge_{k}")
        if names & set(extra):
            raise PhysgradError(f"the circuit already has an element or node named like {extra}")
        els += [VoltageSource(f"vnudge_{k}", f"nudge_{k}", "0", float(v)),
                Resistor(f"rnudge_{k}", node_name(node), f"nudge_{k}", beta)]
    return circuit.with_elements(*els)


@dataclass(frozen=True)
class StepEnergy:
    """Energy (J) of one example's EP step: ``free``, ``nudged`` phases, ``programming`` (the
    update's share for this example), their ``total``; ``settling_time`` (s) of the free phase."""

    free: float
    nudged: float
    programming: float
    settling_time: float

    @property
    def total(self) -> float:
        return self.free + self.nudged + self.programming


def ep_step_energy(circuit: Circuit, outputs: Sequence[str], targets, beta: float, *,
                   node_capacitance: float = NODE_CAPACITANCE, k: float = SETTLING_MULTIPLE, solver: str = "auto",
                   g_before=None, g_after=None, write: Optional[WriteEnergy] = None, pulse_step: float = 0.0,
                   batch: int = 1) -> StepEnergy:
    """Energy of the free and (positively) nudged equilibria of ``circuit`` (inputs already set) for
    one example, plus ``1 / batch`` of programming the devices from ``g_before`` to ``g_after`` (S)
    with ``write`` (no programming energy when any of them is None)."""
    free = settling_phase(solve(circuit, solver), node_capacitance, k)
    nudged = settling_phase(solve(nudged_circuit(circuit, outputs, targets, beta), solver), node_capacitance, k)
    if free["energy_J"] is None or nudged["energy_J"] is None:
        raise PhysgradError("the circuit has no resistor with G > 0 S: no RC settling time")
    prog = 0.0
    if write is not None and g_before is not None and g_after is not None:
        prog = programming_energy(g_before, g_after, write, pulse_step) / int(batch)
    return StepEnergy(free["energy_J"], nudged["energy_J"], prog, free["settling_time_s"])


def _phase(circuit: Circuit, voltages, diode_currents, node_capacitance: float, k: float) -> Optional[np.ndarray]:
    """(batch,) J of one settling phase of ``circuit`` at ``voltages`` (batch, n_nodes), or None
    when no node settles through a resistor (no RC time)."""
    g = min_node_conductance(circuit)
    if not g > 0:
        return None
    t = settling_time(node_capacitance, g, k)
    return phase_energy(passive_power(circuit, voltages, diode_currents=diode_currents), t, node_capacitance, voltages)


def _dcurrents(eq, n: int):
    d = eq.info.get("diode_currents") if eq.info else None
    if d is None or (isinstance(d, tuple) and any(x is None for x in d)):
        return None
    return np.asarray(d, dtype=float).reshape(n, -1)


@dataclass(frozen=True)
class FitEnergyMeter:
    """Per-example energy of ``physgrad fit``'s steps, from the equilibria the step already has.

    Parameters
    ----------
    node_capacitance : float, F -- each node's capacitance (:data:`physgrad.circuit.power.NODE_CAPACITANCE`)
    settling_multiple : float -- settling time in RC time constants (:data:`~physgrad.circuit.power.SETTLING_MULTIPLE`)
    write : WriteEnergy -- the device preset's write model (:func:`~physgrad.devices.energy.write_energy_of`)
    """

    node_capacitance: float = NODE_CAPACITANCE
    settling_multiple: float = SETTLING_MULTIPLE
    write: WriteEnergy = WriteEnergy()

    @classmethod
    def for_device(cls, device_name: str, node_capacitance: float = NODE_CAPACITANCE,
                   settling_multiple: float = SETTLING_MULTIPLE) -> "FitEnergyMeter":
        return cls(float(node_capacitance), float(settling_multiple), write_energy_of(device_name))

    def free(self, energy, theta, free) -> Optional[np.ndarray]:
        """(batch,) J of the free phase: :func:`physgrad.circuit.power.phase_energy` of the circuit at
        conductances ``theta`` (S) and the free equilibrium's node voltages (``free.state``)."""
        circuit = energy.circuit.with_conductances(dict(zip(energy.param_names, np.asarray(theta, float))))
        v = np.asarray(free.state, dtype=float)
        return _phase(circuit, v, _dcurrents(free, len(v)), self.node_capacitance, self.settling_multiple)

    def nudged(self, energy, theta, nudged, beta: float, targets) -> Optional[np.ndarray]:
        """(batch,) J of the positively nudged phase at targets ``targets`` (batch, n_out) V: the
        :func:`nudged_circuit` (a ``beta`` S resistor from each output to a source at its target) at
        the nudged equilibrium, the nudge nodes at their targets. None for ``beta <= 0``."""
        if not float(beta) > 0:
            return None
        circuit = energy.circuit.with_conductances(dict(zip(energy.param_names, np.asarray(theta, float))))
        y = np.asarray(targets, dtype=float).reshape(len(nudged.state), -1)
        nc = nudged_circuit(circuit, energy.output_nodes, y[0], beta)
        index = nc.node_index
        v = np.zeros((len(y), len(nc.nodes)))
        v[:, [index[n] for n in circuit.nodes]] = np.asarray(nudged.state, dtype=float)
        v[:, [index[f"nudge_{k}"] for k in range(y.shape[1])]] = y
        return _phase(nc, v, _dcurrents(nudged, len(v)), self.node_capacitance, self.settling_multiple)

    def programming(self, theta_before, theta_after, state_before, state_after) -> Optional[float]:
        """J of one update of the trainable conductances (S) through the devices (the whole batch's
        update; None when the device states no write energy)."""
        lb = None if state_before is None else state_before.leaves[0]
        la = None if state_after is None else state_after.leaves[0]
        return leaf_programming_energy(self.write, theta_before, theta_after, lb, la)

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

Not yet a column of ``physgrad fit``'s metrics (a function to call on a trained problem).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from physgrad.circuit.elements import Circuit, Resistor, VoltageSource, node_name
from physgrad.circuit.power import NODE_CAPACITANCE, SETTLING_MULTIPLE, settling_phase
from physgrad.circuit.solve import solve
from physgrad.devices.energy import WriteEnergy, programming_energy
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

"""The circuit core: elements, netlists, the exact reduction, the circuit solvers, the ngspice bridge.

Everything here is independent of learning: a :class:`Circuit` goes in, a certified
:class:`CircuitSolution` comes out (:func:`solve`). The energies, minimizers and learning rules
above build on it.

Errors
------
Every error the circuit API raises for bad input is a :class:`physgrad.types.PhysgradError` (a
``ValueError``; the CLI's exit code 2), whatever the input: NaN, inf or negative values,
arrays of the wrong shape or type, unknown names or options, malformed netlists
(:class:`NetlistError`, message ``file:line: ...``), ill-posed circuits. Arguments of the wrong
type or shape raise its subclass :class:`physgrad.types.BadArgumentError`, which is also a
``TypeError``; a dense computation past its memory limit raises
:class:`physgrad.types.DenseTooLargeError`. A circuit that is well formed but has no certified
steady state raises :class:`physgrad.types.NotSolvedError` (``strict=True``; exit code 1):
:class:`physgrad.types.InfeasibleError` for ideal diodes forced forward, ``NotSolvedError`` itself
for a minimizer that did not converge or a certificate that failed.

Controlled sources (SPICE's linear E, F, G, H: :class:`VCVS`, :class:`CCCS`, :class:`VCCS`,
:class:`CCVS`) are solved on the MNA equations (:mod:`physgrad.circuit.mna`, solvers ``lcp`` and
``mna-newton``) or, for energy-based amplifier circuits, as their equivalent circuit
(:mod:`physgrad.circuit.amplifiers`); :mod:`physgrad.circuit.adjoint` gives the exact gradient of any
of them, :mod:`physgrad.circuit.mlp` turns a ReLU MLP into such a circuit.

Transistors (:class:`Mosfet` level 1, :class:`Bjt` Gummel-Poon; laws in
:mod:`physgrad.circuit.transistors`) have no co-content: they are solved by ``mna-newton`` only.
"""
from physgrad.circuit.elements import (
    CCCS,
    CCVS,
    VCCS,
    VCVS,
    GROUND,
    Bjt,
    BjtModel,
    Circuit,
    CurrentSource,
    DiodeModel,
    IdealDiode,
    Mosfet,
    MosfetModel,
    Resistor,
    ShockleyDiode,
    VoltageSource,
)
from physgrad.circuit.batch import BatchSolution, BatchSolver, solve_batch
from physgrad.circuit.netlist import Deck, NetlistError, parse_netlist, read_deck, read_netlist, write_netlist
from physgrad.circuit.solution import CircuitSolution
from physgrad.circuit.solve import SOLVERS, solve

__all__ = [
    "CCCS", "CCVS", "VCCS", "VCVS", "GROUND", "Circuit", "CurrentSource", "DiodeModel", "IdealDiode", "Resistor",
    "ShockleyDiode", "VoltageSource", "Mosfet", "MosfetModel", "Bjt", "BjtModel", "Deck", "NetlistError", "parse_netlist", "read_deck", "read_netlist",
    "write_netlist", "CircuitSolution", "SOLVERS", "solve", "BatchSolution", "BatchSolver", "solve_batch",
]

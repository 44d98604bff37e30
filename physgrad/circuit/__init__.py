"""The circuit core: elements, netlists, the exact reduction, the circuit solvers, the ngspice bridge.

Everything here is independent of learning: a :class:`Circuit` goes in, a certified
:class:`CircuitSolution` comes out (:func:`solve`). The energies, minimizers and learning rules
above build on it.
"""
from physgrad.circuit.elements import (
    GROUND,
    Circuit,
    CurrentSource,
    DiodeModel,
    IdealDiode,
    Resistor,
    ShockleyDiode,
    VoltageSource,
)
from physgrad.circuit.batch import BatchSolution, BatchSolver, solve_batch
from physgrad.circuit.netlist import NetlistError, parse_netlist, read_netlist, write_netlist
from physgrad.circuit.solution import CircuitSolution
from physgrad.circuit.solve import SOLVERS, solve

__all__ = [
    "GROUND", "Circuit", "CurrentSource", "DiodeModel", "IdealDiode", "Resistor", "ShockleyDiode", "VoltageSource",
    "NetlistError", "parse_netlist", "read_netlist", "write_netlist", "CircuitSolution", "SOLVERS", "solve",
    "BatchSolution", "BatchSolver", "solve_batch",
]

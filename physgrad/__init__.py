"""physgrad: exact simulation and equilibrium-propagation training of nonlinear resistive networks.

The circuit core in one import::

    from physgrad import Circuit, Resistor, IdealDiode, VoltageSource, solve, read_netlist

The package is layered; an import only ever points down this list (checked by import-linter):
``cli`` -> ``layered`` (and the ``verification`` package) -> ``learning`` -> ``minimizers`` ->
``energies`` -> ``circuit`` -> ``types``, ``pytree``.
"""
from physgrad.circuit import (
    SOLVERS,
    Circuit,
    CircuitSolution,
    CurrentSource,
    DiodeModel,
    IdealDiode,
    NetlistError,
    Resistor,
    ShockleyDiode,
    VoltageSource,
    parse_netlist,
    read_netlist,
    solve,
    write_netlist,
)
from physgrad.types import FREE, Equilibrium, NotSolvedError, Nudge, PhysgradError

__version__ = "0.1.0"

__all__ = [
    "FREE", "Equilibrium", "NotSolvedError", "Nudge", "PhysgradError",
    "Circuit", "CurrentSource", "DiodeModel", "IdealDiode", "Resistor", "ShockleyDiode", "VoltageSource",
    "NetlistError", "parse_netlist", "read_netlist", "write_netlist",
    "CircuitSolution", "SOLVERS", "solve", "__version__",
]

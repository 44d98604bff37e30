"""physgrad: exact simulation and equilibrium-propagation training of nonlinear resistive networks.

The circuit core in one import::

    from physgrad import Circuit, Resistor, IdealDiode, VoltageSource, solve, read_netlist
"""
from physgrad.equilibrium import FREE, Equilibrium, NotSolvedError, Nudge, PhysgradError
from physgrad.circuit import (
    Circuit,
    CurrentSource,
    DiodeModel,
    IdealDiode,
    Resistor,
    ShockleyDiode,
    VoltageSource,
)
from physgrad.netlist import NetlistError, parse_netlist, read_netlist, write_netlist
from physgrad.solution import CircuitSolution
from physgrad.solve import SOLVERS, solve

__version__ = "0.1.0"

__all__ = [
    "FREE", "Equilibrium", "NotSolvedError", "Nudge", "PhysgradError",
    "Circuit", "CurrentSource", "DiodeModel", "IdealDiode", "Resistor", "ShockleyDiode", "VoltageSource",
    "NetlistError", "parse_netlist", "read_netlist", "write_netlist",
    "CircuitSolution", "SOLVERS", "solve", "__version__",
]

"""physgrad: exact simulation and equilibrium-propagation training of nonlinear resistive networks.

The front door (every name is imported on first use, so ``import physgrad`` and ``physgrad --help``
stay fast)::

    import physgrad
    physgrad.solve("circuit.cir")                 # a path, netlist text or a Circuit -> CircuitSolution
    physgrad.gradient("circuit.cir", method="cep")  # dC/dg per trainable resistor (V^2/S)
    physgrad.CircuitClassifier(netlist="net.cir", inputs=..., outputs=...)  # scikit-learn estimator

**Units.** Netlists give resistors in ohms (``R1 a b 1k``); the Python API speaks conductances
``g = 1/R`` in siemens everywhere (``Resistor("r1", "a", "b", 1e-3)`` is 1 kOhm), voltages in V,
currents in A, costs in V^2 and gradients dC/dg in V^2/S.

**The three abstractions** of the talk, as typing Protocols (structural: nothing to inherit):
:class:`Energy` (e.g. :class:`CoContentEnergy`), :class:`Minimizer` (e.g. :class:`CoContentMinimizer`)
and :class:`LearningRule` = :class:`Estimator` (``make_estimator("cep")``), with their optional
capabilities :class:`SplitsParameters`, :class:`ChecksNudge`, :class:`ChecksState`,
:class:`HasQuadraticForm`, :class:`Steps`, :class:`ImplicitGradient`, :class:`HasPhases`
(``isinstance(obj, Steps)`` tests for one; ``missing(obj, Minimizer)`` names what is absent).

The package is layered; an import only ever points down this list (checked by import-linter):
``cli`` -> ``sweep`` -> ``layered`` | ``netlists`` | ``verification`` -> ``learning`` -> ``minimizers`` ->
``energies`` -> ``circuit`` | ``devices`` -> ``pytree`` -> ``types``. This module sits beside the list:
it imports nothing at import time and resolves each name with ``importlib`` on first use, so a lower
floor's ``from physgrad import __version__`` pulls in nothing above it.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    # shared records and the three abstractions
    "physgrad.types": ("FREE", "Equilibrium", "NotSolvedError", "Nudge", "PhysgradError", "Energy", "Minimizer",
                       "Estimator", "LearningRule", "SplitsParameters", "ChecksNudge", "ChecksState",
                       "HasQuadraticForm", "Steps", "ImplicitGradient", "HasPhases", "missing"),
    # the circuit core
    "physgrad.circuit": ("SOLVERS", "Circuit", "CircuitSolution", "CurrentSource", "DiodeModel", "IdealDiode",
                         "NetlistError", "Resistor", "ShockleyDiode", "VoltageSource", "parse_netlist",
                         "read_netlist", "write_netlist"),
    # one of each abstraction for circuits
    "physgrad.energies.co_content": ("CoContentEnergy",),
    "physgrad.minimizers.co_content": ("CoContentMinimizer",),
    "physgrad.learning": ("make_estimator", "METHODS"),
    # netlists: gradients, prediction, design, scikit-learn estimators
    "physgrad.netlists.grad": ("as_circuit", "default_beta", "solve", "gradient"),
    "physgrad.netlists.predict": ("load_model", "predict"),
    "physgrad.netlists.builder": ("layered_netlist",),
    "physgrad.netlists.estimators": ("CircuitRegressor", "CircuitClassifier"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = sorted(_WHERE) + ["__version__"]


def __getattr__(name: str) -> Any:
    """Import a front-door name on first use (PEP 562)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'physgrad' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))

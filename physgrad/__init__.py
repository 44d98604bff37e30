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
``energies`` -> ``circuit`` | ``devices`` -> ``pytree`` -> ``types``. This module sits beside the list
(it only re-exports).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

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
    "physgrad.netlists.grad": ("as_circuit", "default_beta"),
    "physgrad.netlists.predict": ("predict",),
    "physgrad.netlists.builder": ("layered_netlist",),
    "physgrad.netlists.estimators": ("CircuitRegressor", "CircuitClassifier"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = sorted(_WHERE) + ["solve", "gradient", "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from physgrad.circuit import Circuit, CircuitSolution


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


def solve(circuit: Union[str, Path, "Circuit"], **options) -> "CircuitSolution":
    """The steady state of a circuit given as a :class:`Circuit`, a netlist path or netlist text.

    Parameters
    ----------
    circuit : Circuit, str or os.PathLike
        A :class:`Circuit` (conductances in S), a path to a netlist file, or the netlist text itself
        (a string holding a newline; its first line is the title, as in SPICE; resistors in ohms).
    **options
        Passed to :func:`physgrad.circuit.solve` (``solver=``, ``nudge=`` (beta in S), ...).

    Returns
    -------
    CircuitSolution
        Node voltages (V), element currents (A), the KKT certificate; ``.to_json()`` is strict JSON.

    Examples
    --------
    >>> import physgrad
    >>> sol = physgrad.solve("clipper\\nV1 in 0 5\\nR1 in out 1k\\nD1 out 0 dth\\n.model dth D(ideal=1 vth=0.7)\\n")
    >>> round(sol.voltage("out"), 12), round(sol.current("d1") * 1e3, 12)   # V, mA
    (0.7, 4.3)
    """
    from physgrad.circuit import solve as solve_circuit
    from physgrad.netlists.grad import as_circuit

    return solve_circuit(as_circuit(circuit), **options)


def gradient(circuit: Union[str, Path, "Circuit"], method: str = "exact", *, beta: Optional[float] = None,
             eta: float = 1e-2, steps: int = 300, points: Optional[int] = None) -> dict:
    """dC/dg for every trainable resistor (``.trainable``, default all) of a circuit with ``.target`` lines.

    The cost is :math:`C = \\tfrac12 \\sum_o (v_o - y_o)^2` (V^2) over the target nodes; ``g = 1/R``
    in S, so each entry is in V^2/S (the clamped rules ``cl``, ``pcpl``, ``ncpl``, ``ccpl`` return an
    update direction in V^2 instead: see the result's ``estimate`` and ``unit``).

    Parameters
    ----------
    circuit : Circuit, str or os.PathLike
        As in :func:`solve` (a netlist path or text in ohms, or a Circuit in S).
    method : str
        One of :data:`METHODS`: ``exact`` (KKT implicit differentiation), ``pep``/``nep``/``cep``
        (equilibrium propagation), ``ep4``, ``fp``, ``hep``, ``cl``, ``pcpl``/``ncpl``/``ccpl``,
        ``tbp``/``rbp``.
    beta : float, optional
        EP nudge (S); default :func:`default_beta` (1e-4 x the median resistor conductance). A nudge
        below round-off for the circuit's scales raises :class:`PhysgradError` naming the smallest
        usable beta.
    eta : float
        Coupled-learning amplitude (dimensionless). ``steps``: TBP/RBP iterations; ``points``: nudges
        per period (fp, hep).

    Returns
    -------
    dict
        ``grad`` (resistor name -> value), ``cost`` (V^2), ``method``, ``beta`` (S), ``estimate``,
        ``unit`` and method-specific entries (:func:`physgrad.netlists.grad.grad_result`); every
        number finite (strict JSON).

    Examples
    --------
    >>> import physgrad
    >>> net = "divider\\nV1 in 0 1\\nR1 in out 1\\nR2 out 0 1\\n.target out 0.2\\n"
    >>> g = physgrad.gradient(net)["grad"]          # C = (v - 0.2)^2 / 2 with v = g1 / (g1 + g2)
    >>> round(g["r1"], 12), round(g["r2"], 12)      # V^2/S
    (0.075, -0.075)
    """
    from physgrad.netlists.grad import as_circuit, grad_result

    return grad_result(as_circuit(circuit), method, beta, eta, steps, points)

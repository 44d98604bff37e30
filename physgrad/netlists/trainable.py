r"""What ``physgrad fit`` trains (``--trainable GLOBS``), the bounds it projects onto (``--bounds``),
and the route that trains independent sources and transistor circuits: one MNA solve per sample and
the adjoint exact gradient (:func:`physgrad.circuit.adjoint.mna_gradient`).

**Parameters.** ``theta`` is the conductances (S) of the trainable resistors, then the values of
the trainable independent sources (V for a voltage source, A for a current source), in netlist
order within each group. ``--trainable`` takes comma-separated shell-style globs (``*``, ``?``,
``[...]``) over element names, folded the way the netlist reader folds names (ASCII case only,
:func:`physgrad.circuit.elements.fold`); it replaces the netlist's ``.trainable`` line. Without it
the trainable set is today's: the ``.trainable`` resistors, or every resistor. A glob that matches
nothing, an element of a kind that cannot be trained (diode, transistor, controlled source) and an
input source (its values come from the data) are refused (:class:`PhysgradError`, exit 2, naming
the glob or element).

**Bounds.** ``NAME=LO:HI`` (NAME a name or a glob; ``LO < HI``, both finite) bounds every trainable
element it matches: V (voltage source), A (current source) or S (resistor conductance, as
``--g-min``/``--g-max``; a resistor's bound replaces ``[g_min, g_max]`` for it, and needs ``LO >= 0``).
After every optimizer step ``theta`` is projected onto the box ``[lo, hi]`` (a clip). A bound whose
name matches no trainable element, an element bounded twice, and an initial value outside its
explicit bound are refused (exit 2): the netlist's value is the stated starting point, and moving it
silently would hide a mistake. (Resistors without an explicit bound keep fit's behaviour: the
initial conductances are clipped into ``[g_min, g_max]``.)

**Route** (:func:`needs_adjoint_route`): a circuit with transistors has no co-content, and a source
value is not a conductance, so neither the batched co-content solver nor the EP/coupled estimators
apply; such fits use ``method = "exact"`` on :class:`SourceModel` (per-sample steady states by
:func:`physgrad.circuit.solve.solve`, MNA Newton for transistors) with :class:`AdjointEstimator`
(one transposed solve per sample gives :math:`dC/dg` and :math:`dC/dV_j = \mu_j`, the adjoint on
source ``j``'s branch row). Other methods are refused naming the element.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from physgrad.circuit.elements import Circuit, CurrentSource, Resistor, VoltageSource, fold
from physgrad.types import Equilibrium, NotSolvedError, PhysgradError

SOURCES = (VoltageSource, CurrentSource)


def unit_of(element) -> str:
    """The unit of an element's parameter: ``"S"`` (resistor conductance), ``"V"`` or ``"A"``."""
    return "S" if isinstance(element, Resistor) else "V" if isinstance(element, VoltageSource) else "A"


def _kind(element) -> str:
    return type(element).__name__


@dataclass(frozen=True)
class Trainables:
    """The trained elements of a fit: ``resistors`` (names; conductances in S) and ``sources``
    (names; values in V or A), each in netlist order; ``theta = [g_resistors, value_sources]``."""

    resistors: tuple
    sources: tuple = ()

    @property
    def names(self) -> tuple:
        return self.resistors + self.sources


def select_trainable(circuit: Circuit, globs: Optional[Sequence[str]], inputs: Sequence[str] = ()) -> Trainables:
    """The elements that ``--trainable GLOBS`` names (``None``: the circuit's trainable resistors).

    Raises
    ------
    PhysgradError
        A glob that matches no element; a matched element that cannot be trained (naming it and its
        kind) or that is an input source.
    """
    if globs is None:
        return Trainables(tuple(circuit.trainable_names))
    inputs = set(inputs)
    chosen = set()
    for raw in globs:
        pat = fold(str(raw).strip())
        if not pat:
            raise PhysgradError("--trainable: an empty name")
        hits = [el for el in circuit.elements if fnmatch.fnmatchcase(el.name, pat)]
        if not hits:
            raise PhysgradError(f"--trainable {raw!r} matches no element of the netlist (names: "
                                f"{', '.join(el.name for el in circuit.elements[:20])}"
                                f"{' ...' if len(circuit.elements) > 20 else ''})")
        for el in hits:
            if el.name in inputs:
                raise PhysgradError(f"--trainable {raw!r} matches {el.name!r}, an input source (its values come from "
                                    "the data's column); it cannot be trained")
            if not isinstance(el, (Resistor,) + SOURCES):
                raise PhysgradError(f"--trainable {raw!r} matches {el.name!r}, a {_kind(el)}, which cannot be trained: "
                                    "fit trains resistors (conductance, S) and independent sources (V or A)")
            chosen.add(el.name)
    res = tuple(el.name for el in circuit.elements if el.name in chosen and isinstance(el, Resistor))
    src = tuple(el.name for el in circuit.elements if el.name in chosen and isinstance(el, SOURCES))
    return Trainables(res, src)


def parse_bound(text: str) -> tuple:
    """``"NAME=LO:HI"`` -> ``(name, lo, hi)`` (name folded; ``LO < HI`` finite numbers).

    Raises :class:`PhysgradError` naming the text.
    """
    text = str(text)
    name, eq, rng = text.partition("=")
    lo_t, colon, hi_t = rng.partition(":")
    if not eq or not colon or not name.strip():
        raise PhysgradError(f"--bounds {text!r}: expected NAME=LO:HI (e.g. vg1=0:5)")
    try:
        lo, hi = float(lo_t), float(hi_t)
    except ValueError:
        raise PhysgradError(f"--bounds {text!r}: LO and HI must be numbers") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise PhysgradError(f"--bounds {text!r}: LO and HI must be finite")
    if not lo < hi:
        raise PhysgradError(f"--bounds {text!r}: LO must be below HI")
    return fold(name.strip()), lo, hi


def box(circuit: Circuit, tr: Trainables, bounds: Sequence[str], g_min: float, g_max: Optional[float]) -> tuple:
    """``(lo, hi, explicit)``: the projection box of ``theta`` (shape ``(n_params,)`` each) and the
    explicit bounds by element name (``{name: (lo, hi)}``).

    Resistors without an explicit bound get ``[g_min, g_max]`` (S; ``g_max`` None: no upper bound),
    sources ``(-inf, inf)``.

    Raises
    ------
    PhysgradError
        A bound that matches no trainable element (unknown or not trainable, named), an element
        bounded twice, a resistor bound with ``LO < 0`` S.
    """
    names = tr.names
    pos = {n: k for k, n in enumerate(names)}
    lo = np.array([g_min] * len(tr.resistors) + [-np.inf] * len(tr.sources), float)
    hi = np.array([np.inf if g_max is None else g_max] * len(tr.resistors) + [np.inf] * len(tr.sources), float)
    explicit: dict = {}
    for text in bounds:
        pat, b_lo, b_hi = parse_bound(text)
        hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            others = [el.name for el in circuit.elements if fnmatch.fnmatchcase(el.name, pat)]
            if others:
                raise PhysgradError(f"--bounds {text!r}: {', '.join(repr(n) for n in others[:5])} "
                                    f"{'is' if len(others) == 1 else 'are'} not trainable (trainable: "
                                    f"{', '.join(names) or 'none'}; see --trainable)")
            raise PhysgradError(f"--bounds {text!r}: no element {pat!r} in the netlist")
        for n in hits:
            if n in explicit:
                raise PhysgradError(f"--bounds {text!r}: {n!r} is already bounded by an earlier --bounds")
            if n in tr.resistors and b_lo < 0:
                raise PhysgradError(f"--bounds {text!r}: {n!r} is a resistor, bounded in conductance (S): LO must be "
                                    ">= 0")
            explicit[n] = (b_lo, b_hi)
            lo[pos[n]], hi[pos[n]] = b_lo, b_hi
    return lo, hi, explicit


def check_initial(theta0, names: Sequence[str], explicit: dict, units: Sequence[str]) -> None:
    """Refuse (:class:`PhysgradError`) an initial value outside its explicit bound, naming it."""
    for n, v, u in zip(names, np.asarray(theta0, float), units):
        if n in explicit and not explicit[n][0] <= v <= explicit[n][1]:
            lo, hi = explicit[n]
            raise PhysgradError(f"--bounds: {n!r} starts at {v:.6g} {u}, outside its bounds [{lo:.6g}, {hi:.6g}] {u}; "
                                "change the netlist's value or the bound (fit refuses instead of moving it)")


def needs_adjoint_route(circuit: Circuit, tr: Trainables) -> bool:
    """Whether a fit of ``tr`` on ``circuit`` needs :class:`SourceModel` (transistors, or trained sources)."""
    return bool(circuit.transistors) or bool(tr.sources)


# --- the adjoint route ------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SourceModel:
    """A circuit whose trainable resistors (S) and independent sources (V, A) are ``theta``, solved
    sample by sample (the fit's counterpart of :class:`~physgrad.energies.co_content.CoContentEnergy`
    for circuits without co-content or with trained sources).

    Parameters
    ----------
    circuit : Circuit
    inputs : tuple of str — sources set per sample from ``x`` (shape ``(batch, n_inputs)``)
    output_nodes : tuple of str
    trainables : Trainables
    """

    circuit: Circuit
    inputs: tuple
    output_nodes: tuple
    trainables: Trainables
    _out: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        c = self.circuit
        object.__setattr__(self, "_out", np.array([c.index_of_node(n) for n in self.output_nodes], dtype=np.int64))

    @property
    def param_names(self) -> tuple:
        return self.trainables.names

    @property
    def n_resistors(self) -> int:
        return len(self.trainables.resistors)

    @property
    def units(self) -> tuple:
        return tuple(unit_of(self.circuit.element(n)) for n in self.param_names)

    def theta0(self) -> np.ndarray:
        """The netlist's conductances (S) and source values (V, A), shape ``(n_params,)``."""
        c = self.circuit
        return np.array([c.element(n).conductance for n in self.trainables.resistors]
                        + [c.element(n).value for n in self.trainables.sources], float)

    def circuit_at(self, theta) -> Circuit:
        """The circuit with ``theta``'s conductances and source values."""
        theta = np.asarray(theta, float)
        k = self.n_resistors
        c = self.circuit
        if k:
            c = c.with_conductances(dict(zip(self.trainables.resistors, theta[:k].tolist())))
        if self.trainables.sources:
            c = c.with_sources(dict(zip(self.trainables.sources, theta[k:].tolist())))
        return c

    def outputs(self, state) -> np.ndarray:
        """Output node voltages (V), shape ``(batch, n_out)``."""
        return np.asarray(state)[:, self._out]


class SampleSolver:
    """The minimizer of :class:`SourceModel`: one :func:`physgrad.circuit.solve.solve` per sample
    (MNA Newton for transistors), no state kept between calls (so nothing to checkpoint)."""

    def minimize(self, model: SourceModel, theta, X) -> Equilibrium:
        from physgrad.circuit.solve import solve

        base = model.circuit_at(theta)
        X = np.asarray(X, float).reshape(len(X), -1)
        sols = []
        for row in X:
            c = base.with_sources(dict(zip(model.inputs, row.tolist()))) if model.inputs else base
            sol = solve(c, strict=False)
            if not sol.converged:
                return Equilibrium(None, None, sol.status, len(sols), np.inf, "solve",
                                   f"sample {len(sols) + 1}: {sol.message}")
            sols.append(sol)
        state = np.array([s.voltages for s in sols], float).reshape(len(sols), -1)
        return Equilibrium(state, None, "converged", len(sols), 0.0, "solve", "", {"solutions": tuple(sols)})

    def warm_state(self, model) -> dict:
        return {}

    def set_warm_state(self, model, warm: dict) -> None:
        return None

    def clear_factors(self) -> None:
        return None


@dataclass(frozen=True)
class AdjointEstimator:
    """``dC/dtheta`` (batch mean) by :func:`physgrad.circuit.adjoint.mna_gradient` per sample, with
    ``C = 1/2 sum_o (v_o - y_o)^2``: V^2/S for conductances, V^2/V = V for voltage sources, V^2/A
    for current sources."""

    def estimate(self, model: SourceModel, theta, X, y, minimizer, free: Optional[Equilibrium] = None):
        from physgrad.circuit.adjoint import mna_gradient

        if free is None:
            free = minimizer.minimize(model, theta, X)
            if not free.converged:
                raise NotSolvedError(f"free phase: {free.status}: {free.message}")
        base = model.circuit_at(theta)
        X = np.asarray(X, float).reshape(len(X), -1)
        y = np.asarray(y, float).reshape(len(X), -1)
        total = np.zeros(len(model.param_names))
        for row, yb, sol in zip(X, y, free.info["solutions"]):
            c = base.with_sources(dict(zip(model.inputs, row.tolist()))) if model.inputs else base
            c = c.with_targets(dict(zip(model.output_nodes, yb.tolist())))
            res = mna_gradient(c, sol, resistors=model.trainables.resistors, sources=model.trainables.sources)
            total += np.concatenate([res.grad, res.source_grad])
        return total / max(len(X), 1)


__all__ = ["AdjointEstimator", "SampleSolver", "SourceModel", "Trainables", "box", "check_initial",
           "needs_adjoint_route", "parse_bound", "select_trainable", "unit_of"]

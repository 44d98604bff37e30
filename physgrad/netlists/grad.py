r"""Gradients of a netlist's cost (the one default nudge, its round-off floor, ``physgrad grad``'s result)
and the front door's :func:`solve` and :func:`gradient` (``physgrad.solve``, ``physgrad.gradient``: a
Circuit, a netlist path or netlist text in).

The cost of a netlist with ``.target NODE VALUE`` lines is :math:`C = \tfrac12 \sum_o (v_o - y_o)^2`
(V^2); its gradient is taken with respect to the conductances :math:`g = 1/R` (S) of the trainable
resistors (``.trainable``, default all), so every entry is in V^2/S. Netlists give resistances in
ohms; everything here speaks conductances in siemens.

**One default nudge** (:func:`default_beta`, used by ``physgrad grad``, ``physgrad fit`` and
:func:`physgrad.gradient`): ``1e-4`` times the median conductance of *all* the circuit's resistors
(S), not only the trainable ones. The nudge is a conductance from each output node to its target,
so its effect is set by the conductances around the outputs, trained or not; a ``.trainable`` line
then does not change the nudge, and estimates on different trainable subsets stay comparable.

**Round-off floor** (:func:`smallest_beta`): a nudge ``beta`` moves each output by about
:math:`\beta\,|y_o - v_o| / G_{oo}` (V), with :math:`G_{oo}` the total conductance at the output node;
an EP estimate divides a difference of co-content derivatives by ``beta``, so once that move is
below ``BETA_FLOOR`` times the round-off of the voltages (:math:`\epsilon\,V`, ``V`` the largest
node or target voltage) the estimate is noise (zeros, wrong signs, or inf/NaN). Such a nudge is
refused (:class:`~physgrad.types.PhysgradError`, exit 2) with a message naming the smallest usable
beta. The coupled-learning amplitude ``eta`` has the same floor: the clamp must move the outputs by
more than ``BETA_FLOOR`` round-offs.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Union

import numpy as np

from physgrad.circuit import Circuit, CircuitSolution
from physgrad.learning import CODES
from physgrad.types import PhysgradError

EP_VARIANTS = {code: variant for variant, code in CODES["ep"].items()}
NUDGED = tuple(EP_VARIANTS) + ("ep4", "fp", "hep")
"""The methods that take a nudge ``beta`` (S)."""
COUPLED = tuple(CODES["coupled"].values())
"""The coupled-learning methods: they return an update direction (a preconditioned gradient,
:mod:`physgrad.learning.coupled`), not dC/dg."""
CLAMPED = COUPLED + ("cl",)
"""The methods that clamp the outputs (take ``eta``; ``cl`` clamps to the target, ``eta = 1``)."""

DEFAULT_BETA_FRACTION = 1e-4
"""Default beta = this times the median resistor conductance (S): EP's bias is then ~1e-4
relative (P-EP, N-EP) or ~1e-8 (C-EP) on smooth cases, far above round-off."""
BETA_FLOOR = 1e3
"""A nudge must move the outputs by at least this many round-offs of the voltages. Measured on five
circuits (the test netlist of ``tests/test_front_door.py`` and four seeded random diode circuits): at
the floor P-EP and C-EP were 2e-5 to 2e-4 relative off the exact gradient, at 1e-3 of it 5e-2 to 2e-1."""
EPS = float(np.finfo(float).eps)
MAX_ETA = 1e3
"""Largest coupled-learning amplitude: a clamp 1000 times farther than the target is no small
perturbation, and far beyond it the phases' squared voltages overflow."""


def estimate_label(method: str) -> str:
    """What a method returns: ``"dC/dg"`` (V^2/S) for the gradient estimators, ``"update"`` (V^2) for
    the clamped rules (coupled and contrastive learning: a descent direction, the gradient
    preconditioned by the output block of the free Hessian; not dC/dg, except up to a factor with
    one output)."""
    return "update" if method in CLAMPED else "dC/dg"


def estimate_unit(method: str) -> str:
    """Unit of :func:`estimate_label`'s quantity: ``"V^2/S"`` (dC/dg) or ``"V^2"`` (update)."""
    return "V^2" if method in CLAMPED else "V^2/S"


def default_beta(circuit) -> float:
    """The default EP nudge (S): ``1e-4`` times the median conductance of all resistors with
    ``g > 0`` (``1e-3`` S for a circuit without one).

    Parameters
    ----------
    circuit : physgrad.Circuit
        Conductances in S (a netlist's ``R1 a b 1k`` is 1e-3 S).
    """
    g = np.array([r.conductance for r in circuit.resistors if r.conductance > 0])
    return DEFAULT_BETA_FRACTION * float(np.median(g)) if g.size else 1e-3


def output_conductance(circuit, outputs) -> float:
    """Largest total resistor conductance (S) at one of the output nodes, :math:`\\max_o G_{oo}`
    (the largest resistor conductance of the circuit when no resistor touches an output)."""
    outs = set(outputs)
    tot = {n: 0.0 for n in outs}
    for r in circuit.resistors:
        for n in r.nodes:
            if n in outs:
                tot[n] += r.conductance
    g = max(tot.values(), default=0.0)
    if g > 0:
        return g
    return max((r.conductance for r in circuit.resistors), default=1.0) or 1.0


def _moves(v_out, y, v_all) -> tuple:
    """``(V, dev)``: the voltage scale (largest |node| or |target| voltage, V; 1 when all are 0) and
    the largest |y - v_o| (V; ``V`` when the outputs sit on their targets)."""
    v_out, y = np.asarray(v_out, float), np.asarray(y, float)
    scale = float(max(np.max(np.abs(v_all), initial=0.0), np.max(np.abs(y), initial=0.0)))
    scale = scale if scale > 0 and math.isfinite(scale) else 1.0
    dev = float(np.max(np.abs(y - v_out), initial=0.0))
    return scale, dev if dev > 0 and math.isfinite(dev) else scale


def smallest_beta(circuit, v_out, y, v_all, outputs=None) -> float:
    """The smallest usable nudge (S): ``BETA_FLOOR * eps * V * G_oo / |y - v|``.

    Parameters
    ----------
    circuit : physgrad.Circuit
    v_out : array (n_out,) or (batch, n_out)
        Free-phase output voltages (V).
    y : array like ``v_out``
        Targets (V).
    v_all : array
        Free-phase node voltages (V), for the round-off scale.
    outputs : sequence of str, optional
        Output node names (default the ``.target`` nodes).
    """
    outputs = [t[0] for t in circuit.targets] if outputs is None else outputs
    scale, dev = _moves(v_out, y, v_all)
    return BETA_FLOOR * EPS * scale * output_conductance(circuit, outputs) / dev


def smallest_eta(v_out, y, v_all) -> float:
    """The smallest usable coupled-learning amplitude (dimensionless): ``BETA_FLOOR * eps * V / |y - v|``."""
    scale, dev = _moves(v_out, y, v_all)
    return BETA_FLOOR * EPS * scale / dev


def check_beta(beta: float, floor: float, what: str = "--beta") -> None:
    """Refuse a nudge below the round-off floor (:class:`PhysgradError` naming the smallest usable beta)."""
    if not beta >= floor:
        raise PhysgradError(f"{what} {beta:.3g} S is below round-off for this circuit's scales (the nudge would move "
                            f"the outputs by less than {BETA_FLOOR:.0f} round-offs of its voltages); the smallest usable "
                            f"beta is {floor:.3g} S")


def check_eta(eta: float, floor: float, what: str = "--eta") -> None:
    """Refuse a coupled-learning amplitude below its round-off floor (naming the smallest usable eta)
    or above :data:`MAX_ETA`."""
    if eta > MAX_ETA:
        raise PhysgradError(f"{what} {eta:.3g} is above {MAX_ETA:g}: the clamp would sit {eta:.3g} times farther "
                            "from the outputs than the target; use eta <= 1 (1: clamp to the target)")
    if not eta >= floor:
        raise PhysgradError(f"{what} {eta:.3g} is below round-off for this circuit's scales (the clamp would move the "
                            f"outputs by less than {BETA_FLOOR:.0f} round-offs of its voltages); the smallest usable "
                            f"eta is {floor:.3g}")


def finite_or_none(x) -> Optional[float]:
    """``float(x)``, or None for NaN / inf / None (strict JSON)."""
    return None if x is None or not np.isfinite(x) else float(x)


def grad_result(circuit, method: str, beta: Optional[float] = None, eta: float = 1e-2, steps: int = 300,
                points: Optional[int] = None) -> dict:
    """The gradient estimate of a circuit with ``.target`` lines, as a strict-JSON-ready dict.

    Parameters
    ----------
    circuit : physgrad.Circuit
        Conductances in S; ``.target`` nodes and values (V).
    method : str
        A code of :data:`physgrad.learning.METHODS`.
    beta : float, optional
        EP nudge (S); default :func:`default_beta`. Refused below :func:`smallest_beta`
        (:class:`PhysgradError`); the default is raised to that floor when below it (noted in
        ``"notes"``).
    eta : float
        Coupled-learning amplitude (dimensionless), refused below :func:`smallest_eta` and above
        :data:`MAX_ETA`.
    steps : int
        TBP sweeps / RBP iterations. ``points`` : nudges per period (fp, hep).

    Returns
    -------
    dict
        ``cost`` (V^2), ``method``, ``beta`` (S or None), ``estimate`` (``"dC/dg"`` or ``"update"``,
        :func:`estimate_label`) and its ``unit``, ``grad`` (resistor -> value in ``unit``; None with a ``reason`` when the estimate
        is not finite), ``surrogate`` (V^2 or None), ``smallest_beta`` (S, nudged methods), and
        per method ``active_set``, ``switching_radius_S``; for circuits with controlled sources
        ``route``, ``islands``, ``island_factor``, ``island_weight``. Every number is finite or None.

    Circuits with controlled sources: ``exact`` is the adjoint of the MNA equations on the active set
    (:func:`physgrad.circuit.adjoint.mna_gradient`, any circuit); every other method runs on the
    equivalent circuit of an energy-based one (:mod:`physgrad.circuit.amplifiers`), each
    conductance's estimate times its island factor ``c_I a_I^2`` (``island_factor``; it is the factor
    ``c_I / c_L``, ``island_weight``, on the local rule in physical voltages), and is refused for the
    others with a message naming the exact route.
    """
    explicit = beta is not None
    beta = default_beta(circuit) if beta is None else float(beta)
    if circuit.transistors:
        return transistor_grad(circuit, method)
    if circuit.controlled_sources:
        return controlled_grad(circuit, method, beta if explicit else None, eta, steps, points)
    from physgrad.energies.co_content import CoContentEnergy
    from physgrad.learning import ExactGradient, make_estimator, mean_cost, switching_radius
    from physgrad.learning._phase import free_phase
    from physgrad.learning.surrogate import surrogate
    from physgrad.minimizers.co_content import CoContentMinimizer

    energy = CoContentEnergy(circuit)
    theta, y, minimizer = energy.theta0(), energy.targets(), CoContentMinimizer()
    free = free_phase(energy, theta, None, minimizer)
    v_out = np.asarray(energy.outputs(free.state), float)
    out = {"cost": finite_or_none(mean_cost(energy, free.state, y)), "method": method,
           "beta": beta if method in NUDGED else None, "estimate": estimate_label(method),
           "unit": estimate_unit(method), "grad": None, "surrogate": None, "notes": []}
    if method in NUDGED:
        floor = smallest_beta(circuit, v_out, y, free.state)
        out["smallest_beta"] = floor
        if not explicit and beta < floor:
            out["notes"].append(f"default beta {beta:.3g} S raised to the round-off floor {floor:.3g} S")
            beta = out["beta"] = floor
        check_beta(beta, floor)
    if method in COUPLED:
        check_eta(eta, smallest_eta(v_out, y, free.state))
    if method == "exact":
        res = ExactGradient().compute(energy, theta, None, y, minimizer, free)
        grad = res.grad
        a = res.active_set
        out["active_set"] = {"min_slack_V": finite_or_none(a.min_slack), "min_current_A": finite_or_none(a.min_current),
                             "near_kink": res.near_kink,
                             "active_diodes": list(energy.diode_names(a.active[0]))}
    else:
        grad = make_estimator(method, beta=beta, eta=eta, steps=steps, points=points or 0).estimate(
            energy, theta, None, y, minimizer, free)
        if method in ("ep4", "fp"):
            reach = 2 * beta if method == "ep4" else beta
            radius = switching_radius(energy, theta, None, y, minimizer, reach, free=free)
            out["switching_radius_S"] = finite_or_none(radius)
            out["nudges_cross_a_switch"] = bool(radius is not None and radius <= reach)
        if method in EP_VARIANTS:
            out["surrogate"] = finite_or_none(surrogate(energy, theta, None, y, minimizer, beta,
                                                        EP_VARIANTS[method], free))
    _set_grad(out, energy.param_names, grad)
    return out


def _set_grad(out: dict, names, grad) -> None:
    g = np.asarray(grad, float)
    if np.all(np.isfinite(g)):
        out["grad"] = {name: float(v) for name, v in zip(names, g)}
    else:
        bad = [n for n, v in zip(names, g) if not np.isfinite(v)]
        out["grad"] = None
        out["reason"] = (f"the estimate is not finite for {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} "
                         "(overflow: the circuit's voltages, conductances or nudge exceed what float64 holds)")


def _mna_exact(res, route: str, islands: str, unique: bool) -> dict:
    """The JSON object of an exact adjoint gradient (:func:`physgrad.circuit.adjoint.mna_gradient`)."""
    out = {"cost": finite_or_none(res.cost), "method": "exact", "beta": None, "estimate": estimate_label("exact"),
           "unit": estimate_unit("exact"), "grad": None, "surrogate": None, "notes": [], "route": route,
           "islands": islands, "unique": unique,
           "active_set": {"min_slack_V": finite_or_none(res.min_slack),
                          "min_current_A": finite_or_none(res.min_current), "near_kink": res.near_kink,
                          "active_diodes": list(res.active_diodes)}}
    _set_grad(out, res.names, res.grad)
    return out


def transistor_grad(circuit, method) -> dict:
    """:func:`grad_result` for a circuit with transistors: the exact adjoint only (transistors have no
    co-content, so no equilibrium-propagation estimate exists)."""
    from physgrad.circuit.adjoint import mna_gradient

    if method != "exact":
        raise PhysgradError(f"--method {method}: the circuit has transistors, which have no co-content (not "
                            "reciprocal), so equilibrium propagation and the other estimators do not apply; use "
                            "--method exact (the adjoint of the MNA equations)")
    return _mna_exact(mna_gradient(circuit), "adjoint of the MNA equations (transistors: no co-content)",
                      f"{len(circuit.transistors)} transistors", False)


def controlled_grad(circuit, method, beta, eta, steps, points) -> dict:
    """:func:`grad_result` for a circuit with controlled sources (see there); ``beta`` None: the default."""
    from physgrad.circuit.adjoint import mna_gradient
    from physgrad.circuit.amplifiers import analyze

    analysis = analyze(circuit)
    if method == "exact":
        res = mna_gradient(circuit)
        return _mna_exact(res, "adjoint of the MNA equations on the active set", analysis.describe(),
                          bool(res.solution.info.get("unique")))
    if not analysis.has_equivalent:
        raise PhysgradError(
            f"--method {method} needs an energy-based circuit (equilibrium propagation and the other estimators "
            f"contrast equilibria of a co-content); this one has none it can use ({analysis.why_not_equivalent}). "
            "Use --method exact: the adjoint of the circuit's equations on its active set, exact for any circuit")
    eq = analysis.equivalent()
    off = [nd for nd, _ in circuit.targets
           if (analysis.weights[analysis.island[nd]], analysis.scales[analysis.island[nd]]) != (1.0, 1.0)]
    if off:
        raise PhysgradError(f"--method {method}: the outputs {', '.join(off)} lie in islands of weight or voltage "
                            "scale other than the first output's (outputs on both sides of an amplifier); use "
                            "--method exact")
    out = grad_result(eq.circuit, method, beta, eta, steps, points)
    res_names = [r.name for r in circuit.resistors]
    factor = dict(zip(res_names, eq.conductance_scale))
    if out["grad"] is not None:
        out["grad"] = {name: g * float(factor[name]) for name, g in out["grad"].items()}
        if not all(np.isfinite(list(out["grad"].values()))):
            _set_grad(out, list(out["grad"]), list(out["grad"].values()))
    names = [r.name for r in eq.circuit.resistors if r.name in factor]
    trained = list(out["grad"]) if out["grad"] is not None else [n for n in names if n in set(eq.circuit.trainable_names)]
    out["island_factor"] = {name: float(factor[name]) for name in trained}
    weight = dict(zip(res_names, analysis.element_weights()[circuit.arrays.res_pos]))
    out["island_weight"] = {name: float(weight[name]) for name in trained}
    out["route"] = "equivalent circuit of the energy-based amplifier circuit, times the island factors c_I a_I^2"
    out["islands"] = analysis.describe()
    return out


def as_circuit(circuit):
    """A :class:`~physgrad.Circuit` from a Circuit (returned as is), a netlist path, or netlist text.

    Parameters
    ----------
    circuit : Circuit, str or os.PathLike
        A string holding a newline is netlist text (resistors in ohms; the first line is the
        title, as in SPICE); any other string or path names a netlist file.
    """
    import os

    from physgrad.circuit import Circuit
    from physgrad.circuit.netlist import parse_netlist, read_netlist
    from physgrad.types import BadArgumentError

    if isinstance(circuit, Circuit):
        return circuit
    if isinstance(circuit, str) and "\n" in circuit:
        return parse_netlist(circuit)
    if isinstance(circuit, (str, os.PathLike)):
        return read_netlist(circuit)
    raise BadArgumentError(f"expected a Circuit, a netlist path or netlist text, got {type(circuit).__name__}")


def solve(circuit: Union[str, os.PathLike, Circuit], **options) -> CircuitSolution:
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

    return solve_circuit(as_circuit(circuit), **options)


def gradient(circuit: Union[str, os.PathLike, Circuit], method: str = "exact", *, beta: Optional[float] = None,
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
    return grad_result(as_circuit(circuit), method, beta, eta, steps, points)

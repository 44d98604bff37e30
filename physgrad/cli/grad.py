"""``physgrad grad FILE --method M``: dC/dg for every trainable resistor of a netlist with ``.target`` lines."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

import numpy as np

from physgrad.learning import CODES


EP_VARIANTS = {code: variant for variant, code in CODES["ep"].items()}


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def register(sub) -> None:
    """Add ``grad`` to an ``add_subparsers()`` object."""
    from physgrad.learning import METHODS

    p = sub.add_parser("grad", help="gradient of the cost w.r.t. the trainable conductances",
                       description="Estimate dC/dg (C = 1/2 sum_o (v_o - y_o)^2 over the .target nodes; g = 1/R "
                                   "in S) for every trainable resistor (.trainable, default all).")
    p.add_argument("file", help="netlist with .target NODE VALUE lines")
    p.add_argument("--method", choices=METHODS, default="exact",
                   help="exact (KKT implicit differentiation), pep/nep/cep (equilibrium propagation), ep4 (4-point "
                        "stencil), fp (frequency propagation), hep (holomorphic EP; no ideal diodes), cl "
                        "(contrastive), pcpl/ncpl/ccpl (coupled learning), tbp/rbp (truncated/recurrent backprop)")
    p.add_argument("--beta", type=_positive_float, default=None,
                   help="EP nudge beta (S); default 1e-4 x the median resistor conductance, so the nudge is a "
                        "small perturbation whatever the circuit's scale")
    p.add_argument("--eta", type=_positive_float, default=1e-2, help="coupled-learning amplitude, default 1e-2")
    p.add_argument("--steps", type=_positive_int, default=300, help="TBP sweeps / RBP iterations, default 300")
    p.add_argument("--points", type=_positive_int, default=None,
                   help="nudges per period: fp (default 8, >= 4) and hep (default 6, >= 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def default_beta(circuit) -> float:
    """``1e-4`` times the median resistor conductance (S): EP's bias is then ~1e-4 relative (P-EP,
    N-EP) or ~1e-8 (C-EP) on smooth cases, far above round-off in the phase differences."""
    g = np.array([r.conductance for r in circuit.resistors if r.conductance > 0])
    return 1e-4 * float(np.median(g)) if g.size else 1e-3


NUDGED = tuple(EP_VARIANTS) + ("ep4", "fp", "hep")  # the methods that take --beta


def grad_result(circuit, method: str, beta: Optional[float] = None, eta: float = 1e-2, steps: int = 300,
                points: Optional[int] = None) -> dict:
    """The ``grad`` command's JSON object for a circuit (see :func:`run`).

    Circuits with controlled sources: ``exact`` is the adjoint of the MNA equations on the active set
    (:func:`physgrad.circuit.adjoint.mna_gradient`, any circuit); every other method runs on the
    equivalent circuit of an energy-based one (:mod:`physgrad.circuit.amplifiers`), each conductance's
    estimate times its island factor ``c_I a_I^2`` (``island_factor``; it is the factor ``c_I / c_L``,
    ``island_weight``, on the local rule in physical voltages), and is refused for the others with a message naming the exact route.
    """
    beta = default_beta(circuit) if beta is None else beta
    if circuit.transistors:
        return _transistor_grad(circuit, method)
    if circuit.controlled_sources:
        return _controlled_grad(circuit, method, beta, eta, steps, points)
    from physgrad.energies.co_content import CoContentEnergy
    from physgrad.minimizers.co_content import CoContentMinimizer
    from physgrad.learning import ExactGradient, make_estimator, mean_cost, switching_radius
    from physgrad.learning._phase import free_phase
    from physgrad.learning.surrogate import surrogate

    energy = CoContentEnergy(circuit)
    theta, y, minimizer = energy.theta0(), energy.targets(), CoContentMinimizer()
    free = free_phase(energy, theta, None, minimizer)
    out = {"cost": float(mean_cost(energy, free.state, y)), "method": method,
           "beta": beta if method in NUDGED else None, "grad": None, "surrogate": None}
    if method == "exact":
        res = ExactGradient().compute(energy, theta, None, y, minimizer, free)
        grad = res.grad
        a = res.active_set
        out["active_set"] = {"min_slack_V": _finite_or_none(a.min_slack), "min_current_A": _finite_or_none(a.min_current),
                             "near_kink": res.near_kink,
                             "active_diodes": list(energy.diode_names(a.active[0]))}
    else:
        grad = make_estimator(method, beta=beta, eta=eta, steps=steps, points=points or 0).estimate(
            energy, theta, None, y, minimizer, free)
        if method in ("ep4", "fp"):
            reach = 2 * beta if method == "ep4" else beta
            radius = switching_radius(energy, theta, None, y, minimizer, reach, free=free)
            out["switching_radius_S"] = None if radius is None or not np.isfinite(radius) else float(radius)
            out["nudges_cross_a_switch"] = bool(radius is not None and radius <= reach)
        if method in EP_VARIANTS:
            out["surrogate"] = surrogate(energy, theta, None, y, minimizer, beta, EP_VARIANTS[method], free)
    out["grad"] = {name: float(g) for name, g in zip(energy.param_names, np.asarray(grad))}
    return out


def _controlled_grad(circuit, method, beta, eta, steps, points) -> dict:
    from physgrad.circuit.adjoint import mna_gradient
    from physgrad.circuit.amplifiers import analyze
    from physgrad.types import PhysgradError

    analysis = analyze(circuit)
    if method == "exact":
        res = mna_gradient(circuit)
        return {"cost": res.cost, "method": method, "beta": None, "grad": dict(zip(res.names, map(float, res.grad))),
                "surrogate": None, "route": "adjoint of the MNA equations on the active set",
                "islands": analysis.describe(), "unique": bool(res.solution.info.get("unique")),
                "active_set": {"min_slack_V": _finite_or_none(res.min_slack),
                               "min_current_A": _finite_or_none(res.min_current), "near_kink": res.near_kink,
                               "active_diodes": list(res.active_diodes)}}
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
    out["grad"] = {name: g * float(factor[name]) for name, g in out["grad"].items()}
    out["island_factor"] = {name: float(factor[name]) for name in out["grad"]}
    weight = dict(zip(res_names, analysis.element_weights()[circuit.arrays.res_pos]))
    out["island_weight"] = {name: float(weight[name]) for name in out["grad"]}
    out["route"] = "equivalent circuit of the energy-based amplifier circuit, times the island factors c_I a_I^2"
    out["islands"] = analysis.describe()
    return out


def _transistor_grad(circuit, method) -> dict:
    """Circuits with transistors: the exact adjoint only (no co-content, so no EP estimate)."""
    from physgrad.circuit.adjoint import mna_gradient
    from physgrad.types import PhysgradError

    if method != "exact":
        raise PhysgradError(f"--method {method}: the circuit has transistors, which have no co-content (not "
                            "reciprocal), so equilibrium propagation and the other estimators do not apply; use "
                            "--method exact (the adjoint of the MNA equations)")
    res = mna_gradient(circuit)
    return {"cost": res.cost, "method": method, "beta": None, "grad": dict(zip(res.names, map(float, res.grad))),
            "surrogate": None, "route": "adjoint of the MNA equations (transistors: no co-content)",
            "islands": f"{len(circuit.transistors)} transistors", "unique": False,
            "active_set": {"min_slack_V": _finite_or_none(res.min_slack),
                           "min_current_A": _finite_or_none(res.min_current), "near_kink": res.near_kink,
                           "active_diodes": list(res.active_diodes)}}


def _finite_or_none(x):
    return float(x) if np.isfinite(x) else None


def run(args) -> int:
    """``physgrad grad``: print the gradient estimate (table, or JSON with ``--json``)."""
    from physgrad.circuit.netlist import read_netlist

    circuit = read_netlist(args.file)
    res = grad_result(circuit, args.method, args.beta, args.eta, args.steps, args.points)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"cost C = {res['cost']:.15g} V^2   method: {args.method}"
              + (f"   beta = {res['beta']:g} S" if res["beta"] is not None else "")
              + (f"   eta = {args.eta:g}" if args.method in ("pcpl", "ncpl", "ccpl") else "")
              + (f"   steps = {args.steps}" if args.method in ("tbp", "rbp") else ""))
        if "route" in res:
            print(f"circuit: {res['islands']}\ngradient: {res['route']}")
        if res["surrogate"] is not None:
            print(f"surrogate L_beta = {res['surrogate']:.15g} V^2")
        if "switching_radius_S" in res:
            r = res["switching_radius_S"]
            print("switching radius: " + ("no diode switches within the nudges" if r is None else f"{r:.6g} S"))
        width = max([8] + [len(n) for n in res["grad"]])
        print(f"\n{'resistor':<{width}}  {'g (S)':>14}  {'dC/dg (V^2/S)':>24}")
        for name, g in res["grad"].items():
            print(f"{name:<{width}}  {circuit.element(name).conductance:>14.8g}  {g:>24.15g}")
        if "active_set" in res:
            a = res["active_set"]
            slack = "n/a (no off diode)" if a["min_slack_V"] is None else f"{a['min_slack_V']:.6g} V"
            current = "n/a (no conducting diode)" if a["min_current_A"] is None else f"{a['min_current_A']:.6g} A"
            print(f"\nactive diodes: {', '.join(a['active_diodes']) or 'none'}; smallest off-diode slack {slack}; "
                  f"smallest conducting-diode current {current}")
    if res.get("nudges_cross_a_switch"):
        print("physgrad: warning: a diode switches within the nudges (switching radius "
              f"{res['switching_radius_S']:.3g} S); the estimate mixes two branches: lower --beta", file=sys.stderr)
    if res.get("active_set", {}).get("near_kink"):
        print("physgrad: warning: the equilibrium is near a kink (a diode is about to switch); the exact "
              "gradient is one-sided", file=sys.stderr)
    return 0

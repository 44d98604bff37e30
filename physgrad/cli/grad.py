"""``physgrad grad FILE --method M``: dC/dg for every trainable resistor of a netlist with ``.target`` lines.

Argparse and printing only; the result is :func:`physgrad.netlists.grad.grad_result`."""
from __future__ import annotations

import json
import sys

from physgrad.cli._args import int_at_least, positive_float


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
    p.add_argument("--beta", type=positive_float, default=None,
                   help="EP nudge beta (S) for pep/nep/cep/ep4/fp/hep; default 1e-4 x the median conductance of all "
                        "resistors (the same default as fit), so the nudge is a small perturbation whatever the "
                        "circuit's scale; a beta below round-off for the circuit's scales is refused (exit 2) with "
                        "the smallest usable beta")
    p.add_argument("--eta", type=positive_float, default=None,
                   help="coupled-learning amplitude for pcpl/ncpl/ccpl (dimensionless: the clamp moves the outputs "
                        "this fraction of the way to the target), default 1e-2")
    p.add_argument("--steps", type=int_at_least(1), default=None,
                   help="TBP sweeps (at most 10,000: the tape keeps each) / RBP iterations (at most 10^6), default 300")
    p.add_argument("--points", type=int_at_least(1), default=None,
                   help="nudges per period: fp (default 8, >= 4) and hep (default 6, >= 2)")
    p.add_argument("--json", action="store_true",
                   help="print one strict JSON object (never NaN or Infinity: a non-finite estimate is null with a "
                        "reason, exit 1)")
    p.set_defaults(func=run)


def run(args) -> int:
    """``physgrad grad``: print the gradient estimate (table, or JSON with ``--json``)."""
    from physgrad.circuit.netlist import read_netlist
    from physgrad.netlists.grad import grad_result

    from physgrad.netlists.grad import COUPLED, NUDGED
    from physgrad.types import PhysgradError

    for option, owners in (("beta", NUDGED), ("eta", COUPLED), ("steps", ("tbp", "rbp")), ("points", ("fp", "hep"))):
        if getattr(args, option) is not None and args.method not in owners:  # it would be ignored
            raise PhysgradError(f"--{option} is an option of --method {', '.join(owners)}; the method here is "
                                f"{args.method}")
    eta = 1e-2 if args.eta is None else args.eta
    steps = 300 if args.steps is None else args.steps
    circuit = read_netlist(args.file)
    res = grad_result(circuit, args.method, args.beta, eta, steps, args.points)
    for note in res["notes"]:
        print(f"physgrad: note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(res, indent=2, allow_nan=False))
        return 0 if res["grad"] is not None else 1
    if res["grad"] is None:
        print(f"physgrad: not solved: {res['reason']}", file=sys.stderr)
        return 1
    else:
        cost = "n/a" if res["cost"] is None else f"{res['cost']:.15g}"
        print(f"cost C = {cost} V^2   method: {args.method}"
              + (f"   beta = {res['beta']:g} S" if res["beta"] is not None else "")
              + (f"   eta = {eta:g}" if args.method in COUPLED else "")
              + (f"   steps = {steps}" if args.method in ("tbp", "rbp") else ""))
        if res["estimate"] == "update":
            print(f"estimate: the {'contrastive' if args.method == 'cl' else 'coupled'}-learning update (a descent direction: dC/dg preconditioned by the output "
                  "block of the free Hessian), not dC/dg; compare directions, not sizes")
        if "route" in res:
            print(f"circuit: {res['islands']}\ngradient: {res['route']}")
        if res["surrogate"] is not None:
            print(f"surrogate L_beta = {res['surrogate']:.15g} V^2")
        if "switching_radius_S" in res:
            r = res["switching_radius_S"]
            print("switching radius: " + ("no diode switches within the nudges" if r is None else f"{r:.6g} S"))
        width = max([8] + [len(n) for n in res["grad"]])
        label = f"{res['estimate']} ({res['unit']})"
        print(f"\n{'resistor':<{width}}  {'g (S)':>14}  {label:>24}")
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

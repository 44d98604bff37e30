"""The ``grad`` and ``verify`` subcommands of the ``physgrad`` CLI.

``physgrad grad FILE --method M`` prints dC/dg for every trainable resistor of a netlist with
``.target`` lines; ``physgrad verify [--quick] [--out DIR]`` runs the gradient-verification suite
and writes a report folder (exit code 1 when a check fails).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional, Sequence

import numpy as np

from physgrad.equilibrium import PhysgradError

EP_VARIANTS = {"pep": "positive", "nep": "negative", "cep": "centered"}


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


def add_grad_parser(sub) -> argparse.ArgumentParser:
    """Register ``grad`` on an ``add_subparsers()`` object."""
    from physgrad.learning import METHODS

    p = sub.add_parser("grad", help="gradient of the cost w.r.t. the trainable conductances",
                       description="Estimate dC/dg (C = 1/2 sum_o (v_o - y_o)^2 over the .target nodes; g = 1/R "
                                   "in S) for every trainable resistor (.trainable, default all).")
    p.add_argument("file", help="netlist with .target NODE VALUE lines")
    p.add_argument("--method", choices=METHODS, default="exact",
                   help="exact (KKT implicit differentiation), pep/nep/cep (equilibrium propagation), "
                        "cl (contrastive), pcpl/ncpl/ccpl (coupled learning), tbp/rbp (truncated/recurrent backprop)")
    p.add_argument("--beta", type=_positive_float, default=None,
                   help="EP nudge beta (S); default 1e-4 x the median resistor conductance, so the nudge is a "
                        "small perturbation whatever the circuit's scale")
    p.add_argument("--eta", type=_positive_float, default=1e-2, help="coupled-learning amplitude, default 1e-2")
    p.add_argument("--steps", type=_positive_int, default=300, help="TBP sweeps / RBP iterations, default 300")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=grad_command)
    return p


def add_verify_parser(sub) -> argparse.ArgumentParser:
    """Register ``verify`` on an ``add_subparsers()`` object."""
    p = sub.add_parser("verify", help="run the gradient-verification suite and write a report",
                       description="Check every estimator against exact gradients on a catalogue of circuits.")
    _verify_arguments(p)
    p.set_defaults(func=verify_command)
    return p


def _verify_arguments(p):
    p.add_argument("--quick", action="store_true", help="the small case set (seconds)")
    p.add_argument("--out", default=None, help="report folder (default reports/verify-quick or reports/verify-full)")
    p.add_argument("--seed", type=int, default=0, help="seed of the finite-difference directions")


def default_beta(circuit) -> float:
    """``1e-4`` times the median resistor conductance (S): EP's bias is then ~1e-4 relative (P-EP,
    N-EP) or ~1e-8 (C-EP) on smooth cases, far above round-off in the phase differences."""
    g = np.array([r.conductance for r in circuit.resistors if r.conductance > 0])
    return 1e-4 * float(np.median(g)) if g.size else 1e-3


def grad_result(circuit, method: str, beta: Optional[float] = None, eta: float = 1e-2, steps: int = 300) -> dict:
    """The ``grad`` command's JSON object for a circuit (see :func:`grad_command`)."""
    beta = default_beta(circuit) if beta is None else beta
    from physgrad.energies.co_content import CoContentEnergy, CoContentMinimizer
    from physgrad.learning import ExactGradient, make_estimator, mean_cost
    from physgrad.learning._phase import free_phase
    from physgrad.learning.surrogate import surrogate

    energy = CoContentEnergy(circuit)
    theta, y, minimizer = energy.theta0(), energy.targets(), CoContentMinimizer()
    free = free_phase(energy, theta, None, minimizer)
    out = {"cost": float(mean_cost(energy, free.state, y)), "method": method,
           "beta": beta if method in EP_VARIANTS else None, "grad": None, "surrogate": None}
    if method == "exact":
        res = ExactGradient().compute(energy, theta, None, y, minimizer, free)
        grad = res.grad
        a = res.active_set
        out["active_set"] = {"min_slack_V": _finite_or_none(a.min_slack), "min_current_A": _finite_or_none(a.min_current),
                             "near_kink": res.near_kink,
                             "active_diodes": [circuit.elements[circuit.arrays.dio_pos[
                                 circuit_problem_row]].name for circuit_problem_row in _active_diodes(energy, theta, a)]}
    else:
        grad = make_estimator(method, beta=beta, eta=eta, steps=steps).estimate(energy, theta, None, y, minimizer, free)
        if method in EP_VARIANTS:
            out["surrogate"] = surrogate(energy, theta, None, y, minimizer, beta, EP_VARIANTS[method], free)
    out["grad"] = {name: float(g) for name, g in zip(energy.param_names, np.asarray(grad))}
    return out


def _finite_or_none(x):
    return float(x) if np.isfinite(x) else None


def _active_diodes(energy, theta, aset):
    rows = energy.problem(theta, energy.inputs0()[0]).dio_rows
    return [int(rows[i]) for i in aset.active[0]]


def grad_command(args) -> int:
    """``physgrad grad``: print the gradient estimate (table, or JSON with ``--json``)."""
    from physgrad.netlist import read_netlist

    circuit = read_netlist(args.file)
    res = grad_result(circuit, args.method, args.beta, args.eta, args.steps)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"cost C = {res['cost']:.15g} V^2   method: {args.method}"
              + (f"   beta = {res['beta']:g} S" if res["beta"] is not None else "")
              + (f"   eta = {args.eta:g}" if args.method in ("pcpl", "ncpl", "ccpl") else "")
              + (f"   steps = {args.steps}" if args.method in ("tbp", "rbp") else ""))
        if res["surrogate"] is not None:
            print(f"surrogate L_beta = {res['surrogate']:.15g} V^2")
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
    if res.get("active_set", {}).get("near_kink"):
        print("physgrad: warning: the equilibrium is near a kink (a diode is about to switch); the exact "
              "gradient is one-sided", file=sys.stderr)
    return 0


def verify_command(args) -> int:
    """``physgrad verify``: run the suite, write the report, exit 1 on any failed check."""
    from verification.checks import VerifyConfig
    from verification.report import environment, write_report
    from verification.suite import run_suite

    mode = "quick" if args.quick else "full"
    out = args.out or f"reports/verify-{mode}"
    cfg = VerifyConfig(seed=args.seed)
    t0 = time.perf_counter()
    df = run_suite(quick=args.quick, cfg=cfg,
                   progress=lambda name, s: print(f"  {name:<12} {s:6.2f} s", file=sys.stderr))
    env = environment(cfg, time.perf_counter() - t0, ["physgrad", "verify"] + (["--quick"] if args.quick else [])
                      + (["--out", args.out] if args.out else []))
    paths = write_report(df, out, env, title=f"physgrad gradient verification ({mode})")
    from verification.report import bound_margins, counts, slope_table

    tot = counts(df).sum()
    print(f"{df.case.nunique()} cases, {int(tot['pass'])} passed, {int(tot['fail'])} failed, "
          f"{int(tot['skip'])} skipped ({env['seconds']} s)")
    st = slope_table(df)
    for m, r in st.iterrows():
        print(f"  slope {m:<5} {r['mean']:.3f} (min {r['min']:.3f}, max {r['max']:.3f}; expected {r['expected']:.0f})")
    bm = bound_margins(df)
    print(f"  bound violations: {bm['violations']} of {bm['checked']}")
    print(f"report: {paths['summary'].parent}")
    return 0 if tot["fail"] == 0 else 1


def verify_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m verification``."""
    parser = argparse.ArgumentParser(prog="python -m verification", description="physgrad gradient verification")
    _verify_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return verify_command(args)
    except PhysgradError as exc:
        print(f"physgrad: error: {exc}", file=sys.stderr)
        return 2

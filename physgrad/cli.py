"""Command-line interface: ``physgrad solve | grad | verify | train``.

Exit codes: 0 success, 1 not solved (infeasible, not converged, a failed check), 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from physgrad.equilibrium import NotSolvedError, PhysgradError

EXIT_OK, EXIT_NOT_SOLVED, EXIT_BAD_INPUT = 0, 1, 2


def _solve_command(args) -> int:
    from physgrad.netlist import read_netlist
    from physgrad.solve import solve

    circuit = read_netlist(args.file)
    sol = solve(circuit, args.solver, strict=False)
    if args.json:
        print(json.dumps(sol.to_dict(), indent=2))
    else:
        print(format_solution(sol))
    return EXIT_OK if sol.status == "converged" else EXIT_NOT_SOLVED


def format_solution(sol) -> str:
    """Human-readable tables of node voltages and element currents."""
    lines = [f"status: {sol.status}   solver: {sol.solver}   iterations: {sol.n_iter}"]
    if sol.message:
        lines.append(f"message: {sol.message}")
    if sol.status == "infeasible":
        return "\n".join(lines)
    width = max([4] + [len(n) for n in sol.circuit.nodes])
    lines += ["", f"{'node':<{width}}  {'voltage (V)':>22}"]
    lines += [f"{n:<{width}}  {v:>22.15g}" for n, v in sol.voltage_dict().items()]
    width = max([7] + [len(e.name) for e in sol.circuit.elements])
    lines += ["", f"{'element':<{width}}  {'current (A)':>22}   (first node -> second node)"]
    lines += [f"{n:<{width}}  {i:>22.15g}" for n, i in sol.current_dict().items()]
    lines += ["", f"co-content: {sol.co_content:.15g} W   power dissipated: {sol.power:.15g} W"]
    if sol.certificate is not None:
        lines.append("KKT certificate: " + sol.certificate.describe())
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from physgrad import __version__
    from physgrad.solve import SOLVERS

    parser = argparse.ArgumentParser(prog="physgrad", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"physgrad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("solve", help="steady state of a SPICE-subset netlist")
    p.add_argument("file", help="netlist file (see physgrad.netlist for the syntax)")
    p.add_argument("--solver", choices=SOLVERS, default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_solve_command)
    from physgrad.gradcli import add_grad_parser, add_verify_parser  # grad, verify (learning/verification owner)

    add_grad_parser(sub)
    add_verify_parser(sub)
    from physgrad.train import add_train_parser  # train, download (layered-mode owner)

    add_train_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except PhysgradError as exc:
        print(f"physgrad: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NotSolvedError as exc:
        print(f"physgrad: not solved: {exc}", file=sys.stderr)
        return EXIT_NOT_SOLVED


if __name__ == "__main__":
    sys.exit(main())

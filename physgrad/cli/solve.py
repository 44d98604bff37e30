"""``physgrad solve FILE [--solver S] [--json]``: the steady state of a netlist."""
from __future__ import annotations

import json

from physgrad.circuit.netlist import read_netlist
from physgrad.circuit.solve import SOLVERS, solve


def register(sub) -> None:
    """Add ``solve`` to an ``add_subparsers()`` object."""
    p = sub.add_parser("solve", help="steady state of a SPICE-subset netlist")
    p.add_argument("file", help="netlist file (see physgrad.circuit.netlist for the syntax)")
    p.add_argument("--solver", choices=SOLVERS, default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    """Solve, print a table (or JSON); exit 0 when converged, else 1."""
    circuit = read_netlist(args.file)
    sol = solve(circuit, args.solver, strict=False)
    if args.json:
        print(json.dumps(sol.to_dict(), indent=2))
    else:
        print(format_solution(sol))
    return 0 if sol.status == "converged" else 1


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

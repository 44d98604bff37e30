"""``physgrad solve FILE [--solver S] [--json]``: the steady state of a netlist."""
from __future__ import annotations

import gc
import sys

from physgrad.circuit.netlist import read_deck
from physgrad.circuit.solution import json_text
from physgrad.circuit.solve import SOLVERS, solve
from physgrad.cli._args import nonnegative_float, positive_float


def register(sub) -> None:
    """Add ``solve`` to an ``add_subparsers()`` object."""
    p = sub.add_parser("solve", help="DC operating point of a SPICE netlist",
                       description="DC operating point of a SPICE netlist. Exit codes: 0 solved (converged, "
                                   "certificate passed); 1 not solved (infeasible, not converged, certificate "
                                   "failed, a diode in breakdown); 2 bad input (unreadable file, a netlist error "
                                   "naming file:line, an ill-posed circuit).")
    p.add_argument("file", help="netlist file (see physgrad.circuit.netlist for the accepted SPICE subset)")
    p.add_argument("--solver", choices=SOLVERS, default="auto",
                   help="circuit solver; default auto (chosen by the circuit: linear, active set, Newton, MNA)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--node-capacitance", type=nonnegative_float, default=None, metavar="F",
                   help="also report the energy of one settling phase: capacitance of every node to ground in F "
                        "(e.g. 1e-12); settling time = k C / G_min (G_min: smallest total resistor conductance at a node "
                        "not held by a voltage source to ground), energy = P t + C sum v^2")
    p.add_argument("--settling-multiple", type=positive_float, default=None, metavar="K",
                   help="with --node-capacitance: settling time in RC time constants (default 5: exp(-5) of the "
                        "error left)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Solve, print a table (or strict JSON); exit 0 when converged, else 1. What the netlist holds
    that has no effect on the operating point (analysis cards, ``.control`` blocks) is named in one
    note on stderr."""
    if args.settling_multiple is not None and args.node_capacitance is None:
        from physgrad.types import PhysgradError
        raise PhysgradError("--settling-multiple sets the settling time of --node-capacitance's energy: give "
                            "--node-capacitance too")
    deck = read_deck(args.file)
    gc.freeze()  # the circuit just read (~5 objects per element, no cycles) stays out of the collections below
    try:
        return _solve_and_print(deck, args)
    finally:
        gc.unfreeze()  # back to the oldest generation (main() may run in a longer process: tests, notebooks)


def _solve_and_print(deck, args) -> int:
    if deck.notes:
        print(f"physgrad: note: {deck.note()}", file=sys.stderr)
    sol = solve(deck.circuit, args.solver, strict=False)
    phase = None
    if getattr(args, "node_capacitance", None) is not None:
        from physgrad.circuit.power import SETTLING_MULTIPLE, settling_phase
        k = SETTLING_MULTIPLE if args.settling_multiple is None else args.settling_multiple
        phase = settling_phase(sol, args.node_capacitance, k)
    if args.json:
        if phase is None:
            print(sol.to_json())
        else:
            print(json_text({**sol.to_dict(), "settling": phase}))
    else:
        print(format_solution(sol))
        if phase is not None:
            print(f"settling: C = {phase['node_capacitance_F']:g} F per node, G_min = {phase['g_min_S']:.6g} S, "
                  f"t = {phase['settling_multiple']:g} C/G_min = {_shown(phase['settling_time_s'], 's')}, "
                  f"energy = P t + C sum v^2 = {_shown(phase['energy_J'], 'J')}")
    return 0 if sol.status == "converged" else 1


def _shown(x, unit: str) -> str:
    """A settling figure for the table: None (no node settles through a resistor, or the value
    overflows a double) is said in words."""
    return f"{x:.6g} {unit}" if x is not None else "none (no node settles through a resistor, or beyond 1.8e308)"


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
    lines += ["", f"{'element':<{width}}  {'power (W)':>22}   (absorbed; sources that deliver are negative)"]
    lines += [f"{n:<{width}}  {p:>22.15g}" for n, p in sol.power_dict().items()]
    bal = sol.power_balance
    lines += ["", f"co-content: {sol.co_content:.15g} W   power dissipated: {sol.power:.15g} W",
              f"Tellegen: sources deliver {bal.delivered:.15g} W, resistors and diodes dissipate "
              f"{bal.dissipated:.15g} W, sum of V*I over all elements {bal.residual:.3g} W "
              f"(relative {bal.relative:.3g})"]
    if sol.certificate is not None:
        lines.append("KKT certificate: " + sol.certificate.describe())
    return "\n".join(lines)

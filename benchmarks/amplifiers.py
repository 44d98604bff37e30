"""Controlled sources: agreement figures against ngspice, finite differences and enumeration.

Usage::

    python3 benchmarks/amplifiers.py [--markdown reports/benchmarks/amplifiers.md] [--fuzz 60]

Measures (circuits from :mod:`verification.amplifiers`, seeded):

1. ``physgrad solve`` vs ngspice on chains of E/F amplifiers (bidirectional and one-way, some with
   G and H) with Shockley diodes: the largest node-voltage difference (V).
2. A fuzz of random circuits with Shockley diodes and every controlled source (gains up to 10,
   positive feedback included): how many both tools solve, agree within 1e-6 V, and whose answer
   fails the KKT certificate on the circuit's own equations where they differ.
3. The exact (adjoint) gradient of linear amplifier circuits vs central differences (relative step
   1e-3) of ngspice solutions: the largest relative difference.
4. EP estimators on energy-based chains (run on the equivalent circuit) vs the adjoint.
5. The three-equilibria cell: every equilibrium by enumeration, what ``solve`` returns.
6. The ReLU-MLP circuit: physgrad vs the MLP, and ngspice (steep diodes) vs the MLP and its bound.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from physgrad.circuit.adjoint import mna_gradient  # noqa: E402
from physgrad.circuit.mlp import mlp_circuit, mlp_forward, ngspice_error_bound  # noqa: E402
from physgrad.circuit.mna import build_mna, certify_mna  # noqa: E402
from physgrad.circuit.ngspice import NgspiceError, ngspice_version, run_ngspice  # noqa: E402
from physgrad.circuit.solve import solve  # noqa: E402
from physgrad.netlists.grad import grad_result  # noqa: E402
from verification.amplifiers import (all_equilibria, amplifier_chain, kendall_chain,  # noqa: E402
                                     random_shockley_controlled, three_equilibria_cell)


def _ngspice_fd(c, h=1e-3):
    node, y = c.targets[0]
    out = []
    for name in c.trainable_names:
        g = c.element(name).conductance
        cost = [0.5 * (run_ngspice(c.with_conductances({name: g * (1 + s * h)})).voltages[node] - y) ** 2
                for s in (1.0, -1.0)]
        out.append((cost[0] - cost[1]) / (2 * h * g))
    return np.array(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--fuzz", type=int, default=60)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    lines = ["# Controlled sources: agreement figures", "",
             f"`python3 benchmarks/amplifiers.py --fuzz {args.fuzz}`; {ngspice_version()}; circuits from "
             "`verification/amplifiers.py` (seeded).", ""]

    # 1. chains against ngspice
    worst, n = 0.0, 0
    for seed in range(25):
        rng = np.random.default_rng(seed)
        c = amplifier_chain(rng, backward=bool(seed % 2 == 0), extra=bool(seed % 3 == 0))
        sol, ng = solve(c), run_ngspice(c)
        worst = max(worst, max(abs(sol.voltage(nd) - ng.voltages[nd]) for nd in c.nodes))
        n += 1
    lines += ["## 1. Steady states of amplifier chains with Shockley diodes vs ngspice", "",
              f"{n} circuits (E + sense source + F, one-way E, some with G and H): largest |v_physgrad - v_ngspice| "
              f"= {worst:.2e} V (requirement 1e-6 V).", ""]

    # 2. fuzz
    rng = np.random.default_rng(0)
    counts = dict(both=0, agree=0, ng_fail=0, pg_only_fail=0, ngspice_wrong=0, physgrad_wrong=0)
    worst_agree = 0.0
    for _ in range(args.fuzz):
        c = random_shockley_controlled(rng)
        sol = solve(c, strict=False)
        try:
            ng = run_ngspice(c)
        except NgspiceError:
            counts["ng_fail"] += 1
            continue
        if not sol.converged:
            counts["pg_only_fail"] += 1
            continue
        counts["both"] += 1
        err = max(abs(sol.voltage(nd) - ng.voltages[nd]) for nd in c.nodes)
        if err <= 1e-6:
            counts["agree"] += 1
            worst_agree = max(worst_agree, err)
            continue
        mp = build_mna(c)
        x = np.concatenate([[ng.voltages[nd] for nd in c.nodes], [ng.currents[b] for b in mp.branches]])
        counts["ngspice_wrong" if not certify_mna(mp, x, np.zeros(0)).passed else "physgrad_wrong"] += 1
    lines += ["## 2. Fuzz: Shockley diodes with every controlled source (gains up to 10)", "",
              f"{args.fuzz} random circuits: ngspice finds no operating point for {counts['ng_fail']} (positive "
              f"feedback without a bounded one); physgrad fails where ngspice succeeds on {counts['pg_only_fail']}; "
              f"both solve {counts['both']}, of which {counts['agree']} agree within 1e-6 V (largest difference "
              f"{worst_agree:.2e} V). Of the others, ngspice's answer fails the KKT certificate on the circuit's own "
              f"equations in {counts['ngspice_wrong']}, physgrad's in {counts['physgrad_wrong']}.", ""]

    # 3. gradients vs ngspice finite differences
    rel = []
    for seed, backward in ((10, True), (11, True), (12, False), (13, False), (14, True), (15, False)):
        c = amplifier_chain(np.random.default_rng(seed), backward=backward, shockley=False, extra=not backward)
        g = mna_gradient(c).grad
        fd = _ngspice_fd(c)
        rel.append(float(np.max(np.abs(g - fd)) / np.max(np.abs(fd))))
    lines += ["## 3. Exact gradient of linear amplifier circuits vs finite differences of ngspice", "",
              f"6 circuits (3 bidirectional, 3 one-way with G and H), central differences with relative step 1e-3: "
              f"largest relative difference {max(rel):.2e} (requirement 1e-5; the difference quotient's truncation "
              "error is of this order).", ""]

    # 4. EP on energy-based chains
    rows = []
    for backward in (None, (4.0, -1.0)):
        c = kendall_chain(ideal=False, backward=backward)
        e = np.array(list(grad_result(c, "exact")["grad"].values()))
        for m in ("cep", "ep4", "hep"):
            g = np.array(list(grad_result(c, m)["grad"].values()))
            rows.append(f"| {'B = 1/A' if backward is None else 'B/A = 1, 1/2'} | {m} | "
                        f"{np.max(np.abs(g - e)) / np.max(np.abs(e)):.1e} |")
    lines += ["## 4. EP on energy-based amplifier circuits (equivalent circuit) vs the adjoint", "",
              "Chain of 3 islands (gains 4, -2), Shockley diodes; default beta (1e-4 x median conductance).", "",
              "| amplifiers | method | max relative difference |", "|---|---|---|"] + rows + [""]

    # 5. the three-equilibria cell
    c = three_equilibria_cell()
    eqs = sorted(float(v[0]) for v in all_equilibria(build_mna(c)))
    sol = solve(c)
    lines += ["## 5. The three-equilibria cell", "",
              f"Enumeration of the 4 active sets: equilibria at x = {', '.join(f'{v + 0.0:g}' for v in eqs)} V. "
              f"`solve`: x = {sol.voltage('x') + 0.0:g} V, unique = {sol.info['unique']}; the message says "
              f"\"{'an equilibrium; others may exist' if 'others may exist' in sol.message else sol.message}\".", ""]

    # 6. the ReLU MLP
    rng = np.random.default_rng(0)
    sizes = [4, 16, 16, 3]
    Ws = [rng.normal(size=(sizes[i + 1], sizes[i])) / np.sqrt(sizes[i]) for i in range(3)]
    bs = [0.1 * rng.normal(size=sizes[i + 1]) for i in range(3)]
    mc = mlp_circuit(Ws, bs)
    exact, ngerr, ratio = 0.0, 0.0, 0.0
    for _ in range(5):
        x = rng.normal(size=4)
        circuit = mc.with_inputs(x)
        y = mlp_forward(Ws, bs, x)
        s = solve(circuit)
        exact = max(exact, float(np.max(np.abs([s.voltage(o) for o in mc.outputs] - y))))
        ng = run_ngspice(circuit)
        e = np.abs(np.array([ng.voltages[o] for o in mc.outputs]) - y)
        ngerr = max(ngerr, float(e.max()))
        ratio = max(ratio, float(np.max(e / ngspice_error_bound(Ws, bs, x))))
    lines += ["## 6. ReLU MLP as a circuit (4-16-16-3, 5 random inputs)", "",
              f"{len(mc.circuit.elements)} elements. physgrad vs the MLP: {exact:.1e} V. ngspice (ideal diodes as steep "
              f"Shockley diodes) vs the MLP: {ngerr * 1e3:.2f} mV, at most {ratio:.2f} of the propagated bound.", "",
              f"Total time {time.perf_counter() - t0:.0f} s.", ""]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

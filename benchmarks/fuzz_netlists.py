"""Netlist fuzz, large form (issue 8): random valid circuits against ngspice, mutated netlists,
special files. Prints the counts the issue asks for: tracebacks, hangs, disagreements with ngspice
beyond 1e-6 V that are physgrad's.

Usage::

    python3 benchmarks/fuzz_netlists.py [--circuits 300] [--mutations 1500] [--seed 0] [--timeout 20]
                                        [--markdown reports/benchmarks/fuzz.md]

See :mod:`verification.fuzz` for the generators and the rule deciding whose a disagreement is.
"""
from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verification import fuzz  # noqa: E402


def _init():
    import warnings

    warnings.simplefilter("error")  # a warning on stderr counts as a crash, as under pytest


def _circuit(args):
    seed, timeout = args
    r = fuzz.compare_with_ngspice(fuzz.random_diode_circuit(seed), timeout_s=timeout)
    r["seed"] = seed
    return r


def _mutation(args):
    text, seed, timeout = args
    import numpy as np

    mutated = fuzz.mutate(text, np.random.default_rng(seed))
    out = fuzz.run_text(mutated, f"mutant{seed}.cir", timeout_s=timeout)
    return {"kind": out.kind, "detail": out.detail[-600:], "seed": seed, "text": mutated[:2000]}


def _special(args):
    path, timeout = args
    out = fuzz.run_path(path, timeout_s=timeout)
    return {"kind": out.kind, "detail": out.detail[-600:], "path": Path(path).name}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--circuits", type=int, default=300)
    ap.add_argument("--mutations", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=20, help="seconds per case (a case past it is a hang)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--markdown")
    args = ap.parse_args(argv)
    t0 = time.time()
    seeds = fuzz.seed_netlists()
    with mp.Pool(args.workers, initializer=_init, maxtasksperchild=200) as pool, tempfile.TemporaryDirectory() as tmp:
        circ = pool.map(_circuit, [(args.seed + s, args.timeout) for s in range(args.circuits)], chunksize=4)
        muts = pool.map(_mutation, [(seeds[s % len(seeds)], args.seed + s, args.timeout)
                                    for s in range(args.mutations)], chunksize=16)
        spec = pool.map(_special, [(str(p), args.timeout) for p in fuzz.special_files(Path(tmp))])
    everything = circ + muts + spec
    tracebacks = [r for r in everything if r["kind"] == "crash"]
    hangs = [r for r in everything if r["kind"] == "hang"]
    disagree = [r for r in circ if r["kind"] == "disagree"]
    theirs = [r for r in disagree if not r["physgrads"]]
    not_solved = [r for r in circ if r["kind"] == "not solved"]
    lines = [
        f"netlist fuzz: seed {args.seed}, {len(everything)} runs in {time.time() - t0:.0f} s "
        f"({args.workers} workers, {args.timeout} s limit per case)",
        f"random valid circuits vs ngspice: {len(circ)}: " + ", ".join(
            f"{k} {v}" for k, v in collections.Counter(r["kind"] for r in circ).most_common()),
        f"  worst agreement: {max((r['worst'] for r in circ if r['kind'] == 'agree'), default=0.0):.3g} V",
        f"  valid circuits not solved by physgrad: {len(not_solved)}",
        f"mutated netlists: {len(muts)}: " + ", ".join(
            f"{k} {v}" for k, v in collections.Counter(r["kind"] for r in muts).most_common()),
        f"special files: {len(spec)}: " + ", ".join(f"{r['path']} {r['kind']}" for r in spec),
        "",
        f"tracebacks: {len(tracebacks)}",
        f"hangs (> {args.timeout} s): {len(hangs)}",
        f"disagreements with ngspice > {fuzz.DISAGREE_V:g} V that are physgrad's: {len(disagree) - len(theirs)}"
        f" (and {len(theirs)} that are ngspice's: physgrad's answer certified, ngspice's not)",
    ]
    for r in (tracebacks + hangs + disagree + not_solved)[:20]:
        whose = "" if r["kind"] != "disagree" else (" (physgrad's)" if r["physgrads"] else " (ngspice's)")
        lines.append(f"--- {r['kind']}{whose} seed {r.get('seed', r.get('path'))}: "
                     + (f"worst {r['worst']:.3g} V; " if r.get("worst") is not None else "")
                     + r.get("detail", "")[-400:])
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text("```\n" + text + "\n```\n")
    return 1 if (tracebacks or hangs or len(disagree) - len(theirs)) else 0


if __name__ == "__main__":
    sys.exit(main())

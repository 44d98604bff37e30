"""Netlist reading speed (issue 17): CPU seconds of ``read_netlist`` on seeded diode ladders
(:func:`verification.ladders.diode_ladder`, 3 elements per section), ideal and Shockley, BLAS
threads pinned to 1. Each size is read ``--repeat`` times in a fresh subprocess; the minimum and
the median CPU time are printed.

Usage::

    python3 benchmarks/read_netlist.py [--sections 33333] [--repeat 5] [--pythonpath DIR]

``--pythonpath`` picks the code under test (default: this checkout), to compare with an older tree.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from verification.ladders import diode_ladder  # noqa: E402

CHILD = """
import sys, time
from physgrad.circuit.netlist import read_netlist
times = []
for _ in range(int(sys.argv[2])):
    t = time.process_time()
    c = read_netlist(sys.argv[1])
    times.append(time.process_time() - t)
times.sort()
print(len(c.elements), times[0], times[len(times) // 2])
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", type=int, nargs="+", default=[33333])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pythonpath", default=str(ROOT))
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=args.pythonpath, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    print(f"code {args.pythonpath}; load average {os.getloadavg()[0]:.1f}")
    print("| kind | sections | elements | CPU s (min) | CPU s (median) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sections:
            for kind in ("ideal", "shockley"):
                path = Path(tmp) / f"ladder_{kind}_{n}.cir"
                path.write_text(diode_ladder(n, kind, seed=args.seed))
                out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.repeat)], env=env, cwd=tmp,
                                     capture_output=True, text=True, check=True).stdout.split()
                print(f"| {kind} | {n} | {out[0]} | {float(out[1]):.3f} | {float(out[2]):.3f} |")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark (issue 17): the ``physgrad solve`` process, start-up to last byte, and the training-step rate.

Part 1, the CLI: ``python3 -m physgrad solve FILE --json`` as a process on the circuits of
``benchmarks/graphs.py``'s table A (each family member written by ``write_netlist``, fresh random
source values as there) and on ``verification/ladders.py``'s seeded ladders (one shared diode
model); CPU seconds of the child (user + system, from ``RUSAGE_CHILDREN``), the least of
``--repeat`` runs (the machine is shared: the least is the one least disturbed), and its wall
time. The floor is what any Python CLI built on numpy and scipy.sparse pays: ``python3 -c pass``,
``python3 -c 'import numpy'`` and ``python3 -c 'import scipy.sparse.linalg'``, measured the same
way. ngspice's process CPU (start-up included; least of the runs) on the circuits up to
``--ngspice-max`` nodes.

Part 2, inside a centered-EP training step on the ``indep`` family (as graphs.py's table B:
batch 32, fresh random inputs every step; median over the steps after the first): physgrad's
equilibria per CPU second, the one-sparse-LU-per-input rate measured in the same process, and
the active-set iterations per sample.

Usage::

    python3 benchmarks/cli_solve.py [--repeat 3] [--quick] [--out reports/benchmarks/cli_solve]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import graphs  # noqa: E402  (benchmarks/graphs.py: the families, Clock, in_child, uptime)

CLI_CASES = [("ladder", 1000, False), ("ladder", 33333, False), ("ladder", 1000, True), ("ladder", 33333, True),
             ("grid", 1000, False), ("grid", 10000, False), ("grid", 100, True), ("grid", 1000, True),
             ("random", 1000, False), ("random", 10000, False), ("drn", 64, False), ("drn", 64, True),
             ("power", 100, False), ("power", 200, False)]
LADDERS = [("ideal", 33333), ("shockley", 33333)]
TRAIN_CASES = [("indep", 1000, 8), ("indep", 10000, 2)]
QUICK_CLI = [("ladder", 1000, False), ("grid", 100, True)]


def child_cpu(cmd, repeat: int, env=None, timeout=600) -> dict:
    """Least CPU seconds (user + system) and its wall time over ``repeat`` runs of ``cmd``."""
    best = None
    for _ in range(repeat):
        with graphs.Clock() as c:
            r = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout)
        if r.returncode not in (0, 1):
            return {"rc": r.returncode, "error": r.stderr.decode(errors="replace")[-300:]}
        if best is None or c.child_cpu < best["cpu"]:
            best = {"cpu": c.child_cpu, "wall": c.wall, "rc": r.returncode}
    return best


def cli_case(text: str, repeat: int, ngspice: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.cir"
        path.write_text(text)
        out = {"cli": child_cpu([sys.executable, "-m", "physgrad", "solve", str(path), "--json"], repeat, env)}
        if ngspice:
            from physgrad.circuit.ngspice import run_ngspice

            best = None
            for _ in range(repeat):
                with graphs.Clock() as c:
                    run_ngspice(text, timeout_s=600)
                best = c.child_cpu if best is None else min(best, c.child_cpu)
            out["ngspice_cpu"] = best
    return out


def family_text(kind: str, n: int, shockley: bool) -> tuple:
    from physgrad.circuit.netlist import write_netlist

    circuit, inputs, _ = graphs.with_inputs(kind, n, 0, shockley)
    circuit = graphs.random_inputs(circuit, inputs, np.random.default_rng(1))
    return write_netlist(circuit), circuit.arrays.n_nodes, len(circuit.elements)


def train_case(kind: str, n: int, steps: int) -> dict:
    r = graphs.train_family(kind, n, steps, 32, False, False)
    keep = ("family", "n", "nodes", "eq_per_cpu_s", "eq_per_wall_s", "lu_eq_per_cpu_s", "iterations", "solver_info",
            "lu_max_dv")
    return {k: r[k] for k in keep if k in r}


def report(data: dict) -> str:
    env = data["env"]
    f = graphs.fmt
    L = ["# `physgrad solve` as a process, and the training-step rate (issue 17)", "",
         f"`{env['command']}`; Python {env['python']}, numpy {env['numpy']}, {env['cpu_count']} cores shared with "
         "other jobs (CPU seconds of the process that did the work; least of the runs; BLAS on one thread; "
         "physgrad's bytecode compiled first, as an installed package has it: without it each process also "
         "compiles the sources, ~0.15 s CPU).", "",
         f"- load before: `{env['load_before']}`", f"- load after: `{env['load_after']}`", "",
         "## Floor: an interpreter with numpy and scipy.sparse", "",
         "| command | CPU s (wall) |", "|---|---:|"]
    for name, r in data["floor"].items():
        L.append(f"| `{name}` | {f(r['cpu'])} ({f(r['wall'])}) |")
    L += ["", "## `python3 -m physgrad solve FILE --json` (start-up, imports, reading, solving, writing)", "",
          "| circuit | nodes | elements | CLI CPU s (wall) | ngspice process CPU s | CLI / ngspice |",
          "|---|---:|---:|---:|---:|---:|"]
    for r in data["cli"]:
        cli, ng = r["cli"], r.get("ngspice_cpu")
        cpu = cli.get("cpu")
        L.append(f"| {r['name']} | {r['nodes']:,} | {r['elements']:,} | "
                 f"{f(cpu) if cpu is not None else 'rc ' + str(cli.get('rc'))} ({f(cli.get('wall'))}) | "
                 f"{f(ng) if ng is not None else '—'} | {f(cpu / ng) if cpu and ng else '—'} |")
    if data.get("train"):
        L += ["", "## Inside a centered-EP training step (`indep`, batch 32, fresh random inputs)", "",
              "| size | physgrad eq/CPU-s (eq/wall-s) | one LU per input eq/CPU-s | physgrad / LU | "
              "iterations per sample (free, +, -) | routes (border / pattern sample-iterations, factorizations) |",
              "|---:|---:|---:|---:|---|---|"]
        for r in data["train"]:
            if "error" in r:
                L.append(f"| {r.get('n', '?')} | error: {r['error'][:80]} | | | | |")
                continue
            si = r.get("solver_info", {})
            L.append(f"| {r['n']:,} | {f(r['eq_per_cpu_s'])} ({f(r['eq_per_wall_s'])}) | {f(r['lu_eq_per_cpu_s'])} | "
                     f"{f(r['eq_per_cpu_s'] / r['lu_eq_per_cpu_s'])} | {r['iterations']} | "
                     f"{si.get('border_samples', 0)} / {si.get('pattern_samples', 0)}, "
                     f"{si.get('pattern_factorizations', 0)} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="two small circuits, no training step")
    ap.add_argument("--ngspice-max", type=int, default=1000, help="ngspice only up to this many nodes")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--no-ngspice", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "cli_solve"))
    args = ap.parse_args(argv)
    import shutil

    ng = shutil.which("ngspice") is not None and not args.no_ngspice
    env = {"python": platform.python_version(), "numpy": np.__version__, "cpu_count": os.cpu_count(),
           "load_before": graphs.uptime(), "command": " ".join([Path(sys.executable).name] + sys.argv)}
    # bytecode as an installed package has it (pip compiles on install; this environment may set
    # PYTHONDONTWRITEBYTECODE, and compiling physgrad's sources costs ~0.15 s CPU per process)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "physgrad"), str(ROOT / "verification")],
                   check=True, capture_output=True)
    floor = {}
    for name, code in (("python3 -c pass", "pass"), ("python3 -c 'import numpy'", "import numpy"),
                       ("python3 -c 'import scipy.sparse.linalg'", "import scipy.sparse.linalg")):
        floor[name] = child_cpu([sys.executable, "-c", code], args.repeat)
    cli = []
    for kind, n, shk in (QUICK_CLI if args.quick else CLI_CASES):
        text, nodes, elements = family_text(kind, n, shk)
        r = cli_case(text, args.repeat, ng and nodes <= args.ngspice_max)
        r.update(name=f"{kind}{'-shk' if shk else ''} {n:,} (graphs.py)", nodes=nodes, elements=elements)
        print(json.dumps(r), flush=True)
        cli.append(r)
    if not args.quick:
        from verification.ladders import diode_ladder

        for kind, n in LADDERS:
            r = cli_case(diode_ladder(n, kind), args.repeat, False)
            r.update(name=f"ladder {kind} {n:,} (verification/ladders.py)", nodes=2 * n + 1, elements=3 * n + 1)
            print(json.dumps(r), flush=True)
            cli.append(r)
    train = []
    if not (args.quick or args.no_train):
        for kind, n, steps in TRAIN_CASES:
            r = graphs.in_child(train_case, kind, n, steps)
            print(json.dumps({k: v for k, v in r.items() if k != "traceback"}), flush=True)
            train.append(r)
    env["load_after"] = graphs.uptime()
    data = {"env": env, "floor": floor, "cli": cli, "train": train}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=float) + "\n")
    out.with_suffix(".md").write_text(report(data))
    print(f"wrote {out.with_suffix('.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

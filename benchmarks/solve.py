"""Benchmark: physgrad's solvers vs a plain cvxpy model vs ngspice on the same circuits.

Circuits
--------
- ``random-N`` (``--sizes 100,1000,10000``): a random resistor / ideal-diode graph with local
  connections (:func:`random_grid_graph`): ``N`` nodes on a square lattice, a random spanning
  tree of lattice edges plus half of the others (1e-3..1e-2 S), ``N // 20`` resistors to
  ground, ``N // 4`` ideal diodes (vth = 0) on unused lattice edges or to ground,
  ``max(2, N // 50)`` voltage sources to ground (-5..5 V), ``max(1, N // 100)`` current sources
  (-1..1 mA). Laid-out circuits look like this: small separators, cheap sparse factorisations.
- ``uniform-N``: the same counts on a graph without locality (:func:`random_diode_graph`:
  random spanning tree plus ``N`` random edges). Expander-like: sparse LU fill grows ~N^2, so
  every route (physgrad, cvxpy, ngspice) is slow at 10k nodes; measured separately.
- ``shockley-N``: the grid graph with Shockley diodes (IS = 1e-14 A, N = 1, ngspice's vt and
  gmin) instead of ideal ones: physgrad's ``newton`` against ngspice on identical physics.
- ``drn-xs``: the DRN-XS network on one MNIST test image: 784 pixels x 2 input voltage sources
  ``gain * (x, -x)`` (gain 100), 100 hidden nodes each with an ideal diode to ground (first half
  ``v >= 0``, second half ``v <= 0``), dense non-negative conductances input -> hidden and
  hidden -> output drawn uniform(0, 1/sqrt(fan_in)) S, 10 linear output nodes.

Routes
------
- physgrad ``solve(circuit, solver=...)`` for ``activeset``, ``qp``, ``coordinate``, ``linear``
  (only on circuits without diodes), ``newton`` (Shockley diodes only) and ``auto``, each "n/a"
  where the solver refuses the circuit; timed from the Circuit
  (problem building included), median of ``--repeat`` runs (fewer once a route has used 5 s).
- plain cvxpy: the textbook model a user would write — one variable per node, one
  ``0.5 * g * cp.square(v[a] - v[b])`` term per resistor summed in Python, one constraint per
  source and diode, ``prob.solve()`` with the default solver; timed once, model building
  included. (Measured: 100-1000x slower to compile than one ``quad_form``.)
- ngspice (``physgrad.circuit.ngspice.run_ngspice`` on :func:`physgrad.circuit.netlist.write_netlist`'s text:
  ideal diodes become steep Shockley diodes, tight ``.options``); timed once (process wall time).

Every slow route runs in a forked child under a wall-clock cap (``--cap-cvxpy``,
``--cap-ngspice``, ``--cap-physgrad``); a capped route is reported as ``> cap``. ngspice on a
circuit is skipped when its time extrapolated from the previous size of the same graph kind
(``NGSPICE_EXPONENT``) exceeds ``--skip-ngspice-above`` (3 min).

Agreement is the max |dV| (V) of each route against physgrad's ``auto`` answer (exact KKT solve).
ngspice cannot agree better than its steep diodes' forward drop ``N vt ln(1 + I / IS)``
(0.36 mV at 1 mA with IS = 1e-9 A, N = 1e-3) and leakage; cvxpy's default solver answers to its
own tolerances.

Usage::

    python benchmarks/solve.py [--sizes 100,1000,10000,uniform-1000,uniform-10000,
                                        shockley-1000,shockley-10000,drn-xs]
                               [--repeat 3] [--no-ngspice] [--out reports/benchmarks/solve]
                               [--cap-cvxpy 120] [--cap-ngspice 180] [--cap-physgrad 45]
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from physgrad.circuit.elements import Circuit, CurrentSource, IdealDiode, Resistor, VoltageSource  # noqa: E402
from physgrad.energies.layered import DeepResistive  # noqa: E402
from physgrad.layered.data import FILES, DataNotFoundError, find_data_dir, read_idx  # noqa: E402
from verification.circuits import random_diode_graph, random_grid_graph  # noqa: E402

PHYSGRAD_SOLVERS = ("activeset", "qp", "coordinate", "linear", "newton", "auto")
EXACT_ROUTES = ("activeset", "qp", "coordinate", "linear", "newton", "auto")
DEFAULT_SIZES = "100,1000,10000,uniform-1000,uniform-10000,shockley-1000,shockley-10000,drn-xs"
REPEAT_BUDGET_S = 5.0  # s; a physgrad route slower than this is not repeated further
# ngspice time ~ nodes**exponent, to skip runs that would exceed --skip-ngspice-above: sparse LU
# on graphs with small separators (lattices, nested dissection) costs ~n^1.5; on expander-like
# graphs the factor fills in and the cost approaches the dense n^3.
NGSPICE_EXPONENT = {"grid": 1.5, "shockley": 1.5, "uniform": 3.0}  # by graph kind


# --------------------------------------------------------------------------------------------
# circuits
# --------------------------------------------------------------------------------------------
def mnist_image(index: int = 0, seed: int = 0, data_dir=None) -> tuple:
    """Pixel values in [0, 1] (784,) of MNIST test image ``index`` (found by
    :func:`physgrad.layered.data.find_data_dir`: ``--data-dir``, ``$PHYSGRAD_DATA``, ...), or a random
    image when the data are missing; returns ``(x, description)``."""
    try:
        folder = find_data_dir("mnist", data_dir)
    except DataNotFoundError:
        rng = np.random.default_rng(seed)
        return rng.uniform(0, 1, 784), f"random image (seed {seed}; MNIST not found: pass --data-dir)"
    stem = FILES["test_images"]
    path = next(p for p in (folder / f"{stem}.gz", folder / stem) if p.exists())
    return read_idx(path)[index].reshape(-1) / 255.0, f"MNIST test image {index}"


def drn_xs(x: np.ndarray, seed: int = 0, gain: float = 100.0, n_hidden: int = 100, n_out: int = 10) -> Circuit:
    """DRN-XS as a Circuit (:meth:`physgrad.energies.layered.DeepResistive.to_circuit`): inputs
    ``gain * (x, -x)`` (V), ideal-diode hidden layer, linear outputs.

    Conductances uniform(0, 1/sqrt(fan_in)) S: fan_in 1568 (input -> hidden), 100 (hidden -> out).
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=float).reshape(1, -1)
    energy = DeepResistive(x.shape[1], (n_hidden,), n_out, input_gain=gain)
    n_in = energy.n_input_units
    W1 = rng.uniform(0, 1 / math.sqrt(n_in), size=(n_in, n_hidden))
    W2 = rng.uniform(0, 1 / math.sqrt(n_hidden), size=(n_hidden, n_out))
    return energy.to_circuit((W1, W2, np.zeros(n_hidden), np.zeros(n_out)), x)


# --------------------------------------------------------------------------------------------
# routes (each returns node voltages in circuit.nodes order and seconds)
# --------------------------------------------------------------------------------------------
def route_physgrad(circuit: Circuit, solver: str, repeat: int) -> dict:
    from physgrad.circuit.solve import solve

    times, sol = [], None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        sol = solve(circuit, solver=solver)
        times.append(time.perf_counter() - t0)
        if sum(times) > REPEAT_BUDGET_S:  # slow route: fewer repeats, same cap
            break
    return {"v": np.asarray(sol.voltages, dtype=float), "seconds": statistics.median(times),
            "status": sol.status, "detail": sol.solver}


def route_plain_cvxpy(circuit: Circuit) -> dict:
    """The textbook cvxpy model: one squared term per resistor, default solver."""
    import warnings

    import cvxpy as cp

    warnings.simplefilter("ignore")  # "too many subexpressions": that is the point (forked child)
    t0 = time.perf_counter()
    idx = {n: i + 1 for i, n in enumerate(circuit.nodes)}
    idx["0"] = 0
    v = cp.Variable(len(circuit.nodes) + 1)
    terms, cons = [], [v[0] == 0]
    for el in circuit.elements:
        if isinstance(el, Resistor):
            terms.append(0.5 * el.conductance * cp.square(v[idx[el.n1]] - v[idx[el.n2]]))
        elif isinstance(el, CurrentSource):
            terms.append(el.value * (v[idx[el.pos]] - v[idx[el.neg]]))
        elif isinstance(el, VoltageSource):
            cons.append(v[idx[el.pos]] - v[idx[el.neg]] == el.value)
        elif isinstance(el, IdealDiode):
            cons.append(v[idx[el.anode]] - v[idx[el.cathode]] <= el.vth)
        else:
            raise TypeError(f"plain cvxpy model: unsupported element {el.name}")
    prob = cp.Problem(cp.Minimize(sum(terms)), cons)
    prob.solve()
    seconds = time.perf_counter() - t0
    return {"v": np.asarray(v.value[1:], dtype=float), "seconds": seconds, "status": prob.status,
            "detail": prob.solver_stats.solver_name}


def route_ngspice(circuit: Circuit, cap_s: float) -> dict:
    from physgrad.circuit.netlist import write_netlist
    from physgrad.circuit.ngspice import run_ngspice

    text = write_netlist(circuit)
    res = run_ngspice(text, timeout_s=cap_s)
    v = np.array([res.voltages[n] for n in circuit.nodes])
    return {"v": v, "seconds": res.elapsed_s, "status": "ok" if not res.warnings else
            f"ok, {len(res.warnings)} warnings", "detail": res.version}


def _child(conn, fn, args):
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as exc:  # report everything to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
                   traceback.format_exc()))
    finally:
        conn.close()


def run_capped(fn: Callable, args: tuple, cap_s: float) -> dict:
    """Run ``fn(*args)`` in a forked child; kill it after ``cap_s`` seconds (wall clock)."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args), daemon=True)
    t0 = time.perf_counter()
    proc.start()
    child.close()
    if parent.poll(cap_s):
        try:
            msg = parent.recv()
        except EOFError:
            msg = ("error", "child died without an answer", "")
    else:
        msg = ("capped",)
    proc.join(timeout=1)
    if proc.is_alive():
        proc.kill()
        proc.join()
    wall = time.perf_counter() - t0
    if msg[0] == "ok":
        return {**msg[1], "outcome": "ok", "wall": wall}
    if msg[0] == "capped":
        return {"outcome": "capped", "seconds": cap_s, "status": f"killed at cap {cap_s:g} s",
                "v": None, "detail": "", "wall": wall}
    return {"outcome": "error", "seconds": float("nan"), "status": msg[1], "v": None,
            "detail": msg[2], "wall": wall}


# --------------------------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    circuit: str
    nodes: int
    resistors: int
    diodes: int
    sources: int
    route: str
    seconds: float
    outcome: str  # ok | capped | skipped | n/a | error
    max_dv: float  # V, against physgrad auto
    status: str
    detail: str = ""


def describe(circuit: Circuit) -> dict:
    a = circuit.arrays
    return {"nodes": a.n_nodes, "resistors": len(a.g), "diodes": len(a.vth) + len(a.shk_IS),
            "sources": len(a.vs_value) + len(a.cs_value), "shockley": len(a.shk_IS) > 0}


def bench_circuit(name: str, circuit: Circuit, args, ngspice_estimate: Optional[float]) -> list:
    info = describe(circuit)
    rows, answers = [], {}
    for solver in PHYSGRAD_SOLVERS:
        res = run_capped(route_physgrad, (circuit, solver, args.repeat), args.cap_physgrad)
        if res["outcome"] == "error" and "PhysgradError" in res["status"] and "handles" in res["status"]:
            # the solver's accepts() refused the circuit (e.g. linear with diodes)
            res = {**res, "outcome": "n/a",
                   "status": "n/a: " + res["status"].split(": ", 1)[1].split(";")[0]}
        answers[solver] = res
        _progress(name, solver, res)
    ref = answers["auto"]["v"]
    if info["shockley"]:
        res = {"outcome": "n/a", "seconds": float("nan"), "v": None, "detail": "",
               "status": "n/a: the textbook model is a QP (Shockley diodes need exponential cones)"}
    else:
        res = run_capped(route_plain_cvxpy, (circuit,), args.cap_cvxpy)
    answers["plain cvxpy"] = res
    _progress(name, "plain cvxpy", res)
    if args.no_ngspice:
        answers["ngspice"] = {"outcome": "skipped", "seconds": float("nan"), "v": None,
                              "status": "--no-ngspice", "detail": ""}
    elif ngspice_estimate is not None and ngspice_estimate > args.skip_ngspice_above:
        answers["ngspice"] = {"outcome": "skipped", "seconds": float("nan"), "v": None,
                              "status": f"skipped: estimated {ngspice_estimate:.0f} s > "
                                        f"{args.skip_ngspice_above:g} s", "detail": ""}
    else:
        res = run_capped(route_ngspice, (circuit, args.cap_ngspice), args.cap_ngspice + 30)
        if res["outcome"] == "error" and "NgspiceTimeoutError" in res["status"]:
            res = {**res, "outcome": "capped", "seconds": args.cap_ngspice,
                   "status": f"killed at cap {args.cap_ngspice:g} s"}
        answers["ngspice"] = res
    _progress(name, "ngspice", answers["ngspice"])
    for route, res in answers.items():
        dv = (float(np.max(np.abs(res["v"] - ref))) if res.get("v") is not None and ref is not None
              else float("nan"))
        status = str(res["status"])
        if res["outcome"] == "ok" and res.get("detail"):
            status += f" ({res['detail']})"
        rows.append(Row(name, info["nodes"], info["resistors"], info["diodes"], info["sources"],
                        route, float(res["seconds"]), res["outcome"], dv, status,
                        str(res.get("detail", "")).splitlines()[-1][:80] if res.get("detail") else ""))
    return rows


def _progress(name, route, res):
    print(f"  [{name}] {route:<12} {res['outcome']:<8} {res['seconds']:.4g} s  {res['status']}",
          file=sys.stderr, flush=True)


def _fmt_s(row: Row) -> str:
    if row.outcome == "capped":
        return f"> {row.seconds:g}"
    if row.outcome != "ok":
        return row.outcome
    return f"{row.seconds:.3g}"


def _fmt_dv(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.1e}"


def table(rows: list) -> str:
    head = ("| circuit | nodes | R | D | sources | route | time (s) | max abs dV vs auto (V) | status |\n"
            "|---|---:|---:|---:|---:|---|---:|---:|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r.circuit} | {r.nodes} | {r.resistors} | {r.diodes} | {r.sources} | "
                     f"{r.route} | {_fmt_s(r)} | {_fmt_dv(r.max_dv)} | {r.status} |")
    return "\n".join(lines)


def ratios(rows: list) -> str:
    lines = ["| circuit | fastest exact physgrad route | time (s) | plain cvxpy / fastest | "
             "ngspice / fastest | target met (>= 10x cvxpy, >= 100x ngspice) |",
             "|---|---|---:|---:|---:|---|"]
    for name in dict.fromkeys(r.circuit for r in rows):
        rs = [r for r in rows if r.circuit == name]
        exact = [r for r in rs if r.route in EXACT_ROUTES and r.outcome == "ok"]
        if not exact:
            continue
        best = min(exact, key=lambda r: r.seconds)

        def ratio(route):
            r = next(r for r in rs if r.route == route)
            if r.outcome == "ok":
                return r.seconds / best.seconds, f"{r.seconds / best.seconds:.3g}x"
            if r.outcome == "capped":
                return r.seconds / best.seconds, f"> {r.seconds / best.seconds:.3g}x (cap)"
            return None, r.outcome

        (rc, tc), (rn, tn) = ratio("plain cvxpy"), ratio("ngspice")
        met = []
        if rc is not None:
            met.append("cvxpy " + ("yes" if rc >= 10 else "no"))
        if rn is not None:
            met.append("ngspice " + ("yes" if rn >= 100 else "no"))
        lines.append(f"| {name} | {best.route} | {best.seconds:.3g} | {tc} | {tn} | "
                     f"{', '.join(met) or 'n/a'} |")
    return "\n".join(lines)


def versions() -> str:
    import cvxpy
    import scipy

    try:
        from physgrad.circuit.ngspice import ngspice_version

        ng = ngspice_version()
    except Exception as exc:  # noqa: BLE001 - report, don't fail
        ng = f"unavailable ({type(exc).__name__})"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
            f"cvxpy {cvxpy.__version__}, {ng}; {platform.machine()} {os.cpu_count()} cores "
            f"({platform.processor() or platform.platform()}); load average at the end {load} "
            "(other jobs share the machine: small times are noisy)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=DEFAULT_SIZES,
                   help="comma-separated: N (random grid graph, N nodes), uniform-N (random graph "
                        "without locality, the worst case for sparse LU), shockley-N (grid graph "
                        "with Shockley diodes: Newton vs ngspice on the same physics) and/or "
                        "'drn-xs'")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of each physgrad solver (median reported); slow routes run once")
    p.add_argument("--no-ngspice", action="store_true", help="skip ngspice")
    p.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "solve"),
                   help="output path prefix: writes PREFIX.csv and PREFIX.md ('' = print only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="MNIST folder for the drn-xs input (default: $PHYSGRAD_DATA, ...)")
    p.add_argument("--cap-cvxpy", type=float, default=120.0, help="plain cvxpy cap (s)")
    p.add_argument("--cap-ngspice", type=float, default=180.0, help="ngspice cap (s)")
    p.add_argument("--cap-physgrad", type=float, default=45.0, help="cap per physgrad solver (s)")
    p.add_argument("--skip-ngspice-above", type=float, default=180.0,
                   help="skip ngspice when its extrapolated time exceeds this (s)")
    args = p.parse_args(argv)
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    for s in sizes:
        if s != "drn-xs" and not s.removeprefix("uniform-").removeprefix("shockley-").isdigit():
            p.error(f"--sizes: {s!r} is not N, uniform-N, shockley-N (node counts) or 'drn-xs'")
    args.sizes = sizes
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    rows = []
    last_ng: dict = {}  # graph kind -> (nodes, seconds) of its last ngspice run
    notes = []
    for size in args.sizes:
        if size == "drn-xs":
            x, desc = mnist_image(0, args.seed, args.data_dir)
            circuit, name, estimate = drn_xs(x, args.seed), "drn-xs", None
            notes.append(f"drn-xs input: {desc}, gain 100, weights seed {args.seed}")
        else:
            kind = size.split("-")[0] if "-" in size else "grid"
            uniform = kind == "uniform"
            n = int(size.split("-")[-1])
            if size.startswith("shockley-"):
                circuit, name = random_grid_graph(n, args.seed, shockley=True), size
            else:
                circuit = (random_diode_graph if uniform else random_grid_graph)(n, args.seed)
                name = f"uniform-{n}" if uniform else f"random-{n}"
            prev = last_ng.get(kind)
            estimate = (prev[1] * (n / prev[0]) ** NGSPICE_EXPONENT[kind]) if prev else None
        print(f"{name}: building done, benchmarking", file=sys.stderr, flush=True)
        new = bench_circuit(name, circuit, args, estimate)
        rows += new
        ng = next(r for r in new if r.route == "ngspice")
        if size != "drn-xs" and ng.outcome == "ok":
            last_ng[kind] = (describe(circuit)["nodes"], ng.seconds)
    total = time.perf_counter() - t_start
    text = (f"# physgrad solve benchmark\n\n{versions()}\n\n"
            f"Command: `python benchmarks/solve.py --sizes {','.join(args.sizes)} "
            f"--repeat {args.repeat}{' --no-ngspice' if args.no_ngspice else ''}`; "
            f"total {total:.1f} s.\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n"
            + table(rows) + "\n\n## Speed-up of the fastest exact physgrad route\n\n" + ratios(rows)
            + "\n")
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        import pandas as pd

        pd.DataFrame([r.__dict__ for r in rows]).to_csv(out.with_suffix(".csv"), index=False)
        out.with_suffix(".md").write_text(text)
        print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark (issue 17): circuit families nobody tuned for, solved alone and inside training.

Families (seeded; :func:`family` builds each): ``ladder`` (series resistors, shunt resistors and
shunt diodes to ground: a chain; 33,333 sections = 10^5 elements), ``grid`` (a random 2-D lattice
graph of resistors and diodes, :func:`verification.circuits.random_grid_graph`), ``random`` (an
expander-like random sparse graph, :func:`verification.circuits.random_diode_graph`), ``drn`` (a
DRN-like layered graph: +x/-x input sources, resistive crossbars, diode hidden units to ground,
outputs), ``power`` (a power-grid-like mesh: a 2-D mesh of low-resistance wires, supply sources
at a few pads, loads drawing current, clamp diodes), each with ideal diodes or (``-shk``) Shockley
diodes (``verification.circuits.SHOCKLEY_MODEL``, the physics ngspice simulates).

Part A, ``physgrad solve`` on one circuit (fresh random source values; each family in its own
child process for its peak memory): physgrad in-process (``physgrad.circuit.solve``; netlist
reading excluded: it belongs to the reader), the same through the CLI process
(``python3 -m physgrad solve FILE``: start-up and reading included), ngspice's process (start-up
included, tight options; its CPU from the children's rusage), and "one sparse LU": the final
system (conducting diodes known; Shockley: the last Newton matrix) factorized once by SuperLU.

Part B, inside a centered-EP training step (free, +beta, -beta; batch 32; fresh random inputs every
step) on independent random diode networks (``indep``: a lattice graph with no fixed sources, 5 input
sources, n/4 ideal diodes): physgrad's equilibria per CPU second and wall second; one sparse LU per
input (the final KKT system of each equilibrium, factorized and solved once: the arithmetic floor of
solving inputs one at a time); ngspice ``.op`` per input (process CPU; up to 2,000 nodes); a cvxpy model compiled once
(OSQP, inputs as parameters) at <= 1k nodes; RSS after each step. Shockley circuits: physgrad's CPU
per equilibrium (the batched Newton of issue 17 item 3, and the one-sample route it replaced) against
ngspice's process CPU, the rate inside a centered-EP step (fresh inputs; the same inputs again at the
next conductances), and the candidate factorizations of the Newton matrices (``--shockley-only``
reruns just these rows into the saved JSON).

Part C, ``fit`` end to end at 1k nodes (a 1k-node ``indep`` netlist, 512 samples, 2 epochs, evaluation
every epoch and every second epoch) against the in-step rate. The report's discussion of the issue's
targets is written by hand below the generated tables (``--report-only JSON`` regenerates the tables).

Every time is CPU (process time; BLAS on one thread) and wall; the machine is shared, so the report
records ``uptime``'s load. Usage::

    python3 benchmarks/graphs.py [--quick] [--no-ngspice] [--out reports/benchmarks/graphs]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
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


def rss_mb() -> float:
    """Current resident set size (MB)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


class Clock:
    """Wall and CPU seconds of a block (CPU of this process and of the children it waited for)."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.k = r.ru_utime + r.ru_stime
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.child_cpu = r.ru_utime + r.ru_stime - self.k
        return False


# --- the families ------------------------------------------------------------------------------------------
def _els():
    from physgrad.circuit import elements as E
    from verification.circuits import SHOCKLEY_MODEL

    return E, SHOCKLEY_MODEL


def _diode(name, a, b, shockley, vth=0.0):
    E, model = _els()
    return E.ShockleyDiode(name, a, b, model) if shockley else E.IdealDiode(name, a, b, vth)


def ladder(sections: int, seed: int = 0, shockley: bool = False):
    """Series resistors (10-100 ohm), shunt resistors (1-10 kohm) and shunt diodes to ground (ideal:
    thresholds 0.3-0.7 V); one input source ``vin`` at the head. ``3 x sections`` elements."""
    E, _ = _els()
    rng = np.random.default_rng(seed)
    els = [E.VoltageSource("vin", "n0", "0", 5.0)]
    rs, rp, vt = rng.uniform(10, 100, sections), rng.uniform(1e3, 1e4, sections), rng.uniform(0.3, 0.7, sections)
    for k in range(1, sections + 1):
        els += [E.Resistor(f"rs{k}", f"n{k - 1}", f"n{k}", 1.0 / rs[k - 1]),
                E.Resistor(f"rp{k}", f"n{k}", "0", 1.0 / rp[k - 1]),
                _diode(f"d{k}", f"n{k}", "0", shockley, vt[k - 1])]
    return E.Circuit(tuple(els), f"diode ladder, {sections} sections"), ("vin",), (f"n{sections}",)


def drn(n_in: int, n_hidden: int, n_out: int, seed: int = 0, shockley: bool = False):
    """DRN-like layered graph: inputs as +x/-x source pairs, full resistive crossbars input -> hidden ->
    output, each hidden node with a diode pair to bias sources (+-0.5 V) and a resistor to ground."""
    E, _ = _els()
    rng = np.random.default_rng(seed)
    els = [E.VoltageSource("vbp", "bp", "0", 0.5), E.VoltageSource("vbn", "bn", "0", -0.5)]
    inputs = []
    for i in range(n_in):
        els += [E.VoltageSource(f"vp{i}", f"xp{i}", "0", 0.0), E.VoltageSource(f"vn{i}", f"xn{i}", "0", 0.0)]
        inputs += [f"vp{i}", f"vn{i}"]
    g1 = rng.uniform(1e-4, 1e-3, (2 * n_in, n_hidden))
    for j in range(n_hidden):
        for i in range(n_in):
            els += [E.Resistor(f"rp{i}_{j}", f"xp{i}", f"h{j}", g1[2 * i, j]),
                    E.Resistor(f"rn{i}_{j}", f"xn{i}", f"h{j}", g1[2 * i + 1, j])]
        els += [_diode(f"du{j}", f"h{j}", "bp", shockley), _diode(f"dl{j}", "bn", f"h{j}", shockley),
                E.Resistor(f"rg{j}", f"h{j}", "0", 1e-3)]
    g2 = rng.uniform(1e-4, 1e-3, (n_hidden, n_out))
    for o in range(n_out):
        els += [E.Resistor(f"ro{j}_{o}", f"h{j}", f"o{o}", g2[j, o]) for j in range(n_hidden)]
        els.append(E.Resistor(f"rog{o}", f"o{o}", "0", 1e-3))
    c = E.Circuit(tuple(els), f"DRN-like layered graph {n_in}x2-{n_hidden}-{n_out}")
    return c, tuple(inputs), tuple(f"o{o}" for o in range(n_out))


def power(side: int, seed: int = 0, shockley: bool = False):
    """Power-grid-like mesh: ``side x side`` nodes joined by 0.05-0.2 ohm wires, supply sources (1 V)
    at the 4 corners through 0.01 ohm, a load current source (0-5 mA) at every 4th node, a clamp
    diode from ground to every 10th node (conducts when the node undershoots 0 V) and a 1 kohm leak at
    every node. Inputs: the 4 supplies."""
    E, _ = _els()
    rng = np.random.default_rng(seed)
    name = lambda r, c: f"p{r}_{c}"  # noqa: E731
    els = []
    for r in range(side):
        for c in range(side):
            if c + 1 < side:
                els.append(E.Resistor(f"rh{r}_{c}", name(r, c), name(r, c + 1), 1.0 / rng.uniform(0.05, 0.2)))
            if r + 1 < side:
                els.append(E.Resistor(f"rv{r}_{c}", name(r, c), name(r + 1, c), 1.0 / rng.uniform(0.05, 0.2)))
            k = r * side + c
            els.append(E.Resistor(f"rl{r}_{c}", name(r, c), "0", 1e-3))
            if k % 4 == 1:
                els.append(E.CurrentSource(f"il{r}_{c}", name(r, c), "0", float(rng.uniform(0, 5e-3))))
            if k % 10 == 3:
                els.append(_diode(f"dc{r}_{c}", "0", name(r, c), shockley))
    pads = [(0, 0), (0, side - 1), (side - 1, 0), (side - 1, side - 1)]
    inputs = []
    for i, (r, c) in enumerate(pads):
        els += [E.VoltageSource(f"vdd{i}", f"pad{i}", "0", 1.0), E.Resistor(f"rpad{i}", f"pad{i}", name(r, c), 100.0)]
    # (100 S = 0.01 ohm)
        inputs.append(f"vdd{i}")
    return E.Circuit(tuple(els), f"power-grid mesh {side}x{side}"), tuple(inputs), (name(side // 2, side // 2),)


def indep(n: int, seed: int = 0, shockley: bool = False):
    """Independent random diode network: :func:`random_grid_graph` without its fixed sources, 5 input
    sources each joined to a random node, 3 output nodes (the issue's training-step circuit)."""
    E, _ = _els()
    from verification.circuits import random_grid_graph

    c = random_grid_graph(n, seed, shockley=shockley)
    rng = np.random.default_rng(seed + 17)
    els = [e for e in c.elements if not isinstance(e, (E.VoltageSource, E.CurrentSource))]
    nodes = c.replace_elements(els).nodes
    for k in range(5):
        els += [E.VoltageSource(f"vin{k}", f"in{k}", "0", 0.0),
                E.Resistor(f"rin{k}", f"in{k}", nodes[int(rng.integers(len(nodes)))], float(rng.uniform(1e-3, 1e-2)))]
    outputs = tuple(nodes[int(i)] for i in rng.choice(len(nodes), 3, replace=False))
    return c.replace_elements(els), tuple(f"vin{k}" for k in range(5)), outputs


def with_inputs(kind: str, n: int, seed: int = 0, shockley: bool = False):
    """A family member with inputs: ``(circuit, inputs, outputs)``."""
    if kind == "ladder":
        return ladder(n, seed, shockley)
    if kind == "drn":
        return drn(n, max(8, n // 4), 10, seed, shockley)
    if kind == "power":
        return power(n, seed, shockley)
    if kind == "indep":
        return indep(n, seed, shockley)
    from physgrad.circuit.elements import VoltageSource
    from verification.circuits import random_diode_graph, random_grid_graph

    if kind == "grid":
        c = random_grid_graph(n, seed, shockley=shockley)
    elif kind == "random":
        if shockley:
            raise ValueError("the random family has ideal diodes only")
        c = random_diode_graph(n, seed)
    else:
        raise ValueError(kind)
    srcs = tuple(e.name for e in c.elements if isinstance(e, VoltageSource))
    return c, srcs, (c.nodes[0],)


def random_inputs(circuit, inputs, rng):
    """Fresh source values: each input uniform in [-1, 1] x its magnitude (at least 1 V)."""
    vals = {}
    for s in inputs:
        v = circuit.element(s).value
        vals[s] = float(rng.uniform(-1, 1) * max(abs(v), 1.0))
    return circuit.with_sources(vals)


# --- part A: one circuit ------------------------------------------------------------------------------------
def one_lu(sol, circuit) -> float:
    """CPU seconds of one SuperLU factorization + solve of the final system of ``sol``."""
    import scipy.sparse as sp

    from physgrad.circuit.reduction import build_problem
    from physgrad.circuit.solvers.kkt import eliminate
    from physgrad.circuit.sparse import factor

    pb = build_problem(circuit)
    if pb.S.shape[0]:
        from physgrad.circuit.diode import shockley_slope
        from physgrad.circuit.solvers.newton import _params

        import scipy.sparse.linalg as spla

        P = sp.csc_matrix(pb.P)
        u = spla.spsolve((P.T @ P).tocsc(), P.T @ (sol.voltages - pb.c))
        sl = shockley_slope(pb.S @ u + pb.e, *_params(pb))
        A = (pb.H + pb.S.T @ sp.diags(sl) @ pb.S).tocsc()
        rhs = np.ones(pb.n_u)
    else:
        W = np.asarray(sol.info.get("active", np.zeros(pb.D.shape[0], bool)), bool)
        el = eliminate(pb.D, pb.d, W, pb.n_u) if W.size else None
        A = (el[0].T @ pb.H @ el[0]).tocsc() if el is not None else pb.H.tocsc()
        rhs = np.ones(A.shape[0])
    with Clock() as c:
        factor(A).solve(rhs)
    return c.cpu


def solve_family(kind: str, n: int, shockley: bool, do_ngspice: bool, seed: int = 0) -> dict:
    from physgrad.circuit.netlist import write_netlist
    from physgrad.circuit.solve import solve

    circuit, inputs, _ = with_inputs(kind, n, seed, shockley)
    circuit = random_inputs(circuit, inputs, np.random.default_rng(seed + 1))
    solve(ladder(3, shockley=shockley)[0], strict=False)  # imports and first-call costs, on a tiny circuit
    with Clock() as c:  # a fresh circuit: its arrays are built inside the solve, as in the CLI
        sol = solve(circuit, strict=False)
    out = {"family": kind + ("-shk" if shockley else ""), "n": n, "nodes": circuit.arrays.n_nodes,
           "elements": len(circuit.elements)}
    out.update(physgrad_cpu=c.cpu, physgrad_wall=c.wall, status=sol.status, certified=bool(sol.certificate.passed),
               linear_solves=dict(sol.info.get("linear_solves", {})))
    out["lu_cpu"] = one_lu(sol, circuit)
    text = write_netlist(circuit)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.cir"
        path.write_text(text)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with Clock() as c:
            r = subprocess.run([sys.executable, "-m", "physgrad", "solve", str(path), "--json"], capture_output=True,
                               env=env, timeout=600)
        out.update(cli_cpu=c.child_cpu, cli_wall=c.wall, cli_rc=r.returncode)
    if do_ngspice:
        from physgrad.circuit.ngspice import ngspice_version, run_ngspice

        try:
            ngspice_version()  # its `ngspice -v` probe (cached) is not the solve: outside the clock
            with Clock() as c:
                res = run_ngspice(text, timeout_s=600)
            out.update(ngspice_cpu=c.child_cpu, ngspice_wall=c.wall,
                       ngspice_max_dv=float(np.max(np.abs(np.array([res.voltages[x] for x in circuit.nodes])
                                                         - sol.voltages))))
        except Exception as exc:  # noqa: BLE001 - reported in the table
            out["ngspice_error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
    out["peak_mb"] = peak_mb()
    return out


# --- part B: inside training ------------------------------------------------------------------------------
def train_family(kind: str, n: int, steps: int, batch: int, do_ngspice: bool, do_cvxpy: bool, seed: int = 0) -> dict:
    from physgrad.energies.co_content import CoContentEnergy
    from physgrad.learning import EquilibriumPropagation
    from physgrad.minimizers.co_content import CoContentMinimizer

    circuit, inputs, outputs = with_inputs(kind, n, seed)
    do_ngspice = do_ngspice and circuit.arrays.n_nodes <= NGSPICE_TRAIN_MAX_NODES
    energy = CoContentEnergy(circuit, inputs, outputs)
    mini = CoContentMinimizer()
    theta = energy.theta0()
    beta = 1e-4 * float(np.median(theta))
    est = EquilibriumPropagation(beta=beta, variant="centered")
    rng = np.random.default_rng(seed + 5)
    out = {"family": kind, "n": n, "nodes": circuit.arrays.n_nodes, "n_u": energy.topology.n_u, "m": energy.topology.m}
    cpus, walls, rss, iters, info = [], [], [], [], {}
    for s in range(steps + 1):
        X = rng.uniform(-1, 1, (batch, len(inputs)))  # fresh inputs every step
        Y = rng.uniform(-0.3, 0.3, (batch, len(outputs)))
        theta_step = theta
        with Clock() as c:
            ph = est.phases(energy, theta, X, Y, mini)
            g = est.estimate_from_phases(energy, theta, X, ph)
            theta = np.maximum(theta - 0.05 * np.median(theta) * g / max(np.max(np.abs(g)), 1e-300),
                               1e-3 * np.median(theta))
        assert ph.free.converged and ph.plus.converged and ph.minus.converged
        if s:  # the first step builds the caches
            cpus.append(c.cpu)
            walls.append(c.wall)
            rss.append(round(rss_mb(), 1))
            iters.append([p.n_iter / batch for p in (ph.free, ph.plus, ph.minus)])
            for p in (ph.free, ph.plus, ph.minus):
                for k, v in p.info["solver_info"].items():
                    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                        info[k] = info.get(k, 0) + int(v)
    out.update(eq_per_cpu_s=3 * batch / float(np.median(cpus)), eq_per_wall_s=3 * batch / float(np.median(walls)),
               iterations=[round(float(v), 2) for v in np.mean(iters, axis=0)], rss_per_step=rss, solver_info=info)
    # one sparse LU per input on the last step's free equilibria (their conducting sets known)
    out.update(lu_route(energy, theta_step, X, ph.free))
    trained = circuit.with_conductances(dict(zip(energy.param_names, theta_step)))
    if do_ngspice:
        out.update(ngspice_per_input(trained, inputs, X[:3], ph.free.state[:3]))
    if do_cvxpy:
        out.update(cvxpy_route(energy, theta_step, X[:8], ph.free.state[:8]))
    out["peak_mb"] = peak_mb()
    return out


def lu_route(energy, theta, X, free) -> dict:
    """Each input's final KKT system (elimination of its conducting diodes) factorized by SuperLU and
    solved: CPU seconds per equilibrium."""
    from physgrad.circuit.solvers.kkt import eliminate
    from physgrad.circuit.sparse import factor

    topo = energy.topology
    g = energy.conductances(theta)
    H = topo.H0(g)
    W = topo.source_values(X)
    F = np.asarray((topo.Kf(g) @ W.T).T)
    d = topo.bounds(W)
    cpu = 0.0
    for b in range(len(X)):
        with Clock() as c:
            el = eliminate(topo.D, d[b], np.asarray(free.info["active"][b], bool), topo.n_u)
            T, t0 = el[0], el[1]
            z = factor((T.T @ H @ T).tocsc()).solve(T.T @ (F[b] - H @ t0))
            u = T @ z + t0
        cpu += c.cpu
    V = np.asarray(topo.P @ u) + topo.offsets(W)[-1]
    return {"lu_eq_per_cpu_s": len(X) / cpu, "lu_max_dv": float(np.max(np.abs(V - free.state[-1])))}


def ngspice_per_input(circuit, inputs, X, V) -> dict:
    from physgrad.circuit.netlist import write_netlist
    from physgrad.circuit.ngspice import ngspice_version, run_ngspice

    ngspice_version()  # its `ngspice -v` probe (cached) is not a solve: outside the clock
    cpu, wall, dvs = 0.0, 0.0, []
    for b, row in enumerate(X):
        c = circuit.with_sources(dict(zip(inputs, row)))
        with Clock() as clk:
            res = run_ngspice(write_netlist(c), timeout_s=600)
        cpu += clk.child_cpu
        wall += clk.wall
        dvs.append(float(np.max(np.abs(np.array([res.voltages[n] for n in c.nodes]) - V[b]))))
    return {"ngspice_eq_per_cpu_s": len(X) / max(cpu, 1e-9), "ngspice_eq_per_wall_s": len(X) / wall,
            "ngspice_max_dv": max(dvs)}


def cvxpy_route(energy, theta, X, V) -> dict:
    import warnings

    import cvxpy as cp

    warnings.simplefilter("ignore")
    topo = energy.topology
    g = energy.conductances(theta)
    H0 = topo.H0(g)
    W = topo.source_values(X)
    F = np.asarray((topo.Kf(g) @ W.T).T)
    d = topo.bounds(W)
    u = cp.Variable(topo.n_u)
    f, dd = cp.Parameter(topo.n_u), cp.Parameter(topo.m)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(u, cp.psd_wrap(H0)) - f @ u), [topo.D @ u <= dd])
    opts = dict(solver=cp.OSQP, eps_abs=1e-10, eps_rel=1e-10, polish=True, max_iter=200000, warm_start=True)
    f.value, dd.value = F[0], d[0]
    with Clock() as c:
        prob.solve(**opts)
    compile_cpu = c.cpu
    cpu, dvs = 0.0, []
    C = topo.offsets(W)
    for b in range(len(X)):
        f.value, dd.value = F[b], d[b]
        with Clock() as c:
            prob.solve(**opts)
        cpu += c.cpu
        dvs.append(float(np.max(np.abs(topo.lift(u.value[None, :], C[b:b + 1])[0] - V[b]))))
    return {"cvxpy_compile_cpu": compile_cpu, "cvxpy_eq_per_cpu_s": len(X) / max(cpu, 1e-9), "cvxpy_max_dv": max(dvs)}


def shockley_train(n: int, n_eq: int, do_ngspice: bool, seed: int = 0, steps: int = 3, batch: int = 32) -> dict:
    """Shockley ``indep`` network: physgrad's CPU per equilibrium, batched (one symbolic LDL^T, cold
    start ``u = 0``) and sample by sample (``physgrad.circuit.solve``'s Newton on each sample's problem),
    inside a centered-EP training step (fresh inputs every step; and the same inputs again at the
    next step's conductances: warm starts), and ngspice's process CPU per input."""
    from physgrad.energies.co_content import CoContentEnergy
    from physgrad.learning import EquilibriumPropagation
    from physgrad.minimizers.co_content import CoContentMinimizer

    circuit, inputs, outputs = indep(n, seed, shockley=True)
    energy = CoContentEnergy(circuit, inputs, outputs)
    theta = energy.theta0()
    rng = np.random.default_rng(seed + 9)
    X = rng.uniform(-1, 1, (n_eq, len(inputs)))
    cold = CoContentMinimizer(warm=False)
    cold.minimize(energy, theta, X[:2])  # imports, numba kernels (batches of 2+), symbolic analysis
    with Clock() as c:
        eq = cold.minimize(energy, theta, X)
    one = CoContentMinimizer(solver="newton")  # the one-sample route (each sample's problem rebuilt)
    one.minimize(energy, theta, X[:2])
    with Clock() as c1:
        eq1 = one.minimize(energy, theta, X)
    out = {"family": "indep-shk", "n": n, "n_eq": n_eq, "physgrad_cpu_per_eq": c.cpu / n_eq,
           "physgrad_wall_per_eq": c.wall / n_eq, "converged": eq.converged and eq1.converged,
           "one_sample_cpu_per_eq": c1.cpu / n_eq, "batched_vs_one_sample_max_dv": float(np.max(np.abs(eq.state - eq1.state))),
           "newton_iterations_per_sample": eq.n_iter / n_eq, "one_sample_iterations_per_sample": eq1.n_iter / n_eq,
           "solver_info": {k: v for k, v in eq.info["solver_info"].items() if isinstance(v, (int, str))}}
    # inside a centered-EP training step (exact gradient by the sparse adjoint alongside, as a check)
    mini = CoContentMinimizer()
    beta = 1e-4 * float(np.median(theta))
    est = EquilibriumPropagation(beta=beta, variant="centered")
    cpus, warm_cpus, walls = [], [], []
    th = theta.copy()
    for s in range(steps + 1):
        Xs = rng.uniform(-1, 1, (batch, len(inputs)))
        Ys = rng.uniform(-0.3, 0.3, (batch, len(outputs)))
        for fresh in (True, False):  # fresh inputs, then the same inputs at the updated conductances
            with Clock() as ck:
                ph = est.phases(energy, th, Xs, Ys, mini)
                g = est.estimate_from_phases(energy, th, Xs, ph)
                th = np.maximum(th - 0.05 * np.median(th) * g / max(np.max(np.abs(g)), 1e-300), 1e-3 * np.median(th))
            assert ph.free.converged and ph.plus.converged and ph.minus.converged
            if s:
                (cpus if fresh else warm_cpus).append(ck.cpu)
                if fresh:
                    walls.append(ck.wall)
    out.update(step_eq_per_cpu_s=3 * batch / float(np.median(cpus)), step_eq_per_wall_s=3 * batch / float(np.median(walls)),
               step_warm_eq_per_cpu_s=3 * batch / float(np.median(warm_cpus)))
    if do_ngspice:
        r = ngspice_per_input(circuit, inputs, X[:8], eq.state[:8])
        out.update(ngspice_cpu_per_eq=1.0 / r["ngspice_eq_per_cpu_s"], ngspice_max_dv=r["ngspice_max_dv"])
    out["peak_mb"] = peak_mb()
    return out


def factorizations(n: int, seed: int = 0, batch: int = 32) -> dict:
    """CPU seconds per numeric factorization + solve of the Newton matrices of a Shockley batch at its
    solution: the compiled LDL^T on the symbolic analysis done once, qdldl with its symbolic reuse
    (``update``), qdldl from scratch, SuperLU (COLAMD, MMD on A+A^T, and NATURAL on the reused
    ordering), and the assembly of the matrices (per sample with scipy; batched value vectors)."""
    import qdldl
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    from physgrad.circuit.diode import shockley_slope
    from physgrad.circuit.shockley_batch import ShockleyBatchSolver
    from physgrad.energies.co_content import CoContentEnergy

    circuit, inputs, outputs = indep(n, seed, shockley=True)
    energy = CoContentEnergy(circuit, inputs, outputs)
    g = energy.conductances(energy.theta0())
    X = np.random.default_rng(seed + 9).uniform(-1, 1, (batch, len(inputs)))
    sb = ShockleyBatchSolver(energy.topology)
    r = sb.solve(g, X)
    bp, _ = sb.problems(g, X)
    SL = shockley_slope(np.asarray((bp.S @ r["u"].T).T) + bp.E, *bp.params)
    pat = sb.pattern
    sym = pat.symbolic
    KV = pat.values(pat.h_values(bp.H), SL)
    rhs = np.random.default_rng(1).standard_normal((batch, sym.n))
    Ks = [(bp.H + bp.S.T @ sp.diags(SL[b]) @ bp.S).tocsc() for b in range(batch)]
    Up = [sp.triu(K, format="csc") for K in Ks]
    perm = sym.perm
    Kp = [K[perm][:, perm].tocsc() for K in Ks]
    qs = qdldl.Solver(Up[0], upper=True)

    def best(f, reps=3):
        t = np.inf
        for _ in range(reps):
            with Clock() as c:
                f()
            t = min(t, c.cpu)
        return t / batch

    def q_update():
        for b in range(batch):
            qs.update(Up[b], upper=True)
            qs.solve(rhs[b])

    def natural():
        for b in range(batch):
            spla.splu(Kp[b], permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True}).solve(
                rhs[b][perm])

    rows = {
        "compiled LDL^T, symbolic once (numba; default)": best(lambda: sym.factor_solve(KV, rhs)),
        "qdldl update (its symbolic reused)": best(q_update),
        "qdldl from scratch (AMD + symbolic each time)": best(
            lambda: [qdldl.Solver(Up[b], upper=True).solve(rhs[b]) for b in range(batch)]),
        "SuperLU, COLAMD": best(lambda: [spla.splu(Ks[b], permc_spec="COLAMD").solve(rhs[b]) for b in range(batch)]),
        "SuperLU, MMD on A+A^T": best(
            lambda: [spla.splu(Ks[b], permc_spec="MMD_AT_PLUS_A").solve(rhs[b]) for b in range(batch)]),
        "SuperLU, NATURAL on the reused AMD ordering": best(natural),
        "(assembly: scipy K_b per sample)": best(
            lambda: [(bp.H + bp.S.T @ sp.diags(SL[b]) @ bp.S).tocsc() for b in range(batch)]),
        "(assembly: batched value vectors)": best(lambda: pat.values(pat.h_values(bp.H), SL)),
    }
    return {"n": n, "n_u": sym.n, "nnz_upper": sym.nnz, "nnz_L": sym.nnz_L, "cpu_per_matrix": rows}


# --- part C: fit end to end ----------------------------------------------------------------------------------
def fit_end_to_end(n: int, n_samples: int, seed: int = 0) -> dict:
    from physgrad.circuit.netlist import write_netlist
    from physgrad.netlists.fit import FitSpec, fit_run

    circuit, inputs, outputs = indep(n, seed)
    rng = np.random.default_rng(seed + 3)
    X = rng.uniform(-1, 1, (n_samples, len(inputs)))
    Y = rng.uniform(-0.3, 0.3, (n_samples, len(outputs)))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "net.cir").write_text(write_netlist(circuit))
        lines = [",".join(inputs + outputs)] + [",".join(f"{v:.6f}" for v in np.concatenate([x, y]))
                                                for x, y in zip(X, Y)]
        (tmp / "train.csv").write_text("\n".join(lines) + "\n")
        out = {}
        for k in (1, 2):
            spec = FitSpec(netlist=str(tmp / "net.cir"), data=str(tmp / "train.csv"), inputs=inputs, outputs=outputs,
                           method="cep", epochs=2, batch_size=32, eval_every=k)
            with Clock() as c:
                rows = fit_run(spec, tmp / f"run{k}", progress=False, log=lambda s: None)
            # equilibria: 3 per sample per epoch (training) + 1 per sample per full evaluation
            n_eval = sum(1 for r in rows if "train_cost" in r)
            n_eq = 3 * n_samples * 2 + n_samples * n_eval
            out[f"eval_every_{k}"] = {"cpu": c.cpu, "wall": c.wall, "equilibria": n_eq, "eq_per_cpu_s": n_eq / c.cpu,
                                      "full_evaluations": n_eval, "rss_mb": round(rss_mb(), 1)}
    return out


# --- driver ------------------------------------------------------------------------------------------------
def _child(conn, fn, args):
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as exc:  # noqa: BLE001 - report to the parent
        import traceback

        conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        conn.close()


def in_child(fn, *args):
    """``fn(*args)`` in a fresh (spawned) interpreter: its own peak memory."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(child, fn, args))
    p.start()
    child.close()
    msg = parent.recv()
    p.join()
    if msg[0] != "ok":
        return {"error": msg[1], "traceback": msg[2][-2000:]}
    return msg[1]


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001
        return "?"


def fmt(x, digits=3):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    if isinstance(x, str):
        return x
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


TARGETS_NOTE = ""  # the targets' discussion is written by hand into the report after a run


def _ratio(a, b):
    return None if a is None or b is None or not b else a / b


def report(data: dict) -> str:
    """The markdown report: the tables and each target of issue 17, met or missed."""
    env = data["env"]
    L = ["# Circuit families nobody tuned for (issue 17)", "",
         f"`{env['command']}`; Python {env['python']}, numpy {env['numpy']}, {env['cpu_count']} cores shared with "
         "other jobs (every time below is CPU seconds of the process that did the work unless marked wall; "
         "BLAS on one thread).", "",
         f"- load before: `{env['load_before']}`", f"- load after: `{env['load_after']}`",
         f"- total {env['total_s']} s wall", ""]
    L += ["## A. One circuit: `physgrad solve` against ngspice", "",
          "physgrad = `physgrad.circuit.solve` in process on a freshly built circuit (netlist reading excluded; "
          "it is the reader's part); CLI = `python3 -m physgrad solve FILE --json` as a process (interpreter "
          "start-up, imports, reading and writing included); ngspice = its process (start-up included, tight "
          "options); one LU = SuperLU factorization + solve of the final system (conducting diodes known; "
          "Shockley: the last Newton matrix)."
          + (f" The `-shk` rows were rerun later by `{data['shockley_env']['command']}` (load before: "
             f"`{data['shockley_env']['load_before']}`; after: `{data['shockley_env']['load_after']}`), each "
             "with its own ngspice run." if data.get("shockley_env") else ""), "",
          "| family | size | nodes | elements | physgrad CPU s (wall) | CLI process CPU s | ngspice process CPU s "
          "(wall) | one LU CPU s | physgrad / ngspice | max abs dV vs ngspice (V) | certified | linear solves | "
          "peak RSS MB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for r in data["solve"]:
        if "error" in r:
            L.append(f"| {r.get('family', '?')} | | | | error: {r['error'][:80]} | | | | | | | | |")
            continue
        ls = r.get("linear_solves") or {}
        lss = ", ".join(f"{k} {v}" for k, v in ls.items() if v) or "—"
        L.append(f"| {r['family']} | {r['n']:,} | {r['nodes']:,} | {r['elements']:,} | {fmt(r['physgrad_cpu'])} "
                 f"({fmt(r['physgrad_wall'])}) | {fmt(r.get('cli_cpu'))} | {fmt(r.get('ngspice_cpu'))} "
                 f"({fmt(r.get('ngspice_wall'))}) | {fmt(r['lu_cpu'])} | "
                 f"{fmt(_ratio(r['physgrad_cpu'], r.get('ngspice_cpu')))} | {fmt(r.get('ngspice_max_dv'))} | "
                 f"{r['certified']} | {lss} | {fmt(r['peak_mb'])} |")
    tr_env = data.get("train_env")
    L += ["", "## B. Inside a centered-EP training step (batch 32, fresh random inputs every step)", "",
          (f"Rerun by `{tr_env['command']}` (load before: `{tr_env['load_before']}`; after: "
           f"`{tr_env['load_after']}`; every column of a row in the same child process). " if tr_env else "")
          + "Equilibria per CPU second (3 phases x 32 per step; median over the steps after the first); "
          "one LU per input = each equilibrium's final KKT system factorized and solved once (SuperLU); "
          "ngspice `.op` per input (process CPU, 3 inputs); cvxpy = a model compiled once (OSQP, tight eps, 8 "
          "inputs; <= 1k nodes).", "",
          "| family | size | n_u / diodes | physgrad eq/CPU-s (eq/wall-s) | one LU per input eq/CPU-s | "
          "physgrad / LU | ngspice eq/CPU-s | cvxpy eq/CPU-s | iterations per sample (free, +, -) | routes "
          "(Schur border / pattern sample-iterations, pattern factorizations; per-sample LDL^T sample-iterations) "
          "| RSS per step MB | max dV LU, ngspice, cvxpy (V) |", "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|"]
    for r in data["train"]:
        if "error" in r:
            L.append(f"| {r.get('family', '?')} | | error: {r['error'][:80]} | | | | | | | | | |")
            continue
        si = r["solver_info"]
        L.append(f"| {r['family']} | {r['n']:,} | {r['n_u']:,} / {r['m']:,} | **{fmt(r['eq_per_cpu_s'])}** "
                 f"({fmt(r['eq_per_wall_s'])}) | {fmt(r['lu_eq_per_cpu_s'])} | "
                 f"{fmt(_ratio(r['eq_per_cpu_s'], r['lu_eq_per_cpu_s']))} | {fmt(r.get('ngspice_eq_per_cpu_s'))} | "
                 f"{fmt(r.get('cvxpy_eq_per_cpu_s'))} | {r['iterations']} | {si.get('border_samples', 0)} / "
                 f"{si.get('pattern_samples', 0)}, {si.get('pattern_factorizations', 0)}; {si.get('ldl_samples', 0)} | "
                 f"{r['rss_per_step']} | "
                 f"{fmt(r['lu_max_dv'])}, {fmt(r.get('ngspice_max_dv'))}, {fmt(r.get('cvxpy_max_dv'))} |")
    sh_env = data.get("shockley_env")
    L += ["", "Shockley circuits (the `indep` network with Shockley diodes, no fixed sources; issue 17 item 3). "
          "physgrad batched = the minimizer's batched Newton (one symbolic LDL^T for the batch, compiled numeric "
          "refactorization per sample-iteration, cold start u = 0); one-sample route = `physgrad.circuit.solve`'s "
          "Newton per sample (each sample's reduced problem rebuilt from its circuit; `solver=\"newton\"`); ngspice = `.op` per "
          "input, process CPU (8 inputs); the same run for every column of a row"
          + (f" (load before: `{sh_env['load_before']}`; after: `{sh_env['load_after']}`)" if sh_env else "") + ".",
          "", "| size | physgrad batched CPU s / eq (wall) | one-sample route CPU s / eq | ngspice CPU s / eq | "
          "**batched / ngspice** | Newton iterations per sample (batched, one-sample) | C-EP step eq/CPU-s, fresh "
          "inputs (wall) | C-EP step eq/CPU-s, same inputs next step (warm) | max dV batched vs one-sample, vs "
          "ngspice (V) |", "|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in data["shockley"]:
        if "error" in r:
            L.append(f"| error: {r['error'][:80]} | | | | | | | | |")
            continue
        if "one_sample_cpu_per_eq" not in r:  # a report from before item 3
            L.append(f"| {r['n']:,} | {fmt(r['physgrad_cpu_per_eq'])} (sample by sample) | | "
                     f"{fmt(r.get('ngspice_cpu_per_eq'))} | {fmt(_ratio(r['physgrad_cpu_per_eq'], r.get('ngspice_cpu_per_eq')))} "
                     f"| | | | {fmt(r.get('ngspice_max_dv'))} |")
            continue
        L.append(f"| {r['n']:,} | {fmt(r['physgrad_cpu_per_eq'])} ({fmt(r['physgrad_wall_per_eq'])}) | "
                 f"{fmt(r['one_sample_cpu_per_eq'])} | {fmt(r.get('ngspice_cpu_per_eq'))} | "
                 f"**{fmt(_ratio(r['physgrad_cpu_per_eq'], r.get('ngspice_cpu_per_eq')))}** | "
                 f"{fmt(r['newton_iterations_per_sample'])}, {fmt(r['one_sample_iterations_per_sample'])} | "
                 f"{fmt(r['step_eq_per_cpu_s'])} ({fmt(r['step_eq_per_wall_s'])}) | {fmt(r['step_warm_eq_per_cpu_s'])} | "
                 f"{fmt(r['batched_vs_one_sample_max_dv'])}, {fmt(r.get('ngspice_max_dv'))} |")
    for fz in data.get("factorizations", []):
        if "error" in fz:
            continue
        L += ["", f"Factorizations of the Newton matrices K_b = H + S^T diag(I') S of a batch of 32 at its solution "
              f"({fz['n']:,}-node `indep` Shockley network: n = {fz['n_u']:,}, {fz['nnz_upper']:,} entries in the upper "
              f"triangle, {fz['nnz_L']:,} in L with the chosen ordering); CPU microseconds per matrix (factorization + "
              "one solve), best of 3:", "", "| route | CPU us per matrix |", "|---|---:|"]
        for k, v in fz["cpu_per_matrix"].items():
            L.append(f"| {k} | {v * 1e6:,.0f} |")
    fit = data.get("fit") or {}
    if fit and "error" not in fit:
        L += ["", "## C. `fit` end to end (1k-node `indep` netlist, 512 samples, 2 epochs, batch 32)", "",
              "| --eval-every | CPU s (wall) | equilibria (training 3/sample/epoch + full evaluations) | eq/CPU-s | "
              "full evaluations | RSS MB at the end |", "|---:|---:|---:|---:|---:|---:|"]
        for k, v in fit.items():
            L.append(f"| {k.rsplit('_', 1)[-1]} | {fmt(v['cpu'])} ({fmt(v['wall'])}) | {v['equilibria']:,} | "
                     f"{fmt(v['eq_per_cpu_s'])} | {v['full_evaluations']} | {v['rss_mb']} |")
    return "\n".join(L) + "\n"


# ngspice per input inside training only up to this size (its .op on 10k-node diode graphs ran for minutes)
NGSPICE_TRAIN_MAX_NODES = 2000
SOLVE_CASES = [("ladder", 1000, False), ("ladder", 33333, False), ("ladder", 1000, True), ("ladder", 33333, True),
               ("grid", 1000, False), ("grid", 10000, False), ("grid", 100, True), ("grid", 1000, True),
               ("random", 1000, False), ("random", 10000, False), ("drn", 64, False), ("drn", 64, True),
               ("power", 100, False), ("power", 200, False)]
TRAIN_CASES = [("indep", 100, 10), ("indep", 1000, 4), ("indep", 10000, 2), ("grid", 1000, 4), ("drn", 64, 4)]
QUICK_SOLVE = [("ladder", 1000, False), ("ladder", 1000, True), ("grid", 100, True)]
QUICK_TRAIN = [("indep", 100, 2)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few small cases (a smoke test)")
    ap.add_argument("--no-ngspice", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "reports" / "benchmarks" / "graphs"))
    ap.add_argument("--report-only", default=None, metavar="JSON", help="rewrite the .md from a saved .json")
    ap.add_argument("--train-only", action="store_true",
                    help="rerun table B's ideal-diode rows and part C (fit) into the saved .json")
    ap.add_argument("--shockley-only", action="store_true",
                    help="rerun the Shockley rows of tables A and B (and the factorization table) into the saved .json")
    args = ap.parse_args(argv)
    if args.report_only:
        data = json.loads(Path(args.report_only).read_text())
        Path(args.out).with_suffix(".md").write_text(report(data) + TARGETS_NOTE)
        return 0
    ng = not args.no_ngspice
    if args.train_only:
        out = Path(args.out)
        data = json.loads(out.with_suffix(".json").read_text())
        tr_env = {"load_before": uptime(), "command": " ".join([Path(sys.executable).name] + sys.argv)}
        data["train"] = [in_child(train_family, k, n, steps, 32, ng, n <= 1000 and k != "drn")
                         for k, n, steps in TRAIN_CASES]
        for r in data["train"]:
            print(json.dumps({k: v for k, v in r.items() if k != "traceback"}), flush=True)
        data["fit"] = in_child(fit_end_to_end, 1000, 512)
        print(json.dumps(data["fit"]), flush=True)
        tr_env["load_after"] = uptime()
        data["train_env"] = tr_env
        out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=float) + "\n")
        out.with_suffix(".md").write_text(report(data) + TARGETS_NOTE)
        return 0
    if args.shockley_only:
        out = Path(args.out)
        data = json.loads(out.with_suffix(".json").read_text())
        sh_env = {"load_before": uptime(), "command": " ".join([Path(sys.executable).name] + sys.argv)}
        for i, r in enumerate(data["solve"]):
            if r.get("family", "").endswith("-shk"):
                data["solve"][i] = in_child(solve_family, r["family"][:-4], r["n"], True, ng)
                print(json.dumps({k: v for k, v in data["solve"][i].items() if k != "traceback"}), flush=True)
        data["shockley"] = [in_child(shockley_train, n, 32, ng) for n in (100, 1000)]
        data["factorizations"] = [in_child(factorizations, n) for n in (100, 1000)]
        sh_env["load_after"] = uptime()
        data["shockley_env"] = sh_env
        print(json.dumps(data["shockley"]), json.dumps(data["factorizations"]), flush=True)
        out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=float) + "\n")
        out.with_suffix(".md").write_text(report(data) + TARGETS_NOTE)
        return 0
    env = {"python": platform.python_version(), "numpy": np.__version__, "cpu_count": os.cpu_count(),
           "load_before": uptime(), "command": " ".join([Path(sys.executable).name] + sys.argv)}
    t0 = time.perf_counter()
    solves = [in_child(solve_family, k, n, shk, ng) for k, n, shk in (QUICK_SOLVE if args.quick else SOLVE_CASES)]
    for r in solves:
        print(json.dumps({k: v for k, v in r.items() if k != "traceback"}), flush=True)
    trains = [in_child(train_family, k, n, steps, 32, ng, n <= 1000 and k != "drn")
              for k, n, steps in (QUICK_TRAIN if args.quick else TRAIN_CASES)]
    for r in trains:
        print(json.dumps({k: v for k, v in r.items() if k != "traceback"}), flush=True)
    shk = [in_child(shockley_train, n, 32, ng) for n in ((100,) if args.quick else (100, 1000))]
    for r in shk:
        print(json.dumps(r), flush=True)
    fit = {} if args.quick else in_child(fit_end_to_end, 1000, 512)
    print(json.dumps(fit), flush=True)
    env["load_after"] = uptime()
    env["total_s"] = round(time.perf_counter() - t0, 1)
    fz = [in_child(factorizations, n) for n in ((100,) if args.quick else (100, 1000))]
    data = {"env": env, "solve": solves, "train": trains, "shockley": shk, "factorizations": fz, "fit": fit}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=float) + "\n")
    out.with_suffix(".md").write_text(report(data) + TARGETS_NOTE)
    print(f"wrote {out.with_suffix('.json')} and .md ({env['total_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Speed of layered-mode C-EP training against this machine's floors (DRN presets, float32, batch 4).

Usage::

    python benchmarks/layered.py [--presets drn-xs drn-1h drn-2h drn-xl] [--backends numba numpy]
        [--threads 1 2] [--routes chunk step] [--seconds 3] [--data-dir D] [--report reports/benchmarks/layered.md]

In one run it measures, for each preset:

- the **epoch time** (60,000 images, 15,000 batches of 4) of the fast engine's stepper on each backend
  and thread count (numba: on each ``--routes`` -- ``chunk``, several batches per compiled call as the
  training loop runs SGD, and ``step``, one call per batch -- interleaved), **extrapolated** from the batches that fit in ``--seconds`` (the number measured is
  printed; DRN-XL is always extrapolated), wall time and process CPU time;
- the **plain numpy reference step** (:func:`reference_cep_step`, one BLAS thread), extrapolated;
- the **arithmetic floor**: the dense matmul FLOPs of a batch (:func:`train_flops`) at the sgemm rate
  measured here with the same number of threads;
- the **memory floor**: one read and one write of every weight matrix per batch
  (:func:`weight_bytes`) at the copy bandwidth measured here -- from L2 when the weights fit in
  1 MB, from L3 up to 32 MB, from DRAM otherwise (all three are measured and printed);
- the **in-place floor**: one read-modify-write pass over buffers of the size of all weight matrices
  (:func:`inplace_rate`: ``w += 0`` in place, split between the threads), at the rate measured here for
  that size -- the access pattern of the compiled kernel's pass over ``W1``, whose working set is the
  weights themselves (the copy floor above moves two buffers of the level's size);
- the ratio of the measured epoch to each floor;
- the **evaluation** of the 10,000 test images (DRN-XL: 2,000, extrapolated) and its matmul rate as a
  percentage of the sgemm rate.

and checks the targets of issue 19 (epoch times per thread count, 2 threads vs 1 timed in
interleaved segments so that their ratio sees the same load). The machine is shared (other engineers' jobs, often a background
training run): the load averages at start and end are printed and written to the report; CPU time
of one thread approximates the wall time on an idle core.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from physgrad.layered import fused  # noqa: E402
from physgrad.layered.data import DataNotFoundError, load_dataset  # noqa: E402
from physgrad.layered.kernels import numba_cpu  # noqa: E402
from physgrad.layered.presets import get_preset  # noqa: E402
from physgrad.layered.steppers import initial_params, make_stepper  # noqa: E402

N_TRAIN, N_TEST, B = 60000, 10000, 4
L2_LIMIT = 1 << 20  # weights up to this size stay in L2 (2 MB per core)
L3_LIMIT = 32 << 20  # weights up to this size are taken to stream from L3, larger ones from DRAM
LEVELS = (("L2", 512 << 10), ("L3", 8 << 20), ("DRAM", 512 << 20))  # copy buffers measured (each of 2)
TARGETS = {("drn-xs", None): 1.5, ("drn-1h", 1): 9.0, ("drn-1h", 2): 6.0, ("drn-xl", 2): 400.0}
"""Epoch seconds of the compiled kernel (issue 19), per (preset, thread count; None: the best)."""
SPEEDUP_TARGET = ("drn-1h", 1.6)  # 2 threads at least this much faster than 1 (issue 19)
EVAL_TARGET = 70.0  # % of the sgemm rate


def reference_cep_step(spec: fused.FusedSpec, params, x, y1h, s_warm, beta, weight_lrs, bias_lrs, sweeps):
    """Straightforward numpy centered-EP step (pure: returns new params), the baseline of this benchmark.

    Recomputes ``s0 @ W1`` and the column sums in every sweep, forms each gradient
    ``dE/dW_k = mean_b 1/2 (s_{k-1} - s_k)^2`` (DHN: ``-mean_b s_{k-1}^T s_k``) as a full matrix per
    phase, then updates and clamps.

    Returns
    -------
    new_params, free, s_plus
    """
    L = spec.n_layers
    Ws, bs = list(params[:L]), list(params[L:])
    s0 = spec.input_layer(x)
    drn = spec.drn

    def phase(s, b_):
        for _ in range(sweeps):
            drive = fused.Drive(s0 @ Ws[0], Ws[0].sum(axis=0) if drn else None)
            s = fused.relax(spec, tuple(Ws) + tuple(bs), drive, s, 1, b_, y1h)
        return s

    free = phase(list(s_warm), 0.0)
    s_m = phase(free, -beta)
    s_p = phase(free, beta)
    layers_m, layers_p = [s0] + s_m, [s0] + s_p

    def dEdW(lay, k):
        a, h = lay[k - 1], lay[k]
        if drn:
            return 0.5 * ((a * a).mean(0)[:, None] + (h * h).mean(0)[None, :]) - a.T @ h / len(a)
        return -(a.T @ h) / len(a)

    newW, newb = [], []
    for k in range(1, L + 1):
        g = (dEdW(layers_p, k) - dEdW(layers_m, k)) / (2 * beta)
        W = Ws[k - 1] - weight_lrs[k - 1] * g
        newW.append(np.maximum(W, 0) if drn else W)
        gb = -(s_p[k - 1].mean(0) - s_m[k - 1].mean(0)) / (2 * beta)
        newb.append(bs[k - 1] - bias_lrs[k - 1] * gb)
    return tuple(newW) + tuple(newb), free, s_p


def load_images(data_dir=None):
    try:
        d = load_dataset("mnist", data_dir)
        return (d.x_train.astype(np.float32) / 255, d.y_train, d.x_test.astype(np.float32) / 255, "MNIST")
    except DataNotFoundError:
        rng = np.random.default_rng(0)
        x = rng.random((N_TRAIN + N_TEST, 784), dtype=np.float32)
        x[rng.random(x.shape) < 0.8] = 0
        y = rng.integers(0, 10, N_TRAIN)
        return x[:N_TRAIN], y, x[N_TRAIN:], "random sparse images (MNIST not found)"


def train_flops(p) -> int:
    """Dense matmul FLOPs of one C-EP batch (multiply-add = 2 FLOPs): the next batch's ``[s0; 1] W1``
    and the rank-``(B+1)`` update of ``W1``, ``3 x sweeps`` block sweeps (free, -beta, +beta), and the
    rank-``(2B+2)`` updates of the deeper weights. Zero inputs are counted (the compiled kernel skips
    them, so for MNIST it does fewer)."""
    n = p.sizes
    L = len(n) - 1
    f = 2 * (B + 1) * n[0] * n[1] * 2
    per_sweep = 0
    for k in range(1, L + 1):
        if k > 1:
            per_sweep += 2 * B * n[k - 1] * n[k]
        if k < L:
            per_sweep += 2 * B * n[k] * n[k + 1]
    f += 3 * p.sweeps * per_sweep
    for k in range(2, L + 1):
        f += 2 * (2 * B + 2) * n[k - 1] * n[k]
    return f


def weight_bytes(p) -> int:
    """float32 bytes of all weight matrices (the memory floor moves each once in and once out)."""
    n = p.sizes
    return 4 * sum(a * b for a, b in zip(n[:-1], n[1:]))


def eval_flops(p, n_samples) -> int:
    n = p.sizes
    L = len(n) - 1
    f = 2 * n_samples * (n[0] // 2) * n[1]  # x @ (W1_top - W1_bottom)
    per_sweep = sum(2 * n_samples * n[k - 1] * n[k] for k in range(2, L + 1)) + \
        sum(2 * n_samples * n[k] * n[k + 1] for k in range(1, L))
    return f + p.sweeps_eval * per_sweep


def sgemm_rate(threads, m=1000, k=784, n=1024, seconds=0.3):
    """FLOP/s of ``(m, k) @ (k, n)`` float32 with ``threads`` BLAS threads: ``(per wall second, per CPU
    second)``."""
    rng = np.random.default_rng(0)
    a = rng.random((m, k), dtype=np.float32)
    b = rng.random((k, n), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    with threadpool_limits(threads):
        np.matmul(a, b, out=out)
        reps, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            np.matmul(a, b, out=out)
            reps += 1
        work = 2 * m * k * n * reps
        return work / (time.perf_counter() - t0), work / max(time.process_time() - c0, 1e-9)


def copy_bandwidth(nbytes, threads, seconds=0.3):
    """Bytes/s of ``np.copyto`` (read + write counted) over buffers of ``nbytes``, split between
    ``threads``, each thread copying its part repeatedly (so small, cache-resident buffers are not
    timed as thread hand-offs): ``(per wall second, per CPU second)``."""
    n = nbytes // 4
    src, dst = np.ones(n, np.float32), np.empty(n, np.float32)
    cuts = np.linspace(0, n, threads + 1).astype(int)
    inner = max(1, (64 << 20) // nbytes)
    parts = [(dst[a:b], src[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]

    def work(ab):
        for _ in range(inner):
            np.copyto(*ab)

    return _pool_rate(work, parts, 2 * nbytes * inner, seconds)


def _pool_rate(work, parts, bytes_per_round, seconds):
    """Run ``work`` on every part in a thread pool (one thread per part; one warm-up round, then rounds
    for at least ``seconds`` and 3 rounds): ``(bytes per wall second, bytes per CPU second)``."""
    with ThreadPoolExecutor(len(parts)) as pool:
        def once():
            list(pool.map(work, parts))
        once()
        reps, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds or reps < 3:
            once()
            reps += 1
        total = bytes_per_round * reps
        return total / (time.perf_counter() - t0), total / max(time.process_time() - c0, 1e-9)


def inplace_rate(nbytes, threads, seconds=0.3):
    """Bytes/s (read + write counted) of ``w += 0`` in place over a float32 buffer of ``nbytes``, split
    between ``threads`` (each thread its part, repeatedly): ``(per wall second, per CPU second)``. The
    floor of a pass that reads and writes the weights once (they stay in whichever cache holds them)."""
    n = max(nbytes // 4, 16)
    buf = np.ones(n, np.float32)
    cuts = np.linspace(0, n, threads + 1).astype(int)
    parts = [buf[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    zero = np.float32(0)
    inner = max(1, (64 << 20) // max(nbytes, 1))

    def work(p):
        for _ in range(inner):
            np.add(p, zero, out=p)

    return _pool_rate(work, parts, 2 * 4 * n * inner, seconds)


def time_steppers(p, backend, threads, x, y, seconds, min_batches=10, max_batches=None, segments=5,
                  routes=("step",)):
    """Per (thread count, route): per-batch (best wall s, best CPU s, median wall s, batches, host params,
    stepper) of the stepper on consecutive MNIST batches. Route ``step``: one call of ``stepper.step`` per
    batch; ``chunk``: ``stepper.run_batches`` with :data:`physgrad.layered.train.CHUNK_BATCHES` batches per
    call, as the training loop runs the compiled kernel's SGD. The (thread count, route) pairs are timed
    in **interleaved** segments (1, 2, 1, 2, ...), so that their ratios are measured under the same
    load; best of the segments (the least disturbed by other jobs)."""
    import contextlib

    from physgrad.layered.train import CHUNK_BATCHES

    order = np.arange(len(x))
    nb = len(x) // B - 1
    runs = {}
    with contextlib.ExitStack() as stack:
        for t in threads:
            for route in routes:
                st = make_stepper("fast", p, "cep", initial_params(p, 0, "float32"), threads=t, backend=backend)
                stack.callback(st.close)
                runs[t, route] = dict(st=st, warm=None, bi=0, walls=[], cpus=[], n=0, route=route)

        def select(t):
            if backend == "numba":  # the thread count is numba's global setting
                numba_cpu.numba.set_num_threads(t)

        def one(r):  # consecutive batches, wrapping around the training set; returns the batches made
            st = r["st"]
            if r["bi"] == nb:
                r["bi"] = 0
                st.start_epoch(x, order, 0)
            bi = r["bi"]
            if r["route"] == "chunk":
                stop = min(bi + CHUNK_BATCHES, nb)
                r["warm"], _ = st.run_batches(x, order, y, bi, stop, r["warm"], [1.0] * (stop - bi))
                r["bi"] = stop
                return stop - bi
            idx = order[bi * B:(bi + 1) * B]
            nxt = order[(bi + 1) * B:(bi + 2) * B]
            r["warm"], _ = st.step(x, idx, y[idx], nxt, r["warm"], 1.0)
            r["bi"] += 1
            return 1

        for (t, _), r in runs.items():
            select(t)
            r["st"].start_epoch(x, order, 0)
            for _ in range(3):  # warm up (compiled code loaded, caches filled)
                one(r)
        per_segment = seconds / segments / len(runs)
        for _ in range(segments):
            for (t, _), r in runs.items():
                select(t)
                m, t0, c0 = 0, time.perf_counter(), time.process_time()
                while True:
                    m += one(r)
                    dt = time.perf_counter() - t0
                    if (dt > per_segment and m * segments >= min_batches) or \
                            (max_batches and m * segments >= max_batches):
                        break
                r["walls"].append(dt / m)
                r["cpus"].append((time.process_time() - c0) / m)
                r["n"] += m
        return {k: (min(r["walls"]), min(r["cpus"]), float(np.median(r["walls"])), r["n"], r["st"].to_host(), r["st"])
                for k, r in runs.items()}


def time_reference(p, x, y, seconds, max_batches):
    spec = fused.FusedSpec(p.energy(), p.schedule, np.float32)
    params = initial_params(p, 0, "float32")
    eye = np.eye(10, dtype=np.float32)
    with threadpool_limits(1):
        warm = spec.zero_state(B)
        n, t0 = 0, time.perf_counter()
        while True:
            i = n * B
            params, _, warm = reference_cep_step(spec, params, x[i:i + B], eye[y[i:i + B]], warm, p.beta,
                                                 p.weight_lrs, p.bias_lrs, p.sweeps)
            n += 1
            dt = time.perf_counter() - t0
            if (dt > seconds and n >= 2) or n >= max_batches:
                break
    return dt / n, n


def machine() -> str:
    try:
        model = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")][0]
    except (OSError, IndexError):  # pragma: no cover
        model = platform.processor()
    return f"{model}, {os.cpu_count()} CPUs, {platform.platform()}"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:  # pragma: no cover
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["drn-xs", "drn-1h", "drn-2h", "drn-xl"])
    ap.add_argument("--backends", nargs="+", default=["numba", "numpy"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per training configuration")
    ap.add_argument("--routes", nargs="+", default=["chunk", "step"], choices=["chunk", "step"],
                    help="numba backend: 'chunk' = several batches per compiled call (the training loop's "
                         "route for SGD), 'step' = one call per batch; the first is judged against the targets")
    ap.add_argument("--data-dir", default=None, help="folder with MNIST (default: $PHYSGRAD_DATA, ~/.physgrad/data)")
    ap.add_argument("--report", default=None, help="write a markdown report here")
    args = ap.parse_args(argv)
    if "numba" in args.backends and not numba_cpu.AVAILABLE:
        print("numba is not installed: measuring the numpy backend only", file=sys.stderr)
        args.backends = [b for b in args.backends if b != "numba"]

    def best_of(f, *a, repeat=3):
        runs = [f(*a) for _ in range(repeat)]
        return max(r[0] for r in runs), max(r[1] for r in runs)

    t_start = time.time()
    up0 = uptime()
    x, y, x_test, source = load_images(args.data_dir)
    lines = []

    def out(s=""):
        print(s, flush=True)
        lines.append(s)

    out(f"data: {source}; machine: {machine()}")
    out(f"at start: {up0}")
    def rates():
        return ({t: best_of(sgemm_rate, t) for t in args.threads},
                {(lvl, t): best_of(copy_bandwidth, nb, t) for lvl, nb in LEVELS for t in args.threads})

    sg, bw = rates()
    out("sgemm (1000x784 @ 784x1024, float32), per wall second / per CPU second: " + ", ".join(
        f"{t} thread(s) {v[0] / 1e9:.0f} / {v[1] / 1e9:.0f} GFLOP/s" for t, v in sg.items()))
    out("copy bandwidth (read + write), per wall second / per CPU second: " + ", ".join(
        f"{lvl} {t} thread(s) {v[0] / 1e9:.0f} / {v[1] / 1e9:.0f} GB/s" for (lvl, t), v in bw.items()))
    out("Rates are the best of 3 short measurements, re-measured before each preset (the table's floors "
        "use the preset's own); epoch times are the best of 5 timed segments (median in brackets), "
        "extrapolated to 15,000 batches. Floors and ratios: 'wall' uses the wall-time rates at the same "
        "thread count (both sides slowed by the load); 'CPU' divides the process CPU time of the epoch by "
        "the floor at the per-CPU-second rates (closer to what an idle machine would show).")
    out()

    scale = N_TRAIN / B
    rows, verdicts = [], []
    for name in args.presets:
        p = get_preset(name)
        if name != args.presets[0]:
            sg, bw = rates()
        fl, wb = train_flops(p), weight_bytes(p)
        ip = {t: best_of(inplace_rate, wb, t) for t in args.threads}
        out(f"{name}: in-place read+write of {wb / 1e6:.1f} MB (all weights), per wall second / per CPU second: "
            + ", ".join(f"{t} thread(s) {v[0] / 1e9:.0f} / {v[1] / 1e9:.0f} GB/s" for t, v in ip.items()))
        level = "L2" if wb <= L2_LIMIT else ("L3" if wb <= L3_LIMIT else "DRAM")
        big = wb > L3_LIMIT
        ref_dt, ref_n = time_reference(p, x, y, args.seconds, 3 if big else 10 ** 6)
        best = None
        for backend in args.backends:
            routes = tuple(args.routes) if backend == "numba" else ("step",)
            timed = time_steppers(p, backend, args.threads, x, y, args.seconds * len(args.threads) * len(routes),
                                  min_batches=10 if big else 20, max_batches=40 if big else None, routes=routes)
            for (t, route) in timed:
                dt, cpu, med, n, params, st = timed[t, route]
                label = backend if route == routes[0] else f"{backend} ({route})"
                n_eval = 2000 if big else N_TEST
                fused.evaluate(st.spec, params, x_test[:500], p.sweeps_eval, n_threads=t)  # warm up
                t0 = time.perf_counter()
                fused.evaluate(st.spec, params, x_test[:n_eval], p.sweeps_eval, n_threads=t)
                t_eval = (time.perf_counter() - t0) * N_TEST / n_eval
                eval_pct = 100 * eval_flops(p, N_TEST) / t_eval / sg[t][0]
                arith, arith_cpu = fl / sg[t][0], fl / sg[t][1]
                mem, mem_cpu = 2 * wb / bw[level, t][0], 2 * wb / bw[level, t][1]
                inpl, inpl_cpu = 2 * wb / ip[t][0], 2 * wb / ip[t][1]
                row = dict(preset=name, backend=label, threads=t, epoch=dt * scale, med=med * scale,
                           cpu=cpu * scale, batches=n, sgemm=sg[t][0], bw=bw[level, t][0],
                           mflop=fl / 1e6, mb=2 * wb / 1e6, arith=arith * scale, mem=mem * scale, level=level,
                           r_arith=dt / arith, r_mem=dt / mem, r_arith_cpu=cpu / arith_cpu, r_mem_cpu=cpu / mem_cpu,
                           inpl=inpl * scale, r_inpl=dt / inpl, r_inpl_cpu=cpu / inpl_cpu,
                           ref=ref_dt * scale, ref_n=ref_n, speedup=ref_dt / dt, eval=t_eval, eval_pct=eval_pct)
                rows.append(row)
                if label == args.backends[0] and (best is None or row["epoch"] < best["epoch"]):
                    best = row
                print(f"  {name} {backend} {t} thread(s): {row['epoch']:.1f} s/epoch ({n} batches), "
                      f"eval {t_eval:.2f} s ({eval_pct:.0f} % of sgemm)", file=sys.stderr, flush=True)
        first = {r["threads"]: r for r in rows if r["preset"] == name and r["backend"] == args.backends[0]}
        if args.backends[0] == "numba" and len(args.routes) > 1:  # the routes' ratio (interleaved, same load)
            other = {r["threads"]: r for r in rows if r["preset"] == name and r["backend"] == f"numba ({args.routes[1]})"}
            for t in sorted(set(first) & set(other)):
                verdicts.append(f"{name}, {t} thread(s): numba {args.routes[0]} route {first[t]['epoch']:.2f} s "
                                f"({first[t]['cpu']:.2f} s CPU) vs {args.routes[1]} route {other[t]['epoch']:.2f} s "
                                f"({other[t]['cpu']:.2f} s CPU) per epoch: "
                                f"{other[t]['epoch'] / first[t]['epoch']:.2f}x (interleaved, same load)")
        for (pname, t), tgt in TARGETS.items():
            r = best if t is None else first.get(t)
            if pname != name or r is None:
                continue
            ok = r["epoch"] <= tgt
            verdicts.append(f"{name}: epoch <= {tgt:g} s{'' if t is None else f' on {t} thread(s)'} -> "
                            f"{'MET' if ok else 'MISSED'} ({r['epoch']:.1f} s wall, {r['cpu']:.1f} s CPU, "
                            f"{r['backend']}, {r['threads']} thread(s); memory floor {r['mem']:.1f} s, "
                            f"in-place floor {r['inpl']:.1f} s, arithmetic floor {r['arith']:.1f} s)")
        if 1 in first and 2 in first:
            sp = first[1]["epoch"] / first[2]["epoch"]
            cpu_ratio = first[2]["cpu"] / first[1]["cpu"]
            line = (f"{name}: 2 threads vs 1 (interleaved, same load): {sp:.2f}x faster in wall time; "
                    f"CPU time x{cpu_ratio:.2f} (2 threads / 1; 1.0 = no parallel overhead)")
            if name == SPEEDUP_TARGET[0]:
                load = os.getloadavg()[0]
                if load > (os.cpu_count() or 1):  # the scheduler, not the kernel, sets the wall-time ratio then
                    line += (f" -> >= {SPEEDUP_TARGET[1]:g}x NOT JUDGED: load average {load:.1f} on {os.cpu_count()} "
                             f"CPUs, where a 2-thread process gets two scheduler shares and a 1-thread one a "
                             f"fraction of a core")
                else:
                    line += f" -> >= {SPEEDUP_TARGET[1]:g}x {'MET' if sp >= SPEEDUP_TARGET[1] else 'MISSED'}"
            verdicts.append(line)
    up1 = uptime()

    head = ("| preset | backend | threads | epoch (s, wall) | epoch (s, CPU) | batches | MFLOP/batch "
            "| sgemm GFLOP/s | arith. floor (s) "
            "| x arith. wall / CPU | MB moved/batch | copy GB/s | memory floor (s) | x memory wall / CPU "
            "| in-place floor (s) | x in-place wall / CPU "
            "| numpy reference step, epoch (s) | speedup | eval 10k (s) | eval % of sgemm |")
    out(head)
    out("|" + "|".join(["---"] * (head.count("|") - 1)) + "|")
    for r in rows:
        out(f"| {r['preset']} | {r['backend']} | {r['threads']} | {r['epoch']:.1f} ({r['med']:.1f}) | {r['cpu']:.1f} "
            f"| {r['batches']} | {r['mflop']:.1f} | {r['sgemm'] / 1e9:.0f} | {r['arith']:.1f} "
            f"| {r['r_arith']:.1f} / {r['r_arith_cpu']:.1f} | {r['mb']:.1f} | {r['bw'] / 1e9:.0f} "
            f"| {r['mem']:.1f} ({r['level']}) | {r['r_mem']:.1f} / {r['r_mem_cpu']:.1f} "
            f"| {r['inpl']:.1f} | {r['r_inpl']:.1f} / {r['r_inpl_cpu']:.1f} "
            f"| {r['ref']:.0f} ({r['ref_n']} batches) | {r['speedup']:.0f}x "
            f"| {r['eval']:.2f} | {r['eval_pct']:.0f} % |")
    out()
    out(f"Targets (issue 19; the first backend, {args.backends[0]}):")
    for v in verdicts:
        out(f"- {v}")
    ev = [r for r in rows if r["backend"] == args.backends[0]]
    if ev:
        top = max(ev, key=lambda r: r["eval_pct"])
        out(f"- large-batch evaluation >= {EVAL_TARGET:g} % of sgemm -> "
            f"{'MET' if top['eval_pct'] >= EVAL_TARGET else 'MISSED'} (best {top['eval_pct']:.0f} %: "
            f"{top['preset']}, {top['threads']} thread(s))")
    out()
    out(f"at end: {up1}; benchmark took {time.time() - t_start:.0f} s")
    out(f"numba {numba_cpu.VERSION}, threading layer "
        f"{numba_cpu.numba.config.THREADING_LAYER if numba_cpu.AVAILABLE else 'n/a'}; numpy {np.__version__}")
    if args.report:
        path = Path(args.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        words = list(argv if argv is not None else sys.argv[1:])
        if args.data_dir:  # the report is committed: no folder of this machine in it
            words = ["<data>" if w == args.data_dir else w.replace(f"={args.data_dir}", "=<data>") for w in words]
        cmd = "python benchmarks/layered.py " + " ".join(words)
        path.write_text("# Layered-mode C-EP speed (`benchmarks/layered.py`)\n\nCommand: `" + cmd + "`\n\n"
                        + "\n".join(lines) + "\n")
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Speed of layered-mode training and evaluation (DRN presets, centered EP, float32, batch 4).

Usage::

    python benchmarks/layered.py [--presets drn-xs drn-1h drn-2h] [--seconds 4] [--threads 1 2] [--data-dir D]

For each preset it prints, in one run:

- the time of one training epoch (60,000 samples, batch 4) of the fused C-EP step
  (:mod:`physgrad.layered.fused`), **extrapolated** from the batches that fit in ``--seconds``
  (the number measured is printed), for each thread count;
- the time of a straightforward numpy implementation of the same step (:func:`reference_cep_step`
  below: recomputes ``s0 @ W1`` and the column sums in every sweep, forms each full gradient
  matrix, then updates and clamps), also extrapolated;
- the evaluation time on the 10,000 test images (batches of 1000, from the zero state);
- the matmul FLOPs per training batch and per evaluation, the achieved rates, and the measured
  BLAS ``sgemm`` rate on the evaluation's shape, with 1 and 2 threads.

Uses MNIST when found (``--data-dir``, ``$PHYSGRAD_DATA``, ... see :mod:`physgrad.layered.data`), random
sparse images otherwise. Timings on a shared machine vary; the load average is printed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from physgrad.layered import fused  # noqa: E402
from physgrad.layered.data import DataNotFoundError, load_dataset  # noqa: E402
from physgrad.layered.presets import get_preset  # noqa: E402

N_TRAIN, N_TEST, B = 60000, 10000, 4

PASSES = """
Passes over W1 (n0 x n1 float32) per training batch, counted from the code:
  fused step   : 1 read + 1 write from L3/memory. W1 is processed in ~512 KB row blocks that stay in L2;
                 per block: rank-(B+1) update product (written to a block buffer), add, clamp at 0, and
                 the next batch's [s0'; 1] @ W1 (drive + column sums) -- 4 in-cache sub-passes.
                 The drive s0 @ W1 and the column sums are computed once per batch, not per sweep.
  naive step   : 24 reads for s0 @ W1 and the column sums (every sweep of the 3 phases x 4 sweeps),
                 about 16 reads + 8 writes to form the two full dE/dW1 matrices and their difference,
                 3 reads + 2 writes for the SGD update, 1 read + 1 write for the clamp:
                 about 44 reads + 11 writes.
"""


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
    """Matmul FLOPs of one fused C-EP batch (multiply-add = 2 FLOPs)."""
    n = p.sizes
    L = len(n) - 1
    f = 2 * (B + 1) * n[0] * n[1] * 2  # next batch's [s0; 1] @ W1, and the rank-(B+1) update of W1
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


def eval_flops(p, n_samples) -> int:
    n = p.sizes
    L = len(n) - 1
    f = 2 * n_samples * (n[0] // 2) * n[1]  # x @ (W1_top - W1_bottom)
    per_sweep = sum(2 * n_samples * n[k - 1] * n[k] for k in range(2, L + 1)) + \
        sum(2 * n_samples * n[k] * n[k + 1] for k in range(1, L))
    return f + p.sweeps_eval * per_sweep


def time_fast(p, spec, x, y, threads, seconds):
    params = p.energy().init_theta(np.random.default_rng(0), 1.0, spec.dtype)
    ws = fused.Workspace(spec, B, n_threads=threads)
    eye = np.eye(10, dtype=np.float32)
    lrs, blrs = list(p.weight_lrs), list(p.bias_lrs)
    with threadpool_limits(1):
        warm = spec.zero_state(B)
        drive = fused.make_drive(spec, ws, params[0], spec.input_layer(x[:B]))
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            i = (n * B) % (N_TRAIN - 2 * B)
            both = spec.input_layer(x[i:i + 2 * B])  # this batch's and the next one's, as the stepper does
            s0, nxt = both[:B], both[B:]
            _, warm, drive = fused.cep_step(spec, params, ws, drive, warm, eye[y[i:i + B]], p.beta, lrs, blrs,
                                            p.sweeps, s0, nxt)
            n += 1
            dt = time.perf_counter() - t0
            if dt > seconds and n >= 20:
                break
        cpu = time.process_time() - c0
    ws.close()
    return dt / n, cpu / n, n, params


def time_naive(p, spec, x, y, seconds, threads):
    params = p.energy().init_theta(np.random.default_rng(0), 1.0, spec.dtype)
    eye = np.eye(10, dtype=np.float32)
    with threadpool_limits(threads):
        warm = spec.zero_state(B)
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            i = (n * B) % (N_TRAIN - B)
            params, _, warm = reference_cep_step(spec, params, x[i:i + B], eye[y[i:i + B]], warm, p.beta,
                                                 p.weight_lrs, p.bias_lrs, p.sweeps)
            n += 1
            dt = time.perf_counter() - t0
            if dt > seconds and n >= 5:
                break
        cpu = time.process_time() - c0
    return dt / n, cpu / n, n


def blas_rate(m, k, n, threads, seconds=1.0):
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
        dt = (time.perf_counter() - t0) / reps
        cpu = (time.process_time() - c0) / reps
    return 2 * m * k * n / dt, 2 * m * k * n / cpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["drn-xs", "drn-1h", "drn-2h"])
    ap.add_argument("--seconds", type=float, default=4.0, help="measuring time per training configuration")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--naive-threads", type=int, default=2, help="BLAS threads for the naive numpy step")
    ap.add_argument("--data-dir", default=None, help="folder with MNIST (default: $PHYSGRAD_DATA, ~/.physgrad/data)")
    args = ap.parse_args(argv)

    x, y, x_test, source = load_images(args.data_dir)
    print(f"data: {source}; load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    rates = {t: blas_rate(1000, 784, 1024, t) for t in (1, 2)}
    print("BLAS sgemm (1000x784 @ 784x1024): " + ", ".join(
        f"{t} thread(s) {r[0] / 1e9:.1f} GFLOP/s wall, {r[1] / 1e9:.1f} GFLOP per CPU-second" for t, r in rates.items()))
    print("Epoch times are per 60,000 images (15,000 batches of 4), extrapolated from the batches measured.")
    print("'wall' is elapsed time; 'CPU' is this process's CPU time (all its threads): on a shared, loaded")
    print("machine 'CPU' for 1 thread approximates the wall time on an idle core. Evaluation: 10,000 test")
    print("images from the zero state; its rate (matmul GFLOP per CPU-second) is compared with the BLAS")
    print("rate per CPU-second at the same thread count ('% BLAS').")
    print()
    head = (f"{'preset':8s} {'thr':>3s} {'wall ep s':>9s} {'CPU ep s':>9s} {'batches':>8s} {'MFLOP/b':>8s} "
            f"{'GFLOP/CPU-s':>11s} {'naive wall':>10s} {'naive CPU':>9s} {'speedup':>8s} {'eval s':>7s} "
            f"{'ev CPU':>6s} {'ev GF/CPU-s':>9s} {'% BLAS':>7s}")
    print(head)
    print("-" * len(head))
    targets = {"drn-xs": 5.0, "drn-1h": 30.0}
    scale = N_TRAIN / B
    best = None
    for name in args.presets:
        p = get_preset(name)
        spec = fused.FusedSpec(p.energy(), p.schedule, np.float32)
        naive_dt, naive_cpu, naive_n = time_naive(p, spec, x, y, args.seconds, args.naive_threads)
        fl = train_flops(p)
        for t in args.threads:
            dt, cpu, n, params = time_fast(p, spec, x, y, t, args.seconds)
            fused.evaluate(spec, params, x_test[:1000], p.sweeps_eval, n_threads=t)  # warm up
            t0, c0 = time.perf_counter(), time.process_time()
            fused.evaluate(spec, params, x_test[:N_TEST], p.sweeps_eval, n_threads=t)
            t_eval, c_eval = time.perf_counter() - t0, time.process_time() - c0
            ef = eval_flops(p, N_TEST)
            best = min(best, (dt * scale, t)) if t != args.threads[0] else (dt * scale, t)
            print(f"{name:8s} {t:3d} {dt * scale:9.1f} {cpu * scale:9.1f} {n:8d} {fl / 1e6:8.1f} {fl / cpu / 1e9:11.1f} "
                  f"{naive_dt * scale:10.1f} {naive_cpu * scale:9.1f} {naive_cpu / cpu:7.1f}x {t_eval:7.2f} "
                  f"{c_eval:6.2f} {ef / c_eval / 1e9:9.1f} {100 * ef / c_eval / rates[t][1]:6.0f}%")
        print(f"{'':8s}     naive numpy step: {naive_n} batches measured, {args.naive_threads} BLAS thread(s); "
              f"speedup = naive CPU / fused CPU")
        tgt = targets.get(name)
        if tgt is not None:
            ok = "MET" if best[0] < tgt else f"MISSED by {best[0] - tgt:.1f} s"
            print(f"{'':8s}     target: epoch < {tgt:g} s -> {ok} (best wall time {best[0]:.1f} s, {best[1]} thread(s))")
    print(PASSES)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

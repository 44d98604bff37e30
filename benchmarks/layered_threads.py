"""1 vs 2 (or more) threads of the compiled C-EP stepper, interleaved so that the ratio sees the same load.

Usage::

    python benchmarks/layered_threads.py [--presets drn-xs drn-1h] [--threads 1 2] [--batches 600]
        [--rounds 4] [--data-dir D]

For each preset, ``rounds`` rounds; in each round every thread count runs ``batches`` consecutive
MNIST batches (batch 4, float32, SGD, a stepper made once per thread count and kept warm). Printed
per preset and thread count: the best and the median round, in microseconds per batch of wall time
and of process CPU time (all threads), the epoch (15,000 batches) extrapolated from the best round,
and the speedup of the best rounds against the first thread count; and the split of a batch between
the compiled call (``Workspace.run``: the team's step) and the rest of ``stepper.step`` (Python: the
batch's inputs, arguments, copies of the states), in wall time of the calling thread. The load
average before and after is printed: on a shared machine only same-run ratios are meaningful.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from physgrad.layered.data import load_dataset  # noqa: E402
from physgrad.layered.presets import get_preset  # noqa: E402
from physgrad.layered.steppers import CompiledCEPStepper, initial_params  # noqa: E402

EPOCH_BATCHES = 15000


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["drn-xs", "drn-1h"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args(argv)
    d = load_dataset("mnist", a.data_dir)
    x, y = d.x_train.astype(np.float32) / np.float32(255), d.y_train
    print(f"load average at start: {os.getloadavg()}", flush=True)
    for name in a.presets:
        p = get_preset(name)
        B = p.batch_size
        steppers = {}
        kernel = {}
        for T in a.threads:
            st = CompiledCEPStepper(p, initial_params(p, 0, np.float32), threads=T)
            st.start_epoch(x, np.arange(len(x)), 0)
            steppers[T] = st
            kernel[T] = [0.0]

            def timed_run(args, full, key=None, _run=st.ws.run, _acc=kernel[T]):
                t0 = time.perf_counter()
                out = _run(args, full, key)
                _acc[0] += time.perf_counter() - t0
                return out
            st.ws.run = timed_run  # this stepper's compiled calls, timed
        times = {T: [] for T in a.threads}
        pos = 0
        for rnd in range(a.rounds + 1):  # round 0 warms up (first calls, caches)
            for T in a.threads:
                import numba

                numba.set_num_threads(T)
                st = steppers[T]
                st.start_epoch(x, np.arange(len(x)), pos)
                kernel[T][0] = 0.0
                t0, c0 = time.perf_counter(), time.process_time()
                for b in range(pos, pos + a.batches):
                    idx = np.arange(b * B, (b + 1) * B) % len(x)
                    nxt = np.arange((b + 1) * B, (b + 2) * B) % len(x)
                    st.step(x, idx, y[idx], nxt, None, 1.0)
                if rnd:
                    times[T].append(((time.perf_counter() - t0) / a.batches, (time.process_time() - c0) / a.batches,
                                     kernel[T][0] / a.batches))
            pos += a.batches
        for st in steppers.values():
            st.close()
        best0 = None
        for T in a.threads:
            wall = sorted(t[0] for t in times[T])
            cpu = sorted(t[1] for t in times[T])
            best = wall[0]
            best0 = best0 or best
            k = min(times[T])[2]  # the compiled call's share in the best round
            print(f"{name} threads={T}: wall {best * 1e6:7.0f} us/batch (median {wall[len(wall) // 2] * 1e6:7.0f}; "
                  f"compiled call {k * 1e6:5.0f}, rest of the step {(best - k) * 1e6:4.0f}), "
                  f"CPU {cpu[0] * 1e6:7.0f} us/batch (median {cpu[len(cpu) // 2] * 1e6:7.0f}); epoch "
                  f"{best * EPOCH_BATCHES:5.1f} s wall; speedup vs {a.threads[0]} thread(s) {best0 / best:4.2f}x",
                  flush=True)
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

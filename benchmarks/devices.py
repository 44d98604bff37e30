"""Per-epoch cost of training DRN-XS on each device preset, against the ideal device.

Usage::

    python benchmarks/devices.py [--train-size 2000] [--data-dir D] [--models ideal levels16-stochastic ...]
        [--kernel auto|numba|numpy] [--repeat 2] [--report reports/benchmarks/devices.md]

Each model trains ``physgrad train --preset drn-xs --epochs 1 --train-size N`` in this process
(C-EP, batch 4, float32, seed 0, one thread, the default engine and backend; ``pcm-pair``'s read
noise is resampled per phase, which only the generic engine can do, so it runs on ``--engine
generic`` and is compared with ``ideal@generic``). The train loop's clock is replaced by the process CPU
clock, so the figure is the **CPU seconds of the epoch's training** (data loading, evaluation and
compilation excluded: every model runs ``--repeat`` times; the first run, which loads or compiles the
kernels, is dropped and the **minimum** of the others counts (the machine is shared: the minimum is the
run least disturbed; their median is printed beside it); the wall-clock seconds of one more epoch are
printed too. The machine is shared: the load averages at start
and end are printed and written to the report. BLAS threads are pinned to one (set before numpy loads).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402  (after the BLAS threads are pinned)

MODELS = ("ideal", "levels16-nearest", "levels16-stochastic", "digipot128", "reram-sb", "reram-es",
          "ideal@generic", "pcm-pair@generic")


class _CpuClock:
    """Stands in for :mod:`time` inside the train loop: ``perf_counter`` is the process CPU clock."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def perf_counter():
        return time.process_time()


def run(model: str, train_size: int, data_dir: str, cpu: bool) -> dict:
    from physgrad.layered import train as train_module
    from physgrad.layered.train import TrainConfig, train

    name, _, engine = model.partition("@")
    out = tempfile.mkdtemp(prefix="devbench-")
    shutil.rmtree(out)
    saved = train_module.time
    try:
        if cpu:
            train_module.time = _CpuClock()
        config = TrainConfig(preset="drn-xs", data_dir=data_dir, epochs=1, train_size=train_size,
                             device_model=name, threads=1, **({"engine": engine} if engine else {}))
        m = train(config, out, progress=False)
    finally:
        train_module.time = saved
        shutil.rmtree(out, ignore_errors=True)
    return {"seconds": m[-1]["train_seconds"], "test_error": m[-1]["test_error"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--data-dir", default=os.environ.get("PHYSGRAD_DATA"))
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--kernel", choices=("auto", "numba", "numpy"), default="auto",
                    help="route of the device update (physgrad.devices.pulsing.BACKEND)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--report", default=None, help="append a markdown table to this file")
    args = ap.parse_args(argv)
    from physgrad.devices import pulsing

    pulsing.BACKEND = args.kernel
    load0 = os.getloadavg()
    rows = []
    for model in args.models:
        cpus = [run(model, args.train_size, args.data_dir, cpu=True) for _ in range(max(args.repeat, 2))][1:]
        wall = run(model, args.train_size, args.data_dir, cpu=False)
        secs = sorted(c["seconds"] for c in cpus)
        rows.append({"model": model, "cpu_s": secs[0], "cpu_median_s": float(np.median(secs)), "cpu_runs": secs,
                     "wall_s": wall["seconds"], "test_error": cpus[-1]["test_error"]})
        print(json.dumps(rows[-1]), flush=True)
    load1 = os.getloadavg()
    base = {r["model"].partition("@")[2]: r for r in rows if r["model"].partition("@")[0] == "ideal"}
    lines = [f"kernel `{args.kernel}` (numba available: {pulsing.AVAILABLE}), DRN-XS, {args.train_size} images, "
             f"C-EP, batch 4, float32, 1 thread; load average {load0[0]:.1f} at start, {load1[0]:.1f} at end "
             f"(shared 2-core machine)", "",
             "| model | engine | CPU s / epoch (min) | x ideal (min) | CPU s (median) | x ideal (median) | wall s / epoch "
             "| test error % |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name, _, engine = r["model"].partition("@")
        ref = base.get(engine)
        ratio = f"{r['cpu_s'] / ref['cpu_s']:.2f}" if ref else "-"
        ratio_med = f"{r['cpu_median_s'] / ref['cpu_median_s']:.2f}" if ref else "-"
        lines.append(f"| `{name}` | {engine or 'fast'} | {r['cpu_s']:.3f} | {ratio} | {r['cpu_median_s']:.3f} | "
                     f"{ratio_med} | {r['wall_s']:.2f} | {r['test_error']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.report:
        with open(args.report, "a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

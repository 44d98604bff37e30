"""Speed of truncated-backprop (TBP) training: the fast engine against the generic one (float32, batch 4).

Usage::

    python benchmarks/layered_tbp.py [--presets drn-xs] [--images 2000] [--repeat 3] [--data-dir D]
        [--report reports/benchmarks/layered_tbp.md]

For each preset, both steppers of ``physgrad train --algorithm tbp`` -- ``FusedTBPStepper``
(``--engine fast``, :mod:`physgrad.layered.fused_tbp`) and ``RuleStepper`` (``--engine generic``,
autograd through :class:`physgrad.learning.TruncatedBackprop`) -- train on the first ``--images``
training images (one BLAS thread, from the same initial parameters), best of ``--repeat`` passes for
the fast engine (one for the generic one). The seconds per epoch of 60,000 images are **extrapolated**
linearly from that subset (evaluation not included). Wall time and process CPU time are both printed:
the machine is shared, and the CPU time of one thread approximates the wall time on an idle core.
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
from physgrad.layered.steppers import initial_params, make_stepper  # noqa: E402

N_TRAIN = 60000


def time_engine(p, engine, x, y):
    """(wall s, cpu s) of one pass of ``engine``'s TBP stepper over ``x`` in batches of ``p.batch_size``."""
    st = make_stepper(engine, p, "tbp", initial_params(p, 0, "float32"), threads=1)
    B = p.batch_size
    order = np.arange(len(x))
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        st.start_epoch(x, order, 0)
        warm = None
        for i in range(0, len(x), B):
            nxt = order[i + B:i + 2 * B] if i + B < len(x) else None
            warm, _ = st.step(x, order[i:i + B], y[i:i + B], nxt, warm, 1.0)
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        st.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["drn-xs"])
    ap.add_argument("--images", type=int, default=2000, help="training images timed (per engine)")
    ap.add_argument("--repeat", type=int, default=3, help="passes of the fast engine (best kept)")
    ap.add_argument("--data-dir", default=None, help="folder with MNIST (default: $PHYSGRAD_DATA, ~/.physgrad/data)")
    ap.add_argument("--report", default=None, help="write a markdown report here")
    a = ap.parse_args(argv)
    data = load_dataset("mnist", a.data_dir)
    x, y = data.x_train[:a.images].astype(np.float32) / np.float32(255), data.y_train[:a.images]
    lines = [f"load average at start: {os.getloadavg()[0]:.2f} (2-core machine shared with other jobs)", "",
             f"TBP training, float32, 1 thread, first {len(x)} MNIST training images, "
             f"seconds per 60,000-image epoch extrapolated linearly (evaluation excluded)", "",
             "| preset | engine | wall s/epoch | cpu s/epoch | speed-up (wall) | speed-up (cpu) |",
             "|---|---|---|---|---|---|"]
    for name in a.presets:
        p = get_preset(name)
        fast = min((time_engine(p, "fast", x, y) for _ in range(a.repeat)), key=lambda t: t[0])
        gen = time_engine(p, "generic", x, y)
        scale = N_TRAIN / len(x)
        for eng, (w, c) in (("generic", gen), ("fast", fast)):
            su = (f"{gen[0] / w:.1f}x", f"{gen[1] / c:.1f}x") if eng == "fast" else ("1x", "1x")
            lines.append(f"| {name} | {eng} | {w * scale:.1f} | {c * scale:.1f} | {su[0]} | {su[1]} |")
    lines += ["", f"load average at end: {os.getloadavg()[0]:.2f}"]
    text = "\n".join(lines)
    print(text)
    if a.report:
        Path(a.report).parent.mkdir(parents=True, exist_ok=True)
        Path(a.report).write_text("# Truncated backprop: fast vs generic engine\n\n"
                                  f"`python benchmarks/layered_tbp.py {' '.join(argv or sys.argv[1:])}`\n\n"
                                  + text + "\n")


if __name__ == "__main__":
    main()

"""The torch backend on a GPU: equivalence with the numpy reference and DRN-1H / DRN-XL epoch times.

Prepared for a machine with a CUDA GPU (issue 11: "run one prepared script there (a few minutes)");
it also runs with ``--device cpu`` (to check the script itself). Needs ``pip install 'physgrad[torch]'``.

Usage::

    python benchmarks/layered_gpu.py [--device cuda] [--data-dir D] [--batches 300] [--out reports/benchmarks/layered-gpu.md]

1. Equivalence, float64: a small DRN and DHN (2 hidden layers), several batches through the torch
   stepper on ``--device`` and the numpy stepper: largest differences of the parameters.
2. Speed, float32, batch 4: ``--batches`` C-EP batches of DRN-1H and DRN-XL (after 20 warm-up
   batches, with ``torch.cuda.synchronize``), extrapolated to an epoch of 15,000 batches; evaluation of
   the 10,000 test images. Target (issue 11): DRN-XL epoch <= 20 s on a GPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from physgrad.layered.presets import MNIST_PIXELS, Preset, get_preset  # noqa: E402
from physgrad.layered.steppers import FusedCEPStepper, initial_params, make_stepper  # noqa: E402

B, N_TRAIN = 4, 60000


def equivalence(device):
    rows = []
    rng = np.random.default_rng(2)
    x = rng.random((40, MNIST_PIXELS))
    x[x < 0.8] = 0
    y = rng.integers(0, 10, len(x))
    for model in ("drn", "dhn"):
        preset = Preset("check", model, (64, 32), input_gain=3.0, sweeps=4, sweeps_eval=4, beta=0.05,
                        weight_lrs=(0.05,) * 3, batch_size=B)
        a = FusedCEPStepper(preset, initial_params(preset, 0, "float64"))
        b = make_stepper("fast", preset, "cep", initial_params(preset, 0, "float64"), backend="torch", device=device)
        order = np.arange(len(x))
        a.start_epoch(x, order, 0)
        b.start_epoch(x, order, 0)
        wa = wb = None
        for bi in range(len(x) // B):
            idx = order[bi * B:(bi + 1) * B]
            nxt = order[(bi + 1) * B:(bi + 2) * B] if (bi + 1) * B < len(x) else None
            wa, _ = a.step(x, idx, y[idx], nxt, wa, 1.0)
            wb, _ = b.step(x, idx, y[idx], nxt, wb, 1.0)
        diff = max(float(np.max(np.abs(u - v)) / max(np.max(np.abs(u)), 1e-30)) for u, v in zip(a.params, b.to_host()))
        same = bool(np.array_equal(a.evaluate(a.params, x), b.evaluate(b.params, x)))
        rows.append(f"| {model} | {len(x) // B} | {diff:.1e} | {same} |")
        a.close()
        b.close()
    return rows


def speed(name, device, x, y, x_test, batches):
    import torch

    p = get_preset(name)
    st = make_stepper("fast", p, "cep", initial_params(p, 0, "float32"), backend="torch", device=device)
    order = np.arange(len(x))
    st.start_epoch(x, order, 0)
    warm = None

    def run(lo, hi):
        nonlocal warm
        for bi in range(lo, hi):
            idx = order[bi * B:(bi + 1) * B]
            warm, _ = st.step(x, idx, y[idx], order[(bi + 1) * B:(bi + 2) * B], warm, 1.0)

    run(0, 20)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    run(20, 20 + batches)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / batches
    t0 = time.perf_counter()
    st.evaluate(st.params, x_test)
    t_eval = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")
    st.close()
    return f"| {name} | {device} | {batches} | {dt * 1e3:.2f} | {dt * N_TRAIN / B:.1f} | {t_eval:.2f} | {mem:.2f} |"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--presets", nargs="+", default=["drn-1h", "drn-xl"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    from physgrad.layered.data import load_dataset

    d = load_dataset("mnist", args.data_dir)
    x, y, x_test = d.x_train.astype(np.float32) / 255, d.y_train, d.x_test.astype(np.float32) / 255
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    lines = [f"torch {torch.__version__}, device {args.device} ({gpu})", "",
             "Equivalence with the numpy reference (float64, TF32 off, deterministic algorithms):", "",
             "| model | batches | max relative parameter difference | same predictions |", "|---|---:|---:|---|"]
    lines += equivalence(args.device)
    lines += ["", "Speed (float32, batch 4, C-EP; epoch extrapolated from the timed batches):", "",
              "| preset | device | batches | ms/batch | epoch (s) | eval 10k (s) | peak GPU memory (GB) |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for name in args.presets:
        lines.append(speed(name, args.device, x, y, x_test, args.batches))
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("# Torch backend on a GPU (`benchmarks/layered_gpu.py`)\n\nCommand: `python "
                                  "benchmarks/layered_gpu.py " + " ".join(sys.argv[1:]) + "`\n\n" + text)


if __name__ == "__main__":
    main()

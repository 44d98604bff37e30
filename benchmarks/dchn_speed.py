"""Speed of convolutional Hopfield (DCHN) EP training: physgrad against the authors' code, same run.

Usage::

    python benchmarks/dchn_speed.py --anchor DIR [--data-dir D] [--batches 4] [--rounds 3]
        [--channels 32,64] [--batch-size 128] [--sweeps 15] [--threads 1] [--report FILE]

``DIR`` holds the authors' repository (rain-neuromorphics/energy-based-learning; e.g. ``git archive``
of it): its ``ConvHopfieldEnergy28``, ``FixedPointMinimizer`` (asynchronous), ``EquilibriumProp``
(centered, nudging = beta) and ``torch.optim.SGD`` with momentum 0.9, the comparative study's
training step. Both sides do the same work per batch: a free phase of ``--sweeps`` sweeps from the
previous batch's state, two nudged phases of ``--sweeps`` sweeps from the free state, the centered
EP update with momentum; same architecture (1x28x28 -> c1x12x12 -> c2x4x4 -> 10, 5x5 kernels, max
pooling), batch size, float32, thread count. The engines run in alternation (``--rounds`` rounds of
``--batches`` batches each, after one warm-up batch); the medians of the per-batch process CPU time
and wall time are reported, with the epoch time (469 batches of 128) they project to.

The machine is shared: the load averages at start and end are printed; CPU time of one thread
approximates the wall time on an idle core.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


def load_x(data_dir, n, seed=0):
    rng = np.random.default_rng(seed)
    if data_dir:
        from physgrad.layered.data import load_dataset

        ds = load_dataset("mnist", data_dir)
        idx = rng.permutation(len(ds.x_train))[:n]
        return ds.x_train[idx].astype(np.float32) / 255.0, ds.y_train[idx]
    x = rng.uniform(size=(n, 784)).astype(np.float32)
    x[rng.uniform(size=x.shape) < 0.8] = 0
    return x, rng.integers(0, 10, n)


class Anchor:
    """The authors' C-EP training step (their classes, their order of operations)."""

    def __init__(self, anchor_dir, channels, sweeps, beta, lrs, threads, device="cpu"):
        sys.path.insert(0, str(anchor_dir))
        import torch
        from model.function.cost import SquaredError
        from model.function.network import Network
        from model.hopfield.minimizer import FixedPointMinimizer
        from model.hopfield.network import ConvHopfieldEnergy28
        from training.sgd import AugmentedFunction, EquilibriumProp

        torch.set_num_threads(threads)
        self.torch = torch
        torch.manual_seed(0)
        self.energy = ConvHopfieldEnergy28(1, channels[0], channels[1], 10)
        self.energy.set_device(device)
        self.device = device
        self.cost = SquaredError(self.energy.layers()[-1])
        self.network = Network(self.energy)
        free_layers = self.network.free_layers()
        augmented = AugmentedFunction(self.energy, self.cost)
        train_min = FixedPointMinimizer(augmented, free_layers)
        train_min.mode = "asynchronous"
        train_min.num_iterations = sweeps
        self.estimator = EquilibriumProp(self.energy.params(), self.energy.layers(), augmented, self.cost, train_min)
        self.estimator.variant = "centered"
        self.estimator.nudging = beta
        self.free_min = FixedPointMinimizer(self.energy, free_layers)
        self.free_min.mode = "asynchronous"
        self.free_min.num_iterations = sweeps
        params = self.energy.params()
        lr_list = list(lrs[len(lrs) // 2:]) + list(lrs[:len(lrs) // 2])  # their order: biases, then weights
        self.params = params
        self.opt = torch.optim.SGD([{"params": p.state, "lr": lr} for p, lr in zip(params, lr_list)], lr=0.1,
                                   momentum=0.9)

    def step(self, x, y):
        torch = self.torch
        xb = torch.as_tensor(x).reshape(-1, 1, 28, 28)
        self.network.set_input(xb, reset=False)
        self.free_min.compute_equilibrium()
        self.cost.set_target(torch.as_tensor(y, device=self.device))
        grads = self.estimator.compute_gradient()
        for p, g in zip(self.params, grads):
            p.state.grad = g
        self.opt.step()


class Ours:
    def __init__(self, channels, sweeps, beta, lrs, threads, batch_size, backend, device="cpu", conv_dtype="full"):
        from physgrad.layered.kernels.conv_cep import ConvEPStepper
        from physgrad.layered.presets import get_preset
        from physgrad.layered.steppers import initial_params

        self.preset = get_preset("dchn-mnist").with_options(hidden=tuple(channels), sweeps=sweeps, beta=beta,
                                                          weight_lrs=tuple(lrs[:3]), bias_lrs=tuple(lrs[3:]),
                                                          batch_size=batch_size, optimizer="momentum")
        params = initial_params(self.preset, 0, np.float32)
        if backend == "torch":  # the kernel's momentum is the numpy optimizer: time the torch kernel with SGD
            self.preset = self.preset.with_options(optimizer="sgd")
        self.stepper = ConvEPStepper(self.preset, params, threads=threads, backend=backend, device=device,
                                     conv_dtype=conv_dtype)
        self.warm = None

    def step(self, x, y):
        self.warm, _ = self.stepper.step(x, np.arange(len(x)), y, None, self.warm, 1.0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anchor", required=True, help="folder with the authors' energy-based-learning code")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--channels", default="32,64")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--sweeps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--engines", default="anchor,numpy,torch,torch-bf16",
                    help="anchor, numpy, torch (float32), torch-bf16 (bfloat16 convolutions in the sweeps)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the torch engines: anchor and torch)")
    ap.add_argument("--report", default=None)
    a = ap.parse_args(argv)
    channels = tuple(int(c) for c in a.channels.split(","))
    lrs = (0.0625, 0.0375, 0.0125, 0.0625, 0.0375, 0.0125)
    B = a.batch_size
    x, y = load_x(a.data_dir, B * (1 + a.batches * a.rounds))
    load0 = os.getloadavg()
    if a.device == "cuda":
        import torch

        sync = torch.cuda.synchronize
    else:
        def sync():
            return None
    engines = {}
    for name in a.engines.split(","):
        dev = a.device if name.split("-")[0] in ("anchor", "torch") else "cpu"
        engines[name] = (Anchor(Path(a.anchor), channels, a.sweeps, 0.25, lrs, a.threads, dev) if name == "anchor" else
                         Ours(channels, a.sweeps, 0.25, lrs, a.threads, B, name.split("-")[0], dev,
                              "bfloat16" if name.endswith("-bf16") else "full"))
        engines[name].step(x[:B], y[:B])  # warm-up
    cpu = {n: [] for n in engines}
    wall = {n: [] for n in engines}
    i = 1
    for _ in range(a.rounds):
        for name, eng in engines.items():
            for b in range(a.batches):
                sl = slice((i + b) * B, (i + b + 1) * B)
                c0, w0 = time.process_time(), time.perf_counter()
                eng.step(x[sl], y[sl])
                sync()
                cpu[name].append(time.process_time() - c0)
                wall[name].append(time.perf_counter() - w0)
        i += a.batches
    load1 = os.getloadavg()
    n_batches = -(-60000 // B)
    lines = [f"device {a.device}; DCHN 1x28x28-{channels[0]}x12x12-{channels[1]}x4x4-10, batch {B}, {a.sweeps} sweeps per phase "
             f"(free + two nudged), centered EP, float32, {a.threads} thread(s); {a.rounds} rounds x {a.batches} "
             f"batches per engine, alternating",
             f"load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, at end {load1[0]:.2f} {load1[1]:.2f} "
             f"{load1[2]:.2f} (2-core machine, shared)", "",
             f"| engine | CPU s / batch (median) | wall s / batch (median) | CPU s / epoch ({n_batches} batches) | speed-up (CPU) |",
             "|---|---|---|---|---|"]
    ref = np.median(cpu["anchor"]) if "anchor" in cpu else None
    for name in engines:
        c, w = float(np.median(cpu[name])), float(np.median(wall[name]))
        sp = f"{ref / c:.2f}x" if ref else "-"
        lines.append(f"| {name} | {c:.3f} | {w:.3f} | {c * n_batches:.0f} | {sp} |")
    text = "\n".join(lines)
    print(text)
    if a.report:
        Path(a.report).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

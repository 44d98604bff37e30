"""Crossbar Hopfield experiment: accuracy and energy per training example (see README.md here).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python3 reports/experiments/crossbar-hopfield/run.py [--epochs 10] [--seeds 0 1]

Writes results.json, results.md and accuracy.png next to this file (or under --out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from physgrad.devices.energy import TAOX_WRITE, WriteEnergy
from physgrad.devices.model import Device
from physgrad.devices.pieces import DifferentialPair
from physgrad.devices.presets import get_device
from physgrad.layered.crossbar import (CrossbarLayout, CrossbarPhysics, CrossbarTrainer, backprop_step_flops,
                                       ep_step_flops, load_digits, predict_backprop, train_backprop, train_crossbar)

HERE = Path(__file__).resolve().parent

# ---- every assumption, named -------------------------------------------------------------------
PHYS = CrossbarPhysics(g_max=100e-6, v_read=0.2, node_capacitance=1e-12, settling_multiple=5.0, write=TAOX_WRITE)
# Ranges used for the energy range (factors on the nominal figures):
READ_RANGE = ((0.1 / 0.2) ** 2 * 0.1, (0.3 / 0.2) ** 2 * 10.0)  # v_read 0.1-0.3 V, C 0.1-10 pF: E_read ~ v^2 C
WRITE_RANGE = (0.5 ** 2 * 0.1, 2.0 ** 2 * 10.0)  # V_w 0.5-2 V, t_w 10 ns-1 us: E_pulse ~ V^2 t
CPU_WATTS = (4.0, 10.0, 15.0)  # W per busy core (low, nominal, high): no RAPL here; a server Xeon core's share
GPU_J_PER_FLOP = (1e-11, 1e-10, 1e-9)  # H100 FP32: 700 W / 67 TFLOP/s ~ 1e-11 at peak; tiny batch-10 matmuls run at
# ~0.1-10 % utilisation (assumption), so 1e-10 nominal, 1e-9 high
LR = (0.2, 0.1)
BETA = 0.2
BATCH = 10


def rapl_joules():
    """Package energy counter (J) if readable, else None."""
    p = Path("/sys/class/powercap/intel-rapl:0/energy_uj")
    try:
        return int(p.read_text()) * 1e-6
    except (OSError, ValueError):
        return None


NAMES = ("ideal", "reram-sb", "reram-sb lr/4", "levels64-stochastic")


def devices():
    """``{name: (device, learning rates)}``."""
    reram = replace(get_device("reram-sb"), name="reram-sb+pair", pair=DifferentialPair(refresh_every=50))
    lv = replace(get_device("levels64-stochastic"), name="levels64-stochastic+pair",
                 pair=DifferentialPair(refresh_every=50))
    return {"ideal": (Device(name="ideal"), LR), "reram-sb": (reram, LR),
            "reram-sb lr/4": (reram, (LR[0] / 4, LR[1] / 4)), "levels64-stochastic": (lv, LR)}


def plot_energy(summary: dict, out: Path) -> None:
    """Bar chart (log scale) of the energy per training example: crossbar reads and programming per
    device, the CPU and GPU figures; whiskers are the stated ranges."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels, mid, lo, hi = [], [], [], []
    for r in summary["rows"]:
        labels.append("crossbar\n" + r["network"].rsplit(", ", 1)[-1])
        mid.append(r["total_J"])
        lo.append(r["total_J_range"][0])
        hi.append(r["total_J_range"][1])
    for name, key in (("CPU\n(EP step)", "cpu_J_per_example"), ("GPU\n(EP FLOPs)", "gpu_J_per_example"),
                      ("CPU\n(backprop)", "backprop_cpu_J_per_example"), ("GPU\n(backprop FLOPs)", "backprop_gpu_J_per_example")):
        a, b, c = summary[key]
        labels.append(name)
        lo.append(a)
        mid.append(b)
        hi.append(c)
    mid, lo, hi = np.array(mid), np.array(lo), np.array(hi)
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(labels))
    ax.bar(x, mid, color=["tab:green"] * len(summary["rows"]) + ["tab:blue", "tab:red", "tab:blue", "tab:red"])
    ax.errorbar(x, mid, yerr=[mid - lo, hi - mid], fmt="none", ecolor="k", capsize=3)
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("J per training example")
    ax.set_title("Energy per example (ideal crossbar: reads only; peripherals not counted)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "energy.png", dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--replot", action="store_true", help="only redraw energy.png from results.json")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        plot_energy(json.loads((out / "results.json").read_text()), out)
        return
    X, y = load_digits()
    lay = CrossbarLayout()
    runs = {}
    for seed in args.seeds:
        perm = np.random.default_rng(1000 + seed).permutation(len(X))
        tr, te = perm[:1437], perm[1437:]
        for name, (dev, lr) in devices().items():
            t = CrossbarTrainer(lay, dev, PHYS, beta=BETA, lr=lr, seed=seed)
            curve, recs = [], []
            for ep in range(args.epochs):
                recs += train_crossbar(t, X[tr], y[tr], 1, BATCH, seed=1000 * seed + ep, account=True)
                curve.append(float(np.mean(t.predict(X[te]) == y[te])))
            e = {k: float(np.mean([r[k] for r in recs])) for k in recs[0]}
            runs.setdefault(name, []).append({"seed": seed, "test_accuracy": curve, "energy_per_example": e})
            print(name, seed, curve[-1], e, flush=True)
        th = train_backprop(lay, X[tr], y[tr], args.epochs, BATCH, lr=0.1, seed=seed)
        runs.setdefault("backprop", []).append({"seed": seed, "test_accuracy": [float(np.mean(predict_backprop(th, X[te]) == y[te]))]})
        print("backprop", seed, runs["backprop"][-1]["test_accuracy"][-1], flush=True)

    # ---- CPU: time the same (ideal) EP step without the energy bookkeeping, one thread ----------
    perm = np.random.default_rng(1000).permutation(len(X))
    t = CrossbarTrainer(lay, Device(name="ideal"), PHYS, beta=BETA, lr=LR, seed=0)
    train_crossbar(t, X[perm[:200]], y[perm[:200]], 1, BATCH, seed=5, account=False)  # warm up
    n_ex = 1437
    r0, c0, w0 = rapl_joules(), time.process_time(), time.perf_counter()
    train_crossbar(t, X[perm[:n_ex]], y[perm[:n_ex]], 1, BATCH, seed=6, account=False)
    cpu_s, wall_s, r1 = time.process_time() - c0, time.perf_counter() - w0, rapl_joules()
    c0 = time.process_time()
    for _ in range(20):
        train_backprop(lay, X[perm[:n_ex]], y[perm[:n_ex]], 1, BATCH, seed=0)
    bp_cpu_s = (time.process_time() - c0) / 20
    cpu = {"ep_cpu_s_per_example": cpu_s / n_ex, "ep_wall_s_per_example": wall_s / n_ex,
           "backprop_cpu_s_per_example": bp_cpu_s / n_ex,
           "rapl_J_per_example": None if r0 is None or r1 is None else (r1 - r0) / n_ex,
           "load_average": os.getloadavg(), "cpu": platform.processor() or platform.machine()}

    ideal_e = runs["ideal"][0]["energy_per_example"]
    sweeps = (ideal_e["sweeps_free"], ideal_e["sweeps_nudged"])
    flops_ep = ep_step_flops(lay, *sweeps)
    flops_bp = backprop_step_flops(lay)

    rows = []
    for name in NAMES:
        es = [r["energy_per_example"] for r in runs[name]]
        read = float(np.mean([e["read_free_J"] + e["read_nudged_J"] for e in es]))
        prog = float(np.mean([e["program_J"] for e in es]))
        acc = [r["test_accuracy"][-1] for r in runs[name]]
        rows.append({"network": f"Hopfield, activity difference, {name}", "accuracy": acc, "read_J": read,
                     "program_J": prog, "total_J": read + prog,
                     "total_J_range": (read * READ_RANGE[0] + prog * WRITE_RANGE[0],
                                       read * READ_RANGE[1] + prog * WRITE_RANGE[1])})
    bp_acc = [r["test_accuracy"][-1] for r in runs["backprop"]]
    cpu_J = tuple(cpu["ep_cpu_s_per_example"] * w for w in CPU_WATTS)
    gpu_J = tuple(flops_ep * j for j in GPU_J_PER_FLOP)
    summary = {"layout": asdict(lay), "physics": {k: v for k, v in asdict(PHYS).items() if k != "write"},
               "write": asdict(PHYS.write), "read_range_factors": READ_RANGE, "write_range_factors": WRITE_RANGE,
               "cpu_watts_per_core": CPU_WATTS, "gpu_J_per_flop": GPU_J_PER_FLOP, "epochs": args.epochs,
               "seeds": args.seeds, "batch": BATCH, "beta": BETA, "lr": LR, "runs": runs, "cpu": cpu,
               "flops_per_example": {"ep": flops_ep, "backprop": flops_bp}, "rows": rows,
               "cpu_J_per_example": cpu_J, "gpu_J_per_example": gpu_J,
               "backprop_accuracy": bp_acc,
               "backprop_cpu_J_per_example": tuple(cpu["backprop_cpu_s_per_example"] * w for w in CPU_WATTS),
               "backprop_gpu_J_per_example": tuple(flops_bp * j for j in GPU_J_PER_FLOP)}
    (out / "results.json").write_text(json.dumps(summary, indent=1, allow_nan=False))

    md = ["| network (64-22-10, one 64x64 crossbar) | test accuracy (per seed) | crossbar read J/example | "
          "programming J/example | crossbar total (range) | CPU EP step J/example (range) | ratio CPU/crossbar "
          "(range) | GPU EP step J/example (range) | ratio GPU/crossbar (range) |", "|" + "---|" * 9]
    for r in rows:
        lo, hi = r["total_J_range"]
        md.append(f"| {r['network']} | {', '.join(f'{a:.3f}' for a in r['accuracy'])} | {r['read_J']:.3g} | "
                  f"{r['program_J']:.3g} | {r['total_J']:.3g} ({lo:.2g}-{hi:.2g}) | {cpu_J[1]:.3g} ({cpu_J[0]:.2g}-{cpu_J[2]:.2g}) | "
                  f"{cpu_J[1] / r['total_J']:.3g} ({cpu_J[0] / hi:.2g}-{cpu_J[2] / lo:.2g}) | "
                  f"{gpu_J[1]:.3g} ({gpu_J[0]:.2g}-{gpu_J[2]:.2g}) | "
                  f"{gpu_J[1] / r['total_J']:.3g} ({gpu_J[0] / hi:.2g}-{gpu_J[2] / lo:.2g}) |")
    bcpu, bgpu = summary["backprop_cpu_J_per_example"], summary["backprop_gpu_J_per_example"]
    md.append(f"| feed-forward 64-22-10, backprop (digital) | {', '.join(f'{a:.3f}' for a in bp_acc)} | - | - | - | "
              f"{bcpu[1]:.3g} ({bcpu[0]:.2g}-{bcpu[2]:.2g}) | - | {bgpu[1]:.3g} ({bgpu[0]:.2g}-{bgpu[2]:.2g}) | - |")
    md.append("")
    md.append(f"EP step on this CPU: {cpu['ep_cpu_s_per_example'] * 1e6:.1f} us CPU / {cpu['ep_wall_s_per_example'] * 1e6:.1f} us "
              f"wall per example (one thread, load average {cpu['load_average'][0]:.1f} on 2 shared cores); backprop "
              f"{cpu['backprop_cpu_s_per_example'] * 1e6:.2f} us CPU per example. RAPL: "
              f"{'not readable' if cpu['rapl_J_per_example'] is None else cpu['rapl_J_per_example']}. "
              f"FLOPs per example: EP {flops_ep:.0f} (mean sweeps free {sweeps[0]:.1f}, nudged {sweeps[1]:.1f}), "
              f"backprop {flops_bp:.0f}.")
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in NAMES:
            a = np.array([r["test_accuracy"] for r in runs[name]])
            ax.plot(np.arange(1, a.shape[1] + 1), a.mean(0), label=f"EP crossbar, {name}")
        ax.axhline(np.mean(bp_acc), color="k", ls="--", label="backprop (feed-forward)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (8x8 digits, 360 images)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "accuracy.png", dpi=100)
        plot_energy(summary, out)
    except ImportError:
        pass


if __name__ == "__main__":
    main()

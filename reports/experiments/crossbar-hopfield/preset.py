"""The crossbar Hopfield experiment through ``physgrad train --preset crossbar-digits --energy``.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python3 reports/experiments/crossbar-hopfield/preset.py \
        [--epochs 10] [--seeds 0 1] [--runs DIR]

Each run is ``physgrad.layered.train.train`` with the TrainConfig of the command printed beside it
(the CLI's code path); the run folders (metrics.csv with the energy columns, energy.png,
learning_curve.png) go under ``--runs`` (default ``runs/crossbar-preset``, not committed). Writes
``preset_results.json`` and ``preset_results.md`` next to this file. The energy assumptions (CPU
watts, GPU J/FLOP, the read/write ranges) are run.py's, imported from it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as base  # noqa: E402  (the stated assumptions, one definition)

from physgrad.layered.crossbar import (CrossbarLayout, ep_step_flops, predict_backprop,  # noqa: E402
                                       train_backprop)
from physgrad.layered.data import load_dataset  # noqa: E402
from physgrad.layered.presets import get_preset  # noqa: E402
from physgrad.layered.train import TrainConfig, train  # noqa: E402

RUNS = (("ideal", {}), ("reram-sb", {"device_model": "reram-sb"}),
        ("reram-sb lr/4", {"device_model": "reram-sb", "lr_factor": 0.25}),
        ("levels64-stochastic", {"device_model": "levels64-stochastic"}))


def command(name, seed, epochs, extra, energy=True) -> str:
    opts = [f"--preset crossbar-digits --seed {seed} --epochs {epochs}"] + (["--energy"] if energy else [])
    if "device_model" in extra:
        opts.append(f"--device-model {extra['device_model']}")
    if "lr_factor" in extra:
        opts.append(f"--lr-factor {extra['lr_factor']}")
    if "algorithm" in extra:
        opts.append(f"--algorithm {extra['algorithm']}")
    return "physgrad train " + " ".join(opts)


def timed_train(cfg, out):
    c0, w0 = time.process_time(), time.perf_counter()
    rows = train(cfg, out, overwrite=True, progress=False)
    return rows, time.process_time() - c0, time.perf_counter() - w0


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--runs", default="runs/crossbar-preset")
    ap.add_argument("--render", action="store_true", help="only rewrite preset_results.md from preset_results.json")
    args = ap.parse_args()
    if args.render:
        render(json.loads((HERE / "preset_results.json").read_text()))
        return
    runs_dir = Path(args.runs)
    preset = get_preset("crossbar-digits")
    data = load_dataset("digits")
    n_train = len(data.x_train)
    out = {"epochs": args.epochs, "seeds": args.seeds, "n_train": n_train, "n_test": len(data.x_test),
           "commands": [], "runs": {}, "timing": []}
    for seed in args.seeds:
        for name, extra in RUNS:
            cfg = TrainConfig(preset="crossbar-digits", seed=seed, epochs=args.epochs, energy=True, **extra)
            rows, cpu, wall = timed_train(cfg, runs_dir / f"{name.replace(' ', '').replace('/', '-')}-s{seed}")
            out["commands"].append(command(name, seed, args.epochs, extra))
            out["runs"].setdefault(name, []).append({"seed": seed, "rows": list(rows), "cpu_s": cpu, "wall_s": wall})
            print(name, seed, rows[-1], f"cpu {cpu:.1f} s", flush=True)
        # the same ideal run without --energy: the CPU cost of the step itself, and the accounting's overhead
        cfg = TrainConfig(preset="crossbar-digits", seed=seed, epochs=args.epochs)
        rows, cpu, wall = timed_train(cfg, runs_dir / f"ideal-noenergy-s{seed}")
        out["commands"].append(command("ideal", seed, args.epochs, {}, energy=False))
        out["runs"].setdefault("ideal (no --energy)", []).append({"seed": seed, "rows": list(rows), "cpu_s": cpu,
                                                                  "wall_s": wall})
        cfg = TrainConfig(preset="crossbar-digits", seed=seed, epochs=args.epochs, algorithm="tbp")
        rows, cpu, wall = timed_train(cfg, runs_dir / f"tbp-s{seed}")
        out["commands"].append(command("tbp", seed, args.epochs, {"algorithm": "tbp"}, energy=False))
        out["runs"].setdefault("tbp", []).append({"seed": seed, "rows": list(rows), "cpu_s": cpu, "wall_s": wall})
        X, Xt = data.x_train / 16.0, data.x_test / 16.0
        th = train_backprop(CrossbarLayout(), X, data.y_train, args.epochs, preset.batch_size, lr=0.1, seed=seed)
        acc = float(np.mean(predict_backprop(th, Xt) == data.y_test))
        out["runs"].setdefault("backprop (feed-forward)", []).append({"seed": seed, "test_accuracy": acc})
        print("tbp", seed, out["runs"]["tbp"][-1]["rows"][-1], "backprop", acc, flush=True)
    out["load_average"] = os.getloadavg()
    (HERE / "preset_results.json").write_text(json.dumps(out, indent=1, allow_nan=False))
    render(out)


def render(out: dict) -> None:
    """``preset_results.md`` from the runs (``--render``: from ``preset_results.json`` without rerunning)."""
    preset = get_preset("crossbar-digits")

    def mean_col(name, col):  # J per example over every epoch and seed (the columns are epoch means)
        vals = [r[col] for run in out["runs"][name] for r in run["rows"] if col in r]
        return float(np.mean(vals)) if vals else None

    def acc(name):
        return [1 - run["rows"][-1]["test_error"] / 100 for run in out["runs"][name]]

    def late(name):  # mean test accuracy over the last half of the epochs, both seeds
        n = out["epochs"] // 2
        return float(np.mean([1 - r["test_error"] / 100 for run in out["runs"][name] for r in run["rows"][-n:]]))

    n_ex = out["epochs"] * out["n_train"]
    cpu_s = float(np.mean([r["cpu_s"] for r in out["runs"]["ideal (no --energy)"]])) / n_ex
    cpu_s_energy = float(np.mean([r["cpu_s"] for r in out["runs"]["ideal"]])) / n_ex
    flops = ep_step_flops(CrossbarLayout(), preset.sweeps, preset.sweeps)
    cpu_J = tuple(cpu_s * w for w in base.CPU_WATTS)
    gpu_J = tuple(flops * j for j in base.GPU_J_PER_FLOP)
    md = ["| run (crossbar-digits, 64-22-10 on one 64x64 crossbar) | test accuracy after the last epoch (per seed) | "
          "mean over the last half of the epochs | free J/example | nudged J/example | programming J/example | "
          "crossbar total (range) | ratio CPU/crossbar (range) | ratio GPU/crossbar (range) |", "|" + "---|" * 9]
    rows = []
    for name, _ in RUNS:
        f, n, p = mean_col(name, "energy_free_J"), mean_col(name, "energy_nudged_J"), mean_col(name, "energy_program_J")
        read = f + n
        total = read + (p or 0.0)
        lo = read * base.READ_RANGE[0] + (p or 0.0) * base.WRITE_RANGE[0]
        hi = read * base.READ_RANGE[1] + (p or 0.0) * base.WRITE_RANGE[1]
        rows.append({"run": name, "accuracy": acc(name), "late_accuracy": late(name), "free_J": f, "nudged_J": n,
                     "program_J": p, "total_J": total, "total_J_range": (lo, hi)})
        md.append(f"| {name} | {', '.join(f'{a:.3f}' for a in acc(name))} | {late(name):.3f} | {f:.3g} | {n:.3g} | "
                  f"{'empty (none stated)' if p is None else f'{p:.3g}'} | {total:.3g} ({lo:.2g}-{hi:.2g}) | "
                  f"{cpu_J[1] / total:.3g} ({cpu_J[0] / hi:.2g}-{cpu_J[2] / lo:.2g}) | "
                  f"{gpu_J[1] / total:.3g} ({gpu_J[0] / hi:.2g}-{gpu_J[2] / lo:.2g}) |")
    md.append(f"| Hopfield, truncated backprop (tbp, digital) | {', '.join(f'{a:.3f}' for a in acc('tbp'))} "
              f"| {late('tbp'):.3f} | - | - | - | - | - | - |")
    bp = [r["test_accuracy"] for r in out["runs"]["backprop (feed-forward)"]]
    md.append(f"| feed-forward 64-22-10, backprop (digital) | {', '.join(f'{a:.3f}' for a in bp)} | - | - | - | - | - | "
              f"- | - |")
    md.append("")
    md.append(f"CPU EP step (ideal, no --energy): {cpu_s * 1e6:.1f} us CPU per example -> {cpu_J[1]:.3g} J "
              f"({cpu_J[0]:.2g}-{cpu_J[2]:.2g}) at {base.CPU_WATTS} W per core; with --energy {cpu_s_energy * 1e6:.1f} us "
              f"(+{100 * (cpu_s_energy / cpu_s - 1):.0f} %). GPU: {flops:.0f} FLOPs per example ({preset.sweeps} sweeps per "
              f"phase) x {base.GPU_J_PER_FLOP} J/FLOP = {gpu_J[1]:.3g} J ({gpu_J[0]:.2g}-{gpu_J[2]:.2g}). "
              f"Load average {out['load_average'][0]:.1f} (2 shared cores).")
    (HERE / "preset_results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

"""The twin transistor network of Dillavou et al. (2024) in simulation: XOR and nonlinear regression,
trained by the local coupled-learning rule (gate capacitors, no gradient) and, side by side, by the
exact gradient of the gate voltages; the cosine between the two updates through training.

Run from the repository root::

    PYTHONPATH=$PWD python3 reports/experiments/transistor-network/run.py [--steps N] [--tau T] [--eta E] [--out DIR]

Writes ``metrics_<task>_<rule>.csv`` (step, cost, cosine, predictions), ``summary.json`` and the
plots ``xor.png``, ``regression.png``, ``modes.png``, ``cosine.png`` into ``--out`` (default: this
folder).
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from physgrad.netlists.twin import TwinConfig, TwinNetwork, error_modes, torus_edges, train

HERE = Path(__file__).resolve().parent
X_XOR = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
Y_XOR = np.where(X_XOR[:, 0] != X_XOR[:, 1], 0.1, -0.1)[:, None]
X_REG = np.linspace(0.0, 1.0, 9)[:, None]
Y_REG = 0.2 + 0.5 * X_REG**2


def tasks(steps: int, tau: float = 1000.0, eta: float = 0.01) -> dict:
    """The two tasks: network, data, the two rules' configurations (rates tuned per rule)."""
    edges = torus_edges(4, 4)
    xor_net = TwinNetwork(16, edges, inputs=(5, 15), fixed=((0, 0.0), (10, 1.0)), outputs=(3, 12), differential=True)
    reg_net = TwinNetwork(16, edges, inputs=(5,), fixed=((0, 0.0), (10, 1.0)), outputs=(3,))
    every = max(1, steps // 100)
    # both rules leak alike (tau steps toward 2.5 V, the initial gates' mean); the rates differ: the
    # local update is ~1e-3 of the gradient's size (it carries the output's conductance, see twin.py)
    leak = {"tau_steps": tau, "v_rest": 2.5, "steps": steps, "record_every": every, "eta": eta}
    cfgs = {"local": TwinConfig(rate=2e4, **leak), "exact": TwinConfig(rate=5.0, **leak)}
    return {"xor": (xor_net, X_XOR, Y_XOR, cfgs), "regression": (reg_net, X_REG, Y_REG, cfgs)}


def _fall_step(steps, series, frac=0.1):
    """First recorded step where ``|series|`` is below ``frac`` of its initial value (None: never)."""
    s0 = abs(series[0])
    for st, v in zip(steps, series):
        if abs(v) <= frac * s0:
            return int(st)
    return None


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tau", type=float, default=1000.0, help="gate-capacitor leak time (steps)")
    ap.add_argument("--eta", type=float, default=0.01, help="clamping fraction of the local rule")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"steps": args.steps, "seed": args.seed, "tau_steps": args.tau, "eta": args.eta, "runs": {}}
    hists = {}
    for task, (net, X, Y, cfgs) in tasks(args.steps, args.tau, args.eta).items():
        vg0 = 2.5 + 0.3 * np.random.default_rng(args.seed).standard_normal(net.n_edges)
        for rule, cfg in cfgs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            h = train(net, X, Y, cfg, rule, v_gate0=vg0)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            hists[task, rule] = h
            pred = h.outputs[-1][:, 0]
            row = {"cost_initial": h.cost[0], "cost_final": h.cost[-1], "cost_min": min(h.cost),
                   "cosine_median": float(np.nanmedian(h.cosine)), "cosine_first": h.cosine[0],
                   "cpu_s": round(cpu, 1), "wall_s": round(wall, 1), "rate": cfg.rate, "eta": cfg.eta,
                   "predictions": [round(float(p), 4) for p in pred]}
            if task == "xor":
                row["correct"] = int(np.sum(np.sign(pred) == np.sign(Y[:, 0])))
                acc = np.array([np.sum(np.sign(o[:, 0]) == np.sign(Y[:, 0])) for o in h.outputs])
                row["first_step_4_of_4"] = int(h.step[int(np.argmax(acc == 4))]) if np.any(acc == 4) else None
                row["fraction_4_of_4_last_fifth"] = float(np.mean(acc[-max(1, len(acc) // 5):] == 4))
            else:
                modes = np.array([error_modes(X[:, 0], o[:, 0] - Y[:, 0]) for o in h.outputs])
                row["modes_initial"] = [float(m) for m in modes[0]]
                row["modes_final"] = [float(m) for m in modes[-1]]
                row["mode_fall_step"] = {name: _fall_step(h.step, modes[:, k])
                                         for k, name in enumerate(("mean", "slope", "curvature"))}
                row["rmse_final_V"] = float(np.sqrt(np.mean((pred - Y[:, 0]) ** 2)))
            summary["runs"][f"{task}/{rule}"] = row
            with open(args.out / f"metrics_{task}_{rule}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["step", "cost_V2", "cosine"] + [f"pred{k}" for k in range(len(X))])
                for st, c, cs, o in zip(h.step, h.cost, h.cosine, h.outputs):
                    w.writerow([st, f"{c:.6g}", f"{cs:.4f}"] + [f"{v:.5f}" for v in o[:, 0]])
            print(task, rule, json.dumps(row), flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plots(hists, args.out)
    return summary


def _plots(hists, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for task in ("xor", "regression"):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for rule, style in (("local", "-"), ("exact", "--")):
            h = hists[task, rule]
            ax.semilogy(h.step, h.cost, style, label=f"{rule} rule")
        ax.set_xlabel("training step")
        ax.set_ylabel("cost C (V$^2$)")
        ax.set_title(f"{task}: twin NMOS network (32 edges)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{task}.png", dpi=120)
        plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, rule in zip(axes, ("local", "exact")):
        h = hists["regression", rule]
        modes = np.array([error_modes(X_REG[:, 0], o[:, 0] - Y_REG[:, 0]) for o in h.outputs])
        for k, name in enumerate(("mean", "slope", "curvature")):
            ax.semilogy(h.step, np.abs(modes[:, k]) + 1e-12, label=name)
        ax.set_title(f"regression error modes, {rule} rule")
        ax.set_xlabel("training step")
    axes[0].set_ylabel("|coefficient| (V)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "modes.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for (task, rule), h in hists.items():
        ax.plot(h.step, h.cosine, label=f"{task}, trained by {rule}")
    ax.set_xlabel("training step")
    ax.set_ylabel("cos(local update, -exact gradient)")
    ax.set_ylim(-1, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "cosine.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()

"""The twin transistor network of Dillavou et al. (2024) in simulation: XOR and nonlinear regression,
trained by the local coupled-learning rule (gate capacitors, no gradient) and, side by side, by the
exact gradient of the gate voltages; the cosine between the two updates through training.

Two regimes (``--regime``):

* ``torus-1V`` (default; the first set-up): VTO = 0.7 V edges, inputs 0-1 V, a rail at 1 V, gates
  2.5 V + N(0, 0.3 V) in [0, 5] V, a leak toward 2.5 V; regression target ``0.2 + 0.5 x^2`` (convex).
* ``pnas``: the paper's circuit as a public reproduction of it states it (Ma-Lab-Cal/pyclln,
  ``validation_tasks/{xor,nonlinear_regression}``, runs named ``pnas_4x4_*``): the same 4 x 4 torus
  (16 nodes, 32 edges), ALD1106 level-1 edges (:data:`physgrad.netlists.twin.ALD1106_MODEL`), gates
  referenced to ground and clipped to [0.4, 8] V, no leak. Regression: rails 0 V / 0.45 V, input
  0-0.435 V (8 points), target a ramp that saturates at 0.304 V (concave), full clamp eta = 1 and
  gamma = 0.4 /V per example. XOR: rails 0.11 / 0.33 V, inputs {0, 0.45} V, differential output with
  targets 0 V and -0.087 V, eta = 0.5, gamma = 0.3 /V. The hardware's per-example rule
  ``dV_G = gamma ((dV^F)^2 - (dV^C)^2)`` summed over one pass through the n examples equals
  :func:`physgrad.netlists.twin.train`'s batch step with ``rate = 2 n gamma eta / beta``.

Run from the repository root::

    PYTHONPATH=$PWD python3 reports/experiments/transistor-network/run.py [--regime R] [--tasks xor,regression] \
        [--steps N] [--tau T] [--eta E] [--gamma G] [--anneal T] [--seed S] [--out DIR]

Writes ``metrics_<task>_<rule>.csv`` (step, cost, cosine, predictions), ``summary.json`` and the
plots ``xor.png``, ``regression.png``, ``modes.png``, ``cosine.png`` into ``--out`` (default: this
folder).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from physgrad.netlists.twin import (ALD1106_L, ALD1106_MODEL, ALD1106_W, TwinConfig, TwinNetwork, error_modes,
                                    hardware_rate, torus_edges, train)

HERE = Path(__file__).resolve().parent
X_XOR = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
Y_XOR = np.where(X_XOR[:, 0] != X_XOR[:, 1], 0.1, -0.1)[:, None]
X_REG = np.linspace(0.0, 1.0, 9)[:, None]
Y_REG = 0.2 + 0.5 * X_REG**2
# the pnas regime's data (pyclln's reg_circuit.py VINS/VOUS and xor_circuit.py xor_dataset_pnas)
X_REG_PNAS = np.array([0.0005, 0.0628, 0.1251, 0.1873, 0.2479, 0.3118, 0.3724, 0.4347])[:, None]
Y_REG_PNAS = np.array([0.1088, 0.1472, 0.1872, 0.2256, 0.2649, 0.3041, 0.3041, 0.3041])[:, None]
X_XOR_PNAS = 0.45 * X_XOR
Y_XOR_PNAS = np.where(X_XOR[:, 0] != X_XOR[:, 1], -0.087, 0.0)[:, None]
#: per-example learning rates of the pnas regime (1/V) and the exact twin's rates (tuned: see README)
PNAS_GAMMA = {"xor": 0.3, "regression": 0.4}
PNAS_EXACT_RATE = {"xor": 20.0, "regression": 200.0}


def tasks(steps: int, tau: float = 1000.0, eta: float = 0.01) -> dict:
    """The torus-1V tasks: network, data, the two rules' configurations (rates tuned per rule)."""
    edges = torus_edges(4, 4)
    xor_net = TwinNetwork(16, edges, inputs=(5, 15), fixed=((0, 0.0), (10, 1.0)), outputs=(3, 12), differential=True)
    reg_net = TwinNetwork(16, edges, inputs=(5,), fixed=((0, 0.0), (10, 1.0)), outputs=(3,))
    every = max(1, steps // 100)
    # both rules leak alike (tau steps toward 2.5 V, the initial gates' mean); the rates differ: the
    # local update is ~1e-3 of the gradient's size (it carries the output's conductance, see twin.py)
    leak = {"tau_steps": tau, "v_rest": 2.5, "steps": steps, "record_every": every, "eta": eta}
    cfgs = {"local": TwinConfig(rate=2e4, **leak), "exact": TwinConfig(rate=5.0, **leak)}
    return {"xor": (xor_net, X_XOR, Y_XOR, cfgs), "regression": (reg_net, X_REG, Y_REG, cfgs)}


def pnas_tasks(steps: int, tau: float = float("inf"), eta: dict | None = None, gamma: dict | None = None) -> dict:
    """The pnas-regime tasks (see the module docstring): node ``k`` here is pyclln's node ``k + 1``;
    ``eta`` and ``gamma`` (per-example rate, 1/V) per task, default the reproduction's."""
    eta = {"xor": 0.5, "regression": 1.0} if eta is None else eta
    gamma = PNAS_GAMMA if gamma is None else gamma
    edges = torus_edges(4, 4)
    dev = {"model": ALD1106_MODEL, "W": ALD1106_W, "L": ALD1106_L}
    nets = {"xor": TwinNetwork(16, edges, inputs=(15, 13), fixed=((5, 0.11), (7, 0.33)), outputs=(10, 0),
                               differential=True, **dev),
            "regression": TwinNetwork(16, edges, inputs=(15,), fixed=((5, 0.0), (7, 0.45)), outputs=(10,), **dev)}
    data = {"xor": (X_XOR_PNAS, Y_XOR_PNAS), "regression": (X_REG_PNAS, Y_REG_PNAS)}
    out = {}
    for task, net in nets.items():
        X, Y = data[task]
        common = {"tau_steps": tau, "v_rest": 3.0, "steps": steps, "record_every": max(1, steps // 500),
                  "eta": eta[task], "v_gate_min": 0.4, "v_gate_max": 8.0, "v_gate0": 3.0}
        local_rate = hardware_rate(net, gamma[task], eta[task], len(X))
        out[task] = (net, X, Y, {"local": TwinConfig(rate=local_rate, **common),
                                 "exact": TwinConfig(rate=PNAS_EXACT_RATE[task], **common)})
    return out


def initial_gates(regime: str, task: str, seed: int, n: int) -> np.ndarray:
    """Initial gate voltages (V): torus-1V 2.5 + N(0, 0.3); pnas regression 3.0 + N(0, 0.3) (pyclln
    starts every gate at 3.0 V), pnas XOR uniform in [0.5, 3] V (as pyclln)."""
    rng = np.random.default_rng(seed)
    if regime == "pnas" and task == "xor":
        return rng.uniform(0.5, 3.0, n)
    return (3.0 if regime == "pnas" else 2.5) + 0.3 * rng.standard_normal(n)


def correct(pred: np.ndarray, Y: np.ndarray) -> int:
    """XOR examples whose prediction is nearer its own target level than the other level."""
    lo, hi = float(np.min(Y)), float(np.max(Y))
    other = np.where(np.isclose(Y[:, 0], lo), hi, lo)
    return int(np.sum(np.abs(pred - Y[:, 0]) < np.abs(pred - other)))


def _fall_step(steps, series, frac=0.1):
    """First recorded step where ``|series|`` is below ``frac`` of its initial value (None: never)."""
    s0 = abs(series[0])
    for st, v in zip(steps, series):
        if abs(v) <= frac * s0:
            return int(st)
    return None


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regime", choices=("torus-1V", "pnas"), default="torus-1V")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tau", type=float, default=None,
                    help="gate-capacitor leak time (steps); default 1000 (torus-1V) or none (pnas)")
    ap.add_argument("--eta", type=float, default=None,
                    help="clamping fraction; default 0.01 (torus-1V), 0.5 XOR / 1.0 regression (pnas)")
    ap.add_argument("--gamma", type=float, default=None,
                    help="pnas: the local rule's per-example rate (1/V); default 0.3 XOR, 0.4 regression")
    ap.add_argument("--anneal", type=float, default=None,
                    help="anneal_steps T of both rules: step k's change scaled by 1/(1 + k/T) (default: none)")
    ap.add_argument("--tasks", default="xor,regression", help="comma-separated subset of xor,regression")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    wanted = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not wanted or any(t not in ("xor", "regression") for t in wanted):
        ap.error(f"--tasks must name xor and/or regression, got {args.tasks!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.regime == "pnas":
        tau = float("inf") if args.tau is None else args.tau
        todo = pnas_tasks(args.steps, tau, None if args.eta is None else {"xor": args.eta, "regression": args.eta},
                          None if args.gamma is None else {"xor": args.gamma, "regression": args.gamma})
    else:
        tau = 1000.0 if args.tau is None else args.tau
        todo = tasks(args.steps, tau, 0.01 if args.eta is None else args.eta)
    if args.anneal is not None:
        todo = {t: (n, X, Y, {r: dataclasses.replace(c, anneal_steps=args.anneal) for r, c in cfgs.items()})
                for t, (n, X, Y, cfgs) in todo.items()}
    summary = {"regime": args.regime, "tasks": wanted, "anneal_steps": args.anneal, "steps": args.steps, "seed": args.seed,
               "tau_steps": tau if np.isfinite(tau) else None, "eta": args.eta, "gamma": args.gamma, "runs": {}}
    hists = {}
    for task, (net, X, Y, cfgs) in todo.items():
        if task not in wanted:
            continue
        vg0 = initial_gates(args.regime, task, args.seed, net.n_edges)
        for rule, cfg in cfgs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            h = train(net, X, Y, cfg, rule, v_gate0=vg0)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            hists[task, rule] = (h, X, Y)
            pred = h.outputs[-1][:, 0]
            row = {"cost_initial": h.cost[0], "cost_final": h.cost[-1], "cost_min": min(h.cost),
                   "cosine_median": float(np.nanmedian(h.cosine)), "cosine_first": h.cosine[0],
                   "cpu_s": round(cpu, 1), "wall_s": round(wall, 1), "rate": cfg.rate, "eta": cfg.eta,
                   "predictions": [round(float(p), 4) for p in pred]}
            if task == "xor":
                row["correct"] = correct(pred, Y)
                acc = np.array([correct(o[:, 0], Y) for o in h.outputs])
                row["first_step_4_of_4"] = int(h.step[int(np.argmax(acc == 4))]) if np.any(acc == 4) else None
                row["fraction_4_of_4_last_fifth"] = float(np.mean(acc[-max(1, len(acc) // 5):] == 4))
            else:
                modes = np.array([error_modes(X[:, 0], o[:, 0] - Y[:, 0]) for o in h.outputs])
                row["modes_initial"] = [float(m) for m in modes[0]]
                row["modes_final"] = [float(m) for m in modes[-1]]
                row["mode_fall_step"] = {name: _fall_step(h.step, modes[:, k])
                                         for k, name in enumerate(("mean", "slope", "curvature"))}
                row["mode_final_fraction"] = [float(abs(m1) / abs(m0)) if m0 != 0 else None
                                              for m0, m1 in zip(modes[0], modes[-1])]
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

    for task in sorted({t for t, _ in hists}):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for rule, style in (("local", "-"), ("exact", "--")):
            h = hists[task, rule][0]
            ax.semilogy(h.step, h.cost, style, label=f"{rule} rule")
        ax.set_xlabel("training step")
        ax.set_ylabel("cost C (V$^2$)")
        ax.set_title(f"{task}: twin NMOS network (32 edges)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{task}.png", dpi=120)
        plt.close(fig)
    if ("regression", "local") not in hists:
        axes = None
    else:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, rule in zip(axes if axes is not None else (), ("local", "exact")):
        h, X, Y = hists["regression", rule]
        modes = np.array([error_modes(X[:, 0], o[:, 0] - Y[:, 0]) for o in h.outputs])
        for k, name in enumerate(("mean", "slope", "curvature")):
            ax.semilogy(h.step, np.abs(modes[:, k]) + 1e-12, label=name)
        ax.set_title(f"regression error modes, {rule} rule")
        ax.set_xlabel("training step")
    if axes is not None:
        axes[0].set_ylabel("|coefficient| (V)")
        axes[0].legend()
        fig.tight_layout()
        fig.savefig(out / "modes.png", dpi=120)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for (task, rule), (h, _, _) in hists.items():
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

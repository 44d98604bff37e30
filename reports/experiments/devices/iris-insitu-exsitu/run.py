"""Experiment (d) of issue 13 on the Iris network: variability and stuck devices, in situ vs ex situ.

Usage (from the repository root; about 6 minutes on one core)::

    python3 reports/experiments/devices/iris-insitu-exsitu/run.py [--runs runs/devices-iris]

For every stratified split ``k`` of ``reports/experiments/iris-16edge/data`` (5 splits) and device
draw ``d`` (2 draws), with ``seed = k + 5 d`` (the seed orders the samples and draws the devices):

* **ideal**: ``physgrad fit`` with the ideal device (the ex situ training);
* for each device model ``devices/<condition>.toml``:
  - **in situ**: ``physgrad fit --device-model devices/<condition>.toml`` (trained on the faulty devices);
  - **ex situ**: the ideal fit's conductances written onto the same devices (the same seed, so the
    same variability and stuck devices: :func:`physgrad.netlists.fit.program_devices`, write-verify)
    and evaluated there.

Every fit: centered EP (default beta), argmax loss, Adam lr 2e-5 S, 100 epochs, batches of 16, the
controller's range ``--g-min 1e-6 --g-max 3e-3`` (S), which is also the devices' nominal range, so
the ideal fit knows the range it will be programmed into. Writes ``devices/*.toml``,
``commands.json``, ``results.csv`` (one row per run), ``results.md`` (mean +- std) and
``insitu_exsitu.png`` next to this file; run folders go to ``--runs`` (outside the repository).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
sys.path.insert(0, str(ROOT))

from physgrad.cli import main  # noqa: E402
from physgrad.netlists.fit import FitSpec, evaluate, program_devices, resolve  # noqa: E402
from physgrad.minimizers.co_content import CoContentMinimizer  # noqa: E402

CIR = "physgrad/examples/iris/iris16.cir"
DATA = "reports/experiments/iris-16edge/data"
SPLITS, DRAWS = 5, 2
COMMON = ["--inputs", "vsl,vsw,vpl,vpw", "--outputs", "o1,o2,o3", "--label-column", "species", "--epochs", "100",
          "--batch-size", "16", "--lr", "2e-5", "--g-min", "1e-6", "--g-max", "3e-3", "--no-progress"]
BASE = """[bounds]
g_min = 1e-6          # S (OFF-state leakage; the fit's --g-min)
g_max = 3e-3          # S (the fit's --g-max)
relative = false
[pulses]
dw_min = 0.00392156862745098   # 1/255: 256 levels, ~11.8 uS apart
rounding = "stochastic"
"""
CONDITIONS = {
    "levels256": ("256 levels, no faults", ""),
    "var10": ("+ 10 % variability", "[variability]\ndw_min = 0.1\nbounds = 0.1\n"),
    "var30": ("+ 30 % variability", "[variability]\ndw_min = 0.3\nbounds = 0.3\n"),
    "stuck5": ("+ 5 % stuck", "[stuck]\nfraction = 0.05\nat = \"random\"\n"),
    "stuck20": ("+ 20 % stuck", "[stuck]\nfraction = 0.2\nat = \"random\"\n"),
    "var30-stuck20": ("+ 30 % variability, 20 % stuck",
                      "[variability]\ndw_min = 0.3\nbounds = 0.3\n[stuck]\nfraction = 0.2\nat = \"random\"\n"),
}


def fit_args(k: int, seed: int, device: str, out: Path) -> list:
    return ["fit", CIR, "--data", f"{DATA}/split{k}-train.csv", "--test", f"{DATA}/split{k}-test.csv", *COMMON,
            "--seed", str(seed), "--device-model", device, "--out", str(out)]


def last_row(folder: Path) -> dict:
    with open(folder / "metrics.csv", newline="") as fh:
        return {k: float(v) for k, v in list(csv.DictReader(fh))[-1].items()}


def run_fit(args: list, out: Path) -> dict:
    if not (out / "learning_curve.png").exists():  # written last: the run finished
        shutil.rmtree(out, ignore_errors=True)
        code = main(args)
        if code != 0:
            raise SystemExit(f"physgrad {' '.join(args)} failed ({code})")
    return last_row(out)


def ex_situ(k: int, seed: int, device: str, ideal_dir: Path) -> dict:
    """The ideal fit's conductances programmed onto the devices of ``(device, seed)``, evaluated there."""
    spec = FitSpec(netlist=CIR, data=f"{DATA}/split{k}-train.csv", test=f"{DATA}/split{k}-test.csv",
                   inputs=("vsl", "vsw", "vpl", "vpw"), outputs=("o1", "o2", "o3"), label_column="species",
                   epochs=100, batch_size=16, lr=2e-5, g_min=1e-6, g_max=3e-3, seed=seed, device_model=device)
    pb = resolve(spec)
    with np.load(ideal_dir / "checkpoint.npz") as z:
        theta_ideal = z["theta"].copy()
    theta, dstate = program_devices(pb, theta_ideal)
    m = CoContentMinimizer()
    tr = evaluate(pb, theta, pb.X, pb.Y, m, dstate, 0)
    te = evaluate(pb, theta, pb.X_test, pb.Y_test, m, dstate, 1)
    n_stuck = sum(int(c.stuck_index.size) for leaf in dstate.leaves if leaf is not None for c in leaf.cells)
    return {"train_accuracy": tr["accuracy"], "test_accuracy": te["accuracy"], "test_cost": te["cost"],
            "n_stuck": n_stuck, "max_program_error_S": float(np.max(np.abs(theta - theta_ideal)))}


def main_() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs/devices-iris", help="run folders (outside the repository)")
    runs = Path(ap.parse_args().runs)
    dev_dir = HERE / "devices"
    dev_dir.mkdir(exist_ok=True)
    for name, (label, extra) in CONDITIONS.items():
        (dev_dir / f"{name}.toml").write_text(f'name = "{name}"   # {label}\n' + BASE + extra)
    rows, commands = [], []
    for d in range(DRAWS):
        for k in range(SPLITS):
            seed = k + SPLITS * d
            ideal_dir = runs / "ideal" / f"seed{seed}"
            args = fit_args(k, seed, "ideal", ideal_dir)
            commands.append("python3 -m physgrad " + " ".join(args))
            r = run_fit(args, ideal_dir)
            rows.append({"condition": "ideal", "route": "ideal", "split": k, "seed": seed,
                         "train_accuracy": r["train_accuracy"], "test_accuracy": r["test_accuracy"],
                         "test_cost": r["test_cost"], "n_stuck": 0})
            for name in CONDITIONS:
                device = str((dev_dir / f"{name}.toml").relative_to(ROOT))
                out = runs / "insitu" / name / f"seed{seed}"
                args = fit_args(k, seed, device, out)
                commands.append("python3 -m physgrad " + " ".join(args))
                r = run_fit(args, out)
                ex = ex_situ(k, seed, device, ideal_dir)
                rows.append({"condition": name, "route": "in situ", "split": k, "seed": seed,
                             "train_accuracy": r["train_accuracy"], "test_accuracy": r["test_accuracy"],
                             "test_cost": r["test_cost"], "n_stuck": ex["n_stuck"]})
                rows.append({"condition": name, "route": "ex situ", "split": k, "seed": seed,
                             "train_accuracy": ex["train_accuracy"], "test_accuracy": ex["test_accuracy"],
                             "test_cost": ex["test_cost"], "n_stuck": ex["n_stuck"]})
                print(f"seed {seed} {name:14s} in situ {100 * r['test_accuracy']:5.1f} %  "
                      f"ex situ {100 * ex['test_accuracy']:5.1f} %  ({ex['n_stuck']} stuck)", flush=True)
    (HERE / "commands.json").write_text(json.dumps(commands, indent=1) + "\n")
    with open(HERE / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summarize(rows)


def summarize(rows: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def stats(cond, route, key):
        v = 100 * np.array([r[key] for r in rows if r["condition"] == cond and r["route"] == route])
        return v.mean(), v.std(ddof=1), len(v)

    n = stats("ideal", "ideal", "test_accuracy")[2]
    lines = [f"Test (and train) accuracy, %, mean +- std (ddof 1) over {n} runs (5 stratified splits x "
             f"{DRAWS} device draws); stuck = mean number of stuck devices of 16.", "",
             "| devices | in situ test | ex situ test | in situ train | ex situ train | stuck |",
             "|---|---:|---:|---:|---:|---:|"]
    m, s, _ = stats("ideal", "ideal", "test_accuracy")
    mt, st, _ = stats("ideal", "ideal", "train_accuracy")
    lines.append(f"| ideal (no devices) | {m:.1f} +- {s:.1f} | (same) | {mt:.1f} +- {st:.1f} | | 0 |")
    for name, (label, _) in CONDITIONS.items():
        cells = []
        for key in ("test_accuracy", "train_accuracy"):
            for route in ("in situ", "ex situ"):
                m, s, _ = stats(name, route, key)
                cells.append(f"{m:.1f} +- {s:.1f}")
        stuck = np.mean([r["n_stuck"] for r in rows if r["condition"] == name and r["route"] == "in situ"])
        lines.append(f"| {name} ({label}) | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {stuck:.1f} |")
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    names = list(CONDITIONS)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8.5, 4))
    for off, route, color in ((-0.18, "in situ", "C0"), (0.18, "ex situ", "C3")):
        ms = [stats(c, route, "test_accuracy") for c in names]
        ax.bar(x + off, [a for a, _, _ in ms], 0.34, yerr=[b for _, b, _ in ms], capsize=3, color=color, label=route)
        for i, c in enumerate(names):
            v = [100 * r["test_accuracy"] for r in rows if r["condition"] == c and r["route"] == route]
            ax.plot(np.full(len(v), i + off), v, "k.", ms=3, alpha=0.5)
    m, s, _ = stats("ideal", "ideal", "test_accuracy")
    ax.axhline(m, color="gray", ls="--", lw=1, label=f"ideal devices ({m:.1f} %)")
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylabel("Iris test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Iris 16-edge network, centered EP: trained on the devices (in situ) vs programmed (ex situ)",
                 fontsize=9)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(HERE / "insitu_exsitu.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main_()

"""Netlist design for tabular data: signed-input crossbar vs a hidden layer of diode units.

Run from the repository root (needs scikit-learn):

    OMP_NUM_THREADS=1 python3 reports/experiments/netlist-design/run.py [--seeds 0 1 2] [--epochs 30]

Each dataset (scikit-learn's iris, wine, breast-cancer, digits) is standardised on its training part
(70/30 stratified split, seed s) and fitted with :class:`physgrad.CircuitClassifier` (argmax loss, one
output per class) in each design below; the test accuracy goes to ``results.csv`` and ``summary.md``.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import physgrad
from physgrad.netlists.builder import layered_circuit

HERE = Path(__file__).resolve().parent
DATASETS = {"iris": load_iris, "wine": load_wine, "breast-cancer": load_breast_cancer, "digits": load_digits}
DESIGNS = {
    # name: CircuitClassifier options (lr None: the estimator's default for a built circuit, 0.1 / resistance
    # = 1e-4 S per step; "median lr" is physgrad fit's default, 0.01 x the median conductance)
    "crossbar, inputs not clipped": dict(hidden=0, input_clip=None),
    "crossbar": dict(hidden=0),
    "hidden, no skip, no bias": dict(hidden=16, hidden_scale=1.0, skip=False, bias_sources=False),
    "hidden, no skip": dict(hidden=16, hidden_scale=1.0, skip=False),
    "hidden + skip, median lr": dict(hidden=16, lr="median"),
    "hidden + skip (default)": dict(hidden=16),
}


def run(names, designs, seeds, epochs, method, out):
    rows = []
    for name in names:
        X, y = DATASETS[name](return_X_y=True)
        for seed in seeds:
            Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
            for design in designs:
                opts = dict(DESIGNS[design])
                if opts.get("lr") == "median":  # fit's default: 0.01 x the median conductance (adam)
                    opts["lr"] = 0.01 * float(np.median([r.conductance for r in layered_circuit(
                        X.shape[1], opts["hidden"], len(np.unique(y)), g0=1e-3, seed=seed).resistors]))
                t0, c0 = time.perf_counter(), time.process_time()
                clf = make_pipeline(StandardScaler(), physgrad.CircuitClassifier(
                    method=method, epochs=epochs, seed=seed, **opts))
                clf.fit(Xtr, ytr)
                row = dict(dataset=name, design=design, seed=seed, method=method, epochs=epochs,
                           train_acc=clf.score(Xtr, ytr), test_acc=clf.score(Xte, yte),
                           cpu_s=round(time.process_time() - c0, 2), wall_s=round(time.perf_counter() - t0, 2))
                print(row, flush=True)
                rows.append(row)
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def summary(rows, out, argv):
    """summary.md: mean and spread of the test accuracy per dataset and design."""
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    designs = list(dict.fromkeys(r["design"] for r in rows))
    lines = ["# Netlist design for tabular data: crossbar vs diode hidden layer", "",
             f"Command: `{argv}`", "",
             "Test accuracy (%), mean +- std over seeds (70/30 stratified split and initialisation per seed); "
             "CPU seconds per run in brackets.", "",
             "| design | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for d in designs:
        cells = []
        for n in names:
            acc = [100 * r["test_acc"] for r in rows if r["dataset"] == n and r["design"] == d]
            cpu = [r["cpu_s"] for r in rows if r["dataset"] == n and r["design"] == d]
            cells.append(f"{np.mean(acc):.1f} +- {np.std(acc):.1f} [{np.mean(cpu):.1f} s]" if acc else "")
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), help="which datasets")
    ap.add_argument("--designs", nargs="+", default=list(DESIGNS), help="which designs")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="split and initialisation seeds")
    ap.add_argument("--epochs", type=int, default=30, help="training epochs per run")
    ap.add_argument("--method", default="cep", help="learning rule code")
    ap.add_argument("--out", default=str(HERE), help="folder for results.csv")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, load {os.getloadavg()}")
    rows = run(a.datasets, a.designs, a.seeds, a.epochs, a.method, out)
    import sys

    summary(rows, out, " ".join(["python3", "reports/experiments/netlist-design/run.py"] + sys.argv[1:]))


if __name__ == "__main__":
    main()

"""Iris on the 16-edge linear resistor network, over 5 stratified splits, with ``physgrad fit``.

Usage (from the repository root; ~2 minutes on 2 cores)::

    python3 reports/experiments/iris-16edge/run.py

Writes next to this file: ``data/split{k}-{train,test}.csv`` (stratified 5-fold split of
``physgrad/examples/iris/iris.csv``, seed 0: each test fold holds 10 samples of each class), one
``physgrad fit`` run folder per method and split (``runs/<method>/split{k}/``), ``results.csv`` and
``results.md``. A multinomial logistic regression on the same splits (numpy, standardized
features, L2 1e-3, full-batch gradient descent) is the reference the paper quotes (98 %).
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CIR = ROOT / "physgrad" / "examples" / "iris" / "iris16.cir"
CSV = ROOT / "physgrad" / "examples" / "iris" / "iris.csv"
CLASSES = ("setosa", "versicolor", "virginica")
COMMON = ["--inputs", "vsl,vsw,vpl,vpw", "--outputs", "o1,o2,o3", "--label-column", "species",
          "--epochs", "100", "--batch-size", "16", "--lr", "2e-5", "--no-progress"]
METHODS = ("ccpl", "cep", "exact")  # coupled learning (the paper's rule) first


def read():
    with open(CSV, newline="") as fh:
        rows = list(csv.reader(fh))
    header, rows = rows[0], rows[1:]
    X = np.array([[float(v) for v in r[:4]] for r in rows])
    y = np.array([CLASSES.index(r[4]) for r in rows])
    return header, rows, X, y


def stratified_folds(y, k=5, seed=0):
    rng = np.random.default_rng(seed)
    folds = [[] for _ in range(k)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        for j, part in enumerate(np.array_split(idx, k)):
            folds[j] += part.tolist()
    return [np.array(sorted(f)) for f in folds]


def logistic_regression(Xtr, ytr, Xte, l2=1e-3, steps=5000, lr=0.5):
    mu, sd = Xtr.mean(0), Xtr.std(0)
    A, T = (Xtr - mu) / sd, (Xte - mu) / sd
    A, T = np.hstack([A, np.ones((len(A), 1))]), np.hstack([T, np.ones((len(T), 1))])
    W = np.zeros((A.shape[1], 3))
    Y = np.eye(3)[ytr]
    for _ in range(steps):
        Z = A @ W
        P = np.exp(Z - Z.max(1, keepdims=True))
        P /= P.sum(1, keepdims=True)
        W -= lr * (A.T @ (P - Y) / len(A) + l2 * W)
    return np.argmax(T @ W, axis=1)


def main():
    header, rows, X, y = read()
    data = HERE / "data"
    data.mkdir(exist_ok=True)
    folds = stratified_folds(y)
    results = []
    for k, test in enumerate(folds):
        train = np.setdiff1d(np.arange(len(y)), test)
        for name, idx in (("train", train), ("test", test)):
            with open(data / f"split{k}-{name}.csv", "w", newline="") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow(header)
                w.writerows(rows[i] for i in idx)
        pred = logistic_regression(X[train], y[train], X[test])
        results.append({"method": "logistic regression (numpy)", "split": k, "train_accuracy": "",
                        "test_accuracy": float(np.mean(pred == y[test])), "seconds": ""})
    commands = {}
    for method in METHODS:
        for k in range(len(folds)):
            out = HERE / "runs" / method / f"split{k}"
            if out.exists():
                shutil.rmtree(out)
            cmd = [sys.executable, "-m", "physgrad", "fit", str(CIR.relative_to(ROOT)),
                   "--data", str((data / f"split{k}-train.csv").relative_to(ROOT)),
                   "--test", str((data / f"split{k}-test.csv").relative_to(ROOT)), *COMMON,
                   "--method", method, "--out", str(out.relative_to(ROOT))]
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            with open(out / "metrics.csv", newline="") as fh:
                last = list(csv.DictReader(fh))[-1]
            results.append({"method": method, "split": k, "train_accuracy": float(last["train_accuracy"]),
                            "test_accuracy": float(last["test_accuracy"]), "seconds": round(time.perf_counter() - t0, 1)})
            commands.setdefault(method, " ".join(["python3"] + cmd[1:]).replace("split0", "split{k}"))
            if method != "ccpl":  # keep the figures and checkpoints of the main runs only
                for f in ("learning_curve.png", "checkpoint.npz"):
                    (out / f).unlink()
            print(results[-1], flush=True)
    with open(HERE / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(results[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(results)
    lines = ["| method | test accuracy per split | mean test accuracy | mean train accuracy |", "|---|---|---:|---:|"]
    for method in ("ccpl", "cep", "exact", "logistic regression (numpy)"):
        rs = [r for r in results if r["method"] == method]
        te = [r["test_accuracy"] for r in rs]
        tr = [r["train_accuracy"] for r in rs if r["train_accuracy"] != ""]
        lines.append(f"| {method} | {', '.join(f'{100 * a:.1f}' for a in te)} | {100 * np.mean(te):.1f} % | "
                     + (f"{100 * np.mean(tr):.1f} %" if tr else "") + " |")
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    (HERE / "commands.json").write_text(json.dumps(commands, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Train small circuits with physgrad's learning rules and record the results next to this file.

Usage (from the repository root)::

    python reports/trainable/run.py xor         # XOR through a diode network
    python reports/trainable/run.py regression  # 1-D nonlinear regression through a diode network
    python reports/trainable/run.py iris        # 16-edge linear network on Iris (after Dillavou et al. 2022)

Each task writes ``reports/trainable/<task>/``: ``history.csv`` (one row per epoch x method),
``final.csv``, ``config.json`` (command, seeds, hyper-parameters, versions) and figures.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from physgrad.energies.co_content import CoContentEnergy  # noqa: E402
from physgrad.minimizers.co_content import CoContentMinimizer  # noqa: E402
from physgrad.learning import FitConfig, fit, make_estimator  # noqa: E402
from verification.tasks import dillavou_network, load_iris, regression_target, regression_task, xor_task  # noqa: E402

HERE = Path(__file__).resolve().parent
MIN = CoContentMinimizer()


def outputs(energy, theta, X):
    return np.asarray(energy.outputs(MIN.minimize(energy, theta, X).state))


def train_all(energy, X, Y, methods, cfg, metrics, log):
    hist, final = [], []
    for name, est in methods.items():
        t0 = time.perf_counter()
        res = fit(energy, energy.theta0(), X, Y, MIN, est, cfg, metrics=metrics)
        secs = time.perf_counter() - t0
        for h in res.history:
            hist.append({"method": name, **h})
        final.append({"method": name, **res.history[-1], "seconds": round(secs, 1)})
        log(f"{name:>10}: {res.history[-1]}  ({secs:.1f} s)")
        yield name, res
    train_all.hist, train_all.final = hist, final


def save(task, cfg, extra, methods_desc):
    out = HERE / task
    out.mkdir(exist_ok=True)
    pd.DataFrame(train_all.hist).to_csv(out / "history.csv", index=False, float_format="%.8g")
    pd.DataFrame(train_all.final).to_csv(out / "final.csv", index=False, float_format="%.6g")
    import scipy

    (out / "config.json").write_text(json.dumps({
        "command": f"python reports/trainable/run.py {task}", "fit": cfg.__dict__, "methods": methods_desc,
        "numpy": np.__version__, "scipy": scipy.__version__, **extra}, indent=2, default=str) + "\n")
    return out


def plot_curves(out, metric_label=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.DataFrame(train_all.hist)
    cols = ["cost"] + ([metric_label] if metric_label else [])
    fig, axes = plt.subplots(1, len(cols), figsize=(5 * len(cols), 3.6))
    axes = np.atleast_1d(axes)
    for ax, col in zip(axes, cols):
        for m, g in df.groupby("method", sort=False):
            (ax.semilogy if col == "cost" else ax.plot)(g.epoch, g[col], label=m, lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(col + (" (V^2)" if col == "cost" else ""))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    return plt


def methods_for(beta, eta, cl=True):
    m = {"exact": make_estimator("exact"), "cep": make_estimator("cep", beta=beta),
         "pep": make_estimator("pep", beta=beta), "ccpl": make_estimator("ccpl", eta=eta)}
    if cl:
        m["cl"] = make_estimator("cl")
    return m


def xor(log):
    circuit, inputs, X, Y = xor_task(seed=0, n_hidden=8)
    energy = CoContentEnergy(circuit, inputs=inputs)
    cfg = FitConfig(lr=0.02, epochs=100, g_min=1e-3, optimizer="adam")
    beta, eta = 0.01, 0.1
    methods = methods_for(beta, eta)

    def acc(th):
        return {"accuracy": float(np.mean(np.sign(outputs(energy, th, X)) == np.sign(Y)))}

    finals = {name: res for name, res in train_all(energy, X, Y, methods, cfg, acc, log)}
    out = save("xor", cfg, {"task": "xor_task(seed=0, n_hidden=8)", "beta_S": beta, "eta": eta,
                            "n_trainable": len(energy.param_names)}, list(methods))
    plot_curves(out, "accuracy")
    return out, {m: outputs(energy, r.theta, X).ravel().tolist() for m, r in finals.items()}


def regression(log):
    circuit, inputs, X, Y = regression_task(seed=0)
    energy = CoContentEnergy(circuit, inputs=inputs)
    cfg = FitConfig(lr=0.03, epochs=150, batch_size=7, g_min=1e-3, optimizer="adam")
    beta, eta = 0.01, 0.1
    methods = methods_for(beta, eta)
    xs = np.linspace(-1, 1, 81)
    Xd = np.column_stack([xs, -xs])

    def rmse(th):
        return {"rmse_V": float(np.sqrt(np.mean((outputs(energy, th, X) - Y) ** 2)))}

    finals = {name: res for name, res in train_all(energy, X, Y, methods, cfg, rmse, log)}
    out = save("regression", cfg, {"task": "regression_task(seed=0)", "beta_S": beta, "eta": eta,
                                   "n_trainable": len(energy.param_names)}, list(methods))
    plt = plot_curves(out, "rmse_V")
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(xs, regression_target(xs), "k-", lw=2, label="target")
    ax.plot(X[:, 0], Y[:, 0], "ko", ms=3)
    ax.plot(xs, outputs(energy, energy.theta0(), Xd)[:, 0], "k:", lw=1, label="initial")
    for m, r in finals.items():
        ax.plot(xs, outputs(energy, r.theta, Xd)[:, 0], lw=1, label=m)
    ax.set_xlabel("x (V)")
    ax.set_ylabel("v(out) (V)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fit.png", dpi=110)
    return out, {}


def iris(log):
    feats, labels = load_iris()
    lo, hi = feats.min(axis=0), feats.max(axis=0)
    X = (feats - lo) / (hi - lo)  # features scaled to 0..1 V
    hot, cold = 0.5, 0.4  # target voltages (V) of the correct / other output nodes
    Y = np.where(np.eye(3)[labels] > 0, hot, cold)
    rng = np.random.default_rng(0)
    perm = rng.permutation(150)
    train, test = perm[:100], perm[100:]
    circuit, inputs = dillavou_network(seed=0)
    energy = CoContentEnergy(circuit, inputs=inputs)
    cfg = FitConfig(lr=0.02, epochs=60, batch_size=10, g_min=1e-3, seed=0, optimizer="adam")
    beta, eta = 0.01, 0.1
    methods = methods_for(beta, eta)

    def acc(th):
        o = outputs(energy, th, X)
        pred = np.argmax(o, axis=1)
        return {"train_accuracy": float(np.mean(pred[train] == labels[train])),
                "test_accuracy": float(np.mean(pred[test] == labels[test]))}

    for _ in train_all(energy, X[train], Y[train], methods, cfg, acc, log):
        pass
    out = save("iris", cfg, {"task": "dillavou_network(seed=0), Iris 100 train / 50 test (seed 0)",
                             "features": "min-max scaled to 0..1 V", "targets_V": [hot, cold], "beta_S": beta,
                             "eta": eta, "prediction": "argmax of the three output voltages"}, list(methods))
    plot_curves(out, "test_accuracy")
    return out, {}


TASKS = {"xor": xor, "regression": regression, "iris": iris}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in TASKS:
        sys.exit(f"usage: python reports/trainable/run.py {{{','.join(TASKS)}}}")
    lines = []

    def log(msg):
        print(msg, flush=True)
        lines.append(msg)

    out, extra = TASKS[sys.argv[1]](log)
    (out / "log.txt").write_text("\n".join(lines) + "\n" + (json.dumps(extra, indent=1) + "\n" if extra else ""))

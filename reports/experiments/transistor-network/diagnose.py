"""Can the twin network represent the regression target at all? The exact-gradient route with no
locality constraint and no step-size limit: L-BFGS-B on the adjoint gradient of the gate voltages
(within the gate bounds), from the experiment's initial gates, for

* ``torus-1V``: the first set-up (input 0-1 V, rail at 1 V, VTO = 0.7 V) with its convex target
  ``0.2 + 0.5 x^2`` and, as a control, the concave target ``0.2 + x - 0.5 x^2``;
* ``pnas``: the paper's regime as a public reproduction of it states it (ALD1106 level-1 edges,
  rails 0 / 0.45 V, the 8-point saturating ramp; see ``run.py --regime pnas``).

Prints a markdown table (initial and final error modes, cost) and writes ``diagnose.json``.

Run from the repository root::

    PYTHONPATH=$PWD python3 reports/experiments/transistor-network/diagnose.py [--maxiter N] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from physgrad.netlists.twin import cost_and_gradient, error_modes, solve_batch

import run as R

HERE = Path(__file__).resolve().parent


def fit_exact(net, X, Y, vg0, lo, hi, maxiter):
    """L-BFGS-B on ``C(V_G)`` with the adjoint gradient; returns (result, predictions)."""

    def f(vg):
        C, g = cost_and_gradient(net, vg, X, Y, solve_batch(net, vg, X))
        return C, g

    r = minimize(f, vg0, jac=True, method="L-BFGS-B", bounds=[(lo, hi)] * len(vg0),
                 options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-12})
    return r, net.predict(solve_batch(net, r.x, X).v)[:, 0]


def cases():
    """(name, network, X, Y, initial gates, gate bounds)."""
    net, X, Y, _ = R.tasks(10)["regression"]
    vg0 = 2.5 + 0.3 * np.random.default_rng(0).standard_normal(net.n_edges)
    yield "torus-1V, convex target 0.2 + 0.5 x^2", net, X, Y, vg0, (0.0, 5.0)
    yield "torus-1V, concave target 0.2 + x - 0.5 x^2", net, X, 0.2 + X - 0.5 * X**2, vg0, (0.0, 5.0)
    net, X, Y, cfgs = R.pnas_tasks(10)["regression"]
    c = cfgs["exact"]
    vg0 = R.initial_gates("pnas", "regression", 0, net.n_edges)
    yield "pnas, saturating ramp (8 points)", net, X, Y, vg0, (c.v_gate_min, c.v_gate_max)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maxiter", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    rows = []
    print("| set-up, target | modes start (mean, slope, curvature; V) | after L-BFGS-B | curvature end/start | "
          "cost C end (V^2) | iterations | CPU s |")
    print("|---|---|---|---|---|---|---|")
    for name, net, X, Y, vg0, (lo, hi) in cases():
        c0 = time.process_time()
        p0 = net.predict(solve_batch(net, vg0, X).v)[:, 0]
        m0 = np.abs(error_modes(X[:, 0], p0 - Y[:, 0]))
        r, p = fit_exact(net, X, Y, vg0, lo, hi, args.maxiter)
        m = np.abs(error_modes(X[:, 0], p - Y[:, 0]))
        cpu = time.process_time() - c0
        row = {"case": name, "modes_initial": m0.tolist(), "modes_final": m.tolist(), "cost_final": float(r.fun),
               "iterations": int(r.nit), "cpu_s": round(cpu, 1), "gate_bounds": [lo, hi],
               "gates_at_bounds": int(np.sum((r.x <= lo + 1e-9) | (r.x >= hi - 1e-9)))}
        rows.append(row)
        print(f"| {name} | {m0[0]:.4f}, {m0[1]:.4f}, {m0[2]:.4f} | {m[0]:.4f}, {m[1]:.4f}, {m[2]:.4f} | "
              f"{m[2] / m0[2]:.3f} | {r.fun:.2e} | {r.nit} | {cpu:.1f} |", flush=True)
    (args.out / "diagnose.json").write_text(json.dumps({"maxiter": args.maxiter, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

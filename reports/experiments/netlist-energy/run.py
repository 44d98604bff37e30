"""Per-example physical energy of EP training on a netlist (iris, 16-edge resistor network).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python3 reports/experiments/netlist-energy/run.py [--epochs 20]

Trains with physgrad fit's own pieces (resolve, init_devices, gradient, optim.step, device_step: the
same arithmetic as `physgrad fit --method pep`) and, for every training example, accounts the
energy of its free and physically nudged equilibria (`physgrad.netlists.energy.ep_step_energy`) and
the programming energy of each update (`physgrad.devices.energy.programming_energy`), for the ideal
device and `reram-sb`. Writes results.json / results.md next to this file.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from physgrad.circuit.power import NODE_CAPACITANCE, SETTLING_MULTIPLE
from physgrad.devices.energy import programming_energy, write_energy_of
from physgrad.learning import make_estimator, optim
from physgrad.minimizers.co_content import CoContentMinimizer
from physgrad.netlists.energy import ep_step_energy
from physgrad.netlists.fit import FitSpec, device_step, evaluate, gradient, init_devices, resolve

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
IRIS = ROOT / "physgrad" / "examples" / "iris"


def run(device: str, epochs: int, seed: int) -> dict:
    spec = FitSpec(netlist=str(IRIS / "iris16.cir"), data=str(IRIS / "iris.csv"), inputs=("vsl", "vsw", "vpl", "vpw"),
                   outputs=("o1", "o2", "o3"), label_column="species", method="pep", epochs=epochs, batch_size=16,
                   lr=2e-5, seed=seed, device_model=device)
    pb = resolve(spec)
    r = pb.resolved
    minimizer = CoContentMinimizer()
    est = make_estimator("pep", beta=r["beta"])
    theta, dstate = init_devices(pb)
    state = optim.init(r["optimizer"], theta)
    write = write_energy_of(device)
    en = pb.energy
    free, nudged, prog, n_ex, t_s = 0.0, 0.0, 0.0, 0, []
    n = len(pb.X)
    for epoch in range(epochs):
        order = np.random.default_rng([r["seed"], epoch]).permutation(n)
        for bi in range(-(-n // 16)):
            idx = order[bi * 16:(bi + 1) * 16]
            X, Y = pb.X[idx], pb.Y[idx]
            eq = minimizer.minimize(en, theta, X)
            y_eff = pb.loss.effective_targets(np.asarray(en.outputs(eq.state), float), Y)
            base = en.circuit.with_conductances(dict(zip(en.param_names, theta)))
            for b in range(len(idx)):
                e = ep_step_energy(base.with_sources(dict(zip(en.inputs, X[b]))), en.output_nodes, y_eff[b], r["beta"])
                free += e.free
                nudged += e.nudged
                t_s.append(e.settling_time)
            g = gradient(pb, theta, X, Y, minimizer, est)
            theta_opt, state = optim.step(r["optimizer"], theta, np.asarray(g, float), state, r["lr"])
            before = np.array(theta, dtype=float)
            theta, dstate = device_step(pb, theta, theta_opt, dstate)
            if write.pulsed and dstate is not None:
                prog += programming_energy(before, np.asarray(theta, float), write, float(dstate.leaves[0].dw0))
            n_ex += len(idx)
    acc = evaluate(pb, theta, pb.X, pb.Y, minimizer, dstate)["accuracy"]
    return {"device": device, "beta_S": r["beta"], "lr": r["lr"], "train_accuracy": acc,
            "free_J_per_example": free / n_ex, "nudged_J_per_example": nudged / n_ex,
            "program_J_per_example": prog / n_ex, "settling_time_s": [min(t_s), max(t_s)],
            "write": write.source, "examples": n_ex, "median_conductance_S": r["median_conductance_S"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = []
    for device in ("ideal", "reram-sb"):
        c0 = time.process_time()
        row = run(device, args.epochs, args.seed)
        row["cpu_s"] = time.process_time() - c0
        rows.append(row)
        print(row, flush=True)
    out = {"node_capacitance_F": NODE_CAPACITANCE, "settling_multiple": SETTLING_MULTIPLE, "epochs": args.epochs,
           "rows": rows}
    (HERE / "results.json").write_text(json.dumps(out, indent=1, allow_nan=False))
    md = ["| device | train accuracy | free phase J/example | nudged phase J/example | programming J/example | "
          "settling time (s) |", "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['device']} | {r['train_accuracy']:.3f} | {r['free_J_per_example']:.3g} | "
                  f"{r['nudged_J_per_example']:.3g} | {r['program_J_per_example']:.3g} | "
                  f"{r['settling_time_s'][0]:.3g}-{r['settling_time_s'][1]:.3g} |")
    (HERE / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

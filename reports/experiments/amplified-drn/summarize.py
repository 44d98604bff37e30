"""Table (results.csv, markdown on stdout) and plot (test_error.png) of the amplified-DRN runs.

``python3 reports/experiments/amplified-drn/summarize.py <runs>/ampdrn``
"""
import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
ORDER = ["g2000-cep", "g480-cep", "g480-a1.5x1.5-cep", "g480-a2x2-cep", "g480-a3x3-cep", "g2000-tbp", "g480-a2x2-tbp"]


def main(root):
    root = Path(root)
    rows = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ORDER:
        f = root / name / "metrics.csv"
        if not f.exists():
            continue
        m = list(csv.DictReader(f.open()))
        if not m:
            continue
        cfg = json.loads((root / name / "config.json").read_text())
        p = cfg["preset"]
        gains = tuple(p.get("amplifier_gains") or ())
        prod = 1.0
        for a in gains:
            prod *= a
        for r in m:
            rows.append(dict(run=name, algorithm=cfg["config"]["algorithm"], input_gain=p["input_gain"],
                             amplifier_gains="x".join(f"{a:g}" for a in gains) or "none",
                             equivalent_input_gain=p["input_gain"] * prod, epoch=int(r["epoch"]),
                             train_error=float(r["train_error"]), test_error=float(r["test_error"]),
                             train_seconds=round(float(r["train_seconds"]), 1)))
        ax.plot([int(r["epoch"]) for r in m], [float(r["test_error"]) for r in m], "o-" if "cep" in name else "s--",
                label=f"{name} (eq. gain {p['input_gain'] * prod:g})")
    ax.set_xticks(sorted({r["epoch"] for r in rows}))
    ax.set_xlabel("epoch (1000 training images each)")
    ax.set_ylabel("test error (%), first 1000 test images")
    ax.set_title("DRN-2H: input gain vs amplifiers between layers")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "test_error.png", dpi=120)
    with (HERE / "results.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print("| run | algorithm | input gain (V) | amplifier gains | equivalent input gain | epoch | train error (%) | "
          "test error (%) | train s |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['algorithm']} | {r['input_gain']:g} | {r['amplifier_gains']} | "
              f"{r['equivalent_input_gain']:g} | {r['epoch']} | {r['train_error']:.1f} | {r['test_error']:.1f} | "
              f"{r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/amplified-drn")

"""Tables (CSV + markdown) and plots of the device experiments from the sweep folders.

    python3 reports/experiments/devices/report.py --runs <runs>/devices --exsitu exsitu.csv

Reads ``RUNS/<sweep>/results.csv`` of the sweeps a_cep, a_levels_tbp_fast, a_levels_tbp, b_laws, c_readnoise_phase,
c_readnoise_ref2000, c_readnoise_step, d_faults_insitu (missing ones are skipped) and writes
``a_levels.csv``, ``b_laws.csv``, ``c_readnoise.csv``, ``d_faults.csv``, ``tables.md`` and one PNG per
experiment next to this script.
"""
import argparse
import csv
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent


def rows(runs: Path, sweep: str) -> list:
    path = runs / sweep / "results.csv"
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        out = []
        for r in csv.DictReader(fh):
            if r["status"] != "ok":
                continue
            p = json.loads(r["params"])
            p["device"] = Path(p.get("device_model", "ideal")).stem
            p["test_error"] = round(float(r["final_error"]), 2)
            p["seconds"] = float(r["seconds"])
            out.append(p)
        return out


def write(name: str, header: list, table: list) -> str:
    with open(HERE / f"{name}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(table)
    md = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    md += [f"| {' | '.join(str(c) for c in row)} |" for row in table]
    return "\n".join(md)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="<runs>/devices")
    ap.add_argument("--exsitu", default=None, help="CSV printed by exsitu.py")
    args = ap.parse_args()
    runs = Path(args.runs)
    md = []

    # (a) levels x rounding x rule
    table, ideal = [], {}
    fig, ax = plt.subplots(figsize=(6, 4))
    for sweep, rule in (("a_cep", "C-EP"), ("a_levels_tbp_fast", "TBP"), ("a_levels_tbp", "TBP (generic engine)")):
        by = {}
        for r in rows(runs, sweep):
            m = re.match(r"levels(\d+)-(\w+)", r["device"])
            if m:
                by.setdefault(m.group(2), []).append((int(m.group(1)), r["test_error"]))
                table.append([rule, int(m.group(1)), m.group(2), r["test_error"]])
            elif r["device"] == "ideal":
                ideal[rule] = r["test_error"]
                table.append([rule, "ideal", "-", r["test_error"]])
        for rounding, pts in sorted(by.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if rounding == "stochastic" else "s--",
                    label=f"{rule} {rounding}")
        if rule in ideal:
            ax.axhline(ideal[rule], ls=":", color={"C-EP": "k", "TBP": "gray"}.get(rule, "silver"),
                       label=f"{rule} ideal")
    if table:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("conductance levels per layer on [0, 2 g_ref]")
        ax.set_ylabel("test error (%)")
        ax.set_title("(a) DRN-XS, 20k images, 1 epoch")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(HERE / "a_levels.png", dpi=100)
        md += ["### (a) levels x rounding x rule", write("a_levels", ["rule", "levels", "rounding", "test_error_%"],
                                                         table)]
    plt.close(fig)

    # (b) update laws
    b = rows(runs, "b_laws")
    if b:
        table = [[r["device"], r["test_error"], round(r["seconds"], 1)] for r in b]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.barh([t[0] for t in table], [t[1] for t in table])
        if "C-EP" in ideal:
            ax.axvline(ideal["C-EP"], color="k", ls=":", label="ideal")
            ax.legend()
        ax.set_xscale("log")
        ax.set_xlabel("test error (%)")
        ax.set_title("(b) update law, asymmetry, single vs pair (DRN-XS, C-EP)")
        fig.tight_layout()
        fig.savefig(HERE / "b_laws.png", dpi=100)
        plt.close(fig)
        md += ["### (b) update laws", write("b_laws", ["device", "test_error_%", "wall_s"], table)]

    # (c) read noise x beta
    table = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, sweeps, title in ((axes[0], ("c_readnoise_phase", "c_readnoise_ref2000"),
                               "per-phase read noise, generic engine, 2k images"),
                              (axes[1], ("c_readnoise_step",), "per-step read noise, fast engine, 20k images")):
        curves = {}
        for s in sweeps:
            for r in rows(runs, s):
                m = re.match(r"rn([\d.]+)-(\w+)", r["device"])
                sigma, how = (float(m.group(1)), m.group(2)) if m else (0.0, "-")
                beta = float(r.get("beta") or 1.0)
                curves.setdefault(sigma, []).append((beta, r["test_error"]))
                table.append([sigma, how, 20000 if "step" in s else 2000, beta, r["test_error"]])
        for sigma, pts in sorted(curves.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"sigma = {sigma:g}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("beta")
        ax.set_ylabel("test error (%)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if table:
        fig.tight_layout()
        fig.savefig(HERE / "c_readnoise.png", dpi=100)
        md += ["### (c) read noise x beta", write("c_readnoise", ["sigma", "resample", "train_size", "beta",
                                                                   "test_error_%"], table)]
    plt.close(fig)

    # (d) faults: in situ vs ex situ
    d = {r["device"]: r["test_error"] for r in rows(runs, "d_faults_insitu")}
    ex = {}
    if args.exsitu:
        with open(args.exsitu, newline="") as fh:
            ex = {r["device"]: float(r["exsitu_test_error"]) for r in csv.DictReader(fh)}
    if d:
        names = list(d)
        table = [[n, d[n], ex.get(n, "")] for n in names]
        fig, ax = plt.subplots(figsize=(7, 4))
        ys = range(len(names))
        ax.barh([y - 0.2 for y in ys], [d[n] for n in names], height=0.4, label="in situ (trained on the devices)")
        ax.barh([y + 0.2 for y in ys], [ex.get(n, 0) for n in names], height=0.4,
                label="ex situ (ideal training, then programmed)")
        ax.set_yticks(list(ys))
        ax.set_yticklabels(names)
        if "ideal" in ex:
            ax.axvline(ex["ideal"], color="k", ls=":", label="ideal")
        ax.set_xlabel("test error (%)")
        ax.set_title("(d) faulty devices, DRN-XS C-EP")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(HERE / "d_faults.png", dpi=100)
        plt.close(fig)
        md += ["### (d) faults: in situ vs ex situ", write("d_faults", ["device", "insitu_test_error_%",
                                                                          "exsitu_test_error_%"], table)]
    (HERE / "tables.md").write_text("\n\n".join(md) + "\n")
    print("\n\n".join(md))


if __name__ == "__main__":
    main()

"""Gather the comparative-study cells (issue 22) from their run folders into this folder.

Usage: ``python reports/experiments/dchn-table/collect.py RUNS_DIR`` where ``RUNS_DIR`` holds one run folder per
cell, named ``<dataset>-<algorithm>`` (``command.sh`` writes them). Copies each ``metrics.csv`` to
``metrics-<dataset>-<algorithm>.csv``, writes ``table.md`` (last epoch's test error per cell, epochs done) and
``curves.png`` (test error per epoch), ``config-<dataset>-<algorithm>.json`` (the run's config). Cells without
a metrics file are listed as not run; the CPU seconds and exit status come from ``<dataset>-<algorithm>.log``
and ``<dataset>-<algorithm>-resume.log`` (``/usr/bin/time -v`` output of ``command.sh``) when present.
"""
import csv
import shutil
import sys
from pathlib import Path

DATASETS = ("mnist", "fashion-mnist")
ALGORITHMS = ("cep", "pep", "cl", "tbp")
COLORS = {"cep": "tab:blue", "pep": "tab:orange", "cl": "tab:green", "tbp": "tab:red"}
NAMES = {"cep": "C-EP", "pep": "P-EP", "cl": "CL", "tbp": "TBP", "mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def main(runs: Path, here: Path = Path(__file__).parent) -> int:
    rows, curves = {}, {}
    for ds in DATASETS:
        for alg in ALGORITHMS:
            m = runs / f"{ds}-{alg}" / "metrics.csv"
            if not m.exists():
                continue
            shutil.copyfile(m, here / f"metrics-{ds}-{alg}.csv")
            shutil.copyfile(m.parent / "config.json", here / f"config-{ds}-{alg}.json")
            with open(m) as f:
                recs = list(csv.DictReader(f))
            if recs:
                rows[ds, alg] = recs
                curves[ds, alg] = [(int(r["epoch"]), float(r["test_error"])) for r in recs]
    lines = ["| algorithm | " + " | ".join(NAMES[d] + " test error (%) by epoch" for d in DATASETS) + " |",
             "|---|" + "---|" * len(DATASETS)]
    cpu = []
    for alg in ALGORITHMS:
        cells = []
        for ds in DATASETS:
            r = rows.get((ds, alg))
            log0 = runs / f"{ds}-{alg}.log"
            diverged = log0.exists() and "training diverged" in log0.read_text()
            cells.append(("diverged in epoch 1 (non-finite parameters)" if diverged else "not run") if r is None
                         else " / ".join(f"{float(x['test_error']):.2f}" for x in r))
            for log in (runs / f"{ds}-{alg}.log", runs / f"{ds}-{alg}-resume.log"):
                if log.exists():
                    t = {k: v.strip() for k, _, v in (ln.strip().partition(": ") for ln in log.read_text().splitlines())}
                    if "User time (seconds)" in t:
                        sec = float(t["User time (seconds)"]) + float(t["System time (seconds)"])
                        cpu.append((f"{NAMES[ds]} {NAMES[alg]} ({log.name})", sec, t.get("Exit status")))
        lines.append(f"| {NAMES[alg]} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- {name}: {sec:.0f} CPU s, exit status {st}" for name, sec, st in cpu]
    if cpu:
        lines.append(f"- total: {sum(c[1] for c in cpu):.0f} CPU s ({sum(c[1] for c in cpu) / 60:.1f} min)")
    (here / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(DATASETS), figsize=(10, 4))
    for ax, ds in zip(axes, DATASETS):
        for alg in ALGORITHMS:
            if (ds, alg) in curves:
                e, t = zip(*curves[ds, alg])
                ax.plot(e, t, marker="o", label=NAMES[alg], color=COLORS[alg])
        ax.set_xticks([1, 2, 3])
        ax.set_title(f"dchn-mnist, {NAMES[ds]}: 10,240 train / 2,000 test")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(here / "curves.png", dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))

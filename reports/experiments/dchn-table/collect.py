"""Gather the comparative-study cells (issue 22) from their run folders into this folder.

Usage: ``python reports/experiments/dchn-table/collect.py RUNS_DIR`` where ``RUNS_DIR`` holds one run folder per
cell, named ``<dataset>-<cell>`` (``command.sh`` writes them; ``CELL=<dataset>-<cell>`` names a variant), and
the ``/usr/bin/time -v`` output of ``command.sh`` as ``<dataset>-<cell>.log`` (``-resume.log`` for a resumed
part). Copies each run's ``metrics.csv`` to ``metrics-<dataset>-<cell>.csv`` and its ``config.json`` to
``config-<dataset>-<cell>.json`` (with ``<data>``, ``<runs>``, ``<repo>`` for this machine's folders), records the CPU seconds and exit status of each log in ``cpu.csv`` (kept
across calls: cells run in earlier sessions keep their rows), then writes ``table.md`` (test error per
epoch of every cell whose metrics are in this folder) and ``curves.png`` (test error per epoch).
"""
import csv
import os
import shutil
import sys
from pathlib import Path

DATASETS = ("mnist", "fashion-mnist")
CELLS = ("cep", "pep", "pep-wd", "pep-relaxed", "cl", "cl-relaxed", "tbp")
NAMES = {"cep": "C-EP", "pep": "P-EP", "pep-wd": "P-EP, weight decay 3e-4", "pep-relaxed": "P-EP, relaxed zero phase",
         "cl": "CL", "cl-relaxed": "CL, relaxed zero phase", "tbp": "TBP", "mnist": "MNIST",
         "fashion-mnist": "Fashion-MNIST"}
COLORS = {"cep": "tab:blue", "pep": "tab:orange", "pep-wd": "tab:brown", "pep-relaxed": "tab:purple", "cl": "tab:green",
          "cl-relaxed": "tab:olive", "tbp": "tab:red"}
CPU_FIELDS = ("cell", "log", "cpu_seconds", "exit_status")


def _portable(text: str, runs: Path) -> str:
    """``text`` without this machine's folders: the data folder (``$PHYSGRAD_DATA``) as ``<data>``, the runs
    folder as ``<runs>``, the repository (the working directory) as ``<repo>``."""
    for folder, name in ((os.environ.get("PHYSGRAD_DATA"), "<data>"), (str(runs.resolve()), "<runs>"),
                         (os.getcwd(), "<repo>")):
        if folder:
            text = text.replace(folder.rstrip("/"), name)
    return text


def _read_cpu(path: Path) -> dict:
    if not path.exists():
        return {}
    with open(path) as f:
        return {(r["cell"], r["log"]): r for r in csv.DictReader(f)}


def main(runs: Path, here: Path = Path(__file__).parent) -> int:
    cpu = _read_cpu(here / "cpu.csv")
    for ds in DATASETS:
        for cell in CELLS:
            name = f"{ds}-{cell}"
            m = runs / name / "metrics.csv"
            if m.exists():
                shutil.copyfile(m, here / f"metrics-{name}.csv")
                (here / f"config-{name}.json").write_text(_portable((m.parent / "config.json").read_text(), runs))
            for log in (runs / f"{name}.log", runs / f"{name}-resume.log"):
                if log.exists():
                    t = {k: v.strip() for k, _, v in (ln.strip().partition(": ") for ln in log.read_text().splitlines())}
                    if "User time (seconds)" in t:
                        sec = float(t["User time (seconds)"]) + float(t["System time (seconds)"])
                        diverged = "training diverged" in log.read_text()
                        status = t.get("Exit status", "?") + (" (diverged)" if diverged else "")
                        cpu[name, log.name] = {"cell": name, "log": log.name, "cpu_seconds": f"{sec:.0f}",
                                               "exit_status": status}
    with open(here / "cpu.csv", "w", newline="") as f:
        w = csv.DictWriter(f, CPU_FIELDS)
        w.writeheader()
        for key in sorted(cpu):
            w.writerow(cpu[key])
    rows, curves = {}, {}
    for ds in DATASETS:
        for cell in CELLS:
            m = here / f"metrics-{ds}-{cell}.csv"
            if m.exists():
                with open(m) as f:
                    recs = list(csv.DictReader(f))
                if recs:
                    rows[ds, cell] = recs
                    curves[ds, cell] = [(int(r["epoch"]), float(r["test_error"])) for r in recs]
    lines = ["| cell | " + " | ".join(NAMES[d] + " test error (%) by epoch" for d in DATASETS) + " |",
             "|---|" + "---|" * len(DATASETS)]
    for cell in CELLS:
        cells = []
        for ds in DATASETS:
            r = rows.get((ds, cell))
            logs = [v for (c, _), v in cpu.items() if c == f"{ds}-{cell}"]
            diverged = any("diverged" in v["exit_status"] for v in logs)
            if r is None:
                cells.append("diverged in epoch 1 (non-finite parameters)" if diverged else "not run")
            else:
                cells.append(" / ".join(f"{float(x['test_error']):.2f}" for x in r))
        if any(c != "not run" for c in cells):
            lines.append(f"| {NAMES[cell]} | " + " | ".join(cells) + " |")
    lines.append("")
    for key in sorted(cpu):
        v = cpu[key]
        lines.append(f"- {v['cell']} ({v['log']}): {v['cpu_seconds']} CPU s, exit status {v['exit_status']}")
    total = sum(float(v["cpu_seconds"]) for v in cpu.values())
    lines.append(f"- total: {total:.0f} CPU s ({total / 60:.1f} min)")
    (here / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(DATASETS), figsize=(11, 4.5))
    for ax, ds in zip(axes, DATASETS):
        for cell in CELLS:
            if (ds, cell) in curves:
                e, t = zip(*curves[ds, cell])
                ax.plot(e, t, marker="o", label=NAMES[cell], color=COLORS[cell])
        ax.set_xticks([1, 2, 3])
        ax.set_yscale("log")
        ax.set_title(f"dchn-mnist, {NAMES[ds]}: 10,240 train / 2,000 test")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(here / "curves.png", dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))

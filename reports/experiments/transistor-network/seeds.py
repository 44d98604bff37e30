"""Seed spread of the twin-network experiment: reads the ``summary.json`` of ``run.py`` runs and prints
one markdown row per (setting, task, rule) with every seed's outcome and the counts.

Run from the repository root::

    python3 reports/experiments/transistor-network/seeds.py DIR [DIR ...]

Each DIR holds a ``summary.json`` written by ``run.py`` (its seed, tau and eta are read from it).
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def rows(dirs) -> dict:
    """``{(tau, eta, task, rule): [(seed, run dict), ...]}`` sorted by seed."""
    out = defaultdict(list)
    for d in dirs:
        s = json.loads((Path(d) / "summary.json").read_text())
        for key, run in s["runs"].items():
            task, rule = key.split("/")
            out[s["tau_steps"], s["eta"], task, rule].append((s["seed"], run))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in sorted(out.items())}


def table(dirs) -> str:
    lines = ["| tau, eta | task | rule | seeds | per seed | summary |", "|---|---|---|---|---|---|"]
    for (tau, eta, task, rule), runs in rows(dirs).items():
        seeds = ",".join(str(s) for s, _ in runs)
        if task == "xor":
            per = "; ".join(f"{r['correct']}/4 end, 4/4 in last fifth {100 * r['fraction_4_of_4_last_fifth']:.0f} %"
                            for _, r in runs)
            held = sum(r["correct"] == 4 and r["fraction_4_of_4_last_fifth"] == 1.0 for _, r in runs)
            ever = sum(r["first_step_4_of_4"] is not None for _, r in runs)
            summ = f"4/4 held through the last fifth: {held}/{len(runs)}; 4/4 ever: {ever}/{len(runs)}"
        else:
            per = "; ".join(f"C {r['cost_initial']:.2e}->{r['cost_final']:.2e}, curvature "
                            f"{abs(r['modes_initial'][2]):.3f}->{abs(r['modes_final'][2]):.3f} V"
                            for _, r in runs)
            order = sum(r["mode_fall_step"]["mean"] is not None and r["mode_fall_step"]["slope"] is not None
                        and r["mode_fall_step"]["mean"] <= r["mode_fall_step"]["slope"] for _, r in runs)
            curv = sum(r["mode_fall_step"]["curvature"] is not None for _, r in runs)
            summ = f"mean before slope: {order}/{len(runs)}; curvature fell below 10 %: {curv}/{len(runs)}"
        lines.append(f"| {tau:g}, {eta:g} | {task} | {rule} | {seeds} | {per} | {summ} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1:]))

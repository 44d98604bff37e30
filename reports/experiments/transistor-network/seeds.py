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

import numpy as np


def rows(dirs) -> dict:
    """``{(setting, task, rule): [(seed, run dict), ...]}`` sorted by seed; the setting names the
    regime, the leak time and the clamp (``-`` where the regime's default or no leak)."""
    out = defaultdict(list)
    for d in dirs:
        s = json.loads((Path(d) / "summary.json").read_text())
        tau, eta = s.get("tau_steps"), s.get("eta")
        gamma = s.get("gamma")
        setting = (f"{s.get('regime', 'torus-1V')}, tau {'-' if tau is None else f'{tau:g}'}, "
                   f"eta {'-' if eta is None else f'{eta:g}'}, " + ("" if gamma is None else f"gamma {gamma:g}, ")
                   + ("" if s.get("anneal_steps") is None else f"anneal {s['anneal_steps']:g}, ")
                   + f"{s['steps']} steps")
        for key, run in s["runs"].items():
            task, rule = key.split("/")
            out[setting, task, rule].append((s["seed"], run))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in sorted(out.items())}


def table(dirs) -> str:
    lines = ["| setting | task | rule | seeds | per seed | summary |", "|---|---|---|---|---|---|"]
    for (setting, task, rule), runs in rows(dirs).items():
        seeds = ",".join(str(s) for s, _ in runs)
        if task == "xor":
            per = "; ".join(f"{r['correct']}/4 end, 4/4 in last fifth {100 * r['fraction_4_of_4_last_fifth']:.0f} %"
                            for _, r in runs)
            held = sum(r["correct"] == 4 and r["fraction_4_of_4_last_fifth"] == 1.0 for _, r in runs)
            ever = sum(r["first_step_4_of_4"] is not None for _, r in runs)
            summ = f"4/4 held through the last fifth: {held}/{len(runs)}; 4/4 ever: {ever}/{len(runs)}"
        else:
            per = "; ".join(f"C {r['cost_initial']:.2e}->{r['cost_final']:.2e}, curvature "
                            f"{abs(r['modes_initial'][2]):.3f}->{abs(r['modes_final'][2]):.3f} V, falls "
                            + "/".join(str(r["mode_fall_step"][m]) for m in ("mean", "slope", "curvature"))
                            for _, r in runs)
            order = sum(r["mode_fall_step"]["mean"] is not None and r["mode_fall_step"]["slope"] is not None
                        and r["mode_fall_step"]["mean"] <= r["mode_fall_step"]["slope"] for _, r in runs)
            curv = sum(r["mode_fall_step"]["curvature"] is not None for _, r in runs)
            full = sum(all(r["mode_fall_step"][m] is not None for m in ("mean", "slope", "curvature"))
                       and r["mode_fall_step"]["mean"] <= r["mode_fall_step"]["slope"]
                       <= r["mode_fall_step"]["curvature"] for _, r in runs)
            fr = [abs(r["modes_final"][k]) / abs(r["modes_initial"][k]) for _, r in runs for k in range(3)]
            summ = (f"mean before slope: {order}/{len(runs)}; curvature fell below 10 %: {curv}/{len(runs)}; "
                    f"order mean <= slope <= curvature: {full}/{len(runs)}; final/initial |mode| (mean, slope, "
                    f"curvature), median over seeds: " + ", ".join(
                        f"{np.median(fr[k::3]):.3f}" for k in range(3)))
        lines.append(f"| {setting} | {task} | {rule} | {seeds} | {per} | {summ} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1:]))

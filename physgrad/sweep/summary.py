r"""Tables over seeds and learning curves with a band, from a sweep folder.

For each configuration (a run's parameters without the seed), over its ``ok`` runs: the final and the
best error as mean, sample standard deviation (:math:`n-1`; blank for one seed), min, max and
``n``. Runs not ``ok`` are counted, never averaged in.

The error is named for what it is (:func:`metric_label`): ``train`` runs report the test error (%);
``fit`` runs the test error (%) of a classifier or the test cost (the loss's mean) of a regression,
and the *training* error or cost when the run has no ``test`` CSV.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from physgrad.runs import write_text
from physgrad.sweep.results import latest, read_results
from physgrad.sweep.spec import configuration_key
from physgrad.sweep.tasks import read_curve


def _stats(values) -> dict:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else math.nan,
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def metric_label(task: str, params: dict) -> str:
    """What ``final_error`` / ``best_error`` of a run measure: ``"Test error (%)"``, ``"Train error (%)"``,
    ``"Test cost"`` or ``"Train cost"`` (:func:`physgrad.sweep.tasks.fit_error`)."""
    if task != "fit":
        return "Test error (%)"
    split = "Test" if params.get("test") else "Train"
    classifies = params.get("label_column") is not None or params.get("loss") not in (None, "mse")
    return f"{split} error (%)" if classifies else f"{split} cost"


def configurations(out) -> list:
    """One dict per configuration: ``params`` (without seed), ``metric`` (:func:`metric_label`),
    ``final``/``best`` statistics, the ok runs' ``run_dirs``, and ``not_ok`` (count of runs in another
    state)."""
    groups = {}
    for row in latest(read_results(out)).values():
        params = json.loads(row["params"])
        key = configuration_key(params)
        g = groups.setdefault(key, {"params": {k: v for k, v in params.items() if k != "seed"},
                                    "metric": metric_label(row["task"], params),
                                    "final": [], "best": [], "run_dirs": [], "not_ok": 0})
        if row["status"] == "ok":
            g["final"].append(float(row["final_error"]))
            g["best"].append(float(row["best_error"]))
            g["run_dirs"].append(row["run_dir"])
        else:
            g["not_ok"] += 1
    return [{**g, "final": _stats(g["final"]), "best": _stats(g["best"])} for _, g in sorted(groups.items())]


def _fmt(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def summary_markdown(configs: list, title: str = "Sweep summary") -> str:
    """A markdown table, one row per configuration; columns for the options that vary."""
    keys = sorted({k for c in configs for k in c["params"]})
    varying = [k for k in keys if len({json.dumps(c["params"].get(k)) for c in configs}) > 1] or keys[:0]
    fixed = {k: configs[0]["params"].get(k) for k in keys if k not in varying} if configs else {}
    metrics = sorted({c["metric"] for c in configs})
    what = metrics[0] if len(metrics) == 1 else "Error or cost (column `measure`)"
    lines = [f"# {title}", "", f"{what} over seeds: final epoch and best epoch, mean ± sample std "
             "(n-1), min, max; n = seeds that finished.", ""]
    if any(m.startswith("Train") for m in metrics):
        lines += ["Runs without a test set report their training error or cost (not a test figure).", ""]
    if fixed:
        lines += ["Common options: " + ", ".join(f"`{k} = {json.dumps(v)}`" for k, v in fixed.items()), ""]
    head = varying + (["measure"] if len(metrics) > 1 else []) + ["final mean", "final std", "final min", "final max", "best mean", "best std", "n", "not ok"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in configs:
        f, b = c["final"], c["best"]
        cells = [json.dumps(c["params"].get(k)) for k in varying]
        cells += [c["metric"]] if len(metrics) > 1 else []
        cells += [_fmt(f["mean"]), _fmt(f["std"]), _fmt(f["min"]), _fmt(f["max"]), _fmt(b["mean"]),
                  _fmt(b["std"]), str(f["n"]), str(c["not_ok"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(configs: list, path) -> None:
    """Error vs epoch per configuration: mean over seeds, band from min to max (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from physgrad.runs import save_figure

    fig, ax = plt.subplots(figsize=(7, 4.5))
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.12, top=0.93)
    keys = sorted({k for c in configs for k in c["params"]})
    varying = [k for k in keys if len({json.dumps(c["params"].get(k)) for c in configs}) > 1]
    metrics = sorted({c["metric"] for c in configs}) or ["Test error (%)"]
    for c in configs:
        curves = [read_curve(Path(d)) for d in c["run_dirs"]]
        curves = [cv for cv in curves if cv]
        if not curves:
            continue
        n = min(len(cv) for cv in curves)
        ep = np.array([e for e, _ in curves[0][:n]])
        err = np.array([[v for _, v in cv[:n]] for cv in curves])
        label = ", ".join(f"{k}={c['params'].get(k)}" for k in varying) or "all runs"
        if len(metrics) > 1:
            label += f" [{c['metric']}]"
        line, = ax.plot(ep, err.mean(axis=0), "o-", ms=3, label=f"{label} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(ep, err.min(axis=0), err.max(axis=0), color=line.get_color(), alpha=0.2)
    if ax.lines and all(y > 0 for ln in ax.lines for y in ln.get_ydata()):
        ax.set_yscale("log")
        fmt = matplotlib.ticker.FormatStrFormatter("%g")
        ax.yaxis.set_major_formatter(fmt)
        ax.yaxis.set_minor_formatter(fmt)
    ylabel = metrics[0] if len(metrics) == 1 else "error (%) or cost"
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel[0].lower() + ylabel[1:])
    ax.set_title(f"{ylabel[0].lower() + ylabel[1:]} over seeds (line: mean, band: min-max)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)


def write_summary(out, title: str = "Sweep summary", folder=None) -> dict:
    """Write ``DIR/summary.md`` and ``DIR/curves.png`` atomically; returns their paths. ``folder``: the
    sweep's claimed :class:`physgrad.runs.RunFolder` (records the files as physgrad's)."""
    out = Path(out)
    configs = configurations(out)
    if folder is not None:
        folder.file("summary.md")
        folder.file("curves.png")
    write_text(out / "summary.md", summary_markdown(configs, title))
    plot_curves(configs, out / "curves.png")
    return {"summary": out / "summary.md", "curves": out / "curves.png"}

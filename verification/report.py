"""Write a verification report folder: results.csv, summary.md, environment.json and figures."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

SLOPE_METHODS = ("pep", "nep", "cep", "pcpl", "ncpl")


def environment(cfg, seconds: float, argv=None) -> dict:
    """Versions, platform, git commit, configuration and run time (for ``environment.json``)."""
    import cvxpy
    import matplotlib
    import scipy

    import physgrad

    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                  cwd=Path(__file__).resolve().parent).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    try:
        from importlib.metadata import version
        ag_version = version("autograd")
    except Exception:  # pragma: no cover
        ag_version = "unknown"
    return {
        "command": " ".join(argv if argv is not None else sys.argv),
        "physgrad": physgrad.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__, "scipy": scipy.__version__, "autograd": ag_version, "cvxpy": cvxpy.__version__,
        "pandas": pd.__version__, "matplotlib": matplotlib.__version__,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "reference_minimizer": "co-content/activeset (exact KKT solve on the active set) for circuits; dense "
                               "linear solve for the analytic chain",
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "seconds": round(seconds, 2),
    }


def slope_table(df: pd.DataFrame) -> pd.DataFrame:
    """Fitted bias slopes per method: mean, min, max over cases, counts."""
    s = df[(df.check == "bias_order") & (df.status != "skip")]
    out = s.groupby("method").agg(expected=("reference", "first"), mean=("value", "mean"), min=("value", "min"),
                                  max=("value", "max"), cases=("value", "size"),
                                  failed=("status", lambda x: int((x == "fail").sum())))
    return out.reindex([m for m in SLOPE_METHODS if m in out.index])


def counts(df: pd.DataFrame) -> pd.DataFrame:
    """Pass/fail/skip/info counts per check family and check."""
    t = df.groupby(["family", "check", "status"]).size().unstack(fill_value=0)
    for col in ("pass", "fail", "skip", "info"):
        if col not in t:
            t[col] = 0
    return t[["pass", "fail", "skip", "info"]]


def bound_margins(df: pd.DataFrame) -> dict:
    b = df[df.family == "bounds"]
    low, up = b[b.check == "lower_bound"], b[b.check == "upper_bound"]
    return {"violations": int((b.status == "fail").sum()), "checked": int(b.status.isin(["pass", "fail"]).sum()),
            "min C - L_pos": float(-low.error.max()) if len(low) else float("nan"),
            "min L_neg - C": float(-up.error.max()) if len(up) else float("nan")}


def _md_table(frame: pd.DataFrame, floatfmt="{:.3g}") -> str:
    frame = frame.reset_index()
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        cells = [floatfmt.format(v) if isinstance(v, (float, np.floating)) else str(v) for v in r.values]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(df: pd.DataFrame, env: dict, title: str) -> str:
    """The ``summary.md`` text."""
    c = counts(df)
    tot = c.sum()
    slopes = slope_table(df)
    bm = bound_margins(df)
    graded_rows = df.status.isin(["pass", "fail"])
    fd = df[(df.check == "exact_vs_fd") & graded_rows]
    sg = df[(df.check == "ep_is_surrogate_gradient") & graded_rows]
    n_fd_skip = int(((df.check == "exact_vs_fd") & (df.status == "skip")).sum())
    n_sg_skip = int(((df.check == "ep_is_surrogate_gradient") & (df.status == "skip")).sum())
    graded = df[df.status.isin(["pass", "fail"]) & (df.tol > 0)].copy()
    graded["ratio"] = graded.error / graded.tol
    worst = graded.sort_values("ratio", ascending=False).head(8)[
        ["case", "check", "method", "param_name", "param", "error", "tol", "status"]]
    cos = df[df.check == "cosine_to_exact"].groupby("method").value.agg(["mean", "min", "max"])
    bp = df[df.check == "convergence"][["case", "method", "error", "status", "detail"]]
    skipped = df[df.status == "skip"].groupby(["case", "check", "detail"]).size().rename("rows").reset_index()
    failed = df[df.status == "fail"][["case", "check", "method", "param", "error", "tol", "detail"]]
    verdict = "PASSED" if tot["fail"] == 0 else f"FAILED ({tot['fail']} failed checks)"
    parts = [
        f"# {title}", "",
        f"**{verdict}** - {int(tot['pass'])} passed, {int(tot['fail'])} failed, {int(tot['skip'])} skipped, "
        f"{int(tot['info'])} informational rows; {df.case.nunique()} cases; {env['seconds']} s.", "",
        f"Command: `{env['command']}`  ", f"Commit: `{env['git_commit']}`" + (" (dirty tree)" if env["git_dirty"] else ""),
        "", "## Pass/fail counts per check", "", _md_table(c), "",
        "## Bias order (fitted slope of log relative error vs log beta, or log eta for CpL)", "",
        "Relative error of each estimate w.r.t. the exact gradient (EP) or the eta -> 0 limit of coupled "
        "learning (CpL). Points where a diode switches (active set differs from the free phase's) are "
        "excluded and reported. Centered CpL on these piecewise-quadratic energies equals its limit to "
        "round-off (the clamped state is affine in eta), so it has no slope.", "",
        _md_table(slopes) if len(slopes) else "(none)", "",
        "## Bounds L_pos(beta) <= C <= L_neg(beta)", "",
        f"{bm['violations']} violations in {bm['checked']} checks; smallest margin C - L_pos = "
        f"{bm['min C - L_pos']:.3g}, smallest L_neg - C = {bm['min L_neg - C']:.3g} (V^2).", "",
        "## Gradients", "",
        f"- exact vs central finite differences (Richardson, random unit directions): worst "
        f"|fd - g.d| / |g| = {fd.error.max():.2g} over {len(fd)} directions (tolerance {fd.tol.max():.0e})"
        f"; {n_fd_skip} directions skipped (equilibrium on a kink, listed below).",
        f"- each EP estimate vs finite differences of its own surrogate: worst {sg.error.max():.2g} over "
        f"{len(sg)} (case, method, beta) rows; {n_sg_skip} skipped (a diode switches between the phases, so "
        "the surrogate is not smooth at the finite-difference scale).", "",
        "Cosine similarity to the exact gradient (informational):", "", _md_table(cos) if len(cos) else "(none)", "",
        "TBP / RBP convergence (relative error at the largest step count):", "",
        _md_table(bp.set_index("case")) if len(bp) else "(none)", "",
        *_scale_section(df),
        "## Worst rows (error / tolerance)", "",
        "Signed: bound rows have error = L - C (or C - L), negative when the bound holds.", "",
        _md_table(worst.set_index("case")), "",
        "## Failed rows", "", _md_table(failed.set_index("case")) if len(failed) else "(none)", "",
        "## Skipped rows (not applicable, with the reason)", "",
        _md_table(skipped.set_index("case")) if len(skipped) else "(none)", "",
        "Figures: `bias.png` (log-log bias vs beta/eta with slope-1 and slope-2 guides), "
        "`surrogates.png` (L_beta around C).", "",
    ]
    return "\n".join(parts)


def _scale_section(df: pd.DataFrame) -> list:
    """Summary of the random circuits at scale (family ``scale``), if any."""
    s = df[df.family == "scale"]
    if not len(s):
        return []
    kinds = s.case.str.extract(r"scale-(\w+)-(\d+)")
    sizes = kinds[1].astype(int)
    worst = s[s.status.isin(["pass", "fail"]) & (s.tol > 0)].groupby("check").error.max()
    lines = ["## Circuits at scale", "",
             f"{s.case.nunique()} random circuits ({', '.join(f'{k}: {n}' for k, n in kinds.drop_duplicates()[0].value_counts().items())}), "
             f"{sizes.min()} to {sizes.max()} nodes, each a batch of inputs: the batched solver against each sample "
             "alone (circuit core), against cvxpy/OSQP (ideal diodes up to 300 nodes), warm against cold starts, "
             "the KKT certificates, the sparse adjoint gradient against autograd (up to 100 nodes) and against "
             "finite differences. Worst error per check:", "",
             "| check | worst error | rows |", "|---|---:|---:|"]
    for check, err in worst.items():
        lines.append(f"| {check} | {err:.2g} | {int((s.check == check).sum())} |")
    return lines + [""]


def figures(df: pd.DataFrame, out: Path) -> list:
    """``bias.png`` and ``surrogates.png``; returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    methods = [("pep", "bias", "beta"), ("nep", "bias", "beta"), ("cep", "bias", "beta"),
               ("pcpl", "coupled", "eta"), ("ncpl", "coupled", "eta")]
    fig, axes = plt.subplots(1, len(methods), figsize=(4 * len(methods), 3.6), sharey=False)
    for ax, (m, fam, pname) in zip(axes, methods):
        sub = df[(df.family == fam) & (df.check == "relative_error") & (df.method == m) & (df.value > 0)]
        for case, g in sub.groupby("case"):
            ax.loglog(g.param, g.value, "o-", ms=3, lw=1, label=case)
        if len(sub):
            p = np.array(sorted(sub.param.unique()))
            y0 = float(sub.value.median())
            p0 = float(np.exp(np.mean(np.log(p))))
            ax.loglog(p, y0 * (p / p0), "k--", lw=1, label="slope 1")
            ax.loglog(p, y0 * (p / p0) ** 2, "k:", lw=1, label="slope 2")
        ax.set_title(m.upper())
        ax.set_xlabel(pname + (" (S)" if pname == "beta" else ""))
        ax.set_ylabel("relative error")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    paths.append(out / "bias.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    b = df[df.family == "bounds"]
    cases = list(dict.fromkeys(b.case))[:6]
    if cases:
        fig, axes = plt.subplots(1, len(cases), figsize=(3.6 * len(cases), 3.4))
        axes = np.atleast_1d(axes)
        for ax, case in zip(axes, cases):
            g = b[b.case == case]
            C = float(g.reference.iloc[0])
            for check, style, label in (("lower_bound", "v-", "L_pos"), ("upper_bound", "^-", "L_neg"),
                                        ("centered_surrogate", "o-", "L_cen")):
                h = g[g.check == check]
                ax.semilogx(h.param, h.value, style, ms=3, lw=1, label=label)
            ax.axhline(C, color="k", lw=1, label="C")
            ax.set_title(case, fontsize=9)
            ax.set_xlabel("beta (S)")
        axes[0].set_ylabel("L_beta (V^2)")
        if axes[0].get_legend_handles_labels()[0]:
            axes[0].legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / "surrogates.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_report(df: pd.DataFrame, out, env: dict, title: str = "physgrad gradient verification") -> dict:
    """Write results.csv, summary.md, environment.json and figures into ``out``; return the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "results.csv", index=False, float_format="%.10g")
    (out / "summary.md").write_text(summary_markdown(df, env, title))
    (out / "environment.json").write_text(json.dumps(env, indent=2) + "\n")
    figs = figures(df, out)
    return {"results": out / "results.csv", "summary": out / "summary.md", "environment": out / "environment.json",
            "figures": figs}

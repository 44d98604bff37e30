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

SLOPE_METHODS = ("pep", "nep", "cep", "pcpl", "ncpl", "ep4", "fp", "hep")


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


READ_SLOPES = ("noisy_variance_order", "noisy_variance_sigma_order", "noisy_bias_order", "best_beta_order", "same_mean")


def read_noise_tables(df: pd.DataFrame) -> tuple:
    """``(slopes, best)`` of the ``read_noise`` family: every graded row (slopes and ``same_mean``: case,
    check, method, sigma, fitted, expected, status), and the best beta per case, method and sigma (read
    noise per phase)."""
    r = df[df.family == "read_noise"]
    slopes = r[r.check.isin(READ_SLOPES)][["case", "check", "method", "param", "value", "reference", "status"]]
    slopes = slopes.rename(columns={"param": "sigma", "value": "fitted", "reference": "expected"})
    b = r[r.check == "best_beta"]
    best = b.pivot_table(index=["case", "param"], columns="method", values="value", aggfunc="first")
    best.index = best.index.set_names(["case", "sigma"])
    return slopes, best


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
    read_slopes, read_best = read_noise_tables(df)
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
        "## EP under read noise", "",
        "Each phase relaxes at conductances read as g (1 + sigma xi) (`physgrad.devices.ReadThrough`), a "
        "realisation per phase or per example (held through the example's phases), common to every beta "
        "and sigma of a trial. Per example, EP measures one network: its estimate is that network's "
        "gradient up to EP's own bias (`noisy_bias_order`: 1 for P-EP, 2 for C-EP) and its variance does "
        "not depend on beta (slope 0). Per phase, the phases measure different networks: the variance "
        "grows as sigma^2 / beta^2 (slopes -2 in beta, 2 in sigma), and the beta of smallest mean-square "
        "error grows as sigma^(1/2) (P-EP) or sigma^(1/3) (C-EP). Both modes have the same mean (the "
        "estimate is linear in the phases' measurements; `same_mean`: largest |t| of their difference).", "",
        _md_table(read_slopes.set_index("case")) if len(read_slopes) else "(no case tagged read_noise)", "",
        "Best beta (S) by relative read noise sigma, read noise per phase:", "",
        _md_table(read_best) if len(read_best) else "(none)", "",
        "Figures: `bias.png` (log-log bias vs beta/eta with slope-1 and slope-2 guides), "
        "`surrogates.png` (L_beta around C)" + (", `read_noise.png` (rms error vs beta under read noise, "
                                                 "best beta vs sigma)" if len(read_slopes) else "") + ".", "",
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
               ("pcpl", "coupled", "eta"), ("ncpl", "coupled", "eta"), ("ep4", "contour", "beta"),
               ("fp", "contour", "beta"), ("hep", "contour", "beta")]
    fig, grid = plt.subplots(2, 4, figsize=(16, 7.2), sharey=False)
    axes = grid.ravel()
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
            if m in ("ep4", "hep"):
                ax.loglog(p, y0 * (p / p0) ** (4 if m == "ep4" else 3), "k-.", lw=1,
                          label="slope 4" if m == "ep4" else "slope 3")
        ax.set_title(m.upper() + (" (N = 3)" if m == "hep" else ""))
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


def read_noise_figure(df: pd.DataFrame, out: Path):
    """``read_noise.png``: per case, rms error of P-EP and C-EP vs beta (read noise per phase: solid,
    per example: dashed, one colour per sigma, best beta marked), and best beta vs sigma; None
    when no case ran the family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = df[df.family == "read_noise"].copy()
    if not len(r):
        return None
    r["sigma"] = r.detail.str.extract(r"sigma=([0-9.eE+-]+)", expand=False).astype(float)
    cases = list(dict.fromkeys(r.case))
    fig, axes = plt.subplots(len(cases), 3, figsize=(13, 3.6 * len(cases)), squeeze=False)
    for row_axes, case in zip(axes, cases):
        rc = r[r.case == case]
        sigmas = sorted(rc.sigma.dropna().unique())
        colours = plt.cm.viridis(np.linspace(0, 0.85, max(len(sigmas), 1)))
        for ax, code in zip(row_axes[:2], ("pep", "cep")):
            for s, col in zip(sigmas, colours):
                for mode, style in (("phase", "-"), ("example", "--")):
                    g = rc[(rc.check == "rms_error") & (rc.method == f"{code}-{mode}") & (rc.sigma == s)]
                    ax.loglog(g.param, g.value, style, color=col, lw=1.2, label=f"sigma={s:g} {mode}")
                best = rc[(rc.check == "best_beta") & (rc.method == code) & (rc.param == s) & (rc.status == "info")]
                for b in best.value:
                    ax.axvline(b, color=col, lw=0.8, ls=":")
            ax.set_title(f"{case}: {code.upper()}", fontsize=9)
            ax.set_xlabel("beta")
            ax.set_ylabel("rms error / |exact gradient|")
        row_axes[0].legend(fontsize=6)
        ax = row_axes[2]
        for code, marker in (("pep", "v"), ("cep", "o")):
            b = rc[(rc.check == "best_beta") & (rc.method == code) & (rc.status == "info")]
            ax.loglog(b.param, b.value, marker + "-", label=f"{code.upper()} best beta")
        b = rc[(rc.check == "best_beta") & (rc.status == "info")]
        if len(b):
            s = np.array(sigmas)
            s0, b0 = float(np.exp(np.mean(np.log(b.param)))), float(np.exp(np.mean(np.log(b.value))))
            ax.loglog(s, b0 * (s / s0) ** 0.5, "k--", lw=1, label="slope 1/2")
            ax.loglog(s, b0 * (s / s0) ** (1 / 3), "k:", lw=1, label="slope 1/3")
        ax.set_xlabel("read noise sigma (relative)")
        ax.set_ylabel("best beta")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "read_noise.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(df: pd.DataFrame, out, env: dict, title: str = "physgrad gradient verification") -> dict:
    """Write results.csv, summary.md, environment.json and figures into ``out``; return the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "results.csv", index=False, float_format="%.10g")
    (out / "summary.md").write_text(summary_markdown(df, env, title))
    (out / "environment.json").write_text(json.dumps(env, indent=2) + "\n")
    figs = figures(df, out)
    extra = read_noise_figure(df, out)
    if extra is not None:
        figs.append(extra)
    return {"results": out / "results.csv", "summary": out / "summary.md", "environment": out / "environment.json",
            "figures": figs}

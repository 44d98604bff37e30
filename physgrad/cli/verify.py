"""``physgrad verify [--quick] [--out DIR] [--overwrite] [--seed S]``: the gradient-verification suite and its report.

The report goes to a new folder, ``verify-quick-<UTC time>`` (or ``verify-full-...``) in the working
directory, unless ``--out`` names one; a non-empty ``--out`` is refused (exit 2) unless ``--overwrite``,
so the committed ``reports/verify-quick/`` is replaced only when asked. Exit code 1 when any check fails.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from physgrad.cli._args import int_at_least
from physgrad.types import PhysgradError


def register(sub) -> None:
    """Add ``verify`` to an ``add_subparsers()`` object."""
    p = sub.add_parser("verify", help="run the gradient-verification suite and write a report",
                       description="Check every estimator against exact gradients on a catalogue of circuits.")
    p.add_argument("--quick", action="store_true", help="the small case set (about a minute instead of several)")
    p.add_argument("--out", default=None,
                   help="report folder; default a new folder verify-quick-<UTC time> (or verify-full-...) in the "
                        "working directory; a non-empty folder is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out, replacing its report files (e.g. the committed "
                        "reports/verify-quick)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the finite-difference directions")
    p.set_defaults(func=run)


def report_folder(out, mode: str, overwrite: bool) -> Path:
    """The folder the report goes to: ``out`` (refused when it is a non-empty folder, unless
    ``overwrite``; refused when it is a file), or a new ``verify-<mode>-<UTC time>`` folder."""
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        path = Path(f"verify-{mode}-{stamp}")
        k = 1
        while path.exists():
            k += 1
            path = Path(f"verify-{mode}-{stamp}-{k}")
        return path
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise PhysgradError(f"--out {out}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise PhysgradError(f"--out {out}: folder is not empty; give --overwrite to replace its report, or another --out")
    return path


def run(args) -> int:
    """Run the suite, write the report, print a summary; 0 when every check passed, else 1."""
    from verification.report import bound_margins, counts, read_noise_tables, slope_table
    from verification.suite import verify

    out = report_folder(args.out, "quick" if args.quick else "full", args.overwrite)
    argv = ["physgrad", "verify"] + (["--quick"] if args.quick else []) + ["--out", str(out)]
    df, env, paths = verify(quick=args.quick, out=str(out), seed=args.seed, argv=argv,
                            progress=lambda name, s: print(f"  {name:<12} {s:6.2f} s", file=sys.stderr))
    tot = counts(df).sum()
    print(f"{df.case.nunique()} cases, {int(tot['pass'])} passed, {int(tot['fail'])} failed, "
          f"{int(tot['skip'])} skipped ({env['seconds']} s)")
    st = slope_table(df)
    for m, r in st.iterrows():
        print(f"  slope {m:<5} {r['mean']:.3f} (min {r['min']:.3f}, max {r['max']:.3f}; expected {r['expected']:.0f})")
    bm = bound_margins(df)
    print(f"  bound violations: {bm['violations']} of {bm['checked']}")
    read_slopes, _ = read_noise_tables(df)
    for _, r in read_slopes[read_slopes.check == "best_beta_order"].iterrows():
        print(f"  read noise per phase, {r['case']}: best beta ~ sigma^{r['fitted']:.3f} for {r['method']} "
              f"(expected {r['expected']:.3f})")
    print(f"report: {paths['summary'].parent}")
    return 0 if tot["fail"] == 0 else 1

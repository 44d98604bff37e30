"""``physgrad verify [--quick] [--out DIR] [--seed S]``: the gradient-verification suite and its report.

Exit code 1 when any check fails.
"""
from __future__ import annotations

import sys


def register(sub) -> None:
    """Add ``verify`` to an ``add_subparsers()`` object."""
    p = sub.add_parser("verify", help="run the gradient-verification suite and write a report",
                       description="Check every estimator against exact gradients on a catalogue of circuits.")
    p.add_argument("--quick", action="store_true", help="the small case set (seconds)")
    p.add_argument("--out", default=None, help="report folder (default reports/verify-quick or reports/verify-full)")
    p.add_argument("--seed", type=int, default=0, help="seed of the finite-difference directions")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run the suite, write the report, print a summary; 0 when every check passed, else 1."""
    from verification.report import bound_margins, counts, read_noise_tables, slope_table
    from verification.suite import verify

    argv = ["physgrad", "verify"] + (["--quick"] if args.quick else []) + (["--out", args.out] if args.out else [])
    df, env, paths = verify(quick=args.quick, out=args.out, seed=args.seed, argv=argv,
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

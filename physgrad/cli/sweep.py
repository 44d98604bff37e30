"""``physgrad sweep SPEC --out DIR [--workers N] [--scheduler ADDRESS] [--status]``: a grid of runs.

SPEC is a TOML file (see :mod:`physgrad.sweep.spec`); results, run folders and the summary over seeds
go to DIR (see :mod:`physgrad.sweep.runner`). Running the same command again skips the finished runs
and resumes or retries the others. Exit 0 when every run is ok; 1 when a run ended in error or
unfinished; 2 bad input (spec, a damaged results.csv, a foreign or locked --out, a bad or silent
--scheduler); 130 / 143 interrupted by SIGINT / SIGTERM (results so far kept; run the command again).
"""
from __future__ import annotations

from physgrad.sweep import load_spec, run_sweep
from physgrad.sweep.summary import configurations, summary_markdown


def register(sub) -> None:
    """Add ``sweep`` to an ``add_subparsers()`` object."""
    p = sub.add_parser("sweep", help="run a grid of training runs over seeds (Dask or a local pool)",
                       description=__doc__.splitlines()[0])
    p.add_argument("spec", help="sweep specification (TOML: task, seeds, [base], [grid])")
    p.add_argument("--out", required=True, help="sweep folder (results.csv, runs/, summary.md, curves.png)")
    p.add_argument("--workers", type=int, default=2, help="local worker processes, one thread each (default 2)")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (tcp://host:port)")
    p.add_argument("--engine", default="auto", choices=("auto", "dask", "pool"),
                   help="auto: Dask when installed, else a local process pool")
    p.add_argument("--status", action="store_true", help="print the table of what is done and exit")
    p.add_argument("--overwrite", action="store_true",
                   help="use an --out that is not empty and not a sweep folder; files physgrad did not write "
                        "are never replaced or deleted")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on a terminal)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run (or report on) the sweep; 0 when every run is ok."""
    spec = load_spec(args.spec)
    if args.status:
        from physgrad.sweep.runner import plan

        todo, done = plan(spec, args.out)
        print(f"{len(done)} of {len(done) + len(todo)} runs done")
        print(summary_markdown(configurations(args.out), title=f"{args.spec} in {args.out}"))
        return 0 if not todo else 1
    import sys
    from pathlib import Path

    try:
        rows = run_sweep(spec, args.out, workers=args.workers, scheduler=args.scheduler, engine=args.engine,
                         progress=False if args.no_progress else None, overwrite=args.overwrite, summary=True,
                         command=" ".join(["physgrad"] + sys.argv[1:]) if sys.argv else None)
    except KeyboardInterrupt:
        print(f"\naborted; {args.out}/results.csv keeps the runs recorded so far (run the command again)",
              file=sys.stderr)
        return 130
    bad = [r for r in rows if r["status"] != "ok"]
    print(f"{len(rows) - len(bad)} of {len(rows)} runs ok; summary: {Path(args.out) / 'summary.md'}")
    if rows.interrupted:
        print("interrupted: run the same command again to continue", file=sys.stderr)
        return 128 + int(rows.interrupted)
    return 0 if not bad else 1

"""Option fuzz: every option of every command, given hostile values, through the command line.

For each baseline (a valid, quick command line of ``solve``, ``grad``, ``fit``, ``train``, ``predict``,
``netlist`` and ``verify``) the parser of that command (``physgrad.cli.build_parser``) is walked: each
option that takes a value is given, one at a time, values drawn from :data:`HOSTILE` (empty, negative,
zero, NaN, infinities, overflowing and subnormal numbers, 400-digit integers, words, odd separators, a
device file, a missing folder) as ``--option=value`` (replacing the baseline's value, or added); each
flag is added alone. Every case runs ``python3 -m physgrad ...`` in a fresh folder, in a subprocess
with a CPU-time and memory limit, and is classified:

``ok`` (exit 0, no NaN or infinity in stdout or in any text file written), ``refused`` (exit 2 whose
message names the option, as ``--lr`` or argparse's ``argument --lr``, or the value given, as in
``missing column 'abc'``), ``not solved`` (exit 1 without a
traceback), ``traceback`` (a Python traceback on stderr), ``hang`` (killed at the CPU or wall limit),
``nan-output`` (exit 0 with NaN/Infinity written), ``unnamed`` (exit 2 whose message names neither the
option nor the value) or ``other`` (any other exit code). The bad classes are ``traceback, hang, nan-output, unnamed,
other``. Cases accepted (exit 0) with a non-finite or negative number are listed for review: some are
legitimate (``--seed 0``), some are a silent acceptance to fix.

Usage::

    python3 benchmarks/fuzz_options.py [--values 6] [--seed 0] [--cpu 40] [--mem-gb 4] [--workers 1]
                                       [--only fit,train] [--markdown reports/benchmarks/fuzz-options.md]

The small in-process form is ``tests/test_fuzz_options.py``.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from physgrad.cli import build_parser  # noqa: E402
from verification.circuits import NMOS_EDGES_CSV, NMOS_EDGES_DECK  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from fuzz_inputs import _limits  # noqa: E402  (one CPU/memory limit for the fuzzers' subprocesses)

EXAMPLES = ROOT / "physgrad" / "examples"
HOSTILE = ("", "-1", "0", "nan", "inf", "-inf", "1e308", "1e-320", "abc", "9" * 400, "1e400", "0x10", " 1",
           "1,2", "=", ":", "a=1:0", "*=nan:1", "-0.5", "3.5", "2147483648", "/dev/zero", "/nonexistent/x")
"""Values each option is given (a seeded sample of them per option; ``nan``, ``-1``, ``1e308`` and
``abc`` always)."""
ALWAYS = ("nan", "-1", "1e308", "abc")
BAD = ("traceback", "hang", "nan-output", "unnamed", "other")
SKIP = {"--help", "--version", "--data-dir", "--dest", "--mirror", "--scheduler"}
"""Options not fuzzed: help, and those naming a network location or a data folder (covered by the
data-path tests)."""

def fixtures(folder: Path) -> dict:
    """Write the baselines' input files into ``folder``; ``{name: path}``."""
    (folder / "nmos.cir").write_text(NMOS_EDGES_DECK)
    (folder / "nmos.csv").write_text(NMOS_EDGES_CSV)
    return {"iris": str(EXAMPLES / "iris" / "iris16.cir"), "iris_csv": str(EXAMPLES / "iris" / "iris.csv"),
            "rect": str(EXAMPLES / "rectifier.cir"), "nmos": str(folder / "nmos.cir"),
            "nmos_csv": str(folder / "nmos.csv")}


IRIS_FIT = ["fit", "{iris}", "--data", "{iris_csv}", "--inputs", "vsl,vsw,vpl,vpw", "--outputs", "o1,o2,o3",
            "--label-column", "species", "--epochs", "1", "--batch-size", "50", "--out", "{out}", "--no-progress"]
BASELINES = {
    "solve": ["solve", "{rect}", "--json"],
    "grad": ["grad", "{rect}", "--json"],
    "fit-iris": IRIS_FIT,
    "fit-nmos": ["fit", "{nmos}", "--data", "{nmos_csv}", "--inputs", "vin", "--outputs", "out", "--method", "exact",
                 "--trainable", "vg*", "--bounds", "vg*=0:3", "--epochs", "1", "--out", "{out}", "--no-progress"],
    "train-digits": ["train", "--preset", "crossbar-digits", "--epochs", "1", "--train-size", "60", "--out", "{out}",
                     "--no-progress"],
    "predict": ["predict", "{run}", "--data", "{iris_csv}"],
    "netlist": ["netlist", "layered", "--inputs", "4", "--outputs", "3", "--hidden", "5", "--out", "{out}.cir"],
}
"""Valid, quick command lines; ``{out}`` is a fresh folder per case, ``{run}`` a fit run made once."""


def subparser(argv: list) -> argparse.ArgumentParser:
    """The (sub)parser that owns the options of ``argv`` (``netlist layered`` is two levels down)."""
    parser = build_parser(argv[0])
    for token in argv:
        sub = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not sub or token not in sub[0].choices:
            break
        parser = sub[0].choices[token]
    return parser


def cases(name: str, argv: list, values: int, rng: random.Random) -> list:
    """``[(baseline, option, value, argv)]``: each option of the baseline's parser with ``values`` hostile
    values (flags: added once)."""
    out = []
    for action in subparser(argv)._actions:
        flags = [s for s in action.option_strings if s.startswith("--")]
        if not flags or flags[0] in SKIP:
            continue
        flag = flags[0]
        if action.nargs == 0:
            if flag not in argv:
                out.append((name, flag, None, argv + [flag]))
            continue
        pool = [v for v in HOSTILE if v not in ALWAYS]
        chosen = list(ALWAYS) + rng.sample(pool, max(0, min(len(pool), values - len(ALWAYS))))
        for value in chosen:
            out.append((name, flag, value, replace_option(argv, flag, value)))
    return out


def replace_option(argv: list, flag: str, value: str) -> list:
    """``argv`` with ``flag``'s value replaced by ``value`` (``--flag=value``), or the option added."""
    out, k = [], 0
    while k < len(argv):
        if argv[k] == flag:
            k += 2
            continue
        out.append(argv[k])
        k += 1
    return out + [f"{flag}={value}"]


NONFINITE = re.compile(rb"(?i)(?<![\w.\"/])-?(nan|inf|infinity)(?![\w\"/])")
"""A NaN or infinity written as a number (not inside a quoted string or a path)."""
PATH_OPTIONS = ("--out", "--plot")
"""Options whose value is a file or folder name (printed back on success)."""


def nonfinite_written(stdout: bytes, folder: Path) -> str:
    """The first place with a NaN or infinity: stdout or a text file under ``folder`` ('' if none)."""
    if NONFINITE.search(stdout):
        return "stdout"
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".csv", ".json", ".cir", ".md", ".txt"):
            if NONFINITE.search(path.read_bytes()[:1 << 20]):
                return str(path.relative_to(folder))
    return ""


def run_case(case, files: dict, cpu: int, mem_gb: float, wall: float) -> dict:
    """Run one case in a fresh folder; its classification row."""
    name, flag, value, argv = case
    with tempfile.TemporaryDirectory(prefix="fuzzopt-") as tmp:
        out = Path(tmp) / "out"
        args = [a.format(out=out, **files) for a in argv]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        try:
            r = subprocess.run([sys.executable, "-m", "physgrad", *args], cwd=tmp, capture_output=True,
                               timeout=wall, env=env, preexec_fn=_limits(cpu, mem_gb))
            rc, stdout, stderr = r.returncode, r.stdout, r.stderr.decode(errors="replace")
        except subprocess.TimeoutExpired as exc:
            rc, stdout, stderr = None, exc.stdout or b"", (exc.stderr or b"").decode(errors="replace")
        seconds = time.perf_counter() - t0
        if rc == 0 and flag in PATH_OPTIONS and value:  # the folder's own name is not a number written
            stdout = stdout.replace(value.encode(), b"")
        written = nonfinite_written(stdout, Path(tmp)) if rc == 0 else ""
    return {"baseline": name, "option": flag, "value": value, "rc": rc, "seconds": round(seconds, 2),
            "outcome": classify(rc, stderr, flag, written, value), "message": last_line(stderr), "nonfinite": written}


def classify(rc, stderr: str, flag: str, written: str, value=None) -> str:
    if "Traceback (most recent call last)" in stderr:
        return "traceback"
    if rc is None or rc in (-9, -24, 152, 137):
        return "hang"
    if rc == 0:
        return "nan-output" if written else "ok"
    if rc == 1:
        return "not solved"
    if rc == 2:
        return "refused" if names_option(stderr, flag) or names_value(stderr, value) else "unnamed"
    return "other"


def names_option(stderr: str, flag: str) -> bool:
    """Does the message name the option (``--lr``, or its words such as ``lr``/``learning rate``)?"""
    words = flag.lstrip("-")
    return flag in stderr or words in stderr or words.replace("-", " ") in stderr or words.replace("-", "_") in stderr


def names_value(stderr: str, value) -> bool:
    """Does the message name the value given (or, for a list, one of its items), quoted or as a file?"""
    if not value:
        return False
    if len(value) > 1 and value[:30] in stderr:
        return True
    return any(f"'{v}'" in stderr or f"{v}: " in stderr for v in value.split(",") if v)


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def suspicious(row: dict) -> bool:
    """An accepted case worth a look: a non-finite, negative, overflowing or subnormal number taken."""
    return row["outcome"] == "ok" and row["value"] in ("nan", "inf", "-inf", "-1", "-0.5", "1e308", "1e-320", "1e400",
                                                         "9" * 400)


def markdown(rows: list, args, seconds: float) -> str:
    counts = collections.Counter(r["outcome"] for r in rows)
    lines = ["# Option fuzz: every option of every command, hostile values", "",
             f"`python3 benchmarks/fuzz_options.py --values {args.values} --seed {args.seed} --cpu {args.cpu} "
             f"--mem-gb {args.mem_gb}`: {len(rows)} cases in {seconds:.0f} s wall.", "",
             "| outcome | cases |", "|---|---|"]
    lines += [f"| {k} | {counts[k]} |" for k in sorted(counts)]
    bad = [r for r in rows if r["outcome"] in BAD]
    lines += ["", f"Bad cases ({', '.join(BAD)}): {len(bad)}.", ""]
    for r in bad:
        lines.append(f"- `{r['baseline']}` `{r['option']}={r['value']!s:.40}`: {r['outcome']}: {r['message']}")
    acc = [r for r in rows if suspicious(r)]
    lines += ["", f"Accepted with a non-finite, negative, huge or subnormal number: {len(acc)} (reviewed by hand).", ""]
    for r in acc:
        lines.append(f"- `{r['baseline']}` `{r['option']}={r['value']!s:.40}`")
    per = collections.Counter(r["baseline"] for r in rows)
    lines += ["", "Cases per baseline: " + ", ".join(f"{k} {v}" for k, v in sorted(per.items())), ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=int, default=6, help="hostile values per option (>= 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpu", type=int, default=40, help="CPU seconds per case")
    ap.add_argument("--wall", type=float, default=90.0, help="wall seconds per case")
    ap.add_argument("--mem-gb", type=float, default=4.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated baselines")
    ap.add_argument("--json", default=None, help="write every row here")
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    chosen = args.only.split(",") if args.only else list(BASELINES)
    with tempfile.TemporaryDirectory(prefix="fuzzopt-fix-") as tmp:
        files = fixtures(Path(tmp))
        run_dir = Path(tmp) / "fitrun"
        base = [a.format(out=run_dir, **files) for a in IRIS_FIT]
        subprocess.run([sys.executable, "-m", "physgrad", *base], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        files["run"] = str(run_dir)
        todo = [c for name in chosen for c in cases(name, BASELINES[name], args.values, rng)]
        print(f"{len(todo)} cases", file=sys.stderr)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            rows = list(pool.map(lambda c: run_case(c, files, args.cpu, args.mem_gb, args.wall), todo))
        seconds = time.perf_counter() - t0
    for r in rows:
        if r["outcome"] in BAD:
            print(f"{r['outcome']}: {r['baseline']} {r['option']}={r['value']!s:.40}: {r['message']}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    text = markdown(rows, args, seconds)
    if args.markdown:
        Path(args.markdown).write_text(text)
    print(text)
    return 1 if any(r["outcome"] in BAD for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

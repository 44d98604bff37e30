"""Hostile-input fuzz, large form (issue 18 item 7): hostile netlists (include and subcircuit bombs,
``.func``/``.param`` chains, huge tokens, odd bytes, symlink loops, device files in ``.include``) and
hostile CSVs for ``fit``, each run through the command line (``python3 -m physgrad solve`` / ``fit``)
in a subprocess with a CPU-time and memory limit. The small seeded form is
``tests/test_fuzz_inputs.py``; the generators are :func:`verification.fuzz.hostile_decks` and
:func:`verification.fuzz.hostile_csvs`.

Each run is classified as ``ok`` (exit 0), ``refused`` (exit 2, the message naming the input file or a file beside it, such as the include where
a limit was crossed),
``not solved`` (exit 1 without a traceback), ``traceback`` (a Python traceback on stderr, whatever the
exit code), ``hang`` (killed at the CPU limit or past the wall limit), ``nan-json`` (NaN or Infinity in
``--json`` output), ``unnamed`` (exit 2 whose message does not name the input file) or ``other``; and
as ``expected`` or ``unexpected`` against the case's expected outcomes (an ``ok`` must also hold the
case's known node voltages).

Usage::

    python3 benchmarks/fuzz_inputs.py [--seeds 3] [--cpu 20] [--mem-gb 4] [--workers 2]
                                      [--pythonpath DIR] [--markdown reports/fuzz-inputs.md]

``--pythonpath`` picks the code under test (default: this checkout), so the same cases can be run
against an older tree.
"""
from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from verification import fuzz  # noqa: E402

BAD = ("traceback", "hang", "nan-json", "unnamed", "other")


def _limits(cpu: int, mem_gb: float):
    def apply():
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        nbytes = int(mem_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
        os.setsid()
    return apply


def command(case: fuzz.HostileCase, work: Path) -> list:
    """The ``python3 -m physgrad`` command line of ``case``."""
    if case.command == "solve":
        return [sys.executable, "-m", "physgrad", "solve", case.path, "--json"]
    net = work / "fit.cir"
    net.write_text(fuzz.FIT_NETLIST)
    cmd = [sys.executable, "-m", "physgrad", "fit", str(net), "--data", case.path, "--inputs", "v1", "--epochs", "1",
           "--out", str(work / "run"), "--no-progress"]
    return cmd + (["--label-column", case.label, "--loss", "levels", "--outputs", "out"] if case.label
                  else ["--outputs", "out"])


def classify(case: fuzz.HostileCase, rc, stdout: str, stderr: str, timed_out: bool) -> str:
    """The outcome class of one run (see the module docstring)."""
    if timed_out or rc in (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU):
        return "hang"
    if "Traceback (most recent call last)" in stderr:
        return "traceback"
    if re.search(r"\b(NaN|-?Infinity)\b", stdout):
        return "nan-json"
    if rc == 0:
        return "ok"
    if rc == 1:
        return "not solved"
    if rc == 2:
        return "refused" if (case.path in stderr or str(Path(case.path).parent) + "/" in stderr) else "unnamed"
    return "other"


def run_case(args) -> dict:
    case, pythonpath, cpu, mem_gb = args
    env = dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(command(case, Path(tmp)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace", env=env, cwd=tmp, preexec_fn=_limits(cpu, mem_gb))
        timed_out = False
        try:
            out, err = proc.communicate(timeout=4 * cpu + 30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            timed_out = True
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    kind = classify(case, proc.returncode, out, err, timed_out)
    expected = kind in case.expect
    if kind == "ok" and case.check:
        try:
            volts = json.loads(out)["voltages"]
            expected = expected and all(abs(volts[n] - v) <= 1e-9 for n, v in case.check.items())
        except (ValueError, KeyError):
            expected = False
    last = [ln for ln in err.strip().splitlines() if ln.strip()]
    return {"name": case.name, "command": case.command, "kind": kind, "expected": expected, "rc": proc.returncode,
            "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "wall": time.time() - t0, "message": (last[-1] if last else "")[:300]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="generator seeds 0..N-1 (each a fresh set of cases)")
    ap.add_argument("--cpu", type=int, default=20, help="CPU seconds per run (past it: a hang)")
    ap.add_argument("--mem-gb", type=float, default=4.0, help="address-space limit per run (GiB)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pythonpath", default=str(ROOT), help="code under test (default: this checkout)")
    ap.add_argument("--only", default=None, help="run only cases whose name contains this text")
    ap.add_argument("--markdown")
    ap.add_argument("--json", dest="json_out", help="write every run's record to this file")
    args = ap.parse_args(argv)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        for seed in range(args.seeds):
            cases += fuzz.hostile_decks(Path(tmp) / f"decks{seed}", seed)
            cases += fuzz.hostile_csvs(Path(tmp) / f"csvs{seed}", seed)
        if args.only:
            cases = [c for c in cases if args.only in c.name]
        with mp.Pool(args.workers) as pool:
            runs = pool.map(run_case, [(c, args.pythonpath, args.cpu, args.mem_gb) for c in cases], chunksize=1)
    lines = [f"hostile-input fuzz: {len(runs)} runs ({args.seeds} seed(s)), code {args.pythonpath}, "
             f"{args.cpu} s CPU / {args.mem_gb:g} GiB per run, {args.workers} workers, {time.time() - t0:.0f} s wall, "
             f"{sum(r['cpu'] for r in runs):.0f} s CPU (load average {os.getloadavg()[0]:.1f} at the end)", ""]
    for surface in ("solve", "fit"):
        sub = [r for r in runs if r["command"] == surface]
        counts = collections.Counter(r["kind"] for r in sub)
        lines.append(f"{surface}: {len(sub)} runs: " + ", ".join(f"{k} {v}" for k, v in counts.most_common())
                     + f"; unexpected outcomes {sum(not r['expected'] for r in sub)}")
    lines += ["", "| class | " + " | ".join(BAD) + " | unexpected |", "|---|" + "---|" * (len(BAD) + 1)]
    lines.append("| all | " + " | ".join(str(sum(r["kind"] == k for r in runs)) for k in BAD)
                 + f" | {sum(not r['expected'] for r in runs)} |")
    bad = [r for r in runs if r["kind"] in BAD or not r["expected"]]
    by_name = collections.OrderedDict()
    for r in bad:
        key = re.sub(r"\d+(\.\w+)$", r"N\1", r["name"])
        by_name.setdefault(key, []).append(r)
    if by_name:
        lines += ["", "Failing cases (first message of each):", ""]
    for key, rs in by_name.items():
        lines.append(f"- {key}: {len(rs)} run(s), {collections.Counter(r['kind'] for r in rs).most_common()}: "
                     f"{rs[0]['message'][:200]}")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(runs, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

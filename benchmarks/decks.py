"""Run public SPICE decks through ``physgrad`` and ngspice's ``.op``; count what runs, what agrees,
what is refused and why.

Usage::

    python3 benchmarks/decks.py DIR_OR_FILE... [--timeout 60] [--markdown reports/benchmarks/decks.md]

Each deck is read with :func:`physgrad.circuit.netlist.read_deck` and solved (``strict=False``) in a
worker process with a time limit; ngspice runs a copy of the deck (written beside it, so that relative
``.include`` paths resolve, and deleted afterwards) without its ``.control`` blocks and analysis
cards, with ``.op`` and tight options (``reltol=1e-9 vntol=1e-12 abstol=1e-18``; ngspice's defaults
when it does not converge with them). Agreement: every node both report within
``1e-6 V + 1e-8 |v|``.

Outcomes: ``agree`` (physgrad exit 0 and agreement), ``disagree``, ``solved, ngspice failed``,
``not solved`` (physgrad exit 1), ``refused`` (exit 2, grouped by the reason), ``crash`` (a Python
traceback: a bug), ``timeout``.
"""
from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import re
import signal
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXTENSIONS = (".cir", ".sp", ".spi", ".spice", ".ckt", ".net", ".deck")
IGNORED = re.compile(r"^\s*\.(tran|ac|dc|noise|tf|sens|disto|pz|four|meas|measure|print|plot|save|probe|width|"
                     r"pss|sp|op)\b", re.IGNORECASE)
TIGHT = ".options reltol=1e-9 vntol=1e-12 abstol=1e-18"

REASONS = [
    (r"is a (bipolar transistor|MOSFET|JFET|MESFET)", "transistors (Q/M/J/Z)"),
    (r"is a (voltage|current)-controlled|behavioural source", "controlled or behavioural sources (E/F/G/H/B)"),
    (r"switch|transmission line|RC line|coupled lines|XSPICE|OSDI", "switches, lines, XSPICE, OSDI"),
    (r"unknown element letter", "unknown element letter"),
    (r"unsupported directive|not allowed inside a subcircuit|conditional", "unsupported directive"),
    (r"diode model .*(unsupported|not supported|level)", "diode model parameters"),
    (r"physgrad simulates (the nominal )?27 C", "temperature other than 27 C"),
    (r"floating subnetwork", "floating nodes (e.g. only capacitors)"),
    (r"voltage sources form a loop", "loops of voltage sources / inductors"),
    (r"unknown (subcircuit|model|parameter)|uses model", "unknown subcircuit/model/parameter"),
    (r"no such file|is a directory|not a text", "missing or unreadable include"),
    (r"resistance|conductance", "resistor values (<= 0, semiconductor R)"),
    (r"forced forward|threshold", "ideal diode held at threshold"),
]


def _reason(message: str) -> str:
    for pattern, label in REASONS:
        if re.search(pattern, message, re.IGNORECASE):
            return label
    return "other: " + re.sub(r"^\S+:\d+: ", "", message)[:70]


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _physgrad(path: str, timeout: int):
    from physgrad.circuit.netlist import read_deck
    from physgrad.circuit.solve import solve
    from physgrad.types import NotSolvedError, PhysgradError

    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        deck = read_deck(path)
        sol = solve(deck.circuit, strict=False)
        if sol.status != "converged":
            return "not solved", sol.message, None
        return "solved", "", sol.voltage_dict()
    except _Timeout:
        return "timeout", f"more than {timeout} s", None
    except PhysgradError as exc:
        return "refused", str(exc), None
    except NotSolvedError as exc:
        return "not solved", str(exc), None
    except Exception:  # noqa: BLE001 - a traceback is what we count
        return "crash", traceback.format_exc(limit=3), None
    finally:
        signal.alarm(0)


def _ngspice_text(text: str) -> str:
    lines = text.splitlines()
    out, skip = [], False
    for i, line in enumerate(lines):
        low = line.strip().lower()
        if i == 0:
            out += [line, TIGHT]
            continue
        if low.startswith(".control"):
            skip = True
        if skip:
            if low.startswith(".endc"):
                skip = False
            continue
        if IGNORED.match(line):
            continue
        if low.startswith(".end") and not low.startswith(".ends") and not low.startswith(".endl"):
            break
        out.append(line)
    return "\n".join(out + [".op", ".end", ""])


def _ngspice(path: str, timeout: int):
    from physgrad.circuit.ngspice import NgspiceError, run_ngspice

    p = Path(path)
    try:
        text = p.read_text(errors="replace")
    except OSError as exc:
        return None, str(exc)
    copy = p.with_name(f".pg_ngspice_{os.getpid()}_{p.name}")
    for attempt in (text, None):
        body = _ngspice_text(text)
        if attempt is None:
            body = body.replace(TIGHT + "\n", "", 1)
        try:
            copy.write_text(body)
            res = run_ngspice(copy, timeout_s=timeout, strict=False)
            return res.voltages, ""
        except NgspiceError as exc:
            err = str(exc).splitlines()[0:3]
        except OSError as exc:
            return None, str(exc)
        finally:
            try:
                copy.unlink()
            except OSError:
                pass
    return None, " ".join(err)


def run_one(args):
    path, timeout = args
    status, message, v_pg = _physgrad(path, timeout)
    v_ng, ng_error = _ngspice(path, timeout)
    worst = None
    if v_pg is not None and v_ng is not None:
        common = [n for n in v_pg if n in v_ng]
        worst = max((abs(v_pg[n] - v_ng[n]) - 1e-8 * abs(v_ng[n]) for n in common), default=0.0)
        outcome = "agree" if worst <= 1e-6 else "disagree"
    elif v_pg is not None:
        outcome = "solved, ngspice failed"
    else:
        outcome = status
    return dict(path=path, outcome=outcome, message=message, worst=worst, ngspice_ok=v_ng is not None,
                ngspice_error=ng_error)


def collect(paths):
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS
                            and not f.name.startswith(".pg_ngspice_"))
        else:
            files.append(p)
    return [str(f) for f in files]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--timeout", type=int, default=60, help="seconds per deck and tool")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--markdown", help="write the summary here (markdown)")
    ap.add_argument("--json", help="write every deck's outcome here (JSON)")
    args = ap.parse_args(argv)
    files = collect(args.paths)
    with mp.Pool(args.workers) as pool:
        results = list(pool.imap_unordered(run_one, [(f, args.timeout) for f in files]))
    results.sort(key=lambda r: r["path"])
    counts = collections.Counter(r["outcome"] for r in results)
    reasons = collections.Counter(_reason(r["message"]) for r in results if r["outcome"] == "refused")
    ng_ok = sum(r["ngspice_ok"] for r in results)
    lines = [f"decks: {len(files)}; ngspice .op succeeded on {ng_ok}"]
    lines += [f"  {k}: {v}" for k, v in counts.most_common()]
    ok = [r for r in results if r["ngspice_ok"]]
    lines.append(f"of the {len(ok)} decks whose .op ngspice runs:")
    lines += [f"  {k}: {v}" for k, v in collections.Counter(r["outcome"] for r in ok).most_common()]
    lines.append("  refused among them, by reason:")
    lines += [f"  {v:4d}  {k}" for k, v in collections.Counter(
        _reason(r["message"]) for r in ok if r["outcome"] == "refused").most_common()]
    lines.append("refused, by reason:")
    lines += [f"  {v:4d}  {k}" for k, v in reasons.most_common()]
    for r in results:
        if r["outcome"] in ("disagree", "crash", "timeout", "not solved", "solved, ngspice failed"):
            lines.append(f"{r['outcome']}: {r['path']}: {r['message'].strip()[:300]}"
                         + (f" (worst {r['worst']:.3g} V)" if r["worst"] is not None else "")
                         + (f" [ngspice: {r['ngspice_error'][:150]}]" if not r["ngspice_ok"] else ""))
    text = "\n".join(lines)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.markdown:
        Path(args.markdown).write_text("```\n" + text + "\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

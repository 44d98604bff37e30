"""Seeded netlist fuzzing (issue 8): random valid circuits compared with ngspice, mutations of valid
netlists, special files. Used in a small form by ``tests/test_fuzz_netlists.py`` and in a large one by
``benchmarks/fuzz_netlists.py``.

Every case ends in one of: ``ok`` (solved), ``refused`` (a :class:`PhysgradError`: exit 2),
``not solved`` (exit 1), ``crash`` (any other exception: a traceback, a bug) or ``hang`` (past the
time limit). Random valid circuits are also solved by ngspice (``.options reltol=1e-12 vntol=1e-15
abstol=1e-22``); a node differing by more than ``DISAGREE_V`` (1e-6 V) is a disagreement, and it
is *physgrad's* unless physgrad's own answer passes the KKT certificate (per-node relative KCL
1e-9) while ngspice's answer, evaluated with the same law, does not.
"""
from __future__ import annotations

import hashlib
import os
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from physgrad.circuit.elements import (Circuit, CurrentSource, DiodeModel, Resistor, ShockleyDiode,
                                       VoltageSource)
from physgrad.types import NotSolvedError, PhysgradError

DISAGREE_V = 1e-6
TIGHT = ".options reltol=1e-12 vntol=1e-15 abstol=1e-22"


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


@dataclass
class Outcome:
    kind: str           # ok, refused, not solved, crash, hang
    detail: str = ""
    voltages: Optional[dict] = None


def run_text(text: str, filename: str = "fuzz.cir", timeout_s: int = 20) -> Outcome:
    """Read and solve netlist ``text`` in this process (a limit of ``timeout_s`` CPU seconds of this
    process, ``ITIMER_PROF``, so a loaded machine does not turn a slow solve into a hang; main thread
    only)."""
    from physgrad.circuit.netlist import read_deck_text
    from physgrad.circuit.solve import solve

    return _guard(lambda: solve(read_deck_text(text, filename).circuit, strict=False), timeout_s)


def run_path(path, timeout_s: int = 20) -> Outcome:
    from physgrad.circuit.netlist import read_deck
    from physgrad.circuit.solve import solve

    return _guard(lambda: solve(read_deck(path).circuit, strict=False), timeout_s)


def run_call(fn, timeout_s: int = 20) -> Outcome:
    """Run ``fn()`` under the CPU-time guard of :func:`run_text`: ``ok`` when it returns ``None`` or a
    converged solution, ``refused`` for a :class:`PhysgradError`, ``crash`` for any other exception,
    ``hang`` past ``timeout_s`` CPU seconds."""
    return _guard(fn, timeout_s)


def _guard(fn, timeout_s: int) -> Outcome:
    old = signal.signal(signal.SIGPROF, _alarm)
    signal.setitimer(signal.ITIMER_PROF, timeout_s)
    try:
        sol = fn()
        if sol is None:
            return Outcome("ok")
        if sol.status != "converged":
            return Outcome("not solved", sol.message)
        return Outcome("ok", "", sol.voltage_dict())
    except Hang:
        return Outcome("hang", f"more than {timeout_s} s of CPU time")
    except PhysgradError as exc:
        return Outcome("refused", str(exc))
    except NotSolvedError as exc:
        return Outcome("not solved", str(exc))
    except Exception:  # noqa: BLE001 - counted as a crash
        return Outcome("crash", traceback.format_exc(limit=4))
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


# --- random valid circuits --------------------------------------------------------------------

def random_diode_circuit(seed: int) -> Circuit:
    """A random connected circuit of resistors, sources and Shockley diodes, with the hard cases of
    issue 8 mixed in: nodes held only by diodes, diodes far in reverse (below -3 N vt), sources up
    to 20 V, series resistances down to 0.05 ohm, IS from 1e-16 to 1e-9 A and N from 1 to 2."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 12))
    nodes = [f"n{i}" for i in range(1, n + 1)]
    els = [VoltageSource("v1", nodes[0], "0", float(rng.uniform(-20, 20)))]
    models = [DiodeModel(f"dm{k}", IS=float(10 ** rng.uniform(-16, -9)), N=float(rng.uniform(1, 2)))
              for k in range(3)]
    k = 0
    for i in range(1, n):  # a spanning tree of resistors
        j = int(rng.integers(0, i))
        r = float(10 ** rng.uniform(-1.3, 5))
        els.append(Resistor(f"r{k}", nodes[i], nodes[j], 1.0 / r))
        k += 1
    els.append(Resistor(f"r{k}", nodes[-1], "0", 1.0 / float(10 ** rng.uniform(1, 5))))
    k += 1
    for d in range(int(rng.integers(1, 6))):
        a, b = rng.choice(nodes + ["0"], 2, replace=False)
        els.append(ShockleyDiode(f"d{d}", str(a), str(b), models[int(rng.integers(0, 3))]))
    for h in range(int(rng.integers(0, 3))):  # nodes held only by diodes (finding 1)
        a, b = rng.choice(nodes + ["0"], 2, replace=False)
        m1, m2 = models[int(rng.integers(0, 3))], models[int(rng.integers(0, 3))]
        els.append(ShockleyDiode(f"dh{h}a", f"h{h}", str(a), m1))
        els.append(ShockleyDiode(f"dh{h}b", f"h{h}", str(b), m2))
    if rng.random() < 0.5:
        els.append(VoltageSource("v2", nodes[int(rng.integers(1, n))], "0", float(rng.uniform(-5, 5))))
    if rng.random() < 0.5:
        i = int(rng.integers(1, n))
        els.append(CurrentSource("i1", "0", nodes[i], float(rng.uniform(-1e-3, 1e-3))))
    try:
        c = Circuit(tuple(els), f"fuzz {seed}")
        from physgrad.circuit.reduction import build_problem

        build_problem(c)
        return c
    except PhysgradError:  # e.g. v2 closing a loop with v1: drop it
        return Circuit(tuple(e for e in els if e.name != "v2"), f"fuzz {seed}")


def compare_with_ngspice(circuit: Circuit, timeout_s: int = 30) -> dict:
    """Solve ``circuit`` with physgrad and ngspice; ``{"kind": ..., "worst": V, "physgrads": bool}``."""
    from physgrad.circuit.netlist import write_netlist
    from physgrad.circuit.ngspice import NgspiceError, run_ngspice
    from physgrad.circuit.reduction import build_problem
    from physgrad.circuit.solution import certify

    text = write_netlist(circuit)
    out = run_text(text, timeout_s=timeout_s)
    if out.kind != "ok":
        return {"kind": out.kind, "detail": out.detail, "worst": None, "physgrads": out.kind in ("crash", "hang", "not solved")}
    tight = text.replace(".options reltol=1e-6 vntol=1e-9 abstol=1e-15", TIGHT)
    try:
        ng = run_ngspice(tight, timeout_s=timeout_s, strict=False)
    except NgspiceError:
        try:
            ng = run_ngspice(text, timeout_s=timeout_s, strict=False)
        except NgspiceError as exc:
            return {"kind": "ngspice failed", "detail": str(exc)[:200], "worst": None, "physgrads": False}
    v_pg = out.voltages
    worst = max(abs(v_pg[n] - ng.voltages[n]) for n in v_pg if n in ng.voltages)
    if worst <= DISAGREE_V:
        return {"kind": "agree", "worst": worst, "physgrads": False}
    # whose disagreement? certify both answers under physgrad's law (the same as ngspice's)
    pb = build_problem(circuit)
    col = pb.columns
    u_ng = np.zeros(pb.n_u)
    for node, j in zip(circuit.nodes, col[:-1]):
        if j >= 0:
            u_ng[j] = ng.voltages.get(node, np.nan) - pb.c[circuit.index_of_node(node)]
    from physgrad.circuit.solve import solve

    sol = solve(circuit, strict=False)
    mine = certify(pb, np.asarray(sol.info["u"], float), np.zeros(pb.D.shape[0]))
    theirs = certify(pb, u_ng, np.zeros(pb.D.shape[0]))
    return {"kind": "disagree", "worst": worst, "physgrads": not (mine.passed and not theirs.passed),
            "detail": f"physgrad cert ratio {mine.kcl_ratio:.2g}, ngspice's answer ratio {theirs.kcl_ratio:.2g}"}


# --- mutations and special files ---------------------------------------------------------------

INSERTS = ["{", "}", "(", ")", "=", "'", ".subckt s a b", ".ends", ".include nothere.inc", ".include .",
           ".param a={a}", ".param p=1/0", "1e999", "-1", "0", "nan", "inf", "x1 a b s", "\u212a", "\x00", "+",
           "*", ";", ".end", ".control", ".endc", ".lib x y", "{1/0}", "{p*2}", "SIN(", "PULSE(0 1", "dc",
           "1meg", "1e-320", "1e308", ".model dm D(IS=-1)", ".model dm D(N=0)", "d9 a 0 nomodel",
           "k1 l1 l2 0.5", "l1 a b 1u", "c1 a b", "e1 a 0 b 0 2", "q1 a b c npn", ".temp 50", "\ufeff", "\t",
           "\r", "\u00e9", "$ comment", "// c", "x" * 300, "(" * 100, ".func f(x) {f(x)}", "{f(1)}"]


def mutate(text: str, rng: np.random.Generator) -> str:
    """One to three random edits of ``text``: delete/insert characters or tokens, duplicate, drop
    or swap lines, truncate, replace a number by an extreme one."""
    for _ in range(int(rng.integers(1, 4))):
        lines = text.split("\n")
        op = int(rng.integers(0, 9))
        if op == 0 and text:
            i = int(rng.integers(0, len(text)))
            text = text[:i] + text[i + 1:]
        elif op == 1:
            i = int(rng.integers(0, len(text) + 1))
            text = text[:i] + str(rng.choice(INSERTS)) + text[i:]
        elif op == 2 and len(lines) > 1:
            i = int(rng.integers(1, len(lines)))
            lines.insert(i, lines[i])
            text = "\n".join(lines)
        elif op == 3 and len(lines) > 1:
            del lines[int(rng.integers(1, len(lines)))]
            text = "\n".join(lines)
        elif op == 4 and len(lines) > 2:
            i, j = rng.choice(np.arange(1, len(lines)), 2, replace=False)
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif op == 5:
            text = text[: int(rng.integers(0, len(text) + 1))]
        elif op == 6:
            i = int(rng.integers(0, len(lines)))
            lines.insert(i, str(rng.choice(INSERTS)))
            text = "\n".join(lines)
        elif op == 7:
            import re

            nums = list(re.finditer(r"\d+\.?\d*(e[+-]?\d+)?", text))
            if nums:
                m = nums[int(rng.integers(0, len(nums)))]
                text = text[: m.start()] + str(rng.choice(["1e999", "0", "1e-320", "1e308", "-0", "9" * 400,
                                                            "1e-300", "1meg1k"])) + text[m.end():]
        else:
            text = text.upper() if rng.random() < 0.5 else text.replace("\n", "\r\n")
    return text


def special_files(folder: Path) -> list:
    """Paths of special inputs under ``folder``: empty, binary, a directory, huge numbers, unicode
    names, a very long line, deep nesting, a subcircuit bomb, an include cycle, latin-1 bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "empty.cir": b"",
        "title_only.cir": b"just a title\n",
        "binary.cir": bytes(range(256)) * 16,
        "nul.cir": b"t\nr1 a 0 1\x00\n",
        "latin1.cir": "t\nv1 caf\u00e9 0 1\nr1 caf\u00e9 0 1k\n".encode("latin-1"),
        "huge.cir": b"t\nv1 a 0 1e308\nr1 a 0 1e-308\n",
        "overflow.cir": b"t\nv1 a 0 1e999\nr1 a 0 1\n",
        "denormal.cir": b"t\nv1 a 0 1e-320\nr1 a 0 1e300\n",
        "unicode.cir": "t\nv1 \u212a 0 1\nr\u00e9 \u212a k 1k\nr2 k 0 1k\nv\u4e2d \u4e2d 0 2\nr3 \u4e2d 0 1\n".encode(),
        "longline.cir": b"t\nv1 a 0 1\nr1 a 0 " + b"9" * 100000 + b"\n",
        "deep.cir": b"t\nv1 a 0 {" + b"(" * 5000 + b"1" + b")" * 5000 + b"}\nr1 a 0 1\n",
        "bomb.cir": ("bomb\n.subckt s0 a b\nr1 a b 1k\n.ends\n" + "".join(
            f".subckt s{k} a b\n" + "".join(f"x{j} a b s{k - 1}\n" for j in range(10)) + ".ends\n"
            for k in range(1, 12)) + "v1 a 0 1\nx1 a 0 s11\n").encode(),
        "cycle_a.cir": b"t\nv1 a 0 1\nr1 a 0 1\n.include cycle_b.inc\n",
        "cycle_b.inc": b".include cycle_a.cir\n",
        "self_subckt.cir": b"t\n.subckt s a\nx1 a s\n.ends\nv1 a 0 1\nx1 a s\n",
        "param_cycle.cir": b"t\n.param a={b+1} b={a*2}\nv1 x 0 {a}\nr1 x 0 1\n",
        "crlf_bom.cir": b"\xef\xbb\xbft\r\nV1 A 0 1\r\nR1 A 0 1K\r\n",
        "tabs.cir": b"t\n\tv1\ta\t0\t1\n\tr1\ta\t0\t1k\n",
        "many_nodes.cir": ("t\nv1 n0 0 1\n" + "".join(f"r{i} n{i} n{i + 1} 1\n" for i in range(20000))
                           + "rz n20000 0 1\n").encode(),
    }
    paths = []
    for name, data in files.items():
        p = folder / name
        p.write_bytes(data)
        if not name.endswith(".inc"):
            paths.append(p)
    d = folder / "a_directory.cir"
    d.mkdir(exist_ok=True)
    paths.append(d)
    paths.append(folder / "does_not_exist.cir")
    return paths


def seed_netlists() -> list:
    """Valid netlists that mutations start from: the deck features of issue 8 and random circuits."""
    from physgrad.circuit.netlist import write_netlist

    decks = [
        "deck\n.param vs=5 r={1k*2}\n.subckt st in out params: k=1\nr1 in out {k*1k}\nd1 out 0 dm\nc1 out 0 1n\n"
        ".ends\nv1 a 0 SIN(0 1 1k) DC {vs}\nx1 a b st k=2\nr2 b 0 {r}\nl1 b c 1u\nr3 c 0 1k\n"
        ".model dm D(IS=1e-14 N=1.5 RS=1 CJO=1p)\n.tran 1n 1u\n.control\nrun\n.endc\n.end\n",
        "rect\nV1 ac 0 DC 17\nD1 ac a DM\nrs a out 0.05\nRload out 0 1k\n.model DM D(IS=1e-14 N=1.7)\n.op\n.end\n",
        "t\nv1 a 0 1\nr1 a b 1k\nr2 b 0 10\nd1 x b dm\nd2 x 0 dm\n.model dm D(IS=1e-14 N=1)\n.end\n",
        "t\nv1 in 0 10\nr1 in out 1k\nd1 out 0 di\n.model di D(ideal=1 vth=0.3)\n.target out 0.2\n",
    ]
    return decks + [write_netlist(random_diode_circuit(s)) for s in range(4)]


# --- hostile inputs (issue 18): the reader's limits and the CSV reader ------------------------------

@dataclass(frozen=True)
class HostileCase:
    """One hostile input: ``command`` is ``"solve"`` (``path`` a netlist) or ``"fit"`` (``path`` a CSV
    for :data:`FIT_NETLIST`, read with ``label`` as the class column when given); ``expect`` the
    outcomes that are right (a subset of ``ok``, ``refused``, ``not solved``); ``check`` an optional
    ``{node: voltage}`` that an ``ok`` answer must hold (to 1e-9 V)."""

    name: str
    command: str
    path: str
    expect: frozenset
    label: Optional[str] = None
    check: Optional[dict] = None


OK, REFUSED, EITHER = frozenset({"ok"}), frozenset({"refused"}), frozenset({"ok", "refused"})
FIT_NETLIST = "fit target\nv1 in 0 1\nr1 in out 1k\nr2 out 0 1k\n.end\n"


def _bomb_includes(folder: Path, depth: int) -> str:
    for k in range(depth):
        nxt = f"bomb{k + 1}.inc" if k + 1 < depth else "leaf.inc"
        (folder / f"bomb{k}.inc").write_text(f".include {nxt}\n.include {nxt}\n")
    (folder / "leaf.inc").write_text("* leaf\n.param leafp=1\n")
    return "include bomb\nv1 a 0 1\nr1 a 0 1k\n.include bomb0.inc\n.end\n"


def _subckt_bomb(levels: int, fanout: int, leaf: str) -> str:
    out = ["subcircuit bomb", f".subckt s0 a b\n{leaf}.ends"]
    for k in range(1, levels + 1):
        out.append(f".subckt s{k} a b\n" + "".join(f"x{j} a b s{k - 1}\n" for j in range(fanout)) + ".ends")
    out += ["v1 a 0 1", "r1 a 0 1k", f"x1 a 0 s{levels}", ".end", ""]
    return "\n".join(out)


def _nested_subckts(depth: int) -> str:
    out = ["nested subcircuits", ".subckt s1 a\nr1 a 0 1k\n.ends"]
    for k in range(2, depth + 1):
        out.append(f".subckt s{k} a\nr1 a 0 1k\nx1 a s{k - 1}\n.ends")
    out += ["v1 a 0 1", f"x1 a s{depth}", ".end", ""]
    return "\n".join(out)


def _func_chain(levels: int, distinct: bool) -> str:
    out = ["func chain", ".func f0(x) {x+1}"]
    for k in range(1, levels + 1):
        body = f"f{k - 1}(x*1.7)+f{k - 1}(x+0.31)" if distinct else f"f{k - 1}(x)+f{k - 1}(x)"
        out.append(f".func f{k}(x) {{{body}}}")
    out += ["v1 a 0 1", f"r1 a 0 {{f{levels}(1)}}", ".end", ""]
    return "\n".join(out)


def _param_chain(n: int, reverse: bool, double: bool = False) -> str:
    defs = [".param p0=1"] + [f".param p{k}={{p{k - 1}+p{k - 1}}}" if double else f".param p{k}={{p{k - 1}+1}}"
                              for k in range(1, n + 1)]
    if reverse:
        defs = defs[::-1]
    return "\n".join(["param chain"] + defs + ["v1 a 0 1", f"r1 a 0 {{p{n}}}", ".end", ""])


def hostile_decks(folder: Path, seed: int = 0, scale: float = 1.0) -> list:
    """Hostile netlists under ``folder`` (sizes drawn from ``seed``; ``scale`` < 1 shrinks the big
    ones for a quick run): include bombs and fan-outs, subcircuit bombs whose leaves hold no element,
    deep nesting, ``.func`` and ``.param`` chains, overflowing expressions, huge tokens, odd bytes,
    symlink loops, device files, FIFOs and folders in ``.include`` and as the netlist itself, and node
    ``0`` used as a subcircuit pin. Returns :class:`HostileCase` s."""
    import os

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cases = []

    def deck(name, text, expect, check=None):
        p = folder / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        cases.append(HostileCase(name, "solve", str(p), expect, check=check))

    deck("include_bomb.cir", _bomb_includes(folder, int(rng.integers(24, 41))), REFUSED)
    (folder / "small.inc").write_text(".param small=1\n")
    deck("include_fanout.cir", "fan-out\nv1 a 0 1\nr1 a 0 1k\n" + ".include small.inc\n" * int(rng.integers(12000, 20000)),
         REFUSED)
    deck("subckt_bomb_empty.cir", _subckt_bomb(int(rng.integers(10, 15)), 10, ""), REFUSED)
    deck("subckt_bomb_capacitor.cir", _subckt_bomb(int(rng.integers(10, 15)), 10, "c1 a b 1p\n"), REFUSED)
    deck("subckt_bomb_param.cir", _subckt_bomb(int(rng.integers(10, 15)), 10, ".param q=1\n"), REFUSED)
    deck("nested_1000.cir", _nested_subckts(1000), OK, {"a": 1.0})
    deck("nested_deep.cir", _nested_subckts(max(1001, int(rng.integers(2000, 6000) * scale))), EITHER)
    deck("func_chain_twice.cir", _func_chain(int(rng.integers(12, 40)), False), EITHER)
    deck("func_chain_distinct.cir", _func_chain(int(rng.integers(17, 21)), True), EITHER)
    n = int(rng.integers(10000, 20001) * scale)
    deck("param_chain.cir", _param_chain(n, False), OK, {"a": 1.0})
    deck("param_chain_reverse.cir", _param_chain(n, True), OK, {"a": 1.0})
    deck("param_chain_overflow.cir", _param_chain(int(rng.integers(1030, 1200)), False, double=True), REFUSED)
    overflows = ["{1e200*1e200}", "{(1e308*10) % 2}", "{exp(1e5)}", "{1e308*10 - 1e308*10}", "{atan(1e308*10)+1}",
                 "{int(1e308*10)}", "{nint(1e308*10)}", "{floor(1e308*10)}", "{(-1e308*10)^0.5}", "{1/(1e-308/1e300)}",
                 "{(1e308*10) ? 1 : 2}", "{max(1e308*10, 1)}", "{sgn(1e308*10)}", "{exp(709)*3}",
                 "{pow(10, 400)}", "{pwr(-10, 400)}", "{10**400}", "{1e308*10 > 1}"]
    for k, expr in enumerate(overflows):
        deck(f"overflow{k}.cir", f"overflow\nv1 a 0 1\nr1 a 0 {expr}\n.end\n", REFUSED)
    big = int(rng.integers(200_000, 400_000) * scale)
    deck("huge_node.cir", f"huge node\nv1 {'n' * big} 0 1\nr1 {'n' * big} 0 1k\n.end\n", EITHER)
    deck("huge_number.cir", f"huge number\nv1 a 0 1\nr1 a 0 1{'0' * big}\n.end\n", REFUSED)
    deck("huge_digits.cir", f"many digits\nv1 a 0 1\nr1 a 0 0.{'0' * big}1\n.end\n", EITHER)
    deck("huge_expression.cir", "huge expression\nv1 a 0 1\nr1 a 0 {" + "1+" * big + "1}\n.end\n", REFUSED)
    deck("huge_continuation.cir", "continuations\nv1 a 0 1\nr1 a 0\n" + "+ \n" * big + "+ 1k\n.end\n", EITHER)
    for k in range(4):
        deck(f"random_bytes{k}.cir", bytes(rng.integers(0, 256, int(rng.integers(10, 5000)), dtype=np.uint8)), EITHER)
        good = bytearray(b"odd bytes\nv1 a 0 1\nr1 a b 1k\nr2 b 0 1k\n.end\n")
        for _ in range(3):
            good.insert(int(rng.integers(10, len(good))), int(rng.choice([0x85, 0xff, 0x80, 0x0b, 0x0c, 0x1c, 0xc0])))
        deck(f"odd_bytes{k}.cir", bytes(good), EITHER)
    deck("line_separators.cir", "seps\nv1 a 0 1\u2028r1 a 0 1k\u2029r2 a 0 2k\x85\nr3 a 0 3k\n.end\n", EITHER)
    deck("cr_only.cir", b"cr\rv1 a 0 1\rr1 a 0 1k\r.end\r", OK, {"a": 1.0})
    # symlink loops, devices, FIFOs and folders
    for a, b in (("loop_a.inc", "loop_b.inc"), ("loop_b.inc", "loop_a.inc"), ("self.inc", "self.inc")):
        if not os.path.lexists(folder / a):
            os.symlink(b, folder / a)
    deck("include_symlink_loop.cir", "loop\nv1 a 0 1\nr1 a 0 1k\n.include loop_a.inc\n.end\n", REFUSED)
    deck("include_self_link.cir", "self\nv1 a 0 1\nr1 a 0 1k\n.include self.inc\n.end\n", REFUSED)
    fifo = folder / "fifo.inc"
    if not fifo.exists():
        os.mkfifo(fifo)
    (folder / "a_folder.inc").mkdir(exist_ok=True)
    for name, target in (("dev_zero", "/dev/zero"), ("dev_urandom", "/dev/urandom"), ("dev_null", "/dev/null"),
                         ("fifo", str(fifo)), ("folder", str(folder / "a_folder.inc")), ("proc_mem", "/proc/self/mem"),
                         ("lib_dev_zero", "/dev/zero")):
        head = f".lib {target} sec" if name.startswith("lib_") else f".include {target}"
        deck(f"include_{name}.cir", f"device\nv1 a 0 1\nr1 a 0 1k\n{head}\n.end\n", REFUSED)
    sparse = folder / "sparse.inc"
    with open(sparse, "wb") as fh:
        fh.truncate(3 << 30)  # a 3 GiB file of zeros that holds no disk space
    deck("include_sparse_3gib.cir", "sparse\nv1 a 0 1\nr1 a 0 1k\n.include sparse.inc\n.end\n", REFUSED)
    for target in ("/dev/zero", str(fifo), str(folder / "a_folder.inc")):
        cases.append(HostileCase(f"netlist_is_{Path(target).name}", "solve", target, REFUSED))
    link = folder / "netlist_link_loop.cir"
    if not os.path.lexists(link):
        os.symlink("loop_a.inc", link)
    cases.append(HostileCase("netlist_symlink_loop", "solve", str(link), REFUSED))
    # node 0 is the global ground inside a subcircuit, also as a pin (ngspice: b = 0.5 V)
    deck("subckt_pin_0.cir", "pin 0\n.subckt s a 0\nr1 a 0 1k\nr2 a gnd 1k\n.ends\nv1 in 0 1\nr0 in b 1k\nx1 in b s\n"
         "rb b 0 1k\n.end\n", OK, {"b": 0.5, "in": 1.0})
    return cases


def hostile_csvs(folder: Path, seed: int = 0, scale: float = 1.0) -> list:
    """Hostile CSV files for ``physgrad fit`` on :data:`FIT_NETLIST` (columns ``v1``, ``out``, label
    ``y``): a field over the size limit, one huge integer label, too many columns, non-UTF-8 and NUL
    bytes, unterminated quotes, non-finite cells, random bytes, a folder, ``/dev/zero`` and a FIFO as
    the CSV. Returns :class:`HostileCase` s (``command="fit"``)."""
    import os

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    good_rows = "".join(f"{x:.3f},{x / 2:.4f},{k % 2}\n" for k, x in enumerate(rng.uniform(0, 1, 16)))

    def csv(name, data, expect, label=None):
        p = folder / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        cases.append(HostileCase(name, "fit", str(p), expect, label=label))

    csv("good.csv", "v1,out,y\n" + good_rows, OK)
    csv("good_labels.csv", "v1,out,y\n" + good_rows, OK, label="y")
    big = int(rng.integers(140_000, 400_000) * scale)
    csv("field_over_limit.csv", "v1,out,y\n" + good_rows + f"1,{'9' * big},0\n", REFUSED)
    csv("field_quoted_over_limit.csv", "v1,out,y\n" + good_rows + f'1,"{"x" * big}",0\n', REFUSED)
    csv("unterminated_quote.csv", "v1,out,y\n" + good_rows + '1,"0.5,0\n' + good_rows, REFUSED)
    csv("huge_label.csv", "v1,out,y\n" + good_rows + f"0.5,0.25,{int(rng.integers(10 ** 8, 10 ** 9))}\n", REFUSED,
        label="y")
    csv("huge_label_digits.csv", "v1,out,y\n" + good_rows + f"0.5,0.25,{'9' * 4000}\n", REFUSED, label="y")
    csv("many_labels.csv", "v1,out,y\n" + "".join(f"0.5,0.25,c{k}\n" for k in range(int(20000 * max(scale, 0.6)))),
        REFUSED, label="y")
    ncol = int(rng.integers(120_000, 200_000) * scale) + 20_000
    csv("many_columns.csv", "v1,out," + ",".join(f"c{k}" for k in range(ncol)) + "\n", REFUSED)
    bad = bytearray(("v1,out,y\n" + good_rows).encode())
    bad[len(bad) // 2] = 0xff
    csv("non_utf8.csv", bytes(bad), REFUSED)
    csv("latin1_header.csv", "v1,out,y\u00e9\n".encode("latin-1") + good_rows.encode(), REFUSED)
    csv("nul_bytes.csv", ("v1,out,y\n" + good_rows).replace("\n", "\x00\n", 3).encode(), REFUSED)
    csv("nonfinite.csv", "v1,out,y\n" + good_rows + "nan,inf,0\n", REFUSED)
    csv("huge_number.csv", "v1,out,y\n" + good_rows + f"1{'0' * 400},0.5,0\n", REFUSED)
    csv("header_only.csv", "v1,out,y\n", REFUSED)
    csv("empty.csv", "", REFUSED)
    csv("ragged.csv", "v1,out,y\n" + good_rows + "1,2\n", REFUSED)
    csv("cr_only.csv", ("v1,out,y\n" + good_rows).replace("\n", "\r"), OK)
    csv("bom_in_middle.csv", "v1,out,y\n" + good_rows + "\ufeff0.5,0.25,1\n", REFUSED)
    for k in range(3):
        csv(f"random_bytes{k}.csv", bytes(rng.integers(0, 256, int(rng.integers(10, 4000)), dtype=np.uint8)),
            REFUSED)
    fifo = folder / "fifo.csv"
    if not fifo.exists():
        os.mkfifo(fifo)
    (folder / "a_folder.csv").mkdir(exist_ok=True)
    for target in ("/dev/zero", str(fifo), str(folder / "a_folder.csv"), "/dev/null"):
        cases.append(HostileCase(f"csv_is_{Path(target).name}", "fit", target, REFUSED))
    return cases


def snapshot(folder) -> dict:
    """The fingerprint of a folder: ``{relative path: sha256 of a file | "link:<target>" | "dir"}`` for
    everything under ``folder``, hidden files included. Two equal snapshots mean nothing was written,
    replaced or deleted (the "refused resume leaves the folder byte-identical" checks of the tests and
    of ``benchmarks/fuzz_runs.py``)."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        key = str(p.relative_to(folder))
        if p.is_symlink():
            out[key] = "link:" + os.readlink(p)
        elif p.is_file():
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[key] = "dir"
    return out

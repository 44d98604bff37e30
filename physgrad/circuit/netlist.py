"""SPICE netlists: read real decks for their DC operating point, write physgrad circuits.

Reading (case-insensitive in ASCII; the first line of the top file is the title, as in SPICE)::

    * comment                       ; inline comment (also ' $ ' and ' // ')
    Rname n1 n2 value [m=M] [tc1=..]   resistance in ohm (> 0), or {1/G} with G the conductance in S
    Cname n1 n2 value ...           capacitor: open at DC (dropped)
    Lname n1 n2 value ...           inductor: short at DC (a 0 V source named v.Lname)
    Kname L1 L2 k                   mutual inductance: no effect at DC (ignored)
    Vname n+ n- [DC] value [AC ..] [SIN(..)|PULSE(..)|PWL(..)|EXP(..)|SFFM(..)|AM(..)]
                                    v(n+) - v(n-) (V): the DC value if given, else the value at
                                    t = 0 (SPICE's rule for the operating point)
    Iname n+ n- ...                 the same for a current (A) flowing from n+ through the source to n-
    Dname anode cathode model [area] [m=M] [off]
    Mname nd ng ns nb model [L=..] [W=..] [M=..]   MOSFET, level 1 (physgrad.circuit.transistor_cards)
    Qname nc nb ne [ns] model [area]                BJT, Gummel-Poon without series resistances
    Ename n+ n- nc+ nc- gain        VCVS: v(n+) - v(n-) = gain (v(nc+) - v(nc-))
    Fname n+ n- Vsense gain         CCCS: gain * i(Vsense) (A) from n+ through the source to n-
    Gname n+ n- nc+ nc- gm          VCCS: gm (v(nc+) - v(nc-)) (A, gm in S) from n+ through it to n-
    Hname n+ n- Vsense r            CCVS: v(n+) - v(n-) = r * i(Vsense) (r in ohm)
    Xname nodes... subckt [params: name=value ...]   subcircuit instance (flattened)
    .model name D(IS=1e-14 N=1 RS=0 BV=.. IBV=..)    Shockley diode (level 1); capacitance, noise
                                    and temperature parameters have no effect at DC (ignored)
    .model name D(ideal=1 vth=0.3)  ideal diode with threshold vth >= 0 (V)
    .model name NMOS|PMOS(LEVEL=1 VTO KP LAMBDA GAMMA PHI IS)   .model name NPN|PNP(IS BF BR NF NR VAF ...)
    .subckt name nodes... [params: name=value ...] ... .ends
    .param name=value ...           values and {expressions} (physgrad.circuit.expr: no eval)
    .func name(a, b) {expression}
    .include FILE / .lib FILE SECTION   paths relative to the including file; cycles refused
    .global nodes...
    .options gmin=1e-12 ...         gmin (S) across every Shockley diode, as in ngspice
    .target NODE VALUE              output node and its target (V): declares the cost
    .trainable R1 R2 ...            trainable resistors (default: all written in the netlist)
    .op  .title  .end               text after .end is ignored
    + continuation lines

Analysis and output cards other than ``.op`` (``.tran .ac .dc .noise .tf .print .plot .save .meas
.four .ic .nodeset`` ...) and ``.control ... .endc`` blocks are ignored: :func:`read_deck` returns one
note naming them. Devices physgrad does not model (JFETs, MESFETs, MOSFET levels above 1, nonlinear or behavioural controlled
sources (``POLY``, ``VALUE=``, ``TABLE``), switches, transmission lines, behavioural sources) are refused with the file and line. Numbers take the
engineering suffixes f p n u m k meg g t mil (trailing unit letters are ignored, as in SPICE:
``10kohm``, ``5V``). Every error names the file and line.

Hostile decks are bounded by :class:`ReaderLimits` (bytes, lines and files read, include and
subcircuit depth, elements and instances after flattening, expression work), each overridable by
keyword (``read_netlist(path, max_files=10**5)``). Only regular files are read: a folder, a device
(``/dev/zero``), a FIFO or a symbolic-link loop is refused before anything is read. Flattening and
``.param`` resolution use explicit stacks (any depth within the limits, no Python recursion);
``.func`` calls are memoized. Node ``0`` (and ``gnd``) is the global ground inside subcircuits, also
when a pin is named so (as in ngspice).

Writing produces a file that ngspice runs (``ngspice -b file.cir``) *and* that :func:`read_netlist`
reads back to an equal :class:`Circuit`: tight ``.options`` (ngspice is silently
wrong at its default tolerances with near-ideal diodes, see :data:`physgrad.circuit.ngspice.TIGHT_OPTIONS`), ideal diodes exported to ngspice as steep Shockley
diodes (in series with a source at the threshold), the physgrad description of those diodes kept in
``*@physgrad`` comment lines and ngspice's replacement between ``*@ngspice-only`` markers (physgrad
skips it).
"""
from __future__ import annotations

import gc
import math
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Union

from physgrad.circuit.elements import (
    CCCS,
    CCVS,
    VCCS,
    VCVS,
    GROUND_ALIASES,
    NGSPICE_GMIN,
    NGSPICE_VT,
    Circuit,
    CurrentSource,
    DiodeModel,
    IdealDiode,
    Resistor,
    ShockleyDiode,
    VoltageSource,
    fold,
    node_name,
    prechecked,
)
from physgrad.circuit.files import InputFileError, TooLargeError, read_limited
from physgrad.circuit.expr import (SUFFIXES, Budget, ExpressionError, UserFunction, evaluate, names_in,  # noqa: F401
                                  parse_number, shown)
from physgrad.types import BadArgumentError, PhysgradError

# ngspice's replacement for ideal diodes: IS (A) and N chosen so the forward drop at 1 mA is ~0.4 mV.
STEEP_IS = 1e-9
STEEP_N = 1e-3
TIGHT_OPTIONS = "reltol=1e-6 vntol=1e-9 abstol=1e-15"
PRAGMA = "*@physgrad "
NGSPICE_ONLY_BEGIN = "*@ngspice-only begin"
NGSPICE_ONLY_END = "*@ngspice-only end"
_PRAGMA_WIDTH = max(len(PRAGMA), len(NGSPICE_ONLY_BEGIN), len(NGSPICE_ONLY_END))


@dataclass(frozen=True)
class ReaderLimits:
    """Limits that keep a hostile or broken deck from hanging the reader or exhausting memory.

    Every reading function takes them as keywords (``read_netlist(path, max_elements=10**7)``) or as
    ``limits=ReaderLimits(...)``. A deck past a limit is refused with :class:`NetlistError` naming the
    file, the line and the keyword that raises the limit.

    Attributes
    ----------
    max_bytes : int
        Bytes read in all, the top file and every ``.include``/``.lib`` (256 MiB).
    max_lines : int
        Lines read in all, counted per inclusion (10,000,000).
    max_files : int
        Files read, counted per inclusion: a file included twice counts twice (10,000).
    max_include_depth : int
        Nesting of ``.include``/``.lib`` (50).
    max_subckt_depth : int
        Nesting of subcircuit instances (1,000); flattening is iterative, so this bounds the
        length of flattened names, not Python's stack.
    max_elements : int
        Element cards after flattening subcircuits (2,000,000), counted before flattening from the
        definitions.
    max_instances : int
        Subcircuit instances after flattening (1,000,000): a hierarchy whose leaves hold no
        element still multiplies instances.
    max_eval_steps : int
        Expression tokens evaluated in all (``.param``, ``.func`` bodies, ``{...}`` values;
        10,000,000, about 10 s of CPU): user-function calls are memoized, so a ``.func`` that calls
        the previous one twice costs linear time; work that still multiplies stops here.
    max_eval_steps_per_value : int
        Expression tokens evaluated for one value (one ``.param`` or element value with the
        functions it calls; 1,000,000, about 1 s).
    """

    max_bytes: int = 256 << 20
    max_lines: int = 10_000_000
    max_files: int = 10_000
    max_include_depth: int = 50
    max_subckt_depth: int = 1_000
    max_elements: int = 2_000_000
    max_instances: int = 1_000_000
    max_eval_steps: int = 10_000_000
    max_eval_steps_per_value: int = 1_000_000

    def __post_init__(self):
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadArgumentError(f"reader limit {name} must be an integer >= 1, got {value!r}")


DEFAULT_LIMITS = ReaderLimits()


def reader_limits(limits: Optional[ReaderLimits] = None, **overrides) -> ReaderLimits:
    """``limits`` (default :data:`DEFAULT_LIMITS`) with ``overrides`` (keywords of
    :class:`ReaderLimits`; an unknown one is an error listing the valid names)."""
    if limits is None:
        limits = DEFAULT_LIMITS
    elif not isinstance(limits, ReaderLimits):
        raise BadArgumentError(f"limits must be a ReaderLimits, got {type(limits).__name__}")
    unknown = set(overrides) - set(ReaderLimits.__dataclass_fields__)
    if unknown:
        raise BadArgumentError(f"unknown reader limit(s) {sorted(unknown)}; the limits are "
                               f"{', '.join(ReaderLimits.__dataclass_fields__)}")
    return replace(limits, **overrides) if overrides else limits

# Cards ignored for the DC operating point (noted once).
IGNORED_CARDS = {".tran", ".ac", ".dc", ".noise", ".tf", ".sens", ".disto", ".pz", ".four", ".pss", ".sp",
                 ".meas", ".measure", ".save", ".print", ".plot", ".probe", ".width", ".ic", ".nodeset",
                 ".savecurrents", ".backanno", ".lprint", ".fft", ".net", ".step"}
# Diode model parameters without effect on the DC current at the nominal temperature (27 C = TNOM):
# junction and diffusion capacitances, noise, temperature coefficients, metadata of vendor models.
DIODE_DC_IRRELEVANT = {
    "cjo", "cj0", "cj", "vj", "pb", "m", "mj", "fc", "tt", "cjp", "cjsw", "php", "mjsw", "fcs", "kf", "af", "eg",
    "xti", "tcv", "trs", "trs1", "trs2", "tlev", "tlevc", "cta", "ctp", "tpb", "tphp", "tm1", "tm2", "ttt1", "ttt2",
    "tbv1", "tbv2", "tbv", "tcj", "tcjsw", "xti", "fcsw", "vjsw", "pbsw", "mfg", "type", "iave", "vpk", "ipk",
    "iavemax", "vpkmax", "diss", "bvj", "ibvmax", "lrs", "noise", "trise", "tnom",
}
DIODE_METADATA = {"mfg", "type", "noise"}
_NO_DC_EFFECT_LETTERS = {"c": "capacitor", "k": "mutual inductance"}
_REFUSED = {"j": "JFET", "z": "MESFET", "b": "behavioural source",
            "s": "voltage-controlled switch", "w": "current-controlled switch", "t": "transmission line",
            "o": "lossy transmission line", "u": "RC line", "y": "transmission line", "p": "coupled lines",
            "a": "XSPICE code model", "n": "OSDI/Verilog-A device"}


class NetlistError(PhysgradError):
    """A malformed netlist (or one using what physgrad does not model); the message starts with
    ``file:line:``."""


@dataclass(frozen=True)
class Deck:
    """A netlist read for its DC operating point.

    Attributes
    ----------
    circuit : Circuit
    notes : tuple of str
        What was read but has no effect on the operating point and was ignored (analysis and
        output cards, ``.control`` blocks), each naming the file and line; empty when nothing was.
    """

    circuit: Circuit
    notes: tuple = ()

    def note(self) -> str:
        """The one-line note for stderr ("" when nothing was ignored)."""
        if not self.notes:
            return ""
        groups: dict = {}
        for note in self.notes:
            groups.setdefault(note.split(" (", 1)[0], []).append(note)
        parts = [g[0] + (f" and {len(g) - 1} more {card} card(s)" if len(g) > 1 else "") for card, g in groups.items()]
        return "ignored for the DC operating point: " + ", ".join(parts)


class _Line:
    """One card: ``where`` (``file:line``), its text (continuations joined, comments dropped) and
    its tokens (split once, by :meth:`_Builder.split`)."""

    __slots__ = ("where", "text", "toks")

    def __init__(self, where: str, text: str):
        self.where, self.text, self.toks = where, text, None


_INLINE = re.compile(r"(?:^|\s)(?:\$|//)")


def _strip_inline(text: str) -> str:
    """Drop inline comments: ``;`` anywhere, `` $ `` and `` // `` after white space (ngspice)."""
    text = text.split(";", 1)[0]
    m = _INLINE.search(text)
    if m:
        text = text[: m.start()]
    return text.strip()


def _file_lines(text: str, filename: str, *, top: bool):
    """Join ``+`` continuations, strip comments: ``(title, [_Line])`` (title only for the top file).
    Linear in the text (continuations are joined once, at the end of each card)."""
    if "\x00" in text:
        raise NetlistError(f"{filename}: not a text netlist (it contains NUL bytes)")
    raw = text.lstrip("\ufeff").splitlines()
    if top and not raw:
        raise NetlistError(f"{filename}:1: empty netlist (the first line is the title)")
    title = raw[0].strip() if top else ""
    lines: list = []
    more: dict = {}   # index in lines -> continuation texts
    skipping = False
    start = 2 if top else 1
    for i, line in enumerate(raw[1:] if top else raw, start=start):
        stripped = line.strip()
        if not stripped:
            continue
        first = stripped[0]
        if first == "*":
            if stripped[1:2] != "@":
                continue
            low = fold(stripped[:_PRAGMA_WIDTH])  # the prefixes only (folding whole lines cost ~0.1 s per 10^5)
            if low.startswith(NGSPICE_ONLY_BEGIN):
                skipping = True
                continue
            if low.startswith(NGSPICE_ONLY_END):
                skipping = False
                continue
            if skipping or not low.startswith(PRAGMA):
                continue
            stripped = stripped[len(PRAGMA):].strip()
            if not stripped:
                continue
            first = stripped[0]
        elif skipping:
            continue
        if ";" in stripped or "$" in stripped or "//" in stripped:
            stripped = _strip_inline(stripped)
            if not stripped:
                continue
        if first == "+":
            if not lines:
                raise NetlistError(f"{filename}:{i}: continuation line '+' with nothing to continue")
            more.setdefault(len(lines) - 1, []).append(stripped[1:].strip())
            continue
        lines.append(_Line(f"{filename}:{i}", stripped))
    if skipping:
        raise NetlistError(f"{filename}: '{NGSPICE_ONLY_BEGIN}' without '{NGSPICE_ONLY_END}'")
    for k, parts in more.items():
        lines[k].text = " ".join([lines[k].text] + parts)
    return title, lines


def _decode(data: bytes, path: Path, where: str) -> str:
    """The text of a netlist file's bytes: UTF-8, else Latin-1 when it looks like text."""
    what = "" if where == str(path) else f" {path}"
    if b"\x00" in data:
        raise NetlistError(f"{where}:{what} not a text netlist (it contains NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if _mostly_text(data):
            return data.decode("latin-1")
        raise NetlistError(f"{where}:{what} not a text file") from None


def _read_text(path: Path, where: str, max_bytes: int, total: Optional[int] = None) -> str:
    """A netlist file's text; :class:`NetlistError` (naming ``where``) for anything unreadable: a
    missing file, a folder, a device or FIFO, a symbolic-link loop, more than ``max_bytes`` (what is
    left of the deck's ``total`` byte limit, when given)."""
    what = "" if where == str(path) else f" {path}"
    try:
        data = read_limited(path, max_bytes)
    except TooLargeError as exc:
        why = str(exc) if total is None else f"would bring the bytes read past the limit of {total:,}"
        raise NetlistError(f"{where}:{what} {why} (raise it with max_bytes=...)") from None
    except InputFileError as exc:
        raise NetlistError(f"{where}:{what} {exc}") from None
    return _decode(data, path, where)


def _mostly_text(data: bytes) -> bool:
    printable = sum(1 for b in data[:65536] if b in (9, 10, 13) or 32 <= b < 127 or b >= 160)
    return printable >= 0.95 * min(len(data), 65536)


def _path_arg(toks: list, where: str, what: str, text: str = "") -> str:
    """The file name of ``.include``/``.lib`` (quoted names may hold spaces)."""
    if len(toks) < 2:
        raise NetlistError(f"{where}: {what} needs a file name")
    rest = text.split(None, 1)[1].strip() if text else toks[1]
    m = re.match(r"""^(["'])(.*?)\1""", rest)
    name = m.group(2) if m else toks[1]
    return os.path.expanduser(name)


class _Loader:
    """Expands ``.include``/``.lib``, drops ``.control`` blocks and what follows ``.end``; counts
    the files, bytes and lines read against the :class:`ReaderLimits`."""

    def __init__(self, limits: ReaderLimits):
        self.notes: list = []
        self.limits = limits
        self.files = self.bytes = self.lines = 0

    def account(self, text: str, n_lines: int, where: str, path) -> None:
        """Count one file read (``text`` of ``n_lines`` lines) against the limits."""
        lim = self.limits
        self.files += 1
        self.bytes += len(text)
        self.lines += n_lines
        what = "" if path is None or where == str(path) else f" {path}:"
        if self.files > lim.max_files:
            raise NetlistError(f"{where}:{what} more than {lim.max_files:,} files read (every .include/.lib counts; "
                               "raise the limit with max_files=...)")
        if self.bytes > lim.max_bytes:
            raise NetlistError(f"{where}:{what} more than {lim.max_bytes:,} bytes read in all (top file and includes; "
                               "raise the limit with max_bytes=...)")
        if self.lines > lim.max_lines:
            raise NetlistError(f"{where}:{what} more than {lim.max_lines:,} lines read in all (top file and "
                               "includes; raise the limit with max_lines=...)")

    def expand(self, lines, base: Path, stack: tuple) -> list:
        out = []
        i = 0
        while i < len(lines):
            ln = lines[i]
            if ln.text[0] != ".":
                out.append(ln)
                i += 1
                continue
            toks = ln.text.split()
            head = fold(toks[0])
            if head == ".end":
                break
            if head == ".control":
                j = i + 1
                while j < len(lines) and fold(lines[j].text.split()[0]) != ".endc":
                    j += 1
                if j == len(lines):  # no .endc: as ngspice, the block runs to .end or the end of the file
                    self.notes.append(f".control block ({ln.where} to the end, without .endc)")
                    break
                self.notes.append(f".control block ({ln.where}-{lines[j].where.rsplit(':', 1)[-1]})")
                i = j + 1
                continue
            if head == ".endc":
                raise NetlistError(f"{ln.where}: .endc without .control")
            if head in (".include", ".inc", ".incl"):
                path = self._resolve(_path_arg(toks, ln.where, head, ln.text), base)
                out += self.load_file(path, ln.where, stack)
            elif head == ".lib" and len(toks) >= 3:
                path = self._resolve(_path_arg(toks, ln.where, ".lib", ln.text), base)
                out += self.load_section(path, fold(toks[-1]), ln.where, stack)
            elif head == ".lib":  # a section definition that nothing here calls: skipped
                j = i + 1
                while j < len(lines) and fold(lines[j].text.split()[0]) != ".endl":
                    j += 1
                if j == len(lines):
                    raise NetlistError(f"{ln.where}: .lib section without .endl")
                i = j
            elif head == ".endl":
                raise NetlistError(f"{ln.where}: .endl without .lib")
            else:
                out.append(ln)
            i += 1
        return out

    @staticmethod
    def _resolve(name: str, base: Path) -> Path:
        """The absolute path of an included file, symbolic links resolved where they resolve (a
        link loop is left for the read to refuse)."""
        path = Path(name)
        return Path(os.path.realpath(path if path.is_absolute() else base / path))

    def _check_stack(self, key, where, stack):
        if key in stack:
            chain = " -> ".join(str(k[0]) + (f" [{k[1]}]" if k[1] else "") for k in stack + (key,))
            raise NetlistError(f"{where}: include cycle: {chain}")
        if len(stack) >= self.limits.max_include_depth:
            raise NetlistError(f"{where}: includes nested deeper than {self.limits.max_include_depth} (raise the "
                               "limit with max_include_depth=...)")

    def _read(self, path: Path, where: str) -> list:
        text = _read_text(path, where, max(0, self.limits.max_bytes - self.bytes), self.limits.max_bytes)
        _, lines = _file_lines(text, str(path), top=False)
        self.account(text, text.count("\n") + 1, where, path)
        return lines

    def load_file(self, path: Path, where: str, stack: tuple) -> list:
        key = (path, "")
        self._check_stack(key, where, stack)
        return self.expand(self._read(path, where), path.parent, stack + (key,))

    def load_section(self, path: Path, section: str, where: str, stack: tuple) -> list:
        key = (path, section)
        self._check_stack(key, where, stack)
        lines = self._read(path, where)
        for i, ln in enumerate(lines):
            toks = ln.text.split()
            if fold(toks[0]) == ".lib" and len(toks) == 2 and fold(toks[1]) == section:
                j = i + 1
                while j < len(lines) and fold(lines[j].text.split()[0]) != ".endl":
                    j += 1
                if j == len(lines):
                    raise NetlistError(f"{ln.where}: .lib section {section!r} without .endl")
                return self.expand(lines[i + 1:j], path.parent, stack + (key,))
        raise NetlistError(f"{where}: {path} has no .lib section {section!r}")


_TOKEN = re.compile(r"\s*(\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}|'[^']*'|[(),=]|[^\s(),={}']+)")
_SPECIAL = re.compile(r"[{}'(),=]")
_ONE_TOKEN = r"\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}|'[^']*'|[(),=]|[^\s(),={}']+"
_ALL_TOKENS = re.compile(rf"(?:\s*(?:{_ONE_TOKEN}))*\s*")  # a card that splits into tokens with nothing left over


def _tokens(text: str, where: str) -> list:
    """Split a card: ``{...}`` and ``'...'`` stay whole; ``( ) , =`` are tokens of their own."""
    if _SPECIAL.search(text) is None:  # most cards: white space separates every token
        return text.split()
    if _ALL_TOKENS.fullmatch(text):  # well formed (checked in C): every token at once
        return _TOKEN.findall(text)
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise NetlistError(f"{where}: unbalanced brace or quote near {text[pos:pos + 30]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _split_args(toks: list, where: str):
    """Positional tokens and ``key=value`` pairs (values may continue with commas: ``tc=1,2``);
    parentheses are dropped."""
    pos, kw = [], {}
    toks = [t for t in toks if t not in ("(", ")")]
    i = 0
    while i < len(toks):
        t = toks[i]
        if t == ",":
            i += 1
            continue
        if i + 1 < len(toks) and toks[i + 1] == "=":
            if i + 2 >= len(toks):
                raise NetlistError(f"{where}: {t}= has no value")
            vals = [toks[i + 2]]
            i += 3
            while i + 1 < len(toks) and toks[i] == "," and (i + 2 >= len(toks) or toks[i + 2] != "="):
                vals.append(toks[i + 1])
                i += 2
            kw[fold(t)] = vals if len(vals) > 1 else vals[0]
            continue
        if t == "=":
            raise NetlistError(f"{where}: '=' without a name")
        pos.append(t)
        i += 1
    return pos, kw


class _Pending(Exception):
    """Raised inside a parameter's evaluation when it needs another parameter of the same scope that
    is not evaluated yet: :meth:`_Scope.resolve` evaluates that one first (an explicit stack, not
    Python's, so chains of any length resolve)."""

    def __init__(self, scope: "_Scope", name: str):
        super().__init__(name)
        self.scope, self.name = scope, name


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _param_names(tok: str) -> list:
    """The parameter names a value token reads (``{expr}``, ``'expr'`` or a bare name)."""
    if tok[:1] in "{'" and len(tok) >= 2:
        return names_in(tok[1:-1])
    return [fold(tok)] if _NAME.fullmatch(tok) else []


class _Scope:
    """Parameters: raw expressions evaluated on first use (dependencies first, iteratively; a cycle
    is an error), falling back to ``parent``. ``budget`` and ``memo`` are the deck's expression
    budget and memo of user-function calls (:func:`physgrad.circuit.expr.evaluate`)."""

    def __init__(self, parent: Optional["_Scope"], functions: dict, budget: Budget, memo: dict):
        self.parent, self.functions, self.budget, self.memo = parent, functions, budget, memo
        self.raw: dict = {}
        self.values: dict = {}
        self.resolving = False

    def define(self, name: str, text: str, where: str):
        self.raw[fold(name)] = (text, where)
        self.values.pop(fold(name), None)

    def set(self, name: str, value: float):
        self.values[fold(name)] = value

    def has(self, name: str) -> bool:
        name = fold(name)
        return name in self.values or name in self.raw or (self.parent is not None and self.parent.has(name))

    def lookup(self, name: str, where: str = "") -> float:
        name = fold(name)
        value = self.values.get(name)
        if value is not None:
            return value
        if name in self.raw:
            if self.resolving:
                raise _Pending(self, name)
            self.resolve(name)
            return self.values[name]
        if self.parent is not None:
            return self.parent.lookup(name, where)
        raise NetlistError(f"{where}: unknown parameter {name!r}")

    def resolve(self, name: str) -> None:
        """Evaluate parameter ``name`` and, first, the parameters of this scope it needs."""
        stack, on_stack = [name], {name}
        self.resolving = True
        try:
            while stack:
                top = stack[-1]
                text, at = self.raw[top]
                for dep in _param_names(text):  # what the text reads: evaluate those first
                    if dep in self.raw and dep not in self.values and dep not in on_stack:
                        stack.append(dep)
                        on_stack.add(dep)
                if stack[-1] != top:
                    continue
                try:
                    value = self.number(text, at, f"parameter {top}")
                except _Pending as need:
                    if need.scope is not self:
                        raise
                    if need.name in on_stack:
                        raise NetlistError(f"{self.raw[need.name][1]}: parameter {need.name!r} is defined in terms "
                                           "of itself") from None
                    stack.append(need.name)
                    on_stack.add(need.name)
                    continue
                self.values[top] = value
                stack.pop()
                on_stack.discard(top)
        finally:
            self.resolving = False

    def number(self, tok: str, where: str, what: str) -> float:
        """A value token: a number, ``{expr}``, ``'expr'`` or a parameter name."""
        if isinstance(tok, list):
            raise NetlistError(f"{where}: {what} takes one value, got {','.join(tok)!r}")
        inner = None
        if tok[:1] == "{" and tok[-1:] == "}":
            inner = tok[1:-1]
        elif tok[:1] == "'" and tok[-1:] == "'" and len(tok) >= 2:
            inner = tok[1:-1]
        if inner is None:
            try:
                x = parse_number(tok)
            except ValueError:
                if _NAME.fullmatch(tok) and self.has(tok):
                    return self.lookup(tok, where)
                raise NetlistError(f"{where}: {what} {shown(tok)} is not a number") from None
            if not math.isfinite(x):
                raise NetlistError(f"{where}: {what} must be finite, got {shown(tok)}")
            return x
        try:
            return evaluate(inner, lambda n: self.lookup(n, where), where, self.functions, budget=self.budget,
                            memo=self.memo)
        except ExpressionError as exc:
            raise NetlistError(f"{exc} (for {what})") from None


@dataclass
class _Subckt:
    name: str
    nodes: tuple
    defaults: dict
    where: str
    body: list = field(default_factory=list)


def _subckt_header(toks, where):
    if len(toks) < 2:
        raise NetlistError(f"{where}: expected '.subckt NAME NODES... [params: NAME=VALUE ...]'")
    rest = [t for t in toks[2:] if fold(t) != "params:"]
    pos, kw = _split_args(rest, where)
    return _Subckt(fold(toks[1]), tuple(pos), kw, where)


class _Frame:
    """One subcircuit body being flattened: its cards, the next one to read, its parameters, the
    prefix of its names, its pins (formal -> actual node) and its subcircuit's name."""

    __slots__ = ("lines", "scope", "prefix", "nodemap", "subname")

    def __init__(self, lines, scope, prefix, nodemap, subname):
        self.lines, self.scope, self.prefix, self.nodemap, self.subname = iter(lines), scope, prefix, nodemap, subname


def _instance_target(toks, where) -> str:
    """The subcircuit an ``X`` card names (its last positional token)."""
    pos = [t for t in _split_args([t for t in toks[1:] if fold(t) != "params:"], where)[0]]
    return fold(pos[-1]) if pos else ""


class _Builder:
    """Collects definitions and flattens the deck into physgrad elements."""

    def __init__(self, notes: list, limits: ReaderLimits = DEFAULT_LIMITS):
        self.notes = notes
        self.limits = limits
        self.functions: dict = {}
        self.budget = Budget(limits.max_eval_steps, limits.max_eval_steps_per_value)
        self.memo: dict = {}
        self.glob = _Scope(None, self.functions, self.budget, self.memo)
        self.models: dict = {}
        self.subckts: dict = {}
        self.global_nodes = set(GROUND_ALIASES)
        self.options: dict = {}
        self.elements: list = []
        self.names: dict = {}
        self.diodes: list = []   # (index in elements, where, name, anode, cathode, model, scale)
        self.transistor_cards: list = []  # (index in elements, where, name, letter, nodes, model, area, instance)
        self.generated: set = set()
        self.targets: list = []
        self.trainable: Optional[list] = None
        self.title: Optional[str] = None
        self.count = 0
        self.instances = 0
        self.max_elements = limits.max_elements
        self.couplings: list = []
        self.controls: list = []  # (where, raw name, flattened control name, name as written)
        self.node_names: dict = {}  # node as written or flattened -> node_name() of it

    # --- pass 1: blocks and global definitions ------------------------------------------------
    def split(self, lines):
        """Tokenize every card (once), collect ``.subckt`` bodies, models and functions; the
        top-level cards are returned."""
        top, stack = [], []
        special = _SPECIAL.search
        for ln in lines:
            text = ln.text
            toks = ln.toks = text.split() if special(text) is None else _tokens(text, ln.where)
            if toks[0][0] != ".":
                (stack[-1].body if stack else top).append(ln)
                continue
            head = fold(toks[0])
            if head == ".subckt":
                stack.append(_subckt_header(toks, ln.where))
            elif head == ".ends":
                if not stack:
                    raise NetlistError(f"{ln.where}: .ends without .subckt")
                sub = stack.pop()
                if sub.name in self.subckts:
                    raise NetlistError(f"{ln.where}: subcircuit {sub.name!r} defined twice "
                                       f"(first at {self.subckts[sub.name].where})")
                self.subckts[sub.name] = sub
            elif head == ".model":
                self.model(toks, ln)
            elif head == ".func":
                self.func(ln)
            elif stack:
                stack[-1].body.append(ln)
            else:
                top.append(ln)
        if stack:
            raise NetlistError(f"{stack[-1].where}: .subckt {stack[-1].name} without .ends")
        return top

    def model(self, toks, ln):
        if len(toks) < 3:
            raise NetlistError(f"{ln.where}: malformed .model line (expected '.model NAME TYPE(PARAM=VALUE ...)')")
        name, kind = fold(toks[1]), fold(toks[2])
        pos, kw = _split_args(toks[3:], ln.where)
        if pos and kind != "d":
            pass  # other device kinds: refused when used
        elif pos:
            raise NetlistError(f"{ln.where}: .model parameter {pos[0]!r} is not NAME=VALUE")
        entry = (kind, kw, ln.where, ln.text)
        if name in self.models:
            if fold(self.models[name][3].split(None, 1)[-1]) == fold(ln.text.split(None, 1)[-1]):
                return  # the same model read twice (a library included twice)
            raise NetlistError(f"{ln.where}: model {name!r} defined twice (first at {self.models[name][2]})")
        self.models[name] = entry

    def func(self, ln):
        m = re.match(r"^\.func\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(([^)]*)\)\s*=?\s*(\{.*\}|'.*')\s*$", ln.text,
                     re.IGNORECASE)
        if not m:
            raise NetlistError(f"{ln.where}: expected '.func NAME(ARG, ...) {{EXPRESSION}}'")
        args = tuple(fold(a.strip()) for a in m.group(2).split(",") if a.strip())
        self.functions[fold(m.group(1))] = UserFunction(fold(m.group(1)), args, m.group(3)[1:-1])

    def check_size(self, top, filename):
        """Refuse, before flattening, a deck whose subcircuits would expand to more than
        ``max_elements`` element cards or ``max_instances`` instances: each definition's expanded
        size is computed once, children first, with an explicit stack (any nesting depth)."""
        body: dict = {}   # subckt -> (element cards, [subckt of each X card])

        def census(lines):
            n, kids = 0, []
            for ln in lines:
                c = ln.toks[0][0]
                if c == ".":
                    continue
                if c in "xX":
                    kids.append(_instance_target(ln.toks, ln.where))
                else:
                    n += 1
            return n, kids

        sizes: dict = {}   # subckt -> (elements, instances) it expands to, its own X cards included
        for name in self.subckts:
            if name in sizes:
                continue
            body[name] = census(self.subckts[name].body)
            stack, on_path = [(name, iter(body[name][1]))], {name}
            while stack:
                cur, kids = stack[-1]
                nxt = next((k for k in kids if k in self.subckts and k not in sizes and k not in on_path), None)
                if nxt is not None:
                    body[nxt] = census(self.subckts[nxt].body)
                    stack.append((nxt, iter(body[nxt][1])))
                    on_path.add(nxt)
                    continue
                n_el, n_inst = body[cur][0], 0
                for k in body[cur][1]:
                    n_inst += 1
                    if k in sizes and k not in on_path:  # a cycle is refused when instantiated
                        n_el += sizes[k][0]
                        n_inst += sizes[k][1]
                sizes[cur] = (n_el, n_inst)
                stack.pop()
                on_path.discard(cur)
        lim = self.limits
        n_el = n_inst = 0
        for ln in top:
            c = ln.toks[0][0]
            if c == ".":
                continue
            if c in "xX":
                sub = _instance_target(ln.toks, ln.where)
                e, i = sizes.get(sub, (0, 0))
                n_el, n_inst = n_el + e, n_inst + 1 + i
            else:
                n_el += 1
            if n_el > lim.max_elements:
                raise NetlistError(f"{ln.where}: the deck expands to more than {lim.max_elements:,} element cards after "
                                   "flattening its subcircuits (raise the limit with max_elements=...)")
            if n_inst > lim.max_instances:
                raise NetlistError(f"{ln.where}: the deck expands to more than {lim.max_instances:,} subcircuit "
                                   "instances after flattening (raise the limit with max_instances=...)")

    # --- pass 2: instantiate ------------------------------------------------------------------
    def params(self, lines, scope: _Scope):
        for ln in lines:
            toks = ln.toks
            if toks[0][0] != ".":
                continue
            head = fold(toks[0])
            if head == ".param":
                pos, kw = _split_args(toks[1:], ln.where)
                if pos:
                    raise NetlistError(f"{ln.where}: .param expects NAME=VALUE, got {pos[0]!r}")
                for k, v in kw.items():
                    scope.define(k, v if isinstance(v, str) else ",".join(v), ln.where)
            elif head == ".global":
                self.global_nodes.update(fold(t) for t in toks[1:])

    def node(self, name: str, prefix: str, nodemap: dict) -> str:
        """The flattened name of node ``name`` inside the instance ``prefix``: ground (``0``,
        ``gnd``) is global even when a pin is called so (as in ngspice), then the pins, then
        ``.global`` nodes, else a local node ``prefix + name``."""
        if not prefix:  # top level: as written (the element classes fold names and map gnd to 0)
            return name
        key = fold(name)
        if key in GROUND_ALIASES:
            return key
        if key in nodemap:
            return nodemap[key]
        if key in self.global_nodes:
            return key
        return prefix + key

    def instantiate(self, lines, scope: _Scope):
        """Flatten ``lines`` (the top level) and every instance in them, depth first, with an
        explicit stack of :class:`_Frame` s (no recursion: nesting is bounded by
        ``max_subckt_depth``, not by Python's stack)."""
        stack = [_Frame(lines, scope, "", {}, "")]
        active: set = set()
        element = self.element
        while stack:
            frame = stack[-1]
            scope, prefix, nodemap = frame.scope, frame.prefix, frame.nodemap
            for ln in frame.lines:
                toks = ln.toks
                first = toks[0][0]
                if first == ".":
                    self.directive(fold(toks[0]), toks, ln, top=not prefix)
                    continue
                if len(toks) > 1 and toks[1] == "(":  # 'R1 (a b) 1k': a parenthesised node list
                    if ")" not in toks[2:]:
                        raise NetlistError(f"{ln.where}: unbalanced parenthesis in the node list of {toks[0]}")
                    j = toks.index(")", 2)
                    toks = [toks[0]] + toks[2:j] + toks[j + 1:]
                if first in "xX":
                    child = self.instance(toks, ln, frame, stack, active)
                    stack.append(child)
                    active.add(child.subname)
                    break
                element(toks, ln, scope, prefix, nodemap)
            else:
                stack.pop()
                active.discard(frame.subname)

    def directive(self, head, toks, ln, top: bool):
        where = ln.where
        if head in (".param", ".global", ".op"):
            return
        if head in IGNORED_CARDS:
            self.notes.append(f"{head} ({where})")
            return
        if not top:
            raise NetlistError(f"{where}: directive {toks[0]!r} is not allowed inside a subcircuit")
        if head in (".options", ".option", ".opt"):
            pos, kw = _split_args(toks[1:], where)
            for k, v in kw.items():
                if k in ("gmin", "temp", "tnom", "gshunt", "rshunt"):
                    self.options[k] = (self.glob.number(v, where, f"option {k}"), where)
        elif head == ".temp":
            if len(toks) < 2:
                raise NetlistError(f"{where}: .temp needs a temperature")
            self.options["temp"] = (self.glob.number(toks[1], where, ".temp"), where)
        elif head == ".title":
            self.title = ln.text.split(None, 1)[1] if len(ln.text.split(None, 1)) > 1 else ""
        elif head == ".target":
            if len(toks) != 3:
                raise NetlistError(f"{where}: expected '.target NODE VALUE'")
            self.targets.append((toks[1], self.glob.number(toks[2], where, "target value"), where))
        elif head == ".trainable":
            self.trainable = (self.trainable or []) + [fold(t) for t in toks[1:]]
        elif head in (".if", ".elseif", ".else", ".endif"):
            raise NetlistError(f"{where}: conditional netlists ({toks[0]}) are not supported")
        else:
            raise NetlistError(f"{where}: unsupported directive {toks[0]!r} (physgrad reads what SPICE's .op uses)")

    def instance(self, toks, ln, parent: _Frame, stack: list, active: set) -> _Frame:
        """The frame of subcircuit instance ``toks`` inside ``parent`` (checked: known subcircuit,
        pin count, parameters, no self-instantiation, depth and instance limits)."""
        where = ln.where
        name = fold(toks[0])
        args = [t for t in toks[1:] if fold(t) != "params:"]
        pos, kw = _split_args(args, where)
        if not pos:
            raise NetlistError(f"{where}: expected 'Xname NODES... SUBCKT [NAME=VALUE ...]'")
        subname = fold(pos[-1])
        if subname not in self.subckts:
            raise NetlistError(f"{where}: instance {toks[0]} uses unknown subcircuit {pos[-1]!r}")
        sub = self.subckts[subname]
        actual = pos[:-1]
        if len(actual) != len(sub.nodes):
            raise NetlistError(f"{where}: instance {toks[0]} connects {len(actual)} nodes but subcircuit "
                               f"{sub.name} ({sub.where}) has {len(sub.nodes)}")
        if subname in active:
            path = " -> ".join(f.subname for f in stack[1:])
            raise NetlistError(f"{where}: subcircuit {sub.name} instantiates itself (through {path})")
        if len(stack) > self.limits.max_subckt_depth:
            raise NetlistError(f"{where}: subcircuits nested deeper than {self.limits.max_subckt_depth} (raise the "
                               "limit with max_subckt_depth=...)")
        self.instances += 1
        if self.instances > self.limits.max_instances:
            raise NetlistError(f"{where}: more than {self.limits.max_instances:,} subcircuit instances after "
                               "flattening (raise the limit with max_instances=...)")
        unknown = set(kw) - set(sub.defaults)
        if unknown:
            raise NetlistError(f"{where}: instance {toks[0]}: subcircuit {sub.name} has no parameter(s) "
                               f"{sorted(unknown)}")
        inner = _Scope(self.glob, self.functions, self.budget, self.memo)
        for k, v in sub.defaults.items():
            if k in kw:
                inner.set(k, parent.scope.number(kw[k], where, f"parameter {k} of {toks[0]}"))
            else:
                inner.define(k, v if isinstance(v, str) else ",".join(v), sub.where)
        self.params(sub.body, inner)
        prefix = parent.prefix
        mapping = {fold(f): self.node(a, prefix, parent.nodemap) for f, a in zip(sub.nodes, actual)}
        inst = (prefix[:-1] + "." if prefix else "") + name
        return _Frame(sub.body, inner, inst + ".", mapping, subname)

    def add(self, el, where, generated=False, shown=None):
        self.count += 1
        if self.count > self.max_elements:
            raise NetlistError(f"{where}: more than {self.limits.max_elements:,} elements after flattening "
                               "subcircuits (raise the limit with max_elements=...)")
        if el is not None:
            if el.name in self.names:
                raise NetlistError(f"{where}: duplicate element name {shown or repr(el.name)} (first defined at "
                                   f"{self.names[el.name]})")
            self.names[el.name] = where
            if generated:
                self.generated.add(el.name)
        self.elements.append(el)

    def element(self, toks, ln, scope, prefix, nodemap):
        where = ln.where
        raw = toks[0]
        folded = fold(raw)
        letter = folded[0]  # fold() maps character by character
        full = folded if not prefix else f"{letter}.{prefix}{folded}"
        if letter in _REFUSED:
            raise NetlistError(f"{where}: {raw} is a {_REFUSED[letter]}, which physgrad does not model "
                               "(it simulates R, C (open at DC), L (short at DC), V, I, D, the linear controlled "
                               "sources E, F, G, H, MOSFETs (level 1), BJTs and subcircuits of them)")
        if letter not in "rclkvidefghmq":
            raise NetlistError(f"{where}: unknown element letter {raw[0]!r} in {raw!r} "
                               "(supported: R C L K V I D E F G H M Q X)")
        if letter in "mq":
            return self.transistor(letter, toks, where, raw, full, prefix, nodemap, scope)
        if letter == "k":  # mutual inductance: no effect at DC, but it must couple two inductors
            pos, _ = _split_args(toks[1:], where)
            if len(pos) != 3:
                raise NetlistError(f"{where}: expected 'Kname L1 L2 coupling'")
            for ind in pos[:2]:
                if fold(ind)[:1] != "l":
                    raise NetlistError(f"{where}: {raw} couples {ind!r}, which is not an inductor")
                self.couplings.append((where, raw, "v." + (fold(ind) if not prefix else f"l.{prefix}{fold(ind)}")))
            scope.number(pos[2], where, f"coupling of {raw}")
            return
        if len(toks) < 3:
            raise NetlistError(f"{where}: {raw} needs two nodes")
        n1, n2 = self.node(toks[1], prefix, nodemap), self.node(toks[2], prefix, nodemap)
        try:
            if letter in "cl":
                pos, _ = _split_args(toks[3:], where)
                if not pos:
                    raise NetlistError(f"{where}: {raw} needs a value")
                if fold(pos[0]) not in self.models:  # a value (not a model name): it must be a number
                    scope.number(pos[0], where, f"value of {raw}")
            if letter == "c":
                return  # open at DC
            if letter == "l":
                self.add(VoltageSource(f"v.{full}", n1, n2, 0.0), where, generated=True)
            elif letter == "r":
                self.add(self.two_terminal(Resistor, full, n1, n2, self.conductance(toks[3:], where, raw, scope)),
                         where, shown=repr(raw) if not prefix else None)
            elif letter in "efgh":
                self.controlled(letter, toks, where, raw, full, prefix, nodemap, scope)
            elif letter in "vi":
                value = self.source_value(toks[3:], where, raw, scope)
                self.add(self.two_terminal(VoltageSource if letter == "v" else CurrentSource, full, n1, n2, value),
                         where, shown=repr(raw) if not prefix else None)
            else:
                self.diode(toks[3:], where, raw, full, n1, n2, scope)
        except NetlistError:
            raise
        except PhysgradError as exc:
            raise NetlistError(f"{where}: {exc}") from None

    def two_terminal(self, kind, full, n1, n2, value):
        """``kind(full, n1, n2, value)``; the common case (distinct nodes, a finite value in range)
        without the element's own checks, which it repeats: ``full`` is folded and starts with the
        kind's letter (:meth:`element`), the nodes go through :func:`node_name` once per distinct
        spelling. Anything else takes the element's constructor and its error."""
        names = self.node_names
        a = names.get(n1)
        if a is None:
            a = names[n1] = node_name(n1)
        b = names.get(n2)
        if b is None:
            b = names[n2] = node_name(n2)
        if kind is ShockleyDiode:
            usual = isinstance(value, DiodeModel)
        else:
            usual = type(value) is float and value - value == 0.0 and not (value < 0.0 and kind in _NONNEGATIVE)
        if a == b or not usual:
            return kind(full, n1, n2, value)
        return prechecked(kind, full, a, b, value)

    def controlled(self, letter, toks, where, raw, full, prefix, nodemap, scope):
        """A linear controlled source: ``E``/``G`` (four nodes and a gain), ``F``/``H`` (two nodes, the
        controlling voltage source and a gain). The controlling source of an F or H inside a
        subcircuit is the instance's own copy (as ngspice flattens it); it is checked once the whole
        deck is read (:meth:`finish`)."""
        pos, kw = _split_args(toks[1:], where)
        special = [t for t in pos if fold(t) in ("poly", "table", "laplace", "freq", "value", "vol", "cur", "nand",
                                                "nor", "and", "or")]
        if kw or special:
            what = special[0] if special else next(iter(kw)) + "="
            raise NetlistError(f"{where}: {raw}: the {what!r} form (a nonlinear or behavioural controlled source) is "
                               "not supported; physgrad models the linear forms 'Ename n+ n- nc+ nc- gain', "
                               "'Fname n+ n- Vsense gain', 'Gname n+ n- nc+ nc- gm', 'Hname n+ n- Vsense r'")
        four = letter in "eg"
        usage = (f"'{letter.upper()}name n+ n- nc+ nc- {'gain' if letter == 'e' else 'gm'}'" if four else
                 f"'{letter.upper()}name n+ n- Vsense {'gain' if letter == 'f' else 'r'}'")
        if len(pos) != (5 if four else 4):
            raise NetlistError(f"{where}: {raw}: expected {usage}, got {len(pos) + 1} fields")
        gain = scope.number(pos[-1], where, f"gain of {raw}")
        n1, n2 = self.node(pos[0], prefix, nodemap), self.node(pos[1], prefix, nodemap)
        if four:
            c1, c2 = self.node(pos[2], prefix, nodemap), self.node(pos[3], prefix, nodemap)
            el = (VCVS if letter == "e" else VCCS)(full, n1, n2, c1, c2, gain)
        else:
            control = fold(pos[2]) if not prefix else f"v.{prefix}{fold(pos[2])}"
            if control[:1] != "v":
                raise NetlistError(f"{where}: {raw} is controlled by {pos[2]!r}, which is not a voltage source "
                                   "(SPICE's F and H elements sense the current of a V source)")
            el = (CCCS if letter == "f" else CCVS)(full, n1, n2, control, gain)
            self.controls.append((where, raw, control, pos[2]))
        self.add(el, where, shown=repr(raw) if not prefix else None)

    def conductance(self, rest, where, name, scope) -> float:
        """A resistor card's conductance (S): a normal double (its resistance 1/G must be finite too)."""
        g = self._conductance(rest, where, name, scope)
        if not sys.float_info.min <= g < math.inf:
            raise NetlistError(f"{where}: resistor {name}: conductance {g:g} S is outside the normal doubles "
                               f"({sys.float_info.min:.3g} to {sys.float_info.max:.3g} S): its resistance or its "
                               "conductance is not a finite double")
        return g

    def _conductance(self, rest, where, name, scope) -> float:
        if len(rest) == 1:  # 'Rname n1 n2 value': the common case, first
            try:
                r = parse_number(rest[0])
            except ValueError:
                r = None
            if r is not None and 0 < r < math.inf:
                return 1.0 / r
        pos, kw = _split_args(rest, where)
        if "r" in kw or "resistance" in kw:
            pos = pos + [kw.pop("r", None) or kw.pop("resistance")]
        if len(pos) != 1:
            raise NetlistError(f"{where}: expected 'Rname n1 n2 value', got {len(pos) + 3} fields")
        m = 1.0
        for k, v in kw.items():
            if k == "m":
                m = scope.number(v, where, f"multiplier of {name}")
                if m <= 0:
                    raise NetlistError(f"{where}: multiplier m of {name} must be > 0, got {m}")
            elif k in ("tc1", "tc2", "tc", "ac", "noisy", "tce"):
                pass  # temperature coefficients (no effect at 27 C), AC resistance
            elif k in ("temp", "dtemp"):
                t = scope.number(v, where, k)
                if (k == "temp" and t != 27.0) or (k == "dtemp" and t != 0.0):
                    raise NetlistError(f"{where}: {name}: {k}={t} (physgrad simulates 27 C only)")
            else:
                raise NetlistError(f"{where}: resistor {name}: unsupported parameter {k!r}")
        tok = pos[0]
        exact = re.match(r"^\{\s*1\s*/\s*([^}\s]+)\s*\}$", tok)
        if exact:
            try:
                g = parse_number(exact.group(1))
            except ValueError:
                g = None
            if g is not None:
                if not (math.isfinite(g) and g > 0):
                    raise NetlistError(f"{where}: resistor {name} needs a positive conductance, got {g}")
                return g * m
        if fold(tok) in self.models and not re.match(r"^[\d.+-]", tok):
            raise NetlistError(f"{where}: {name} uses model {shown(tok)}: semiconductor resistors are not supported")
        r = scope.number(tok, where, f"resistance of {name}")
        if r <= 0:
            raise NetlistError(f"{where}: resistor {name} needs a positive resistance, got {shown(tok)}"
                               + (f" (= {r:g})" if tok[:1] in "{'" else ""))
        return m / r

    def source_value(self, rest, where, name, scope) -> float:
        """DC value of an independent source (SPICE: the DC value if given, else the value at t = 0)."""
        toks = list(rest)
        dc = None
        t0 = None
        i = 0
        first = True
        while i < len(toks):
            t = fold(toks[i])
            if t in ("(", ")", ","):
                i += 1
                continue
            if t == "dc" or (t == "=" and False):
                if i + 1 >= len(toks):
                    raise NetlistError(f"{where}: {name}: DC needs a value")
                j = i + 1
                if toks[j] == "=":
                    j += 1
                dc = scope.number(toks[j], where, f"DC value of {name}")
                i = j + 1
            elif t == "ac":
                i += 1
                k = 0
                while i < len(toks) and k < 2 and _looks_numeric(toks[i], scope):
                    i += 1
                    k += 1
            elif t in ("distof1", "distof2"):
                i += 1
                while i < len(toks) and _looks_numeric(toks[i], scope):
                    i += 1
            elif t in ("sin", "pulse", "pwl", "exp", "sffm", "am", "trnoise", "trrandom", "pat"):
                args, i = _function_args(toks, i + 1, where, name)
                t0 = self.value_at_zero(t, args, where, name, scope)
            elif first:
                dc = scope.number(toks[i], where, f"value of {name}")
                i += 1
            else:
                raise NetlistError(f"{where}: {name}: cannot read {toks[i]!r} (expected [DC] value, AC, SIN, PULSE, "
                                   "PWL, EXP, SFFM or AM)")
            first = False
        if dc is not None:
            return dc
        return t0 if t0 is not None else 0.0

    def value_at_zero(self, kind, args, where, name, scope) -> float:
        if kind in ("trnoise", "trrandom", "pat"):
            raise NetlistError(f"{where}: {name}: {kind.upper()} sources have no DC value physgrad can use")
        if kind == "pwl" and args and fold(args[0]) == "file":
            raise NetlistError(f"{where}: {name}: PWL from a file is not supported")
        vals = [scope.number(a, where, f"{kind.upper()} argument of {name}") for a in args if "=" not in a]
        if not vals:
            raise NetlistError(f"{where}: {name}: {kind.upper()}() needs arguments")
        if kind == "sin":  # VO + VA sin(PHASE) for t <= TD (PHASE in degrees, 6th argument)
            vo = vals[0]
            va = vals[1] if len(vals) > 1 else 0.0
            phase = vals[5] if len(vals) > 5 else 0.0
            return vo + va * math.sin(math.radians(phase))
        if kind == "pwl":
            if len(vals) < 2:
                raise NetlistError(f"{where}: {name}: PWL needs time-value pairs")
            return vals[1]
        if kind == "sffm":
            if len(vals) > 5:
                raise NetlistError(f"{where}: {name}: SFFM with phases is not supported")
            return vals[0]
        if kind == "am":
            if len(vals) > 5:
                raise NetlistError(f"{where}: {name}: AM with phases is not supported")
            return 0.0
        return vals[0]  # PULSE: V1; EXP: V1

    def diode(self, rest, where, raw, full, n1, n2, scope):
        if len(rest) == 1 and full not in self.names:  # 'Dname anode cathode model': the common case, first
            self.diodes.append((len(self.elements), where, full, n1, n2, fold(rest[0]), 1.0))
            self.add(None, where)
            self.names[full] = where
            return
        pos, kw = _split_args(rest, where)
        if not pos:
            raise NetlistError(f"{where}: expected 'Dname anode cathode model'")
        model = fold(pos[0])
        scale = 1.0
        extra = pos[1:]
        for tok in extra:
            if fold(tok) == "off":
                continue
            scale *= scope.number(tok, where, f"area of {raw}")
        for k, v in kw.items():
            if k in ("area", "m"):
                scale *= scope.number(v, where, f"{k} of {raw}")
            elif k == "ic":
                pass  # an initial condition: no effect on the operating point
            elif k in ("temp", "dtemp"):
                t = scope.number(v, where, k)
                if (k == "temp" and t != 27.0) or (k == "dtemp" and t != 0.0):
                    raise NetlistError(f"{where}: {raw}: {k}={t} (physgrad simulates 27 C only)")
            else:
                raise NetlistError(f"{where}: diode {raw}: unsupported instance parameter {k!r}")
        if not (scale > 0 and math.isfinite(scale)):
            raise NetlistError(f"{where}: diode {raw}: area and m must be > 0, got {scale}")
        if full in self.names:
            raise NetlistError(f"{where}: duplicate element name {raw!r} (first defined at {self.names[full]})")
        self.diodes.append((len(self.elements), where, full, n1, n2, model, scale))
        self.add(None, where)
        self.names[full] = where

    def transistor(self, letter, toks, where, raw, full, prefix, nodemap, scope):
        """An ``M`` (4 nodes) or ``Q`` (3 nodes, an optional substrate node) card; its model is
        resolved in :meth:`finish`."""
        pos, kw = _split_args(toks[1:], where)
        count = 4 if letter == "m" else 3
        substrate = None
        if letter == "q" and len(pos) > 4 and fold(pos[3]) not in self.models:
            substrate = self.node(pos[3], prefix, nodemap)  # the substrate node: gmin only (ISS = 0)
            pos = pos[:3] + pos[4:]
        if len(pos) < count + 1:
            raise NetlistError(f"{where}: expected '{'Mname nd ng ns nb model' if letter == 'm' else 'Qname nc nb ne model'}"
                               " [parameters]'")
        nodes = tuple(self.node(t, prefix, nodemap) for t in pos[:count]) + ((substrate,) if substrate else ())
        area = 1.0
        for tok in pos[count + 1:]:
            if fold(tok) != "off":
                area *= scope.number(tok, where, f"area of {raw}")
        inst = {k: scope.number(v if isinstance(v, str) else v[0], where, f"{k} of {raw}") for k, v in kw.items()
                if k != "ic"}
        if full in self.names:
            raise NetlistError(f"{where}: duplicate element name {raw!r} (first defined at {self.names[full]})")
        self.transistor_cards.append((len(self.elements), where, full, letter, nodes, fold(pos[count]), area, inst))
        self.add(None, where)
        self.names[full] = where

    def finish_transistors(self, gmin: float):
        from physgrad.circuit import transistor_cards as tc

        for pos, where, name, letter, nodes, model, area, inst in self.transistor_cards:
            kinds = tc.MOS_KINDS if letter == "m" else tc.BJT_KINDS
            if model not in self.models:
                raise NetlistError(f"{where}: {name} uses unknown model {model!r} (no .model line defines it)")
            kind, params, mwhere, _ = self.models[model]
            if kind not in kinds:
                raise NetlistError(f"{where}: {name} uses model {model!r} of type {kind!r} ({mwhere}), not "
                                   f"{' or '.join(k.upper() for k in kinds)}")
            number = (lambda text, what: self.glob.number(text if isinstance(text, str) else text[0], mwhere, what))
            try:
                if letter == "m":
                    mm, ld, js = tc.mosfet_model(model, kind, params, number)
                    self.elements[pos] = tc.mosfet_instance(name, nodes, tc.with_gmin(mm, gmin), ld, js, inst)
                else:
                    bm = tc.bjt_model(model, kind, params, number)
                    self.elements[pos] = tc.bjt_instance(name, nodes, tc.with_gmin(bm, gmin), area, inst)
            except NetlistError:
                raise
            except PhysgradError as exc:
                raise NetlistError(f"{where}: {exc}") from None

    # --- pass 3: diodes and the circuit -------------------------------------------------------
    def finish(self, title: str, filename: str) -> Circuit:
        for key, (value, where) in self.options.items():
            if key in ("temp", "tnom") and value != 27.0:
                raise NetlistError(f"{where}: {key} = {value} C: physgrad simulates the nominal 27 C only")
            if key in ("gshunt", "rshunt") and value != 0.0:
                raise NetlistError(f"{where}: option {key} (a conductance from every node to ground) is not supported")
        gmin = self.options.get("gmin", (NGSPICE_GMIN, ""))[0]
        built: dict = {}
        scales_of: dict = {}  # model -> how many (model, scale) specs were built (labels of scaled copies)
        extra = []
        for pos, where, name, a, c, model, scale in self.diodes:
            if model not in self.models:
                raise NetlistError(f"{where}: diode {name} uses unknown model {model!r} (no .model line defines it)")
            kind, params, mwhere, _ = self.models[model]
            if kind != "d":
                raise NetlistError(f"{where}: diode {name} uses model {model!r} of type {kind!r} ({mwhere}), not D")
            try:
                spec = built.get((model, scale))
                if spec is None:
                    index = scales_of.get(model, 0)
                    scales_of[model] = index + 1
                    spec = built[(model, scale)] = _build_model(model, params, mwhere, gmin, scale, self.glob, index)
                dmodel, rs = spec
                if isinstance(dmodel, float):
                    self.elements[pos] = self.two_terminal(IdealDiode, name, a, c, dmodel)
                elif rs > 0:
                    inner = f"{name}.rs"
                    self.elements[pos] = ShockleyDiode(name, inner, c, dmodel)
                    extra.append((Resistor(f"r.{name}", a, inner, 1.0 / rs), where))
                else:
                    self.elements[pos] = self.two_terminal(ShockleyDiode, name, a, c, dmodel)
            except NetlistError:
                raise
            except PhysgradError as exc:
                raise NetlistError(f"{where}: {exc}") from None
        self.finish_transistors(gmin)
        for el, where in extra:
            self.add(el, where, generated=True)
        for where, raw, source in self.couplings:
            if source not in self.names:
                raise NetlistError(f"{where}: {raw} couples inductor {source[2:]!r}, which the deck does not define")
        for where, raw, control, written in self.controls:
            if control not in self.names:
                raise NetlistError(f"{where}: {raw} is controlled by the current of {written!r}, which the deck does "
                                   "not define")
        elements = [e for e in self.elements if e is not None]
        if not elements:
            raise NetlistError(f"{filename}: the netlist has no elements")
        trainable = self.trainable
        if trainable is None and self.generated:
            trainable = [e.name for e in elements if isinstance(e, Resistor) and e.name not in self.generated]
        try:
            circuit = Circuit(tuple(elements), self.title if self.title is not None else title, (),
                              tuple(trainable) if trainable is not None else None)
        except PhysgradError as exc:
            raise NetlistError(f"{filename}: {exc}") from None
        for node, value, where in self.targets:
            try:
                circuit = circuit.with_targets(circuit.targets + ((node, value),))
            except PhysgradError as exc:
                raise NetlistError(f"{where}: {exc}") from None
        return circuit


_NONNEGATIVE = (Resistor, IdealDiode)  # conductance, vth >= 0


def _looks_numeric(tok: str, scope: _Scope) -> bool:
    if tok[:1] in "{'":
        return True
    try:
        parse_number(tok)
        return True
    except ValueError:
        return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tok)) and scope.has(tok) and fold(tok) not in (
            "dc", "ac", "sin", "pulse", "pwl", "exp", "sffm", "am")


def _function_args(toks, i, where, name):
    """Arguments of ``SIN(...)`` (or ``SIN ...`` without parentheses) from token ``i``: ``(args, next i)``."""
    args = []
    if i < len(toks) and toks[i] == "(":
        depth = 0
        j = i
        while j < len(toks):
            if toks[j] == "(":
                depth += 1
            elif toks[j] == ")":
                depth -= 1
                if depth == 0:
                    break
            elif toks[j] != ",":
                args.append(toks[j])
            j += 1
        if j == len(toks):
            raise NetlistError(f"{where}: {name}: unbalanced parenthesis")
        merged = []
        for a in args:  # key=value inside (PWL r=..., td=...)
            if a == "=" and merged:
                merged[-1] += "="
            elif merged and merged[-1].endswith("="):
                merged[-1] += a
            else:
                merged.append(a)
        return merged, j + 1
    while i < len(toks) and toks[i] not in ("(", ")") and fold(toks[i]) not in ("dc", "ac", "distof1", "distof2"):
        if toks[i] != ",":
            args.append(toks[i])
        i += 1
    return args, i


def _build_model(name, params, where, gmin, scale, scope, index):
    """``(model, rs)``: an ideal diode's threshold (float) or a :class:`DiodeModel`, and the series
    resistance (ohm) of this instance (``RS / scale``)."""
    p = {}
    for k, v in params.items():
        if k in DIODE_METADATA:
            continue
        p[k] = scope.number(v, where, f"diode model {name} parameter {k}")
    if p.pop("ideal", 0.0):
        vth = p.pop("vth", 0.0)
        if p:
            raise NetlistError(f"{where}: ideal diode model {name} takes only vth, got {sorted(p)}")
        if vth < 0:
            raise NetlistError(f"{where}: ideal diode model {name} has negative vth={vth}")
        return float(vth), 0.0
    level = p.pop("level", 1.0)
    if level != 1.0:
        raise NetlistError(f"{where}: diode model {name}: level {level:g} is not supported (physgrad models level 1)")
    if "tnom" in p and p["tnom"] != 27.0:
        raise NetlistError(f"{where}: diode model {name}: tnom = {p['tnom']} C differs from the simulated 27 C")
    for k in ("ikf", "ikr", "isr", "jtun", "jtunsw", "nbv", "ibvl", "nbvl"):
        if p.pop(k, 0.0) != 0.0:
            raise NetlistError(f"{where}: diode model {name}: parameter {k.upper()} (high injection, "
                               "recombination, tunnelling or soft breakdown) is not supported")
    for k in ("isw", "jsw", "ns"):  # sidewall current: no effect with the instance's default PJ = 0
        p.pop(k, None)
    for k in list(p):
        if k in DIODE_DC_IRRELEVANT:
            p.pop(k)
    is_ = p.pop("is", p.pop("js", 1e-14))
    rs = p.pop("rs", 0.0)
    bv = p.pop("bv", math.inf)
    ibv = p.pop("ibv", 1e-3)
    unknown = set(p) - {"n", "vt"}
    if unknown:
        raise NetlistError(
            f"{where}: diode model {name}: unsupported parameter(s) {sorted(unknown)} (physgrad models IS, N, RS, "
            "BV/IBV (refusing answers in breakdown); use ideal=1 vth=... for ideal diodes)"
        )
    if rs < 0:
        raise NetlistError(f"{where}: diode model {name}: RS must be >= 0, got {rs}")
    label = name if scale == 1.0 else f"{name}_x{index}"
    try:
        model = DiodeModel(label, IS=is_ * scale, N=p.get("n", 1.0), gmin=gmin, vt=p.get("vt", NGSPICE_VT),
                           bv=bv if bv > 0 else math.inf, ibv=ibv * scale)
    except PhysgradError as exc:
        raise NetlistError(f"{where}: {exc}") from None
    return model, rs / scale


def read_deck_text(text: str, filename: str = "<netlist>", base: Optional[Union[str, Path]] = None,
                   _self: Optional[Path] = None, *, limits: Optional[ReaderLimits] = None, **overrides) -> Deck:
    """Read netlist ``text`` (``.include`` paths relative to ``base``, default the working directory).

    ``limits`` and keyword ``overrides`` (``max_bytes``, ``max_lines``, ``max_files``,
    ``max_include_depth``, ``max_subckt_depth``, ``max_elements``, ``max_instances``,
    ``max_eval_steps``, ``max_eval_steps_per_value``) set the :class:`ReaderLimits`.
    """
    if not isinstance(text, str):
        raise BadArgumentError(f"netlist text must be a string, got {type(text).__name__}")
    if not isinstance(filename, str):
        raise BadArgumentError(f"filename must be a string, got {type(filename).__name__}")
    limits = reader_limits(limits, **overrides)
    with _no_cyclic_gc():
        return _read_deck(text, filename, base, _self, limits)


@contextmanager
def _no_cyclic_gc():
    """Pause Python's cyclic garbage collector: reading allocates ~10 objects per card and no
    cycles worth collecting, and the collector's passes over them cost a third of the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_deck(text: str, filename: str, base, _self, limits: ReaderLimits) -> Deck:
    loader = _Loader(limits)
    if len(text) > limits.max_bytes:
        raise NetlistError(f"{filename}: larger than the limit of {limits.max_bytes:,} bytes (raise it with "
                           "max_bytes=...)")
    title, lines = _file_lines(text, filename, top=True)
    loader.account(text, text.count("\n") + 1, filename, None)
    base_path = Path(os.path.realpath(base)) if base is not None else Path.cwd()
    lines = loader.expand(lines, base_path, ((_self, ""),) if _self is not None else ())
    builder = _Builder(loader.notes, limits)
    top = builder.split(lines)
    builder.check_size(top, filename)
    builder.params(top, builder.glob)
    builder.instantiate(top, builder.glob)
    circuit = builder.finish(title, filename)
    return Deck(circuit, tuple(builder.notes))


def parse_netlist(text: str, filename: str = "<netlist>", **limits) -> Circuit:
    """Parse netlist ``text``; errors name ``filename`` and the line (includes relative to the
    working directory). Keywords: the :class:`ReaderLimits`."""
    return read_deck_text(text, filename, **limits).circuit


def read_deck(path: Union[str, os.PathLike], *, limits: Optional[ReaderLimits] = None, **overrides) -> Deck:
    """Read a netlist file with the notes on what was ignored (see the module docstring). Only a
    regular file is read (a folder, device, FIFO or symbolic-link loop is refused); ``limits`` and
    keyword ``overrides`` set the :class:`ReaderLimits`."""
    if not isinstance(path, (str, os.PathLike)):
        raise BadArgumentError(f"a netlist path must be a string or path, got {type(path).__name__}")
    limits = reader_limits(limits, **overrides)
    path = Path(path)
    text = _read_text(path, str(path), limits.max_bytes)
    real = Path(os.path.realpath(path))
    return read_deck_text(text, str(path), base=real.parent, _self=real, limits=limits)


def read_netlist(path: Union[str, os.PathLike], **limits) -> Circuit:
    """Read a netlist file (see the module docstring for the syntax). Keywords: the
    :class:`ReaderLimits`."""
    return read_deck(path, **limits).circuit


def fmt(x: float) -> str:
    """Shortest text that reads back as exactly ``x``."""
    return repr(float(x))


def _resistance_text(g: float) -> str:
    r = 1.0 / g
    if 1.0 / float(fmt(r)) == g:
        return fmt(r)
    return "{1/" + fmt(g) + "}"


def circuit_transistor_types() -> tuple:
    from physgrad.circuit.elements import TRANSISTOR_TYPES
    return TRANSISTOR_TYPES


def write_netlist(circuit: Circuit) -> str:
    """Netlist text for ``circuit``: runnable by ngspice and read back exactly by :func:`parse_netlist`.

    Raises :class:`PhysgradError` for open resistors (conductance 0: SPICE has no infinite R).
    """
    if not isinstance(circuit, Circuit):
        raise BadArgumentError(f"write_netlist needs a physgrad Circuit, got {type(circuit).__name__}")
    out = [circuit.title, "* written by physgrad", f".options {TIGHT_OPTIONS}"]
    shk_models = {}
    gmins = {d.model.gmin for d in circuit.of_type(ShockleyDiode)} | {t.model.gmin for t in circuit.transistors}
    if len(gmins) > 1:
        raise PhysgradError("Shockley diodes or transistors with different gmin cannot be written: gmin is a global "
                            ".options value")
    if gmins and gmins != {NGSPICE_GMIN}:
        out[-1] += f" gmin={fmt(gmins.pop())}"
    ideal_models = {}
    tr_models = {}
    for el in circuit.elements:
        if isinstance(el, circuit_transistor_types()):
            from physgrad.circuit.transistor_cards import instance_card
            prev = tr_models.setdefault(el.model.name, el.model)
            if prev != el.model:
                raise PhysgradError(f"two different transistor models are both called {el.model.name!r}")
            out.append(instance_card(el))
        elif isinstance(el, Resistor):
            if el.conductance == 0:
                raise PhysgradError(f"resistor {el.name} is open (conductance 0 S): a netlist cannot express it")
            out.append(f"{el.name} {el.n1} {el.n2} {_resistance_text(el.conductance)}")
        elif isinstance(el, VoltageSource):
            out.append(f"{el.name} {el.pos} {el.neg} DC {fmt(el.value)}")
        elif isinstance(el, CurrentSource):
            out.append(f"{el.name} {el.pos} {el.neg} DC {fmt(el.value)}")
        elif isinstance(el, (VCVS, VCCS)):
            out.append(f"{el.name} {el.pos} {el.neg} {el.cpos} {el.cneg} {fmt(el.gain)}")
        elif isinstance(el, (CCCS, CCVS)):
            out.append(f"{el.name} {el.pos} {el.neg} {el.control} {fmt(el.gain)}")
        elif isinstance(el, ShockleyDiode):
            prev = shk_models.setdefault(el.model.name, el.model)
            if prev != el.model:
                raise PhysgradError(f"two different diode models are both called {el.model.name!r}")
            out.append(f"{el.name} {el.anode} {el.cathode} {el.model.name}")
        elif isinstance(el, IdealDiode):
            model = ideal_models.setdefault(el.vth, f"pg_ideal{len(ideal_models)}")
            out.append(f"* ideal diode {el.name} (vth = {fmt(el.vth)} V): for ngspice a steep Shockley diode "
                       f"(IS={STEEP_IS:g} N={STEEP_N:g})" + (" in series with a source at vth" if el.vth else ""))
            out.append(f"{PRAGMA}{el.name} {el.anode} {el.cathode} {model}")
            out.append(NGSPICE_ONLY_BEGIN)
            if el.vth:
                mid = f"pgx_{el.name}_th"
                out.append(f"{el.name} {el.anode} {mid} pg_steep")
                out.append(f"vpgx_{el.name} {mid} {el.cathode} DC {fmt(el.vth)}")
            else:
                out.append(f"{el.name} {el.anode} {el.cathode} pg_steep")
            out.append(NGSPICE_ONLY_END)
    for name, m in shk_models.items():
        bv = f" BV={fmt(m.bv)} IBV={fmt(m.ibv)}" if math.isfinite(m.bv) else ""
        if m.vt == NGSPICE_VT:
            out.append(f".model {name} D(IS={fmt(m.IS)} N={fmt(m.N)}{bv})")
        else:  # ngspice has no vt parameter; only N * vt enters the diode law
            out.append(f"* model {name}: vt = {fmt(m.vt)} V; for ngspice N is scaled by vt / {NGSPICE_VT!r}")
            out.append(f"{PRAGMA}.model {name} D(IS={fmt(m.IS)} N={fmt(m.N)} vt={fmt(m.vt)}{bv})")
            out += [NGSPICE_ONLY_BEGIN, f".model {name} D(IS={fmt(m.IS)} N={fmt(m.N * m.vt / NGSPICE_VT)}{bv})",
                    NGSPICE_ONLY_END]
    if tr_models:
        from physgrad.circuit.transistor_cards import model_card
        out += [model_card(m) for m in tr_models.values()]
    for vth, name in ideal_models.items():
        out.append(f"{PRAGMA}.model {name} D(ideal=1 vth={fmt(vth)})")
    if ideal_models:
        out += [NGSPICE_ONLY_BEGIN, f".model pg_steep D(IS={STEEP_IS:g} N={STEEP_N:g})", NGSPICE_ONLY_END]
    for node, value in circuit.targets:
        out.append(f"{PRAGMA}.target {node} {fmt(value)}")
    if circuit.trainable is not None:
        out.append(f"{PRAGMA}.trainable " + " ".join(circuit.trainable))
    out += [".op", ".end", ""]
    return "\n".join(out)

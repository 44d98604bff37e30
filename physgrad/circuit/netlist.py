"""SPICE-subset netlists: read and write.

Reading (case-insensitive; the first line is the title, as in SPICE)::

    * comment                       ; inline comment
    Rname n1 n2 value               resistance in ohm (> 0); or {1/G} with G the conductance in S
    Vname n+ n- [DC] value          v(n+) - v(n-) = value (V)
    Iname n+ n- [DC] value          value (A) flows from n+ through the source to n-
    Dname anode cathode model
    .model name D(IS=1e-14 N=1)     Shockley diode (IS in A, N the emission coefficient)
    .model name D(ideal=1 vth=0.3)  ideal diode with threshold vth >= 0 (V)
    .options gmin=1e-12 ...         gmin (S) across every Shockley diode, as in ngspice
    .target NODE VALUE              output node and its target (V): declares the cost
    .trainable R1 R2 ...            trainable resistors (default: all)
    .op  .end
    + continuation lines

Numbers take the engineering suffixes f p n u m k meg g t (trailing unit letters are ignored, as in
SPICE: ``10kohm``, ``5V``). Every error names the file and line.

Writing produces a file that ngspice runs (``ngspice -b file.cir``) *and* that :func:`read_netlist`
reads back to an equal :class:`Circuit`: tight ``.options`` (ngspice is silently
wrong at its default tolerances with near-ideal diodes, see :data:`physgrad.circuit.ngspice.TIGHT_OPTIONS`), ideal diodes exported to ngspice as steep Shockley
diodes (in series with a source at the threshold), the physgrad description of those diodes kept in
``*@physgrad`` comment lines and ngspice's replacement between ``*@ngspice-only`` markers (physgrad
skips it).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from physgrad.circuit.elements import (
    NGSPICE_GMIN,
    NGSPICE_VT,
    Circuit,
    CurrentSource,
    DiodeModel,
    IdealDiode,
    Resistor,
    ShockleyDiode,
    VoltageSource,
)
from physgrad.types import PhysgradError

SUFFIXES = {"f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "meg": 1e6, "g": 1e9, "t": 1e12}
_NUMBER = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)(meg|mil|[fpnumkgt])?([a-z]*)$")
# ngspice's replacement for ideal diodes: IS (A) and N chosen so the forward drop at 1 mA is ~0.4 mV.
STEEP_IS = 1e-9
STEEP_N = 1e-3
TIGHT_OPTIONS = "reltol=1e-6 vntol=1e-9 abstol=1e-15"
PRAGMA = "*@physgrad "
NGSPICE_ONLY_BEGIN = "*@ngspice-only begin"
NGSPICE_ONLY_END = "*@ngspice-only end"


class NetlistError(PhysgradError):
    """A malformed netlist; the message starts with ``file:line:``."""


@dataclass(frozen=True)
class _Line:
    number: int
    text: str


def parse_number(token: str) -> float:
    """SPICE number with engineering suffix (``4.7k``, ``1meg``, ``10u``, ``5V``); ValueError if not."""
    m = _NUMBER.match(token.strip().lower())
    if not m:
        raise ValueError(f"not a number: {token!r}")
    value = float(m.group(1))
    suffix = m.group(2)
    if suffix == "mil":
        raise ValueError(f"the 'mil' suffix is not supported: {token!r}")
    if suffix:
        value *= SUFFIXES[suffix]
    return value


def _logical_lines(text: str, filename: str):
    """Join ``+`` continuations, strip comments; yield :class:`_Line` (first line = title)."""
    raw = text.splitlines()
    if not raw:
        raise NetlistError(f"{filename}:1: empty netlist (the first line is the title)")
    title = raw[0].strip()
    lines: list[_Line] = []
    skipping = False
    for i, line in enumerate(raw[1:], start=2):
        stripped = line.strip()
        low = stripped.lower()
        if low.startswith(NGSPICE_ONLY_BEGIN):
            skipping = True
            continue
        if low.startswith(NGSPICE_ONLY_END):
            skipping = False
            continue
        if skipping:
            continue
        if low.startswith(PRAGMA):
            stripped = stripped[len(PRAGMA):].strip()
        elif stripped.startswith("*") or not stripped:
            continue
        stripped = stripped.split(";")[0].strip()
        if not stripped:
            continue
        if stripped.startswith("+"):
            if not lines:
                raise NetlistError(f"{filename}:{i}: continuation line '+' with nothing to continue")
            prev = lines[-1]
            lines[-1] = _Line(prev.number, prev.text + " " + stripped[1:].strip())
            continue
        lines.append(_Line(i, stripped))
    if skipping:
        raise NetlistError(f"{filename}: '{NGSPICE_ONLY_BEGIN}' without '{NGSPICE_ONLY_END}'")
    return title, lines


def _model_params(text: str, where: str) -> tuple[str, str, dict]:
    m = re.match(r"^\.model\s+(\S+)\s+([a-z]+)\s*(?:\((.*)\)|(.*))$", text, re.IGNORECASE)
    if not m:
        raise NetlistError(f"{where}: malformed .model line (expected '.model NAME D(PARAM=VALUE ...)')")
    name, kind = m.group(1).lower(), m.group(2).lower()
    body = (m.group(3) if m.group(3) is not None else m.group(4) or "").replace(",", " ")
    body = re.sub(r"\s*=\s*", "=", body.strip())
    params = {}
    for tok in body.split():
        if "=" not in tok:
            raise NetlistError(f"{where}: .model parameter {tok!r} is not NAME=VALUE")
        k, v = tok.split("=", 1)
        try:
            params[k.lower()] = parse_number(v)
        except ValueError:
            raise NetlistError(f"{where}: .model parameter {k}: {v!r} is not a number") from None
    return name, kind, params


def _value(tok: str, where: str, what: str) -> float:
    try:
        x = parse_number(tok)
    except ValueError:
        raise NetlistError(f"{where}: {what} {tok!r} is not a number") from None
    if not math.isfinite(x):
        raise NetlistError(f"{where}: {what} must be finite, got {tok!r}")
    return x


def _conductance(tok: str, where: str, name: str) -> float:
    m = re.match(r"^\{\s*1\s*/\s*([^}\s]+)\s*\}$", tok)
    if m:
        g = _value(m.group(1), where, f"conductance of {name}")
        if g <= 0:
            raise NetlistError(f"{where}: resistor {name} needs a positive conductance, got {g}")
        return g
    if tok.startswith("{"):
        raise NetlistError(f"{where}: only the expression {{1/G}} (G in S) is supported, got {tok!r}")
    r = _value(tok, where, f"resistance of {name}")
    if r <= 0:
        raise NetlistError(f"{where}: resistor {name} needs a positive resistance, got {tok!r}")
    return 1.0 / r


def _source_value(toks: list, where: str, name: str) -> float:
    rest = toks[3:]
    if rest and rest[0].lower() == "dc":
        rest = rest[1:]
    if len(rest) != 1:
        raise NetlistError(f"{where}: source {name} needs 'n+ n- [DC] value' (only DC sources are supported)")
    return _value(rest[0], where, f"value of {name}")


def parse_netlist(text: str, filename: str = "<netlist>") -> Circuit:
    """Parse netlist ``text``; errors name ``filename`` and the line."""
    if "\x00" in text:
        raise NetlistError(f"{filename}: not a text netlist")
    title, lines = _logical_lines(text, filename)
    models: dict = {}
    options: dict = {}
    pending = []  # (where, name, anode, cathode, model)
    elements = []
    names: dict = {}
    targets = []
    trainable: Optional[list] = None
    ended = False
    for ln in lines:
        where = f"{filename}:{ln.number}"
        if ended:
            raise NetlistError(f"{where}: text after .end")
        toks = ln.text.split()
        head = toks[0].lower()
        try:
            if head.startswith("."):
                if head == ".end":
                    ended = True
                elif head == ".model":
                    name, kind, params = _model_params(ln.text, where)
                    if kind != "d":
                        raise NetlistError(f"{where}: only diode models (D) are supported, got {kind!r}")
                    if name in models:
                        raise NetlistError(f"{where}: model {name!r} defined twice")
                    models[name] = (where, params)
                elif head == ".options" or head == ".option":
                    for tok in re.sub(r"\s*=\s*", "=", " ".join(toks[1:])).split():
                        if "=" in tok:
                            k, v = tok.split("=", 1)
                            options[k.lower()] = _value(v, where, f"option {k}")
                elif head == ".target":
                    if len(toks) != 3:
                        raise NetlistError(f"{where}: expected '.target NODE VALUE'")
                    targets.append((toks[1], _value(toks[2], where, "target value"), where))
                elif head == ".trainable":
                    trainable = (trainable or []) + [t.lower() for t in toks[1:]]
                elif head in (".op", ".title"):
                    pass
                else:
                    raise NetlistError(f"{where}: unsupported directive {toks[0]!r} (physgrad reads a DC subset)")
                continue
            name = head
            if name in names:
                raise NetlistError(f"{where}: duplicate element name {toks[0]!r} (first defined at {names[name]})")
            names[name] = where
            letter = name[0]
            if letter == "r":
                if len(toks) != 4:
                    raise NetlistError(f"{where}: expected 'Rname n1 n2 value', got {len(toks)} fields")
                elements.append(Resistor(name, toks[1], toks[2], _conductance(toks[3], where, name)))
            elif letter == "v":
                if len(toks) < 4:
                    raise NetlistError(f"{where}: expected 'Vname n+ n- [DC] value'")
                elements.append(VoltageSource(name, toks[1], toks[2], _source_value(toks, where, name)))
            elif letter == "i":
                if len(toks) < 4:
                    raise NetlistError(f"{where}: expected 'Iname n+ n- [DC] value'")
                elements.append(CurrentSource(name, toks[1], toks[2], _source_value(toks, where, name)))
            elif letter == "d":
                if len(toks) != 4:
                    raise NetlistError(f"{where}: expected 'Dname anode cathode model'")
                pending.append((len(elements), where, name, toks[1], toks[2], toks[3].lower()))
                elements.append(None)
            else:
                raise NetlistError(f"{where}: unknown element letter {toks[0][0]!r} in {toks[0]!r} (supported: R V I D)")
        except NetlistError:
            raise
        except PhysgradError as exc:
            raise NetlistError(f"{where}: {exc}") from None
    gmin = options.get("gmin", NGSPICE_GMIN)
    built = {}
    for pos, where, name, a, c, model in pending:
        if model not in models:
            raise NetlistError(f"{where}: diode {name} uses unknown model {model!r} (no .model line defines it)")
        try:
            kind = built.setdefault(model, _build_model(model, models[model], gmin))
            elements[pos] = (IdealDiode(name, a, c, kind) if isinstance(kind, float)
                             else ShockleyDiode(name, a, c, kind))
        except NetlistError:
            raise
        except PhysgradError as exc:
            raise NetlistError(f"{where}: {exc}") from None
    try:
        circuit = Circuit(tuple(elements), title, (), tuple(trainable) if trainable is not None else None)
    except PhysgradError as exc:
        raise NetlistError(f"{filename}: {exc}") from None
    for node, value, where in targets:
        try:
            circuit = circuit.with_targets(circuit.targets + ((node, value),))
        except PhysgradError as exc:
            raise NetlistError(f"{where}: {exc}") from None
    if not elements:
        raise NetlistError(f"{filename}: the netlist has no elements")
    return circuit


def _build_model(name, entry, gmin):
    """An ideal diode's threshold (float) or a :class:`DiodeModel`."""
    where, params = entry
    p = dict(params)
    if p.pop("ideal", 0.0):
        vth = p.pop("vth", 0.0)
        if p:
            raise NetlistError(f"{where}: ideal diode model {name} takes only vth, got {sorted(p)}")
        if vth < 0:
            raise NetlistError(f"{where}: ideal diode model {name} has negative vth={vth}")
        return float(vth)
    unknown = set(p) - {"is", "n", "vt"}
    if unknown:
        raise NetlistError(
            f"{where}: diode model {name}: unsupported parameter(s) {sorted(unknown)} (physgrad models IS and N; "
            "use ideal=1 vth=... for ideal diodes)"
        )
    try:
        return DiodeModel(name, IS=p.get("is", 1e-14), N=p.get("n", 1.0), gmin=gmin, vt=p.get("vt", NGSPICE_VT))
    except PhysgradError as exc:
        raise NetlistError(f"{where}: {exc}") from None


def read_netlist(path: Union[str, Path]) -> Circuit:
    """Read a netlist file (see the module docstring for the syntax)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NetlistError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise NetlistError(f"{path}: not a text file") from None
    return parse_netlist(text, str(path))


def fmt(x: float) -> str:
    """Shortest text that reads back as exactly ``x``."""
    return repr(float(x))


def _resistance_text(g: float) -> str:
    r = 1.0 / g
    if 1.0 / float(fmt(r)) == g:
        return fmt(r)
    return "{1/" + fmt(g) + "}"


def write_netlist(circuit: Circuit) -> str:
    """Netlist text for ``circuit``: runnable by ngspice and read back exactly by :func:`parse_netlist`.

    Raises :class:`PhysgradError` for open resistors (conductance 0: SPICE has no infinite R).
    """
    out = [circuit.title, "* written by physgrad", f".options {TIGHT_OPTIONS}"]
    shk_models = {}
    gmins = {d.model.gmin for d in circuit.of_type(ShockleyDiode)}
    if len(gmins) > 1:
        raise PhysgradError("Shockley diodes with different gmin cannot be written: gmin is a global .options value")
    if gmins and gmins != {NGSPICE_GMIN}:
        out[-1] += f" gmin={fmt(gmins.pop())}"
    ideal_models = {}
    for el in circuit.elements:
        if isinstance(el, Resistor):
            if el.conductance == 0:
                raise PhysgradError(f"resistor {el.name} is open (conductance 0 S): a netlist cannot express it")
            out.append(f"{el.name} {el.n1} {el.n2} {_resistance_text(el.conductance)}")
        elif isinstance(el, VoltageSource):
            out.append(f"{el.name} {el.pos} {el.neg} DC {fmt(el.value)}")
        elif isinstance(el, CurrentSource):
            out.append(f"{el.name} {el.pos} {el.neg} DC {fmt(el.value)}")
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
        if m.vt == NGSPICE_VT:
            out.append(f".model {name} D(IS={fmt(m.IS)} N={fmt(m.N)})")
        else:  # ngspice has no vt parameter; only N * vt enters the diode law
            out.append(f"* model {name}: vt = {fmt(m.vt)} V; for ngspice N is scaled by vt / {NGSPICE_VT!r}")
            out.append(f"{PRAGMA}.model {name} D(IS={fmt(m.IS)} N={fmt(m.N)} vt={fmt(m.vt)})")
            out += [NGSPICE_ONLY_BEGIN, f".model {name} D(IS={fmt(m.IS)} N={fmt(m.N * m.vt / NGSPICE_VT)})",
                    NGSPICE_ONLY_END]
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

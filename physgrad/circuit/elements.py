"""Circuits as graphs: named nodes (ground ``"0"``) and tables of elements.

Sign conventions (written once, here):

- Node voltages are measured against ground ``"0"`` (alias ``"gnd"``), in V.
- The current of every element flows **from its first node, through the element, to its second
  node** (for diodes: anode to cathode), in A. This is SPICE's convention for ``i(Vname)`` and for
  the value of an independent current source ``Iname n+ n- value``: the source draws ``value`` out
  of ``n+`` and pushes it into ``n-``.
- A voltage source ``Vname n+ n- value`` fixes ``v(n+) - v(n-) = value``.
- An ideal diode with threshold ``vth >= 0`` conducts (current >= 0) only when
  ``v(anode) - v(cathode) = vth``; otherwise ``v(anode) - v(cathode) <= vth`` and no current flows.
- A Shockley diode carries ``I(v) = IS (exp(v / (N vt)) - 1) + gmin v`` with
  ``v = v(anode) - v(cathode)``; ``gmin`` and ``vt`` default to ngspice's values so that both tools
  solve the same physics.

Names of nodes and elements are case-insensitive in ASCII only (``A``-``Z`` fold to ``a``-``z`` and
names are stored folded, as ngspice does); other characters are kept as they are, so the Kelvin sign
``K`` (U+212A) and ``k`` stay distinct names. An element's name starts with its SPICE letter (R, D,
V, I, M, Q).
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from functools import cached_property
from itertools import chain, repeat
from operator import itemgetter
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import scipy.sparse as sp

from physgrad.types import BadArgumentError, PhysgradError

GROUND = "0"
GROUND_ALIASES = ("0", "gnd")
NGSPICE_GMIN = 1e-12  # S, ngspice's default conductance across each junction
NGSPICE_VT = 1.38064852e-23 / 1.6021766208e-19 * 300.15  # V, kT/q with ngspice-39's constants at 27 C


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(name: str) -> str:
    """Case-fold ``name`` in ASCII only (``A``-``Z`` -> ``a``-``z``), as ngspice does; other characters
    (the Kelvin sign, dotted capital I, ...) are left alone so that distinct names stay distinct."""
    return name.lower() if name.isascii() else name.translate(_ASCII_LOWER)


_HAS_SPACE = re.compile(r"\s").search


def _name_text(value, kind: str) -> str:
    if type(value) is str:  # the common case, first (netlists build ~10^5 names)
        value = value.strip()
        return value.lower() if value.isascii() else value.translate(_ASCII_LOWER)
    if not isinstance(value, (str, int, np.integer)) or isinstance(value, bool):
        raise BadArgumentError(f"{kind} name must be a string, got {type(value).__name__} {value!r:.60}")
    return fold(str(value).strip())


def node_name(node) -> str:
    """Normalise a node name (ASCII lower case; ``gnd`` -> ``0``); raise on empty or blank names."""
    if type(node) is str:  # the common case, inline (a netlist names ~10^5 nodes)
        name = node.strip()
        name = name.lower() if name.isascii() else name.translate(_ASCII_LOWER)
    else:
        name = _name_text(node, "node")
    if not name or _HAS_SPACE(name):
        raise PhysgradError(f"invalid node name {node!r}: node names are non-empty and contain no spaces")
    return GROUND if name in GROUND_ALIASES else name


def _element_name(name, letter: str, kind: str) -> str:
    norm = _name_text(name, kind)
    if not norm or _HAS_SPACE(norm):
        raise PhysgradError(f"invalid {kind} name {name!r}")
    if norm[0] != letter:
        raise PhysgradError(f"{kind} name {name!r} must start with {letter.upper()!r} (SPICE convention)")
    return norm


def _finite(value, what: str, *args) -> float:
    """``float(value)`` if finite; else an error naming ``what`` (formatted with ``args`` only then)."""
    if type(value) is float and value - value == 0.0:  # the common case, first
        return value
    what = what.format(*args) if args else what
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise PhysgradError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise PhysgradError(f"{what} must be finite, got {value!r}")
    return x


def _two_nodes(obj, a: str, b: str, kind: str):
    na, nb = node_name(getattr(obj, a)), node_name(getattr(obj, b))
    if na == nb:
        raise PhysgradError(f"{kind} {obj.name} connects node {na!r} to itself")
    object.__setattr__(obj, a, na)
    object.__setattr__(obj, b, nb)


@dataclass(frozen=True)
class Resistor:
    """Linear resistor between ``n1`` and ``n2`` with conductance ``conductance`` (S, >= 0).

    A conductance of 0 is an open circuit (allowed, e.g. after training clamps it).
    """

    name: str
    n1: str
    n2: str
    conductance: float

    def __post_init__(self):
        object.__setattr__(self, "name", _element_name(self.name, "r", "resistor"))
        _two_nodes(self, "n1", "n2", "resistor")
        g = _finite(self.conductance, "conductance of {}", self.name)
        if g < 0:
            raise PhysgradError(f"resistor {self.name} has negative conductance {g} S")
        if 0 < g < sys.float_info.min:  # subnormal: 1/g overflows, and so does every scaling by it
            raise PhysgradError(f"resistor {self.name}: conductance {g:g} S is below {sys.float_info.min:.3g} S "
                                "(its resistance is not a finite double); give 0 for an open circuit")
        object.__setattr__(self, "conductance", g)

    @property
    def nodes(self):
        return (self.n1, self.n2)

    @property
    def resistance(self) -> float:
        """Resistance in ohm (``inf`` for an open resistor)."""
        return math.inf if self.conductance == 0 else 1.0 / self.conductance


@dataclass(frozen=True)
class IdealDiode:
    """Ideal diode with threshold ``vth >= 0`` (V): ``v_a - v_c <= vth``, current >= 0, complementary."""

    name: str
    anode: str
    cathode: str
    vth: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "name", _element_name(self.name, "d", "diode"))
        _two_nodes(self, "anode", "cathode", "diode")
        vth = _finite(self.vth, "threshold of {}", self.name)
        if vth < 0:
            raise PhysgradError(f"diode {self.name} has negative threshold vth={vth} V")
        object.__setattr__(self, "vth", vth)

    @property
    def nodes(self):
        return (self.anode, self.cathode)


@dataclass(frozen=True)
class DiodeModel:
    """Shockley diode model ``I(v) = IS (exp(v / (N vt)) - 1) + gmin v``.

    Parameters
    ----------
    name : str
        Model name (as in ``.model NAME D(...)``).
    IS : float
        Saturation current (A), > 0.
    N : float
        Emission coefficient, > 0.
    gmin : float
        Parallel conductance (S), >= 0 (ngspice's default 1e-12 S).
    vt : float
        Thermal voltage (V), > 0 (ngspice's 27 C value by default).
    bv, ibv : float
        Reverse breakdown voltage (V, > 0; ``inf``: none) and the current at it (A, > 0), as in
        SPICE's ``BV``/``IBV``. physgrad does not model breakdown: a steady state with the diode
        within ``breakdown_margin`` of it is reported not solved (see :attr:`breakdown_limit`).
    """

    name: str
    IS: float = 1e-14
    N: float = 1.0
    gmin: float = NGSPICE_GMIN
    vt: float = NGSPICE_VT
    bv: float = math.inf
    ibv: float = 1e-3

    def __post_init__(self):
        name = _name_text(self.name, "model")
        if not name or any(ch.isspace() for ch in name):
            raise PhysgradError(f"invalid model name {self.name!r}")
        object.__setattr__(self, "name", name)
        for attr, positive in (("IS", True), ("N", True), ("gmin", False), ("vt", True)):
            x = _finite(getattr(self, attr), f"{attr} of diode model {name}")
            if x < 0 or (positive and x == 0):
                raise PhysgradError(f"{attr} of diode model {name} must be {'> 0' if positive else '>= 0'}, got {x}")
            object.__setattr__(self, attr, x)
        try:
            bv, ibv = float(self.bv), float(self.ibv)
        except (TypeError, ValueError):
            raise BadArgumentError(f"BV and IBV of diode model {name} must be numbers") from None
        if not bv > 0 or math.isnan(bv) or not (ibv > 0 and math.isfinite(ibv)):
            raise PhysgradError(f"diode model {name}: BV must be > 0 (inf for none) and IBV finite and > 0, "
                                f"got BV={bv}, IBV={ibv}")
        object.__setattr__(self, "bv", bv)
        object.__setattr__(self, "ibv", ibv)

    @property
    def breakdown_limit(self) -> float:
        """Most negative voltage (V) at which physgrad's law (without breakdown) is ngspice's:
        ngspice's breakdown starts at ``BV - vt ln(1 + IBV/IS)`` (its ``DIOtBrkdwnV``, to within its
        iteration); 10 ``N vt`` more are kept as a margin. ``-inf`` when ``bv`` is ``inf``."""
        if math.isinf(self.bv):
            return -math.inf
        return -(self.bv - self.vt * math.log1p(self.ibv / self.IS) - 10 * self.N * self.vt)


@dataclass(frozen=True)
class ShockleyDiode:
    """Exponential (Shockley) diode from ``anode`` to ``cathode`` following ``model``."""

    name: str
    anode: str
    cathode: str
    model: DiodeModel

    def __post_init__(self):
        object.__setattr__(self, "name", _element_name(self.name, "d", "diode"))
        _two_nodes(self, "anode", "cathode", "diode")
        if not isinstance(self.model, DiodeModel):
            raise PhysgradError(f"diode {self.name}: model must be a DiodeModel, got {type(self.model).__name__}")

    @property
    def nodes(self):
        return (self.anode, self.cathode)


@dataclass(frozen=True)
class VoltageSource:
    """Independent voltage source: ``v(pos) - v(neg) = value`` (V)."""

    name: str
    pos: str
    neg: str
    value: float

    def __post_init__(self):
        object.__setattr__(self, "name", _element_name(self.name, "v", "voltage source"))
        _two_nodes(self, "pos", "neg", "voltage source")
        object.__setattr__(self, "value", _finite(self.value, f"value of {self.name}"))

    @property
    def nodes(self):
        return (self.pos, self.neg)


@dataclass(frozen=True)
class CurrentSource:
    """Independent current source: ``value`` (A) flows from ``pos`` through the source to ``neg``."""

    name: str
    pos: str
    neg: str
    value: float

    def __post_init__(self):
        object.__setattr__(self, "name", _element_name(self.name, "i", "current source"))
        _two_nodes(self, "pos", "neg", "current source")
        object.__setattr__(self, "value", _finite(self.value, f"value of {self.name}"))

    @property
    def nodes(self):
        return (self.pos, self.neg)


_TWO_TERMINAL = {Resistor: ("name", "n1", "n2", "conductance"), IdealDiode: ("name", "anode", "cathode", "vth"),
                 ShockleyDiode: ("name", "anode", "cathode", "model"), VoltageSource: ("name", "pos", "neg", "value"),
                 CurrentSource: ("name", "pos", "neg", "value")}


def prechecked(kind, name: str, a: str, b: str, value):
    """``kind(name, a, b, value)`` for a two-terminal ``kind`` (R, ideal or Shockley D, V, I) built
    without its ``__post_init__`` (about half the cost of a reader's 10^5 elements).

    Only for callers that have established what ``__post_init__`` checks and normalises: ``name``
    ASCII-folded, non-empty, no white space, starting with the kind's letter; ``a`` and ``b``
    distinct results of :func:`node_name`; ``value`` a finite float in the kind's range
    (conductance >= 0 S, vth >= 0 V) or, for a Shockley diode, a :class:`DiodeModel`. The netlist
    reader does (``tests/test_netlist.py`` compares both routes).
    """
    obj = object.__new__(kind)
    f = _TWO_TERMINAL[kind]
    obj.__dict__.update({f[0]: name, f[1]: a, f[2]: b, f[3]: value})
    return obj


def _sequence(value, what: str) -> tuple:
    """``value`` as a tuple; :class:`BadArgumentError` for non-iterables and for a lone string."""
    if isinstance(value, (str, bytes)) or isinstance(value, Mapping) and what != "targets":
        raise BadArgumentError(f"{what} must be a sequence, got {type(value).__name__} {value!r:.60}")
    try:
        return tuple(value)
    except TypeError:
        raise BadArgumentError(f"{what} must be a sequence, got {type(value).__name__} {value!r:.60}") from None


def _mapping(value, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise BadArgumentError(f"{what} must be a mapping name -> value, got {type(value).__name__} {value!r:.60}")
    return value


@dataclass(frozen=True)
class VCVS:
    """Voltage-controlled voltage source (SPICE ``E``): ``v(pos) - v(neg) = gain (v(cpos) - v(cneg))``.

    ``gain`` is dimensionless; the control nodes draw no current. Its current (A) flows from
    ``pos`` through the source to ``neg`` (so a source delivering current into ``pos``'s circuit
    has a negative current, as ngspice's ``i(ename)``).
    """

    name: str
    pos: str
    neg: str
    cpos: str
    cneg: str
    gain: float

    def __post_init__(self):
        object.__setattr__(self, "name", _element_name(self.name, "e", "voltage-controlled voltage source"))
        _two_nodes(self, "pos", "neg", "VCVS")
        _control_nodes(self)
        object.__setattr__(self, "gain", _finite(self.gain, f"gain of {self.name}"))

    @property
    def nodes(self):
        return (self.pos, self.neg, self.cpos, self.cneg)


@dataclass(frozen=True)
class VCCS:
    """Voltage-controlled current source (SPICE ``G``): a current ``gain (v(cpos) - v(cneg))`` (A)
    from ``pos`` through the source to ``neg``; ``gain`` is a transconductance (S)."""

    name: str
    pos: str
    neg: str
    cpos: str
    cneg: str
    gain: float

    def __post_init__(self):
        object.__setattr__(self, "name", _element_name(self.name, "g", "voltage-controlled current source"))
        _two_nodes(self, "pos", "neg", "VCCS")
        _control_nodes(self)
        object.__setattr__(self, "gain", _finite(self.gain, f"gain of {self.name}"))

    @property
    def nodes(self):
        return (self.pos, self.neg, self.cpos, self.cneg)


@dataclass(frozen=True)
class CCCS:
    """Current-controlled current source (SPICE ``F``): a current ``gain * i(control)`` (A) from
    ``pos`` through the source to ``neg``; ``control`` names a voltage source (usually 0 V, a
    current sense) whose current (from its ``pos`` through it to its ``neg``) controls it."""

    name: str
    pos: str
    neg: str
    control: str
    gain: float

    def __post_init__(self):
        object.__setattr__(self, "name", _element_name(self.name, "f", "current-controlled current source"))
        _two_nodes(self, "pos", "neg", "CCCS")
        object.__setattr__(self, "control", _element_name(self.control, "v", f"controlling source of {self.name}"))
        object.__setattr__(self, "gain", _finite(self.gain, f"gain of {self.name}"))

    @property
    def nodes(self):
        return (self.pos, self.neg)


@dataclass(frozen=True)
class CCVS:
    """Current-controlled voltage source (SPICE ``H``): ``v(pos) - v(neg) = gain * i(control)``
    (``gain`` a transresistance, ohm; ``control`` a voltage source, as for :class:`CCCS`)."""

    name: str
    pos: str
    neg: str
    control: str
    gain: float

    def __post_init__(self):
        object.__setattr__(self, "name", _element_name(self.name, "h", "current-controlled voltage source"))
        _two_nodes(self, "pos", "neg", "CCVS")
        object.__setattr__(self, "control", _element_name(self.control, "v", f"controlling source of {self.name}"))
        object.__setattr__(self, "gain", _finite(self.gain, f"gain of {self.name}"))

    @property
    def nodes(self):
        return (self.pos, self.neg)


@dataclass(frozen=True)
class MosfetModel:
    r"""MOSFET model, SPICE level 1 (Shichman-Hodges) at DC, as ngspice's MOS1 computes it.

    Parameters
    ----------
    name : str
        Model name (``.model NAME NMOS|PMOS(...)``).
    polarity : {"nmos", "pmos"}
    VTO : float
        Zero-bias threshold voltage (V; negative for an enhancement PMOS).
    KP : float
        Transconductance parameter (A/V^2, > 0); ngspice's default 2e-5.
    LAMBDA : float
        Channel-length modulation (1/V, >= 0), applied in the linear region too (as MOS1 does).
    GAMMA : float
        Body-effect coefficient (V^0.5, >= 0).
    PHI : float
        Surface potential (V, > 0).
    IS : float
        Saturation current of the bulk-drain and bulk-source junctions (A, >= 0).
    gmin : float
        Conductance across each bulk junction (S, ngspice's ``CKTgmin``, 1e-12 by default).
    vt : float
        Thermal voltage of the junctions (V).

    The channel has no co-content (it is not reciprocal): circuits with MOSFETs are solved on the
    MNA equations only (:mod:`physgrad.circuit.transistors` has the law).
    """

    name: str
    polarity: str = "nmos"
    VTO: float = 0.0
    KP: float = 2e-5
    LAMBDA: float = 0.0
    GAMMA: float = 0.0
    PHI: float = 0.6
    IS: float = 1e-14
    gmin: float = NGSPICE_GMIN
    vt: float = NGSPICE_VT

    def __post_init__(self):
        name = _name_text(self.name, "model")
        if not name or any(ch.isspace() for ch in name):
            raise PhysgradError(f"invalid model name {self.name!r}")
        object.__setattr__(self, "name", name)
        pol = str(self.polarity).lower()
        if pol not in ("nmos", "pmos"):
            raise PhysgradError(f"MOSFET model {name}: polarity must be 'nmos' or 'pmos', got {self.polarity!r}")
        object.__setattr__(self, "polarity", pol)
        for attr, low, strict in (("VTO", None, False), ("KP", 0.0, True), ("LAMBDA", 0.0, False),
                                  ("GAMMA", 0.0, False), ("PHI", 0.0, True), ("IS", 0.0, False),
                                  ("gmin", 0.0, False), ("vt", 0.0, True)):
            x = _finite(getattr(self, attr), f"{attr} of MOSFET model {name}")
            if low is not None and (x < low or (strict and x == low)):
                raise PhysgradError(f"{attr} of MOSFET model {name} must be {'>' if strict else '>='} {low:g}, got {x}")
            object.__setattr__(self, attr, x)

    @property
    def sign(self) -> float:
        """``+1`` for NMOS, ``-1`` for PMOS (SPICE's ``type``)."""
        return 1.0 if self.polarity == "nmos" else -1.0


@dataclass(frozen=True)
class Mosfet:
    """MOSFET (SPICE ``M``): ``drain gate source bulk`` nodes, ``model``, channel width ``W`` and
    length ``L`` (m, > 0; ngspice's defaults 100 um) and multiplier ``m`` (> 0).

    Its current (:meth:`physgrad.circuit.solution.CircuitSolution.current`) is the drain current:
    into the drain terminal, through the device (channel and bulk-drain junction), in A.
    """

    name: str
    drain: str
    gate: str
    source: str
    bulk: str
    model: MosfetModel
    W: float = 1e-4
    L: float = 1e-4
    m: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "name", _element_name(self.name, "m", "MOSFET"))
        for attr in ("drain", "gate", "source", "bulk"):
            object.__setattr__(self, attr, node_name(getattr(self, attr)))
        if self.drain == self.source:
            raise PhysgradError(f"MOSFET {self.name} connects its drain and source to the same node {self.drain!r}")
        if not isinstance(self.model, MosfetModel):
            raise PhysgradError(f"MOSFET {self.name}: model must be a MosfetModel, got {type(self.model).__name__}")
        for attr in ("W", "L", "m"):
            x = _finite(getattr(self, attr), f"{attr} of {self.name}")
            if x <= 0:
                raise PhysgradError(f"{attr} of MOSFET {self.name} must be > 0, got {x}")
            object.__setattr__(self, attr, x)

    @property
    def nodes(self):
        return (self.drain, self.gate, self.source, self.bulk)

    @property
    def beta(self) -> float:
        """``KP m W / L`` (A/V^2)."""
        return self.model.KP * self.m * self.W / self.L


@dataclass(frozen=True)
class BjtModel:
    r"""Bipolar transistor model: ngspice's Gummel-Poon at DC without series resistances.

    Parameters (SPICE names; defaults as SPICE's)
    ----------
    polarity : {"npn", "pnp"}
    IS : float
        Transport saturation current (A, > 0).
    BF, BR : float
        Forward and reverse current gains (> 0).
    NF, NR : float
        Forward and reverse emission coefficients (> 0).
    VAF, VAR : float
        Forward and reverse Early voltages (V, > 0; ``inf``: none).
    IKF, IKR : float
        High-injection knee currents (A, > 0; ``inf``: none).
    ISE, NE, ISC, NC : float
        Base-emitter and base-collector leakage saturation currents (A, >= 0) and their emission
        coefficients (> 0).
    gmin : float
        Conductance across each junction (S, ngspice's ``CKTgmin``); vt : thermal voltage (V).
    SUBS : {1, -1, 0}
        Substrate junction: 1 vertical (collector to substrate), -1 lateral (base to substrate), 0
        ngspice's default (vertical for NPN, lateral for PNP). With ISS = 0 (not modelled otherwise)
        it carries ngspice's gmin only.
    """

    name: str
    polarity: str = "npn"
    IS: float = 1e-16
    BF: float = 100.0
    BR: float = 1.0
    NF: float = 1.0
    NR: float = 1.0
    VAF: float = math.inf
    VAR: float = math.inf
    IKF: float = math.inf
    IKR: float = math.inf
    ISE: float = 0.0
    NE: float = 1.5
    ISC: float = 0.0
    NC: float = 2.0
    gmin: float = NGSPICE_GMIN
    vt: float = NGSPICE_VT
    SUBS: int = 0

    def __post_init__(self):
        name = _name_text(self.name, "model")
        if not name or any(ch.isspace() for ch in name):
            raise PhysgradError(f"invalid model name {self.name!r}")
        object.__setattr__(self, "name", name)
        if self.SUBS not in (1, -1, 0):
            raise PhysgradError(f"SUBS of BJT model {name} must be 1 (vertical), -1 (lateral) or 0, got {self.SUBS!r}")
        pol = str(self.polarity).lower()
        if pol not in ("npn", "pnp"):
            raise PhysgradError(f"BJT model {name}: polarity must be 'npn' or 'pnp', got {self.polarity!r}")
        object.__setattr__(self, "polarity", pol)
        for attr in ("IS", "BF", "BR", "NF", "NR", "NE", "NC", "vt"):
            x = _finite(getattr(self, attr), f"{attr} of BJT model {name}")
            if x <= 0:
                raise PhysgradError(f"{attr} of BJT model {name} must be > 0, got {x}")
            object.__setattr__(self, attr, x)
        for attr in ("VAF", "VAR", "IKF", "IKR"):
            try:
                x = float(getattr(self, attr))
            except (TypeError, ValueError):
                raise PhysgradError(f"{attr} of BJT model {name} must be a number") from None
            if not x > 0:
                raise PhysgradError(f"{attr} of BJT model {name} must be > 0 (inf for none), got {x}")
            object.__setattr__(self, attr, x)
        for attr in ("ISE", "ISC", "gmin"):
            x = _finite(getattr(self, attr), f"{attr} of BJT model {name}")
            if x < 0:
                raise PhysgradError(f"{attr} of BJT model {name} must be >= 0, got {x}")
            object.__setattr__(self, attr, x)

    @property
    def sign(self) -> float:
        """``+1`` for NPN, ``-1`` for PNP (SPICE's ``type``)."""
        return 1.0 if self.polarity == "npn" else -1.0

    @property
    def vertical(self) -> bool:
        """Whether the substrate junction sits at the collector (else at the base)."""
        return self.SUBS == 1 or (self.SUBS == 0 and self.polarity == "npn")


@dataclass(frozen=True)
class Bjt:
    """Bipolar transistor (SPICE ``Q``): ``collector base emitter`` nodes, ``model``, ``area``
    (> 0, scales IS, ISE, ISC, IKF, IKR) and the ``substrate`` node (ground by default, as SPICE's
    3-node form). Its current is the collector current (into the collector terminal, A)."""

    name: str
    collector: str
    base: str
    emitter: str
    model: BjtModel
    area: float = 1.0
    substrate: str = GROUND

    def __post_init__(self):
        object.__setattr__(self, "name", _element_name(self.name, "q", "bipolar transistor"))
        for attr in ("collector", "base", "emitter", "substrate"):
            object.__setattr__(self, attr, node_name(getattr(self, attr)))
        if not isinstance(self.model, BjtModel):
            raise PhysgradError(f"BJT {self.name}: model must be a BjtModel, got {type(self.model).__name__}")
        a = _finite(self.area, f"area of {self.name}")
        if a <= 0:
            raise PhysgradError(f"area of BJT {self.name} must be > 0, got {a}")
        object.__setattr__(self, "area", a)

    @property
    def nodes(self):
        return (self.collector, self.base, self.emitter) + ((self.substrate,) if self.substrate != GROUND else ())


def _control_nodes(obj):
    a, b = node_name(obj.cpos), node_name(obj.cneg)
    if a == b:
        raise PhysgradError(f"{obj.name} is controlled by the voltage between node {a!r} and itself (always 0 V)")
    object.__setattr__(obj, "cpos", a)
    object.__setattr__(obj, "cneg", b)


CONTROLLED_TYPES = (VCVS, CCCS, VCCS, CCVS)
TRANSISTOR_TYPES = (Mosfet, Bjt)  # no co-content (not reciprocal): MNA route only
Element = Union[Resistor, IdealDiode, ShockleyDiode, VoltageSource, CurrentSource, VCVS, CCCS, VCCS, CCVS, Mosfet,
                Bjt]
ELEMENT_TYPES = (Resistor, IdealDiode, ShockleyDiode, VoltageSource, CurrentSource) + CONTROLLED_TYPES + TRANSISTOR_TYPES


@dataclass(frozen=True)
class Circuit:
    """A circuit: elements on named nodes, optional training targets and trainable resistors.

    Parameters
    ----------
    elements : sequence of Resistor, IdealDiode, ShockleyDiode, VoltageSource, CurrentSource, VCVS, CCCS,
        VCCS, CCVS (the controlled sources' controlling voltage sources must be elements of the circuit)
    title : str
        First line of the netlist.
    targets : mapping node -> value (V), optional
        Output nodes and their targets ``y``; they define the cost ``C = 1/2 sum (v_o - y_o)^2``.
    trainable : sequence of resistor names, optional
        Resistors whose conductances are parameters; ``None`` means every resistor.

    Structural problems that depend on the whole graph (floating nodes, loops of voltage sources,
    diodes forced forward) are found when a problem is built for a solver
    (:func:`physgrad.circuit.reduction.build_problem`).
    """

    elements: tuple = ()
    title: str = "physgrad circuit"
    targets: tuple = ()
    trainable: Optional[tuple] = None

    def __post_init__(self):
        elements = _sequence(self.elements, "elements")
        types = set(map(type, elements))  # checked per type, not per element (netlists hold 10^5 elements)
        for t in types:
            if not issubclass(t, ELEMENT_TYPES):
                raise PhysgradError(f"unknown element type {t.__name__}")
        seen = {el.name: el for el in elements}
        if len(seen) != len(elements):
            names: set = set()
            for el in elements:
                if el.name in names:
                    raise PhysgradError(f"duplicate element name {el.name!r}")
                names.add(el.name)
        controlled = [el for el in elements if isinstance(el, (CCCS, CCVS))] if any(
            issubclass(t, (CCCS, CCVS)) for t in types) else []
        for el in controlled:
            if not isinstance(seen.get(el.control), VoltageSource):
                what = "is not an element of the circuit" if el.control not in seen else "is not a voltage source"
                raise PhysgradError(f"{el.name} is controlled by the current of {el.control!r}, which {what} (SPICE's "
                                    "F and H elements sense the current of a voltage source, usually a 0 V one)")
        object.__setattr__(self, "elements", elements)
        title = str(self.title)
        if "\n" in title or "\r" in title:
            raise PhysgradError("the title must be a single line")
        object.__setattr__(self, "title", title)
        raw_targets = self.targets.items() if isinstance(self.targets, Mapping) else _sequence(self.targets, "targets")
        targets = []
        for pair in raw_targets:
            if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
                raise BadArgumentError(f"targets must be (node, value) pairs or a mapping, got {pair!r:.60}")
            node, value = pair
            node = node_name(node)
            if node == GROUND:
                raise PhysgradError("ground cannot be an output (target) node")
            if node not in self.nodes:
                raise PhysgradError(f"target node {node!r} is not a node of the circuit")
            if node in (t[0] for t in targets):
                raise PhysgradError(f"target node {node!r} given twice")
            targets.append((node, _finite(value, f"target of node {node}")))
        object.__setattr__(self, "targets", tuple(targets))
        if self.trainable is not None:
            names = tuple(_name_text(n, "trainable resistor") for n in _sequence(self.trainable, "trainable"))
            for n in names:
                if n not in seen:
                    raise PhysgradError(f"trainable element {n!r} is not an element of the circuit")
                if not isinstance(seen[n], Resistor):
                    raise PhysgradError(f"trainable element {n!r} is not a resistor")
            if len(set(names)) != len(names):
                raise PhysgradError("a trainable resistor is listed twice")
            object.__setattr__(self, "trainable", names)

    # --- lookups -------------------------------------------------------------------------------
    @cached_property
    def nodes(self) -> tuple:
        """Non-ground node names, in order of first appearance."""
        out = dict.fromkeys(chain.from_iterable([el.nodes for el in self.elements]))
        out.pop(GROUND, None)
        return tuple(out)

    @cached_property
    def node_index(self) -> dict:
        return {n: i for i, n in enumerate(self.nodes)}

    @cached_property
    def element_index(self) -> dict:
        return {el.name: i for i, el in enumerate(self.elements)}

    @cached_property
    def element_names(self) -> tuple:
        """Element names, in the order of :attr:`elements`."""
        return tuple(el.name for el in self.elements)

    @cached_property
    def terminals(self) -> tuple:
        """``(a, b)``: index arrays, shape ``(n_elements,)``, of each element's first and second node
        in :attr:`nodes` (ground ``-1``); a current is counted from ``a`` to ``b``."""
        get, n = self.node_index.get, len(self.elements)
        pairs = [el.nodes for el in self.elements]
        a = np.fromiter(map(get, map(itemgetter(0), pairs), repeat(-1, n)), dtype=np.int64, count=n)
        b = np.fromiter(map(get, map(itemgetter(1), pairs), repeat(-1, n)), dtype=np.int64, count=n)
        return a, b

    def element(self, name: str) -> Element:
        """The element called ``name`` (case-insensitive); clear error if unknown."""
        key = _name_text(name, "element")
        if key not in self.element_index:
            raise PhysgradError(f"unknown element {name!r}")
        return self.elements[self.element_index[key]]

    def index_of_node(self, node) -> int:
        """Index of a non-ground node in :attr:`nodes`; clear error if unknown or ground."""
        n = node_name(node)
        if n == GROUND:
            raise PhysgradError("ground has no index: it is fixed at 0 V")
        if n not in self.node_index:
            raise PhysgradError(f"unknown node {node!r}")
        return self.node_index[n]

    @cached_property
    def positions_by_type(self) -> dict:
        """Element type -> positions in :attr:`elements` of the elements of exactly that type (one
        pass over the elements, shared by :meth:`of_type` and :func:`circuit_arrays`)."""
        out: dict = {}
        for pos, el in enumerate(self.elements):
            rows = out.get(type(el))
            if rows is None:
                rows = out[type(el)] = []
            rows.append(pos)
        return out

    def of_type(self, kind) -> tuple:
        """The elements that are instances of ``kind`` (a type or a tuple of types), in circuit order."""
        groups = [rows for t, rows in self.positions_by_type.items() if issubclass(t, kind)]
        if not groups:
            return ()
        pos = groups[0] if len(groups) == 1 else sorted(p for rows in groups for p in rows)
        els = self.elements
        return tuple(els[p] for p in pos)

    @property
    def controlled_sources(self) -> tuple:
        """The controlled sources (E, F, G, H elements), in circuit order."""
        return self.of_type(CONTROLLED_TYPES)

    @property
    def transistors(self) -> tuple:
        """The MOSFETs and BJTs (M, Q elements), in circuit order: they have no co-content."""
        return self.of_type(TRANSISTOR_TYPES)

    @property
    def resistors(self) -> tuple:
        return self.of_type(Resistor)

    @property
    def trainable_names(self) -> tuple:
        """Names of the trainable resistors (all resistors when ``trainable`` is None)."""
        return self.trainable if self.trainable is not None else tuple(r.name for r in self.resistors)

    @property
    def target_dict(self) -> dict:
        return dict(self.targets)

    # --- functional updates --------------------------------------------------------------------
    def replace_elements(self, elements: Sequence[Element]) -> "Circuit":
        return Circuit(tuple(elements), self.title, self.targets, self.trainable)

    def with_elements(self, *new: Element) -> "Circuit":
        """A copy with elements appended."""
        return self.replace_elements(self.elements + tuple(new))

    def with_conductances(self, values: Mapping[str, float]) -> "Circuit":
        """A copy with some resistors' conductances (S) replaced; names must be resistors."""
        values = {_name_text(k, "element"): v for k, v in _mapping(values, "conductances").items()}
        for k in values:
            if not isinstance(self.element(k), Resistor):
                raise PhysgradError(f"{k!r} is not a resistor")
        els = tuple(
            Resistor(el.name, el.n1, el.n2, values[el.name]) if el.name in values else el for el in self.elements
        )
        return self.replace_elements(els)

    def with_sources(self, values: Mapping[str, float]) -> "Circuit":
        """A copy with some independent sources' values (V or A) replaced."""
        values = {_name_text(k, "element"): v for k, v in _mapping(values, "source values").items()}
        for k in values:
            if not isinstance(self.element(k), (VoltageSource, CurrentSource)):
                raise PhysgradError(f"{k!r} is not an independent source")
        els = tuple(
            type(el)(el.name, el.pos, el.neg, values[el.name]) if el.name in values else el for el in self.elements
        )
        return self.replace_elements(els)

    def with_targets(self, targets) -> "Circuit":
        return Circuit(self.elements, self.title, targets, self.trainable)

    # --- array views ---------------------------------------------------------------------------
    @cached_property
    def arrays(self) -> "CircuitArrays":
        return circuit_arrays(self)


@dataclass(frozen=True, eq=False)
class CircuitArrays:
    """Array view of a circuit. Node indices refer to :attr:`Circuit.nodes`; ground is ``-1``.

    Each element kind has index arrays of its two nodes (``*_a``, ``*_b``; shape ``(n_kind,)``),
    its values, and the positions of its elements in :attr:`Circuit.elements` (``*_pos``).
    """

    n_nodes: int
    res_a: np.ndarray
    res_b: np.ndarray
    g: np.ndarray
    res_pos: np.ndarray
    dio_a: np.ndarray
    dio_b: np.ndarray
    vth: np.ndarray
    dio_pos: np.ndarray
    shk_a: np.ndarray
    shk_b: np.ndarray
    shk_IS: np.ndarray
    shk_N: np.ndarray
    shk_gmin: np.ndarray
    shk_vt: np.ndarray
    shk_pos: np.ndarray
    vs_a: np.ndarray
    vs_b: np.ndarray
    vs_value: np.ndarray
    vs_pos: np.ndarray
    cs_a: np.ndarray
    cs_b: np.ndarray
    cs_value: np.ndarray
    cs_pos: np.ndarray

    def incidence(self, a: np.ndarray, b: np.ndarray) -> sp.csr_matrix:
        """Signed incidence, shape ``(n_nodes, len(a))``: +1 at node ``a``, -1 at node ``b`` (ground dropped)."""
        return incidence(self.n_nodes, a, b)

    @cached_property
    def A_res(self) -> sp.csr_matrix:
        """Resistor incidence matrix, shape ``(n_nodes, n_resistors)``."""
        return self.incidence(self.res_a, self.res_b)

    @cached_property
    def A_dio(self) -> sp.csr_matrix:
        """Ideal-diode incidence (anode +1, cathode -1), shape ``(n_nodes, n_ideal_diodes)``."""
        return self.incidence(self.dio_a, self.dio_b)

    @cached_property
    def A_shk(self) -> sp.csr_matrix:
        """Shockley-diode incidence, shape ``(n_nodes, n_shockley_diodes)``."""
        return self.incidence(self.shk_a, self.shk_b)

    @cached_property
    def A_cs(self) -> sp.csr_matrix:
        """Current-source incidence, shape ``(n_nodes, n_current_sources)``."""
        return self.incidence(self.cs_a, self.cs_b)

    def laplacian(self, g: Optional[np.ndarray] = None) -> sp.csr_matrix:
        """Conductance Laplacian ``A diag(g) A^T`` (S), shape ``(n_nodes, n_nodes)``.

        Assembled directly from its entries (``+g`` on both diagonal entries of a resistor, ``-g``
        off the diagonal; ground rows dropped), several times faster than the sparse product.
        """
        g = self.g if g is None else np.asarray(g, dtype=float)
        a, b = self.res_a, self.res_b
        rows = np.concatenate([a, b, a, b])
        cols = np.concatenate([a, b, b, a])
        vals = np.concatenate([g, g, -g, -g])
        keep = (rows >= 0) & (cols >= 0)
        n = self.n_nodes
        return sp.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=(n, n))

    def injection(self) -> np.ndarray:
        """Current injected into each node by the current sources (A), shape ``(n_nodes,)``."""
        J = np.zeros(self.n_nodes)
        np.add.at(J, self.cs_b[self.cs_b >= 0], self.cs_value[self.cs_b >= 0])
        np.subtract.at(J, self.cs_a[self.cs_a >= 0], self.cs_value[self.cs_a >= 0])
        return J


def incidence(n_nodes: int, a: np.ndarray, b: np.ndarray) -> sp.csr_matrix:
    """Signed node-branch incidence (+1 at ``a``, -1 at ``b``; index ``-1`` = ground is dropped)."""
    m = len(a)
    cols = np.arange(m)
    rows = np.concatenate([a, b])
    vals = np.concatenate([np.ones(m), -np.ones(m)])
    cc = np.concatenate([cols, cols])
    keep = rows >= 0
    return sp.csr_matrix((vals[keep], (rows[keep], cc[keep])), shape=(n_nodes, m))


def circuit_arrays(circuit: Circuit) -> CircuitArrays:
    """Build the :class:`CircuitArrays` of ``circuit`` (one pass over the elements, grouped by type)."""
    by_type = circuit.positions_by_type
    a_all, b_all = circuit.terminals
    els = circuit.elements

    def table(kind, *values):
        rows = [rows for t, rows in by_type.items() if issubclass(t, kind)]
        pos = np.array(rows[0] if len(rows) == 1 else sorted(p for r in rows for p in r), dtype=np.int64)
        out = [a_all[pos], b_all[pos]]
        for v in values:
            out.append(np.fromiter((v(els[k]) for k in pos.tolist()), dtype=float, count=len(pos)))
        out.append(pos)
        return out

    res = table(Resistor, lambda e: e.conductance)
    dio = table(IdealDiode, lambda e: e.vth)
    shk = table(ShockleyDiode, lambda e: e.model.IS, lambda e: e.model.N, lambda e: e.model.gmin, lambda e: e.model.vt)
    vs = table(VoltageSource, lambda e: e.value)
    cs = table(CurrentSource, lambda e: e.value)
    return CircuitArrays(len(circuit.nodes), *res, *dio, *shk, *vs, *cs)

"""SPICE cards of transistors: ``M``/``Q`` instance lines and ``.model NMOS|PMOS|NPN|PNP`` lines, read
and written (used by :mod:`physgrad.circuit.netlist`).

Reading::

    Mname nd ng ns nb model [L=..] [W=..] [M=..] [AD= AS= PD= PS= NRD= NRS=] [OFF] [IC=..]
    Qname nc nb ne [ns] model [area] [AREA=..] [M=..] [OFF] [IC=..]
    .model name NMOS|PMOS(LEVEL=1 VTO KP LAMBDA GAMMA PHI IS LD TOX UO ...)
    .model name NPN|PNP(IS BF BR NF NR VAF VAR IKF IKR ISE NE ISC NC ...)

MOSFET level 1 only; ``KP`` defaults to ``UO * 1e-4 * 3.9 eps0 / TOX`` when ``TOX`` is given
(ngspice's rule), else 2e-5 A/V^2; ``W``/``L`` default to ngspice's 100 um; the effective length is
``L - 2 LD``. Capacitances, noise and temperature coefficients have no DC effect at 27 C and are
ignored. Refused (with the card's file and line): other levels, series resistances (``RD``,
``RS``, ``RSH``; BJT ``RB``, ``RC``, ``RE``), ``NSUB`` without ``VTO``, ``GAMMA`` and ``PHI``,
``JS`` with junction areas, a BJT substrate current ``ISS``, temperatures other than 27 C.
Every error is a :class:`physgrad.types.PhysgradError`; the netlist reader adds the file and line.
"""
from __future__ import annotations

import math
from typing import Callable

from physgrad.circuit.elements import NGSPICE_GMIN, NGSPICE_VT, Bjt, BjtModel, Mosfet, MosfetModel
from physgrad.types import PhysgradError

MOS_KINDS = ("nmos", "pmos")
BJT_KINDS = ("npn", "pnp")
EPS_OX = 3.9 * 8.854214871e-12  # F/m, ngspice's oxide permittivity
DEFAULT_W = DEFAULT_L = 1e-4  # m, ngspice's defw / defl

MOS_DC_IRRELEVANT = {
    "cbd", "cbs", "cgso", "cgdo", "cgbo", "cj", "mj", "cjsw", "mjsw", "pb", "fc", "xj", "nss", "nfs", "tpg", "kf",
    "af", "tnom", "version", "mfg", "type", "js", "uo", "u0", "tox", "ld", "level", "rsh", "rd", "rs", "nsub",
}
BJT_DC_IRRELEVANT = {
    "cje", "vje", "pe", "mje", "me", "tf", "xtf", "vtf", "itf", "ptf", "cjc", "vjc", "pc", "mjc", "mc", "xcjc",
    "cdis", "tr", "cjs", "ccs", "csub", "vjs", "ps", "mjs", "ms", "xtb", "eg", "xti", "kf", "af", "fc", "ns", "nkf",
    "tnom", "mfg", "type", "rbm", "irb", "quasimod", "rco", "vo", "gamma", "qco", "level", "rb", "rc", "re",
    "iss", "tlev", "tlevc", "icrating", "vceo", "vcbo", "vebo", "pd",
}


def mosfet_model(name: str, kind: str, params: dict, number: Callable[[str, str], float]) -> tuple:
    """``(MosfetModel, LD, JS)`` from a ``.model`` card's parameters (text values evaluated by
    ``number(text, what)``); LD in m, JS in A/m^2."""
    p = {k: number(v, f"MOSFET model {name} parameter {k}") for k, v in params.items() if k not in ("mfg", "type",
                                                                                                   "version")}
    level = p.get("level", 1.0)
    if level != 1.0:
        raise PhysgradError(f"MOSFET model {name}: LEVEL={level:g} is not supported (physgrad models level 1)")
    if p.get("tnom", 27.0) != 27.0:
        raise PhysgradError(f"MOSFET model {name}: TNOM = {p['tnom']} C differs from the simulated 27 C")
    for k in ("rd", "rs", "rsh"):
        if p.get(k, 0.0) != 0.0:
            raise PhysgradError(f"MOSFET model {name}: series resistance {k.upper()} is not supported")
    if "vt0" in p:
        p.setdefault("vto", p.pop("vt0"))
    if p.get("nsub", 0.0) != 0.0 and not all(k in p for k in ("vto", "gamma", "phi")):
        raise PhysgradError(f"MOSFET model {name}: NSUB (with VTO, GAMMA or PHI derived from it) is not supported; "
                            "give VTO, GAMMA and PHI")
    kp = p.get("kp")
    if kp is None:
        tox = p.get("tox", 0.0)
        kp = p.get("uo", p.get("u0", 600.0)) * 1e-4 * EPS_OX / tox if tox > 0 else 2e-5
    unknown = set(p) - MOS_DC_IRRELEVANT - {"vto", "kp", "lambda", "gamma", "phi", "is"}
    if unknown:
        raise PhysgradError(f"MOSFET model {name}: unsupported parameter(s) {sorted(unknown)} (physgrad models level "
                            "1: VTO KP LAMBDA GAMMA PHI IS LD TOX UO)")
    model = MosfetModel(name, kind, VTO=p.get("vto", 0.0), KP=kp, LAMBDA=p.get("lambda", 0.0),
                        GAMMA=p.get("gamma", 0.0), PHI=p.get("phi", 0.6), IS=p.get("is", 1e-14))
    return model, p.get("ld", 0.0), p.get("js", 0.0)


def bjt_model(name: str, kind: str, params: dict, number: Callable[[str, str], float]) -> BjtModel:
    """The :class:`BjtModel` of a ``.model NPN|PNP`` card."""
    p = {k: number(v, f"BJT model {name} parameter {k}") for k, v in params.items() if k not in ("mfg", "type")}
    if p.get("level", 1.0) != 1.0:
        raise PhysgradError(f"BJT model {name}: LEVEL={p['level']:g} is not supported (physgrad models Gummel-Poon, "
                            "level 1)")
    if p.get("tnom", 27.0) != 27.0:
        raise PhysgradError(f"BJT model {name}: TNOM = {p['tnom']} C differs from the simulated 27 C")
    for k in ("rb", "rc", "re"):
        if p.get(k, 0.0) != 0.0:
            raise PhysgradError(f"BJT model {name}: series resistance {k.upper()} is not supported")
    if p.get("iss", 0.0) != 0.0:
        raise PhysgradError(f"BJT model {name}: the substrate junction current ISS is not supported")
    alias = {"va": "vaf", "vb": "var", "ik": "ikf"}
    for a, k in alias.items():
        if a in p:
            p.setdefault(k, p.pop(a))
    inf = (lambda k: p[k] if p.get(k, 0.0) != 0.0 else math.inf)  # SPICE: 0 means "none"
    known = {"is", "bf", "br", "nf", "nr", "vaf", "var", "ikf", "ikr", "ise", "ne", "isc", "nc", "subs"}
    unknown = set(p) - BJT_DC_IRRELEVANT - known
    if unknown:
        raise PhysgradError(f"BJT model {name}: unsupported parameter(s) {sorted(unknown)} (physgrad models IS BF BR "
                            "NF NR VAF VAR IKF IKR ISE NE ISC NC)")
    return BjtModel(name, kind, IS=p.get("is", 1e-16), BF=p.get("bf", 100.0), BR=p.get("br", 1.0),
                    NF=p.get("nf", 1.0), NR=p.get("nr", 1.0), VAF=inf("vaf"), VAR=inf("var"), IKF=inf("ikf"),
                    IKR=inf("ikr"), ISE=p.get("ise", 0.0), NE=p.get("ne", 1.5), ISC=p.get("isc", 0.0),
                    NC=p.get("nc", 2.0), SUBS=int(p.get("subs", 0.0)) if p.get("subs", 0.0) in (1.0, -1.0) else 0)


def with_gmin(model, gmin: float):
    """The model with the deck's ``.options gmin`` (S)."""
    return type(model)(**{**model.__dict__, "gmin": gmin}) if gmin != model.gmin else model


def mosfet_instance(name: str, nodes: tuple, model: MosfetModel, ld: float, js: float, inst: dict) -> Mosfet:
    """A :class:`Mosfet` from its card's instance parameters (``inst``: evaluated numbers)."""
    inst = dict(inst)
    if js and (inst.get("ad", 0.0) and inst.get("as", 0.0)):
        raise PhysgradError(f"MOSFET {name}: junction currents from JS and the areas AD/AS are not supported "
                            "(give IS)")
    for k in ("temp", "dtemp"):
        t = inst.pop(k, 27.0 if k == "temp" else 0.0)
        if t != (27.0 if k == "temp" else 0.0):
            raise PhysgradError(f"MOSFET {name}: {k}={t} (physgrad simulates 27 C only)")
    w, length, m = inst.pop("w", DEFAULT_W), inst.pop("l", DEFAULT_L), inst.pop("m", 1.0)
    unknown = set(inst) - {"ad", "as", "pd", "ps", "nrd", "nrs"}
    if unknown:
        raise PhysgradError(f"MOSFET {name}: unsupported instance parameter(s) {sorted(unknown)}")
    leff = length - 2 * ld
    if not leff > 0:
        raise PhysgradError(f"MOSFET {name}: effective length L - 2 LD = {leff} m must be > 0")
    return Mosfet(name, *nodes, model, W=w, L=leff, m=m)


def bjt_instance(name: str, nodes: tuple, model: BjtModel, area: float, inst: dict) -> Bjt:
    """A :class:`Bjt` from its card (``area`` times the instance's ``AREA``/``M``); ``nodes``:
    collector, base, emitter and optionally the substrate."""
    inst = dict(inst)
    for k in ("temp", "dtemp"):
        t = inst.pop(k, 27.0 if k == "temp" else 0.0)
        if t != (27.0 if k == "temp" else 0.0):
            raise PhysgradError(f"BJT {name}: {k}={t} (physgrad simulates 27 C only)")
    area = area * inst.pop("area", 1.0) * inst.pop("m", 1.0)
    if inst:
        raise PhysgradError(f"BJT {name}: unsupported instance parameter(s) {sorted(inst)}")
    return Bjt(name, *nodes[:3], model, area=area, substrate=nodes[3] if len(nodes) > 3 else "0")


def _fmt(x: float) -> str:
    return repr(float(x))


def model_card(model) -> str:
    """The ``.model`` line of a :class:`MosfetModel` or :class:`BjtModel` (ngspice reads it; physgrad
    reads it back to an equal model). Raises for a thermal voltage other than ngspice's."""
    if model.vt != NGSPICE_VT:
        raise PhysgradError(f"transistor model {model.name}: vt = {model.vt} V cannot be written (ngspice fixes it)")
    if isinstance(model, MosfetModel):
        return (f".model {model.name} {model.polarity.upper()}(LEVEL=1 VTO={_fmt(model.VTO)} KP={_fmt(model.KP)} "
                f"LAMBDA={_fmt(model.LAMBDA)} GAMMA={_fmt(model.GAMMA)} PHI={_fmt(model.PHI)} IS={_fmt(model.IS)})")
    parts = [f"IS={_fmt(model.IS)}", f"BF={_fmt(model.BF)}", f"BR={_fmt(model.BR)}", f"NF={_fmt(model.NF)}",
             f"NR={_fmt(model.NR)}"]
    for k in ("VAF", "VAR", "IKF", "IKR"):
        if math.isfinite(getattr(model, k)):
            parts.append(f"{k}={_fmt(getattr(model, k))}")
    parts += [f"ISE={_fmt(model.ISE)}", f"NE={_fmt(model.NE)}", f"ISC={_fmt(model.ISC)}", f"NC={_fmt(model.NC)}"]
    if model.SUBS:
        parts.append(f"SUBS={model.SUBS}")
    return f".model {model.name} {model.polarity.upper()}({' '.join(parts)})"


def instance_card(el) -> str:
    """The ``M``/``Q`` line of a :class:`Mosfet` or :class:`Bjt`."""
    if isinstance(el, Mosfet):
        return (f"{el.name} {el.drain} {el.gate} {el.source} {el.bulk} {el.model.name} W={_fmt(el.W)} L={_fmt(el.L)}"
                + (f" M={_fmt(el.m)}" if el.m != 1.0 else ""))
    sub = f" {el.substrate}" if el.substrate != "0" else ""
    return f"{el.name} {el.collector} {el.base} {el.emitter}{sub} {el.model.name} {_fmt(el.area)}"


__all__ = ["MOS_KINDS", "BJT_KINDS", "mosfet_model", "bjt_model", "with_gmin", "mosfet_instance", "bjt_instance",
           "model_card", "instance_card", "NGSPICE_GMIN"]

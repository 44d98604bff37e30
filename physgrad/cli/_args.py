"""Argument types shared by the commands: each turns one command-line string into a value or raises
``argparse.ArgumentTypeError`` (argparse then exits 2 naming the option)."""
from __future__ import annotations

import argparse
import math


def names(text: str) -> tuple:
    """Comma-separated names, at least one (``"v1, v2"`` -> ``("v1", "v2")``)."""
    out = tuple(s.strip() for s in text.split(",") if s.strip())
    if not out:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return out


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def int_at_least(minimum: int):
    """The type of an integer option ``>= minimum``."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text!r}")
        return value

    return convert


def add_energy_options(p, what: str) -> None:
    """``--energy``, ``--node-capacitance F``, ``--settling-multiple K`` (``train`` and ``fit``)."""
    from physgrad.circuit.power import NODE_CAPACITANCE, SETTLING_MULTIPLE

    g = p.add_argument_group("physical energy per example (metrics columns energy_*_J and energy.png)")
    g.add_argument("--energy", action="store_true",
                   help=f"record per example the energy of the free and nudged equilibria and the devices' programming "
                        f"energy ({what})")
    g.add_argument("--node-capacitance", type=positive_float, default=None, metavar="F",
                   help=f"with --energy: capacitance of every node (line) to ground in F, default {NODE_CAPACITANCE:g} "
                        f"(an assumption: a crossbar line of ~100 cells or a pad); settling time k C / G_min")
    g.add_argument("--settling-multiple", type=positive_float, default=None, metavar="K",
                   help=f"with --energy: settling time in RC time constants, default {SETTLING_MULTIPLE:g} (exp(-5) of "
                        f"the error left)")


def energy_settings(args) -> tuple:
    """``(node_capacitance F, settling_multiple)`` of :func:`add_energy_options`' options, defaults filled in;
    either option without ``--energy`` is an error (it would be ignored)."""
    from physgrad.circuit.power import NODE_CAPACITANCE, SETTLING_MULTIPLE
    from physgrad.types import PhysgradError

    given = [o for o, v in (("--node-capacitance", args.node_capacitance),
                            ("--settling-multiple", args.settling_multiple)) if v is not None]
    if given and not args.energy:
        raise PhysgradError(f"{' and '.join(given)} set the energy accounting: give --energy too")
    return (NODE_CAPACITANCE if args.node_capacitance is None else args.node_capacitance,
            SETTLING_MULTIPLE if args.settling_multiple is None else args.settling_multiple)

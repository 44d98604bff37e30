"""Seeded diode ladders as SPICE text (issue 17): long chains that exercise the netlist reader and
the solvers' handling of banded systems. Used by ``benchmarks/`` and ``tests/``.

A ladder of ``n`` sections is driven by one voltage source ``v1`` (V) at node ``n0``; section ``k``
(1-based) holds three elements::

    rk   n{k-1} n{k}  R_k         series resistor, R_k ~ 10^U(1, 3) ohm
    dk   n{k}   m{k}  model       diode towards a shunt node (anode at the chain)
    rsk  m{k}   0     S_k         shunt resistor, S_k ~ 10^U(2, 4) ohm

so a ladder has ``3 n + 1`` elements (33,333 sections: 10^5 elements). ``kind="ideal"`` uses an
ideal diode (``D(ideal=1 vth=0.3)``), ``kind="shockley"`` a level-1 Shockley diode
(``D(IS=1e-14 N=1)``).
"""
from __future__ import annotations

import numpy as np

MODELS = {"ideal": ".model dm D(ideal=1 vth=0.3)", "shockley": ".model dm D(IS=1e-14 N=1)"}


def diode_ladder(n_sections: int, kind: str = "ideal", seed: int = 0, drive: float = 5.0) -> str:
    """SPICE text of a seeded diode ladder (see the module docstring).

    Parameters
    ----------
    n_sections : int
        Number of sections (>= 1); the netlist holds ``3 n_sections + 1`` elements.
    kind : {"ideal", "shockley"}
        Diode model.
    seed : int
        Seed of the resistor values.
    drive : float
        Value of the source ``v1`` (V).
    """
    if kind not in MODELS:
        raise ValueError(f"kind must be one of {sorted(MODELS)}, got {kind!r}")
    if int(n_sections) < 1:
        raise ValueError(f"n_sections must be >= 1, got {n_sections!r}")
    n = int(n_sections)
    rng = np.random.default_rng(seed)
    series = 10.0 ** rng.uniform(1.0, 3.0, n)
    shunt = 10.0 ** rng.uniform(2.0, 4.0, n)
    out = [f"diode ladder ({kind}, {n} sections, seed {seed})", f"v1 n0 0 DC {drive!r}"]
    for k in range(1, n + 1):
        out.append(f"r{k} n{k - 1} n{k} {series[k - 1]:.6g}")
        out.append(f"d{k} n{k} m{k} dm")
        out.append(f"rs{k} m{k} 0 {shunt[k - 1]:.6g}")
    out += [MODELS[kind], ".op", ".end", ""]
    return "\n".join(out)

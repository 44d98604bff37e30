"""The `physgrad solve` path stays lean and its fast routes give what the plain ones give.

- The CLI process imports neither the optional heavy packages (cvxpy, pandas, matplotlib, torch,
  numba) nor what the solve path does not use (autograd, scipy.optimize): checked on the module
  list of ``python -X importtime -m physgrad solve`` itself, not on a timing.
- The reader's prechecked elements equal the ones the element constructors build.
- Vectorized helpers against their plain reference loops: the offset forest, the distinct diode
  rows (parallel diodes), ``Circuit.of_type``, and the JSON text (identical to ``json.dumps``).
"""
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from physgrad.circuit import elements as E
from physgrad.circuit.graphs import offset_forest
from physgrad.circuit.netlist import NetlistError, parse_netlist
from physgrad.circuit.reduction import _distinct_rows
from physgrad.circuit.solution import json_text
from physgrad.circuit.solve import solve

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "physgrad" / "examples" / "rectifier.cir"
SHOCKLEY = """shockley ladder
v1 n0 0 DC 2
r1 n0 n1 100
d1 n1 0 dsi
r2 n1 n2 220
d2 n2 0 dsi 2
.model dsi D(IS=1e-14 N=1.1 RS=0.5)
.end
"""
# Packages the solve path must not load: optional heavy ones and unused parts of the stack.
FORBIDDEN = ("cvxpy", "pandas", "matplotlib", "torch", "numba", "autograd", "scipy.optimize", "jax", "osqp",
             "sklearn", "physgrad.learning", "physgrad.layered", "physgrad.energies", "physgrad.minimizers")


def _imported(args, tmp_path) -> set:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "physgrad", "solve", *args], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    json.loads(r.stdout)  # the answer came out whole
    names = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "physgrad.circuit.solve" in names and "numpy" in names  # the list is the real one
    return names


@pytest.mark.parametrize("kind", ["ideal", "shockley", "settling"])
def test_cli_solve_imports_no_heavy_modules(kind, tmp_path):
    if kind == "shockley":
        path = tmp_path / "shk.cir"
        path.write_text(SHOCKLEY)
        args = [str(path), "--json"]
    else:
        args = [str(EXAMPLE), "--json"] + (["--node-capacitance", "1e-12"] if kind == "settling" else [])
    names = _imported(args, tmp_path)
    bad = sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in FORBIDDEN))
    assert not bad, f"physgrad solve imported {bad}"


DECK = """prechecked against the constructors
VIN Top GND DC 3.3
Rtop top P 2.2K
R2 p 0 4.7k
ISRC 0 p 1m
Dclamp P q dth
Dsh q 0 dshk
D2 q 0 dshk 3
Rq q 0 1k
L1 q x 1u
Rx x 0 10k
X1 q 0 half
Rél p q 5k
.subckt half a b
R1 a m 1k
Rm m b 1k
D1 m b dth
.ends
.model dth D(ideal=1 vth=0.3)
.model dshk D(IS=1e-14 N=1 RS=2)
.end
"""


def test_prechecked_elements_equal_constructed():
    circuit = parse_netlist(DECK)
    kinds = set()
    for el in circuit.elements:
        fields = {f.name: getattr(el, f.name) for f in dataclasses.fields(el)}
        built = type(el)(**fields)  # through __post_init__'s checks and normalisation
        assert built == el and {k: type(v) for k, v in fields.items()} == {
            f.name: type(getattr(built, f.name)) for f in dataclasses.fields(built)}, el
        kinds.add(type(el))
    assert {E.Resistor, E.IdealDiode, E.ShockleyDiode, E.VoltageSource, E.CurrentSource} <= kinds
    assert circuit.element("vin").neg == "0" and circuit.element("rtop").n1 == "top"
    assert "x1.m" in circuit.nodes and "rél" in circuit.element_index
    assert solve(circuit).certificate.passed


@pytest.mark.parametrize("card, message", [("r1 a A 1k", "connects node 'a' to itself"),
                                           ("v1 a a 1", "connects node 'a' to itself"),
                                           ("d1 b B dm", "connects node 'b' to itself")])
def test_prechecked_path_keeps_the_errors(card, message):
    text = f"t\nv0 a 0 1\nr0 a b 1k\n{card}\n.model dm D(ideal=1)\n.end\n"
    with pytest.raises(NetlistError, match=message) as info:
        parse_netlist(text)
    assert "<netlist>:4" in str(info.value)


def _forest_reference(n, a, b, value, starts=()):
    """The plain depth-first forest over arrays (the pre-vectorization code)."""
    adj = [[] for _ in range(n)]
    for k, (x, y, v) in enumerate(zip(a, b, value)):
        adj[x].append((y, -v, k))
        adj[y].append((x, v, k))
    root, parent, edge = np.full(n, -1), np.full(n, -1), np.full(n, -1)
    offset, tree = np.zeros(n), np.zeros(len(a), bool)
    for start in list(starts) + list(range(n)):
        if root[start] >= 0:
            continue
        root[start] = start
        stack = [start]
        while stack:
            x = stack.pop()
            for y, dv, k in adj[x]:
                if root[y] < 0:
                    root[y], parent[y], edge[y] = start, x, k
                    offset[y] = offset[x] + dv
                    tree[k] = True
                    stack.append(y)
    return root, offset, tree, parent, edge


def test_offset_forest_matches_reference():
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(2, 40))
        m = int(rng.integers(0, 60))
        a, b = rng.integers(0, n, m), rng.integers(0, n, m)
        a, b = a[a != b], b[a != b]
        v = rng.normal(size=a.size)
        starts = tuple(rng.choice(n, size=int(rng.integers(0, 3)), replace=False).tolist())
        got = offset_forest(n, a, b, v, starts)
        for name, ref in zip(("root", "offset", "tree", "parent", "parent_edge"), _forest_reference(n, a, b, v, starts)):
            assert np.array_equal(getattr(got, name), ref), name


def _distinct_reference(D, d, rows):
    best: dict = {}
    for k in rows:
        key = (D.indices[D.indptr[k]:D.indptr[k + 1]].tobytes(), D.data[D.indptr[k]:D.indptr[k + 1]].tobytes())
        best.setdefault(key, []).append(int(k))
    keep, shares = [], {}
    for group in best.values():
        dmin = min(d[k] for k in group)
        tied = [k for k in group if d[k] == dmin]
        keep.append(tied[0])
        if len(tied) > 1:
            shares[tied[0]] = tuple(tied)
    return sorted(keep), shares


@pytest.mark.parametrize("width", [2, 12])
def test_distinct_rows_matches_reference(width):
    rng = np.random.default_rng(width)
    for _ in range(50):
        base = sp.random(6, 8, density=width / 16, random_state=rng, format="csr")
        base.data = np.round(base.data * 2) - 1.0  # small integers: repeats and -0.0 vs 0.0 are likely
        pick = rng.integers(0, 6, 20)  # rows repeated: parallel diodes
        D = sp.csr_matrix(base[pick])
        d = rng.choice([0.1, 0.2, 0.3], size=20)
        rows = np.sort(rng.choice(20, size=int(rng.integers(0, 21)), replace=False))
        keep, shares = _distinct_rows(D, d, rows)
        ref_keep, ref_shares = _distinct_reference(D, d, rows)
        assert keep.tolist() == ref_keep and shares == ref_shares


def test_of_type_and_tables_in_circuit_order():
    circuit = parse_netlist(DECK)
    for kind in (E.Resistor, E.VoltageSource, (E.Resistor, E.IdealDiode), E.ELEMENT_TYPES, E.CCCS):
        assert circuit.of_type(kind) == tuple(el for el in circuit.elements if isinstance(el, kind))
    arr, idx = circuit.arrays, circuit.node_index
    res = circuit.of_type(E.Resistor)
    assert arr.res_pos.tolist() == [circuit.elements.index(r) for r in res]
    assert arr.res_a.tolist() == [idx.get(r.n1, -1) for r in res]
    assert arr.g.tolist() == [r.conductance for r in res]


def test_json_text_is_json_dumps():
    sol = solve(parse_netlist(DECK))
    cases = [sol.to_dict(), {"a": 1.0, "b": {"x": 1, "y": "s\n\"é"}, "c": [1, 2, {"z": None}], "d": {}, "e": {"q": {}}},
             [1, {"a": 2}], 3.5, {}, {"k": {"m": 1e300, "n": -0.0, "é\u2028": None, "o": 5e-324}}]
    for obj in cases:
        for indent in (None, 2, 4):
            assert json_text(obj, indent) == json.dumps(obj, indent=indent, allow_nan=False)
    for bad in ({"a": {"b": math.nan}}, {"a": {"b": None, "c": math.inf}}, {"a": -math.inf}):
        with pytest.raises(ValueError):
            json_text(bad)

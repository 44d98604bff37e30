"""`physgrad solve`: output formats, exit codes, and an outsider's netlist against an independent QP."""
import json
import subprocess
import sys
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest

from physgrad.circuit.elements import CurrentSource, IdealDiode, Resistor, VoltageSource
from physgrad.cli import main
from physgrad.circuit.netlist import parse_netlist

EXAMPLE = Path(__file__).resolve().parents[1] / "physgrad" / "examples" / "rectifier.cir"

# Written by hand in the syntax (not by physgrad's writer): mixed case, suffixes, comments,
# continuation lines, a source between two free nodes, diodes between free nodes and to fixed ones.
OUTSIDER = """Outsider's test bench
* bridge-ish network with thresholds
VIN   top 0    DC 3.3
VFLT  p   q    0.25          ; floating source: v(p) - v(q) = 0.25 V
Rtop  top p    2.2K
RPQ   q   0    4.7k
R3    p   mid  1.5k
R4    mid 0    10K
R5    mid out  820
R6    out 0    3.3k
IIN   0   mid  150uA
D1    mid q    DTH
D2    out 0    DCLAMP
D3    q   out
+ DZERO
.MODEL DTH    D(ideal=1 vth=0.2)
.model dclamp d(IDEAL=1 VTH=0.45)
.model DZERO  D(ideal=1)
.END
"""


def independent_qp(circuit):
    """Plain node-voltage formulation in cvxpy: one term per resistor, sources as constraints.

    Conductances are scaled to O(1) (divided by their mean) so the conic solver reaches ~1e-10 V.
    """
    nodes = circuit.nodes
    idx = {n: i for i, n in enumerate(nodes)}
    v = cp.Variable(len(nodes))

    def V(n):
        return 0 if n == "0" else v[idx[n]]

    res = circuit.of_type(Resistor)
    gs = np.mean([r.conductance for r in res])
    obj = sum(0.5 * (r.conductance / gs) * cp.square(V(r.n1) - V(r.n2)) for r in res)
    for s in circuit.of_type(CurrentSource):
        obj = obj - (s.value / gs) * (V(s.neg) - V(s.pos))
    cons = [V(s.pos) - V(s.neg) == s.value for s in circuit.of_type(VoltageSource)]
    cons += [V(d.anode) - V(d.cathode) <= d.vth for d in circuit.of_type(IdealDiode)]
    cp.Problem(cp.Minimize(obj), cons).solve(solver="CLARABEL", tol_gap_abs=1e-14, tol_gap_rel=1e-14,
                                             tol_feas=1e-14, max_iter=500)
    return dict(zip(nodes, v.value))


def run_cli(*args, capsys):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_outsider_netlist_matches_independent_qp(tmp_path, capsys):
    path = tmp_path / "bench.cir"
    path.write_text(OUTSIDER)
    ref = independent_qp(parse_netlist(OUTSIDER))
    for solver in ("auto", "qp", "coordinate", "activeset"):
        code, out, _ = run_cli("solve", str(path), "--json", "--solver", solver, capsys=capsys)
        assert code == 0
        got = json.loads(out)
        assert got["status"] == "converged"
        for node, v in ref.items():
            assert abs(got["voltages"][node] - v) <= 1e-8, (solver, node)
    # Both diode states occur in this bench (else the check would be weak).
    d = [got["currents"][k] for k in ("d1", "d2", "d3")]
    assert any(x > 1e-6 for x in d) and any(x == 0 for x in d)


def test_json_schema(capsys):
    code, out, _ = run_cli("solve", str(EXAMPLE), "--json", capsys=capsys)
    got = json.loads(out)
    assert code == 0
    assert set(got) >= {"status", "solver", "voltages", "currents", "co_content"}
    assert set(got["voltages"]) == {"in", "a", "b", "c"}
    assert got["currents"]["vin"] == pytest.approx(-got["currents"]["r1"])
    assert got["kkt"]["passed"] is True


def test_table_output(capsys):
    code, out, _ = run_cli("solve", str(EXAMPLE), capsys=capsys)
    assert code == 0 and "voltage (V)" in out and "KKT certificate" in out and "passed" in out


def test_exit_code_bad_input(tmp_path, capsys):
    path = tmp_path / "bad.cir"
    path.write_text("t\nr1 a 0 1k\n%1 a 0 1\n")
    code, out, err = run_cli("solve", str(path), capsys=capsys)
    assert code == 2 and "bad.cir:3: unknown element letter" in err and out == ""


def test_exit_code_floating(tmp_path, capsys):
    path = tmp_path / "float.cir"
    path.write_text("t\nv1 a 0 1\nr1 a 0 1k\nr2 b c 1k\n")
    code, _, err = run_cli("solve", str(path), capsys=capsys)
    assert code == 2 and "floating" in err


def test_exit_code_infeasible(tmp_path, capsys):
    path = tmp_path / "inf.cir"
    path.write_text("t\nv1 in 0 5\nd1 in m di\nd2 m 0 di\nr1 m 0 1k\n.model di D(ideal=1)\n")
    code, out, _ = run_cli("solve", str(path), "--json", capsys=capsys)
    assert code == 1 and json.loads(out)["status"] == "infeasible"


def test_console_script_entry_point():
    """The installed `physgrad` command (`python -m physgrad`) runs the example."""
    r = subprocess.run([sys.executable, "-m", "physgrad", "solve", str(EXAMPLE), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["voltages"]["a"] == pytest.approx(0.7)


def test_json_stdout_is_clean_with_every_solver(tmp_path, capsys):
    """No backend may print to stdout (OSQP's polishing did): --json output must parse."""
    path = tmp_path / "rev.cir"
    path.write_text("rev\nV1 in 0 DC -1\nR1 in a 1k\nR2 a 0 1k\nD1 a 0 di\n.model di D(ideal=1)\n")
    for solver in ("auto", "qp", "coordinate", "activeset", "newton"):
        code, out, _ = run_cli("solve", str(path), "--json", "--solver", solver, capsys=capsys)
        assert code == 0 and json.loads(out)["voltages"]["a"] == pytest.approx(-0.5), solver

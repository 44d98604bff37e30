"""Issue 8, circuit side: no silent wrong answer, no traceback.

Tolerances
----------
- Diode-only nodes (finding 1): 1e-9 relative against an independent root (``scipy.optimize.brentq``
  on the node's KCL, ``xtol=1e-22`` V) and against ngspice with ``reltol=1e-12`` (ngspice stops
  when its update is below ``reltol |v| + vntol``).
- Rectifier (finding 2): 1e-9 V against ngspice with the same tight options.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq

import physgrad.circuit.solvers.newton as newton_mod
from physgrad.circuit import (Circuit, DiodeModel, IdealDiode, Resistor, ShockleyDiode, VoltageSource, parse_netlist,
                              read_netlist, solve, write_netlist)
from physgrad.circuit.diode import shockley_current
from physgrad.circuit.elements import NGSPICE_VT
from physgrad.circuit.reduction import build_problem, reparametrize
from physgrad.circuit.solution import certify
from physgrad.types import BadArgumentError, Nudge, PhysgradError

ROOT = Path(__file__).resolve().parents[1]
TIGHT = ".options reltol=1e-12 vntol=1e-15 abstol=1e-22"

MINIMAL = """minimal: node x held only by two Shockley diodes
v1 a 0 1
r1 a b 1k
r2 b 0 10
d1 x b dm
d2 x 0 dm
.model dm D(IS=1e-14 N=1)
.op
.end
"""

RECTIFIER = """17 V half-wave rectifier
V1 ac 0 DC 17
D1 ac a DM
rs a out 0.05
Rload out 0 1k
.model DM D(IS=1e-14 N=1.7)
.op
.end
"""


def _ngspice(text: str):
    if shutil.which("ngspice") is None:
        if os.environ.get("CI"):
            pytest.fail("ngspice is not installed in CI")
        pytest.skip("ngspice not installed")
    from physgrad.circuit.ngspice import run_ngspice

    lines = text.splitlines()
    return run_ngspice("\n".join([lines[0], TIGHT] + lines[1:]) + "\n")


def _x_root(vb: float) -> float:
    """v(x) from KCL at x: I_d1(x - vb) + I_d2(x) = 0, solved by bisection (brentq)."""
    vt, IS, gmin = NGSPICE_VT, 1e-14, 1e-12

    def kcl(x):
        return shockley_current(x - vb, IS, 1.0, vt, gmin) + shockley_current(x, IS, 1.0, vt, gmin)

    return brentq(kcl, -1.0, 1.0, xtol=1e-22, rtol=4 * np.finfo(float).eps, maxiter=500)


def test_diode_only_node_exact_root():
    """Finding 1: v(x) was 4.9359 mV (certificate passed); the root is 4.8186 mV."""
    sol = solve(parse_netlist(MINIMAL, "min.cir"))
    x, b = sol.voltage("x"), sol.voltage("b")
    assert b == pytest.approx(1 / 101 * 1, rel=1e-12)
    assert x == pytest.approx(_x_root(b), rel=1e-9)
    assert x == pytest.approx(4.8186e-3, rel=1e-4)


@pytest.mark.ngspice
def test_diode_only_node_agrees_with_ngspice():
    sol = solve(parse_netlist(MINIMAL, "min.cir"))
    ng = _ngspice(MINIMAL)
    assert sol.voltage("x") == pytest.approx(ng.voltage("x"), rel=1e-9)


def test_certificate_rejects_the_old_wrong_answer():
    """The per-node KCL tolerance: v(x) off by 0.1 mV now fails the certificate."""
    c = parse_netlist(MINIMAL, "min.cir")
    sol = solve(c)
    pb = build_problem(c)
    u = np.array(sol.info["u"], float)
    j = pb.columns[c.index_of_node("x")]
    assert certify(pb, u, np.zeros(0)).passed
    u_bad = u.copy()
    u_bad[j] = 4.9359e-3
    cert = certify(pb, u_bad, np.zeros(0))
    assert not cert.passed and cert.kcl_node == "x" and cert.kcl_ratio > 1e3
    assert cert.kcl < 1e-10  # the old absolute tolerance would have passed it


@pytest.mark.parametrize("IS", [1e-20, 1e-14, 1e-9])
def test_diode_stack_relative_accuracy(IS):
    """Nodes inside a stack of reverse/forward diodes with tiny currents, against brentq."""
    m = DiodeModel("dm", IS=IS, N=1.0)
    c = Circuit((VoltageSource("v1", "a", "0", 0.3), ShockleyDiode("d1", "a", "x", m), ShockleyDiode("d2", "0", "x", m)))
    x = solve(c).voltage("x")
    ref = brentq(lambda v: shockley_current(0.3 - v, IS, 1.0, NGSPICE_VT, 1e-12)
                 + shockley_current(-v, IS, 1.0, NGSPICE_VT, 1e-12),
                 -1, 1, xtol=1e-22, rtol=4 * np.finfo(float).eps, maxiter=500)
    assert x == pytest.approx(ref, rel=1e-9, abs=1e-15)


def test_rectifier_converges():
    """Finding 2: 500 iterations and 'not solved' before junction limiting and scaled tolerances."""
    sol = solve(parse_netlist(RECTIFIER, "rect.cir"))
    assert sol.converged and sol.n_iter < 50
    i = sol.current("rload")
    assert sol.voltage("out") == pytest.approx(1000 * i, rel=1e-12)


@pytest.mark.ngspice
def test_rectifier_agrees_with_ngspice():
    sol = solve(parse_netlist(RECTIFIER, "rect.cir"))
    ng = _ngspice(RECTIFIER)
    for node in ("a", "out"):
        assert sol.voltage(node) == pytest.approx(ng.voltage(node), abs=1e-9)


def test_gmin_stepping_fallback(monkeypatch):
    """When plain Newton fails, gmin stepping takes over and reaches the same answer."""
    c = parse_netlist(RECTIFIER, "rect.cir")
    ref = solve(c).voltages
    real = newton_mod._newton
    calls = []

    def flaky(problem, T, t0, u, rtol, max_iter):
        calls.append(rtol)
        if len(calls) == 1:
            return u, "max_iter", max_iter, "forced failure"
        return real(problem, T, t0, u, rtol, max_iter)

    monkeypatch.setattr(newton_mod, "_newton", flaky)
    sol = solve(c)
    assert "after gmin stepping" in sol.message
    np.testing.assert_allclose(sol.voltages, ref, rtol=1e-12, atol=1e-12)


def test_source_stepping_fallback(monkeypatch):
    c = parse_netlist(RECTIFIER, "rect.cir")
    ref = solve(c).voltages
    real = newton_mod._newton
    state = {"n": 0}

    def flaky(problem, T, t0, u, rtol, max_iter):
        state["n"] += 1
        if state["n"] <= 2:  # plain Newton, then the first gmin stage
            return u, "max_iter", max_iter, "forced failure"
        return real(problem, T, t0, u, rtol, max_iter)

    monkeypatch.setattr(newton_mod, "_newton", flaky)
    sol = solve(c)
    assert "after source stepping" in sol.message
    np.testing.assert_allclose(sol.voltages, ref, rtol=1e-12, atol=1e-12)


def test_breakdown_is_not_solved():
    """A diode model with BV: physgrad refuses answers in breakdown instead of being silently wrong."""
    text = "t\nv1 a 0 -20\nr1 a b 1k\nd1 b 0 dz\n.model dz D(IS=1e-14 BV=5 IBV=1m)\n"
    sol = solve(parse_netlist(text), strict=False)
    assert sol.status == "solver_error" and "breakdown" in sol.message and "d1" in sol.message
    ok = solve(parse_netlist(text.replace("-20", "-1")))
    assert ok.converged


# --- CLI ----------------------------------------------------------------------------------------

def _cli(*args, input_text=None, **kw):
    return subprocess.run([sys.executable, "-m", "physgrad", *args], capture_output=True, text=True, cwd=ROOT,
                          input=input_text, timeout=120, **kw)


def test_solve_on_a_directory_is_bad_input(tmp_path):
    r = _cli("solve", str(tmp_path))
    assert r.returncode == 2 and "is a directory" in r.stderr and "Traceback" not in r.stderr


def test_solve_on_binary_and_unreadable(tmp_path):
    b = tmp_path / "b.cir"
    b.write_bytes(bytes(range(256)) * 4)
    r = _cli("solve", str(b))
    assert r.returncode == 2 and "not a text" in r.stderr and "Traceback" not in r.stderr


def test_output_into_head_exits_quietly(tmp_path):
    lines = ["big", "v1 n0 0 1"] + [f"r{i} n{i} n{i + 1} 1k" for i in range(3000)] + ["rz n3000 0 1k"]
    path = tmp_path / "big.cir"
    path.write_text("\n".join(lines) + "\n")
    r = subprocess.run(f"{sys.executable} -m physgrad solve {path} | head -1; echo rc=${{PIPESTATUS[0]}}",
                       shell=True, executable="/bin/bash", capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.stdout.startswith("status: converged") and "rc=141" in r.stdout
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr


def _strict_loads(text):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_json_infeasible_is_strict(tmp_path):
    path = tmp_path / "inf.cir"
    path.write_text("t\nv1 a 0 1\nr1 a b 1k\nd1 b 0 di\nv2 b 0 2\n.model di D(ideal=1)\n")
    r = _cli("solve", "--json", str(path))
    assert r.returncode == 1
    out = _strict_loads(r.stdout)
    assert out["status"] == "infeasible" and out["voltages"]["a"] is None
    assert out["nonfinite"]["voltages.a"] == "NaN" and "infeasible" in out["null_reason"]


def test_json_overflow_is_strict():
    """A current that overflows float64 (a Shockley diode the sources hold at 1000 V)."""
    c = parse_netlist("t\nv1 a 0 1000\nd1 a 0 dm\nr1 a 0 1\n.model dm D(IS=1e-14)\n")
    sol = solve(c, strict=False)
    text = sol.to_json()
    json.dumps(sol.to_dict(), allow_nan=False)
    out = _strict_loads(text)
    assert sol.status != "converged" and ("nonfinite" in out or out["status"] == "infeasible")


def test_json_converged_has_no_null_keys():
    out = _strict_loads(solve(parse_netlist(MINIMAL)).to_json())
    assert "nonfinite" not in out and out["status"] == "converged"


def test_analysis_cards_one_note(tmp_path):
    path = tmp_path / "n.cir"
    path.write_text("t\nv1 a 0 1\nr1 a 0 1k\n.tran 1n 1u\n.ac dec 10 1 1k\n.control\nrun\nplot v(a)\n.endc\n"
                    ".print tran v(a)\n.end\nthis is ignored\n")
    r = _cli("solve", str(path))
    assert r.returncode == 0
    notes = [ln for ln in r.stderr.splitlines() if ln.startswith("physgrad: note:")]
    assert len(notes) == 1 and ".tran" in notes[0] and ".control block" in notes[0] and ".print" in notes[0]


# --- names: ASCII-only case folding ------------------------------------------------------------

def test_kelvin_sign_is_not_k():
    kelvin = "\u212a"
    c = parse_netlist(f"t\nv1 {kelvin} 0 1\nr1 {kelvin} 0 1k\nv2 k 0 2\nr2 k 0 1k\n")
    sol = solve(c)
    assert sol.voltage(kelvin) == 1.0 and sol.voltage("k") == 2.0 and sol.voltage("K") == 2.0
    assert len(c.nodes) == 2


def test_dotted_capital_i_stays_distinct():
    c = Circuit((VoltageSource("v1", "\u0130", "0", 1.0), Resistor("r1", "\u0130", "0", 1.0),
                 VoltageSource("v2", "i", "0", 2.0), Resistor("r2", "i", "0", 1.0)))
    assert len(c.nodes) == 2 and solve(c).voltage("I") == 2.0


# --- the Python API: every bad input is a PhysgradError -----------------------------------------

BASE = Circuit((VoltageSource("v1", "a", "0", 1.0), Resistor("r1", "a", "b", 1e-3), Resistor("r2", "b", "0", 1e-3),
                ShockleyDiode("d1", "b", "0", DiodeModel("dm"))), targets={"b": 0.3})

BAD_CALLS = {
    "Resistor nan": lambda: Resistor("r1", "a", "b", np.nan),
    "Resistor negative": lambda: Resistor("r1", "a", "b", -1.0),
    "Resistor name None": lambda: Resistor(None, "a", "b", 1.0),
    "Resistor node list": lambda: Resistor("r1", ["a"], "b", 1.0),
    "DiodeModel IS string": lambda: DiodeModel("dm", IS="x"),
    "DiodeModel negative N": lambda: DiodeModel("dm", N=-1),
    "ShockleyDiode model float": lambda: ShockleyDiode("d1", "a", "b", 1.0),
    "IdealDiode vth nan": lambda: IdealDiode("d1", "a", "b", np.nan),
    "Circuit elements float": lambda: Circuit(1.0),
    "Circuit elements string": lambda: Circuit("r1 a 0 1"),
    "Circuit targets float": lambda: Circuit(BASE.elements, targets=1.0),
    "Circuit targets string": lambda: Circuit(BASE.elements, targets="x"),
    "Circuit trainable float": lambda: Circuit(BASE.elements, trainable=1.0),
    "solve circuit float": lambda: solve(1.0),
    "solve circuit None": lambda: solve(None),
    "solve solver list": lambda: solve(BASE, solver=[1]),
    "solve conductances nan": lambda: solve(BASE, conductances=[np.nan, 1.0]),
    "solve conductances negative": lambda: solve(BASE, conductances=[-1.0, 1.0]),
    "solve conductances wrong shape": lambda: solve(BASE, conductances=np.ones((2, 2))),
    "solve conductances strings": lambda: solve(BASE, conductances=["a", "b"]),
    "solve conductances complex": lambda: solve(BASE, conductances=[1j, 1.0]),
    "solve outputs float": lambda: solve(BASE, nudge=Nudge(0.1, [0.2]), outputs=1.0),
    "solve nudge float": lambda: solve(BASE, nudge=0.1),
    "solve rtol nan": lambda: solve(BASE, rtol=np.nan),
    "solve rtol negative": lambda: solve(BASE, rtol=-1.0),
    "solve rtol string": lambda: solve(BASE, rtol="x"),
    "solve max_iter nan": lambda: solve(BASE, max_iter=np.nan),
    "solve max_iter 0": lambda: solve(BASE, max_iter=0),
    "solve unknown option": lambda: solve(BASE, foo=1),
    "solve u0 wrong shape": lambda: solve(BASE, u0=np.ones(7)),
    "Nudge beta string": lambda: Nudge("x", [0.1]),
    "Nudge target strings": lambda: Nudge(0.1, ["a"]),
    "Nudge target nan": lambda: Nudge(0.1, [np.nan]),
    "Nudge target 3-d": lambda: Nudge(0.1, np.zeros((1, 1, 1))),
    "Nudge clamp wrong length": lambda: solve(BASE, nudge=Nudge(clamp=[0.1, 0.2])),
    "voltage node None": lambda: solve(BASE).voltage(None),
    "current unknown": lambda: solve(BASE).current("r9"),
    "with_conductances list": lambda: BASE.with_conductances([1.0]),
    "with_conductances nan": lambda: BASE.with_conductances({"r1": np.nan}),
    "with_sources string value": lambda: BASE.with_sources({"v1": "x"}),
    "with_targets float": lambda: BASE.with_targets(1.0),
    "parse_netlist bytes": lambda: parse_netlist(b"t\nr1 a 0 1\n"),
    "parse_netlist None": lambda: parse_netlist(None),
    "read_netlist None": lambda: read_netlist(None),
    "read_netlist float": lambda: read_netlist(1.0),
    "write_netlist float": lambda: write_netlist(1.0),
    "reparametrize nan": lambda: reparametrize(build_problem(BASE), [np.nan, 1.0]),
    "reparametrize strings": lambda: reparametrize(build_problem(BASE), "ab"),
    "build_problem nudge float": lambda: build_problem(BASE, 0.1),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_bad_input_is_physgrad_error(name):
    with pytest.raises(PhysgradError):
        BAD_CALLS[name]()


def test_bad_argument_is_also_type_error():
    with pytest.raises(TypeError):
        solve(1.0)
    assert issubclass(BadArgumentError, PhysgradError) and issubclass(BadArgumentError, TypeError)


# --- the exact gradient refuses to densify past the limit ---------------------------------------

def test_exact_gradient_size_limit(monkeypatch):
    from physgrad.energies.co_content import CoContentEnergy
    from physgrad.learning.exact import ExactGradient
    from physgrad.types import DenseTooLargeError

    from physgrad.minimizers.co_content import CoContentMinimizer

    energy = CoContentEnergy(Circuit(BASE.elements[:3], targets={"b": 0.3}))  # no Shockley diode: adjoint route
    theta, y = energy.theta0(), np.array([0.1])
    nbytes = energy.dense_bytes()
    assert nbytes > 0
    monkeypatch.setenv("PHYSGRAD_DENSE_LIMIT_GB", str(nbytes / 2**30 / 2))
    with pytest.raises(DenseTooLargeError, match=r"GiB .*above the limit .*PHYSGRAD_DENSE_LIMIT_GB"):
        ExactGradient(route="autograd").compute(energy, theta, None, y, CoContentMinimizer())
    sparse = ExactGradient(route="adjoint").compute(energy, theta, None, y, CoContentMinimizer())  # needs no dense
    monkeypatch.setenv("PHYSGRAD_DENSE_LIMIT_GB", "1")
    dense = ExactGradient(route="autograd").compute(energy, theta, None, y, CoContentMinimizer())
    np.testing.assert_allclose(sparse.grad, dense.grad, rtol=1e-10)


@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_ladder_construction_is_not_dense():
    """A 10^5-resistor ladder: the energy builds without allocating n^2 (it used to densify at once)."""
    from physgrad.energies.co_content import CoContentEnergy

    n = 100_000
    els = [VoltageSource("v1", "n0", "0", 1.0)] + [Resistor(f"r{i}", f"n{i}", f"n{i + 1}", 1e-3) for i in range(n)]
    els.append(Resistor("rl", f"n{n}", "0", 1e-3))
    energy = CoContentEnergy(Circuit(tuple(els), targets={f"n{n}": 0.001}))
    g = energy.conductances(energy.theta0())
    assert g.shape == (n + 1,)
    with pytest.raises(PhysgradError, match="above the limit"):
        energy.quadratic_form(energy.theta0(), None)


# --- a runaway Newton iterate cannot certify itself ----------------------------------------------

@pytest.mark.parametrize("seed", [1357, 1982, 1989])
def test_runaway_voltages_are_not_certified(seed):
    """Fuzz seeds whose Newton iterate once ran off to 1e12-1e14 V and passed: the KCL tolerance used
    the answer's own voltages (a forward diode's slope times 1e14 V). The scale now comes from the
    circuit's data; the solution is sane and a runaway answer fails the certificate."""
    from verification.fuzz import random_diode_circuit

    c = random_diode_circuit(seed)
    sol = solve(c)
    v_max = max(abs(el.value) for el in c.elements if isinstance(el, VoltageSource))
    assert np.max(np.abs(sol.voltages)) < 10 * v_max + 10
    pb = build_problem(c)
    u_bad = np.array(sol.info["u"], float) * 1e12
    assert not certify(pb, u_bad, np.zeros(pb.D.shape[0])).passed


@pytest.mark.ngspice
@pytest.mark.parametrize("seed", [1357, 1982, 1989, 137, 19, 9])
def test_former_fuzz_failures_agree_with_ngspice(seed):
    from verification import fuzz

    if shutil.which("ngspice") is None:
        pytest.skip("ngspice not installed")
    r = fuzz.compare_with_ngspice(fuzz.random_diode_circuit(seed))
    assert r["kind"] == "agree" and r["worst"] <= 1e-9, r


def test_singular_system_message_names_the_likely_cause():
    """An exactly singular reduced system is a solver_error whose message names a cause the circuit has:
    the conductance range for a diode-free circuit (here 1e18: 1 uohm in series with 1 Tohm to ground,
    no source), not the ideal-diode hint."""
    from physgrad.circuit import solve
    sol = solve(parse_netlist("no source\nr1 a b 1e-6\nr2 b 0 1e12\n"), strict=False)
    assert sol.status == "solver_error"
    assert "conductances span a factor 1.0e+18" in sol.message
    assert "diode" not in sol.message

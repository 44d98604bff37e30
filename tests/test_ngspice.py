"""ngspice as the independent route: raw-file parser, error handling, agreement with Newton.

Tests that run the ngspice binary are marked ``ngspice``. Where ngspice is missing they skip,
except under CI (``$CI`` set), where a missing ngspice is a failure: CI installs it.

Tolerances
----------
Shockley circuits (``TOL_V = 1e-9`` V): both routes solve the same equations — the netlists copy
ngspice's diode law (:mod:`physgrad.circuit.diode`: ``IS (exp(v / (N vt)) - 1) + gmin v`` down to
``-3 N vt`` and ngspice's reverse branch below, with ngspice's gmin 1e-12 S and vt = kT/q at 27 C) and set ``.options reltol=1e-6 vntol=1e-9 abstol=1e-15``. ngspice stops
when a Newton update is below ``reltol |v| + vntol``; Newton converges quadratically, so the
remaining error is far below that. Measured on these circuits: <= 2.1e-11 V once physgrad's
default thermal voltage took ngspice's exact value (with 0.025864917, 9 digits, it was
<= 4.4e-10 V). Since issue 8 physgrad follows ngspice's reverse branch
``-IS (1 + (3 N vt / (e v))^3)`` below ``-3 N vt`` too, so the laws are the same everywhere. The issue
asks for 1e-8 V; 1e-9 V leaves a decade for platform round-off and still catches any modelling error.

Ideal diodes exported as steep Shockley diodes: see :func:`test_write_netlist_ideal_diodes`.
"""
from __future__ import annotations

import math
import os
import shutil
import stat
import struct
from pathlib import Path

import numpy as np
import pytest

from physgrad.circuit.ngspice import (
    NgspiceFailedError,
    NgspiceNotFoundError,
    NgspiceResult,
    NgspiceTimeoutError,
    NoOperatingPointError,
    ensure_op,
    has_tight_options,
    node_voltages,
    operating_point,
    parse_raw,
    run_ngspice,
    source_currents,
)

FIXTURES = Path(__file__).parent / "fixtures"
TOL_V = 1e-9  # V, see the module docstring
TOL_I_REL = 1e-9  # relative, source currents (same argument as TOL_V)
TOL_I_ABS = 1e-15  # A, ngspice's abstol
# V, kT/q at 27 C exactly as ngspice-39 computes it (CONSTboltz / CHARGE * 300.15 K); fitted to
# the fixture below to the last bit. 0.025864917 (9 digits) is 7e-12 V off, which moves a
# forward-biased diode's voltage by ~2e-10 V.
VT_NGSPICE = 1.38064852e-23 / 1.6021766208e-19 * 300.15
GMIN_NGSPICE = 1e-12  # S


@pytest.fixture(scope="module")
def ngspice_available():
    if shutil.which(os.environ.get("PHYSGRAD_NGSPICE", "ngspice")) is None:
        if os.environ.get("CI"):
            pytest.fail("ngspice is not installed in CI (apt-get install ngspice)")
        pytest.skip("ngspice not installed (apt-get install ngspice)")
    return True


# ----------------------------------------------------------------------------------------------
# raw-file parser (pure: no ngspice needed)
# ----------------------------------------------------------------------------------------------
def _fixture_kcl_residual(op):
    """KCL residual (A) at the diode node of the fixture netlist (1 kOhm from 5 V, diode to 0)."""
    v = op["v(a)"]
    i_r = (op["v(in)"] - v) / 1e3
    i_d = 1e-14 * math.expm1(v / VT_NGSPICE) + GMIN_NGSPICE * v
    return i_r - i_d


@pytest.mark.parametrize("name", ["ngspice_op_binary.raw", "ngspice_op_ascii.raw"])
def test_parse_raw_fixture(name):
    plots = parse_raw((FIXTURES / name).read_bytes())
    assert len(plots) == 1
    plot = plots[0]
    assert plot.plotname == "Operating Point"
    assert plot.names == ("v(in)", "v(a)", "v(b)", "i(v1)")
    assert [v.kind for v in plot.variables] == ["voltage"] * 3 + ["current"]
    op = operating_point(plots)
    assert op["v(in)"] == 5.0
    assert op["v(b)"] == pytest.approx(2.0, abs=1e-15)  # 1 mA into 2 kOhm
    assert op["v(a)"] == pytest.approx(0.6928875985993175, abs=1e-15)
    # The fixture's diode voltage satisfies the diode law to ngspice's abstol: an independent
    # check that the parser read the right bytes, not only the same bytes as last time.
    assert abs(_fixture_kcl_residual(op)) < 1e-14
    # The source delivers (5 - v_a) / 1 kOhm: negative in the first-node -> second-node convention.
    assert source_currents(op) == {"v1": pytest.approx(-(5.0 - op["v(a)"]) / 1e3, rel=1e-12)}
    assert node_voltages(op) == {"0": 0.0, "in": 5.0, "a": op["v(a)"], "b": op["v(b)"]}


def test_parse_raw_binary_and_ascii_agree():
    b = operating_point(parse_raw((FIXTURES / "ngspice_op_binary.raw").read_bytes()))
    a = operating_point(parse_raw((FIXTURES / "ngspice_op_ascii.raw").read_bytes()))
    assert b.keys() == a.keys()
    for k in b:  # ASCII holds 16 significant digits
        assert a[k] == pytest.approx(b[k], rel=1e-15, abs=1e-300)


def _binary_plot(plotname, names, kinds, rows, complex_=False):
    header = [
        "Title: synthetic",
        "Date: today",
        f"Plotname: {plotname}",
        f"Flags: {'complex' if complex_ else 'real'}",
        f"No. Variables: {len(names)}",
        f"No. Points: {len(rows)}",
        "Variables:",
    ] + [f"\t{i}\t{n}\t{k}" for i, (n, k) in enumerate(zip(names, kinds))] + ["Binary:"]
    body = b""
    for row in rows:
        for x in row:
            body += struct.pack("<dd", x.real, x.imag) if complex_ else struct.pack("<d", x)
    return ("\n".join(header) + "\n").encode() + body


def test_parse_raw_multiple_plots_and_complex():
    data = (_binary_plot("AC Analysis", ["frequency", "v(1)"], ["frequency", "voltage"],
                         [[1 + 0j, 0.5 - 0.25j], [10 + 0j, 0.1 + 0.2j]], complex_=True)
            + _binary_plot("Operating Point", ["v(1)", "v(2)", "i(v1)"],
                           ["voltage", "voltage", "current"], [[1.5, -2.25, 3e-3]]))
    plots = parse_raw(data)
    assert [p.plotname for p in plots] == ["AC Analysis", "Operating Point"]
    assert plots[0].values.dtype == np.complex128
    np.testing.assert_array_equal(plots[0].values[:, 1], [0.5 - 0.25j, 0.1 + 0.2j])
    op = operating_point(plots)
    assert op == {"v(1)": 1.5, "v(2)": -2.25, "i(v1)": 3e-3}


def test_parse_raw_failed_op_has_no_operating_point():
    # ngspice writes a header-only stub (No. Points: 0, no variable list) when .op fails.
    plots = parse_raw((FIXTURES / "ngspice_failed_op.raw").read_bytes())
    assert plots[0].values.shape[0] == 0
    with pytest.raises(NoOperatingPointError, match="no data"):
        operating_point(plots)


def test_operating_point_missing_plot():
    plots = parse_raw(_binary_plot("Transient Analysis", ["time", "v(1)"], ["time", "voltage"],
                                   [[0.0, 1.0]]))
    with pytest.raises(NoOperatingPointError, match="no 'Operating Point' plot"):
        operating_point(plots)


@pytest.mark.parametrize("data", [b"", b"hello world\n", b"Title: x\nPlotname: y\n"])
def test_parse_raw_rejects_garbage(data):
    with pytest.raises(ValueError):
        parse_raw(data)


def test_source_currents_branch_spelling():
    assert source_currents({"v1#branch": -2.0, "i(vx)": 1.0, "v(1)": 3.0}) == {"v1": -2.0, "vx": 1.0}


def test_ensure_op_and_tight_options():
    text = "title\nV1 1 0 1\nR1 1 0 1k\n.options reltol=1e-6\n.end\n"
    out = ensure_op(text)
    assert out.splitlines()[-2:] == [".op", ".end"]
    assert ensure_op(out) == out  # idempotent; ".options" is not mistaken for ".op"
    assert not has_tight_options(text)
    assert has_tight_options("t\n.options reltol=1e-7 vntol=1n abstol=1f\n")
    assert not has_tight_options("t\n.options reltol=1e-6 vntol=1u abstol=1e-15\n")


# ----------------------------------------------------------------------------------------------
# running ngspice: errors
# ----------------------------------------------------------------------------------------------
def test_missing_executable_says_how_to_install():
    with pytest.raises(NgspiceNotFoundError, match="apt-get install ngspice"):
        run_ngspice("t\nR1 1 0 1\n.end\n", executable="no-such-ngspice-binary-xyz")


def _fake_ngspice(tmp_path, body):
    script = tmp_path / "fake-ngspice"
    script.write_text("#!/bin/sh\nif [ \"$1\" = \"-v\" ]; then echo '** ngspice-99 : fake'; exit 0; fi\n"
                      + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_timeout(tmp_path):
    exe = _fake_ngspice(tmp_path, "exec sleep 30")
    with pytest.raises(NgspiceTimeoutError, match="within 0.3 s"):
        run_ngspice("t\nR1 1 0 1\n.end\n", executable=exe, timeout_s=0.3)


def test_no_raw_file_is_no_operating_point(tmp_path):
    exe = _fake_ngspice(tmp_path, "exit 0")
    with pytest.raises(NoOperatingPointError, match="no raw file"):
        run_ngspice("t\nR1 1 0 1\n.end\n", executable=exe)


@pytest.mark.ngspice
def test_ngspice_error_is_quoted(ngspice_available):
    with pytest.raises(NgspiceFailedError, match="unknown subckt") as info:
        run_ngspice("bad\nV1 1 0 DC 5\nR1 1 2 1k\nX1 1 2 nosuch\n.end\n")
    assert "unknown subckt" in info.value.stderr


@pytest.mark.ngspice
def test_ngspice_failed_op(ngspice_available):
    # Two voltage sources in parallel: singular, the .op fails (exit code 1).
    with pytest.raises(NgspiceFailedError):
        run_ngspice("loop\nV1 1 0 DC 5\nV2 1 0 DC 3\nR1 1 0 1k\n.options reltol=1e-6\n.end\n")


@pytest.mark.ngspice
def test_ignored_model_parameter_is_an_error(ngspice_available):
    # ngspice drops unknown model parameters with a warning and exit code 0: it would simulate
    # vt = 25.86 mV, not the 30 mV the netlist asks for.
    text = ("vt\nV1 1 0 DC 5\nR1 1 2 1k\nD1 2 0 dm\n.model dm D(IS=1e-14 N=1 vt=0.03)\n"
            f"{OPTIONS}\n.end\n")
    with pytest.raises(NgspiceFailedError, match=r"unrecognized parameter \(vt\)"):
        run_ngspice(text)
    relaxed = run_ngspice(text, strict=False)
    assert any("Model issue" in w for w in relaxed.warnings)


@pytest.mark.ngspice
def test_keep_dir_and_result_fields(ngspice_available, tmp_path):
    res = run_ngspice("t\nV1 in 0 DC 2\nR1 in 0 1k\n", keep_dir=tmp_path / "run")
    assert isinstance(res, NgspiceResult)
    assert res.voltage("in") == 2.0 and res.voltage("0") == 0.0
    assert res.current("v1") == pytest.approx(-2e-3, rel=1e-12)
    assert res.version.startswith("ngspice-")
    assert res.elapsed_s > 0
    assert ".op" in res.netlist.splitlines()
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"net.cir", "out.raw", "stderr.txt"}
    with pytest.raises(KeyError, match="no node"):
        res.voltage("nope")


@pytest.mark.ngspice
def test_run_ngspice_accepts_text_path_and_circuit(ngspice_available, tmp_path):
    circuit, text = _diode_resistor_source()
    path = tmp_path / "net.cir"
    path.write_text(text)
    from_text, from_path, from_circuit = run_ngspice(text), run_ngspice(path), run_ngspice(circuit)
    assert from_text.voltages == from_path.voltages
    assert from_circuit.voltages.keys() == from_text.voltages.keys() == {"0", "in", "a"}
    # write_netlist and the hand-written text describe the same circuit (the writer prints
    # 1/G with repr precision): equal to ngspice's own convergence tolerance.
    assert from_circuit.voltage("a") == pytest.approx(from_text.voltage("a"), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# agreement with physgrad's Newton solve on Shockley circuits
# ----------------------------------------------------------------------------------------------
OPTIONS = ".options reltol=1e-6 vntol=1e-9 abstol=1e-15"


def _newton(circuit):
    from physgrad.circuit.solve import solve

    return solve(circuit, solver="newton")


def _compare(circuit, text):
    """Max |dV| (V) and max relative source-current difference between ngspice and Newton."""
    ng = run_ngspice(text)
    sol = _newton(circuit)
    assert sol.status == "converged"
    assert set(ng.voltages) == set(circuit.nodes) | {"0"}
    dv = max(abs(ng.voltage(n) - sol.voltage(n)) for n in circuit.nodes)
    di = 0.0
    for name, i_ng in ng.currents.items():
        i_pg = sol.current(name)
        di = max(di, abs(i_ng - i_pg) / (TOL_I_ABS / TOL_I_REL + abs(i_pg)))
    return dv, di, ng


def _circuit(elements, title="t"):
    from physgrad.circuit.elements import Circuit

    return Circuit(tuple(elements), title)


def _d(IS=1e-14, N=1.0, name="dmod"):
    from physgrad.circuit.elements import DiodeModel

    return DiodeModel(name, IS=IS, N=N)


def _diode_resistor_source():
    from physgrad.circuit.elements import Resistor, ShockleyDiode, VoltageSource

    text = f"""diode + resistor + source
V1 in 0 DC 5
R1 in a 1k
D1 a 0 dmod
.model dmod D(IS=1e-14 N=1)
{OPTIONS}
.op
.end
"""
    circuit = _circuit([VoltageSource("v1", "in", "0", 5.0), Resistor("r1", "in", "a", 1e-3),
                        ShockleyDiode("d1", "a", "0", _d())])
    return circuit, text


def _half_wave_rectifier(v):
    """Source -> series resistance -> diode -> load; DC operating point at source value ``v``."""
    from physgrad.circuit.elements import Resistor, ShockleyDiode, VoltageSource

    text = f"""half-wave rectifier at {v} V
V1 src 0 DC {v!r}
Rs src a 50
D1 a out dmod
RL out 0 1k
.model dmod D(IS=2.52e-14 N=1.752)
{OPTIONS}
.end
"""
    circuit = _circuit([VoltageSource("v1", "src", "0", v), Resistor("rs", "src", "a", 1 / 50),
                        Resistor("rl", "out", "0", 1e-3),
                        ShockleyDiode("d1", "a", "out", _d(IS=2.52e-14, N=1.752))])
    return circuit, text


def _bridge(v):
    from physgrad.circuit.elements import Resistor, ShockleyDiode, VoltageSource

    text = f"""diode bridge at {v} V
V1 ac1 0 DC {v!r}
Rs ac1 a 10
D1 a p dmod
D2 0 p dmod
D3 n a dmod
D4 n 0 dmod
RL p n 2k
.model dmod D(IS=1e-14 N=1)
{OPTIONS}
.end
"""
    m = _d()
    circuit = _circuit([VoltageSource("v1", "ac1", "0", v), Resistor("rs", "ac1", "a", 0.1),
                        ShockleyDiode("d1", "a", "p", m), ShockleyDiode("d2", "0", "p", m),
                        ShockleyDiode("d3", "n", "a", m), ShockleyDiode("d4", "n", "0", m),
                        Resistor("rl", "p", "n", 1 / 2000)])
    return circuit, text


def _anti_parallel():
    from physgrad.circuit.elements import CurrentSource, Resistor, ShockleyDiode, VoltageSource

    text = f"""anti-parallel diodes with different models
V1 in 0 DC 1.5
R1 in a 470
D1 a b dfast
D2 b a dslow
R2 b 0 1k
I1 0 b DC 2m
R3 b c 3.3k
V2 c 0 DC -0.7
.model dfast D(IS=1e-14 N=1)
.model dslow D(IS=1e-13 N=2)
{OPTIONS}
.end
"""
    circuit = _circuit([
        VoltageSource("v1", "in", "0", 1.5), Resistor("r1", "in", "a", 1 / 470),
        ShockleyDiode("d1", "a", "b", _d(1e-14, 1.0, "dfast")),
        ShockleyDiode("d2", "b", "a", _d(1e-13, 2.0, "dslow")),
        Resistor("r2", "b", "0", 1e-3), CurrentSource("i1", "0", "b", 2e-3),
        Resistor("r3", "b", "c", 1 / 3300), VoltageSource("v2", "c", "0", -0.7),
    ])
    return circuit, text


def random_shockley_graph(n_nodes=20, seed=0):
    """A connected random graph of resistors and Shockley diodes, with two voltage sources (one
    floating) and a current source; returns ``(circuit, netlist_text)``.

    Conductances 1e-4..1e-2 S (so ngspice's reverse-region law stays < 1e-10 V from the exact
    exponential, see the module docstring), IS 1e-15..1e-13 A, N in {1, 1.5, 2}.
    """
    from physgrad.circuit.elements import CurrentSource, Resistor, ShockleyDiode, VoltageSource

    rng = np.random.default_rng(seed)
    nodes = ["0"] + [f"n{i}" for i in range(1, n_nodes + 1)]
    elements, lines, models = [], [f"random resistor-diode graph, {n_nodes} nodes, seed {seed}"], {}

    def resistor(name, a, b):
        g = float(rng.uniform(1e-4, 1e-2))
        elements.append(Resistor(name, a, b, g))
        lines.append(f"{name} {a} {b} {1 / g!r}")

    for i in range(1, n_nodes + 1):  # random spanning tree: connected, grounded
        resistor(f"rt{i}", nodes[i], nodes[int(rng.integers(0, i))])
    for k in range(n_nodes):
        a, b = rng.choice(n_nodes + 1, 2, replace=False)
        resistor(f"rx{k}", nodes[a], nodes[b])
    for k in range(n_nodes):
        a, b = rng.choice(n_nodes + 1, 2, replace=False)
        IS, N = float(10 ** rng.uniform(-15, -13)), float(rng.choice([1.0, 1.5, 2.0]))
        mname = models.setdefault((IS, N), f"dm{len(models)}")
        elements.append(ShockleyDiode(f"d{k}", nodes[a], nodes[b], _d(IS, N, mname)))
        lines.append(f"d{k} {nodes[a]} {nodes[b]} {mname}")
    elements += [VoltageSource("v1", nodes[1], "0", 5.0), VoltageSource("v2", nodes[2], nodes[3], -3.0),
                 CurrentSource("i1", "0", nodes[4], 2e-3)]
    lines += [f"v1 {nodes[1]} 0 DC 5", f"v2 {nodes[2]} {nodes[3]} DC -3", f"i1 0 {nodes[4]} DC 2m"]
    lines += [f".model {m} D(IS={IS!r} N={N!r})" for (IS, N), m in models.items()]
    lines += [OPTIONS, ".op", ".end"]
    return _circuit(elements, lines[0]), "\n".join(lines) + "\n"


CASES = {
    "diode+resistor+source": _diode_resistor_source,
    "half-wave rectifier, forward (+5 V)": lambda: _half_wave_rectifier(5.0),
    "half-wave rectifier, reverse (-5 V)": lambda: _half_wave_rectifier(-5.0),
    "diode bridge (+10 V)": lambda: _bridge(10.0),
    "diode bridge (-10 V)": lambda: _bridge(-10.0),
    "anti-parallel diodes": _anti_parallel,
    "random graph, 20 nodes, seed 0": lambda: random_shockley_graph(20, 0),
    "random graph, 20 nodes, seed 1": lambda: random_shockley_graph(20, 1),
    "random graph, 200 nodes, seed 2": lambda: random_shockley_graph(200, 2),
}


@pytest.mark.ngspice
@pytest.mark.parametrize("case", list(CASES))
def test_ngspice_matches_newton(ngspice_available, case):
    circuit, text = CASES[case]()
    dv, di, ng = _compare(circuit, text)
    print(f"{case}: max|dV| = {dv:.2e} V, max rel dI(sources) = {di:.2e}, ngspice {ng.elapsed_s:.3f} s")
    assert dv <= TOL_V, f"{case}: ngspice and Newton differ by {dv:.3e} V"
    assert di <= TOL_I_REL, f"{case}: source currents differ (relative {di:.3e})"


@pytest.mark.parametrize("case", list(CASES))
def test_hand_written_netlists_are_the_same_physics(case):
    """The hand-built Circuits and physgrad's reading of the netlist text ngspice runs give the
    same Newton answer (so the comparison above compares the same circuit). No ngspice needed."""
    from physgrad.circuit.netlist import parse_netlist

    circuit, text = CASES[case]()
    parsed = parse_netlist(text)
    a, b = _newton(circuit), _newton(parsed)
    for n in circuit.nodes:
        assert b.voltage(n) == pytest.approx(a.voltage(n), abs=1e-12)


@pytest.mark.ngspice
def test_default_options_are_not_trusted(ngspice_available):
    """The same random graph at ngspice's default tolerances is measurably worse (why the tight
    .options matter; see physgrad.circuit.ngspice.TIGHT_OPTIONS) on a small case."""
    circuit, text = random_shockley_graph(20, 0)
    loose = text.replace(OPTIONS + "\n", "")
    assert not has_tight_options(loose)
    dv_tight, _, _ = _compare(circuit, text)
    dv_loose, _, _ = _compare(circuit, loose)
    assert dv_loose > 100 * max(dv_tight, 1e-13)


# ----------------------------------------------------------------------------------------------
# ideal diodes through the netlist writer (steep Shockley models in ngspice)
# ----------------------------------------------------------------------------------------------
def _ideal_diode_circuit():
    from physgrad.circuit.elements import CurrentSource, IdealDiode, Resistor, VoltageSource

    return _circuit([
        VoltageSource("v1", "in", "0", 3.0), Resistor("r1", "in", "a", 1e-3),
        IdealDiode("d1", "a", "b"), Resistor("r2", "b", "0", 2e-3),
        IdealDiode("d2", "b", "c", 0.5), Resistor("r3", "c", "0", 1e-3),
        IdealDiode("d3", "0", "c"),  # clamps c >= 0 (off here)
        VoltageSource("v2", "e", "0", -2.0), Resistor("r4", "e", "b", 5e-4),
        IdealDiode("d4", "f", "e"), Resistor("r5", "f", "0", 1e-3),  # on: f clamped at -2 V
        CurrentSource("i1", "0", "f", 1e-4),
        IdealDiode("d5", "in", "g"), Resistor("r6", "g", "0", 1e-4),  # on, v(g) = 3 V
    ], "ideal diodes, exported as steep Shockley diodes")


@pytest.mark.ngspice
def test_write_netlist_ideal_diodes(ngspice_available):
    """ngspice on the lead's ``write_netlist`` output for ideal diodes.

    The writer replaces each ideal diode by a steep Shockley diode (IS = STEEP_IS, N = STEEP_N;
    thresholds by a series source). The difference from the ideal answer is the steep diode's
    own forward drop ``N vt ln(1 + I / IS)`` per conducting diode (0.36 mV at 1 mA for
    IS = 1e-9 A, N = 1e-3) and its reverse leakage ``IS + gmin |v|`` through the surrounding
    conductance. Both are bounded from physgrad's exact (active-set) answer below; the tolerance
    is that bound summed over diodes (a diode drop acts as a small series source, and in a
    resistive network a source perturbation moves no node voltage by more than itself).
    """
    from physgrad.circuit import netlist
    from physgrad.circuit.solve import solve

    circuit = _ideal_diode_circuit()
    text = netlist.write_netlist(circuit)
    assert has_tight_options(text)
    ng = run_ngspice(text)
    sol = solve(circuit, solver="auto")
    assert sol.status == "converged"
    IS, N = netlist.STEEP_IS, netlist.STEEP_N
    diodes = circuit.of_type(type(circuit.element("d1")))
    drop = sum(N * VT_NGSPICE * math.log1p(max(sol.current(d.name), 0.0) / IS) for d in diodes)
    g_min_node = min(r.conductance for r in circuit.resistors)
    leak = sum(IS + GMIN_NGSPICE * 10.0 for _ in diodes) / g_min_node  # |v| <= 10 V here
    tol = drop + leak
    dv = max(abs(ng.voltage(n) - sol.voltage(n)) for n in circuit.nodes)
    print(f"ideal diodes via write_netlist: max|dV| = {dv:.2e} V (bound {tol:.2e} V)")
    assert dv <= tol
    # ...and the answer is not trivially close: the steep diodes do drop something.
    assert dv > 1e-6


@pytest.mark.ngspice
def test_written_netlist_with_non_default_vt_runs_the_same_physics(ngspice_available):
    """ngspice has no vt parameter: the writer scales N so that N vt is unchanged (and round-trips)."""
    from physgrad.circuit.elements import Circuit, DiodeModel, Resistor, ShockleyDiode, VoltageSource
    from physgrad.circuit.netlist import parse_netlist, write_netlist

    m = DiodeModel("hot", IS=1e-14, N=1.2, vt=0.03)
    c = Circuit((VoltageSource("v1", "in", "0", 3.0), Resistor("r1", "in", "a", 1e-3), ShockleyDiode("d1", "a", "0", m)))
    text = write_netlist(c)
    assert parse_netlist(text) == c
    dv, di, _ = _compare(c, text)
    assert dv <= TOL_V and di <= TOL_I_REL

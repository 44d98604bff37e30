"""SPICE-subset netlists: syntax, errors naming the line, exact round trips."""
import numpy as np
import pytest

from physgrad.circuit.elements import Circuit, DiodeModel, IdealDiode, Resistor, ShockleyDiode, VoltageSource
from physgrad.types import PhysgradError
from physgrad.circuit.netlist import NetlistError, parse_netlist, parse_number, read_netlist, write_netlist
from physgrad.circuit.solve import solve
from verification.circuits import known_circuits, random_circuit


@pytest.mark.parametrize("text,value", [
    ("1", 1.0), ("4.7k", 4.7e3), ("1meg", 1e6), ("1MEG", 1e6), ("10u", 1e-5), ("3m", 3e-3), ("2n", 2e-9),
    ("5p", 5e-12), ("7f", 7e-15), ("1g", 1e9), ("2t", 2e12), ("1e3", 1e3), ("-2.5e-3", -2.5e-3), (".5", 0.5),
    ("10kohm", 1e4), ("5V", 5.0), ("100uA", 1e-4), ("1mil", 25.4e-6),
])
def test_numbers(text, value):
    assert parse_number(text) == pytest.approx(value, rel=1e-15)


@pytest.mark.parametrize("bad", ["abc", "1..2", "", "k1"])
def test_bad_numbers(bad):
    with pytest.raises(ValueError):
        parse_number(bad)


SYNTAX = """My Title
* a comment line
V1 IN 0 dc 10   ; inline comment
R1 in out
+ 1k
r2 OUT 0 3K
I1 0 out DC 0
D1 out 0 clip
.model CLIP d(ideal=1, vth = 20)
.target out 7
.trainable r2
.op
.end
"""


def test_syntax_features():
    c = parse_netlist(SYNTAX, "t.cir")
    assert c.title == "My Title"
    assert c.nodes == ("in", "out")
    assert c.element("R1").conductance == pytest.approx(1e-3)
    assert c.element("d1") == IdealDiode("d1", "out", "0", 20.0)
    assert c.targets == (("out", 7.0),) and c.trainable == ("r2",)
    assert solve(c).voltage("out") == pytest.approx(7.5)


def test_shockley_model_and_gmin_option():
    c = parse_netlist("t\nv1 a 0 1\nr1 a b 1k\nd1 b 0 dm\n.model dm D(IS=2e-14 N=1.5)\n.options gmin=1e-15\n.end\n")
    d = c.element("d1")
    assert isinstance(d, ShockleyDiode) and d.model == DiodeModel("dm", IS=2e-14, N=1.5, gmin=1e-15)


ERRORS = [
    ("t\nr1 a 0 1k\nj1 a 0 1 jm\n", r"t\.cir:3: j1 is a JFET, which physgrad does not model"),
    ("t\nr1 a 0 1k\nq1 a 0 1\n", r"t\.cir:3: expected 'Qname nc nb ne model"),
    ("t\nr1 a 0 1k\nv1 a 0 1\nm1 a a 0 0 nm\n", r"t\.cir:4: m1 uses unknown model 'nm'"),
    ("t\nr1 a 0 1k\n%1 a 0 1\n", r"t\.cir:3: unknown element letter '%'"),
    ("t\nr1 a 0\n", r"t\.cir:2: expected 'Rname n1 n2 value'"),
    ("t\nr1 a 0 0\n", r"t\.cir:2: resistor r1 needs a positive resistance"),
    ("t\nr1 a 0 -5\n", r"t\.cir:2: resistor r1 needs a positive resistance"),
    ("t\nr1 a 0 abc\n", r"t\.cir:2: resistance of r1 'abc' is not a number"),
    ("t\nr1 a 0 nan\n", r"t\.cir:2: resistance of r1 'nan' is not a number"),
    ("t\nv1 a 0 1\nr1 a 0 1k\nR1 a 0 2k\n", r"t\.cir:4: duplicate element name 'R1' \(first defined at t\.cir:3\)"),
    ("t\nr1 a a 1k\n", r"t\.cir:2: resistor r1 connects node 'a' to itself"),
    ("t\nv1 a 0 foo\n", r"t\.cir:2: value of v1 'foo' is not a number"),
    ("t\nv1 a 0 1\nd1 a 0 nomodel\nr1 a 0 1\n", r"t\.cir:3: diode d1 uses unknown model 'nomodel'"),
    ("t\nr1 a 0 1\n.model m D(IS=1e-14 FOO=10)\nd1 a 0 m\n", r"t\.cir:3: diode model m: unsupported parameter"),
    ("t\nr1 a 0 1\n.model m D(IS=1e-14 IKF=1m)\nd1 a 0 m\n", r"t\.cir:3: diode model m: parameter IKF"),
    ("t\nr1 a 0 1\n.foo 1n 1u\n", r"t\.cir:3: unsupported directive '.foo'"),
    ("t\nr1 a 0 1\n.target b 1\n", r"t\.cir:3: target node 'b' is not a node"),
    ("t\nr1 a 0 1\n.trainable r9\n", r"t\.cir: trainable element 'r9' is not an element"),
    ("t\n+ r1 a 0 1\n", r"t\.cir:2: continuation line"),
    ("t\n* only comments\n", r"t\.cir: the netlist has no elements"),
    ("", r"t\.cir:1: empty netlist"),
    ("t\nr1 a 0 1\n.model m D(ideal=1 vth=-1)\nd1 a 0 m\n", r"t\.cir:3: ideal diode model m has negative vth"),
    ("t\nv1 a 0 inf\n", r"t\.cir:2: value of v1 'inf' is not a number"),
]


@pytest.mark.parametrize("text,pattern", ERRORS)
def test_errors_name_the_line(text, pattern):
    with pytest.raises(NetlistError, match=pattern):
        parse_netlist(text, "t.cir")


def test_missing_file(tmp_path):
    with pytest.raises(NetlistError, match="no such file"):
        read_netlist(tmp_path / "nope.cir")


@pytest.mark.parametrize("case", known_circuits(), ids=lambda c: c.name)
def test_round_trip_known(case):
    c = case.circuit
    assert parse_netlist(write_netlist(c)) == c


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_random(seed):
    for shockley in (False, True):
        c = random_circuit(15, seed, shockley=shockley)
        c = c.with_targets({c.nodes[-1]: 0.25}) if seed % 2 else c
        text = write_netlist(c)
        back = parse_netlist(text)
        assert back == c
        assert write_netlist(back) == text


def test_round_trip_exact_conductances():
    """Conductances whose reciprocal does not round-trip are written as {1/G}."""
    g = [0.1 + 1e-17 * k for k in range(1)] + list(np.random.default_rng(0).uniform(1e-4, 1e-2, 50))
    els = [VoltageSource("v1", "a", "0", 1.0)] + [Resistor(f"r{i}", "a", "0", gi) for i, gi in enumerate(g)]
    c = Circuit(tuple(els))
    text = write_netlist(c)
    assert "{1/" in text
    assert parse_netlist(text) == c


def test_open_resistor_cannot_be_written():
    c = Circuit((VoltageSource("v1", "a", "0", 1.0), Resistor("r1", "a", "0", 1.0), Resistor("r2", "a", "0", 0.0)))
    with pytest.raises(PhysgradError, match="r2 is open"):
        write_netlist(c)


def test_written_file_has_tight_options_and_ideal_diode_comment():
    text = write_netlist(known_circuits()[2].circuit)
    assert ".options reltol=1e-6 vntol=1e-9 abstol=1e-15" in text
    assert "ideal diode d1" in text and "steep Shockley" in text

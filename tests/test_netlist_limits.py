"""The SPICE reader's limits and hardening (issue 18 item 3): every hostile class below hung,
crashed with a traceback or gave a different answer than ngspice before.

Limits (:class:`physgrad.circuit.netlist.ReaderLimits`): bytes, lines and files read; regular files
only; instances counted while flattening; an expression budget with memoized ``.func`` calls;
iterative flattening and parameter resolution; overflow of any intermediate value; node ``0`` the
global ground inside subcircuits (as ngspice)."""
from __future__ import annotations

import os
import shutil
import time

import pytest

from physgrad.circuit.netlist import NetlistError, parse_netlist, read_netlist
from physgrad.circuit.solve import solve
from physgrad.cli import main
from physgrad.types import BadArgumentError
from verification import fuzz
from verification.ladders import diode_ladder


def cpu():
    return time.process_time()


def test_include_bomb_stops_at_the_file_limit(tmp_path):
    (tmp_path / "top.cir").write_text(fuzz._bomb_includes(tmp_path, 30))  # 2^30 inclusions
    t = cpu()
    with pytest.raises(NetlistError, match=r"bomb\d+\.inc:\d+: .*more than 10,000 files read.*max_files"):
        read_netlist(tmp_path / "top.cir")
    assert cpu() - t < 5
    with pytest.raises(NetlistError, match=r"more than 50 files read"):
        read_netlist(tmp_path / "top.cir", max_files=50)


def test_bytes_and_lines_limits_name_the_include_line(tmp_path):
    (tmp_path / "big.inc").write_text("* filler\n" * 1000)
    (tmp_path / "top.cir").write_text("t\nv1 a 0 1\nr1 a 0 1k\n.include big.inc\n")
    assert len(read_netlist(tmp_path / "top.cir").elements) == 2
    with pytest.raises(NetlistError, match=r"top\.cir:4: .*big\.inc would bring the bytes read past the limit of "
                                           r"5,000 .*max_bytes"):
        read_netlist(tmp_path / "top.cir", max_bytes=5000)
    with pytest.raises(NetlistError, match=r"top\.cir:4: .*big\.inc: more than 500 lines read.*max_lines"):
        read_netlist(tmp_path / "top.cir", max_lines=500)


@pytest.mark.parametrize("target,why", [("/dev/zero", "not a regular file .*character device"),
                                        ("fifo", "not a regular file .*FIFO"), ("folder", "is a directory"),
                                        ("loop", "symbolic-link loop")])
def test_only_regular_files_are_included(tmp_path, target, why, capsys):
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
    elif target == "folder":
        (tmp_path / "folder").mkdir()
    elif target == "loop":
        os.symlink("loop2", tmp_path / "loop")
        os.symlink("loop", tmp_path / "loop2")
    deck = tmp_path / "top.cir"
    deck.write_text(f"t\nv1 a 0 1\nr1 a 0 1k\n.include {target}\n")
    with pytest.raises(NetlistError, match=rf"top\.cir:4: .*{why}"):
        read_netlist(deck)
    assert main(["solve", str(deck)]) == 2
    assert f"{deck}:4:" in capsys.readouterr().err
    if target != "/dev/zero":  # the netlist itself
        assert main(["solve", str(tmp_path / target)]) == 2
        err = capsys.readouterr().err
        assert str(tmp_path / target) in err and "Traceback" not in err


def test_subcircuit_bomb_without_elements_hits_the_instance_limit():
    for leaf in ("", ".param q=1\n", "c1 a b 1p\n"):
        t = cpu()
        with pytest.raises(NetlistError, match=r"more than [\d,]+ (subcircuit instances|element cards).*max_"):
            parse_netlist(fuzz._subckt_bomb(13, 10, leaf), "bomb.cir")
        assert cpu() - t < 2
    with pytest.raises(NetlistError, match=r"more than 99 subcircuit instances"):
        parse_netlist(fuzz._subckt_bomb(2, 10, "r1 a b 1k\n"), "bomb.cir", max_instances=99)


def test_thousand_nested_subcircuits_flatten_iteratively():
    c = parse_netlist(fuzz._nested_subckts(1000), "nested.cir")
    assert len(c.elements) == 1001  # v1 and one resistor per level
    assert solve(c).current("v1") == pytest.approx(-1.0, rel=1e-12)  # 1000 x 1 mA
    with pytest.raises(NetlistError, match=r"nested\.cir:\d+: subcircuits nested deeper than 1000 .*max_subckt_depth"):
        parse_netlist(fuzz._nested_subckts(3000), "nested.cir")
    assert len(parse_netlist(fuzz._nested_subckts(3000), "nested.cir", max_subckt_depth=3000).elements) == 3001


def test_func_chains_are_memoized_or_stopped_by_the_budget():
    t = cpu()
    c = parse_netlist(fuzz._func_chain(20, distinct=False), "f.cir")  # f20 = 2^20 calls of f0 unmemoized
    assert c.element("r1").resistance == pytest.approx(2.0 ** 21)
    assert cpu() - t < 2
    t = cpu()  # distinct arguments: 2^20 calls that the memo cannot share
    with pytest.raises(NetlistError, match=r"f\.cir:\d+: .*more than 200,000 expression tokens.*max_eval_steps_per"):
        parse_netlist(fuzz._func_chain(20, distinct=True), "f.cir", max_eval_steps_per_value=200_000)
    assert cpu() - t < 3
    with pytest.raises(NetlistError, match=r"more than 1,000 expression tokens evaluated in all.*max_eval_steps="):
        parse_netlist(fuzz._func_chain(12, distinct=True), "f.cir", max_eval_steps=1000)


def test_memoized_functions_see_the_callers_names():
    """A function body reads its caller's arguments (textual substitution, as ngspice): the memo key
    holds those values, so equal arguments in different contexts are not confused."""
    text = ("t\n.func g(y) {x*y}\n.func f(x) {g(2)}\n.param x=100\nv1 a 0 1\nr1 a 0 {f(3)+f(5)+g(1)}\n"
            "r2 a 0 {f(3)}\n")
    c = parse_netlist(text)
    assert c.element("r1").resistance == pytest.approx(6 + 10 + 100)
    assert c.element("r2").resistance == pytest.approx(6)


@pytest.mark.parametrize("reverse", [False, True])
def test_param_chains_of_ten_thousand(reverse):
    c = parse_netlist(fuzz._param_chain(10_000, reverse), "p.cir")
    assert c.element("r1").resistance == 10_001.0


def test_param_cycles_are_still_refused():
    with pytest.raises(NetlistError, match=r"parameter '[ab]' is defined in terms of itself"):
        parse_netlist("t\n.param a={b+1} b={a*2}\nv1 x 0 {a}\nr1 x 0 1\n")
    with pytest.raises(NetlistError, match=r"parameter 'p\d+' is defined in terms of itself"):
        parse_netlist("t\n" + fuzz._param_chain(500, False).split("\n", 1)[1].replace(".param p0=1", ".param p0={p500}"))


@pytest.mark.parametrize("expr", ["{1e200*1e200 > 1}", "{(1e308*10) % 2}", "{atan(1e308*10)}", "{1e308*10 - 1e308*10}",
                                  "{exp(709)*3}", "{(1e308*10) ? 1 : 2}", "{1e999 > 1}"])
def test_intermediate_overflow_is_bad_input(tmp_path, expr, capsys):
    deck = tmp_path / "o.cir"
    deck.write_text(f"t\nv1 a 0 1\nr1 a 0 {expr}\n")
    assert main(["solve", str(deck)]) == 2
    err = capsys.readouterr().err
    assert f"{deck}:3:" in err and "overflow" in err and "Traceback" not in err


def test_huge_continuations_read_in_linear_time():
    text = "t\nv1 a 0 1\nr1 a 0\n" + "+ \n" * 300_000 + "+ 1k\n"
    t = cpu()
    assert parse_netlist(text).element("r1").resistance == 1000.0
    assert cpu() - t < 3


def test_error_messages_are_bounded():
    with pytest.raises(NetlistError) as err:
        parse_netlist("t\nv1 a 0 1\nr1 a 0 1" + "0" * 100_000 + "\n")
    assert len(str(err.value)) < 400 and "100,001 characters" in str(err.value)


NODE0 = ("pin named 0\n.subckt s a 0\nr1 a 0 1k\nr2 a gnd 1k\n.ends\nv1 in 0 1\nr0 in b 1k\nx1 in b s\nrb b 0 1k\n"
         ".options reltol=1e-6 vntol=1e-9 abstol=1e-15\n.op\n.end\n")


def test_node_0_is_global_inside_subcircuits():
    """ngspice keeps 0 (and gnd) the global ground inside a subcircuit, even when a pin is called 0:
    here x1's second pin connects nothing, so v(b) = 0.5 V (it was 2/3 V when the pin was mapped)."""
    sol = solve(parse_netlist(NODE0))
    assert sol.voltage("b") == pytest.approx(0.5, abs=1e-12)
    assert sol.current("v1") == pytest.approx(-2.5e-3, rel=1e-12)


@pytest.mark.ngspice
def test_node_0_agrees_with_ngspice():
    if shutil.which("ngspice") is None:
        if os.environ.get("CI"):
            pytest.fail("ngspice is not installed in CI")
        pytest.skip("ngspice not installed")
    from physgrad.circuit.ngspice import run_ngspice

    ng = run_ngspice(NODE0)
    sol = solve(parse_netlist(NODE0))
    for node in ("in", "b"):
        assert sol.voltage(node) == pytest.approx(ng.voltages[node], abs=1e-9)


def test_ladders_read_exactly():
    text = diode_ladder(2000, "shockley", seed=3)
    c = parse_netlist(text)
    assert len(c.elements) == 3 * 2000 + 1
    rows = [ln.split() for ln in text.splitlines() if ln[:1] == "r"]
    for name, a, b, value in rows[:50] + rows[-50:]:
        el = c.element(name)
        assert (el.n1, el.n2) == (a, b) and el.resistance == pytest.approx(float(value), rel=1e-15)
    assert diode_ladder(5, "ideal", seed=1) == diode_ladder(5, "ideal", seed=1) != diode_ladder(5, "ideal", seed=2)


def test_limits_api():
    from physgrad.circuit.netlist import ReaderLimits, read_deck, reader_limits

    assert reader_limits(max_files=3).max_files == 3
    assert reader_limits(ReaderLimits(max_lines=7), max_files=3) == ReaderLimits(max_lines=7, max_files=3)
    with pytest.raises(BadArgumentError, match="unknown reader limit.*max_file"):
        reader_limits(max_file=3)
    with pytest.raises(BadArgumentError, match="max_bytes must be an integer >= 1"):
        ReaderLimits(max_bytes=0)
    with pytest.raises(BadArgumentError):
        read_deck("x.cir", limits="big")


@pytest.mark.ngspice
def test_shockley_ladder_agrees_with_ngspice():
    """The benchmark family is a valid deck for both simulators (tight options, as write_netlist uses)."""
    if shutil.which("ngspice") is None:
        if os.environ.get("CI"):
            pytest.fail("ngspice is not installed in CI")
        pytest.skip("ngspice not installed")
    from physgrad.circuit.ngspice import run_ngspice

    text = diode_ladder(200, "shockley", seed=4).replace(".op", ".options reltol=1e-6 vntol=1e-9 abstol=1e-15\n.op")
    sol = solve(parse_netlist(text))
    ng = run_ngspice(text)
    worst = max(abs(sol.voltage(n) - ng.voltages[n]) for n in ("n1", "n50", "n200", "m1", "m200"))
    assert worst <= 1e-6

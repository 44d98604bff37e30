"""Element power and Tellegen's theorem: sum over all elements of V*I = 0 on solved circuits, and the
per-element powers of `physgrad solve` (text and strict JSON)."""
import json

import numpy as np
import pytest

from physgrad.circuit.elements import Circuit, CurrentSource, Resistor, VoltageSource
from physgrad.circuit.power import element_powers, tellegen
from physgrad.circuit.solve import solve
from physgrad.cli import main
from verification.amplifiers import random_controlled, random_shockley_controlled
from verification.circuits import random_circuit

RTOL = 1e-9


def check_balance(sol):
    assert sol.status == "converged", sol.message
    bal = sol.power_balance
    assert bal.relative <= RTOL, (bal, sol.solver)
    # Independent route for the dissipation: physgrad's own total (sum g dv^2 + vth I + I(vd) vd).
    assert bal.dissipated == pytest.approx(sol.power, rel=RTOL, abs=RTOL * bal.scale)
    assert bal.delivered == pytest.approx(sol.power, rel=RTOL, abs=RTOL * bal.scale)
    p = sol.element_powers
    for el, pe in zip(sol.circuit.elements, p):
        if el.name.startswith("r"):  # a resistor dissipates g (v_a - v_b)^2 >= 0
            assert pe == pytest.approx(el.conductance * (sol.voltage(el.n1) - sol.voltage(el.n2)) ** 2, rel=1e-12,
                                       abs=1e-300)
        if el.name.startswith("d"):
            assert pe >= -RTOL * bal.scale


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shockley", [False, True])
def test_tellegen_random_circuits(seed, shockley):
    sol = solve(random_circuit(12, seed, shockley=shockley), "auto")
    check_balance(sol)
    assert sol.power_balance.scale > 0


@pytest.mark.parametrize("seed", range(4))
def test_tellegen_controlled_sources(seed):
    rng = np.random.default_rng(seed)
    for circuit in (random_controlled(rng), random_shockley_controlled(rng)):
        sol = solve(circuit, "auto", strict=False)
        if sol.status != "converged":  # positive feedback can leave no certified operating point
            continue
        check_balance(sol)


def test_hand_computed_divider():
    # 2 V across 1 kOhm + 3 kOhm, plus 1 mA forced from ground into the middle node.
    c = Circuit((VoltageSource("v1", "a", "0", 2.0), Resistor("r1", "a", "m", 1e-3), Resistor("r2", "m", "0", 1e-3 / 3),
                 CurrentSource("i1", "0", "m", 1e-3)))
    sol = solve(c)
    # KCL at m: (2 - vm)/1k + 1 mA = vm/3k -> vm = 2.25 V
    vm = 2.25
    # The source's current (a -> through it -> ground) is minus what leaves a into r1: (vm - 2)/1k.
    want = {"v1": 2.0 * (vm - 2.0) / 1e3, "r1": (2 - vm) ** 2 / 1e3, "r2": vm ** 2 / 3e3, "i1": -vm * 1e-3}
    got = sol.power_dict()
    for k, w in want.items():
        assert got[k] == pytest.approx(w, rel=1e-12)
    assert sum(got.values()) == pytest.approx(0.0, abs=1e-15)


def test_element_powers_shape_and_nan():
    c = Circuit((VoltageSource("v1", "a", "0", 1.0), Resistor("r1", "a", "0", 1.0)))
    p = element_powers(c, np.array([np.nan]), np.array([np.nan, np.nan]))
    assert p.shape == (2,) and np.all(np.isnan(p))
    assert np.isnan(tellegen(c, p).relative)


def test_cli_solve_reports_element_power(tmp_path, capsys):
    f = tmp_path / "c.cir"
    f.write_text("t\nV1 a 0 2\nR1 a m 1k\nR2 m 0 3k\nI1 0 m 1m\n.end\n")
    assert main(["solve", str(f), "--json"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    ep = out["element_power"]
    assert set(ep) == {"v1", "r1", "r2", "i1"}
    assert ep["r2"] == pytest.approx(2.25 ** 2 / 3e3, rel=1e-12)
    assert out["power_balance"]["delivered"] == pytest.approx(out["power"], rel=1e-12)
    assert out["power_balance"]["relative"] <= RTOL
    assert main(["solve", str(f)]) == 0
    text = capsys.readouterr().out
    assert "power (W)" in text and "Tellegen" in text


def test_cli_solve_settling_energy(tmp_path, capsys):
    f = tmp_path / "c.cir"
    f.write_text("t\nV1 a 0 2\nR1 a m 1k\nR2 m 0 3k\nI1 0 m 1m\n.end\n")
    assert main(["solve", str(f), "--json", "--node-capacitance", "1e-12", "--settling-multiple", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    st = out["settling"]
    # Node a is held by V1; node m has 1 mS + 1/3 mS: G_min = 4/3 mS; t = 4 * 1 pF / G_min = 3 ns.
    assert st["g_min_S"] == pytest.approx(4e-3 / 3, rel=1e-12)
    assert st["settling_time_s"] == pytest.approx(3e-9, rel=1e-12)
    assert st["energy_J"] == pytest.approx(out["power"] * 3e-9 + 1e-12 * (2.0 ** 2 + 2.25 ** 2), rel=1e-12)
    assert main(["solve", str(f), "--node-capacitance", "1e-12"]) == 0
    assert "settling:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:  # argparse: the option's type refuses it
        main(["solve", str(f), "--node-capacitance", "-1"])
    assert exc.value.code == 2


def test_cli_settling_options_checked_and_overflow_said_in_words(tmp_path, capsys):
    """--settling-multiple alone (it would be ignored), 0 or inf is bad input; a settling time or energy past
    the doubles prints 'none (...)' in the table (it raised TypeError) and null in strict JSON; a circuit
    with no resistor-settled node too."""
    f = tmp_path / "c.cir"
    f.write_text("t\nV1 a 0 2\nR1 a m 1k\nR2 m 0 3k\n.end\n")
    assert main(["solve", str(f), "--settling-multiple", "3"]) == 2
    assert "--node-capacitance" in capsys.readouterr().err
    for k in ("0", "inf", "nan"):
        with pytest.raises(SystemExit) as exc:
            main(["solve", str(f), "--node-capacitance", "1e-12", "--settling-multiple", k])
        assert exc.value.code == 2
    capsys.readouterr()
    assert main(["solve", str(f), "--node-capacitance", "1e300", "--settling-multiple", "1e308"]) == 0
    assert "none (" in capsys.readouterr().out
    assert main(["solve", str(f), "--json", "--node-capacitance", "1e300", "--settling-multiple", "1e308"]) == 0
    st = json.loads(capsys.readouterr().out)["settling"]
    assert st["settling_time_s"] is None and st["energy_J"] is None
    g = tmp_path / "held.cir"
    g.write_text("t\nV1 a 0 2\nD1 a 0 dm\n.model dm d\n.end\n")
    rc = main(["solve", str(g), "--node-capacitance", "1e-12"])
    out = capsys.readouterr().out
    assert rc in (0, 1) and ("none (" in out or "settling:" not in out)

"""The front door: Protocols, lazy imports, ``physgrad.solve`` / ``physgrad.gradient``, one default beta,
the round-off floor of the nudge, strict JSON under hostile nudges, per-method labels, help texts, and
``verify``'s output folder."""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import physgrad
from physgrad.cli import build_parser, main
from physgrad.netlists import grad as G

ROOT = Path(__file__).resolve().parents[1]
def test_protocols_name_the_three_abstractions_and_their_capabilities(netlist):
    from physgrad.energies.layered import DeepResistive
    from physgrad.minimizers.block import BlockCoordinateDescent

    energy = physgrad.CoContentEnergy(physgrad.parse_netlist(netlist.read_text()))
    minimizer = physgrad.CoContentMinimizer()
    assert isinstance(energy, physgrad.Energy) and isinstance(energy, physgrad.HasQuadraticForm)
    assert isinstance(minimizer, physgrad.Minimizer) and isinstance(minimizer, physgrad.ImplicitGradient)
    for code in physgrad.METHODS:
        assert isinstance(physgrad.make_estimator(code), physgrad.LearningRule), code
    assert isinstance(physgrad.make_estimator("cep"), physgrad.HasPhases)
    assert physgrad.missing(object(), physgrad.Minimizer) == ["accepts", "minimize"]
    assert physgrad.missing(minimizer, physgrad.Minimizer) == []
    assert not isinstance(energy, physgrad.SplitsParameters)
    drn = DeepResistive(4, (4,), 2)
    assert isinstance(drn, physgrad.SplitsParameters) and isinstance(drn, physgrad.ChecksState)
    assert isinstance(BlockCoordinateDescent(), physgrad.Steps)
    with pytest.raises(AttributeError):
        physgrad.no_such_name  # noqa: B018


def test_import_physgrad_is_lazy():
    code = ("import sys, physgrad; heavy = [m for m in ('physgrad.circuit', 'scipy', 'sklearn', 'physgrad.netlists') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}).stdout
    assert out.strip() == "[]"


def test_solve_takes_text_path_or_circuit(netlist):
    c = physgrad.read_netlist(netlist)
    a, b, d = physgrad.solve(netlist.read_text()), physgrad.solve(netlist), physgrad.solve(c)
    for node in ("a", "out"):
        assert a.voltage(node) == b.voltage(node) == d.voltage(node)
    assert physgrad.solve(str(netlist)).voltage("out") == a.voltage("out")
    with pytest.raises(physgrad.PhysgradError):
        physgrad.solve(3.0)


def test_gradient_matches_the_divider_formula():
    # v = g1 / (g1 + g2); C = (v - y)^2 / 2; dC/dg1 = (v - y) g2 / (g1 + g2)^2 (V^2/S)
    g1, g2, y = 1 / 3.0, 1 / 5.0, 0.2
    net = f"divider\nV1 in 0 1\nR1 in out 3\nR2 out 0 5\n.target out {y}\n"
    v = g1 / (g1 + g2)
    exact = {"r1": (v - y) * g2 / (g1 + g2) ** 2, "r2": -(v - y) * g1 / (g1 + g2) ** 2}
    res = physgrad.gradient(net)
    assert res["estimate"] == "dC/dg" and res["unit"] == "V^2/S"
    for k in exact:
        assert res["grad"][k] == pytest.approx(exact[k], rel=1e-12)
    cep = physgrad.gradient(net, "cep")
    assert cep["beta"] == pytest.approx(1e-4 * np.median([g1, g2]))
    for k in exact:
        assert cep["grad"][k] == pytest.approx(exact[k], rel=1e-6)


def test_one_default_beta_for_grad_and_fit(netlist, tmp_path):
    from physgrad.netlists.fit import FitSpec, resolve

    c = physgrad.parse_netlist(netlist.read_text())  # .trainable R1 R2 R3: the default is over all resistors (R4 too)
    g = [r.conductance for r in c.resistors]
    assert G.default_beta(c) == pytest.approx(1e-4 * np.median(g))
    assert G.grad_result(c, "cep")["beta"] == G.default_beta(c)
    net = tmp_path / "c.cir"
    net.write_text(netlist.read_text())
    data = tmp_path / "d.csv"
    data.write_text("v1,out\n1,0.2\n0.5,0.1\n")
    pb = resolve(FitSpec(netlist=str(net), data=str(data), inputs=("v1",), outputs=("out",)))
    assert pb.resolved["beta"] == G.default_beta(c)


def test_beta_below_round_off_is_refused_naming_the_smallest_usable(netlist, capsys):
    c = physgrad.read_netlist(netlist)
    exact = np.array(list(G.grad_result(c, "exact")["grad"].values()))
    floor = G.grad_result(c, "cep")["smallest_beta"]
    assert 0 < floor < G.default_beta(c)
    assert main(["grad", str(netlist), "--method", "cep", "--beta", repr(floor * 0.5)]) == 2
    err = capsys.readouterr().err
    assert "smallest usable beta" in err and f"{floor:.3g}" in err
    for method in ("pep", "cep"):  # at the floor the estimate still has about 3 digits
        g = np.array(list(G.grad_result(c, method, beta=floor)["grad"].values()))
        assert np.linalg.norm(g - exact) <= 1e-2 * np.linalg.norm(exact), method
    assert main(["grad", str(netlist), "--method", "ccpl", "--eta", "1e-300"]) == 2
    assert "smallest usable eta" in capsys.readouterr().err


HOSTILE_BETAS = ["5e-324", "1e-300", "1e-30", "1e-16", "1e150", "1e300", "1.7e308"]


def _strict(text):
    def bad(token):
        raise AssertionError(f"non-strict JSON token {token}")
    return json.loads(text, parse_constant=bad)


@pytest.mark.parametrize("method", ["pep", "nep", "cep", "ep4", "fp"])
def test_no_nan_or_infinity_in_grad_json_under_hostile_betas(netlist, capsys, method):
    for beta in HOSTILE_BETAS:
        code = main(["grad", str(netlist), "--method", method, "--beta", beta, "--json"])
        out = capsys.readouterr()
        assert code in (0, 1, 2), (beta, code)
        if code == 2:
            assert not out.out and "error" in out.err
        else:
            res = _strict(out.out)
            assert (res["grad"] is None) == (code == 1)
            if res["grad"] is None:
                assert res["reason"]
            else:
                assert all(np.isfinite(list(res["grad"].values())))


def test_no_nan_or_infinity_in_any_json_output(netlist, tmp_path, capsys):
    """Every command with --json, at hostile nudges and amplitudes: strict JSON or exit 2."""
    runs = [["solve", str(netlist), "--json"]]
    runs += [["grad", str(netlist), "--method", m, "--eta", e, "--json"] for m in ("pcpl", "ncpl", "ccpl")
             for e in ("5e-324", "1e-200", "1e-20", "1e200", "1.7e308")]
    runs += [["grad", str(netlist), "--method", m, "--json"] for m in ("exact", "cl", "tbp", "rbp", "hep")]
    data = tmp_path / "d.csv"
    data.write_text("v1,out\n1,0.2\n1e300,0.1\n")
    runs += [["predict", str(netlist), "--data", str(data), "--json"]]
    for argv in runs:
        code = main(argv)
        out = capsys.readouterr()
        assert code in (0, 1, 2), argv
        if out.out:
            _strict(out.out)
        else:
            assert code != 0, argv
    for beta in HOSTILE_BETAS[:3]:  # fit refuses a nudge below round-off before writing anything
        out = tmp_path / f"fit{beta}"
        assert main(["fit", str(netlist), "--data", str(data), "--inputs", "v1", "--beta", beta, "--out", str(out),
                     "--no-progress"]) == 2
        assert "smallest usable beta" in capsys.readouterr().err and not out.exists()


def test_clamped_methods_are_labelled_update(netlist, capsys):
    assert main(["grad", str(netlist), "--method", "ccpl"]) == 0
    out = capsys.readouterr().out
    assert "update (V^2)" in out and "dC/dg (V^2/S)" not in out
    assert main(["grad", str(netlist), "--method", "cep"]) == 0
    assert "dC/dg (V^2/S)" in capsys.readouterr().out
    assert G.estimate_label("cl") == "update" and G.estimate_label("tbp") == "dC/dg"


def _actions(parser, path):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from _actions(sub, path + (name,))
        elif not isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
            yield path, a


def test_every_option_of_every_command_has_help():
    missing = [" ".join(path) + " " + (a.option_strings[0] if a.option_strings else a.dest)
               for path, a in _actions(build_parser(), ("physgrad",)) if not a.help or a.help == argparse.SUPPRESS]
    assert not missing, f"options without help text: {missing}"


def test_verify_writes_a_new_folder_and_refuses_a_non_empty_one(tmp_path, monkeypatch, capsys):
    import pandas as pd

    from verification import suite

    ok = pd.DataFrame([dict(case="c", family="exact", check="exact_vs_fd", method="exact", param_name="", param=0.0,
                            value=0.0, reference=0.0, error=0.0, tol=1e-6, status="pass", detail="")])
    monkeypatch.setattr(suite, "catalogue", lambda quick: [])
    monkeypatch.setattr("verification.suite.run_suite", lambda **kw: ok)
    from physgrad.cli.verify import report_folder

    monkeypatch.chdir(tmp_path)
    assert main(["verify", "--quick"]) == 0
    made = [p for p in tmp_path.iterdir()]
    assert len(made) == 1 and made[0].name.startswith("verify-quick-") and (made[0] / "summary.md").exists()
    again = report_folder(None, "quick", False)
    assert again.name.startswith("verify-quick-") and not again.exists()  # a second run gets its own folder
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.md").write_text("keep me")
    capsys.readouterr()
    assert main(["verify", "--quick", "--out", str(mine)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (mine / "summary.md").read_text() == "keep me"
    assert report_folder(str(mine), "quick", True) == mine
    assert report_folder(str(tmp_path / "new"), "full", False) == tmp_path / "new"


def test_docstring_examples_of_the_front_door_run():
    import doctest

    from physgrad.netlists import grad

    res = doctest.testmod(grad, raise_on_error=False)
    assert res.attempted >= 4 and res.failed == 0

"""``physgrad grad``: JSON output, methods, and agreement with an independent finite difference."""
import json

import numpy as np
import pytest

from physgrad.cli import main
from physgrad.learning import METHODS
from physgrad.netlists.grad import COUPLED, NUDGED
from physgrad.circuit.netlist import read_netlist, write_netlist
from physgrad.circuit.solve import solve
from verification.cases import feasible_random_circuit

def run_json(capsys, *args):
    assert main(["grad", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def fd_gradient(circuit, names, h=1e-4):
    """Independent dC/dg: the circuit core's solve() on netlists with one conductance moved."""
    def cost(c):
        sol = solve(c)
        return 0.5 * sum((sol.voltage(n) - y) ** 2 for n, y in c.targets)

    out = {}
    for n in names:
        g = circuit.element(n).conductance

        def at(t):
            return cost(circuit.with_conductances({n: g + t}))

        d1 = (at(h) - at(-h)) / (2 * h)
        d2 = (at(h / 2) - at(-h / 2)) / h
        out[n] = (4 * d2 - d1) / 3
    return out


def test_exact_json_matches_fd(netlist, capsys):
    res = run_json(capsys, netlist, "--method", "exact")
    assert set(res) >= {"cost", "method", "beta", "grad", "surrogate"}
    assert res["method"] == "exact" and res["surrogate"] is None and res["beta"] is None
    circ = read_netlist(netlist)
    assert list(res["grad"]) == ["r1", "r2", "r3"]
    fd = fd_gradient(circ, res["grad"])
    norm = np.linalg.norm(list(res["grad"].values()))
    for n, g in res["grad"].items():
        assert abs(g - fd[n]) <= 1e-6 * norm
    assert res["active_set"]["active_diodes"] == ["d1"]


@pytest.mark.parametrize("seed", [21, 22])
def test_exact_on_unseen_random_netlists(tmp_path, capsys, seed):
    circ = feasible_random_circuit(seed, n_free=8, n_diodes=4)
    p = tmp_path / "r.cir"
    p.write_text(write_netlist(circ))
    res = run_json(capsys, p, "--method", "exact")
    fd = fd_gradient(read_netlist(p), res["grad"])
    g = np.array(list(res["grad"].values()))
    assert np.max(np.abs(g - np.array([fd[n] for n in res["grad"]]))) <= 1e-6 * np.linalg.norm(g)


def test_every_method_runs(netlist, capsys):
    exact = np.array(list(run_json(capsys, netlist, "--method", "exact")["grad"].values()))
    for m in METHODS:
        if m == "hep":  # ideal diodes are not holomorphic: refused (tests/test_contour.py)
            continue
        extra = {"beta": ["--beta", "1e-4"] if m in NUDGED else [], "eta": ["--eta", "1e-3"] if m in COUPLED else [],
                 "steps": ["--steps", "200"] if m in ("tbp", "rbp") else []}
        res = run_json(capsys, netlist, "--method", m, *sum(extra.values(), []))
        g = np.array(list(res["grad"].values()))
        assert g.shape == exact.shape and np.all(np.isfinite(g))
        if m in ("pep", "nep", "cep"):
            assert res["beta"] == 1e-4 and res["surrogate"] == pytest.approx(res["cost"], rel=1e-2)
            assert np.linalg.norm(g - exact) <= 1e-2 * np.linalg.norm(exact)
        if m in ("tbp", "rbp", "cep"):
            assert np.linalg.norm(g - exact) <= 1e-6 * np.linalg.norm(exact)


def test_text_output(netlist, capsys):
    assert main(["grad", str(netlist), "--method", "cep"]) == 0
    out = capsys.readouterr().out
    assert "dC/dg" in out and "r2" in out and "surrogate" in out


def test_bad_input(tmp_path, capsys):
    p = tmp_path / "n.cir"
    p.write_text("no targets\nV1 in 0 1\nR1 in 0 1\n.end\n")
    assert main(["grad", str(p)]) == 2
    assert ".target" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["grad", str(p), "--method", "sgd"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["grad", str(p), "--beta", "-1"])


def test_default_beta_scales_with_the_circuit():
    """Without --beta the nudge is 1e-4 x the median conductance: C-EP then matches the exact gradient."""
    from pathlib import Path

    from physgrad.netlists.grad import default_beta, grad_result
    from physgrad.circuit.netlist import read_netlist

    circuit = read_netlist(Path(__file__).resolve().parents[1] / "physgrad" / "examples" / "rectifier.cir")
    exact = grad_result(circuit, "exact")["grad"]
    cep = grad_result(circuit, "cep")
    assert cep["beta"] == pytest.approx(default_beta(circuit))
    scale = max(abs(v) for v in exact.values())
    for name, v in exact.items():
        # C-EP's bias is O(beta^2): ~1e-8 relative here; 1e-6 leaves room for the phases' round-off.
        assert abs(cep["grad"][name] - v) <= 1e-6 * scale, name


def test_iteration_counts_are_bounded(netlist, capsys):
    """--steps and --points are sizes read from input: past their bounds they are refused at once (exit 2)
    instead of running for minutes (TBP's tape grew by ~40 KB per sweep: 100,000 sweeps took 3.1 GB)."""
    from physgrad.learning.backprop import MAX_RBP_STEPS, MAX_TBP_STEPS
    from physgrad.learning.contour import MAX_POINTS
    for argv, bound in ((["--method", "tbp", "--steps", str(MAX_TBP_STEPS + 1)], MAX_TBP_STEPS),
                        (["--method", "rbp", "--steps", str(MAX_RBP_STEPS + 1)], MAX_RBP_STEPS),
                        (["--method", "hep", "--points", str(MAX_POINTS + 1)], MAX_POINTS),
                        (["--method", "fp", "--points", "100000000"], MAX_POINTS)):
        assert main(["grad", str(netlist), *argv]) == 2
        err = capsys.readouterr().err
        assert f"{bound:,}" in err or str(bound) in err
    assert main(["grad", str(netlist), "--method", "tbp", "--steps", "50", "--json"]) in (0, 1)

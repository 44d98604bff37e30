"""``physgrad fit --trainable GLOBS --bounds NAME=LO:HI``: trained sources (gate voltages of an NMOS network,
a bias source of a diode circuit) by the per-sample adjoint route; bounds at every step; resume; predict
with the trained sources; bad input exits 2 naming the element; the default is unchanged."""
import json
import shutil

import numpy as np
import pytest

from physgrad.circuit.netlist import parse_netlist, read_netlist
from physgrad.circuit.solve import solve
from physgrad.cli import main
from physgrad.netlists import fit as fitmod
from physgrad.netlists.fit import FitSpec, fit_run, resolve
from physgrad.netlists.predict import load_model, predict
from physgrad.netlists.trainable import AdjointEstimator, SampleSolver, SourceModel, select_trainable
from physgrad.runs import load_checkpoint
from verification.circuits import NMOS_EDGES_DECK

NMOS = NMOS_EDGES_DECK  # three NMOS edges, gates on sources vg1..vg3 (verification.circuits)

DIODES = """* Shockley diodes, a bias source and a current source
vin in 0 0.5
vb b 0 0.3
ib 0 c 0.2m
r1 in c 1k
r2 b c 2k
r3 c out 1k
r4 out 0 3k
d1 c out dm
d2 out b dm
.model dm D(IS=1e-12 N=1.5)
.end
"""

DATA = "vin,out\n0.0,0.3\n0.25,0.35\n0.5,0.45\n0.75,0.6\n1.0,0.8\n"


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "nmos.cir").write_text(NMOS)
    (tmp_path / "diodes.cir").write_text(DIODES)
    (tmp_path / "train.csv").write_text(DATA)
    return tmp_path


def _fd_check(text, globs, rtol):
    """Adjoint dC/dtheta (batch mean) against central differences of the batch-mean cost."""
    circuit = parse_netlist(text)
    tr = select_trainable(circuit, globs, ("vin",))
    model, solver = SourceModel(circuit, ("vin",), ("out",), tr), SampleSolver()
    X, Y = np.array([[0.1], [0.55], [0.9]]), np.array([[0.3], [0.5], [0.7]])
    theta = model.theta0()

    def cost(th):
        eq = solver.minimize(model, th, X)
        assert eq.converged
        return float(np.mean(0.5 * np.sum((model.outputs(eq.state) - Y) ** 2, axis=1)))

    g = AdjointEstimator().estimate(model, theta, X, Y, solver)
    fd = []
    for k in range(theta.size):
        h = 1e-5 * abs(theta[k])
        e = np.zeros_like(theta)
        e[k] = h
        fd.append((cost(theta + e) - cost(theta - e)) / (2 * h))
    fd = np.array(fd)
    assert np.all(np.abs(fd) > 0)
    np.testing.assert_allclose(g, fd, rtol=rtol, atol=0)
    return tr


def test_adjoint_gradient_of_gate_voltages_matches_finite_differences():
    tr = _fd_check(NMOS, ("vg*", "R1"), 1e-5)  # names fold like the netlist reader's
    assert tr.resistors == ("r1",) and tr.sources == ("vg1", "vg2", "vg3")


def test_adjoint_gradient_of_sources_on_a_co_content_circuit_matches_finite_differences():
    tr = _fd_check(DIODES, ("vb", "ib", "r[12]"), 1e-5)
    assert tr.names == ("r1", "r2", "vb", "ib")


def _spec(files, **kw):
    base = dict(netlist=str(files / "nmos.cir"), data=str(files / "train.csv"), inputs=("vin",), outputs=("out",),
                method="exact", trainable=("vg*",), epochs=6, batch_size=2)
    base.update(kw)
    return FitSpec(**base)


def test_fit_learns_gate_voltages_within_bounds_at_every_step(files, monkeypatch):
    seen = []
    real = fitmod.device_step

    def spy(pb, theta, theta_opt, dstate):
        out = real(pb, theta, theta_opt, dstate)
        seen.append((np.asarray(theta_opt, float).copy(), out[0].copy()))
        return out

    monkeypatch.setattr(fitmod, "device_step", spy)
    rows = fit_run(_spec(files, bounds=("vg3=1.8:2.1", "vg[12]=1.5:2.5")), files / "run", progress=False,
                   log=lambda *a: None)
    costs = [r["train_cost"] for r in rows]
    assert costs[-1] < 0.5 * costs[0]
    lo, hi = np.array([1.5, 1.5, 1.8]), np.array([2.5, 2.5, 2.1])
    assert len(seen) == 6 * 3
    for raw, kept in seen:
        assert np.all(kept >= lo) and np.all(kept <= hi)
        np.testing.assert_array_equal(kept, np.clip(raw, lo, hi))
    assert any(np.any(raw < lo) or np.any(raw > hi) for raw, _ in seen)  # the projection did bind
    cfg = json.loads((files / "run" / "config.json").read_text())
    assert cfg["resolved"]["trainable"] == ["vg1", "vg2", "vg3"] and cfg["resolved"]["trainable_sources"] == \
        ["vg1", "vg2", "vg3"]
    assert cfg["resolved"]["bounds"]["vg3"] == [1.8, 2.1, "V"]


def test_resume_equals_an_uninterrupted_run_and_predict_uses_the_trained_sources(files, capsys):
    quiet = dict(progress=False, log=lambda *a: None)
    fit_run(_spec(files, epochs=3), files / "full", **quiet)
    part = fit_run(_spec(files, epochs=3), files / "part", _interrupt_after=4, **quiet)
    assert part.interrupted
    fit_run(_spec(files, epochs=3), files / "part", resume=True, **quiet)
    a = load_checkpoint(files / "full" / "checkpoint.npz", required=("theta",))
    b = load_checkpoint(files / "part" / "checkpoint.npz", required=("theta",))
    np.testing.assert_array_equal(a["theta"], b["theta"])
    strip = (lambda p: [line.rsplit(",", 1)[0] for line in (p / "metrics.csv").read_text().splitlines()])
    assert strip(files / "full") == strip(files / "part")
    theta = a["theta"]
    assert not np.allclose(theta, 2.0)
    model = load_model(files / "full")
    for name, v in zip(("vg1", "vg2", "vg3"), theta):
        assert model.circuit.element(name).value == v  # trained.cir carries the trained gate voltages
    X = np.array([[0.2], [0.7]])
    got = predict(model, X)[:, 0]
    c = parse_netlist(NMOS).with_sources(dict(zip(("vg1", "vg2", "vg3"), theta)))
    want = [solve(c.with_sources({"vin": x})).voltage("out") for x in X[:, 0]]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    untrained = [solve(parse_netlist(NMOS).with_sources({"vin": x})).voltage("out") for x in X[:, 0]]
    assert np.max(np.abs(np.array(want) - untrained)) > 1e-3
    capsys.readouterr()
    assert main(["predict", str(files / "full"), "--data", str(files / "train.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = [solve(c.with_sources({"vin": x})).voltage("out") for x in (0.0, 0.25, 0.5, 0.75, 1.0)]
    y = np.array([0.3, 0.35, 0.45, 0.6, 0.8])
    assert out["rmse_V"] == pytest.approx(float(np.sqrt(np.mean((np.array(rows) - y) ** 2))), abs=1e-12)


@pytest.mark.parametrize("extra, needle", [
    (["--trainable", "zz*"], "'zz*' matches no element"),
    (["--trainable", "m1"], "'m1', a Mosfet, which cannot be trained"),
    (["--trainable", "vin"], "'vin', an input source"),
    (["--trainable", "vg*", "--bounds", "vg1=3:1"], "'vg1=3:1': LO must be below HI"),
    (["--trainable", "vg*", "--bounds", "vg1=0:inf"], "'vg1=0:inf': LO and HI must be finite"),
    (["--trainable", "vg*", "--bounds", "vg1=nan:1"], "'vg1=nan:1': LO and HI must be finite"),
    (["--trainable", "vg*", "--bounds", "vg1=a:1"], "'vg1=a:1': LO and HI must be numbers"),
    (["--trainable", "vg*", "--bounds", "vg1"], "'vg1': expected NAME=LO:HI"),
    (["--trainable", "vg*", "--bounds", "vdd=0:3"], "'vdd' is not trainable"),
    (["--trainable", "vg*", "--bounds", "nope=0:3"], "no element 'nope'"),
    (["--trainable", "vg*", "--bounds", "vg2=0:1"], "'vg2' starts at 2 V, outside its bounds [0, 1] V"),
    (["--trainable", "vg*", "--bounds", "vg1=0:3", "--bounds", "vg*=0:4"], "'vg1' is already bounded"),
    (["--trainable", "vg*,r1", "--bounds", "r1=-1:3"], "'r1' is a resistor, bounded in conductance (S)"),
    (["--trainable", "vg*", "--method", "cep"], "transistors (m1, m2, m3)"),
    (["--trainable", "vg*", "--energy"], "--energy: the circuit has transistors"),
])
def test_bad_trainable_or_bounds_exit_2_naming_it(files, capsys, extra, needle):
    argv = ["fit", str(files / "nmos.cir"), "--data", str(files / "train.csv"), "--inputs", "vin", "--outputs", "out",
            "--method", "exact", "--epochs", "1", "--out", str(files / "run"), "--no-progress", *extra]
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
    assert not (files / "run").exists()


def test_co_content_circuit_refuses_ep_for_a_source_and_a_diode(files, capsys):
    argv = ["fit", str(files / "diodes.cir"), "--data", str(files / "train.csv"), "--inputs", "vin", "--outputs",
            "out", "--epochs", "1", "--out", str(files / "run"), "--no-progress"]
    assert main(argv + ["--trainable", "vb"]) == 2
    assert "--method cep: source 'vb' is trainable" in capsys.readouterr().err
    assert main(argv + ["--trainable", "d*", "--method", "exact"]) == 2
    assert "'d1', a ShockleyDiode, which cannot be trained" in capsys.readouterr().err
    assert main(argv + ["--trainable", "vb,r*", "--method", "exact", "--epochs", "3", "--batch-size", "5"]) == 0
    rows = (files / "run" / "metrics.csv").read_text().splitlines()
    assert float(rows[-1].split(",")[1]) < float(rows[1].split(",")[1])


def test_default_trainable_is_unchanged(files):
    """``--trainable 'r*'`` on a resistor circuit names the default set: the same run, bit for bit."""
    kw = dict(netlist=str(files / "diodes.cir"), inputs=("vin",), outputs=("out",), epochs=2, batch_size=2)
    quiet = dict(progress=False, log=lambda *a: None)
    fit_run(_spec(files, **kw, trainable=None, method="cep"), files / "a", **quiet)
    fit_run(_spec(files, **kw, trainable=("R*",), method="cep"), files / "b", **quiet)
    a = load_checkpoint(files / "a" / "checkpoint.npz", required=("theta",))["theta"]
    b = load_checkpoint(files / "b" / "checkpoint.npz", required=("theta",))["theta"]
    np.testing.assert_array_equal(a, b)
    pb = resolve(_spec(files, **kw, trainable=None, method="cep"))
    assert not pb.adjoint and pb.resolved["trainable_sources"] == [] and pb.resolved["bounds"] == {}


@pytest.mark.ngspice
def test_trained_transistor_netlist_runs_in_ngspice(files):
    if shutil.which("ngspice") is None:
        pytest.skip("ngspice not installed")
    from physgrad.circuit.ngspice import run_ngspice

    fit_run(_spec(files, epochs=1), files / "run", progress=False, log=lambda *a: None)
    text = (files / "run" / "trained.cir").read_text()
    assert "* trained sources: vg1, vg2, vg3" in text
    ng = run_ngspice(text)
    sol = solve(read_netlist(files / "run" / "trained.cir"))
    assert ng.voltage("out") == pytest.approx(sol.voltage("out"), abs=1e-8)

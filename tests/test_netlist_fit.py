"""``physgrad fit``: CSV errors (exit 2, naming the column or line), the run folder, bit-for-bit resume,
losses, and the trained netlist (physgrad and ngspice agree on it)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from physgrad.circuit.netlist import read_netlist, write_netlist
from physgrad.circuit.solve import solve
from physgrad.cli import main
from physgrad.netlists.fit import FitSpec, fit_run
from physgrad.netlists.losses import Loss
from physgrad.types import PhysgradError
from verification.circuits import training_graph

ROOT = Path(__file__).resolve().parents[1]
IRIS_CIR = ROOT / "physgrad" / "examples" / "iris" / "iris16.cir"
IRIS_CSV = ROOT / "physgrad" / "examples" / "iris" / "iris.csv"
IRIS_ARGS = ["--inputs", "vsl,vsw,vpl,vpw", "--outputs", "o1,o2,o3", "--label-column", "species"]


def _fit(argv, capsys):
    code = main(["fit", *map(str, argv), "--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def _write(path, text):
    path.write_text(text)
    return path


@pytest.fixture()
def diode_task(tmp_path):
    """A 40-node grid graph with ideal diodes, 2 inputs, 2 outputs, regression targets in a CSV."""
    circuit, inputs, outputs = training_graph(40, 3, n_inputs=2, n_outputs=2)
    net = _write(tmp_path / "net.cir", write_netlist(circuit))
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (24, 2))
    Y = rng.uniform(-0.2, 0.2, (24, 2))
    lines = [",".join(inputs + outputs)] + [",".join(f"{v:.6f}" for v in np.concatenate([x, y])) for x, y in zip(X, Y)]
    data = _write(tmp_path / "train.csv", "\n".join(lines) + "\n")
    return net, data, inputs, outputs


# --- CSV and name errors -----------------------------------------------------------------------------
@pytest.mark.parametrize("csv_text, needle", [
    ("vsl,vsw,vpl,species\n1,2,3,setosa\n", "missing column 'vpw' (value of input source vpw)"),
    ("vsl,vsw,vpl,vpw,species\n1,2,3,nan,setosa\n", ":2: column 'vpw' is not finite"),
    ("vsl,vsw,vpl,vpw,species\n1,2,3,4,setosa\n1,2,x3,4,setosa\n", ":3: column 'vpl': 'x3' is not a number"),
    ("vsl,vsw,vpl,vpw,species\n1,2,3,4,setosa\n1,2,,4,setosa\n", ":3: column 'vpl' is empty"),
    ("vsl,vsw,vpl,vpw,species\n1,2,3,4\n", ":2: 4 fields, expected 5"),
    ("vsl,vsw,vpl,vpw,species\n", "no data rows"),
    ("", "empty file"),
    ("vsl,vsl,vpl,vpw,species\n1,2,3,4,setosa\n", "column 'vsl' appears twice"),
    ("vsl,vsw,vpl,vpw,species\n1,2,3,4,\n", ":2: label column 'species' is empty"),
])
def test_bad_csv_is_a_clear_error_exit_2(tmp_path, capsys, csv_text, needle):
    data = _write(tmp_path / "bad.csv", csv_text)
    code, _, err = _fit([IRIS_CIR, "--data", data, *IRIS_ARGS, "--out", tmp_path / "run"], capsys)
    assert code == 2
    assert needle in err
    assert str(data) in err


def test_unknown_names_and_labels_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _fit([IRIS_CIR, "--data", IRIS_CSV, "--inputs", "vsl,vxx,vpl,vpw", "--outputs", "o1,o2,o3",
                         "--label-column", "species", "--out", out], capsys)
    assert code == 2 and "unknown input source 'vxx'" in err
    code, _, err = _fit([IRIS_CIR, "--data", IRIS_CSV, "--inputs", "vsl,vsw,vpl,vpw", "--outputs", "o1,o2,nope",
                         "--label-column", "species", "--out", out], capsys)
    assert code == 2 and "unknown output node 'nope'" in err
    code, _, err = _fit([IRIS_CIR, "--data", IRIS_CSV, "--inputs", "r1,vsw,vpl,vpw", "--outputs", "o1,o2,o3",
                         "--label-column", "species", "--out", out], capsys)
    assert code == 2 and "unknown input source 'r1'" in err
    test = _write(tmp_path / "test.csv", "vsl,vsw,vpl,vpw,species\n1,2,3,4,rose\n")
    code, _, err = _fit([IRIS_CIR, "--data", IRIS_CSV, "--test", test, *IRIS_ARGS, "--out", out], capsys)
    assert code == 2 and f"{test}:2: label 'rose' is not a class" in err
    code, _, err = _fit([IRIS_CIR, "--data", IRIS_CSV, *IRIS_ARGS, "--loss", "mse", "--out", out], capsys)
    assert code == 2 and "--loss mse takes its targets" in err
    code, _, err = _fit([IRIS_CIR, "--data", IRIS_CSV, *IRIS_ARGS, "--loss", "levels", "--out", out], capsys)
    assert code == 2 and "one output node" in err


# --- run folder and resume ----------------------------------------------------------------------------
def test_run_folder_and_bit_for_bit_resume(diode_task, tmp_path, capsys):
    net, data, inputs, outputs = diode_task
    spec = FitSpec(netlist=str(net), data=str(data), inputs=inputs, outputs=outputs, method="cep", epochs=4,
                   batch_size=8, optimizer="momentum", seed=3)
    full, part = tmp_path / "full", tmp_path / "part"
    rows = fit_run(spec, full, progress=False, log=lambda s: None)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    for name in ("metrics.csv", "config.json", "checkpoint.npz", "learning_curve.png", "trained.cir"):
        assert (full / name).exists(), name
    cfg = json.loads((full / "config.json").read_text())
    assert cfg["resolved"]["loss"] == "mse" and cfg["resolved"]["beta"] > 0
    assert rows[-1]["train_cost"] < rows[0]["train_cost"]
    fit_run(spec, part, progress=False, log=lambda s: None, _stop_after_epoch=2)
    # a fresh process would rebuild everything from the folder: so does a new call
    fit_run(spec, part, resume=True, progress=False, log=lambda s: None)
    assert _rows_but_seconds(full) == _rows_but_seconds(part)  # every cost and accuracy, bit for bit
    with np.load(full / "checkpoint.npz") as a, np.load(part / "checkpoint.npz") as b:
        assert np.array_equal(a["theta"], b["theta"])
        assert np.array_equal(a["opt_v"], b["opt_v"])
    assert (full / "trained.cir").read_text() == (part / "trained.cir").read_text()


def _rows_but_seconds(folder):
    import csv

    with open(folder / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def test_resume_refuses_other_options_and_extends_epochs(diode_task, tmp_path, capsys):
    net, data, inputs, outputs = diode_task
    out = tmp_path / "run"
    base = [net, "--data", data, "--inputs", ",".join(inputs), "--outputs", ",".join(outputs), "--out", out,
            "--batch-size", "12"]
    assert _fit([*base, "--epochs", "1"], capsys)[0] == 0
    code, _, err = _fit([*base, "--epochs", "1"], capsys)
    assert code == 2 and "already holds a run" in err
    code, _, err = _fit([*base, "--epochs", "2", "--resume", "--method", "exact"], capsys)
    assert code == 2 and "options differ" in err
    assert _fit([*base, "--epochs", "2", "--resume"], capsys)[0] == 0
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 3


def test_trained_netlist_reproduces_physgrad_outputs(tmp_path, capsys):
    out = tmp_path / "iris"
    code, stdout, _ = _fit([IRIS_CIR, "--data", IRIS_CSV, *IRIS_ARGS, "--method", "ccpl", "--epochs", "2",
                            "--out", out], capsys)
    assert code == 0 and "train acc" in stdout
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == "epoch,train_cost,train_accuracy,train_cost_in_epoch,seconds" and len(rows) == 4
    trained = read_netlist(out / "trained.cir")
    with np.load(out / "checkpoint.npz") as z:
        theta = z["theta"]
    g = {r.name: r.conductance for r in trained.resistors}
    assert np.array_equal([g[f"r{k}"] for k in range(1, 17)], theta)
    sol = solve(trained)
    from physgrad.netlists.fit import resolve

    pb = resolve(FitSpec(netlist=str(IRIS_CIR), data=str(IRIS_CSV), inputs=("vsl", "vsw", "vpl", "vpw"),
                         outputs=("o1", "o2", "o3"), label_column="species"))
    from physgrad.minimizers.co_content import CoContentMinimizer

    eq = CoContentMinimizer().minimize(pb.energy, theta, pb.X[:1])
    np.testing.assert_allclose([sol.voltage(f"o{k}") for k in (1, 2, 3)], pb.energy.outputs(eq.state)[0],
                               rtol=0, atol=1e-12)


@pytest.mark.ngspice
def test_trained_netlist_runs_in_ngspice(tmp_path, capsys):
    if shutil.which("ngspice") is None:
        pytest.skip("ngspice not installed")
    from physgrad.circuit.ngspice import run_ngspice

    out = tmp_path / "iris"
    assert _fit([IRIS_CIR, "--data", IRIS_CSV, *IRIS_ARGS, "--epochs", "1", "--out", out], capsys)[0] == 0
    text = (out / "trained.cir").read_text()
    trained = read_netlist(out / "trained.cir")
    ng = run_ngspice(text)
    sol = solve(trained)
    for k in (1, 2, 3):
        assert ng.voltage(f"o{k}") == pytest.approx(sol.voltage(f"o{k}"), abs=1e-8)


@pytest.mark.parametrize("loss", ["levels", "xent", "argmax"])
def test_classification_losses_run(tmp_path, capsys, loss):
    net = IRIS_CIR
    outputs = "o1" if loss == "levels" else "o1,o2,o3"
    code, stdout, err = _fit([net, "--data", IRIS_CSV, "--test", IRIS_CSV, "--inputs", "vsl,vsw,vpl,vpw",
                              "--outputs", outputs, "--label-column", "species", "--loss", loss, "--epochs", "1",
                              "--method", "exact", "--out", tmp_path / loss], capsys)
    assert code == 0, err
    header = (tmp_path / loss / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,train_cost,test_cost,train_accuracy,test_accuracy,train_cost_in_epoch,seconds"


@pytest.mark.parametrize("kind", ["mse", "levels", "argmax", "xent"])
def test_loss_gradients_and_effective_targets(kind):
    rng = np.random.default_rng(1)
    n_out = 1 if kind == "levels" else 3
    loss = Loss(kind, 0 if kind == "mse" else 3, levels=(0.2, 0.5, 0.8) if kind == "levels" else None,
                margin=0.1, temperature=0.2)
    o = rng.uniform(0, 1, (5, n_out))
    y = rng.uniform(0, 1, (5, n_out)) if kind == "mse" else rng.integers(0, 3, 5)
    g = loss.gradient(o, y)
    h = 1e-6
    for j in range(n_out):
        e = np.zeros_like(o)
        e[:, j] = h
        fd = (loss.per_sample(o + e, y) - loss.per_sample(o - e, y)) / (2 * h)
        np.testing.assert_allclose(g[:, j], fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(o - loss.effective_targets(o, y), g, atol=1e-15)


def test_eval_every_skips_full_evaluations_and_records_the_in_epoch_cost(diode_task, tmp_path):
    """``--eval-every K``: the whole-set evaluation runs every K epochs and after the last; every epoch
    records the mean loss of its own free phases. Training is unchanged (evaluation only warms starts)."""
    net, data, inputs, outputs = diode_task
    kw = dict(netlist=str(net), data=str(data), inputs=inputs, outputs=outputs, method="cep", epochs=3,
              batch_size=8, optimizer="momentum", seed=1)
    every = fit_run(FitSpec(**kw), tmp_path / "every", progress=False, log=lambda s: None)
    sparse = fit_run(FitSpec(**kw, eval_every=2), tmp_path / "sparse", progress=False, log=lambda s: None)
    assert [("train_cost" in r) for r in sparse] == [True, False, True, True]
    assert all("train_cost_in_epoch" in r for r in sparse[1:]) and "train_cost_in_epoch" not in sparse[0]
    rows = _rows_but_seconds(tmp_path / "sparse")
    assert rows[1]["train_cost"] == "" and float(rows[1]["train_cost_in_epoch"]) > 0
    for a, b in zip(every, sparse):
        np.testing.assert_allclose(a["train_cost_in_epoch"] if "train_cost_in_epoch" in a else 0.0,
                                   b.get("train_cost_in_epoch", 0.0), rtol=1e-9)
    np.testing.assert_allclose(every[-1]["train_cost"], sparse[-1]["train_cost"], rtol=1e-9)
    with np.load(tmp_path / "every" / "checkpoint.npz") as a, np.load(tmp_path / "sparse" / "checkpoint.npz") as b:
        np.testing.assert_allclose(a["theta"], b["theta"], rtol=1e-10)
    with pytest.raises(PhysgradError, match="eval_every must be >= 1"):
        FitSpec(**kw, eval_every=0)

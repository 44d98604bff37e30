"""``physgrad predict`` and ``physgrad netlist``: predictions against independent solves of trained.cir
(the circuit core's one-sample solve and ngspice), metrics, files never overwritten, exit codes."""
import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from physgrad.circuit.netlist import parse_netlist, read_netlist
from physgrad.circuit.solve import solve
from physgrad.cli import main
from physgrad.types import PhysgradError

ROOT = Path(__file__).resolve().parents[1]
IRIS_CIR = ROOT / "physgrad" / "examples" / "iris" / "iris16.cir"
IRIS_CSV = ROOT / "physgrad" / "examples" / "iris" / "iris.csv"
INPUTS = ("vsl", "vsw", "vpl", "vpw")


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    """A one-epoch fit run of the Iris netlist on 30 rows (10 per class), and its CSV."""
    tmp = tmp_path_factory.mktemp("iris")
    lines = IRIS_CSV.read_text().splitlines()
    rows = [lines[0]] + lines[1:11] + lines[51:61] + lines[101:111]
    data = tmp / "iris30.csv"
    data.write_text("\n".join(rows) + "\n")
    assert main(["fit", str(IRIS_CIR), "--data", str(data), "--inputs", ",".join(INPUTS), "--outputs", "o1,o2,o3",
                 "--label-column", "species", "--epochs", "1", "--out", str(tmp / "run"), "--no-progress"]) == 0
    return tmp / "run", data


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _independent(trained, data):
    """Output voltages of trained.cir for each CSV row: one circuit-core solve per row (not batched)."""
    c = read_netlist(trained)
    out = []
    for row in _rows(data):
        sol = solve(c.with_sources({s: float(row[s]) for s in INPUTS}))
        out.append([sol.voltage(f"o{k}") for k in (1, 2, 3)])
    return np.array(out)


def test_predict_from_run_folder_matches_independent_solves(iris_run, tmp_path, capsys):
    run, data = iris_run
    out = tmp_path / "pred.csv"
    capsys.readouterr()
    assert main(["predict", str(run), "--data", str(data), "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    pred = _rows(out)
    v = np.array([[float(r[f"o{k}"]) for k in (1, 2, 3)] for r in pred])
    np.testing.assert_allclose(v, _independent(run / "trained.cir", data), rtol=0, atol=1e-9)
    # accuracy: the predicted class is the highest output; labels from the CSV
    names = ["setosa", "versicolor", "virginica"]
    truth = [r["species"] for r in _rows(data)]
    assert [r["label"] for r in pred] == truth
    assert [r["predicted"] for r in pred] == [names[i] for i in np.argmax(v, axis=1)]
    assert res["accuracy"] == pytest.approx(np.mean([p["predicted"] == t for p, t in zip(pred, truth)]))
    assert [int(r["line"]) for r in pred] == list(range(2, 32))


def test_predict_rmse_with_target_columns_and_a_bare_netlist(iris_run, tmp_path, capsys):
    run, data = iris_run
    v = _independent(run / "trained.cir", data)
    rng = np.random.default_rng(1)
    y = v + rng.normal(0, 0.1, v.shape)
    rows = _rows(data)
    with open(tmp_path / "targets.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*INPUTS, "o1", "o2", "o3"])
        for r, t in zip(rows, y):
            w.writerow([r[s] for s in INPUTS] + [repr(float(a)) for a in t])
    # a bare netlist: inputs = the columns named like its sources, outputs given
    capsys.readouterr()
    assert main(["predict", str(run / "trained.cir"), "--data", str(tmp_path / "targets.csv"), "--outputs",
                 "o1,o2,o3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["inputs"] == list(INPUTS)
    assert res["rmse_V"] == pytest.approx(np.sqrt(np.mean((v - y) ** 2)), rel=1e-9)
    for k in (1, 2, 3):
        assert res["rmse_V_per_output"][f"o{k}"] == pytest.approx(np.sqrt(np.mean((v[:, k - 1] - y[:, k - 1]) ** 2)),
                                                                  rel=1e-9)
    assert "accuracy" not in res


@pytest.mark.ngspice
def test_predict_agrees_with_ngspice(iris_run, tmp_path, capsys):
    if shutil.which("ngspice") is None:
        if os.environ.get("CI"):
            pytest.fail("ngspice missing under CI")
        pytest.skip("ngspice not installed")
    from physgrad.circuit.ngspice import run_ngspice

    run, data = iris_run
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run), "--data", str(data), "--out", str(out)]) == 0
    trained = read_netlist(run / "trained.cir")
    for row, pred in list(zip(_rows(data), _rows(out)))[::12]:
        ng = run_ngspice(trained.with_sources({s: float(row[s]) for s in INPUTS}))
        for k in (1, 2, 3):
            assert float(pred[f"o{k}"]) == pytest.approx(ng.voltage(f"o{k}"), abs=1e-8)


def test_predict_never_overwrites_and_exit_codes(iris_run, tmp_path, capsys):
    run, data = iris_run
    out = tmp_path / "pred.csv"
    out.write_text("mine\n")
    assert main(["predict", str(run), "--data", str(data), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "mine\n"
    assert main(["predict", str(run), "--data", str(data), "--out", str(out), "--overwrite"]) == 0
    assert out.read_text().startswith("line,o1,o2,o3,predicted,label")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pred.csv")]  # no temporary left
    bad = tmp_path / "bad.csv"
    bad.write_text("vsl,vsw,vpl,vpw,species\n1,2,x,4,setosa\n")
    capsys.readouterr()
    assert main(["predict", str(run), "--data", str(bad)]) == 2
    assert "bad.csv:2" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "--data", str(data)]) == 2  # a folder without trained.cir
    assert "trained.cir" in capsys.readouterr().err
    assert main(["predict", str(run), "--data", str(tmp_path / "missing.csv")]) == 2


def test_netlist_layered_builds_a_trainable_circuit(tmp_path, capsys):
    path = tmp_path / "net.cir"
    assert main(["netlist", "layered", "--inputs", "3", "--hidden", "4", "--outputs", "2", "--out", str(path)]) == 0
    c = read_netlist(path)
    names = {el.name for el in c.elements}
    assert {f"vx{i}" for i in (1, 2, 3)} | {f"vx{i}n" for i in (1, 2, 3)} | {"vbp", "vbn"} <= names
    assert sum(1 for n in names if n.startswith("dh")) == 4
    # (3 x 2 inputs + 2 biases) x (4 hidden + 2 outputs) + 4 x 2 hidden -> output = 56 resistors
    assert len(c.resistors) == 8 * 6 + 4 * 2 and len(c.trainable_names) == len(c.resistors)
    assert [t[0] for t in c.targets] == ["o1", "o2"]
    x = np.array([0.3, -1.2, 2.0])
    sol = solve(c.with_sources({**{f"vx{i + 1}": x[i] for i in range(3)}, **{f"vx{i + 1}n": -x[i] for i in range(3)}}))
    assert all(sol.voltage(f"h{j}") <= 1e-12 for j in range(1, 5))  # the diodes clip the hidden units at 0 V
    assert main(["netlist", "layered", "--inputs", "3", "--outputs", "2", "--out", str(path)]) == 2  # exists
    capsys.readouterr()
    assert main(["netlist", "layered", "--inputs", "2", "--hidden", "1", "--outputs", "2", "--both-diodes"]) == 2
    assert "vth" in capsys.readouterr().err
    assert main(["netlist", "layered", "--inputs", "2", "--outputs", "1", "--no-skip", "--hidden", "0"]) == 0
    text = capsys.readouterr().out
    assert parse_netlist(text).resistors and "x1 o1" not in text


def test_predict_with_a_train_run_on_idx_npy_and_png(data_dir, tmp_path, capsys, monkeypatch):
    """A one-epoch DRN-XS run; predictions on IDX, NPY and PNG inputs agree with an independent
    relaxation (the block-coordinate minimizer on the preset's energy, float64) and with each other."""
    from physgrad.layered.data import FILES, read_idx
    from physgrad.layered.predict import predict_run
    from physgrad.layered.presets import PRESETS
    from physgrad.layered.train import load_checkpoint
    from physgrad.minimizers.block import BlockCoordinateDescent

    run = tmp_path / "run"
    assert main(["train", "--preset", "drn-xs", "--data-dir", data_dir, "--epochs", "1", "--train-size", "16",
                 "--test-size", "8", "--out", str(run), "--no-progress"]) == 0
    idx_images = next(Path(data_dir).glob(FILES["test_images"] + "*"))
    idx_labels = next(Path(data_dir).glob(FILES["test_labels"] + "*"))
    images, labels = read_idx(idx_images), read_idx(idx_labels)
    out, plot = tmp_path / "pred.csv", tmp_path / "confusion.png"
    capsys.readouterr()
    assert main(["predict", str(run), "--images", str(idx_images), "--labels", str(idx_labels), "--out", str(out),
                 "--plot", str(plot), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    rows = _rows(out)
    pred = np.array([int(r["predicted"]) for r in rows])
    assert len(rows) == len(images) and res["accuracy"] == pytest.approx(np.mean(pred == labels))
    assert np.array(res["confusion"]).sum() == len(images) and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # independent route: the generic minimizer, float64, on the stored parameters
    preset = PRESETS["drn-xs"]
    params = load_checkpoint(run / "checkpoint.npz")["params"]
    energy = preset.energy()
    x = images.reshape(len(images), -1) / 255.0
    eq = BlockCoordinateDescent(schedule=preset.schedule, sweeps=preset.sweeps_eval, tol=None).minimize(
        energy, tuple(np.asarray(p, np.float64) for p in params), x)
    ref = np.asarray(energy.outputs(eq.state))
    v = np.array([[float(r[f"out_{j}"]) for j in range(10)] for r in rows])
    np.testing.assert_allclose(v, ref, atol=1e-4)  # float32 fused kernels vs float64 reference
    assert np.mean(np.argmax(ref, axis=1) == pred) >= 0.85  # near-ties may flip between float32 and float64
    # the same images as .npy and as PNG files give the same predictions
    np.save(tmp_path / "x.npy", images)
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    import matplotlib.image as mpimg

    for i in range(4):
        mpimg.imsave(pngs / f"img{i}.png", images[i], cmap="gray", vmin=0, vmax=255)
    assert predict_run(run, np.load(tmp_path / "x.npy").reshape(len(images), -1) / 255.0).predicted.tolist() == \
        pred.tolist()
    # the run's config.json is read once per prediction (one record feeds the pixel scale and the network)
    from physgrad.layered import predict as layered_predict

    reads = []
    real = layered_predict.load_json
    monkeypatch.setattr(layered_predict, "load_json", lambda path: reads.append(path) or real(path))
    assert main(["predict", str(run), "--images", str(pngs), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 4
    assert [Path(p).name for p in reads] == ["config.json"]
    monkeypatch.undo()
    assert main(["predict", str(run), "--images", str(tmp_path / "x.npy"), "--out", str(out)]) == 2  # exists
    assert main(["predict", str(run), "--images", str(tmp_path / "x.npy"), "--plot", str(plot)]) == 2  # no labels
    assert main(["predict", str(run), "--data", str(out)]) == 2
    capsys.readouterr()


def test_predict_refuses_special_and_oversized_data_files(tmp_path, capsys):
    """The data CSV is read like every input: a device, a folder or a header line past the CSV field
    limit is bad input (exit 2 naming the file), never a traceback or a hang."""
    net = tmp_path / "n.cir"
    net.write_text("t\nvin a 0 1\nr1 a out 1k\nr2 out 0 1k\n")
    big = tmp_path / "big.csv"
    big.write_text("a" * 300_000 + "\n1\n")
    for data, reason in (("/dev/zero", "not a regular file"), (str(tmp_path), "directory"),
                         (str(big), "header line is not CSV")):
        assert main(["predict", str(net), "--data", data]) == 2
        err = capsys.readouterr().err
        assert reason in err and "Traceback" not in err, err


def test_netlist_layered_refuses_what_the_reader_could_not_read(tmp_path, capsys):
    """Sizes and values are checked before anything is built: a product of sizes past the reader's element
    limit is refused at once (it used to run until memory ran out), and so are conductances outside the
    normal doubles (a subnormal conductance's resistance overflows); no file is written."""
    from physgrad.netlists.builder import MAX_RESISTORS, resistor_count
    path = tmp_path / "net.cir"
    assert main(["netlist", "layered", "--inputs", "100000", "--hidden", "100000", "--outputs", "100000",
                 "--out", str(path)]) == 2
    assert f"at most {MAX_RESISTORS:,}" in capsys.readouterr().err and not path.exists()
    assert main(["netlist", "layered", "--inputs", "2", "--hidden", "2", "--outputs", "2", "--hidden-scale", "1e-320",
                 "--out", str(path)]) == 2
    assert "normal doubles" in capsys.readouterr().err and not path.exists()
    for skip in (True, False):  # the count the limit uses is the count written
        assert main(["netlist", "layered", "--inputs", "3", "--hidden", "2", "--outputs", "2", "--out", str(path),
                     "--overwrite"] + ([] if skip else ["--no-skip"])) == 0
        assert len(read_netlist(path).resistors) == resistor_count(3, 2, 2, skip=skip)


def test_subnormal_conductance_is_bad_input(tmp_path, capsys):
    """{1/G} with a subnormal G (its resistance is not a finite double) is refused at its line, not solved into
    NaN."""
    path = tmp_path / "sub.cir"
    path.write_text("title\nv1 a 0 1\nr1 a b {1/1e-323}\nr2 b 0 1k\n")
    assert main(["solve", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path.name}:3" in err and "r1" in err


def test_predict_refuses_what_the_fuzz_found(tmp_path, capsys):
    """Three inputs that escaped as tracebacks or exhausted memory (benchmarks/fuzz_predict.py): a fit run
    whose config.json is a link to /dev/zero (read without a bound), a CSV target of 1e308 V (the RMSE's
    square overflowed) and an empty .npy of images (reshape of 0 images)."""
    from physgrad.netlists.predict import MAX_INPUT
    net = tmp_path / "net.cir"
    net.write_text("divider\nvin in 0 1\nr1 in out 1k\nr2 out 0 1k\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "trained.cir").write_text(net.read_text())
    (run / "config.json").symlink_to("/dev/zero")
    data = tmp_path / "d.csv"
    data.write_text("vin,out\n1,0.5\n2,1e308\n")
    assert main(["predict", str(run), "--data", str(data)]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["predict", str(net), "--data", str(data), "--inputs", "vin", "--outputs", "out"]) == 2
    err = capsys.readouterr().err
    assert "d.csv:3" in err and "column out" in err and f"{MAX_INPUT:.0e}" in err
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 28, 28), np.uint8))
    from physgrad.layered.predict import read_images
    with pytest.raises(PhysgradError, match="holds no images"):
        read_images([empty])


def test_predict_on_a_digits_run_scales_pixels_by_the_runs_dataset(tmp_path, capsys):
    """A crossbar-digits run trains on pixel counts 0..16 (x / 16); predict read integer images as 0..255
    (x / 255), so its accuracy was not the run's. Now the run's dataset sets the scale: predict on the
    digits' test split equals the run's own last test error."""
    from physgrad.layered.data import load_dataset
    run = tmp_path / "run"
    assert main(["train", "--preset", "crossbar-digits", "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    with open(run / "metrics.csv", newline="") as fh:
        test_error = float(list(csv.DictReader(fh))[-1]["test_error"])
    d = load_dataset("digits")
    np.save(tmp_path / "x.npy", d.x_test.reshape(-1, 8, 8))
    np.save(tmp_path / "y.npy", d.y_test.astype(np.int64))
    capsys.readouterr()
    assert main(["predict", str(run), "--images", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                 "--json"]) == 0
    acc = json.loads(capsys.readouterr().out)["accuracy"]
    assert acc == pytest.approx(1 - test_error / 100, abs=1e-12)
    np.save(tmp_path / "big.npy", (d.x_test.reshape(-1, 8, 8) * 2).astype(np.uint8))  # 0..32: beyond 16
    assert main(["predict", str(run), "--images", str(tmp_path / "big.npy")]) == 2
    assert "0..16" in capsys.readouterr().err

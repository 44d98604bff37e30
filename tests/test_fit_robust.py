"""``physgrad fit`` robustness (issue 18): a damaged run folder on ``--resume`` is refused with exit 2
and left byte for byte as it was; a foreign ``--out`` is refused; a second writer is refused; SIGINT /
SIGTERM save and exit 130 / 143; an interrupted epoch resumes at its batch."""
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from physgrad.circuit.netlist import write_netlist
from physgrad.cli import main
from physgrad.netlists.fit import FitSpec, fit_run
from physgrad.runs import arrays_sha256, load_checkpoint
from tests.test_runs import hold_lock, snapshot, stop
from verification.circuits import training_graph

ROOT = Path(__file__).resolve().parents[1]
CK, CFG, MET = "checkpoint.npz", "config.json", "metrics.csv"


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """A 30-node grid graph with ideal diodes, 2 inputs, 2 outputs, 16 regression samples."""
    d = tmp_path_factory.mktemp("task")
    circuit, inputs, outputs = training_graph(30, 3, n_inputs=2, n_outputs=2)
    (d / "net.cir").write_text(write_netlist(circuit))
    rng = np.random.default_rng(0)
    X, Y = rng.uniform(-1, 1, (16, 2)), rng.uniform(-0.2, 0.2, (16, 2))
    rows = [",".join(inputs + outputs)] + [",".join(f"{v:.6f}" for v in np.r_[x, y]) for x, y in zip(X, Y)]
    (d / "train.csv").write_text("\n".join(rows) + "\n")
    return {"netlist": str(d / "net.cir"), "data": str(d / "train.csv"), "inputs": tuple(inputs),
            "outputs": tuple(outputs), "batch_size": 4}


def argv(task, out, *extra, epochs=3):
    return ["fit", task["netlist"], "--data", task["data"], "--inputs", ",".join(task["inputs"]), "--outputs",
            ",".join(task["outputs"]), "--batch-size", str(task["batch_size"]), "--epochs", str(epochs),
            "--out", str(out), "--no-progress", *extra]


@pytest.fixture(scope="module")
def run_folder(task, tmp_path_factory):
    """A 3-epoch run stopped after epoch 1 (rows 0 and 1, a checkpoint at epoch 1)."""
    out = tmp_path_factory.mktemp("run") / "r"
    fit_run(FitSpec(**task, epochs=3), out, progress=False, log=lambda s: None, _stop_after_epoch=1)
    return out


def rewrite(path, change, keep_checksum=False):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    old = arrays.pop("sha256")
    change(arrays)
    np.savez(path, sha256=old if keep_checksum else np.array(arrays_sha256(arrays)), **arrays)


def _set(key, value):
    return lambda a: a.__setitem__(key, np.asarray(value))


def _del(key):
    return lambda a: a.pop(key)


def _flip(p):
    """One bit flipped inside the stored conductances (a flip in the zip's timestamps is harmless)."""
    raw = bytearray(p.read_bytes())
    with np.load(p) as z:
        at = bytes(raw).index(z["theta"].tobytes())
    raw[at + 5] ^= 0x10
    p.write_bytes(bytes(raw))


def _one_row(header: str) -> str:
    """The header and a well-formed row of epoch 0 only (the checkpoint needs later rows)."""
    return header + "\n" + ",".join(["0"] + ["1"] * header.count(",")) + "\n"


def _as_dir(p):
    p.unlink()
    p.mkdir()
    (p / "x").write_text("x")


def _json(change):
    def f(p):
        d = json.loads(p.read_text())
        change(d)
        p.write_text(json.dumps(d))
    return f


CORRUPTIONS = {
    "ckpt-random-bytes": (CK, lambda p: p.write_bytes(np.random.default_rng(1).bytes(3000)), "corrupted checkpoint"),
    "ckpt-empty": (CK, lambda p: p.write_bytes(b""), "corrupted checkpoint"),
    "ckpt-truncated": (CK, lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]), "corrupted checkpoint"),
    "ckpt-bit-flipped": (CK, _flip, "corrupted checkpoint"),
    "ckpt-directory": (CK, _as_dir, "corrupted checkpoint"),
    "ckpt-missing": (CK, lambda p: p.unlink(), "no checkpoint"),
    "ckpt-checksum-mismatch": (CK, lambda p: rewrite(p, lambda a: a.__setitem__("theta", a["theta"] * 2),
                                                     keep_checksum=True), "SHA-256"),
    "ckpt-missing-theta": (CK, lambda p: rewrite(p, _del("theta")), "missing key"),
    "ckpt-missing-opt": (CK, lambda p: rewrite(p, _del("opt_m")), "optimizer state"),
    "ckpt-theta-shape": (CK, lambda p: rewrite(p, lambda a: a.__setitem__("theta", a["theta"][:-1])), "theta"),
    "ckpt-theta-nan": (CK, lambda p: rewrite(p, lambda a: a["theta"].__setitem__(0, np.nan)), "not finite"),
    "ckpt-theta-negative": (CK, lambda p: rewrite(p, lambda a: a["theta"].__setitem__(0, -1.0)), "negative"),
    "ckpt-from-the-future": (CK, lambda p: rewrite(p, _set("epoch", 99)), "epoch = 99 is outside 0..3"),
    "ckpt-epoch-not-integer": (CK, lambda p: rewrite(p, _set("epoch", "one")), "scalar integer"),
    "ckpt-batch-past-epoch": (CK, lambda p: rewrite(p, _set("batch", 999)), "batch = 999"),
    "ckpt-seconds-nan": (CK, lambda p: rewrite(p, _set("seconds", np.nan)), "seconds"),
    "ckpt-warm-layout": (CK, lambda p: rewrite(p, lambda a: a.__setitem__("warm_sets", a["warm_sets"].astype(float))),
                         "warm-start"),
    "ckpt-device-junk": (CK, lambda p: rewrite(p, _set("device_meta", "{not json")), "device state"),
    "ckpt-extra-key": (CK, lambda p: rewrite(p, _set("surprise", 1)), "unexpected key"),
    "ckpt-object-array": (CK, lambda p: np.savez(p, epoch=np.array([object()], dtype=object)), "corrupted checkpoint"),
    "config-missing": (CFG, lambda p: p.unlink(), "is missing"),
    "config-empty": (CFG, lambda p: p.write_text(""), "cannot read"),
    "config-truncated": (CFG, lambda p: p.write_text(p.read_text()[:50]), "cannot read"),
    "config-garbled": (CFG, lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "cannot read"),
    "config-directory": (CFG, _as_dir, "cannot read"),
    "config-not-an-object": (CFG, lambda p: p.write_text("[1, 2]"), "not a JSON object"),
    "config-no-spec": (CFG, _json(lambda d: d.pop("spec")), "not a valid fit configuration"),
    "config-bad-epochs": (CFG, _json(lambda d: d["resolved"].__setitem__("epochs", "three")),
                          "not a valid fit configuration"),
    "config-bad-spec-value": (CFG, _json(lambda d: d["spec"].__setitem__("batch_size", [1])),
                              "not a valid fit configuration"),
    "config-unknown-option": (CFG, _json(lambda d: d["spec"].__setitem__("colour", 1)), "unknown fit option"),
    "metrics-missing": (MET, lambda p: p.unlink(), "is missing"),
    "metrics-garbled": (MET, lambda p: p.write_bytes(b"\x00\xff garbage\n\x01,\x02\n"), MET),
    "metrics-bad-number": (MET, lambda p: p.write_text(p.read_text().replace("\n1,", "\nx,", 1)), "line 3"),
    "metrics-wrong-header": (MET, lambda p: p.write_text("a,b\n1,2\n"), "header"),
    "metrics-row-missing": (MET, lambda p: p.write_text(_one_row(p.read_text().splitlines()[0])), "epoch rows"),
    "metrics-short-row": (MET, lambda p: p.write_text(p.read_text().splitlines()[0] + "\n0,1\n"), "line 2"),
    "metrics-directory": (MET, _as_dir, MET),
    "marker-garbled": (".physgrad-run.json", lambda p: p.write_text("{"), "unreadable"),
    "plot-directory": ("learning_curve.png", _as_dir, "learning_curve.png is a folder"),  # found by the fuzz
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupted_fit_folder_is_refused_and_left_unchanged(run_folder, task, tmp_path, capsys, kind):
    name, corrupt, message = CORRUPTIONS[kind]
    folder = tmp_path / "r"
    shutil.copytree(run_folder, folder, symlinks=True)
    corrupt(folder / name)
    before = snapshot(folder)
    rc = main(argv(task, folder, "--resume"))  # any other exception fails the test (a traceback)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err and "Traceback" not in err, err
    assert snapshot(folder) == before  # refused before changing anything


def test_intact_copy_resumes_bit_for_bit(run_folder, task, tmp_path):
    folder = tmp_path / "r"
    shutil.copytree(run_folder, folder)
    full = tmp_path / "full"
    assert main(argv(task, full)) == 0
    assert main(argv(task, folder, "--resume")) == 0
    a, b = load_checkpoint(full / CK), load_checkpoint(folder / CK)
    assert int(b["epoch"]) == 3
    np.testing.assert_array_equal(a["theta"], b["theta"])


def test_foreign_out_refused_and_overwrite_keeps_user_files(task, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "data.csv").write_text("my data")
    assert main(argv(task, out, epochs=1)) == 2
    assert "not empty" in capsys.readouterr().err and sorted(p.name for p in out.iterdir()) == ["data.csv"]
    (out / "trained.cir").write_text("my own netlist")
    assert main(argv(task, out, "--overwrite", epochs=1)) == 2
    assert "trained.cir was not written by physgrad" in capsys.readouterr().err
    (out / "trained.cir").unlink()
    assert main(argv(task, out, "--overwrite", epochs=1)) == 0
    assert (out / "data.csv").read_text() == "my data"
    # the same kind: refused without --resume/--overwrite; --overwrite starts again, the user's file stays
    assert main(argv(task, out, epochs=1)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(argv(task, out, "--overwrite", epochs=1)) == 0
    assert (out / "data.csv").read_text() == "my data"
    # a train run folder is never taken by fit
    train_dir = tmp_path / "t"
    train_dir.mkdir()
    (train_dir / "config.json").write_text(json.dumps({"config": {}, "preset": {}}))
    before = snapshot(train_dir)
    assert main(argv(task, train_dir, "--overwrite", epochs=1)) == 2
    assert "holds a train run" in capsys.readouterr().err and snapshot(train_dir) == before


def test_second_writer_exits_2_naming_the_owner(run_folder, task, tmp_path, capsys):
    folder = tmp_path / "r"
    shutil.copytree(run_folder, folder)
    proc = hold_lock(folder)
    try:
        before = {k: v for k, v in snapshot(folder).items() if k != ".physgrad-lock"}
        assert main(argv(task, folder, "--resume")) == 2
        err = capsys.readouterr().err
        assert f"pid {proc.pid}" in err and "in use" in err
        assert {k: v for k, v in snapshot(folder).items() if k != ".physgrad-lock"} == before
    finally:
        stop(proc)
    assert main(argv(task, folder, "--resume")) == 0  # the stale lock of the killed holder is taken over
    assert "stale lock" in capsys.readouterr().err


@pytest.mark.parametrize("eval_every", [1, 2])
def test_interrupted_epoch_resumes_at_its_batch(task, tmp_path, eval_every):
    spec = FitSpec(**task, epochs=2, eval_every=eval_every)
    rows = fit_run(spec, tmp_path / "i", progress=False, log=lambda s: None, _interrupt_after=6)
    assert rows.interrupted == signal.SIGINT and len(rows) == 2  # rows 0, 1; stopped in epoch 2
    ck = load_checkpoint(tmp_path / "i" / CK)
    assert int(ck["epoch"]) == 1 and int(ck["batch"]) == 2
    rows = fit_run(spec, tmp_path / "i", resume=True, progress=False, log=lambda s: None)
    assert rows.interrupted is None and [int(r["epoch"]) for r in rows] == [0, 1, 2]
    full = fit_run(spec, tmp_path / "f", progress=False, log=lambda s: None)
    # the warm-start sets ride in the checkpoint: the same conductances, bit for bit
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "i" / CK)["theta"],
                                  load_checkpoint(tmp_path / "f" / CK)["theta"])
    assert len(full) == 3
    # the metrics too: the in-epoch cost of the interrupted epoch covers its batches before and after the
    # interruption (the checkpoint carries the losses so far), and --eval-every leaves the same gaps
    def measured(folder):  # every column but the wall-clock seconds
        return [line.rsplit(",", 1)[0] for line in (folder / "metrics.csv").read_text().splitlines()]

    assert measured(tmp_path / "i") == measured(tmp_path / "f")
    assert ("train_cost" in full[1]) == (eval_every == 1) and "train_cost_in_epoch" in full[1]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_real_signal_during_fit_saves_and_exits(task, tmp_path, sig, code):
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "physgrad", *argv(task, out, epochs=100000)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()  # "epoch   0 ...": training is under way
        assert line.startswith("epoch"), (line, proc.stderr.read() if proc.poll() is not None else "")
        proc.send_signal(sig)
        out_text, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert "saved" in out_text + err and "Traceback" not in err
    ck = load_checkpoint(out / CK)
    assert not (out / ".physgrad-lock").exists()
    assert main(argv(task, out, "--resume", epochs=int(ck["epoch"]) + 1)) == 0


def test_options_that_would_be_ignored_or_crash_are_refused(tmp_path, capsys):
    """A negative --seed raised ValueError from numpy (a traceback); --levels/--margin/--temperature with a
    loss that has no such parameter were silently ignored. Each is exit 2 naming the option; nothing is
    written."""
    from physgrad.cli import main
    net = tmp_path / "n.cir"
    net.write_text("div\nvin in 0 1\nr1 in out 1k\nr2 out 0 1k\n.target out 0.5\n")
    data = tmp_path / "d.csv"
    data.write_text("vin,out\n1,0.3\n2,0.7\n")
    base = ["fit", str(net), "--data", str(data), "--inputs", "vin", "--outputs", "out", "--epochs", "1",
            "--no-progress"]
    with pytest.raises(SystemExit) as exc:
        main(base + ["--out", str(tmp_path / "a"), "--seed", "-1"])
    assert exc.value.code == 2
    for k, (opt, val) in enumerate((("--levels", "1,2"), ("--margin", "0.1"), ("--temperature", "0.1"))):
        out = tmp_path / f"run{k}"
        assert main(base + ["--out", str(out), opt, val]) == 2
        assert f"{opt} is a parameter of --loss" in capsys.readouterr().err and not out.exists()


def test_energy_settings_without_energy_are_refused(tmp_path, capsys):
    """--node-capacitance / --settling-multiple only shape the --energy columns: alone they would be ignored."""
    from physgrad.cli import main
    net = tmp_path / "n.cir"
    net.write_text("div\nvin in 0 1\nr1 in out 1k\nr2 out 0 1k\n.target out 0.5\n")
    data = tmp_path / "d.csv"
    data.write_text("vin,out\n1,0.3\n2,0.7\n")
    for opt, val in (("--node-capacitance", "1e-12"), ("--settling-multiple", "3")):
        out = tmp_path / opt.strip("-")
        assert main(["fit", str(net), "--data", str(data), "--inputs", "vin", "--outputs", "out", "--epochs", "1",
                     "--no-progress", "--out", str(out), opt, val]) == 2
        assert "give --energy too" in capsys.readouterr().err and not out.exists()

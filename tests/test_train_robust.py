"""``physgrad train`` robustness (issue 8, items 4-6): the data folder rule, corrupted run folders on
``--resume`` (exit 2, nothing changed), bad inputs (exit 2) and interrupted runs (exit 130/143)."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from physgrad.cli import main
from physgrad.layered import data
from physgrad.layered.data import FILES, WrongDatasetError, find_data_dir, write_idx
from physgrad.layered.train import CorruptRunError, TrainConfig, _arrays_sha256, load_checkpoint, train

ARGS = ["train", "--preset", "drn-xs", "--epochs", "2", "--train-size", "40", "--threads", "1", "--no-progress"]


def cli(data_dir, out, *extra):
    return main(ARGS + ["--data-dir", str(data_dir), "--out", str(out), *extra])


def snapshot(folder):
    """sha256 of every regular file under ``folder`` (to check that a refused resume changed nothing)."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def run_folder(data_dir, tmp_path_factory):
    """A run interrupted in epoch 2 (batch 4 of 10): a metrics row, a mid-epoch checkpoint with warm state."""
    out = tmp_path_factory.mktemp("run") / "r"
    m = train(TrainConfig(preset="drn-xs", data_dir=data_dir, epochs=2, train_size=40, threads=1), out,
              progress=False, _interrupt_after=14)
    assert m.interrupted == signal.SIGINT and len(m) == 1
    return out


def rewrite_checkpoint(path, change, keep_checksum=False):
    """Rewrite ``path`` with ``change(arrays)`` applied and a valid checksum (unless ``keep_checksum``)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    old = arrays.pop("sha256")
    change(arrays)
    np.savez(path, sha256=old if keep_checksum else np.array(_arrays_sha256(arrays)), **arrays)


def _set(key, value):
    def f(a):
        a[key] = np.asarray(value)
    return f


def _del(key):
    def f(a):
        del a[key]
    return f


def _flip(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def _as_dir(path):
    path.unlink()
    path.mkdir()
    (path / "x").write_text("x")


CK, CFG, MET = "checkpoint.npz", "config.json", "metrics.csv"
CORRUPTIONS = {
    # the checkpoint
    "ckpt-random-bytes": (CK, lambda p: p.write_bytes(np.random.default_rng(1).bytes(5000)), "corrupted checkpoint"),
    "ckpt-empty": (CK, lambda p: p.write_bytes(b""), "corrupted checkpoint"),
    "ckpt-truncated": (CK, lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]), "corrupted checkpoint"),
    "ckpt-bit-flipped": (CK, _flip, "corrupted checkpoint"),
    "ckpt-directory": (CK, _as_dir, "corrupted checkpoint"),
    "ckpt-missing-param": (CK, lambda p: rewrite_checkpoint(p, _del("param_1")), "keys do not match"),
    "ckpt-missing-scalar": (CK, lambda p: rewrite_checkpoint(p, _del("batch")), "missing key"),
    "ckpt-checksum-mismatch": (CK, lambda p: rewrite_checkpoint(
        p, lambda a: a.__setitem__("param_0", a["param_0"] + 1), keep_checksum=True), "SHA-256"),
    "ckpt-wrong-shape": (CK, lambda p: rewrite_checkpoint(
        p, lambda a: a.__setitem__("param_0", a["param_0"].reshape(-1))), "param_0 is"),
    "ckpt-wrong-dtype": (CK, lambda p: rewrite_checkpoint(
        p, lambda a: a.__setitem__("param_0", a["param_0"].astype(np.float64))), "param_0 is"),
    "ckpt-nan": (CK, lambda p: rewrite_checkpoint(
        p, lambda a: a["param_0"].__setitem__((0,) * a["param_0"].ndim, np.nan)), "finite"),
    "ckpt-scalar-not-integer": (CK, lambda p: rewrite_checkpoint(p, _set("epoch", "one")), "scalar integer"),
    "ckpt-batch-past-epoch": (CK, lambda p: rewrite_checkpoint(p, _set("batch", 99)), "batch counter 99"),
    "ckpt-counts-inconsistent": (CK, lambda p: rewrite_checkpoint(p, _set("n_seen", 7)), "n_seen=7"),
    "ckpt-object-array": (CK, lambda p: np.savez(p, **{"epoch": np.array([object()], dtype=object)}),
                          "corrupted checkpoint"),
    # config.json
    "config-missing": (CFG, lambda p: p.unlink(), "is missing"),
    "config-empty": (CFG, lambda p: p.write_text(""), "cannot read"),
    "config-truncated": (CFG, lambda p: p.write_text(p.read_text()[:40]), "cannot read"),
    "config-directory": (CFG, _as_dir, "cannot read"),
    "config-not-an-object": (CFG, lambda p: p.write_text("[1, 2]"), "not a valid run configuration"),
    "config-bad-value": (CFG, lambda p: p.write_text(json.dumps(
        {**json.loads(p.read_text()), "config": {**json.loads(p.read_text())["config"], "epochs": "two"}})),
        "not a valid run configuration"),
    # metrics.csv
    "metrics-garbled": (MET, lambda p: p.write_bytes(b"\x00\xff garbage\n\x01,\x02\n"), "metrics.csv"),
    "metrics-bad-number": (MET, lambda p: p.write_text(p.read_text().replace("\n1,", "\nx,", 1)), "garbled"),
    "metrics-wrong-header": (MET, lambda p: p.write_text("a,b\n1,2\n"), "header"),
    "metrics-row-missing": (MET, lambda p: p.write_text(p.read_text().splitlines()[0] + "\n"), "epoch rows"),
    "metrics-short-row": (MET, lambda p: p.write_text(p.read_text().splitlines()[0] + "\n1,2\n"), "garbled"),
    "metrics-directory": (MET, _as_dir, "metrics.csv"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupted_run_folder_is_refused(run_folder, data_dir, tmp_path, capsys, kind):
    name, corrupt, message = CORRUPTIONS[kind]
    folder = tmp_path / "r"
    shutil.copytree(run_folder, folder)
    corrupt(folder / name)
    before = snapshot(folder)
    rc = cli(data_dir, folder, "--resume")  # any other exception fails the test (it would be a traceback)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err and "Traceback" not in err
    assert snapshot(folder) == before  # refused before changing anything


def test_intact_copy_resumes(run_folder, data_dir, tmp_path, capsys):
    folder = tmp_path / "r"
    shutil.copytree(run_folder, folder)
    assert cli(data_dir, folder, "--resume") == 0
    assert load_checkpoint(folder / CK)["epoch"] == 2


def test_checkpoint_written_atomically_with_checksum(run_folder):
    ck = run_folder / CK
    assert not list(run_folder.glob("*.tmp*"))
    with np.load(ck) as z:
        arrays = {k: z[k] for k in z.files}
    assert str(arrays.pop("sha256")) == _arrays_sha256(arrays)
    with pytest.raises(CorruptRunError):
        load_checkpoint(run_folder / "config.json")


# ---- data folder (item 4) ----

def test_config_records_data_folder_and_checksums(data_dir, tmp_path):
    out = tmp_path / "r"
    train(TrainConfig(preset="drn-xs", data_dir=data_dir, epochs=1, train_size=8), out, progress=False)
    rec = json.loads((out / CFG).read_text())["data"]
    assert rec["folder"] == str(Path(data_dir).resolve())
    assert set(rec["files"]) == {stem + ".gz" for stem in FILES.values()}
    for fname, digest in rec["files"].items():
        assert digest == hashlib.sha256((Path(data_dir) / fname).read_bytes()).hexdigest()


@pytest.mark.parametrize("case", ["missing", "incomplete", "a-file"])
def test_explicit_data_dir_without_the_dataset_is_an_error(data_dir, tmp_path, monkeypatch, capsys, case):
    monkeypatch.setenv(data.ENV_VAR, data_dir)  # a valid fallback exists: it must not be used
    folder = tmp_path / "d"
    if case == "incomplete":
        folder.mkdir()
        for stem in list(FILES.values())[:3]:
            shutil.copy(Path(data_dir) / (stem + ".gz"), folder)
    elif case == "a-file":
        folder.write_text("x")
    rc = cli(folder, tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 2 and str(folder) in err
    if case == "incomplete":
        assert "missing t10k-labels-idx1-ubyte" in err
    assert not (tmp_path / "out").exists()


def _mark_published(monkeypatch, name, folder):
    """Pretend the files in ``folder`` are ``name``'s published files (their md5 in DATASETS)."""
    sums = {stem + ".gz": {"md5": hashlib.md5((Path(folder) / (stem + ".gz")).read_bytes()).hexdigest()}
            for stem in FILES.values()}
    monkeypatch.setitem(data.DATASETS, name, data.DatasetSpec(name, ("http://x/",), sums))


def test_env_folder_of_another_dataset_is_refused(data_dir, tmp_path, monkeypatch):
    env = tmp_path / "data"
    shutil.copytree(data_dir, env)
    # unnamed folder, files matching no published checksum: nothing says they are fashion-mnist
    with pytest.raises(WrongDatasetError, match="nothing says"):
        find_data_dir("fashion-mnist", env={data.ENV_VAR: str(env)}, home=tmp_path)
    # a folder named after another dataset
    named = tmp_path / "mnist"
    shutil.copytree(data_dir, named)
    with pytest.raises(WrongDatasetError):
        find_data_dir("fashion-mnist", env={data.ENV_VAR: str(named)}, home=tmp_path)
    assert find_data_dir("mnist", env={data.ENV_VAR: str(named)}, home=tmp_path) == named
    # a subfolder named after the dataset wins over the folder itself
    shutil.copytree(data_dir, env / "fashion-mnist")
    assert find_data_dir("fashion-mnist", env={data.ENV_VAR: str(env)}, home=tmp_path) == env / "fashion-mnist"
    shutil.rmtree(env / "fashion-mnist")
    # the published files of another dataset: refused everywhere, --data-dir included
    _mark_published(monkeypatch, "mnist", env)
    with pytest.raises(WrongDatasetError, match="published 'mnist' file"):
        find_data_dir("fashion-mnist", data_dir=env, env={}, home=tmp_path)
    with pytest.raises(WrongDatasetError, match="published 'mnist' file"):
        find_data_dir("fashion-mnist", env={data.ENV_VAR: str(env)}, home=tmp_path)
    # ...and accepted as given for the dataset whose published files they are
    assert find_data_dir("mnist", env={data.ENV_VAR: str(env)}, home=tmp_path) == env


def test_env_mnist_folder_is_not_fashion_mnist(tmp_path, monkeypatch, capsys):
    """The issue's case with the real MNIST folder when $PHYSGRAD_DATA names one."""
    env = os.environ.get(data.ENV_VAR)
    if not env:
        pytest.skip(f"set {data.ENV_VAR} to run this test")
    folder = Path(env) / "mnist" if (Path(env) / "mnist").is_dir() else Path(env)
    monkeypatch.setenv(data.ENV_VAR, str(folder))
    monkeypatch.setenv("HOME", str(tmp_path))
    rc = main(["train", "--dataset", "fashion-mnist", "--preset", "drn-xs", "--epochs", "1", "--train-size", "8",
               "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2 and "fashion-mnist" in capsys.readouterr().err


# ---- bad inputs (item 6) ----

def _bad_data(data_dir, folder, case):
    shutil.copytree(data_dir, folder)
    images = folder / (FILES["train_images"] + ".gz")
    if case == "corrupted-gzip":
        raw = bytearray(images.read_bytes())
        raw[20:40] = b"\xff" * 20
        images.write_bytes(bytes(raw))
    elif case == "truncated-gzip":
        images.write_bytes(images.read_bytes()[:-30])
    elif case == "zero-images":
        write_idx(images, np.zeros((0, 28, 28), np.uint8))
        write_idx(folder / (FILES["train_labels"] + ".gz"), np.zeros(0, np.uint8))
    elif case == "20x20-images":
        for key, n in (("train", 48), ("test", 16)):
            write_idx(folder / (FILES[f"{key}_images"] + ".gz"), np.zeros((n, 20, 20), np.uint8))


@pytest.mark.parametrize("case", ["corrupted-gzip", "truncated-gzip", "zero-images", "20x20-images"])
def test_bad_data_files_exit_2(data_dir, tmp_path, capsys, case):
    _bad_data(data_dir, tmp_path / "d", case)
    rc = cli(tmp_path / "d", tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "images" in err


def test_bad_out_and_seed_exit_2(data_dir, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert cli(data_dir, f) == 2 and "is a file" in capsys.readouterr().err
    assert cli(data_dir, f / "sub") == 2 and "cannot write" in capsys.readouterr().err
    assert cli(data_dir, tmp_path / "s", "--seed", "-1") == 2 and "seed" in capsys.readouterr().err
    with pytest.raises(data.PhysgradError, match="seed"):
        TrainConfig(seed=-1)


# ---- interrupted runs (item 6) ----

def test_interrupt_hook_returns_signal(data_dir, tmp_path):
    m = train(TrainConfig(preset="drn-xs", data_dir=data_dir, epochs=1, train_size=40), tmp_path / "r",
              progress=False, _interrupt_after=3)
    assert m.interrupted == signal.SIGINT
    assert load_checkpoint(tmp_path / "r" / CK)["batch"] == 3
    m = train(TrainConfig(preset="drn-xs", data_dir=data_dir, epochs=1, train_size=40), tmp_path / "r",
              resume=True, progress=False)
    assert m.interrupted is None and len(m) == 1


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_real_signal_saves_and_exits_128_plus_signal(data_dir, tmp_path, sig, code):
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "physgrad", *ARGS[:4], "100000", "--train-size", "40", "--threads", "1",
           "--no-progress", "--backend", "numpy", "--data-dir", data_dir, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        line = proc.stdout.readline()  # the first epoch line: training is under way
        assert line.startswith("epoch"), (line, proc.stderr.read() if proc.poll() is not None else "")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert "saved" in err and "Traceback" not in err
    ck = load_checkpoint(out / CK)
    assert ck["epoch"] >= 1


def test_row_written_after_the_checkpoint_is_dropped_others_kept_verbatim(run_folder, data_dir, tmp_path):
    folder = tmp_path / "r"
    shutil.copytree(run_folder, folder)
    first = (folder / MET).read_text()
    with open(folder / MET, "a", newline="") as fh:  # as if killed between the row and the checkpoint
        fh.write("2,1,1,1,1,1\r\n")
    assert cli(data_dir, folder, "--resume") == 0
    text = (folder / MET).read_text()
    assert text.startswith(first) and len(text.splitlines()) == 3 and "2,1,1,1,1,1" not in text


def test_options_that_crashed_or_lied_are_refused(data_dir, tmp_path, capsys):
    """Found by hand-fuzzing train's options: a batch larger than the training set allocated buffers by the
    batch (373 GiB for 10^9: MemoryError traceback); amplifier gains whose product overflows raised
    OverflowError in the compiled kernel's reparametrisation. Both are exit 2 before any folder exists.
    """
    base = ["train", "--preset", "drn-xs", "--data-dir", str(data_dir), "--epochs", "1", "--train-size", "16",
            "--test-size", "8", "--no-progress", "--backend", "numpy"]
    for k, extra in enumerate((["--batch-size", "17"], ["--amplifier-gains", "1e308"], ["--input-gain", "1e200"])):
        out = tmp_path / f"r{k}"
        assert main(base + ["--out", str(out)] + extra) == 2
        assert capsys.readouterr().err.startswith("physgrad: error:") and not out.exists()

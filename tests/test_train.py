"""``physgrad train``: outputs, determinism, resume bit-for-bit, engines and algorithms, errors."""
import csv
import json

import numpy as np
import pytest

from physgrad.types import PhysgradError
from physgrad.cli import main
from physgrad.layered.train import ALGORITHMS, TrainConfig, load_checkpoint, train


def cfg(data_dir, **kw):
    base = dict(preset="drn-xs", data_dir=data_dir, epochs=2, train_size=40, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def read_metrics(folder):
    with open(folder / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def params_of(folder):
    return load_checkpoint(folder / "checkpoint.npz")["params"]


@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_outputs_and_same_seed_same_result(data_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    m1 = train(cfg(data_dir), a, progress=False)
    train(cfg(data_dir), b, progress=False)
    assert len(m1) == 2
    for name in ("config.json", "metrics.csv", "checkpoint.npz", "learning_curve.png"):
        assert (a / name).exists()
    rows = read_metrics(a)
    assert list(rows[0]) == ["epoch", "train_error", "test_error", "train_seconds", "eval_seconds", "lr_scale"]
    assert [float(r["lr_scale"]) for r in rows] == [1.0, 0.99]
    saved = json.loads((a / "config.json").read_text())
    assert saved["config"]["preset"] == "drn-xs" and saved["preset"]["input_gain"] == 100.0
    assert saved["engine"] == "fast" and "numpy" in saved["versions"]
    for p, q in zip(params_of(a), params_of(b)):
        np.testing.assert_array_equal(p, q)
    assert [r["test_error"] for r in rows] == [r["test_error"] for r in read_metrics(b)]
    c = tmp_path / "c"
    train(cfg(data_dir, seed=1), c, progress=False)
    assert not np.array_equal(params_of(a)[0], params_of(c)[0])


@pytest.mark.parametrize("threads", [1, 2])
def test_resume_is_bit_for_bit(data_dir, tmp_path, threads):
    full, parts = tmp_path / "full", tmp_path / "parts"
    config = cfg(data_dir, threads=threads, epochs=3)
    train(config, full, progress=False)
    train(config, parts, progress=False, _interrupt_after=4)  # mid-epoch 1
    ck = load_checkpoint(parts / "checkpoint.npz")
    assert (ck["epoch"], ck["batch"]) == (0, 4)
    train(config, parts, resume=True, progress=False, _interrupt_after=10)  # into epoch 2 (10 batches/epoch)
    train(config, parts, resume=True, progress=False)
    for p, q in zip(params_of(full), params_of(parts)):
        np.testing.assert_array_equal(p, q)
    for r, s in zip(read_metrics(full), read_metrics(parts)):
        assert (r["epoch"], r["train_error"], r["test_error"]) == (s["epoch"], s["train_error"], s["test_error"])


def test_fast_engine_equals_generic_engine_float64(data_dir, tmp_path):
    """The fused C-EP path and the generic rule (physgrad.learning, centered EP) give the same run."""
    fast, gen = tmp_path / "fast", tmp_path / "gen"
    train(cfg(data_dir, dtype="float64", engine="fast", train_size=24), fast, progress=False)
    train(cfg(data_dir, dtype="float64", engine="generic", train_size=24), gen, progress=False)
    for p, q in zip(params_of(fast), params_of(gen)):
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)
    assert [r["test_error"] for r in read_metrics(fast)] == [r["test_error"] for r in read_metrics(gen)]


def test_fast_tbp_equals_generic_tbp_float64(data_dir, tmp_path):
    """TBP runs on the fast engine by default, and gives the generic engine's run (float64)."""
    fast, gen = tmp_path / "fast", tmp_path / "gen"
    assert cfg(data_dir, algorithm="tbp").resolved_engine == "fast"
    train(cfg(data_dir, algorithm="tbp", dtype="float64", train_size=24), fast, progress=False)
    train(cfg(data_dir, algorithm="tbp", dtype="float64", engine="generic", train_size=24), gen, progress=False)
    assert json.loads((fast / "config.json").read_text())["engine"] == "fast"
    for p, q in zip(params_of(fast), params_of(gen)):
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)
    assert [r["test_error"] for r in read_metrics(fast)] == [r["test_error"] for r in read_metrics(gen)]


@pytest.mark.parametrize("algorithm", [a for a in ALGORITHMS if a != "cep"])
@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_every_algorithm_trains_generic(data_dir, tmp_path, algorithm):
    m = train(cfg(data_dir, algorithm=algorithm, epochs=1, train_size=8, engine="generic"), tmp_path / algorithm,
              progress=False)
    assert len(m) == 1 and 0 <= m[0]["test_error"] <= 100
    params = params_of(tmp_path / algorithm)
    assert all(np.all(np.isfinite(p)) for p in params) and all(np.all(W >= 0) for W in params[:2])


def test_dhn_preset_trains(data_dir, tmp_path):
    m = train(cfg(data_dir, preset="dhn-1h", epochs=1, train_size=32), tmp_path / "dhn", progress=False)
    assert len(m) == 1


def test_errors(data_dir, tmp_path, monkeypatch):
    with pytest.raises(PhysgradError, match="valid: drn-xs"):
        cfg(data_dir, preset="drn-9h")
    with pytest.raises(PhysgradError, match="algorithm must be one of"):
        cfg(data_dir, algorithm="sgd")
    with pytest.raises(PhysgradError, match="fast engine"):
        cfg(data_dir, algorithm="pep", engine="fast")
    with pytest.raises(PhysgradError, match="unknown training option"):
        TrainConfig.from_dict({"preset": "drn-xs", "lr": 1})
    with pytest.raises(PhysgradError, match="no checkpoint"):
        train(cfg(data_dir), tmp_path / "none", resume=True, progress=False)
    out = tmp_path / "x"
    train(cfg(data_dir, epochs=1, train_size=8), out, progress=False)
    with pytest.raises(PhysgradError, match="already holds a run"):
        train(cfg(data_dir, epochs=1, train_size=8), out, progress=False)
    with pytest.raises(PhysgradError, match="differ"):
        train(cfg(data_dir, epochs=1, train_size=8, seed=5), out, resume=True, progress=False)
    monkeypatch.delenv("PHYSGRAD_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(PhysgradError, match="nodata does not exist"):  # an explicit --data-dir: no fallback
        train(cfg(str(tmp_path / "nodata")), tmp_path / "y", progress=False)


def test_cli(data_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["train", "--preset", "drn-xs", "--data-dir", data_dir, "--epochs", "1", "--train-size", "8",
               "--threads", "1", "--out", str(out), "--no-progress"])
    assert rc == 0 and "test error" in capsys.readouterr().out
    rc = main(["train", "--preset", "drn-xs", "--data-dir", data_dir, "--epochs", "1", "--train-size", "16",
               "--threads", "1", "--out", str(out), "--no-progress", "--resume"])
    assert rc == 2  # train size differs from the saved run: a clear error, exit code 2
    assert "differ" in capsys.readouterr().err
    rc = main(["train", "--preset", "drn-xs", "--data-dir", data_dir, "--epochs", "2", "--train-size", "8",
               "--threads", "1", "--out", str(out), "--no-progress", "--resume"])  # extend the schedule
    assert rc == 0 and len(read_metrics(out)) == 2

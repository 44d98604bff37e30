"""Run-folder fuzz, small seeded form (issue 18 item 7; the large form is ``benchmarks/fuzz_runs.py``):
corrupted fit/train run folders on ``--resume``, damaged sweep tables, concurrent writers and a signal.
Every case must be refused with exit 2 and the folder byte-identical, or accepted (exit 0); no
traceback, no hang, no lost or changed file."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _benchmark(name: str):
    """The module ``benchmarks/<name>.py`` (the benchmarks folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fuzz():
    return _benchmark("fuzz_runs")


def _check(result):
    bad = [f for f in result["failures"] if f[1] != "startup"]
    assert not bad, bad[:3]
    return result["counts"]


def test_fit_resume_corruptions(fuzz):
    counts = _check(fuzz.run(seed=11, n_fit=24, n_train=0, n_sweep=0, n_writers=0, n_signals=0, timeout_s=60,
                             log=lambda s: None))
    assert sum(counts["fit --resume"].values()) == 24 and counts["fit --resume"].get("refused", 0) >= 12


def test_train_resume_corruptions(fuzz):
    counts = _check(fuzz.run(seed=12, n_fit=0, n_train=5, n_sweep=0, n_writers=0, n_signals=0, timeout_s=60,
                             log=lambda s: None))
    assert sum(counts["train --resume"].values()) == 5


def test_trained_source_resume_corruptions(fuzz):
    """``fit --trainable 'vg*'`` run folders (gate voltages of a transistor network in the checkpoint)."""
    counts = _check(fuzz.run(seed=15, n_fit=0, n_train=0, n_sweep=0, n_writers=0, n_signals=0, timeout_s=60,
                             log=lambda s: None, n_sources=8))
    assert sum(counts["fit --trainable --resume"].values()) == 8
    assert counts["fit --trainable --resume"].get("refused", 0) >= 4


def test_sweep_table_corruptions(fuzz):
    counts = _check(fuzz.run(seed=13, n_fit=0, n_train=0, n_sweep=16, n_writers=0, n_signals=0, timeout_s=60,
                             log=lambda s: None, real_sweep=False))
    assert sum(counts["sweep results.csv"].values()) == 16


@pytest.mark.slow  # ~8 s of CPU; the lock itself is tested with a real second process in test_runs
def test_concurrent_writers_and_a_signal(fuzz):
    counts = _check(fuzz.run(seed=14, n_fit=0, n_train=0, n_sweep=0, n_writers=1, n_signals=1, timeout_s=120,
                             log=lambda s: None))
    assert counts["concurrent writers"] == {"accepted": 1}
    assert sum(counts["signals"].values()) == 1


@pytest.fixture(scope="module")
def fuzz_predict():
    return _benchmark("fuzz_predict")


def test_predict_on_damaged_runs_csvs_and_images(fuzz_predict):
    """``physgrad predict`` (benchmarks/fuzz_predict.py, small seeded form): damaged fit and train run
    folders, damaged CSVs, hostile image files; exit 0/1/2 only, the model folder unchanged, a user's
    existing --out untouched, a new --out complete or absent."""
    results = fuzz_predict.run(seed=21, n_fit=12, n_train=6, n_csv=16, n_images=24, timeout_s=60)
    for name, r in results.items():
        assert not r["bad"], (name, r["bad"][:3])
        assert sum(r["counts"].values()) == r["cases"]
    assert results["images hostile"]["counts"].get("refused", 0) >= 12

"""``physgrad sweep``: specs, ids, results that survive errors and dead workers, resume, summaries.

The cluster tests run a real ``distributed.LocalCluster`` on 127.0.0.1 with 2 worker processes and
tiny training runs (synthetic MNIST-format data).
"""
import csv
import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from physgrad.cli import main
from physgrad.layered.train import load_checkpoint
from physgrad.sweep import SpecError, SweepSpec, load_spec, read_results, run_sweep, task_id, write_summary
from physgrad.sweep.runner import RESULT_FIELDS, latest
from physgrad.sweep.summary import configurations
from physgrad.types import PhysgradError

distributed = pytest.importorskip("distributed")


def write_spec(path, text):
    path.write_text(text)
    return path


def spec_text(data_dir, grid='algorithm = ["cep", "pep"]', seeds="[0, 1]", extra=""):
    return (f'task = "train"\nseeds = {seeds}\n[base]\npreset = "drn-xs"\ndata-dir = "{data_dir}"\n'
            f'epochs = 2\ntrain-size = 40\n{extra}[grid]\n{grid}\n')


# --- specifications ---------------------------------------------------------------------------
def test_spec_runs_ids_and_flag_names(tmp_path, data_dir):
    spec = load_spec(write_spec(tmp_path / "s.toml", spec_text(data_dir)))
    runs = spec.runs()
    assert len(runs) == 4 and {r["seed"] for r in runs} == {0, 1}
    assert runs[0]["data_dir"] == data_dir and runs[0]["train_size"] == 40  # flags without dashes
    # the id does not depend on key order
    r = runs[0]
    assert task_id("train", r) == task_id("train", dict(reversed(list(r.items()))))
    assert len({task_id("train", r) for r in runs}) == 4


@pytest.mark.parametrize("text,match", [
    ('task = "train"\nseeds = [0]\n[base]\nout = "x"\n', "set by the sweep"),
    ('task = "train"\nseeds = [0, 0]\n', "seeds repeat"),
    ('task = "train"\nseeds = [-1]\n', "seeds must be integers >= 0"),
    ('task = "train"\n[grid]\nalgorithm = "cep"\n', "must be a non-empty list"),
    ('task = "train"\n[base]\nepochs = 1\n[grid]\nepochs = [1, 2]\n', "in both"),
    ('task = "train"\nsweeps = 3\n', "unknown key"),
    ('seeds = [0]\n', "missing `task"),
    ('task = "train"\n[base\n', "not valid TOML"),
])
def test_bad_specs_name_the_file(tmp_path, text, match):
    path = write_spec(tmp_path / "bad.toml", text)
    with pytest.raises(SpecError, match=match) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_bad_options_stop_the_sweep_before_it_starts(tmp_path, data_dir, capsys):
    path = write_spec(tmp_path / "s.toml", spec_text(data_dir, grid='algorithm = ["cep", "sgd"]'))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--engine", "pool"]) == 2
    assert "algorithm must be one of" in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.csv").exists()
    path = write_spec(tmp_path / "t.toml", spec_text(data_dir, extra="colour = 3\n"))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out2"), "--engine", "pool"]) == 2
    assert "unknown task" not in capsys.readouterr().err
    with pytest.raises(SpecError, match="unknown task"):
        run_sweep(SweepSpec("fly", (0,)), tmp_path / "out3")


def test_malformed_results_table_is_refused(tmp_path, data_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("a,b\n1,2\n")
    spec = load_spec(write_spec(tmp_path / "s.toml", spec_text(data_dir)))
    with pytest.raises(PhysgradError, match="not a physgrad sweep table"):
        run_sweep(spec, out, engine="pool")


# --- a real local cluster -----------------------------------------------------------------------
@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_local_cluster_errors_resume_and_same_as_serial(tmp_path, data_dir):
    # one grid value points at a missing data folder: those runs raise and become error rows
    text = spec_text(data_dir, grid=f'data-dir = ["{data_dir}", "{tmp_path / "missing"}"]')
    text = text.replace(f'data-dir = "{data_dir}"\n', "")
    spec = load_spec(write_spec(tmp_path / "s.toml", text))
    out = tmp_path / "out"
    rows = run_sweep(spec, out, workers=2, engine="dask", progress=False, log=lambda s: None)
    status = {json.loads(r["params"])["data_dir"]: r["status"] for r in rows}
    assert status == {data_dir: "ok", str(tmp_path / "missing"): "error"}
    errors = [r for r in rows if r["status"] == "error"]
    assert len(errors) == 2 and all("DataNotFoundError" in r["message"] for r in errors)
    with open(out / "results.csv", newline="") as fh:
        assert tuple(csv.DictReader(fh).fieldnames) == RESULT_FIELDS
    ok_ids = {r["id"] for r in rows if r["status"] == "ok"}
    mtimes = {i: (out / "runs" / i / "checkpoint.npz").stat().st_mtime_ns for i in ok_ids}

    # the missing folder appears: rerunning retries only the two failed runs
    (tmp_path / "missing").symlink_to(data_dir, target_is_directory=True)
    rows2 = run_sweep(spec, out, workers=2, engine="dask", progress=False, log=lambda s: None)
    assert all(r["status"] == "ok" for r in rows2)
    assert len(read_results(out)) == 6  # 4 first attempts + 2 retries
    assert {i: (out / "runs" / i / "checkpoint.npz").stat().st_mtime_ns for i in ok_ids} == mtimes

    # same results as a serial run (a local process pool, one worker)
    serial = tmp_path / "serial"
    run_sweep(spec, serial, workers=1, engine="pool", progress=False, log=lambda s: None)
    a, b = latest(read_results(out)), latest(read_results(serial))
    assert set(a) == set(b)
    for rid in a:
        assert a[rid]["final_error"] == b[rid]["final_error"]
        pa = load_checkpoint(out / "runs" / rid / "checkpoint.npz")["params"]
        pb = load_checkpoint(serial / "runs" / rid / "checkpoint.npz")["params"]
        for x, y in zip(pa, pb):
            np.testing.assert_array_equal(x, y)

    # summary over seeds
    paths = write_summary(out, title="test")
    text = paths["summary"].read_text()
    assert "| data_dir | final mean |" in text
    assert sum(line.startswith('| "') for line in text.splitlines()) == 2  # one row per data folder
    assert paths["curves"].stat().st_size > 1000


@pytest.mark.slow  # a real cluster, ~9 s of CPU; the error-row logic is also in test_sweep_robust
def test_a_dead_worker_becomes_an_error_row_and_is_retried(tmp_path, data_dir):
    import dask
    from distributed import Client, LocalCluster

    spec = load_spec(write_spec(tmp_path / "s.toml", spec_text(data_dir, grid='algorithm = ["cep"]', seeds="[0]")
                                .replace("epochs = 2", "epochs = 400")))
    out = tmp_path / "out"
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0")
    client = Client(cluster)
    try:
        result = {}
        thread = threading.Thread(target=lambda: result.setdefault(
            "rows", run_sweep(spec, out, scheduler=cluster.scheduler_address, progress=False, log=lambda s: None)))
        thread.start()
        rid = task_id("train", spec.runs()[0])
        deadline = time.time() + 60
        while time.time() < deadline and not (out / "runs" / rid / "checkpoint.npz").exists():
            time.sleep(0.1)
        pids = client.run(os.getpid)
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        thread.join(120)
        assert not thread.is_alive()
        rows = result["rows"]
        assert rows[0]["status"] == "error" and "worker died" in rows[0]["message"]
        before = (out / "runs" / rid / "metrics.csv").read_text().splitlines()
        kept = load_checkpoint(out / "runs" / rid / "checkpoint.npz")["epoch"]
        assert kept >= 1 and len(before) >= kept + 1  # the header and the checkpointed epochs
    finally:
        client.close()
        cluster.close()
    # rerun on a fresh local cluster: the run resumes from its last checkpoint and finishes
    spec2 = load_spec(write_spec(tmp_path / "s.toml", spec_text(data_dir, grid='algorithm = ["cep"]', seeds="[0]")
                                 .replace("epochs = 2", "epochs = 400")))
    rows = run_sweep(spec2, out, workers=1, engine="dask", progress=False, log=lambda s: None)
    assert rows[0]["status"] == "ok" and int(rows[0]["epochs"]) == 400
    after = (out / "runs" / rid / "metrics.csv").read_text().splitlines()
    assert len(after) == 401
    # resumed from the checkpoint: the epochs of the first attempt are kept, not run again (up to the
    # checkpointed epoch; a row written after the last checkpoint is dropped and redone)
    assert after[:kept + 1] == before[:kept + 1]


@pytest.mark.slow  # real training runs on a pool, ~9 s of CPU
def test_status_and_summary_statistics(tmp_path, data_dir, capsys):
    spec_path = write_spec(tmp_path / "s.toml", spec_text(data_dir))
    out = tmp_path / "out"
    assert main(["sweep", str(spec_path), "--out", str(out), "--status"]) == 1
    assert "0 of 4 runs done" in capsys.readouterr().out
    assert main(["sweep", str(spec_path), "--out", str(out), "--engine", "pool", "--workers", "2",
                 "--no-progress"]) == 0
    assert main(["sweep", str(spec_path), "--out", str(out), "--status"]) == 0
    assert "4 of 4 runs done" in capsys.readouterr().out
    configs = configurations(out)
    assert len(configs) == 2
    for c in configs:
        finals = [float(r["final_error"]) for r in latest(read_results(out)).values()
                  if json.loads(r["params"])["algorithm"] == c["params"]["algorithm"]]
        assert c["final"]["n"] == 2
        assert c["final"]["mean"] == pytest.approx(np.mean(finals))
        assert c["final"]["std"] == pytest.approx(np.std(finals, ddof=1))

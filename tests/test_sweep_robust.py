"""``physgrad sweep`` robustness (issue 18): spec value types, a damaged ``results.csv`` (exit 2 naming
file and line), two sweeps into one ``--out`` (the lock), scheduler addresses and silent or junk
peers (bounded time, exit 2), SIGINT (results kept, exit 130), honest summary labels (issue 20)."""
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from physgrad.cli import main
from physgrad.sweep import runner
from physgrad.sweep.results import RESULT_FIELDS
from physgrad.sweep.summary import metric_label, summary_markdown
from physgrad.sweep.spec import task_id
from tests.test_fit_robust import task  # noqa: F401  (the fixture)
from tests.test_runs import ENV, hold_lock, snapshot, stop

ROOT = Path(__file__).resolve().parents[1]


def fit_spec(tmp_path, task, base="", grid='lr = [0.001]', seeds="[0]", epochs=1):  # noqa: F811
    text = (f'task = "fit"\nseeds = {seeds}\n[base]\nnetlist = "{task["netlist"]}"\ndata = "{task["data"]}"\n'
            f'inputs = "{",".join(task["inputs"])}"\noutputs = "{",".join(task["outputs"])}"\n'
            f'batch-size = 4\nepochs = {epochs}\n{base}[grid]\n{grid}\n')
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def sweep(spec, out, *extra):
    return main(["sweep", str(spec), "--out", str(out), "--engine", "pool", "--workers", "1", "--no-progress",
                 *extra])


@pytest.mark.parametrize("base, grid, needle", [
    ('', 'epochs = ["two"]', "[grid] epochs: expected an integer, got 'two'"),
    ('', 'epochs = [1.5]', "[grid] epochs: expected an integer"),
    ('lr = "fast"\n', 'epochs = [1]', "[base] lr: expected a number, got 'fast'"),
    ('seed-order = 1\nbeta = true\n', 'epochs = [1]', "[base] beta: expected a number, got True"),
    ('levels = 3\n', 'epochs = [1]', "[base] levels: expected a list"),
    ('method = {a = 1}\n', 'epochs = [1]', "[base] method: expected a string"),
    ('', 'levels = [[[1.0]], [[2.0]]]', "[grid] levels: expected a list"),
])
def test_spec_value_types_exit_2_naming_the_key(task, tmp_path, capsys, base, grid, needle):  # noqa: F811
    spec = fit_spec(tmp_path, task, base=base, grid=grid).read_text().replace("epochs = 1\n", "", 1)
    (tmp_path / "s.toml").write_text(spec)
    assert sweep(tmp_path / "s.toml", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert needle in err and str(tmp_path / "s.toml") in err and "Traceback" not in err


@pytest.fixture(scope="module")
def finished(task, tmp_path_factory):  # noqa: F811
    """A finished one-run sweep folder (made once per module)."""
    d = tmp_path_factory.mktemp("sweep")
    spec = fit_spec(d, task)
    assert sweep(spec, d / "out") == 0
    return spec, d / "out"


def _table(finished, tmp_path):
    """A copy of the finished sweep folder."""
    import shutil
    spec, out = finished
    shutil.copytree(out, tmp_path / "out")
    return spec, tmp_path / "out"


@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_damaged_results_table_exit_2_naming_file_and_line(finished, tmp_path, capsys):
    spec, out = _table(finished, tmp_path)
    capsys.readouterr()
    good = (out / "results.csv").read_text()
    header, row = good.splitlines()[:2]
    cases = {
        "nul byte": header + "\n" + row.replace(",ok,", ",o\0k,") + "\n",
        "short row": header + "\n" + row + "\n" + "abc,fit\n",
        "bad status": header + "\n" + row.replace(",ok,", ",great,") + "\n",
        "params not json": header + "\n" + row.replace('"{', '"{{', 1) + "\n",
        "id not of its params": header + "\n" + "0" * 12 + row[12:] + "\n",
        "huge field": header + "\n" + row.replace(",ok,", ",ok" + "x" * (2 << 20) + ",") + "\n",
        "not utf-8": header + "\n" + row + "\n\xff\n",
        "bad number": header + "\n" + row.replace(",1,", ",one,", 1) + "\n",
    }
    for name, text in cases.items():
        (out / "results.csv").write_bytes(text.encode("utf-8", "surrogateescape") if name != "not utf-8"
                                          else text.encode("latin-1"))
        before = snapshot(out)
        assert sweep(spec, out) == 2, name
        err = capsys.readouterr().err
        assert "results.csv" in err and "Traceback" not in err, (name, err)
        if name not in ("not utf-8",):
            assert "line " in err, (name, err)
        assert snapshot(out) == before, name
        assert main(["sweep", str(spec), "--out", str(out), "--status"]) == 2, name
        capsys.readouterr()


def test_two_sweeps_into_one_out(finished, tmp_path, capsys):
    spec, out = _table(finished, tmp_path)
    proc = hold_lock(out, "sweep")
    try:
        assert sweep(spec, out) == 2
        err = capsys.readouterr().err
        assert f"pid {proc.pid}" in err and "in use" in err
    finally:
        stop(proc)
    # a foreign non-empty folder is refused, and --overwrite never replaces a user's file
    other = tmp_path / "mine"
    other.mkdir()
    (other / "summary.md").write_text("my summary")
    assert sweep(spec, other) == 2 and "not empty" in capsys.readouterr().err
    assert sweep(spec, other, "--overwrite") == 2 and "summary.md was not written" in capsys.readouterr().err
    assert (other / "summary.md").read_text() == "my summary"


@pytest.mark.slow
def test_two_real_sweep_processes_never_lose_a_row(task, tmp_path):  # noqa: F811
    spec = fit_spec(tmp_path, task, grid="lr = [0.001, 0.002]")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "physgrad", "sweep", str(spec), "--out", str(out), "--engine", "pool",
           "--workers", "1", "--no-progress"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes in ([0, 0], [0, 2]), results  # the second one waits its turn or is refused, never both write
    assert all("Traceback" not in r[1] for r in results)
    if codes == [0, 2]:
        assert any("in use by pid" in r[1] for r in results)
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0] == ",".join(RESULT_FIELDS)
    assert {line.split(",")[0] for line in lines[1:]} == {task_id("fit", p) for p in
                                                          [dict(r) for r in _runs(spec)]}


def _runs(spec_path):
    from physgrad.sweep import load_spec
    return load_spec(spec_path).runs()


# --- schedulers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("address, needle", [
    ("tcp://", "no port"),
    ("tcp://host", "no port"),
    ("tcp://127.0.0.1:0", "port '0'"),
    ("tcp://127.0.0.1:99999", "port '99999'"),
    ("tcp://127.0.0.1:http", "port 'http'"),
    ("udp://127.0.0.1:8786", "scheme 'udp'"),
    ("tcp://exa mple:8786", "not an address"),
    ("tcp://-bad-:8786", "not a host name"),
    ("tcp://[::1:8786", "IPv6"),
    ("tcp://" + "a" * 400 + ":1", "not an address"),
    ("tcp://127.0.0.1:1", "cannot connect"),
    ("tcp://no-such-host.invalid:8786", "cannot resolve"),
])
def test_bad_scheduler_addresses_exit_2(task, tmp_path, capsys, address, needle):  # noqa: F811
    pytest.importorskip("distributed")
    spec = fit_spec(tmp_path, task)
    t0 = time.monotonic()
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--scheduler", address, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err
    assert time.monotonic() - t0 < 30


class _Server:
    """A TCP server on 127.0.0.1 that accepts and then stays silent, or sends ``reply``."""

    def __init__(self, reply=None):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.reply, self.conns = reply, []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.reply is not None:
                conn.sendall(self.reply)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("reply, needle", [
    (None, "no Dask handshake within 0.5 s"),
    (struct.pack("<Q", 1 << 60) + b"junk", "announces 1152921504606846976 bytes"),
    (b"HTTP/1.1 200 OK\r\n\r\n", "not a Dask scheduler"),
    (b"", None),
])
def test_silent_or_junk_scheduler_is_refused_in_bounded_time(task, tmp_path, capsys, monkeypatch, reply, needle):  # noqa: F811,E501
    pytest.importorskip("distributed")
    monkeypatch.setattr(runner, "HANDSHAKE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(runner, "CONNECT_TIMEOUT_S", 2.0)
    if reply == b"":  # a port nobody listens on
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        server = type("Closed", (), {"port": probe.getsockname()[1], "close": lambda self: None})()
        probe.close()
        needle = "cannot connect"
    else:
        server = _Server(reply)
    try:
        spec = fit_spec(tmp_path, task)
        t0 = time.monotonic()
        rc = main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--scheduler",
                   f"tcp://127.0.0.1:{server.port}", "--no-progress"])
        elapsed = time.monotonic() - t0
    finally:
        server.close()
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err, err
    assert elapsed < 20
    assert not (tmp_path / "out" / "results.csv").exists()


# --- signals ------------------------------------------------------------------------------------------
@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_sigint_during_a_sweep_keeps_results_and_exits_130(task, tmp_path):  # noqa: F811
    spec = fit_spec(tmp_path, task, epochs=100000)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "physgrad", "sweep", str(spec), "--out", str(out), "--engine", "pool",
           "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rid = task_id("fit", _runs(spec)[0])
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "runs" / rid / "checkpoint.npz").exists():
            time.sleep(0.1)
        import signal
        proc.send_signal(signal.SIGINT)
        stdout, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    lines = (out / "results.csv").read_text().splitlines()
    assert len(lines) == 2 and ",unfinished," in lines[1]  # the run saved its checkpoint and said so
    assert (out / "summary.md").exists() and not (out / ".physgrad-lock").exists()


@pytest.mark.slow  # a real Dask cluster, ~10 s of CPU
@pytest.mark.parametrize("sig, group", [("SIGINT", True), ("SIGTERM", False)])
def test_a_signal_stops_a_dask_sweep_at_once_and_its_runs_save(task, tmp_path, sig, group):  # noqa: F811
    """Dask runs its tasks in worker threads that get no signals: the sweep passes the stop on (a Dask
    Event), the run under way saves and says ``unfinished``, the queued run is not started, and the
    command exits 128 + signal within seconds (it used to wait for a run to end: hours). SIGINT goes to
    the whole process group, as a terminal's Ctrl-C does: the local cluster's workers ignore it."""
    import os
    import signal

    spec = fit_spec(tmp_path, task, grid="lr = [0.001, 0.002]", epochs=100000)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "physgrad", "sweep", str(spec), "--out", str(out), "--engine", "dask",
           "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    started = _runs(spec)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not any(
                (out / "runs" / task_id("fit", p) / "checkpoint.npz").exists() for p in started):
            time.sleep(0.1)
        t0 = time.time()
        if group:
            os.killpg(proc.pid, getattr(signal, sig))
        else:
            proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=120)
        waited = time.time() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + getattr(signal, sig), err
    assert waited < 30, waited
    assert "Traceback" not in err, err
    lines = (out / "results.csv").read_text().splitlines()
    assert len(lines) == 2 and ",unfinished," in lines[1], lines  # one row: the run under way saved
    rid = lines[1].split(",")[0]
    assert (out / "runs" / rid / "checkpoint.npz").exists()
    assert not (out / ".physgrad-lock").exists() and not (out / "runs" / rid / ".physgrad-lock").exists()


def test_request_stop_reaches_the_flag_of_another_thread():
    from physgrad.runs import StopFlag, request_stop

    entered, release, seen = threading.Event(), threading.Event(), {}

    def run():
        with StopFlag() as outer:
            with StopFlag() as inner:
                seen["ident"] = threading.get_ident()
                entered.set()
                release.wait(10)
                seen["inner"] = (inner.stop, inner.signum)
            seen["outer_after_inner"] = outer.stop
            seen["outer_registered"] = request_stop(threading.get_ident(), 2)
            seen["outer"] = (outer.stop, outer.signum)
        seen["none_left"] = not request_stop(threading.get_ident(), 2)

    t = threading.Thread(target=run)
    t.start()
    assert entered.wait(10)
    assert not request_stop(threading.get_ident(), 15)  # this thread holds no flag
    assert request_stop(seen["ident"], 15)
    assert request_stop(seen["ident"], 2)  # a second request is not a second signal: no abort
    release.set()
    t.join(10)
    assert seen["inner"] == (True, 15)  # the first request's signal
    assert seen["outer_after_inner"] is False  # only the innermost flag was asked
    assert seen["outer_registered"] and seen["outer"] == (True, 2)
    assert seen["none_left"]


# --- summary labels (issue 20 item 5) -----------------------------------------------------------------
def test_summary_names_train_error_without_a_test_set():
    assert metric_label("train", {}) == "Test error (%)"
    assert metric_label("fit", {"label_column": "species"}) == "Train error (%)"
    assert metric_label("fit", {"label_column": "species", "test": "t.csv"}) == "Test error (%)"
    assert metric_label("fit", {}) == "Train cost"
    stats = {"mean": 1.0, "std": float("nan"), "min": 1.0, "max": 1.0, "n": 1}
    conf = {"params": {"lr": 1}, "metric": "Train cost", "final": stats, "best": stats, "not_ok": 0}
    text = summary_markdown([conf])
    assert "Train cost over seeds" in text and "Test error" not in text
    mixed = summary_markdown([conf, {**conf, "params": {"lr": 2}, "metric": "Test error (%)"}])
    assert "| measure |" in mixed.replace("| lr | measure |", "| measure |")


def test_fit_sweep_summary_says_train(finished):
    spec, out = finished
    text = (out / "summary.md").read_text()
    assert "Train cost over seeds" in text and "Test error" not in text

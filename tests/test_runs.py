"""The run folder (physgrad/runs.py) shared by train, fit and sweep: claim, lock, atomic writes,
``--overwrite``; and ``physgrad download`` never losing a user's file (issue 18, items 1-2)."""
import errno
import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from physgrad import runs
from physgrad.cli import main
from physgrad.layered import data
from physgrad.layered.data import FILES, download
from physgrad.runs import (LOCK, MARKER, CorruptRunError, MetricsLog, RunFolder, RunFolderError, RunLockedError,
                           atomic_write, load_checkpoint, save_checkpoint)
from physgrad.types import PhysgradError
from verification.fuzz import snapshot  # noqa: F401  (imported from here by other tests)

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


HOLDER = textwrap.dedent("""
    import sys, time
    from physgrad.runs import RunFolder
    f = RunFolder.claim(sys.argv[1], sys.argv[2], overwrite=True, reentrant=True, command="holder")
    print("locked", flush=True)
    time.sleep(float(sys.argv[3]))
""")


def hold_lock(folder, kind="fit", seconds=60):
    """A real second process holding ``folder``'s lock; returns the Popen (it prints 'locked' first)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), kind, str(seconds)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "locked", proc.stderr.read() if proc.poll() is not None else line
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)  # also closes the pipes


# --- atomic writes ----------------------------------------------------------------------------------
def test_atomic_write_never_follows_a_planted_symlink(tmp_path, monkeypatch):
    """A symlink planted at the temporary name the writer will try first is not followed."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    names = iter(["planted", "second", "third"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    (tmp_path / ".out.txt.planted.tmp").symlink_to(victim)
    runs.write_text(tmp_path / "out.txt", "new")
    assert victim.read_text() == "precious"
    assert (tmp_path / "out.txt").read_text() == "new"
    assert os.path.islink(tmp_path / ".out.txt.planted.tmp")  # left alone, not replaced either


def test_old_fixed_temporary_names_are_not_used(tmp_path):
    """The names the old code wrote through (``X.tmp``, ``X.tmp.npz``) are never opened."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"v")
    for name in ("results.csv.tmp", "metrics.csv.tmp", "checkpoint.npz.tmp.npz"):
        (tmp_path / name).symlink_to(victim)
    runs.write_text(tmp_path / "results.csv", "a\n")
    MetricsLog(tmp_path / "metrics.csv", ("epoch", "x")).append({"epoch": 1, "x": 2.0})
    save_checkpoint(tmp_path / "checkpoint.npz", {"a": np.arange(3)})
    assert victim.read_bytes() == b"v"
    assert load_checkpoint(tmp_path / "checkpoint.npz")["a"].tolist() == [0, 1, 2]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(p, "w") as fh:
            fh.write("half")
            raise RuntimeError("disk full")
    assert p.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["f.txt"]


def test_checkpoint_checksum_and_missing_keys(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, {"theta": np.ones(3), "epoch": np.int64(1)})
    assert load_checkpoint(p, required=("theta",))["epoch"] == 1
    with pytest.raises(CorruptRunError, match="missing key"):
        load_checkpoint(p, required=("opt_t",))
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(CorruptRunError, match="corrupted checkpoint"):
        load_checkpoint(p)


def test_metrics_log_keeps_rows_verbatim_and_names_the_line(tmp_path):
    p = tmp_path / "m.csv"
    log = MetricsLog(p, ("epoch", "a"), first=0)
    for e in range(3):
        log.append({"epoch": e, "a": e / 3})
    text = p.read_bytes().decode()
    again = MetricsLog(p, ("epoch", "a"), first=0)
    assert len(again.read(upto=1)) == 2 and again.needs_rewrite()
    again.rewrite()
    assert text.startswith(p.read_bytes().decode()) and len(p.read_text().splitlines()) == 3
    p.write_text(text.replace("\r\n2,", "\r\n7,"))
    with pytest.raises(CorruptRunError, match="line 4"):
        MetricsLog(p, ("epoch", "a"), first=0).read()


# --- claim and --overwrite ----------------------------------------------------------------------------
def test_foreign_non_empty_folder_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    before = snapshot(out)
    with pytest.raises(RunFolderError, match="not empty and not a fit run folder.*--overwrite"):
        RunFolder.claim(out, "fit", will_write=("config.json",))
    assert snapshot(out) == before


def test_overwrite_never_replaces_a_file_physgrad_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    (out / "notes.txt").write_text("keep")
    before = snapshot(out)
    with pytest.raises(RunFolderError, match="config.json was not written by physgrad"):
        RunFolder.claim(out, "fit", overwrite=True, will_write=("config.json", "metrics.csv"))
    assert snapshot(out) == before
    (out / "config.json").unlink()
    with RunFolder.claim(out, "fit", overwrite=True, will_write=("config.json", "metrics.csv")) as f:
        f.write_json("config.json", {"spec": {}})
        f.remove("notes.txt")  # not physgrad's: refused silently
    assert (out / "notes.txt").read_text() == "keep"
    assert json.loads((out / MARKER).read_text()) == {"kind": "fit", "files": ["config.json"]}
    assert not (out / LOCK).exists()


def test_a_run_of_another_kind_is_refused_even_with_overwrite(tmp_path):
    out = tmp_path / "r"
    with RunFolder.claim(out, "train") as f:
        f.write_json("config.json", {"config": {}, "preset": {}})
    for kwargs in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(RunFolderError, match="holds a train run"):
            RunFolder.claim(out, "fit", **kwargs)


def test_same_kind_with_a_checkpoint_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "r"
    with RunFolder.claim(out, "fit", run_files=("checkpoint.npz",)) as f:
        f.write_text("checkpoint.npz", "x")
    with pytest.raises(RunFolderError, match="already holds a run"):
        RunFolder.claim(out, "fit", run_files=("checkpoint.npz",))
    RunFolder.claim(out, "fit", run_files=("checkpoint.npz",), overwrite=True,
                    will_write=("checkpoint.npz",)).release()


def test_unreadable_marker_is_refused(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / MARKER).write_text("{garbage")
    with pytest.raises(RunFolderError, match="unreadable"):
        RunFolder.claim(out, "fit", resume=True)


# --- the lock ---------------------------------------------------------------------------------------
def test_second_writer_is_refused_naming_the_owner(tmp_path):
    out = tmp_path / "r"
    proc = hold_lock(out)
    try:
        with pytest.raises(RunLockedError, match=f"in use by pid {proc.pid} on "):
            RunFolder.claim(out, "fit", overwrite=True)
    finally:
        stop(proc)


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "r"
    proc = hold_lock(out)
    stop(proc)  # SIGKILL: no chance to remove its lock file
    assert json.loads((out / LOCK).read_text())["pid"] == proc.pid  # left behind by the killed owner
    notes = []
    f = RunFolder.claim(out, "fit", overwrite=True, log=notes.append)
    try:
        assert any("stale lock" in n and str(proc.pid) in n for n in notes)
        assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()
    finally:
        f.release()
    assert not (out / LOCK).exists()


def test_lock_file_symlink_is_not_followed(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("v")
    (out / LOCK).symlink_to(victim)
    with pytest.raises(RunFolderError, match="symbolic link"):
        RunFolder.claim(out, "fit", overwrite=True)
    assert victim.read_text() == "v"


def test_threads_of_one_process_exclude_each_other(tmp_path):
    out = tmp_path / "r"
    results = []
    barrier = threading.Barrier(4)

    def claim():
        barrier.wait()
        try:
            f = RunFolder.claim(out, "fit", overwrite=True, reentrant=True)
            results.append("ok")
            time.sleep(0.3)
            f.release()
        except RunLockedError:
            results.append("locked")
        except RunFolderError:  # the folder was created by another thread between the checks
            results.append("locked")

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") >= 1 and len(results) == 4
    assert not (out / LOCK).exists()


# --- download ---------------------------------------------------------------------------------------
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def server(data_dir):
    handler = lambda *a, **k: _Quiet(*a, directory=str(data_dir), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", Path(data_dir)
    finally:
        httpd.shutdown()
        httpd.server_close()


def _sums(root):
    return {s + ".gz": {"sha256": hashlib.sha256((root / (s + ".gz")).read_bytes()).hexdigest()}
            for s in FILES.values()}


def test_download_never_deletes_a_file_it_did_not_write(server, tmp_path, monkeypatch, capsys):
    url, root = server
    dest = tmp_path / "dl"
    dest.mkdir()
    mine = dest / "train-images-idx3-ubyte.gz"
    mine.write_bytes(b"my own file")
    monkeypatch.setitem(data.DATASETS, "mnist", data.DatasetSpec("mnist", (url,), _sums(root)))
    before = snapshot(dest)
    assert main(["download", "mnist", "--dest", str(dest)]) == 2
    err = capsys.readouterr().err
    assert str(mine) in err and "--force" in err and "Traceback" not in err
    assert snapshot(dest) == before  # nothing deleted, nothing downloaded
    # no network (a dead mirror) and --force: the file is still there
    monkeypatch.setitem(data.DATASETS, "mnist", data.DatasetSpec("mnist", ("http://127.0.0.1:9/",), _sums(root)))
    assert main(["download", "mnist", "--dest", str(dest), "--force"]) == 2
    assert mine.read_bytes() == b"my own file"
    # --force with a working mirror: replaced by the verified file only
    monkeypatch.setitem(data.DATASETS, "mnist", data.DatasetSpec("mnist", (url,), _sums(root)))
    assert main(["download", "mnist", "--dest", str(dest), "--force"]) == 0
    assert mine.read_bytes() == (root / mine.name).read_bytes()
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]


def test_download_does_not_follow_a_symlink_at_a_target_name(server, tmp_path):
    url, root = server
    dest = tmp_path / "dl"
    dest.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"v")
    (dest / "t10k-labels-idx1-ubyte.gz").symlink_to(victim)
    with pytest.raises(PhysgradError, match="symbolic link"):
        download("mnist", dest, mirrors=[url], checksums=_sums(root), quiet=True)
    download("mnist", dest, mirrors=[url], checksums=_sums(root), quiet=True, force=True)
    assert victim.read_bytes() == b"v"
    assert not (dest / "t10k-labels-idx1-ubyte.gz").is_symlink()


def test_download_caps_what_a_peer_sends(tmp_path, monkeypatch):
    """A mirror sending more than the cap is cut off (no file, no allocation by its Content-Length)."""
    class Endless(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 62))
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setattr(data, "MAX_DOWNLOAD_BYTES", 1 << 20)
    try:
        sums = {s + ".gz": {"sha256": "0" * 64} for s in FILES.values()}
        with pytest.raises(PhysgradError, match="more than 1 MB"):
            download("mnist", tmp_path / "dl", mirrors=[f"http://127.0.0.1:{httpd.server_address[1]}/"],
                     checksums=sums, quiet=True, timeout=10)
        assert os.listdir(tmp_path / "dl") == []
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_write_new_file_never_replaces_a_file_that_appeared(tmp_path):
    """The no-clobber write puts the file in place with os.link: a file, or a dangling symlink, that holds
    the name by then stays as it was (the pre-check alone left a window); with overwrite it is replaced
    atomically. Eight threads racing for one new name: exactly one wins, every other gets "exists"."""
    import threading

    from physgrad.runs import atomic_write, write_new_file

    target = tmp_path / "out.csv"
    with pytest.raises(PhysgradError, match="exists"):
        with atomic_write(target, "w", replace=False) as fh:
            fh.write("mine")
            target.write_text("the user's")  # appears after any pre-check
    assert target.read_text() == "the user's"
    link = tmp_path / "dangling.csv"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(PhysgradError, match="exists"):
        write_new_file(link, "x")
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()
    write_new_file(target, b"replaced", overwrite=True)
    assert target.read_bytes() == b"replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.csv", "out.csv"]  # no temporary left

    race = tmp_path / "race.csv"
    outcomes = []

    def writer(k):
        try:
            write_new_file(race, f"writer {k}\n")
            outcomes.append(("won", k))
        except PhysgradError as exc:
            outcomes.append(("lost", str(exc)))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [k for kind, k in outcomes if kind == "won"]
    assert len(won) == 1 and race.read_text() == f"writer {won[0]}\n"
    assert all("exists" in msg for kind, msg in outcomes if kind == "lost")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.csv", "out.csv", "race.csv"]


def test_a_second_signal_waits_for_the_end_of_a_critical_section():
    """fuzz_runs found a fit whose second Ctrl-C landed between the end-of-epoch checkpoint and its metrics
    row: the folder could not be resumed. A second signal inside StopFlag.critical() aborts only when the
    section ends (both writes done); outside one it aborts at once, as before."""
    import os
    import signal as sig

    from physgrad.runs import StopFlag

    done = []
    with StopFlag() as flag:
        os.kill(os.getpid(), sig.SIGINT)
        assert flag.stop and flag.signum == sig.SIGINT
        with pytest.raises(KeyboardInterrupt):
            with flag.critical():
                os.kill(os.getpid(), sig.SIGINT)  # the abort
                done.append("checkpoint")
                done.append("metrics row")
        assert done == ["checkpoint", "metrics row"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), sig.SIGINT)
            for _ in range(10 ** 6):  # the handler runs between bytecodes
                pass

"""Run a sweep on a Dask cluster (or a local process pool) with results that survive anything.

The sweep folder ``DIR`` holds:

* ``results.csv`` -- one row per attempt of a run: ``id, task, seed, params, status, final_error,
  best_error, epochs, seconds, run_dir, message, finished``. It is rewritten whole and replaced
  atomically (``os.replace``) after every row, by the driver only, so it is never half-written. The
  state of a run is its last row: ``ok`` runs are skipped when the same command runs again;
  ``error`` (the run raised, or its worker died) and ``unfinished`` runs are retried, resuming from
  their checkpoints.
* ``runs/<id>/`` -- each run's own folder (config, metrics, checkpoint, plot, ``log.txt``), ``id`` being
  :func:`physgrad.sweep.spec.task_id` of its parameters.
* ``summary.md`` and ``curves.png`` (:mod:`physgrad.sweep.summary`).

The folder is claimed and locked for the whole sweep (:class:`physgrad.runs.RunFolder`): a second
sweep into the same ``--out`` exits 2 naming the owner; a non-empty folder that is not a sweep folder
is refused unless ``overwrite`` (files physgrad did not write are never replaced). Every file is
written atomically (a unique temporary file, fsync, rename). SIGINT/SIGTERM: no new run starts, the
runs under way are told to save their checkpoints (a process pool's workers by a signal, Dask's by a
Dask ``Event``; their runs come back ``unfinished``), the rows so far are in ``results.csv`` and the
summary is written; then ``physgrad sweep`` exits 130/143.
A second Ctrl-C stops at once (runs not yet recorded are simply run again next time).

Engines: with ``scheduler=None`` a ``distributed.LocalCluster`` on 127.0.0.1 with ``workers``
single-threaded worker processes (BLAS at one thread: Dask's nannies set ``OMP_NUM_THREADS=1`` and
each run limits its own threads), or an existing scheduler (``scheduler="tcp://host:port"``) so the
same command runs on a real cluster. A run whose worker dies is recorded as an error row at once
(``distributed.scheduler.allowed-failures = 0`` on the local cluster; an external scheduler applies
its own setting). Without Dask installed (``pip install physgrad[dask]``), a local process pool.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Optional

from physgrad.runs import Rows, RunFolder, StopFlag, write_text
from physgrad.sweep.results import RESULT_FIELDS, RESULTS, latest, read_results
from physgrad.sweep.spec import SpecError, SweepSpec, task_id
from physgrad.sweep.summary import write_summary
from physgrad.sweep.tasks import RunResult, get_task
from physgrad.types import PhysgradError

STOP_GRACE_S = 60.0  # after SIGINT/SIGTERM, how long runs under way get to save before their workers are ended
CONNECT_TIMEOUT_S = 10.0
HANDSHAKE_TIMEOUT_S = 10.0


def execute(task_name: str, params: dict, run_dir: str, command: str, stop_event: Optional[str] = None) -> dict:
    """Run one sweep run in this (worker) process; exceptions become an error result (a dict).

    The run's own printed output goes to ``run_dir/log.txt``. ``stop_event``: the name of a Dask
    ``Event`` that the driver sets on SIGINT/SIGTERM; a Dask worker runs the task in a thread that gets
    no signals, so a watcher thread passes the request on (:func:`physgrad.runs.request_stop`) and the
    run saves its checkpoint and comes back ``unfinished``, as in a process pool.
    """
    task = get_task(task_name)
    t0 = time.perf_counter()
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    done = threading.Event()
    if stop_event is not None:  # the Dask Event is made here, in the task's thread, where the worker's client is known
        from distributed import Event, get_client

        event = Event(stop_event, client=get_client())
        threading.Thread(target=_watch_stop, args=(event, threading.get_ident(), done), daemon=True).start()
    try:
        with open(Path(run_dir) / "log.txt", "a") as log, contextlib.redirect_stdout(log):
            result = task.run(task.config(params), Path(run_dir), command)
    except KeyboardInterrupt:  # a second Ctrl-C inside the run: it kept its last checkpoint
        result = RunResult("unfinished", seconds=time.perf_counter() - t0, message="aborted (second interrupt)")
    except Exception as exc:  # a failing run is a row of the table, not the end of the sweep
        last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
        result = RunResult("error", seconds=time.perf_counter() - t0,
                           message=f"{type(exc).__name__}: {exc}{where}"[:500])
    finally:
        done.set()
    return result.__dict__.copy()


def _watch_stop(event, ident: int, done, poll_s: float = 0.5) -> None:
    """Until ``done`` is set: once the Dask ``event`` is set, ask the run in thread ``ident`` to stop
    (retrying until the run has entered its :class:`StopFlag`)."""
    import signal

    from physgrad.runs import request_stop

    try:
        while not done.is_set():
            if event.wait(timeout=poll_s):
                if request_stop(ident, signal.SIGTERM):
                    return
                done.wait(poll_s)
    except Exception:  # noqa: BLE001 -- the cluster is going away; the run ends with its worker
        return


def _write_results(out: Path, rows: list) -> None:
    """The whole table, written atomically (a unique temporary file in ``out``, fsync, rename)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RESULT_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(out / RESULTS, buf.getvalue())


def _row(task: str, run_id: str, params: dict, run_dir: Path, result: dict) -> dict:
    return {"id": run_id, "task": task, "seed": params["seed"],
            "params": json.dumps(params, sort_keys=True), "status": result["status"],
            "final_error": result["final_error"], "best_error": result["best_error"], "epochs": result["epochs"],
            "seconds": round(float(result["seconds"]), 3), "run_dir": str(run_dir), "message": result["message"],
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def plan(spec: SweepSpec, out) -> tuple:
    """``(todo, skipped)``: the runs still to do as ``(id, params)`` and the ids already ``ok``.

    Every run's configuration is validated first, so a bad option stops the sweep before it starts.
    """
    task = get_task(spec.task)
    task.check_types(spec)
    runs = spec.runs()
    for params in runs:
        try:
            task.config(params)
        except PhysgradError as exc:
            raise PhysgradError(f"{spec.source}: run {params}: {exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:  # a value of a type the option cannot take
            raise SpecError(f"{spec.source}: run {params}: {type(exc).__name__}: {exc}") from None
    state = latest(read_results(out))
    todo, skipped = [], []
    for params in runs:
        rid = task_id(spec.task, params)
        if state.get(rid, {}).get("status") == "ok":
            skipped.append(rid)
        else:
            todo.append((rid, params))
    return todo, skipped


def parse_scheduler(address) -> tuple:
    """``(scheme, host, port)`` of a Dask scheduler address ``[tcp://|tls://]host:port``.

    Raises
    ------
    PhysgradError
        Anything else (the message names the address and what is wrong).
    """
    import ipaddress
    import re

    text = str(address).strip()
    where = f"--scheduler {text[:80]!r}"
    if not text or len(text) > 300 or any(c.isspace() or not c.isprintable() for c in text):
        raise PhysgradError(f"{where}: not an address (expected tcp://host:port)")
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    if scheme not in ("tcp", "tls"):
        raise PhysgradError(f"{where}: scheme {scheme!r} is not tcp or tls (expected tcp://host:port)")
    if rest.startswith("["):
        host, sep, port = rest[1:].partition("]:")
        if not sep:
            raise PhysgradError(f"{where}: an IPv6 address is written [addr]:port")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise PhysgradError(f"{where}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port = rest.rpartition(":")
        if not sep:
            raise PhysgradError(f"{where}: no port (expected tcp://host:port)")
        if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?", host):
            raise PhysgradError(f"{where}: {host[:60]!r} is not a host name or IPv4 address")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise PhysgradError(f"{where}: port {port[:20]!r} is not a number in 1..65535")
    return scheme, host, int(port)


def probe_scheduler(address, connect_timeout: Optional[float] = None,
                    handshake_timeout: Optional[float] = None) -> str:
    """Check that a Dask scheduler answers at ``address`` before handing it to Dask; returns the
    address as ``scheme://host:port``.

    A Dask peer writes its handshake as soon as the connection opens: an 8-byte little-endian length
    and a message of that many bytes. This reads only the length (never allocates by it) and
    refuses a peer that does not connect within ``connect_timeout`` s, stays silent for
    ``handshake_timeout`` s, or announces an implausible message (junk, not Dask). Defaults:
    :data:`CONNECT_TIMEOUT_S`, :data:`HANDSHAKE_TIMEOUT_S` (10 s each).

    Raises
    ------
    PhysgradError
    """
    import socket
    import struct

    connect_timeout = CONNECT_TIMEOUT_S if connect_timeout is None else connect_timeout
    handshake_timeout = HANDSHAKE_TIMEOUT_S if handshake_timeout is None else handshake_timeout
    scheme, host, port = parse_scheduler(address)
    where = f"--scheduler {address}"
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise PhysgradError(f"{where}: cannot resolve {host!r} ({exc})") from None
    try:
        with socket.create_connection((host, port), timeout=connect_timeout) as sock:
            if scheme == "tls":  # the TLS handshake is Dask's; only check that the port accepts
                return f"{scheme}://{host}:{port}"
            sock.settimeout(handshake_timeout)
            head = b""
            while len(head) < 8:
                chunk = sock.recv(8 - len(head))
                if not chunk:
                    raise PhysgradError(f"{where}: the peer closed the connection without a handshake "
                                        f"(not a Dask scheduler?)")
                head += chunk
    except socket.timeout:
        raise PhysgradError(f"{where}: no Dask handshake within {handshake_timeout:g} s of connecting (or no "
                            f"connection within {connect_timeout:g} s); is it a Dask scheduler?") from None
    except OSError as exc:
        raise PhysgradError(f"{where}: cannot connect ({exc.strerror or exc})") from None
    (n,) = struct.unpack("<Q", head)
    if not 0 < n <= 1 << 20:
        raise PhysgradError(f"{where}: the peer's first message announces {n} bytes; not a Dask scheduler")
    return f"{scheme}://{host}:{port}" if ":" not in host else f"{scheme}://[{host}]:{port}"


def _dask_futures(todo, submit_args, workers: int, scheduler: Optional[str], flag):
    """Yield ``(id, result dict)`` as runs finish on a Dask cluster. When ``flag.stop`` is set, runs not
    started (no lock in their folder) are cancelled and the runs under way are asked to save, through a
    Dask ``Event`` (:func:`execute`): they come back ``unfinished`` within :data:`STOP_GRACE_S`, or
    their futures are dropped (their last checkpoints are kept; they run again next time)."""
    import logging
    import uuid

    import dask
    from distributed import Client, Event, LocalCluster, wait

    from physgrad.runs import read_lock

    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.comm.timeouts.connect": f"{int(CONNECT_TIMEOUT_S + HANDSHAKE_TIMEOUT_S)}s"}):
        if scheduler is None:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
            client = Client(cluster)
            client.register_plugin(_ignore_sigint_plugin(), name="physgrad-ignore-sigint")
        else:
            try:
                cluster, client = None, Client(scheduler, timeout=f"{int(CONNECT_TIMEOUT_S + HANDSHAKE_TIMEOUT_S)}s")
            except (OSError, TimeoutError) as exc:
                raise PhysgradError(f"--scheduler {scheduler}: {type(exc).__name__}: {exc}") from None
        try:
            stop_event = f"physgrad-stop-{uuid.uuid4().hex}"
            run_dirs = {rid: Path(submit_args(rid, params)[2]) for rid, params in todo}
            futures = {client.submit(execute, *submit_args(rid, params), stop_event, key=f"physgrad-run-{rid}",
                                     pure=False): rid for rid, params in todo}
            pending, stopped_at = set(futures), None
            while pending:
                try:
                    finished = wait(list(pending), timeout=0.2, return_when="FIRST_COMPLETED").done
                except TimeoutError:
                    finished = set()
                pending -= set(finished)
                for fut in finished:
                    if fut.cancelled():
                        continue
                    try:
                        yield futures[fut], fut.result()
                    except Exception as exc:  # KilledWorker, lost scheduler
                        yield futures[fut], RunResult(
                            "error", message=f"worker died: {type(exc).__name__}: {exc}"[:500]).__dict__
                if flag.stop and pending:
                    if stopped_at is None:
                        stopped_at = time.monotonic()
                        Event(stop_event, client=client).set()
                        idle = [f for f in pending if not read_lock(run_dirs[futures[f]])]
                        client.cancel(idle)
                        pending -= set(idle)
                    elif time.monotonic() - stopped_at > STOP_GRACE_S:
                        print(f"physgrad: {len(pending)} run(s) did not stop within {STOP_GRACE_S:g} s; they are "
                              f"left (their last checkpoints are kept; run the command again)", file=sys.stderr)
                        return
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _ignore_sigint_plugin():
    """A Dask worker plugin for the local cluster: its workers ignore SIGINT. A Ctrl-C typed in a
    terminal reaches every process of the foreground group; the driver passes it on as a stop request
    (a Dask ``Event``), so the runs save instead of losing their workers."""
    from distributed import WorkerPlugin

    class IgnoreSigint(WorkerPlugin):
        def setup(self, worker) -> None:
            import signal
            import threading

            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)

    return IgnoreSigint()


def _worker_init() -> None:
    """Pool workers remember SIGINT/SIGTERM until their run installs its handler, which then saves
    the checkpoint at once (:func:`physgrad.runs.defer_signals`); on Linux a worker whose driver dies
    (even by SIGKILL) gets SIGTERM, so no run is left going without its sweep."""
    import signal

    from physgrad.runs import defer_signals

    defer_signals()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
            if os.getppid() == 1:  # the driver died before the call
                os.kill(os.getpid(), signal.SIGTERM)


def _pool_futures(todo, submit_args, workers: int, flag):
    """Yield ``(id, result dict)`` from a local process pool (no Dask); a dead worker is an error row.
    When ``flag.stop`` is set, runs not started are cancelled and each worker that holds a run's lock
    (a run under way; the lock names its pid) is sent SIGINT once: it saves its checkpoint and comes
    back ``unfinished``. Workers still starting up are not signalled."""
    import multiprocessing
    import signal
    from concurrent.futures import wait

    from physgrad.runs import read_lock

    kwargs = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, **kwargs)
    run_dirs = {rid: Path(submit_args(rid, params)[2]) for rid, params in todo}
    cancelled, signalled, stopped_at = False, set(), None
    try:
        futures = {pool.submit(execute, *submit_args(rid, params)): rid for rid, params in todo}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when="FIRST_COMPLETED")
            for fut in finished:
                rid = futures[fut]
                if fut.cancelled():
                    continue
                try:
                    yield rid, fut.result()
                except Exception as exc:  # BrokenProcessPool: a worker died
                    yield rid, RunResult("error", message=f"worker died: {type(exc).__name__}: {exc}"[:500]).__dict__
            if flag.stop:
                if not cancelled:
                    cancelled, stopped_at = True, time.monotonic()
                    for f in pending:
                        f.cancel()
                elif pending and time.monotonic() - stopped_at > STOP_GRACE_S:
                    print(f"physgrad: {len(pending)} run(s) did not stop within {STOP_GRACE_S:g} s; their workers "
                          f"are terminated (their last checkpoints are kept; run the command again)", file=sys.stderr)
                    raise TimeoutError("workers did not stop")
                pids = {proc.pid for proc in list(getattr(pool, "_processes", {}).values())}
                for f in pending:  # tell the runs under way to save (once each)
                    pid = read_lock(run_dirs[futures[f]]).get("pid")
                    if pid in pids and pid not in signalled:
                        signalled.add(pid)
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGINT)
        pool.shutdown(wait=True)
    except BaseException as exc:  # a second Ctrl-C: stop the workers at once (their checkpoints are kept)
        for proc in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(OSError, AttributeError):
                proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        if not isinstance(exc, TimeoutError):
            raise


def have_dask() -> bool:
    """Whether ``dask.distributed`` is importable (the ``physgrad[dask]`` extra)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def run_sweep(spec: SweepSpec, out, *, workers: int = 2, scheduler: Optional[str] = None,
              engine: str = "auto", progress: Optional[bool] = None, overwrite: bool = False,
              summary: bool = False, command: Optional[str] = None,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Rows:
    """Run every run of ``spec`` not yet ``ok`` in ``out``; returns the current row of every run
    (:class:`physgrad.runs.Rows`: ``interrupted`` is the signal number when SIGINT/SIGTERM stopped it).

    Parameters
    ----------
    spec : SweepSpec
    out : path
        The sweep folder (created, claimed and locked for the sweep: :class:`physgrad.runs.RunFolder`).
    workers : int
        Local worker processes (one thread each); ignored with ``scheduler``.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:port``), checked first
        (:func:`probe_scheduler`: bounded connect and handshake times).
    engine : {"auto", "dask", "pool"}
        ``auto``: Dask when installed (always with ``scheduler``), else a local process pool.
    progress : bool, optional
        Progress bar over runs (default: when stderr is a terminal).
    overwrite : bool
        Use a non-empty folder that is not a sweep folder (files physgrad did not write are never
        replaced or deleted).
    summary : bool
        Also write ``summary.md`` and ``curves.png`` (under the lock).
    """
    if isinstance(workers, bool) or int(workers) < 1:
        raise PhysgradError(f"--workers must be >= 1, got {workers!r}")
    if engine not in ("auto", "dask", "pool"):
        raise PhysgradError(f"engine must be auto, dask or pool, got {engine!r}")
    if scheduler is not None:
        parse_scheduler(scheduler)
    if (engine == "dask" or scheduler) and not have_dask():
        raise PhysgradError("this needs Dask: pip install 'physgrad[dask]'")
    if scheduler and engine == "pool":
        raise PhysgradError("--scheduler needs the dask engine")
    use_dask = engine == "dask" or scheduler is not None or (engine == "auto" and have_dask())
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PhysgradError(f"--out {out} is a file, not a folder")
    get_task(spec.task)
    if out.is_dir():
        read_results(out)  # a damaged table is refused before the folder is claimed
    with StopFlag("no new run starts; running runs save their checkpoints") as stop:
        folder = RunFolder.claim(out, "sweep", overwrite=overwrite, reentrant=True, log=log,
                                 will_write=(RESULTS, "summary.md", "curves.png", "runs"),
                                 command=command or f"physgrad sweep {spec.source} --out {out}")
        try:
            return _run_sweep(spec, folder, workers, scheduler, use_dask, progress, summary, log, stop)
        finally:
            folder.release()


def _run_sweep(spec, folder, workers, scheduler, use_dask, progress, summary, log, stop) -> Rows:
    out = folder.path
    rows = read_results(out)
    todo, skipped = plan(spec, out)
    if scheduler is not None and todo:
        scheduler = probe_scheduler(scheduler)
    log(f"sweep {spec.source}: {len(todo) + len(skipped)} runs, {len(skipped)} already done, {len(todo)} to run "
        f"({'dask ' + (scheduler or f'local cluster, {workers} workers') if use_dask else f'process pool, {workers} workers'})")
    command = f"physgrad sweep {spec.source} --out {out}"

    def submit_args(rid, params):
        return spec.task, params, str((out / "runs" / rid).resolve()), command

    interrupted = None
    if todo and not stop.stop:
        from tqdm import tqdm

        show = sys.stderr.isatty() if progress is None else progress
        params_of = dict(todo)
        folder.file("runs").mkdir(exist_ok=True)
        with contextlib.nullcontext(stop) as flag:
            stream = _dask_futures(todo, submit_args, workers, scheduler, flag) if use_dask else \
                _pool_futures(todo, submit_args, workers, flag)
            with tqdm(total=len(todo), desc="runs", unit="run", disable=not show, file=sys.stderr) as bar:
                for rid, result in stream:
                    rows.append(_row(spec.task, rid, params_of[rid], out / "runs" / rid, result))
                    folder.file(RESULTS)
                    _write_results(out, rows)
                    bar.update(1)
                    if result["status"] != "ok":
                        log(f"run {rid} {result['status']}: {result['message']}")
    interrupted = stop.signum
    if summary:
        write_summary(out, title=str(spec.source), folder=folder)
    state = latest(rows)
    result = Rows(state[task_id(spec.task, p)] for p in spec.runs() if task_id(spec.task, p) in state)
    result.interrupted = interrupted
    return result

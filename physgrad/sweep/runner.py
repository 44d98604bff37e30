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
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed as pool_completed
from pathlib import Path
from typing import Callable, Optional

from physgrad.sweep.spec import SweepSpec, task_id
from physgrad.sweep.tasks import RunResult, get_task
from physgrad.types import PhysgradError

RESULTS = "results.csv"
RESULT_FIELDS = ("id", "task", "seed", "params", "status", "final_error", "best_error", "epochs", "seconds",
                 "run_dir", "message", "finished")


def execute(task_name: str, params: dict, run_dir: str, command: str) -> dict:
    """Run one sweep run in this (worker) process; exceptions become an error result (a dict).

    The run's own printed output goes to ``run_dir/log.txt``.
    """
    task = get_task(task_name)
    t0 = time.perf_counter()
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    try:
        with open(Path(run_dir) / "log.txt", "a") as log, contextlib.redirect_stdout(log):
            result = task.run(task.config(params), Path(run_dir), command)
    except Exception as exc:  # a failing run is a row of the table, not the end of the sweep
        last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
        result = RunResult("error", seconds=time.perf_counter() - t0,
                           message=f"{type(exc).__name__}: {exc}{where}"[:500])
    return result.__dict__.copy()


def read_results(out) -> list:
    """All rows of ``DIR/results.csv`` (attempts in order); a malformed file is refused."""
    path = Path(out) / RESULTS
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != RESULT_FIELDS:
            raise PhysgradError(f"{path}: not a physgrad sweep table (columns {reader.fieldnames}); "
                                f"use another --out")
        return list(reader)


def latest(rows: list) -> dict:
    """The last row of each run id (its current state)."""
    out = {}
    for r in rows:
        out[r["id"]] = r
    return out


def _write_results(out: Path, rows: list) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RESULT_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    tmp = out / (RESULTS + ".tmp")
    with open(tmp, "w", newline="") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out / RESULTS)


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
    runs = spec.runs()
    for params in runs:
        try:
            task.config(params)
        except PhysgradError as exc:
            raise PhysgradError(f"{spec.source}: run {params}: {exc}") from None
    state = latest(read_results(out))
    todo, skipped = [], []
    for params in runs:
        rid = task_id(spec.task, params)
        if state.get(rid, {}).get("status") == "ok":
            skipped.append(rid)
        else:
            todo.append((rid, params))
    return todo, skipped


def _dask_futures(todo, submit_args, workers: int, scheduler: Optional[str]):
    """Yield ``(id, result dict)`` as runs finish on a Dask cluster."""
    import logging

    import dask
    from distributed import Client, LocalCluster, as_completed

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        if scheduler is None:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
            client = Client(cluster)
        else:
            cluster, client = None, Client(scheduler, timeout="30s")
        try:
            futures = {client.submit(execute, *submit_args(rid, params), key=f"physgrad-run-{rid}", pure=False): rid
                       for rid, params in todo}
            for fut in as_completed(futures):
                rid = futures[fut]
                try:
                    yield rid, fut.result()
                except Exception as exc:  # KilledWorker, CancelledError, lost scheduler
                    yield rid, RunResult("error", message=f"worker died: {type(exc).__name__}: {exc}"[:500]).__dict__
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _pool_futures(todo, submit_args, workers: int):
    """Yield ``(id, result dict)`` from a local process pool (no Dask); a dead worker is an error row."""
    import multiprocessing

    kwargs = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"), **kwargs) as pool:
        futures = {pool.submit(execute, *submit_args(rid, params)): rid for rid, params in todo}
        for fut in pool_completed(futures):
            rid = futures[fut]
            try:
                yield rid, fut.result()
            except Exception as exc:  # BrokenProcessPool: a worker died
                yield rid, RunResult("error", message=f"worker died: {type(exc).__name__}: {exc}"[:500]).__dict__


def have_dask() -> bool:
    """Whether ``dask.distributed`` is importable (the ``physgrad[dask]`` extra)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def run_sweep(spec: SweepSpec, out, *, workers: int = 2, scheduler: Optional[str] = None,
              engine: str = "auto", progress: Optional[bool] = None,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> list:
    """Run every run of ``spec`` not yet ``ok`` in ``out``; returns the current row of every run.

    Parameters
    ----------
    spec : SweepSpec
    out : path
        The sweep folder (created).
    workers : int
        Local worker processes (one thread each); ignored with ``scheduler``.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:port``).
    engine : {"auto", "dask", "pool"}
        ``auto``: Dask when installed (always with ``scheduler``), else a local process pool.
    progress : bool, optional
        Progress bar over runs (default: when stderr is a terminal).
    """
    if isinstance(workers, bool) or int(workers) < 1:
        raise PhysgradError(f"--workers must be >= 1, got {workers!r}")
    if engine not in ("auto", "dask", "pool"):
        raise PhysgradError(f"engine must be auto, dask or pool, got {engine!r}")
    if (engine == "dask" or scheduler) and not have_dask():
        raise PhysgradError("this needs Dask: pip install 'physgrad[dask]'")
    if scheduler and engine == "pool":
        raise PhysgradError("--scheduler needs the dask engine")
    use_dask = engine == "dask" or scheduler is not None or (engine == "auto" and have_dask())
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PhysgradError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    rows = read_results(out)
    todo, skipped = plan(spec, out)
    log(f"sweep {spec.source}: {len(todo) + len(skipped)} runs, {len(skipped)} already done, {len(todo)} to run "
        f"({'dask ' + (scheduler or f'local cluster, {workers} workers') if use_dask else f'process pool, {workers} workers'})")
    command = f"physgrad sweep {spec.source} --out {out}"

    def submit_args(rid, params):
        return spec.task, params, str((out / "runs" / rid).resolve()), command

    if todo:
        from tqdm import tqdm

        show = sys.stderr.isatty() if progress is None else progress
        params_of = dict(todo)
        stream = _dask_futures(todo, submit_args, workers, scheduler) if use_dask else \
            _pool_futures(todo, submit_args, workers)
        with tqdm(total=len(todo), desc="runs", unit="run", disable=not show, file=sys.stderr) as bar:
            for rid, result in stream:
                rows.append(_row(spec.task, rid, params_of[rid], out / "runs" / rid, result))
                _write_results(out, rows)
                bar.update(1)
                if result["status"] != "ok":
                    log(f"run {rid} {result['status']}: {result['message']}")
    state = latest(rows)
    return [state[task_id(spec.task, p)] for p in spec.runs() if task_id(spec.task, p) in state]

"""What one run of a sweep executes: the commands a sweep can cross, as library calls.

Each :class:`Task` turns a run's parameters (a command's options, Python names) into that command's
validated configuration, runs it into a run folder (resuming from its checkpoint when one is there)
and summarises it for ``results.csv``. Runs execute in worker processes: everything here is
importable by name and keeps BLAS to the run's own thread count.
"""
from __future__ import annotations

import csv
import time
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Mapping, Optional

from physgrad.netlists.fit import CHECKPOINT as FIT_CHECKPOINT
from physgrad.netlists.fit import FitSpec, fit_run
from physgrad.layered.train import CHECKPOINT, TrainConfig, train
from physgrad.sweep.spec import SpecError


@dataclass(frozen=True)
class RunResult:
    """One finished or failed run, as a row of ``results.csv``.

    Attributes
    ----------
    status : {"ok", "unfinished", "error"}
    final_error, best_error : float
        Last and best test error (%) over the epochs run (NaN when none); for ``fit`` see
        :func:`fit_error`.
    epochs : int
        Epochs completed.
    seconds : float
        Wall time of this attempt (s).
    message : str
        The error, for error rows.
    """

    status: str
    final_error: float = float("nan")
    best_error: float = float("nan")
    epochs: int = 0
    seconds: float = 0.0
    message: str = ""


def read_curve(folder: Path) -> list:
    """``(epoch, test_error)`` pairs of a run folder's ``metrics.csv`` (empty when absent)."""
    path = Path(folder) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        points = [(int(float(r["epoch"])), float(r["test_error"]) if "test_error" in r else fit_error(r))
                  for r in csv.DictReader(fh)]
    return [(epoch, err) for epoch, err in points if err is not None]


def fit_error(row: Mapping) -> Optional[float]:
    """The error of one row of a ``physgrad fit`` ``metrics.csv``: the test error (%),
    ``100 (1 - test_accuracy)``, for a classifier; the test cost (the loss's mean) for a
    regression; the training columns when the run has no test set; None for an epoch that
    ``--eval-every`` did not evaluate (empty cells)."""
    split = "test" if "test_cost" in row else "train"
    acc, cost = row.get(f"{split}_accuracy"), row.get(f"{split}_cost")
    if acc not in (None, ""):
        return 100.0 * (1.0 - float(acc))
    return None if cost in (None, "") else float(cost)


def _train_config(params: Mapping) -> TrainConfig:
    valid = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(params) - valid)
    if unknown:
        raise SpecError(f"train has no option(s) {unknown}; valid: {sorted(valid - {'seed'})}")
    return TrainConfig(**params)


def _train_run(config: TrainConfig, out: Path, command: str) -> RunResult:
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    resume = (out / CHECKPOINT).exists()
    with threadpool_limits(config.threads):  # overwrite: the folder holds the sweep's log.txt, never replaced
        metrics = train(config, out, resume=resume, overwrite=not resume, progress=False, command=command)
    seconds = time.perf_counter() - t0
    errors = [m["test_error"] for m in metrics]
    done = (len(metrics) > 0 and int(metrics[-1]["epoch"]) >= config.resolved_preset.epochs
            and not metrics.interrupted)
    return RunResult("ok" if done else "unfinished", errors[-1] if errors else float("nan"),
                     min(errors) if errors else float("nan"), len(metrics), seconds)


def _kind(hint) -> tuple:
    """``(python types accepted, description)`` for a dataclass field's type hint, or None (unchecked)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return _kind(inner[0]) if len(inner) == 1 else None
    if origin is typing.Literal:
        return (str,), "one of " + ", ".join(map(str, args))
    if hint is bool:
        return (bool,), "true or false"
    if hint is int:
        return (int,), "an integer"
    if hint is float:
        return (int, float), "a number"
    if hint is str:
        return (str,), "a string"
    if hint is tuple or origin is tuple:
        return (list, str), "a list"
    return None


def check_types(cls, spec) -> None:
    """Every ``[base]`` value and every ``[grid]`` value of ``spec`` has the type of ``cls``'s field of
    that name (a TOML string where an integer belongs, a table where a number belongs, ...);
    :class:`SpecError` names the file, the section and the key."""
    hints = typing.get_type_hints(cls)
    for section, values in (("base", {k: [v] for k, v in spec.base.items()}), ("grid", spec.grid)):
        for key, vals in values.items():
            if key not in hints:
                continue  # unknown options are refused by the task's config, listing the valid ones
            kind = _kind(hints[key])
            if kind is None:
                continue
            types, what = kind
            if list in types and key not in ("inputs", "outputs"):  # comma-separated text only for names
                types = (list,)
            for v in vals:
                ok = (bool in types) if isinstance(v, bool) else isinstance(v, types)
                if ok and isinstance(v, list):
                    ok = all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in v)
                if not ok:
                    raise SpecError(f"{spec.source}: [{section}] {key}: expected {what}, got {v!r} "
                                    f"({type(v).__name__})")


@dataclass(frozen=True)
class Task:
    """A command a sweep can run.

    Attributes
    ----------
    name : str
        The command (``physgrad NAME``).
    config : callable
        ``params -> config``: validates the options (raises :class:`SpecError` / ``PhysgradError``).
    run : callable
        ``(config, out, command) -> RunResult``: runs (or resumes) into folder ``out``.
    """

    name: str
    config: Callable
    run: Callable
    options: Optional[type] = None

    def check_types(self, spec) -> None:
        """:func:`check_types` against the command's options (:class:`SpecError` naming the key)."""
        if self.options is not None:
            check_types(self.options, spec)


def _fit_config(params: Mapping) -> FitSpec:
    """``physgrad fit``'s options (``inputs``/``outputs`` as lists or comma-separated text)."""
    d = dict(params)
    for key in ("inputs", "outputs"):
        if isinstance(d.get(key), str):
            d[key] = [s.strip() for s in d[key].split(",") if s.strip()]
    valid = {f.name for f in fields(FitSpec)}
    unknown = sorted(set(d) - valid)
    if unknown:
        raise SpecError(f"fit has no option(s) {unknown}; valid: {sorted(valid - {'seed'})}")
    return FitSpec.from_dict(d)


def _fit_run(spec: FitSpec, out: Path, command: str) -> RunResult:
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    resume = (out / FIT_CHECKPOINT).exists()
    with threadpool_limits(1):
        rows = fit_run(spec, out, resume=resume, overwrite=not resume, progress=False, command=command)
    errors = [e for e in map(fit_error, rows) if e is not None]
    done = len(rows) > 0 and int(rows[-1]["epoch"]) >= spec.epochs and not rows.interrupted
    return RunResult("ok" if done else "unfinished", errors[-1] if errors else float("nan"),
                     min(errors) if errors else float("nan"), len(rows) - 1, time.perf_counter() - t0)


TASKS = {"train": Task("train", _train_config, _train_run, TrainConfig),
         "fit": Task("fit", _fit_config, _fit_run, FitSpec)}


def get_task(name: str) -> Task:
    """The task called ``name``; unknown names raise an error listing the valid ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise SpecError(f"unknown task {name!r}; valid: {', '.join(TASKS)}") from None

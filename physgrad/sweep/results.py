"""``results.csv`` of a sweep folder: one row per attempt of a run, read back with every line checked.

Columns :data:`RESULT_FIELDS`; the state of a run is its last row (:func:`latest`). The table is
written by :mod:`physgrad.sweep.runner` only (atomically, whole).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from physgrad.runs import CorruptRunError, read_regular
from physgrad.sweep.spec import task_id

RESULTS = "results.csv"
RESULT_FIELDS = ("id", "task", "seed", "params", "status", "final_error", "best_error", "epochs", "seconds",
                 "run_dir", "message", "finished")
STATUSES = ("ok", "unfinished", "error")
MAX_RESULTS_BYTES = 256 << 20  # a larger table is not one a sweep wrote
MAX_FIELD = 1 << 20  # bytes per field


def read_results(out) -> list:
    """All rows of ``DIR/results.csv`` (attempts in order).

    Raises
    ------
    CorruptRunError
        Not a physgrad sweep table, or a line that cannot be one of its rows (the message names
        the file and line).
    """
    path = Path(out) / RESULTS
    if not path.exists() and not path.is_symlink():
        return []
    try:
        text = read_regular(path, MAX_RESULTS_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptRunError(f"{path}: cannot read it ({type(exc).__name__}: {exc}); use another --out") from None
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(MAX_FIELD)
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise CorruptRunError(f"{path} line 1: {exc}") from None
        if tuple(header or ()) != RESULT_FIELDS:
            raise CorruptRunError(f"{path}: not a physgrad sweep table (columns {header}); use another --out")
        rows = []
        while True:
            try:
                cells = next(reader, None)
            except csv.Error as exc:
                raise CorruptRunError(f"{path} line {reader.line_num}: {exc}") from None
            if cells is None:
                break
            rows.append(_check_row(dict(zip(RESULT_FIELDS, cells)), len(cells), path, reader.line_num))
    finally:
        csv.field_size_limit(limit)
    return rows


def _check_row(row: dict, n_cells: int, path: Path, line: int) -> dict:
    """One row of ``results.csv``, checked (:class:`CorruptRunError` naming the file and line)."""
    def bad(why):
        return CorruptRunError(f"{path} line {line}: {why}; the sweep table is damaged (repair or remove that line, "
                               f"or use another --out)")
    if n_cells != len(RESULT_FIELDS):
        raise bad(f"{n_cells} fields, expected {len(RESULT_FIELDS)}")
    if not (len(row["id"]) == 12 and all(c in "0123456789abcdef" for c in row["id"])):
        raise bad(f"id {row['id'][:40]!r} is not 12 hex digits")
    if row["status"] not in STATUSES:
        raise bad(f"status {row['status'][:40]!r} is not one of {', '.join(STATUSES)}")
    try:
        params = json.loads(row["params"])
    except (ValueError, RecursionError):
        raise bad("params is not JSON") from None
    if not isinstance(params, dict):
        raise bad("params is not a JSON object")
    if task_id(row["task"], params) != row["id"]:
        raise bad(f"id {row['id']} is not the id of its task and params")
    for k in ("final_error", "best_error", "seconds"):
        try:
            float(row[k])
        except ValueError:
            raise bad(f"{k} {row[k][:40]!r} is not a number") from None
    if not row["epochs"].isdigit():
        raise bad(f"epochs {row['epochs'][:40]!r} is not a count")
    return row


def latest(rows: list) -> dict:
    """The last row of each run id (its current state)."""
    out = {}
    for r in rows:
        out[r["id"]] = r
    return out

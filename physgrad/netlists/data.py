"""CSV datasets for ``physgrad fit``: one row per sample, columns named like the netlist's input
sources (values, V or A), output nodes (targets, V, for ``--loss mse``) or a label column.

Column names match case-insensitively (as netlist names do). Every error names the file and the
line (``file:line:``) or the column, and is a :class:`physgrad.types.PhysgradError` (exit code 2).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from physgrad.types import PhysgradError


class DataError(PhysgradError):
    """A malformed dataset; the message starts with ``file:line:`` or ``file:``."""


@dataclass(frozen=True)
class Table:
    """Numeric columns (float arrays, one value per row) and raw labels of one CSV file."""

    path: str
    columns: Mapping[str, np.ndarray]
    labels: Optional[tuple]
    lines: np.ndarray  # file line of each row

    @property
    def n_rows(self) -> int:
        return len(self.lines)

    def matrix(self, names: Sequence[str]) -> np.ndarray:
        """The columns ``names`` as a ``(n_rows, len(names))`` array."""
        return np.column_stack([self.columns[n] for n in names]) if names else np.zeros((self.n_rows, 0))


def read_table(path, numeric: Mapping[str, str], label: Optional[str] = None) -> Table:
    """Read ``path``; ``numeric`` maps each needed column (lower case) to what it is for (for the
    error message); ``label`` is the label column (any text), if any.

    Raises
    ------
    DataError
        Missing file or columns, duplicate column names, rows with the wrong number of fields,
        empty, non-numeric or non-finite cells, no data rows.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{p}: no such file") from None
    except UnicodeDecodeError:
        raise DataError(f"{p}: not a text (UTF-8) file") from None
    reader = csv.reader(text.splitlines())
    header = None
    for fields in reader:
        if fields and any(f.strip() for f in fields):
            header = [f.strip().lower() for f in fields]
            header_line = reader.line_num
            break
    if header is None:
        raise DataError(f"{p}:1: empty file (expected a header line with the column names)")
    seen = {}
    for i, name in enumerate(header):
        if not name:
            raise DataError(f"{p}:{header_line}: column {i + 1} has no name")
        if name in seen:
            raise DataError(f"{p}:{header_line}: column {name!r} appears twice")
        seen[name] = i
    needed = dict(numeric)
    if label is not None:
        needed[label] = "the class label"
    missing = [c for c in needed if c not in seen]
    if missing:
        what = "; ".join(f"{c!r} ({needed[c]})" for c in missing)
        raise DataError(f"{p}:{header_line}: missing column{'s' if len(missing) > 1 else ''} {what}; "
                        f"the columns are: {', '.join(header)}")
    values = {c: [] for c in numeric}
    labels = [] if label is not None else None
    lines = []
    for fields in reader:
        if not fields or not any(f.strip() for f in fields):
            continue
        line = reader.line_num
        if len(fields) != len(header):
            raise DataError(f"{p}:{line}: {len(fields)} fields, expected {len(header)} (as in the header)")
        for c in numeric:
            cell = fields[seen[c]].strip()
            if not cell:
                raise DataError(f"{p}:{line}: column {c!r} is empty")
            try:
                x = float(cell)
            except ValueError:
                raise DataError(f"{p}:{line}: column {c!r}: {cell!r} is not a number") from None
            if not math.isfinite(x):
                raise DataError(f"{p}:{line}: column {c!r} is not finite ({cell!r})")
            values[c].append(x)
        if label is not None:
            cell = fields[seen[label]].strip()
            if not cell:
                raise DataError(f"{p}:{line}: label column {label!r} is empty")
            labels.append(cell)
        lines.append(line)
    if not lines:
        raise DataError(f"{p}: no data rows after the header")
    return Table(str(p), {c: np.array(v) for c, v in values.items()}, None if labels is None else tuple(labels),
                 np.array(lines))


def class_names(labels: Sequence[str]) -> tuple:
    """The classes of training labels: ``0..K-1`` when every label is an integer >= 0 (as text),
    else the distinct labels sorted."""
    try:
        ints = [int(s) for s in labels]
    except ValueError:
        return tuple(sorted(set(labels)))
    if min(ints) < 0:
        return tuple(sorted(set(labels)))
    return tuple(str(k) for k in range(max(ints) + 1))


def encode_labels(table: Table, classes: Sequence[str]) -> np.ndarray:
    """Class indices of ``table.labels`` (an unknown label is an error naming its line)."""
    index = {c: k for k, c in enumerate(classes)}
    numeric = all(c.isdigit() for c in classes)
    out = np.empty(table.n_rows, dtype=np.int64)
    for i, (lab, line) in enumerate(zip(table.labels, table.lines)):
        key = str(int(lab)) if numeric and _is_int(lab) else lab
        if key not in index:
            raise DataError(f"{table.path}:{line}: label {lab!r} is not a class of the training data "
                            f"({', '.join(classes)})")
        out[i] = index[key]
    return out


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True

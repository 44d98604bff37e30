"""CSV datasets for ``physgrad fit``: one row per sample, columns named like the netlist's input
sources (values, V or A), output nodes (targets, V, for ``--loss mse``) or a label column.

Column names match case-insensitively (as netlist names do). Every error names the file and the
line (``file:line:``) or the column, and is a :class:`physgrad.types.PhysgradError` (exit code 2).

Only a regular file is read (a folder, ``/dev/zero``, a FIFO or a symbolic-link loop is refused
before anything is read), as UTF-8 text, within the :class:`CsvLimits`: bytes, rows, columns,
characters per field and classes (integer labels ``0..K-1`` make ``K`` classes, so one huge integer
label is refused rather than allocating ``K`` of them).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from physgrad.circuit.files import InputFileError, line_of, read_limited
from physgrad.types import BadArgumentError, PhysgradError


class DataError(PhysgradError):
    """A malformed dataset; the message starts with ``file:line:`` or ``file:``."""


@dataclass(frozen=True)
class CsvLimits:
    """Limits on a CSV dataset (keywords of :func:`read_table`).

    Attributes
    ----------
    max_bytes : int
        Size of the file (256 MiB).
    max_rows : int
        Data rows (10,000,000).
    max_columns : int
        Columns of the header (10,000).
    max_field_chars : int
        Characters of one field (131,072, the csv module's default limit).
    max_classes : int
        Classes of the label column (1,000): distinct labels, or ``K`` for integer labels
        ``0..K-1``.
    """

    max_bytes: int = 256 << 20
    max_rows: int = 10_000_000
    max_columns: int = 10_000
    max_field_chars: int = 131_072
    max_classes: int = 1_000

    def __post_init__(self):
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadArgumentError(f"CSV limit {name} must be an integer >= 1, got {value!r}")


DEFAULT_CSV_LIMITS = CsvLimits()


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


def _text(p: Path, max_bytes: int) -> str:
    """The UTF-8 text of the regular file ``p`` (a leading BOM dropped)."""
    try:
        data = read_limited(p, max_bytes)
    except InputFileError as exc:
        hint = " (raise it with max_bytes=...)" if "limit" in str(exc) else ""
        raise DataError(f"{p}: {exc}{hint}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = line_of(data, exc.start)
        col = exc.start - max(data.rfind(b"\n", 0, exc.start), data.rfind(b"\r", 0, exc.start))
        raise DataError(f"{p}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {col}); save the file "
                        "as UTF-8") from None
    nul = text.find("\x00")
    if nul >= 0:
        raise DataError(f"{p}:{text.count(chr(10), 0, nul) + 1}: NUL byte: not a text CSV file")
    return text


def _rows(reader, p: Path, limits: CsvLimits):
    """The non-blank rows of ``reader`` as ``(line, fields)``, csv errors and over-long fields
    named by their line."""
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{p}:{reader.line_num}: a field longer than {limits.max_field_chars:,} characters (raise "
                            "the limit with max_field_chars=...)" if "field larger" in str(exc)
                            else f"{p}:{reader.line_num}: malformed CSV ({exc})") from None
        if not fields or not any(f.strip() for f in fields):
            continue
        if max(map(len, fields)) > limits.max_field_chars:
            col = next(i for i, f in enumerate(fields) if len(f) > limits.max_field_chars) + 1
            raise DataError(f"{p}:{reader.line_num}: field {col} is longer than {limits.max_field_chars:,} characters "
                            "(raise the limit with max_field_chars=...)")
        yield reader.line_num, fields


def read_table(path, numeric: Mapping[str, str], label: Optional[str] = None, *,
               limits: Optional[CsvLimits] = None, **overrides) -> Table:
    """Read ``path``; ``numeric`` maps each needed column (lower case) to what it is for (for the
    error message); ``label`` is the label column (any text), if any. ``limits`` and keyword
    ``overrides`` (``max_bytes``, ``max_rows``, ``max_columns``, ``max_field_chars``,
    ``max_classes``) set the :class:`CsvLimits`.

    Raises
    ------
    DataError
        Missing or unreadable file (a folder, device, FIFO), non-UTF-8 or NUL bytes, a file over
        a limit, missing columns, duplicate column names, rows with the wrong number of fields,
        empty, non-numeric or non-finite cells, too many classes, no data rows.
    """
    if limits is None:
        limits = DEFAULT_CSV_LIMITS
    unknown = set(overrides) - set(CsvLimits.__dataclass_fields__)
    if unknown:
        raise BadArgumentError(f"unknown CSV limit(s) {sorted(unknown)}; the limits are "
                               f"{', '.join(CsvLimits.__dataclass_fields__)}")
    limits = replace(limits, **overrides) if overrides else limits
    p = Path(path)
    if limits.max_field_chars > csv.field_size_limit():  # the csv module's own limit (process-wide) stops first
        csv.field_size_limit(limits.max_field_chars)
    reader = csv.reader(io.StringIO(_text(p, limits.max_bytes), newline=""))
    rows = _rows(reader, p, limits)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{p}:1: empty file (expected a header line with the column names)")
    header_line, fields = first
    if len(fields) > limits.max_columns:
        raise DataError(f"{p}:{header_line}: {len(fields):,} columns, more than the limit of {limits.max_columns:,} "
                        "(raise it with max_columns=...)")
    header = [f.strip().lower() for f in fields]
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
        shown = ", ".join(header[:50]) + (f", ... ({len(header)} columns)" if len(header) > 50 else "")
        raise DataError(f"{p}:{header_line}: missing column{'s' if len(missing) > 1 else ''} {what}; "
                        f"the columns are: {shown}")
    values = {c: [] for c in numeric}
    labels = [] if label is not None else None
    lines = []
    for line, fields in rows:
        if len(fields) != len(header):
            raise DataError(f"{p}:{line}: {len(fields)} fields, expected {len(header)} (as in the header)")
        if len(lines) >= limits.max_rows:
            raise DataError(f"{p}:{line}: more than {limits.max_rows:,} data rows (raise the limit with max_rows=...)")
        for c in numeric:
            cell = fields[seen[c]].strip()
            if not cell:
                raise DataError(f"{p}:{line}: column {c!r} is empty")
            try:
                x = float(cell)
            except ValueError:
                raise DataError(f"{p}:{line}: column {c!r}: {cell[:40]!r} is not a number") from None
            if not math.isfinite(x):
                raise DataError(f"{p}:{line}: column {c!r} is not finite ({cell[:40]!r})")
            values[c].append(x)
        if label is not None:
            cell = fields[seen[label]].strip()
            if not cell:
                raise DataError(f"{p}:{line}: label column {label!r} is empty")
            labels.append(cell)
        lines.append(line)
    if not lines:
        raise DataError(f"{p}: no data rows after the header")
    if labels is not None:
        _check_classes(labels, lines, f"{p}", label, limits.max_classes)
    return Table(str(p), {c: np.array(v) for c, v in values.items()}, None if labels is None else tuple(labels),
                 np.array(lines))


def _int_label(s: str) -> Optional[int]:
    try:
        return int(s)
    except ValueError:  # not an integer, or more digits than int() reads
        return None


def _check_classes(labels, lines, where: str, column: str, max_classes: int) -> None:
    """Refuse labels that make more than ``max_classes`` classes (see :func:`class_names`), naming
    the line of the label that crosses the limit."""
    ints = [_int_label(s) for s in labels]
    if all(k is not None and k >= 0 for k in ints):
        i = max(range(len(ints)), key=ints.__getitem__)
        if ints[i] + 1 > max_classes:
            shown = labels[i] if len(labels[i]) <= 40 else f"{labels[i][:20]}... ({len(labels[i])} digits)"
            count = f"{ints[i] + 1:,}" if ints[i] < 10 ** 15 else "more than 10^15"
            raise DataError(f"{where}:{lines[i]}: label column {column!r}: integer label {shown} would make {count} "
                            f"classes (0 to the largest label); the limit is {max_classes:,} (raise it with "
                            "max_classes=...)")
        return
    distinct: set = set()
    for lab, line in zip(labels, lines):
        distinct.add(lab)
        if len(distinct) > max_classes:
            raise DataError(f"{where}:{line}: label column {column!r} holds more than {max_classes:,} distinct "
                            "labels (classes); raise the limit with max_classes=...")


def class_names(labels: Sequence[str], max_classes: int = DEFAULT_CSV_LIMITS.max_classes) -> tuple:
    """The classes of training labels: ``0..K-1`` when every label is an integer >= 0 (as text),
    else the distinct labels sorted. More than ``max_classes`` classes is a :class:`DataError`."""
    ints = [_int_label(s) for s in labels]
    if all(k is not None for k in ints) and ints and min(ints) >= 0:
        k = max(ints) + 1
        if k > max_classes:
            raise DataError(f"integer label {max(ints)} would make more than {max_classes:,} classes")
        return tuple(str(c) for c in range(k))
    names = sorted(set(labels))
    if len(names) > max_classes:
        raise DataError(f"{len(names):,} distinct labels: more than {max_classes:,} classes")
    return tuple(names)


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

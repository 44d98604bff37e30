"""Use a trained netlist: outputs for new inputs (``physgrad predict``).

A *model* is a circuit and the names that map data to it: the input sources (their values come from
the data's columns of the same names, V for voltage sources and A for current sources) and the output
nodes (their voltages, V, are the predictions). It comes from a ``physgrad fit`` run folder
(``trained.cir`` and the ``config.json`` that names inputs, outputs, loss and classes) or from a
netlist (inputs: the CSV columns named like the netlist's independent sources; outputs: its ``.target``
nodes unless named). Netlists give resistances in ohms; the circuits here hold conductances in S.

Each chunk of :data:`CHUNK` samples is one batched solve (:class:`CoContentMinimizer`), every
equilibrium KKT-certified; an uncertified one raises :class:`NotSolvedError` (exit 1). A circuit with
transistors (no co-content) is solved sample by sample by the MNA Newton route
(:class:`physgrad.netlists.trainable.SampleSolver`). A fit's trained sources are in its
``trained.cir``, so the model predicts with them.
"""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from physgrad.circuit import Circuit, CurrentSource, VoltageSource
from physgrad.netlists.data import DataError, encode_labels, read_table
from physgrad.netlists.grad import as_circuit
from physgrad.netlists.losses import Loss
from physgrad.netlists.trainable import SampleSolver, SourceModel, Trainables
from physgrad.runs import load_json
from physgrad.types import NotSolvedError, PhysgradError

CHUNK = 1024
"""Samples per batched solve."""
MAX_INPUT = 1e100
"""Largest input or target magnitude (V or A) read from a CSV: beyond it the co-content's and the RMSE's squares
overflow; refused (exit 2)."""


@dataclass(frozen=True)
class Model:
    """What a prediction needs.

    Attributes
    ----------
    circuit : Circuit
        Conductances in S.
    inputs : tuple of str
        Input source names (values from the data: V for voltage sources, A for current sources).
    outputs : tuple of str
        Output node names (predictions: their voltages, V).
    loss : Loss or None
        The fit's loss (how outputs become a class); None for a bare netlist without a label column.
    classes : tuple of str or None
        Class names, in output order for ``argmax``/``xent`` (or level order for ``levels``).
    label_column : str or None
        The column holding the true class, when the data has it.
    """

    circuit: Circuit
    inputs: tuple
    outputs: tuple
    loss: Optional[Loss] = None
    classes: Optional[tuple] = None
    label_column: Optional[str] = None


def sources_of(circuit: Circuit) -> tuple:
    """Names of the independent sources (the possible inputs), in netlist order."""
    return tuple(el.name for el in circuit.elements if isinstance(el, (VoltageSource, CurrentSource)))


def load_model(source, inputs: Optional[Sequence[str]] = None, outputs: Optional[Sequence[str]] = None,
               label_column: Optional[str] = None, columns: Optional[Sequence[str]] = None) -> Model:
    """A :class:`Model` from a ``physgrad fit`` run folder, a netlist path or text, or a Circuit.

    Parameters
    ----------
    source : str, os.PathLike or Circuit
        A run folder (holding ``trained.cir`` and ``config.json``), a netlist, or a Circuit (S).
    inputs, outputs : sequence of str, optional
        Override the input sources / output nodes. Defaults: the run's; for a netlist the sources
        named by ``columns`` (the data's header) and the ``.target`` nodes.
    label_column : str, optional
        The class column (a bare netlist then classifies by the largest output voltage).
    columns : sequence of str, optional
        The data's column names (lower case), for the default inputs.
    """
    lower = (lambda names: None if names is None else tuple(str(n).strip().lower() for n in names))
    inputs, outputs, label = lower(inputs), lower(outputs), None if label_column is None else label_column.strip().lower()
    if isinstance(source, (str, os.PathLike)) and not (isinstance(source, str) and "\n" in source) \
            and Path(source).is_dir():
        return _run_model(Path(source), inputs, outputs, label)
    circuit = as_circuit(source)
    if inputs is None:
        srcs = sources_of(circuit)
        inputs = tuple(s for s in srcs if columns is not None and s in set(columns))
        if not inputs:
            raise PhysgradError("no input: no data column is named like one of the netlist's independent sources "
                                f"({', '.join(srcs) or 'none'}); name them with --inputs")
    if outputs is None:
        outputs = tuple(t[0] for t in circuit.targets)
        if not outputs:
            raise PhysgradError("name the output nodes (--outputs N1,N2,...) or give the netlist .target lines")
    _check_names(circuit, inputs, outputs)
    loss = None
    if label is not None:
        loss = Loss("argmax", len(outputs), None, margin=0.0, temperature=1.0) if len(outputs) > 1 else None
        if loss is None:
            raise PhysgradError("--label-column with a bare netlist classifies by the largest output: it needs one "
                                "output node per class (a fit run folder also knows the levels loss)")
    return Model(circuit, inputs, outputs, loss, None, label)


def _check_names(circuit: Circuit, inputs, outputs) -> None:
    srcs = set(sources_of(circuit))
    for s in inputs:
        if s not in srcs:
            raise PhysgradError(f"unknown input source {s!r}; the netlist's independent sources are: "
                                f"{', '.join(sorted(srcs)) or '(none)'}")
    nodes = set(circuit.nodes)
    for n in outputs:
        if n not in nodes:
            raise PhysgradError(f"unknown output node {n!r}")
    for what, names in (("input source", inputs), ("output node", outputs)):
        if len(set(names)) != len(names):
            raise PhysgradError(f"an {what} is listed twice")


def _run_model(folder: Path, inputs, outputs, label) -> Model:
    cfg_path, net = folder / "config.json", folder / "trained.cir"
    if not net.is_file():
        raise PhysgradError(f"{folder}: not a fit run folder with a trained netlist (no trained.cir)")
    try:
        cfg = load_json(cfg_path)
        r = cfg["resolved"]
        kind, classes = r["loss"], r.get("classes")
        run_inputs, run_outputs = tuple(r["inputs"]), tuple(r["outputs"])
        loss = None
        if kind != "mse":
            loss = Loss(kind, len(classes), None if r.get("levels") is None else tuple(map(float, r["levels"])),
                        margin=float(r.get("margin") or 0.0), temperature=float(r.get("temperature") or 1.0))
    except FileNotFoundError:
        raise PhysgradError(f"{folder}: no config.json (a fit run folder holds one)") from None
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise PhysgradError(f"{cfg_path}: not a fit run's config ({type(exc).__name__}: {exc})") from None
    circuit = as_circuit(net)
    inputs, outputs = inputs or run_inputs, outputs or run_outputs
    _check_names(circuit, inputs, outputs)
    return Model(circuit, inputs, outputs, loss, None if classes is None else tuple(map(str, classes)),
                 label or r.get("label_column"))


def predict(model: Model, X) -> np.ndarray:
    """Output voltages (V), shape ``(n, n_out)``, for input values ``X`` (V or A), shape ``(n, n_in)``.

    Raises :class:`NotSolvedError` when an equilibrium is not certified.
    """
    from physgrad.energies.co_content import CoContentEnergy
    from physgrad.minimizers.co_content import CoContentMinimizer

    X = np.asarray(X, float)
    if X.ndim != 2 or X.shape[1] != len(model.inputs):
        raise PhysgradError(f"inputs must have shape (n, {len(model.inputs)}), got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise PhysgradError("inputs contain NaN or inf")
    big = np.argwhere(np.abs(X) > MAX_INPUT)
    if big.size:
        i, j = big[0]
        raise PhysgradError(f"row {i + 1}: input {model.inputs[j]} = {X[i, j]:.3g} exceeds {MAX_INPUT:.0e} in "
                            "magnitude (V or A)")
    if model.circuit.transistors:  # no co-content: one MNA solve per sample (the fit's adjoint route)
        energy = SourceModel(model.circuit, model.inputs, model.outputs, Trainables(()))
        theta, minimizer = energy.theta0(), SampleSolver()
    else:
        energy = CoContentEnergy(model.circuit, model.inputs, model.outputs,
                                 trainable=tuple(r.name for r in model.circuit.resistors)[:1] or None)
        theta, minimizer = energy.theta0(), CoContentMinimizer()
    outs = []
    for start in range(0, len(X), CHUNK):
        eq = minimizer.minimize(energy, theta, X[start:start + CHUNK])
        if not eq.converged:
            raise NotSolvedError(f"samples {start + 1}-{min(start + CHUNK, len(X))}: {eq.status}: {eq.message}")
        o = np.asarray(energy.outputs(eq.state), float)
        if not np.all(np.isfinite(o)):
            raise NotSolvedError(f"samples {start + 1}-{min(start + CHUNK, len(X))}: non-finite output voltages")
        outs.append(o)
    return np.concatenate(outs) if outs else np.zeros((0, len(model.outputs)))


@dataclass(frozen=True)
class Prediction:
    """Predictions for a table.

    Attributes
    ----------
    lines : (n,) int, the data file's line of each row
    outputs : (n, n_out) V
    predicted : (n,) class index, or None
    labels : (n,) true class index, or None
    metrics : dict -- ``rmse_V`` (with target columns, overall) and ``rmse_V_per_output``; ``accuracy``
        (with labels); every value finite (strict JSON)
    """

    model: Model
    lines: np.ndarray
    outputs: np.ndarray
    predicted: Optional[np.ndarray]
    labels: Optional[np.ndarray]
    targets: Optional[np.ndarray]
    metrics: dict


def header_of(path) -> tuple:
    """The lower-case column names of a CSV file's header (:class:`DataError` when unreadable):
    a regular file within the CSV reader's byte limit (:class:`physgrad.netlists.data.CsvLimits`)."""
    from physgrad.circuit.files import InputFileError, read_limited
    from physgrad.netlists.data import CsvLimits

    p = Path(path)
    try:
        first = read_limited(p, CsvLimits().max_bytes).decode("utf-8-sig").splitlines()[:1]
    except InputFileError as exc:
        raise DataError(f"{p}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text ({exc})") from None
    try:
        row = next(csv.reader(first), [])
    except csv.Error as exc:
        raise DataError(f"{p}:1: the header line is not CSV ({exc})") from None
    if not row:
        raise DataError(f"{p}:1: no header line")
    return tuple(c.strip().lower() for c in row)


def predict_table(model: Model, path) -> Prediction:
    """Predict every row of a CSV (columns named like the model's inputs), with RMSE when columns
    named like the output nodes hold targets (V) and accuracy when the label column is present."""
    cols = set(header_of(path))
    numeric = {s: f"value of input source {s}" for s in model.inputs}
    has_targets = all(n in cols for n in model.outputs)
    if has_targets:
        numeric.update({n: f"target of output node {n}" for n in model.outputs})
    label = model.label_column if model.label_column in cols and model.loss is not None else None
    table = read_table(path, numeric, label)
    X = _bounded(table, model.inputs, path, "V or A")
    out = predict(model, X)
    metrics, targets, predicted, labels = {"n": int(table.n_rows)}, None, None, None
    if has_targets:
        targets = _bounded(table, model.outputs, path, "V")
        per = np.sqrt(np.mean((out - targets) ** 2, axis=0))
        metrics["rmse_V"] = _finite(np.sqrt(np.mean((out - targets) ** 2)))
        metrics["rmse_V_per_output"] = {n: _finite(v) for n, v in zip(model.outputs, per)}
    if model.loss is not None and model.loss.classifies:
        predicted = model.loss.predict(out)
        if label is not None:
            classes = model.classes or tuple(str(k) for k in range(len(model.outputs)))
            labels = encode_labels(table, classes)
            metrics["accuracy"] = _finite(float(np.mean(predicted == labels)))
    return Prediction(model, table.lines, out, predicted, labels, targets, metrics)


def _bounded(table, names, path, unit: str) -> np.ndarray:
    """The columns ``names`` of ``table`` (n, len(names)); a value past :data:`MAX_INPUT` in magnitude
    is a :class:`DataError` naming the line and column (squares of such values overflow the RMSE)."""
    X = table.matrix(names)
    big = np.argwhere(np.abs(X) > MAX_INPUT)
    if big.size:
        i, j = big[0]
        raise DataError(f"{path}:{table.lines[i]}: column {names[j]} = {X[i, j]:.3g} exceeds {MAX_INPUT:.0e} "
                        f"in magnitude ({unit})")
    return X


def _finite(x) -> Optional[float]:
    x = float(x)
    return x if math.isfinite(x) else None


def predictions_csv(pred: Prediction) -> str:
    """The predictions as CSV text: ``line``, one column per output node (V, shortest exact repr),
    then ``predicted`` (class name) and ``label`` when classifying."""
    m = pred.model
    classes = m.classes or tuple(str(k) for k in range(len(m.outputs)))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["line", *m.outputs] + (["predicted"] if pred.predicted is not None else [])
               + (["label"] if pred.labels is not None else []))
    for i in range(len(pred.lines)):
        row = [int(pred.lines[i]), *(repr(float(v)) for v in pred.outputs[i])]
        if pred.predicted is not None:
            row.append(classes[int(pred.predicted[i])])
        if pred.labels is not None:
            row.append(classes[int(pred.labels[i])])
        w.writerow(row)
    return buf.getvalue()

"""``physgrad fit``: train a netlist's conductances on a CSV dataset, into a run folder.

Each named input source takes its value from the CSV column of the same name; with ``--loss mse``
each output node's target is the column named like the node, otherwise ``--label-column`` holds the
class and the loss (``levels``, ``argmax``, ``xent``, :mod:`physgrad.netlists.losses`) encodes it. The
netlist's ``.trainable`` line (default: every resistor) says what is trained, unless ``trainable``
(``--trainable GLOBS``, :mod:`physgrad.netlists.trainable`) names resistors and independent sources;
``bounds`` (``--bounds NAME=LO:HI``) is the box every step is projected onto. Trained sources and
circuits with transistors go the adjoint route (``method = "exact"``: a solve and an adjoint solve per
sample, :class:`~physgrad.netlists.trainable.SourceModel`). Otherwise every step is one
batched call of the learning rule (:mod:`physgrad.learning`) on the circuit's co-content
(:class:`~physgrad.energies.co_content.CoContentEnergy`, :class:`~physgrad.minimizers.co_content.CoContentMinimizer`:
one factorization shared by the samples and phases of the batch), an optimizer step
(:mod:`physgrad.learning.optim`) and a clip of the conductances into ``[g_min, g_max]``.

**Devices** (``device_model``, :mod:`physgrad.devices`; default ``"ideal"``, which leaves every line
above exactly as it is, bit for bit): the trainable conductances are devices. After the initial clip
``device.init`` draws each device's fixed properties (variability, stuck devices) from
``device_rng(seed, "init")`` and programs the initial conductances; after each optimizer step the
*request* ``clip(theta_opt, g_min, g_max) - theta`` goes to ``device.update`` (stream
``device_rng(seed, "update", n)``, ``n`` the number of updates so far), and the conductances are what
the devices then hold (their own bounds, levels, faults; ``[g_min, g_max]`` bounds the request only).
Every equilibrium (the learning rule's phases and the evaluation) is relaxed at ``device.read(theta)``
through :class:`~physgrad.devices.readout.ReadThrough`: with read noise one realisation per example
and per phase (``ReadNoise.resample = "phase"``) or per example through its phases (``"example"``),
training step ``n`` under key ``(0, n)``, evaluation under ``(1 + split, n, chunk start)``. Random
reads are relaxed example by example (each example its own conductances, so no factorization is
shared), which is slower but the same semantics. ``method = "exact"`` differentiates the network
it is given and is refused with a device that reads non-ideally (read noise or drift).

The run folder ``DIR`` (:class:`physgrad.runs.RunFolder`: claimed, locked, every file written atomically):

* ``config.json`` -- the resolved options (defaults filled in), classes, command line, versions and
  the SHA-256 of the netlist and data files;
* ``metrics.csv`` -- one row per epoch (``0`` = before training): ``epoch, train_cost, test_cost,
  train_accuracy, test_accuracy, seconds`` (costs are the loss's batch mean; accuracy columns where
  there are labels, test columns with ``--test``);
* ``checkpoint.npz`` -- conductances (and trained source values), optimizer state, the solver's warm-start sets, the device
  state (:func:`physgrad.runs.device_arrays`: ``device.*`` arrays and ``device_meta`` JSON) and the
  position (``epoch`` completed epochs, ``batch`` batches into the next), with the SHA-256 of its arrays
  (:func:`physgrad.runs.save_checkpoint`); after every epoch and on SIGINT/SIGTERM (the current batch
  finishes, the checkpoint is saved, ``physgrad fit`` exits 130/143). ``--resume`` checks the whole
  folder first (:class:`physgrad.runs.CorruptRunError`, exit 2, nothing changed) and continues bit for
  bit (the order of epoch ``e`` is ``default_rng([seed, e])`` and the batched solver's factor cache is
  cleared at each epoch start, so nothing outside the checkpoint steers the arithmetic);
* ``learning_curve.png``; ``trained.cir`` -- the trained netlist (:func:`physgrad.circuit.netlist.write_netlist`:
  runs in ngspice, reads back exactly), with the conductances the devices hold; not written (and
  the log says so) when a device holds 0 S, which a SPICE resistor cannot express.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np

from physgrad.circuit.elements import CurrentSource, VoltageSource
from physgrad.circuit.netlist import read_netlist, write_netlist
from physgrad.devices import Device, DeviceState, ReadThrough, device_from_spec, device_rng, device_to_dict
from physgrad.energies.co_content import CoContentEnergy
from physgrad.circuit.power import NODE_CAPACITANCE, SETTLING_MULTIPLE
from physgrad.netlists.data import class_names, encode_labels, read_table
from physgrad.netlists.energy import FitEnergyMeter
from physgrad.netlists.grad import BETA_FLOOR, EPS, NUDGED, check_beta, default_beta, output_conductance
from physgrad.netlists.losses import LOSSES, Loss
from physgrad.netlists.trainable import (AdjointEstimator, SampleSolver, SourceModel, Trainables, box, check_initial,
                                         needs_adjoint_route, parse_bound, select_trainable, unit_of)
from physgrad.learning import METHODS, make_estimator, optim
from physgrad.minimizers.co_content import CoContentMinimizer
from physgrad.runs import (CorruptRunError, MetricsLog, RunFolder, Rows, StopFlag, checkpoint_error, device_arrays,
                           finite_like, plot_curve, pop_device_state, read_json, scalar, versions)
from physgrad.runs import load_checkpoint as load_arrays
from physgrad.runs import progress as progress_bar
from physgrad.runs import save_checkpoint as save_arrays
from physgrad.types import NotSolvedError, PhysgradError

FIT_METHODS = tuple(m for m in METHODS if m not in ("tbp", "rbp"))
MAX_SPANS = 1e6
"""``--margin`` and ``--temperature`` (V) are refused above this many spans of the source voltages."""
CHECKPOINT = "checkpoint.npz"
TRAIN_READS, EVAL_READS = 0, 1
"""First entry of the :class:`ReadThrough` key of a training step ``(0, n)`` and of an evaluation
``(1 + split, n, chunk start)`` (split 0 train, 1 test), so no two reads share a realisation."""
EVAL_CHUNK = 1024  # samples per batched solve when evaluating a whole dataset


@dataclass(frozen=True)
class FitSpec:
    """The options of ``physgrad fit`` (``None``: a default scaled to the circuit and the data,
    resolved by :func:`resolve`).

    Attributes
    ----------
    netlist, data, test : paths (``test`` optional)
    inputs : source names; outputs : node names (default the ``.target`` nodes)
    label_column : the class column (classification), or None (regression on the output columns)
    loss : {"mse", "levels", "argmax", "xent"}; default ``mse``, or ``argmax`` with a label column
    method : {"exact", "pep", "nep", "cep", "cl", "pcpl", "ncpl", "ccpl"}
    beta : EP nudge (S); default :func:`physgrad.netlists.grad.default_beta` (1e-4 x the median
        conductance of all resistors, as ``physgrad grad``); refused below the round-off floor
    eta : coupled-learning amplitude (dimensionless, the fraction of the way to the target)
    optimizer : {"sgd", "momentum", "adam"}; lr : learning rate (adam: S per step, default 0.01 x
        the median conductance; sgd/momentum: S^2/V^2, default 0.05 g^2/V^2 with g the median
        conductance and V the span of the source voltages)
    g_min, g_max : conductance bounds (S); default 1e-3 x the median conductance and none
    epochs, batch_size, seed : the schedule; the order of epoch ``e`` is ``default_rng([seed, e])``
    levels : class voltages of ``levels`` (V); default evenly inside the span of the sources
    margin : ``argmax`` margin (V), default 5 % of the span; temperature : ``xent`` (V), default 5 %
    device_model : a preset name or a JSON/TOML file (:func:`physgrad.devices.device_from_spec`);
        default ``"ideal"`` (no device effects, bit for bit the plain optimizer)
    eval_every : evaluate the whole training (and test) set every this many epochs, and after the
        last (default 1). Every epoch's row also has ``train_cost_in_epoch``: the mean loss of the
        epoch's own free phases (each batch at the parameters before its update), which costs nothing.
    energy : record the physical energy per example (:class:`physgrad.netlists.energy.FitEnergyMeter`):
        columns ``energy_free_J``, ``energy_nudged_J``, ``energy_program_J`` (module docstring)
    node_capacitance : F per node (default :data:`physgrad.circuit.power.NODE_CAPACITANCE`, 1 pF);
        settling_multiple : RC time constants per phase (default 5); used with ``energy``
    trainable : globs over element names (:func:`physgrad.netlists.trainable.select_trainable`):
        resistors and independent sources to train; None (default): the netlist's ``.trainable``
        resistors (every resistor without the line)
    bounds : ``"NAME=LO:HI"`` texts (NAME a name or glob; V, A, or S for resistors), projected onto
        after every step (:func:`physgrad.netlists.trainable.box`)
    source_lr : learning rate of the trained sources (adam: V or A per step, default 0.01 x the
        span of the source voltages; sgd/momentum: V/V, default 0.05)
    """

    netlist: str
    data: str
    inputs: tuple
    test: Optional[str] = None
    outputs: Optional[tuple] = None
    label_column: Optional[str] = None
    loss: Optional[str] = None
    method: str = "cep"
    beta: Optional[float] = None
    eta: float = 0.1
    optimizer: str = "adam"
    lr: Optional[float] = None
    g_min: Optional[float] = None
    g_max: Optional[float] = None
    epochs: int = 20
    batch_size: int = 32
    seed: int = 0
    levels: Optional[tuple] = None
    margin: Optional[float] = None
    temperature: Optional[float] = None
    device_model: str = "ideal"
    eval_every: int = 1
    energy: bool = False
    node_capacitance: float = NODE_CAPACITANCE
    settling_multiple: float = SETTLING_MULTIPLE
    trainable: Optional[tuple] = None
    bounds: tuple = ()
    source_lr: Optional[float] = None

    def __post_init__(self):
        if self.method not in FIT_METHODS:
            raise PhysgradError(f"method must be one of {', '.join(FIT_METHODS)}; got {self.method!r}")
        if self.loss is not None and self.loss not in LOSSES:
            raise PhysgradError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if self.optimizer not in optim.OPTIMIZERS:
            raise PhysgradError(f"optimizer must be one of {', '.join(optim.OPTIMIZERS)}; got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise PhysgradError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise PhysgradError(f"seed must be an integer >= 0, got {self.seed!r}")
        for name in ("beta", "eta", "lr", "g_max", "margin", "temperature", "source_lr"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise PhysgradError(f"{name} must be a finite number > 0, got {v!r}")
        if self.g_min is not None and not (np.isfinite(self.g_min) and self.g_min >= 0):
            raise PhysgradError(f"g_min must be a finite number >= 0, got {self.g_min!r}")
        if not self.inputs:
            raise PhysgradError("name the input sources (--inputs V1,V2,...)")
        if self.trainable is not None and (isinstance(self.trainable, str) or not self.trainable
                                           or not all(isinstance(t, str) and t.strip() for t in self.trainable)):
            raise PhysgradError(f"trainable must be a non-empty sequence of names or globs, got {self.trainable!r}")
        if isinstance(self.bounds, str) or not all(isinstance(b, str) for b in self.bounds):
            raise PhysgradError(f"bounds must be a sequence of 'NAME=LO:HI' texts, got {self.bounds!r}")
        for b in self.bounds:
            parse_bound(b)  # a clear error for a malformed bound, before anything is read
        if not isinstance(self.device_model, str) or not self.device_model.strip():
            raise PhysgradError(f"device_model must be a preset name or a .json/.toml file, got {self.device_model!r}")
        for name in ("node_capacitance", "settling_multiple"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0 or (
                    name == "settling_multiple" and v == 0):
                raise PhysgradError(f"{name} must be a finite number {'> 0' if name == 'settling_multiple' else '>= 0 F'}, "
                                    f"got {v!r}")
        device = device_from_spec(self.device_model)  # raises a clear PhysgradError for a bad name or file
        if self.method == "exact" and not device.reads_ideally:
            raise PhysgradError(f"method 'exact' differentiates the network it is given; device model "
                                f"{device.label!r} reads its conductances non-ideally (read noise or drift): "
                                "use an EP or coupled-learning method")

    @classmethod
    def from_dict(cls, d: dict) -> "FitSpec":
        valid = {f.name for f in fields(cls)}
        unknown = set(d) - valid
        if unknown:
            raise PhysgradError(f"unknown fit option(s) {sorted(unknown)}")
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**d)


@dataclass
class FitProblem:
    """A resolved fit: the circuit's energy, the data as arrays, the loss, and the filled-in options."""

    spec: FitSpec
    energy: CoContentEnergy
    loss: Loss
    X: np.ndarray
    Y: np.ndarray  # targets (mse) or class indices
    X_test: Optional[np.ndarray]
    Y_test: Optional[np.ndarray]
    classes: Optional[tuple]
    resolved: dict
    device: Device
    trainables: Trainables = Trainables(())
    lo: Optional[np.ndarray] = None  # projection box of theta (S, V, A), shape (n_params,)
    hi: Optional[np.ndarray] = None
    adjoint: bool = False  # the per-sample adjoint route (SourceModel): transistors or trained sources


def _file_digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _names(circuit, inputs, outputs):
    sources = {el.name for el in circuit.elements if isinstance(el, (VoltageSource, CurrentSource))}
    ins = tuple(str(s).strip().lower() for s in inputs)
    for s in ins:
        if s not in sources:
            raise PhysgradError(f"unknown input source {s!r} in --inputs; the netlist's independent sources are: "
                                f"{', '.join(sorted(sources)) or '(none)'}")
    if len(set(ins)) != len(ins):
        raise PhysgradError("an input source is listed twice in --inputs")
    if outputs is None:
        outs = tuple(t[0] for t in circuit.targets)
        if not outs:
            raise PhysgradError("name the output nodes (--outputs N1,N2,...) or give the netlist .target lines")
    else:
        outs = tuple(str(n).strip().lower() for n in outputs)
    nodes = set(circuit.nodes)
    for n in outs:
        if n not in nodes:
            raise PhysgradError(f"unknown output node {n!r} in --outputs; the netlist's nodes are: "
                                f"{', '.join(list(circuit.nodes)[:30])}{' ...' if len(nodes) > 30 else ''}")
    if len(set(outs)) != len(outs):
        raise PhysgradError("an output node is listed twice in --outputs")
    return ins, outs


def resolve(spec: FitSpec) -> FitProblem:
    """Read the netlist and data, check them against each other, fill in the defaults."""
    circuit = read_netlist(spec.netlist)
    inputs, outputs = _names(circuit, spec.inputs, spec.outputs)
    label = None if spec.label_column is None else spec.label_column.strip().lower()
    loss_kind = spec.loss or ("argmax" if label is not None else "mse")
    if loss_kind == "mse" and label is not None:
        raise PhysgradError("--loss mse takes its targets from the output-node columns; with --label-column "
                            "choose --loss levels, argmax or xent")
    if loss_kind != "mse" and label is None:
        raise PhysgradError(f"--loss {loss_kind} classifies: name the class column with --label-column")
    for option, owner in (("levels", "levels"), ("margin", "argmax"), ("temperature", "xent")):
        if getattr(spec, option) is not None and loss_kind != owner:  # it would be ignored
            raise PhysgradError(f"--{option} is a parameter of --loss {owner}; the loss here is {loss_kind}")
    numeric = {s: f"value of input source {s}" for s in inputs}
    if loss_kind == "mse":
        numeric.update({n: f"target of output node {n}" for n in outputs})
    train = read_table(spec.data, numeric, label)
    test = read_table(spec.test, numeric, label) if spec.test else None
    X = train.matrix(inputs)
    X_test = test.matrix(inputs) if test else None
    classes = None
    if label is None:
        Y = train.matrix(outputs)
        Y_test = test.matrix(outputs) if test else None
    else:
        classes = class_names(train.labels)
        Y = encode_labels(train, classes)
        Y_test = encode_labels(test, classes) if test else None
    tr = select_trainable(circuit, spec.trainable, inputs)
    if not tr.names:
        raise PhysgradError("nothing to train: the netlist has no (trainable) resistor; name what to train with "
                            "--trainable")
    _check_used(spec, tr)
    device = device_from_spec(spec.device_model)
    adjoint = needs_adjoint_route(circuit, tr)
    if adjoint:
        _check_adjoint_route(circuit, tr, spec, device)
        energy = SourceModel(circuit, inputs, outputs, tr)
        g0 = energy.theta0()[:len(tr.resistors)]
        if not g0.size:
            g0 = np.array([r.conductance for r in circuit.resistors], float)
    else:
        energy = CoContentEnergy(circuit, inputs, outputs, trainable=None if spec.trainable is None else tr.resistors)
        g0 = energy.theta0()
    g_med = float(np.median(g0[g0 > 0])) if np.any(g0 > 0) else 1.0
    # span of the source voltages: fixed sources, the inputs in the data, and ground
    fixed = [el.value for el in circuit.elements if isinstance(el, VoltageSource) and el.name not in inputs]
    vin = [X[:, j] for j, s in enumerate(inputs) if isinstance(circuit.element(s), VoltageSource)]
    allv = np.concatenate([np.asarray(fixed + [0.0], float)] + [np.asarray(v) for v in vin])
    v_lo, v_hi = float(np.min(allv)), float(np.max(allv))
    span = v_hi - v_lo if v_hi > v_lo else 1.0
    n_out = len(outputs)
    K = 0 if classes is None else len(classes)
    levels = spec.levels
    if loss_kind == "levels":
        if n_out != 1:
            raise PhysgradError(f"--loss levels predicts with one output node; got {n_out} ({', '.join(outputs)})")
        if levels is None:
            levels = tuple(v_lo + span * (k + 1) / (K + 1) for k in range(K))
        elif len(levels) != K:
            raise PhysgradError(f"--levels gives {len(levels)} voltages for {K} classes")
    elif loss_kind in ("argmax", "xent") and n_out != K:
        raise PhysgradError(f"--loss {loss_kind} needs one output node per class: {K} classes "
                            f"({', '.join(classes)}) but {n_out} outputs ({', '.join(outputs)})")
    for option in ("margin", "temperature"):  # in V: beyond 1e6 spans it only overflows the targets
        value = getattr(spec, option)
        if value is not None and value > MAX_SPANS * span:
            raise PhysgradError(f"--{option} {value:g} V is more than {MAX_SPANS:g} times the span of the source "
                                f"voltages ({span:g} V)")
    loss = Loss(loss_kind, K, None if levels is None else tuple(float(v) for v in levels),
                margin=spec.margin if spec.margin is not None else 0.05 * span,
                temperature=spec.temperature if spec.temperature is not None else 0.05 * span)
    lr = spec.lr
    if lr is None:
        lr = 0.01 * g_med if spec.optimizer == "adam" else 0.05 * g_med**2 / span**2
    source_lr = None
    if tr.sources:
        source_lr = spec.source_lr if spec.source_lr is not None else (0.01 * span if spec.optimizer == "adam" else 0.05)
    resolved = {
        "inputs": list(inputs), "outputs": list(outputs), "label_column": label, "loss": loss_kind,
        "method": spec.method, "beta": spec.beta if spec.beta is not None else default_beta(circuit), "eta": spec.eta,
        "optimizer": spec.optimizer, "lr": lr,
        "g_min": spec.g_min if spec.g_min is not None else 1e-3 * g_med,
        "g_max": spec.g_max, "epochs": int(spec.epochs), "batch_size": int(spec.batch_size), "seed": int(spec.seed),
        "levels": None if loss.levels is None else list(loss.levels), "margin": loss.margin if loss_kind == "argmax" else None,
        "temperature": loss.temperature if loss_kind == "xent" else None, "classes": None if classes is None else list(classes),
        "median_conductance_S": g_med, "source_span_V": [v_lo, v_hi], "trainable": list(energy.param_names),
        "n_train": int(X.shape[0]), "n_test": None if X_test is None else int(X_test.shape[0]),
        "device": device_to_dict(device),
        "trainable_sources": list(tr.sources), "source_lr": source_lr,
        "route": "adjoint (one MNA solve and one adjoint solve per sample)" if adjoint else "co-content (batched)",
    }
    if spec.method in NUDGED:  # the nudge must move the outputs by more than round-off (at |y - v| ~ V)
        check_beta(resolved["beta"], BETA_FLOOR * EPS * output_conductance(circuit, outputs), "beta")
    if resolved["g_max"] is not None and resolved["g_max"] <= resolved["g_min"]:
        raise PhysgradError(f"g_max ({resolved['g_max']} S) must exceed g_min ({resolved['g_min']} S)")
    lo, hi, explicit = box(circuit, tr, spec.bounds, resolved["g_min"], resolved["g_max"])
    units = tuple(unit_of(circuit.element(n)) for n in tr.names)
    check_initial(energy.theta0(), tr.names, explicit, units)
    resolved["bounds"] = {n: [b[0], b[1], u] for n, b, u in
                          ((n, explicit[n], u) for n, u in zip(tr.names, units) if n in explicit)}
    return FitProblem(spec, energy, loss, X, Y, X_test, Y_test, classes, resolved, device, tr, lo, hi, adjoint)


def _check_used(spec: FitSpec, tr: Trainables) -> None:
    """Refuse an option that this fit would ignore: ``beta`` with a method that does not nudge,
    ``source_lr`` with no trained source, ``lr``/``g_min``/``g_max`` with no trained resistor."""
    if spec.beta is not None and spec.method not in NUDGED:
        raise PhysgradError(f"--beta is the nudge of EP ({', '.join(m for m in NUDGED if m in FIT_METHODS)}); "
                            f"method {spec.method} has none")
    if spec.source_lr is not None and not tr.sources:
        raise PhysgradError("--source-lr is the learning rate of trained sources; none is trained here (name them "
                            "with --trainable)")
    if not tr.resistors:
        given = [f"--{n.replace('_', '-')}" for n in ("lr", "g_min", "g_max") if getattr(spec, n) is not None]
        if given:
            raise PhysgradError(f"{', '.join(given)}: no resistor is trained here ({', '.join(tr.names)}); the "
                                "sources' learning rate is --source-lr and their bounds --bounds")


def _check_adjoint_route(circuit, tr: Trainables, spec: FitSpec, device: Device) -> None:
    """The adjoint route trains with ``method = "exact"`` and ideal devices only (refused naming why)."""
    why = (f"the circuit has transistors ({', '.join(t.name for t in circuit.transistors[:5])}), which have no "
           "co-content" if circuit.transistors else
           f"source {tr.sources[0]!r} is trainable (--trainable), and a source value is not a conductance")
    if spec.method != "exact":
        raise PhysgradError(f"--method {spec.method}: {why}; EP and coupled learning do not apply, so fit trains it "
                            "with --method exact (the adjoint of the MNA equations, one solve per sample)")
    if not device.is_ideal:
        raise PhysgradError(f"--device-model {spec.device_model!r}: {why}; fit trains such circuits with the ideal "
                            "device only")
    if spec.energy:
        raise PhysgradError(f"--energy: {why}; the energy accounting reads the co-content route's phases, which this "
                            "route does not have (not yet supported)")


# --- evaluation and one step -----------------------------------------------------------------------
def reading(pb: FitProblem, minimizer, dstate: Optional[DeviceState], key: tuple):
    """``minimizer``, or a :class:`ReadThrough` relaxing at ``pb.device.read(theta)`` with ``key``
    when the devices read non-ideally (``dstate`` None: no devices, the minimizer itself)."""
    if dstate is None or pb.device.reads_ideally:
        return minimizer
    return ReadThrough(minimizer, pb.device, dstate, pb.resolved["seed"], key)


def evaluate(pb: FitProblem, theta, X, Y, minimizer, dstate: Optional[DeviceState] = None, split: int = 0) -> dict:
    """Mean loss (and accuracy) over a dataset, in chunks of :data:`EVAL_CHUNK` samples.

    With a device state, every equilibrium is relaxed at the conductances the devices read
    (:func:`reading`, key ``(1 + split, n_updates, chunk start)``).
    """
    outs = []
    for start in range(0, len(X), EVAL_CHUNK):
        key = (EVAL_READS + split, 0 if dstate is None else dstate.n_updates, start)
        eq = reading(pb, minimizer, dstate, key).minimize(pb.energy, theta, X[start:start + EVAL_CHUNK])
        if not eq.converged:
            raise NotSolvedError(f"evaluation: {eq.status}: {eq.message}")
        outs.append(np.asarray(pb.energy.outputs(eq.state), float))
    o = np.concatenate(outs)
    row = {"cost": float(np.mean(pb.loss.per_sample(o, Y)))}
    if pb.loss.classifies:
        row["accuracy"] = pb.loss.accuracy(o, Y)
    return row


def gradient(pb: FitProblem, theta, X, Y, minimizer, estimator, costs: Optional[list] = None,
             seen: Optional[dict] = None):
    """The estimator's dL/dtheta on one batch (the loss through its effective targets); ``costs``
    (a list) receives the batch's per-sample losses at its free phase; ``seen`` (a dict) receives
    the phases (``free``, ``plus`` -- the ``+beta`` nudged phase of pep/cep, else None -- and the
    effective targets ``y``), the same arithmetic as without it."""
    eq = minimizer.minimize(pb.energy, theta, X)
    if not eq.converged:
        raise NotSolvedError(f"free phase: {eq.status}: {eq.message}")
    o = np.asarray(pb.energy.outputs(eq.state), float)
    if costs is not None:
        costs.append(np.asarray(pb.loss.per_sample(o, Y), float))
    y_eff = pb.loss.effective_targets(o, Y)
    if seen is None or not hasattr(estimator, "phases"):
        if seen is not None:
            seen.update(free=eq, plus=None, y=y_eff)
        return estimator.estimate(pb.energy, theta, X, y_eff, minimizer, free=eq)
    ph = estimator.phases(pb.energy, theta, X, y_eff, minimizer, free=eq)
    positive = getattr(estimator, "variant", None) in ("positive", "centered") and hasattr(estimator, "beta")
    seen.update(free=ph.free, plus=ph.plus if positive else None, y=y_eff)
    return estimator.estimate_from_phases(pb.energy, theta, X, ph)


def clip(theta, g_min: float, g_max: Optional[float]):
    return np.clip(theta, g_min, np.inf if g_max is None else g_max)


def project(pb: FitProblem, theta):
    """``theta`` clipped into its box ``[pb.lo, pb.hi]`` (``[g_min, g_max]`` for resistors without
    an explicit bound; ``--bounds``); the clip into ``[g_min, g_max]`` when the box is not set."""
    if pb.lo is None:
        r = pb.resolved
        return clip(theta, r["g_min"], r["g_max"])
    return np.clip(theta, pb.lo, pb.hi)


def step_lr(pb: FitProblem):
    """The optimizer's learning rate: ``lr`` (a number) or, with trained sources, one per parameter
    (``lr`` for the conductances, ``source_lr`` for the sources)."""
    r = pb.resolved
    if not pb.trainables.sources:
        return r["lr"]
    return np.concatenate([np.full(len(pb.trainables.resistors), r["lr"]),
                           np.full(len(pb.trainables.sources), r["source_lr"])])


def init_devices(pb: FitProblem) -> tuple:
    """``(theta, DeviceState)``: the run's initial conductances (clipped into ``[g_min, g_max]``)
    programmed onto devices drawn from ``device_rng(seed, "init")``; ``(theta, None)`` for the
    ideal device (nothing drawn, nothing changed)."""
    r = pb.resolved
    theta = project(pb, pb.energy.theta0())
    if pb.device.is_ideal:
        return theta, None
    return pb.device.init(theta, device_rng(r["seed"], "init"))


def program_devices(pb: FitProblem, theta) -> tuple:
    """Ex situ: write ``theta`` (S, e.g. fitted with the ideal device) onto the devices a run of
    ``pb`` would train in situ -- the same realisation (:func:`init_devices`: same seed, same
    variability and stuck devices) -- by ``device.program`` (write-verify: each value clipped to
    its device's bounds, rounded to its level, stuck devices unchanged).

    Returns
    -------
    (theta, DeviceState or None)
        What the devices hold, and their state (for :func:`evaluate`).
    """
    theta = np.asarray(theta, dtype=float)
    if theta.shape != pb.energy.theta0().shape:
        raise PhysgradError(f"program_devices: {theta.shape[0] if theta.ndim else 0} conductances for "
                            f"{pb.energy.theta0().shape[0]} trainable resistors")
    _, dstate = init_devices(pb)
    if dstate is None:
        return theta, None
    return pb.device.program(theta, dstate)


def device_step(pb: FitProblem, theta, theta_opt, dstate: Optional[DeviceState]) -> tuple:
    """After an optimizer step to ``theta_opt``: ``(theta, dstate)``. Ideal: the clip into
    ``[g_min, g_max]``; devices: ``device.update`` of the clipped request, stream
    ``device_rng(seed, "update", n_updates)``."""
    r = pb.resolved
    target = project(pb, theta_opt)
    if dstate is None:
        return target, None
    rng = device_rng(r["seed"], "update", dstate.n_updates)
    return pb.device.update(theta, target - theta, rng, dstate)


# --- run folder (physgrad.runs: claim, lock, atomic writes, checksummed checkpoints, signals) -----------
RUN_FILES = ("config.json", "metrics.csv", CHECKPOINT, "learning_curve.png", "energy.png", "trained.cir")
WARM_KEYS = ("inputs", "sets", "last_ref", "has_last_ref")


def _save_checkpoint(path: Path, theta, state: dict, epoch: int, seconds: float, warm: dict,
                     dstate: Optional[DeviceState] = None, batch: int = 0, epoch_costs=None,
                     epoch_energy: Optional[dict] = None) -> None:
    """Conductances ``theta``, optimizer state (``opt_*``), warm-start sets (``warm_*``), device state
    (:func:`physgrad.runs.device_arrays`) and the position (``epoch`` completed epochs, ``batch``
    batches into the next one; then ``epoch_costs``, the per-sample losses of those batches' free
    phases, so that ``train_cost_in_epoch`` covers the whole epoch), atomically with their SHA-256."""
    arrays = {f"opt_{k}": np.asarray(v) for k, v in state.items()}
    if batch:
        arrays["epoch_costs"] = np.asarray(epoch_costs if epoch_costs is not None else [], float).ravel()
        for k, v in (epoch_energy or {}).items():  # per-example energies of the epoch so far (NaN: unknown)
            arrays[f"epoch_energy_{k}"] = np.concatenate(v) if v else np.zeros(0)
    arrays.update(device_arrays(dstate))
    arrays.update({f"warm_{k}": np.asarray(v) for k, v in warm.items()})
    save_arrays(path, {"theta": np.asarray(theta), "epoch": np.int64(epoch), "batch": np.int64(batch),
                       "seconds": np.float64(seconds), **arrays})


def _load_checkpoint(path: Path, pb: FitProblem, n_epochs: int, minimizer) -> dict:
    """Read and check a checkpoint against the run ``pb`` (of ``n_epochs`` epochs as saved):
    checksum, keys, the conductances' shape and finiteness, the optimizer state's keys and shapes,
    the warm-start sets, the device state, and a position the run can have reached.

    Raises
    ------
    CorruptRunError
    """
    bad = checkpoint_error(path)
    arrays = load_arrays(path, required=("theta", "epoch", "seconds", "opt_t"))
    r = pb.resolved
    theta0 = project(pb, pb.energy.theta0())
    theta = finite_like(arrays.pop("theta"), theta0, "theta (the conductances and trained sources)", bad)
    if np.any(theta[:len(pb.trainables.resistors)] < 0):
        raise bad("theta holds negative conductances")
    n_batches = -(-len(pb.X) // min(r["batch_size"], len(pb.X)))
    epoch = scalar(arrays, "epoch", "i", bad, 0, n_epochs)
    batch = scalar(arrays, "batch", "i", bad, 0, n_batches - 1 if epoch < n_epochs else 0) if "batch" in arrays else 0
    seconds = scalar(arrays, "seconds", "f", bad, 0.0)
    for k in ("epoch", "batch", "seconds"):
        arrays.pop(k, None)
    costs = arrays.pop("epoch_costs", np.zeros(0))
    if costs.ndim != 1 or costs.size > len(pb.X) or costs.dtype.kind != "f" or not np.all(np.isfinite(costs)):
        raise bad(f"epoch_costs is not a finite 1-D float array of at most {len(pb.X)} losses")
    energies = {}
    for k in ENERGY_PARTS:
        e = arrays.pop(f"epoch_energy_{k}", None)
        if e is None:
            if pb.spec.energy and batch:
                raise bad(f"epoch_energy_{k} is missing (an --energy run interrupted mid-epoch)")
            continue
        if not pb.spec.energy:
            raise bad(f"epoch_energy_{k} in a run without --energy")
        ok = e.ndim == 1 and e.size == costs.size and e.dtype.kind == "f" and not np.any(np.isinf(e))
        if not ok or np.any(e[~np.isnan(e)] < 0):
            raise bad(f"epoch_energy_{k} is not a 1-D array of {costs.size} energies >= 0 J (NaN: unknown)")
        energies[k] = [e] if batch else []
    template = optim.init(r["optimizer"], theta0)
    state = {k[4:]: arrays.pop(k) for k in [k for k in arrays if k.startswith("opt_")]}
    if set(state) != set(template):
        raise bad(f"optimizer state {sorted(state)} is not {r['optimizer']}'s {sorted(template)}")
    state["t"] = scalar({"t": state["t"]}, "t", "i", bad, 0)
    for k, v in template.items():
        if k != "t":
            state[k] = finite_like(state[k], np.asarray(v, dtype=float), f"opt_{k}", bad)
    warm = {k[5:]: arrays.pop(k) for k in [k for k in arrays if k.startswith("warm_")]}
    _check_warm(warm, minimizer.warm_state(pb.energy), bad)
    dstate = pop_device_state(arrays, bad)
    if (dstate is None) != pb.device.is_ideal:
        raise bad(f"{'no' if dstate is None else 'a'} device state, but the run's device model is {pb.device.label!r}")
    if arrays:
        raise bad(f"unexpected key(s) {sorted(arrays)[:5]}")
    return {"theta": theta, "epoch": epoch, "batch": batch, "seconds": seconds, "state": state, "warm": warm,
            "device": dstate, "epoch_costs": [costs] if batch else [],
            "epoch_energy": {k: energies.get(k, []) for k in ENERGY_PARTS}}


def _check_warm(warm: dict, template: dict, bad) -> None:
    """The warm-start sets of a checkpoint have the solver's layout (:meth:`BatchSolver.warm_state`)."""
    if set(warm) != set(template):
        raise bad(f"warm-start keys {sorted(warm)}, expected {sorted(template)}")
    if not template:  # the per-sample solver keeps no warm state
        return
    X, sets, last, has = (np.asarray(warm[k]) for k in WARM_KEYS)
    n_in, nbytes = template["inputs"].shape[1], template["sets"].shape[1]
    ok = (X.dtype.kind == "f" and X.ndim == 2 and X.shape[1] == n_in and bool(np.all(np.isfinite(X)))
          and sets.dtype == np.uint8 and sets.shape == (len(X), nbytes) and last.dtype == bool and last.ndim == 1
          and last.size <= 8 * nbytes and has.shape == () and has.dtype == bool and (bool(has) or last.size == 0))
    if not ok:
        raise bad(f"warm-start sets of the wrong layout (inputs {X.dtype} {X.shape}, sets {sets.dtype} {sets.shape}, "
                  f"last_ref {last.dtype} {last.shape}; the circuit has {n_in} inputs)")


ENERGY_PARTS = ("free", "nudged", "program")
ENERGY_COLUMNS = tuple(f"energy_{k}_J" for k in ENERGY_PARTS)


def metric_fields(pb: FitProblem) -> list:
    names = ["epoch", "train_cost"] + (["test_cost"] if pb.X_test is not None else [])
    if pb.loss.classifies:
        names += ["train_accuracy"] + (["test_accuracy"] if pb.X_test is not None else [])
    names += ["train_cost_in_epoch"] + (list(ENERGY_COLUMNS) if pb.spec.energy else [])
    return names + ["seconds"]


def energy_row(parts: dict) -> dict:
    """Epoch means (J per example) of the per-example energies ``parts`` (lists of arrays; NaN
    unknown): a column is absent when any example's value is unknown or there is none."""
    row = {}
    for k in ENERGY_PARTS:
        e = np.concatenate(parts[k]) if parts.get(k) else np.zeros(0)
        if e.size and not np.any(np.isnan(e)):
            row[f"energy_{k}_J"] = float(np.mean(e))
    return row


def batch_energy(meter: FitEnergyMeter, pb: FitProblem, seen: dict, theta_before, theta_after, dbefore,
                 dafter) -> dict:
    """Per-example energies (J, arrays of the batch's length; NaN where unknown) of one step."""
    r, n = pb.resolved, len(seen["free"].state)
    nan = np.full(n, np.nan)
    free = meter.free(pb.energy, theta_before, seen["free"])
    nudged = None if seen["plus"] is None else meter.nudged(pb.energy, theta_before, seen["plus"], r["beta"], seen["y"])
    prog = meter.programming(theta_before, theta_after, dbefore, dafter)
    return {"free": nan if free is None else free, "nudged": nan if nudged is None else nudged,
            "program": nan if prog is None else np.full(n, prog / n)}


def plot_learning_curve(rows: list, path: Path, title: str, classifies: bool) -> None:
    """Cost (log scale) and, for classification, accuracy per epoch (train and test)."""
    def line(label, col, style):  # the epochs that measured ``col`` (--eval-every leaves gaps)
        pts = [(r["epoch"], r[col]) for r in rows if r.get(col) is not None]
        return (label, [p[0] for p in pts], [p[1] for p in pts], style) if pts else None

    panels = []
    for key, label, log in (("cost", "loss (batch mean)", True), ("accuracy", "accuracy", False)):
        if key == "accuracy" and not classifies:
            continue
        lines = [line(split, f"{split}_{key}", style) for split, style in (("train", "o-"), ("test", "s-"))]
        if key == "cost":
            lines.append(line("train (in epoch)", "train_cost_in_epoch", "x:"))
        panels.append({"ylabel": label, "log": log, "lines": [ln for ln in lines if ln is not None]})
    plot_curve(path, panels, title)


def plot_energy(rows: list, path: Path, title: str) -> None:
    """Energy per example (J, log scale) per epoch: free and nudged phases, programming."""
    lines = []
    for k, style in zip(ENERGY_PARTS, ("o-", "s-", "x:")):
        pts = [(r["epoch"], r[f"energy_{k}_J"]) for r in rows if r.get(f"energy_{k}_J") is not None]
        if pts and all(p[1] > 0 for p in pts):
            lines.append((k, [p[0] for p in pts], [p[1] for p in pts], style))
    plot_curve(path, [{"ylabel": "energy per example (J)", "log": True, "lines": lines}], title)


def _read_saved(cfg_path: Path, spec: FitSpec) -> tuple:
    """``(config.json, the saved FitSpec)`` of a run folder, checked (:class:`CorruptRunError`)."""
    saved = read_json(cfg_path)
    try:
        if not isinstance(saved.get("spec"), dict) or not isinstance(saved.get("resolved"), dict):
            raise ValueError("no 'spec' and 'resolved' objects")
        epochs = saved["resolved"].get("epochs")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"resolved epochs = {epochs!r}")
        if not isinstance(saved["resolved"].get("device", {"name": "ideal"}), dict):
            raise ValueError("resolved device is not an object")
        saved_spec = FitSpec.from_dict(saved["spec"])
    except (PhysgradError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptRunError(f"--resume: {cfg_path} is not a valid fit configuration ({exc})") from None
    return saved, saved_spec


def fit_run(spec: FitSpec, out, *, resume: bool = False, overwrite: bool = False, progress: Optional[bool] = None,
            command: Optional[str] = None, log=print, _stop_after_epoch: Optional[int] = None,
            _interrupt_after: Optional[int] = None) -> Rows:
    """Train (or continue) into the run folder ``out``; returns the metrics rows (:class:`physgrad.runs.Rows`,
    whose ``interrupted`` is the signal number when SIGINT/SIGTERM stopped the run after saving).

    ``out`` is claimed and locked (:meth:`physgrad.runs.RunFolder.claim`); ``resume`` checks the whole
    folder before writing anything (:class:`physgrad.runs.CorruptRunError`, exit 2, folder unchanged);
    ``overwrite`` starts a new run in a folder holding a fit run or other files (files physgrad did
    not write are never replaced or deleted). SIGINT/SIGTERM: the current batch finishes, the
    checkpoint is saved at that batch, and the rows come back with ``interrupted`` set.

    ``_stop_after_epoch``: testing hook, return after saving that epoch (an interrupted run);
    ``_interrupt_after``: testing hook, behave as if SIGINT arrived after this many batches.
    """
    pb = resolve(spec)  # bad input (netlist, data, options, a nudge below round-off) is refused before the folder is touched
    with StopFlag() as stop:  # from here on a signal is answered at the next batch boundary (saved, 130/143)
        folder = RunFolder.claim(out, "fit", resume=resume, overwrite=overwrite, will_write=RUN_FILES,
                                 run_files=(CHECKPOINT, "metrics.csv"), command=command)
        try:
            return _fit_run(spec, pb, folder, resume, progress, command, log, _stop_after_epoch, _interrupt_after,
                            stop)
        finally:
            folder.release()


def _fit_run(spec, pb, folder, resume, progress, command, log, _stop_after_epoch, _interrupt_after, stop) -> Rows:
    out = folder.path
    cfg_path, ckpt_path, metrics_path = out / "config.json", out / CHECKPOINT, out / "metrics.csv"
    if resume:  # read and check everything before changing anything in the folder
        if not ckpt_path.exists() and not ckpt_path.is_symlink():
            raise PhysgradError(f"--resume: no checkpoint at {ckpt_path}")
        saved, saved_spec = _read_saved(cfg_path, spec)
        diff = {k: (getattr(saved_spec, k), getattr(spec, k)) for k in asdict(spec)
                if getattr(saved_spec, k) != getattr(spec, k) and k not in ("epochs", "eval_every")}
        if diff:
            raise PhysgradError(f"--resume: options differ from the saved run (saved, given): {diff}; only --epochs "
                                "and --eval-every may change")
        for key, path in (("netlist_sha256", spec.netlist), ("data_sha256", spec.data), ("test_sha256", spec.test)):
            if path and saved.get(key) and saved[key] != _file_digest(path):
                raise PhysgradError(f"--resume: {path} changed since the run started")
        saved_device = saved["resolved"].get("device", {"name": "ideal"})
        if json.loads(json.dumps(device_to_dict(device_from_spec(spec.device_model)))) != saved_device:
            raise PhysgradError(f"--resume: device model {spec.device_model!r} is not the one the run started with "
                                f"({saved_device})")
    energy = pb.energy
    minimizer = SampleSolver() if pb.adjoint else CoContentMinimizer()
    r = pb.resolved
    estimator = AdjointEstimator() if pb.adjoint else make_estimator(r["method"], beta=r["beta"], eta=r["eta"])
    fields = metric_fields(pb)  # every column but epoch and seconds may be empty (not measured that epoch)
    metrics = MetricsLog(metrics_path, fields, first=0, optional=[f for f in fields if f not in ("epoch", "seconds")])
    if resume:
        ck = _load_checkpoint(ckpt_path, pb, saved["resolved"]["epochs"], minimizer)
        theta, state, epoch, seconds, dstate = ck["theta"], ck["state"], ck["epoch"], ck["seconds"], ck["device"]
        start_batch, costs, energies = ck["batch"], ck["epoch_costs"], ck["epoch_energy"]
        rows = metrics.read(upto=epoch)
        if (saved["resolved"]["epochs"], saved["spec"].get("eval_every", 1)) != (int(spec.epochs), int(spec.eval_every)):
            saved["spec"]["epochs"] = int(spec.epochs)
            saved["resolved"]["epochs"] = int(spec.epochs)
            saved["spec"]["eval_every"] = int(spec.eval_every)
            folder.write_json("config.json", saved)
        if metrics.needs_rewrite():  # rows written after the last checkpoint: dropped, the others kept verbatim
            metrics.rewrite()
        minimizer.set_warm_state(energy, ck["warm"])
    else:
        cfg = {"spec": asdict(spec), "resolved": r, "command": command, "versions": versions(),
               "netlist_sha256": _file_digest(spec.netlist), "data_sha256": _file_digest(spec.data),
               "test_sha256": _file_digest(spec.test) if spec.test else None}
        folder.write_json("config.json", cfg)
        for stale in (CHECKPOINT, "metrics.csv", "learning_curve.png", "energy.png", "trained.cir"):  # --overwrite
            folder.remove(stale)
        theta, dstate = init_devices(pb)
        state = optim.init(r["optimizer"], theta)
        epoch, seconds, start_batch, costs = 0, 0.0, 0, []
        energies = {k: [] for k in ENERGY_PARTS}
        rows = []
        row = _epoch_row(pb, theta, minimizer, 0, 0.0, dstate)
        with stop.critical():  # the row and the checkpoint agree even under a second Ctrl-C
            _save_checkpoint(folder.file(CHECKPOINT), theta, state, 0, 0.0, minimizer.warm_state(energy), dstate)
            folder.file("metrics.csv")
            metrics.append(row)
        rows.append(row)
        log(_describe(row))
    rows = Rows(rows)
    n = len(pb.X)
    B = min(r["batch_size"], n)
    n_batches = -(-n // B)
    show = sys.stderr.isatty() if progress is None else progress
    title = f"{Path(spec.netlist).name}: {r['method']}, {r['loss']} loss, {r['optimizer']}"
    batches_done = 0
    meter = (FitEnergyMeter.for_device(spec.device_model, spec.node_capacitance, spec.settling_multiple)
             if spec.energy else None)
    with contextlib.nullcontext(stop) as flag:
        while epoch < r["epochs"]:
            minimizer.clear_factors()  # the arithmetic of an epoch depends on the checkpoint only
            order = np.random.default_rng([r["seed"], epoch]).permutation(n)
            t0 = time.perf_counter()
            bar = progress_bar(n_batches, f"epoch {epoch + 1}/{r['epochs']}", not show, initial=start_batch)
            for bi in range(start_batch, n_batches):
                idx = order[bi * B:(bi + 1) * B]
                key = (TRAIN_READS, 0 if dstate is None else dstate.n_updates)
                seen = {} if meter is not None else None
                try:
                    g = gradient(pb, theta, pb.X[idx], pb.Y[idx], reading(pb, minimizer, dstate, key), estimator,
                                 costs, seen)
                except NotSolvedError as exc:
                    if not batches_done:
                        raise
                    raise NotSolvedError(f"{exc} -- after {batches_done} optimizer steps the trained parameters span "
                                         f"{np.min(theta):.3g} to {np.max(theta):.3g}: if they grew out of the "
                                         "circuit's range, the run diverged; lower --lr") from None
                theta_opt, state = optim.step(r["optimizer"], theta, np.asarray(g, float), state, step_lr(pb))
                before = (theta, dstate)
                theta, dstate = device_step(pb, theta, theta_opt, dstate)
                if meter is not None:
                    for k, v in batch_energy(meter, pb, seen, *before[:1], theta, before[1], dstate).items():
                        energies[k].append(v)
                bar.update(1)
                batches_done += 1
                stop = flag.stop or (_interrupt_after is not None and batches_done >= _interrupt_after)
                if stop and bi + 1 < n_batches and np.all(np.isfinite(theta)):
                    bar.close()
                    seconds += time.perf_counter() - t0
                    _save_checkpoint(folder.file(CHECKPOINT), theta, state, epoch, seconds,
                                     minimizer.warm_state(energy), dstate, batch=bi + 1,
                                     epoch_costs=np.concatenate(costs) if costs else None,
                                     epoch_energy=energies if meter is not None else None)
                    log(f"saved {ckpt_path} (epoch {epoch + 1}, batch {bi + 1}/{n_batches}); continue with --resume")
                    rows.interrupted = flag.signum if flag.signum is not None else int(signal.SIGINT)
                    return rows
            start_batch = 0
            bar.close()
            if not np.all(np.isfinite(theta)):
                raise NotSolvedError(f"training diverged in epoch {epoch + 1} (non-finite conductances); lower --lr")
            seconds += time.perf_counter() - t0
            epoch += 1
            full = epoch % int(spec.eval_every) == 0 or epoch >= r["epochs"]
            row = _epoch_row(pb, theta, minimizer, epoch, seconds, dstate) if full else {"epoch": epoch, "seconds": seconds}
            row["train_cost_in_epoch"] = float(np.mean(np.concatenate(costs)))
            costs = []
            if meter is not None:
                row.update(energy_row(energies))
                energies = {k: [] for k in ENERGY_PARTS}
            with flag.critical():  # the row and the checkpoint agree even under a second Ctrl-C
                _save_checkpoint(folder.file(CHECKPOINT), theta, state, epoch, seconds, minimizer.warm_state(energy),
                                 dstate)
                metrics.append(row)
                rows.append(row)
            log(_describe(row))
            if flag.stop or (_interrupt_after is not None and batches_done >= _interrupt_after):
                if epoch < r["epochs"]:
                    log(f"saved {ckpt_path} (end of epoch {epoch}); continue with --resume")
                    rows.interrupted = flag.signum if flag.signum is not None else int(signal.SIGINT)
                    return rows
            if _stop_after_epoch is not None and epoch >= _stop_after_epoch:
                break
    plot_learning_curve(rows, folder.file("learning_curve.png"), title, pb.loss.classifies)
    if spec.energy:
        plot_energy(rows, folder.file("energy.png"), title + " (energy per example)")
    open_ = [n for n, g in zip(pb.trainables.resistors, theta) if not g > 0]
    if open_:  # a device at 0 S (level 0, stuck at g_min = 0): a SPICE resistor cannot be open
        folder.remove("trained.cir")
        log(f"trained.cir not written: resistor(s) {', '.join(open_)} hold 0 S, which a netlist cannot express "
            f"(the conductances are in {CHECKPOINT})")
    else:
        folder.write_text("trained.cir", trained_netlist(pb, theta))
    return rows


def trained_netlist(pb: FitProblem, theta) -> str:
    """The trained circuit as a netlist (:func:`write_netlist`), its input sources set to the first
    training sample (so that ``ngspice -b trained.cir`` shows one of the trained outputs)."""
    energy = pb.energy
    if pb.adjoint:
        trained = energy.circuit_at(theta)
    else:
        trained = energy.circuit.with_conductances(dict(zip(energy.param_names, theta)))
    trained = trained.with_sources(dict(zip(energy.inputs, pb.X[0])))
    text = write_netlist(trained)
    head, rest = text.split("\n", 1)
    note = (f"* trained by physgrad fit ({pb.resolved['method']}, {pb.resolved['loss']} loss); inputs "
            f"{', '.join(energy.inputs)} set to the first training sample; outputs {', '.join(energy.output_nodes)}")
    if pb.trainables.sources:
        note += f"\n* trained sources: {', '.join(pb.trainables.sources)}"
    return head + "\n" + note + "\n" + rest


def _epoch_row(pb: FitProblem, theta, minimizer, epoch: int, seconds: float, dstate=None) -> dict:
    row = {"epoch": epoch}
    tr = evaluate(pb, theta, pb.X, pb.Y, minimizer, dstate, 0)
    row["train_cost"] = tr["cost"]
    if "accuracy" in tr:
        row["train_accuracy"] = tr["accuracy"]
    if pb.X_test is not None:
        te = evaluate(pb, theta, pb.X_test, pb.Y_test, minimizer, dstate, 1)
        row["test_cost"] = te["cost"]
        if "accuracy" in te:
            row["test_accuracy"] = te["accuracy"]
    row["seconds"] = seconds
    return row


def _describe(row: dict) -> str:
    parts = [f"epoch {int(row['epoch']):3d}"]
    if "train_cost" in row:
        parts.append(f"train cost {row['train_cost']:.6g}")
    if "train_cost_in_epoch" in row:
        parts.append(f"(in epoch {row['train_cost_in_epoch']:.6g})")
    if "test_cost" in row:
        parts.append(f"test cost {row['test_cost']:.6g}")
    if "train_accuracy" in row:
        parts.append(f"train acc {100 * row['train_accuracy']:.1f}%")
    if "test_accuracy" in row:
        parts.append(f"test acc {100 * row['test_accuracy']:.1f}%")
    parts.append(f"{row['seconds']:.1f} s")
    return "  ".join(parts)

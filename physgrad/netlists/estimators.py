"""scikit-learn estimators on trainable circuits: :class:`CircuitClassifier`, :class:`CircuitRegressor`.

Both train with ``physgrad fit``'s loop (:func:`physgrad.netlists.fit.fit_run`, in a temporary run
folder) and predict with :func:`physgrad.netlists.predict.predict`, so they are the CLI's
``fit`` and ``predict`` behind ``fit(X, y) / predict(X) / score(X, y)``; ``get_params`` /
``set_params``, ``Pipeline`` and ``cross_val_score`` work as for any scikit-learn estimator.

The circuit is either built for the data (``netlist=None``: :func:`physgrad.netlists.builder.layered_circuit`
with ``hidden`` diode units, each feature driving a +x and a -x source, bias sources and skip
connections) or given (``netlist``: a path, netlist text in ohms, or a ``Circuit`` in S; then
``inputs`` names the sources that the columns of ``X`` drive, in order, and ``outputs`` the output
nodes). Features are source voltages (V): scale them (``StandardScaler``) to a few volts. The
trained circuit is ``circuit_`` (conductances in S); ``netlist_`` is its netlist text (ohms).

Needs scikit-learn (``pip install 'physgrad[sklearn]'``).
"""
from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.validation import check_is_fitted
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("physgrad's scikit-learn estimators need scikit-learn: pip install 'physgrad[sklearn]' "
                      f"(or pip install scikit-learn); {exc}") from None

from physgrad.circuit.netlist import read_netlist, write_netlist
from physgrad.netlists.builder import input_sources, layered_circuit, signed_columns
from physgrad.netlists.grad import as_circuit
from physgrad.netlists.losses import Loss
from physgrad.netlists.predict import Model, predict
from physgrad.types import PhysgradError


class _CircuitEstimator(BaseEstimator):
    """Shared parameters and machinery (see the module docstring); not for direct use."""

    _loss_default = "mse"

    def __init__(self, netlist=None, inputs=None, outputs=None, hidden: int = 0, method: str = "cep",
                 loss: Optional[str] = None, epochs: int = 20, batch_size: int = 32, optimizer: str = "adam",
                 lr: Optional[float] = None, beta: Optional[float] = None, eta: float = 0.1,
                 g_min: Optional[float] = None, g_max: Optional[float] = None, resistance: float = 1000.0,
                 hidden_scale: float = 0.1, bias: float = 1.0, vth: float = 0.0, skip: bool = True,
                 bias_sources: bool = True, input_clip: Optional[float] = 3.0, seed: int = 0,
                 device_model: str = "ideal"):
        self.netlist = netlist
        self.inputs = inputs
        self.outputs = outputs
        self.hidden = hidden
        self.method = method
        self.loss = loss
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.beta = beta
        self.eta = eta
        self.g_min = g_min
        self.g_max = g_max
        self.resistance = resistance
        self.hidden_scale = hidden_scale
        self.bias = bias
        self.vth = vth
        self.skip = skip
        self.bias_sources = bias_sources
        self.input_clip = input_clip
        self.seed = seed
        self.device_model = device_model

    # --- the circuit and the columns ------------------------------------------------------------
    def _design(self, n_features: int, n_outputs: int):
        """``(circuit, inputs, outputs, signed)`` for data with ``n_features`` columns."""
        if self.netlist is None:
            c = layered_circuit(n_features, int(self.hidden), n_outputs, g0=1.0 / float(self.resistance),
                                hidden_scale=self.hidden_scale, bias=self.bias, vth=self.vth, skip=self.skip,
                                bias_sources=self.bias_sources, seed=self.seed)
            return c, input_sources(n_features), tuple(f"o{k}" for k in range(1, n_outputs + 1)), True
        c = as_circuit(self.netlist)
        if self.inputs is None:
            raise PhysgradError("with a netlist, name the input sources the columns of X drive (inputs=[...])")
        ins = tuple(str(s).lower() for s in self.inputs)
        if len(ins) != n_features:
            raise PhysgradError(f"X has {n_features} columns for {len(ins)} input sources {ins}")
        outs = tuple(t[0] for t in c.targets) if self.outputs is None else tuple(str(n).lower() for n in self.outputs)
        if len(outs) != n_outputs:
            raise PhysgradError(f"{n_outputs} outputs needed, the netlist gives {len(outs)} ({', '.join(outs)})")
        return c, ins, outs, False

    def _columns(self, X):
        X = np.asarray(X, dtype=float)
        if X.ndim != 2:
            raise PhysgradError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
        if not self.signed_:
            return X
        if self.input_clip is not None:
            X = np.clip(X, -float(self.input_clip), float(self.input_clip))
        return signed_columns(X)

    def _train(self, X, targets: np.ndarray, label: bool):
        """Write the circuit and data to a temporary run, run ``fit_run``, keep the trained circuit."""
        from physgrad.netlists.fit import FitSpec, fit_run

        n_out = targets.shape[1] if not label else len(self.classes_)
        circuit, ins, outs, self.signed_ = self._design(np.shape(X)[1], 1 if label and self._one_output() else n_out)
        cols = self._columns(X)
        with tempfile.TemporaryDirectory(prefix="physgrad-estimator-") as tmp:
            tmp = Path(tmp)
            (tmp / "net.cir").write_text(write_netlist(circuit))
            names = list(ins) + (["label"] if label else list(outs))
            with open(tmp / "train.csv", "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(names)
                for i in range(cols.shape[0]):
                    w.writerow([repr(float(v)) for v in cols[i]]
                               + ([str(int(targets[i, 0]))] if label else [repr(float(v)) for v in targets[i]]))
            spec = FitSpec(netlist=str(tmp / "net.cir"), data=str(tmp / "train.csv"), inputs=ins, outputs=outs,
                           label_column="label" if label else None, loss=self.loss or self._loss_default,
                           method=self.method, beta=self.beta, eta=self.eta, optimizer=self.optimizer, lr=self._lr(),
                           g_min=self.g_min, g_max=self.g_max, epochs=int(self.epochs),
                           batch_size=int(self.batch_size), seed=int(self.seed), device_model=self.device_model)
            rows = fit_run(spec, tmp / "run", progress=False, log=lambda *a, **k: None)
            trained = tmp / "run" / "trained.cir"
            if not trained.exists():
                raise PhysgradError("training left a resistor at 0 S, which a netlist cannot express; raise g_min")
            self.circuit_ = read_netlist(trained)
            self.netlist_ = trained.read_text()
            import json

            self.fit_config_ = json.loads((tmp / "run" / "config.json").read_text())["resolved"]
        self.inputs_, self.outputs_ = ins, outs
        self.history_ = rows
        self.n_features_in_ = int(np.shape(X)[1])
        return self

    def _lr(self) -> Optional[float]:
        """The learning rate: ``lr``; for a built circuit with adam by default ``0.1 / resistance`` (S per
        step: a tenth of the crossbar's conductance, whatever the hidden layer's initial scale; the
        fit default, 0.01 x the median conductance, drops tenfold when a hidden layer that starts
        small holds most of the resistors); else ``fit``'s default."""
        if self.lr is not None or self.netlist is not None or self.optimizer != "adam":
            return self.lr
        return 0.1 / float(self.resistance)

    def _one_output(self) -> bool:
        return (self.loss or self._loss_default) == "levels"

    def _outputs(self, X) -> np.ndarray:
        """Output voltages (V), shape ``(n, n_out)``."""
        check_is_fitted(self, "circuit_")
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise PhysgradError(f"X must have shape (n, {self.n_features_in_}), got {X.shape}")
        return predict(Model(self.circuit_, self.inputs_, self.outputs_), self._columns(X))


class CircuitClassifier(ClassifierMixin, _CircuitEstimator):
    """A classifier that is a trained resistive circuit (see :mod:`physgrad.netlists.estimators`).

    Parameters
    ----------
    netlist : str, path or Circuit, optional
        The circuit to train (netlist text/path in ohms, or a Circuit in S); default: built for the
        data (:func:`~physgrad.netlists.builder.layered_circuit` with ``hidden`` units, one output per
        class).
    inputs, outputs : sequence of str, optional
        With ``netlist``: the sources the columns of X drive (V), and the output nodes (one per class).
    hidden : int
        Diode hidden units of the built circuit (0: the signed-input crossbar).
    method : str
        Learning rule code (``cep`` default; ``exact``, ``pep``, ``nep``, ``cl``, ``pcpl``, ``ncpl``, ``ccpl``).
    loss : {"argmax", "xent", "levels"}, optional
        Default ``argmax`` (one output per class; the highest voltage wins).
    epochs, batch_size, optimizer, lr, beta, eta, g_min, g_max, seed, device_model
        As ``physgrad fit`` (beta, g_min, g_max in S; lr in S per step for adam; for a built circuit
        with adam the default lr is ``0.1 / resistance``).
    resistance, hidden_scale, bias, vth, skip, bias_sources
        Built circuit: typical resistance (ohm), hidden-layer conductance ratio, bias voltage (V), diode
        threshold (V), direct input -> output resistors, the two bias sources.
    input_clip : float or None
        Built circuit: features are clipped to ``[-input_clip, input_clip]`` V before they drive the
        sources (default 3 V: after ``StandardScaler`` a rare feature of tiny variance reaches tens of
        volts, and that span sets the argmax margin and swamps the other inputs; on digits clipping took
        the crossbar from 73.8 % to 96.2 % test accuracy, ``reports/experiments/netlist-design/``).

    Attributes
    ----------
    classes_ : array of class labels; circuit_ : the trained Circuit (S); netlist_ : its netlist (ohms);
    history_ : per-epoch metrics rows of the fit.
    """

    _loss_default = "argmax"

    def fit(self, X, y):
        """Train on ``X`` (n, n_features; V) and class labels ``y`` (n,)."""
        y = np.asarray(y)
        if y.ndim != 1:
            raise PhysgradError(f"y must be 1-D class labels, got shape {y.shape}")
        self.classes_, idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise PhysgradError("y holds a single class; a classifier needs at least two")
        return self._train(X, idx[:, None], label=True)

    def decision_function(self, X) -> np.ndarray:
        """Output voltages (V), shape ``(n, n_out)`` (one per class for argmax / xent)."""
        return self._outputs(X)

    def predict(self, X) -> np.ndarray:
        """Class labels for ``X``: the loss's decision on the output voltages."""
        r = self.fit_config_
        loss = Loss(r["loss"], len(self.classes_), None if r.get("levels") is None else tuple(r["levels"]),
                    margin=float(r.get("margin") or 0.0), temperature=float(r.get("temperature") or 1.0))
        return self.classes_[loss.predict(self._outputs(X))]


class CircuitRegressor(RegressorMixin, _CircuitEstimator):
    """A regressor that is a trained resistive circuit: predictions are output voltages (V).

    Parameters as :class:`CircuitClassifier` (``loss`` is ``mse``); ``y`` of shape ``(n,)`` or
    ``(n, n_outputs)`` holds target voltages (V), one column per output node.
    """

    _loss_default = "mse"

    def fit(self, X, y):
        """Train on ``X`` (n, n_features; V) and targets ``y`` (n,) or (n, n_out) (V)."""
        y = np.asarray(y, dtype=float)
        self.single_output_ = y.ndim == 1
        Y = y[:, None] if y.ndim == 1 else y
        if Y.ndim != 2 or not np.all(np.isfinite(Y)):
            raise PhysgradError(f"y must be finite, shape (n,) or (n, n_outputs), got {y.shape}")
        return self._train(X, Y, label=False)

    def predict(self, X) -> np.ndarray:
        """Output voltages (V): shape ``(n,)`` when fitted on 1-D ``y``, else ``(n, n_out)``."""
        o = self._outputs(X)
        return o[:, 0] if self.single_output_ else o

r"""Losses of ``physgrad fit``: how targets or class labels become a cost on the output voltages.

Every learning rule of :mod:`physgrad.learning` estimates the gradient of the squared error
:math:`C = \tfrac12 |o - y|^2`. A loss :math:`L(o)` is trained through the squared error towards the
*effective target*

.. math:: y_{\rm eff} = o_0 - \nabla_o L(o_0)

(``o_0`` the free outputs): its gradient in ``o`` at the free state is exactly :math:`\nabla L`, so
the exact gradient, EP (the nudge pulls along :math:`-\nabla L`) and coupled learning (the clamps
move the outputs by :math:`\mp\eta\nabla L`) all follow :math:`dL/d\theta`. For ``mse``
``y_eff = y``.

- ``mse``: :math:`L = \tfrac12 \sum_o (o - y_o)^2` (V^2), targets from the CSV columns named like the
  output nodes.
- ``levels``: one output; class ``k`` is the voltage level :math:`\ell_k`;
  :math:`L = \tfrac12 (o - \ell_{\rm label})^2`; prediction: the nearest level.
- ``argmax``: one output per class; the correct output must exceed every other by a margin
  ``m`` (V): :math:`L = \tfrac12 \sum_{j \ne y} \max(0, o_j - o_y + m)^2` (squared hinge);
  prediction: the highest output.
- ``xent``: one output per class; softmax cross-entropy of the outputs at temperature ``T`` (V),
  :math:`L = -\log \mathrm{softmax}(o / T)_y`; prediction: the highest output.

All losses are per sample and averaged over a batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from physgrad.types import PhysgradError

LOSSES = ("mse", "levels", "argmax", "xent")


@dataclass(frozen=True)
class Loss:
    """A loss on the outputs (see module docstring).

    Attributes
    ----------
    kind : {"mse", "levels", "argmax", "xent"}
    n_classes : int (0 for mse)
    levels : (n_classes,) V, for ``levels``
    margin : V, for ``argmax``; temperature : V, for ``xent``
    """

    kind: str
    n_classes: int = 0
    levels: Optional[tuple] = None
    margin: float = 0.0
    temperature: float = 1.0

    def __post_init__(self):
        if self.kind not in LOSSES:
            raise PhysgradError(f"loss must be one of {', '.join(LOSSES)}; got {self.kind!r}")
        if self.kind == "levels" and (self.levels is None or len(self.levels) != self.n_classes):
            raise PhysgradError(f"the levels loss needs one level per class ({self.n_classes})")
        if self.kind == "xent" and not self.temperature > 0:
            raise PhysgradError(f"the temperature must be > 0 V, got {self.temperature!r}")
        if self.kind == "argmax" and not self.margin >= 0:
            raise PhysgradError(f"the margin must be >= 0 V, got {self.margin!r}")

    @property
    def classifies(self) -> bool:
        return self.kind != "mse"

    def n_outputs(self) -> int:
        """Outputs the loss needs (0: any number, ``mse``)."""
        return {"mse": 0, "levels": 1}.get(self.kind, self.n_classes)

    def per_sample(self, o: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Loss per sample, shape ``(batch,)``; ``y``: targets (mse, (batch, n_out)) or labels (batch,)."""
        return self._value_grad(o, y)[0]

    def gradient(self, o: np.ndarray, y: np.ndarray) -> np.ndarray:
        """:math:`\\nabla_o L` per sample, shape ``(batch, n_out)`` (not divided by the batch size)."""
        return self._value_grad(o, y)[1]

    def effective_targets(self, o: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``y_eff = o - grad L(o)`` (V), shape ``(batch, n_out)``: the squared-error targets whose
        gradient is this loss's."""
        if self.kind == "mse":
            return np.asarray(y, float)
        return np.asarray(o, float) - self.gradient(o, y)

    def predict(self, o: np.ndarray) -> np.ndarray:
        """Predicted classes, shape ``(batch,)`` (classifying losses only)."""
        o = np.asarray(o, float)
        if self.kind == "levels":
            return np.argmin(np.abs(o[:, :1] - np.asarray(self.levels)[None, :]), axis=1)
        if self.kind in ("argmax", "xent"):
            return np.argmax(o, axis=1)
        raise PhysgradError("the mse loss does not classify")

    def accuracy(self, o: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean(self.predict(o) == np.asarray(labels)))

    # --- values and gradients ------------------------------------------------------------------
    def _value_grad(self, o, y):
        o = np.asarray(o, float)
        if self.kind == "mse":
            r = o - np.asarray(y, float)
            return 0.5 * np.sum(r * r, axis=1), r
        lab = np.asarray(y).astype(np.int64)
        B = o.shape[0]
        if self.kind == "levels":
            r = o[:, 0] - np.asarray(self.levels, float)[lab]
            g = np.zeros_like(o)
            g[:, 0] = r
            return 0.5 * r * r, g
        if self.kind == "argmax":
            oy = o[np.arange(B), lab][:, None]
            h = np.maximum(0.0, o - oy + self.margin)
            h[np.arange(B), lab] = 0.0
            g = h.copy()
            g[np.arange(B), lab] = -np.sum(h, axis=1)
            return 0.5 * np.sum(h * h, axis=1), g
        z = o / self.temperature
        z = z - np.max(z, axis=1, keepdims=True)
        p = np.exp(z)
        p /= np.sum(p, axis=1, keepdims=True)
        value = -np.log(np.maximum(p[np.arange(B), lab], 1e-300))
        g = p.copy()
        g[np.arange(B), lab] -= 1.0
        return value, g / self.temperature

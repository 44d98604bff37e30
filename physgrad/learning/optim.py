r"""First-order optimizers on parameter trees, as pure functions of an explicit state.

``state = init(kind, theta)``; ``theta, state = step(kind, theta, grad, state, lr, ...)``. The state
is a dict of arrays and a step counter, so a run folder can checkpoint it and a resumed run
continues bit for bit.

- ``sgd``: :math:`\theta \leftarrow \theta - \alpha g`.
- ``momentum`` (heavy ball): :math:`v \leftarrow \mu v + g,\ \theta \leftarrow \theta - \alpha v`.
- ``adam`` (Kingma & Ba 2015): bias-corrected moments, steps of about ``lr`` per parameter
  whatever the gradient's scale.

Weight decay (``weight_decay`` :math:`\lambda \ge 0`, L2 regularisation coupled to the gradient, as
``torch.optim.SGD(weight_decay=...)`` that the comparative study of Scellier et al. (2023) uses): every
rule above takes :math:`g + \lambda \theta` (:func:`decayed`) in place of :math:`g`, i.e. the gradient
of the loss plus :math:`\tfrac{\lambda}{2} \lVert\theta\rVert^2`.

Projection (conductances into their bounds) is the caller's, after the step.

References
----------
D. P. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR (2015).
B. T. Polyak, "Some methods of speeding up the convergence of iteration methods" (1964).
B. Scellier, M. Ernoult, J. Kendall, S. Kumar, "Energy-based learning algorithms for analog computing: a
comparative study", NeurIPS (2023).
"""
from __future__ import annotations

import numpy as np

from physgrad.pytree import tree_map
from physgrad.types import PhysgradError

OPTIMIZERS = ("sgd", "momentum", "adam")
ADAM_EPS = 1e-12


def init(kind: str, theta) -> dict:
    """Initial optimizer state for parameters ``theta`` (zeros shaped like it)."""
    if kind not in OPTIMIZERS:
        raise PhysgradError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {kind!r}")
    if kind == "sgd":
        return {"t": 0}
    if kind == "momentum":
        return {"t": 0, "v": tree_map(np.zeros_like, theta)}
    return {"t": 0, "m": tree_map(np.zeros_like, theta), "v": tree_map(np.zeros_like, theta)}


def decayed(grad, theta, weight_decay: float):
    r"""The gradient with L2 weight decay, :math:`g + \lambda \theta` (``grad`` itself when
    :math:`\lambda = 0`); one array (numpy or torch) or a tree of them.

    Parameters
    ----------
    grad, theta : array or tree of arrays
        Gradient and parameters, the same structure and shapes.
    weight_decay : float
        :math:`\lambda \ge 0` (per update, in units of 1 / the parameter's unit).
    """
    if not weight_decay:
        return grad
    return tree_map(lambda g, p: g + weight_decay * p, grad, theta)


def step(kind: str, theta, grad, state: dict, lr: float, momentum: float = 0.9, betas=(0.9, 0.999),
         weight_decay: float = 0.0):
    r"""One update; returns ``(theta, state)`` (new objects; the inputs are not modified). With
    ``weight_decay`` :math:`\lambda > 0` the rule sees :math:`g + \lambda\theta` (:func:`decayed`)."""
    if not weight_decay >= 0:
        raise PhysgradError(f"weight_decay must be >= 0, got {weight_decay}")
    grad = decayed(grad, theta, weight_decay)
    t = int(state["t"]) + 1
    if kind == "sgd":
        return tree_map(lambda p, g: p - lr * g, theta, grad), {"t": t}
    if kind == "momentum":
        v = tree_map(lambda a, g: momentum * a + g, state["v"], grad)
        return tree_map(lambda p, a: p - lr * a, theta, v), {"t": t, "v": v}
    if kind == "adam":
        b1, b2 = betas
        m = tree_map(lambda a, g: b1 * a + (1 - b1) * g, state["m"], grad)
        v = tree_map(lambda a, g: b2 * a + (1 - b2) * g * g, state["v"], grad)
        direction = tree_map(lambda a, c: (a / (1 - b1**t)) / (np.sqrt(c / (1 - b2**t)) + ADAM_EPS), m, v)
        return tree_map(lambda p, d: p - lr * d, theta, direction), {"t": t, "m": m, "v": v}
    raise PhysgradError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {kind!r}")

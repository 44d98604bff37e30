r"""The squared-error cost shared by every learning rule.

.. math::  C(s, y) = \tfrac12 \sum_o (o(s) - y_o)^2

per sample, where :math:`o(s)` are the output units' values (V) and :math:`y` the targets (V);
learning rules estimate the gradient of the **batch mean** of :math:`C`.

Everything here is traceable by autograd (no in-place operations).
"""
from __future__ import annotations

import autograd.numpy as anp
import numpy as np

from physgrad.types import PhysgradError


def cost_per_sample(outputs, y):
    r"""Per-sample squared error :math:`\tfrac12 \sum_o (o - y_o)^2` (V^2).

    Parameters
    ----------
    outputs : array, shape ``(batch, n_out)``
        Output values (V).
    y : array, shape ``(n_out,)`` or ``(batch, n_out)``
        Targets (V), broadcast against ``outputs``.

    Returns
    -------
    array, shape ``(batch,)``
    """
    return 0.5 * anp.sum((outputs - y) ** 2, axis=-1)


def mean_cost(energy, state, y) -> float:
    """Batch-mean cost of ``state`` for an energy of the contract (uses ``energy.outputs``)."""
    return anp.mean(cost_per_sample(energy.outputs(state), y))


def check_targets(energy, state, y) -> np.ndarray:
    """Validate ``y`` against the energy's outputs and return it as a float array.

    Raises
    ------
    PhysgradError
        If ``y`` has the wrong number of outputs or cannot broadcast to ``(batch, n_out)``.
    """
    arr = np.asarray(y, dtype=float)
    out = np.asarray(energy.outputs(state))
    if arr.ndim == 0 or arr.shape[-1] != out.shape[-1]:
        raise PhysgradError(
            f"targets y have shape {arr.shape}, but the model has {out.shape[-1]} output(s) "
            f"(outputs shape {out.shape})")
    try:
        np.broadcast_shapes(arr.shape, out.shape)
    except ValueError:
        raise PhysgradError(f"targets y of shape {arr.shape} do not match outputs of shape {out.shape}") from None
    if not np.all(np.isfinite(arr)):
        raise PhysgradError("targets y contain NaN or inf")
    return arr

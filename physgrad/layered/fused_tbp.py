r"""Fused truncated backprop (TBP) for DeepResistive/DeepHopfield + BlockCoordinateDescent.

``physgrad train --algorithm tbp`` runs on this kernel (``--engine fast``, through
:class:`physgrad.layered.steppers.FusedTBPStepper`). It computes the estimate of the generic route,
:class:`physgrad.learning.TruncatedBackprop` with ``steps = T`` sweeps and ``init="free"`` on the
preset's energy and :class:`physgrad.minimizers.block.BlockCoordinateDescent` (``tests/test_fused_tbp.py``
checks this in float64 for both models, one and two hidden layers and every schedule), by hand in
numpy instead of through autograd:

* **forward**: ``T`` block-coordinate sweeps from the free state ``s^*`` (held constant), each block
  update being :func:`physgrad.layered.fused.block_value` followed by
  :func:`~physgrad.layered.fused.clip_hidden` (the energy's ``block_solve``, the same code as the
  free phase); the pre-clip values ``z`` and the states before each group are kept (a few
  ``(B, n_k)`` arrays per sweep);
* **cost**: :math:`\bar C = \frac1B \sum_b \tfrac12 \|s_L - y\|^2` (``physgrad.learning.cost.mean_cost``),
  so the adjoint of the outputs starts at :math:`(s_L - y)/B`;
* **backward**: through the groups in reverse order. For a block update
  :math:`s_k = \mathrm{clip}(z_k)`, :math:`z_k = n_k\,/\,d_k` (DRN; DHN: :math:`d_k = 1`) with numerator
  :math:`n_k = s_{k-1}W_k + s_{k+1}W_{k+1}^\top + b_k` and denominator
  :math:`d_k = \mathbf 1 W_k + W_{k+1}\mathbf 1`, the adjoint :math:`\bar s_k` of the new value gives
  :math:`u_k = \bar s_k \odot m_k / d_k` with the clip mask :math:`m_k`, then
  :math:`\bar s_{k-1} \mathrel{+}= u_k W_k^\top`, :math:`\bar s_{k+1} \mathrel{+}= u_k W_{k+1}`,
  :math:`\bar b_k \mathrel{+}= \mathbf 1^\top u_k`, :math:`\bar W_k \mathrel{+}= s_{k-1}^\top u_k`,
  :math:`\bar W_{k+1} \mathrel{+}= u_k^\top s_{k+1}` and, for DRNs, :math:`\bar d_k = -\mathbf 1^\top(u_k\odot z_k)`
  on every column of :math:`W_k` and every row of :math:`W_{k+1}`. The adjoint of the overwritten
  value of a layer is 0 before the group's contributions are added (a block update does not read
  its own layer).

The clip masks follow autograd's conventions, so the two routes agree even on ties: a DRN hidden unit
(``maximum(z, 0)`` or ``minimum(z, 0)``) passes ``1`` inside its bound, ``0`` outside and ``1/2`` at
``z = 0`` exactly; a DHN unit (``clip(z, 0, 1)``) passes ``1`` strictly inside ``(0, 1)`` and ``0`` on
the bounds. A unit with no conductance (``d_k = 0``) is 0 V and passes nothing.

The input layer ``s_0`` is constant, so the first weight matrix's gradient is the rank-``(B+1)``
product :math:`\bar W_1 = [s_0;\mathbf 1]^\top [\sum_t u_1^{(t)};\ \bar d_1]` (DHN: :math:`s_0^\top \sum_t u_1^{(t)}`),
applied by the fused pass over ``W1`` of :func:`physgrad.layered.fused.first_layer_pass` (update,
clamp at 0 S, next batch's drive) as in centered EP.

References
----------
B. Scellier et al., "Fast algorithm to simulate nonlinear resistive networks", ICML 2024 (their
backprop baseline unrolls the block-coordinate sweeps from the free state).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from physgrad.layered.fused import (BatchConsts, Drive, FusedSpec, Workspace, block_value, clip_hidden, prepare,
                                    relax, update_first_layer)
from physgrad.types import PhysgradError

_colsum = np.add.reduce


@dataclass
class TBPGradient:
    """The TBP gradient of a batch, with ``dC/dW_1`` kept factored.

    Attributes
    ----------
    u1 : array (B, n_1)
        :math:`\\sum_t u_1^{(t)}`: ``dC/dW_1 = s_0^T u1`` (+ ``d1`` on every row for DRNs).
    d1 : array (n_1,) or None
        DRN: adjoint of the first layer's denominator (column sums of ``W_1``); DHN: None.
    weights : dict
        ``k -> dC/dW_k`` for ``k = 2..L``, arrays like ``W_k``.
    biases : list
        ``dC/db_k`` for ``k = 1..L``.
    cost : float
        The batch-mean cost after the ``T`` unrolled sweeps.
    """

    u1: np.ndarray
    d1: object
    weights: dict
    biases: list
    cost: float

    def full(self, s0) -> tuple:
        """The gradient as a tuple ``(dW_1, ..., dW_L, db_1, ..., db_L)`` (``s0``: the batch's input layer)."""
        gW1 = s0.T @ self.u1
        if self.d1 is not None:
            gW1 += self.d1[None, :]
        L = len(self.biases)
        return (gW1,) + tuple(self.weights[k] for k in range(2, L + 1)) + tuple(self.biases)


def _mask(spec: FusedSpec, v, z):
    """Derivative of the clip ``v = clip(z)`` of a hidden layer (autograd's conventions on ties)."""
    if spec.drn:  # maximum(z, 0) / minimum(z, 0): 1 inside, 0 outside, 1/2 at z == 0
        m = (v == z).astype(v.dtype)
        m -= 0.5 * (z == 0)
        return m
    return ((v != 0) & (v != 1)).astype(v.dtype)  # clip(z, 0, 1): 0 on the bounds


def tbp_gradient(spec: FusedSpec, params, consts: BatchConsts, free: list, y1h: np.ndarray,
                 sweeps: int) -> TBPGradient:
    r"""Gradient of the batch-mean cost after ``sweeps`` free sweeps unrolled from ``free``.

    Parameters
    ----------
    spec : FusedSpec
    params : tuple of arrays
        ``(W_1..W_L, b_1..b_L)`` in ``spec.dtype`` (not modified).
    consts : BatchConsts
        :func:`physgrad.layered.fused.prepare` of this batch (its drive ``s_0 W_1`` and ``1 W_1``).
    free : list of arrays
        The start of the unrolled trajectory, ``[s_1..s_L]`` each ``(B, n_k)`` (held constant).
    y1h : array (B, n_out)
        Targets.
    sweeps : int
        ``T`` (>= 1).

    Returns
    -------
    TBPGradient
    """
    if isinstance(sweeps, bool) or int(sweeps) != sweeps or sweeps < 1:
        raise PhysgradError(f"sweeps must be an integer >= 1, got {sweeps!r}")
    L = spec.n_layers
    Ws = params[:L]
    WT = consts.WT
    drn = spec.drn
    c_out, inv_out = consts.output(0.0, None)
    s = list(free)
    B = len(s[0])
    skinny = B <= 64
    # forward: keep the state before each group and each update's pre-clip value and clip mask
    tape = []
    for _ in range(int(sweeps)):
        for group in spec.groups:
            pre = list(s)
            rec = []
            for k in group:
                z = block_value(spec, consts, Ws, pre, k, c_out, inv_out, skinny)
                if k < L:
                    v = clip_hidden(spec, k, z.copy())
                    rec.append((k, z, _mask(spec, v, z)))
                else:
                    v = z
                    rec.append((k, z, None))
                s[k - 1] = v
            tape.append((pre, rec))
    err = s[L - 1] - y1h
    cost = float(0.5 * np.sum(err * err) / B)
    # backward
    g = [None] * L
    g[L - 1] = err / B
    u1 = np.zeros((B, spec.sizes[1]), spec.dtype)
    down = {k: [] for k in range(2, L + 1)}  # k -> [(s_{k-1}, u_k)]: s_{k-1}^T u_k
    up = {k: [] for k in range(2, L + 1)}    # k -> [(u_{k-1}, s_k)]: u_{k-1}^T s_k
    gden = {k: np.zeros(spec.sizes[k], spec.dtype) for k in range(1, L + 1)} if drn else None
    gb = [np.zeros(spec.sizes[k], spec.dtype) for k in range(1, L + 1)]

    def add(k, v):
        g[k - 1] = v if g[k - 1] is None else g[k - 1] + v

    for pre, rec in reversed(tape):
        bar = {k: g[k - 1] for k, _, _ in rec}
        for k, _, _ in rec:
            g[k - 1] = None
        for k, z, m in rec:
            u = bar[k]
            if u is None:
                continue
            if m is not None:
                u = u * m
            if drn:
                u = u * (consts.inv[k] if k < L else inv_out)
                gden[k] -= _colsum(u * z)
            gb[k - 1] += _colsum(u)
            if k == 1:
                u1 += u
            else:
                add(k - 1, np.matmul(Ws[k - 1], u.T).T if skinny else u @ WT[k])
                down[k].append((pre[k - 2], u))
            if k < L:
                add(k + 1, np.matmul(WT[k + 1], u.T).T if skinny else u @ Ws[k])
                up[k + 1].append((u, pre[k]))
    weights = {}
    for k in range(2, L + 1):
        gW = np.zeros(Ws[k - 1].shape, spec.dtype)
        if down[k]:
            gW += np.concatenate([a for a, _ in down[k]]).T @ np.concatenate([u for _, u in down[k]])
        if up[k]:
            gW += np.concatenate([u for u, _ in up[k]]).T @ np.concatenate([h for _, h in up[k]])
        if drn:  # d_k holds the column sums of W_k, d_{k-1} the row sums
            gW += gden[k][None, :]
            gW += gden[k - 1][:, None]
        weights[k] = gW
    return TBPGradient(u1, gden[1] if drn else None, weights, gb, cost)


def tbp_step(spec: FusedSpec, params, ws: Workspace, drive: Drive, s_warm: list, y1h: np.ndarray,
             weight_lrs, bias_lrs, sweeps: int, s0: np.ndarray, next_s0=None):
    r"""One truncated-backprop SGD step on a batch; updates the arrays of ``params`` **in place**.

    Free phase (``sweeps`` sweeps from ``s_warm``), then :func:`tbp_gradient` over ``sweeps``
    sweeps unrolled from the free state, then ``theta <- project(theta - lr * dC/dtheta)``
    (conductances clamped at 0 S for DRNs); ``W_1`` through the fused pass, which also gives the
    next batch's drive.

    Parameters
    ----------
    params : tuple of arrays
        ``(W_1..W_L, b_1..b_L)`` in ``spec.dtype``; modified in place.
    ws : Workspace
    drive : Drive
        ``s0 @ W1`` and ``1 @ W1`` for this batch (from the previous call or :func:`make_drive`).
    s_warm : list of arrays
        Warm start of the free phase (the previous batch's free state).
    y1h : array (B, n_out)
    weight_lrs, bias_lrs : sequence of float
        Learning rate per layer.
    sweeps : int
        Sweeps of the free phase and of the unrolled trajectory (the preset's ``sweeps``).
    s0 : array (B, n0)
        This batch's input layer; ``next_s0`` the next batch's (or None).

    Returns
    -------
    free : list
        The free state (predictions ``argmax(free[-1])``; the next batch's warm start).
    next_drive : Drive or None
        ``next_s0 @ W1`` and the column sums (DRN) after the update.
    """
    L = spec.n_layers
    Ws, bs = params[:L], params[L:]
    consts = prepare(spec, params, drive)
    free = relax(spec, params, drive, s_warm, sweeps, consts=consts)
    grad = tbp_gradient(spec, params, consts, free, y1h, sweeps)
    for k in range(L):
        b = bs[k]
        b -= bias_lrs[k] * grad.biases[k]
    for k in range(2, L + 1):
        W = Ws[k - 1]
        W -= weight_lrs[k - 1] * grad.weights[k]
        if spec.drn:
            np.maximum(W, 0, out=W)
    lr1 = -weight_lrs[0]
    if spec.drn:
        AT = np.ascontiguousarray(np.concatenate([s0, np.ones((1, s0.shape[1]), s0.dtype)]).T)
        Bm = np.concatenate([grad.u1, grad.d1[None]]) * lr1
    else:
        AT = np.ascontiguousarray(s0.T)
        Bm = grad.u1 * lr1
    return free, update_first_layer(spec, ws, Ws[0], AT, Bm, next_s0)


__all__ = ["TBPGradient", "tbp_gradient", "tbp_step"]

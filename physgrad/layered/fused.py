r"""Fast float32 centered-EP training of layered networks (DRN and DHN) on a CPU.

This is the training path of ``physgrad train`` for ``--algorithm cep``. It computes exactly the
same update as the generic route (:class:`physgrad.energies.layered.DeepResistive` +
:class:`physgrad.minimizers.block.BlockCoordinateDescent` + the centered EP rule of
:mod:`physgrad.learning`), checked in ``tests/test_layered_fast.py`` in float64, but organised
around the cost that dominates at batch 4: passes over the first weight matrix ``W1``
(1568 x 1024 for DRN-1H, 6.4 MB in float32).

What it does per batch (``B`` samples, ``L`` weight layers):

* The input drive ``a1 = s0 @ W1`` and the column sums ``c1 = 1 @ W1`` do not change within a
  batch; they are computed once, as one product ``[s0; 1] @ W1``, and reused by every sweep of the
  three phases (free, ``-beta``, ``+beta``).
* In centered EP the input terms of ``dE/dW1 = 1/2 (s0_i - s1_j)^2`` cancel between the two
  nudged phases except for ``-s0_i (h+_j - h-_j)``, so the update is the rank-``(B+1)`` product

  .. math:: W_1 \mathrel{+}= \frac{\eta}{2\beta B}\,[s_0;\,-\mathbf 1]^\top
            [h^+ - h^-;\ \tfrac12 \textstyle\sum_b (h^{+2} - h^{-2})].

* Update, clamp at 0, and the next batch's ``[s0'; 1] @ W1`` are fused over row blocks of ``W1``
  small enough to stay in the L2 cache, so ``W1`` is read and written about once per batch from
  memory instead of ~6 times (update, clamp, column sums, drive).
* The two nudged phases (``-beta`` and ``+beta``) start from the same free state and are
  independent, so they are relaxed together as one stacked batch of ``2B`` rows (each row with its
  own beta): half the numpy calls.
* The row blocks are split between ``n_threads`` Python threads (numpy releases the GIL inside
  ``matmul``/ufuncs) with BLAS limited to one thread each (``threadpoolctl``); the partial drives
  are summed in a fixed order, so results do not depend on timing.

The weights are updated **in place** (the functions ending in ``_`` mutate their arguments); the
network state ``s`` is plain data passed in and returned.

References
----------
B. Scellier et al., "Fast algorithm to simulate nonlinear resistive networks", ICML 2024.
A. Laborieux et al., "Scaling equilibrium propagation to deep ConvNets", 2021 (centered EP).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal, Optional

import numpy as np

from physgrad.types import PhysgradError

Model = Literal["drn", "dhn"]
SCHEDULES = ("asynchronous", "synchronous", "forward", "backward")


@dataclass(frozen=True)
class FastNet:
    """Static description of a layered network for the fast path.

    Attributes
    ----------
    model : {"drn", "dhn"}
    sizes : tuple of int
        Layer sizes, input first (DRN: the doubled input, 1568 for MNIST).
    input_gain : float
        DRN input voltage per unit pixel (V); ignored for DHNs.
    schedule : {"asynchronous", "synchronous", "forward", "backward"}
    """

    model: Model
    sizes: tuple
    input_gain: float = 1.0
    schedule: str = "asynchronous"

    def __post_init__(self):
        if self.model not in ("drn", "dhn"):
            raise PhysgradError(f"model must be 'drn' or 'dhn', got {self.model!r}")
        if self.schedule not in SCHEDULES:
            raise PhysgradError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if len(self.sizes) < 2:
            raise PhysgradError("need at least an input and an output layer")

    @property
    def n_layers(self) -> int:
        """Number of weight layers ``L`` (= free layers)."""
        return len(self.sizes) - 1

    def groups(self) -> list:
        """Free-layer indices (1..L) updated together, in order, in one sweep."""
        free = list(range(1, self.n_layers + 1))
        if self.schedule == "asynchronous":
            return [free[0::2], free[1::2]] if len(free) > 1 else [free]
        if self.schedule == "synchronous":
            return [free]
        if self.schedule == "forward":
            return [[k] for k in free]
        return [[k] for k in reversed(free)]


def input_layer(net: FastNet, x: np.ndarray, dtype=np.float32) -> np.ndarray:
    """The input layer's values ``s0`` for pixels ``x`` in [0, 1], shape ``(B, sizes[0])``.

    DRN: voltage sources at ``gain * (x, -x)`` (V). DHN: ``x``.
    """
    x = np.asarray(x, dtype=dtype)
    if net.model == "drn":
        return (net.input_gain * np.concatenate([x, -x], axis=1)).astype(dtype, copy=False)
    return x


def init_params(net: FastNet, rng: np.random.Generator, weight_gain: float = 1.0, dtype=np.float32):
    """Initial ``(W_1..W_L, b_1..b_L)``: ``W_k ~ U(+-gain/sqrt(n_{k-1}))`` (DRN: clamped at 0), ``b = 0``."""
    Ws, bs = [], []
    for n_in, n_out in zip(net.sizes[:-1], net.sizes[1:]):
        scale = weight_gain / np.sqrt(n_in)
        W = rng.uniform(-scale, scale, size=(n_in, n_out)).astype(dtype)
        if net.model == "drn":
            np.maximum(W, 0, out=W)
        Ws.append(W)
        bs.append(np.zeros(n_out, dtype=dtype))
    return tuple(Ws) + tuple(bs)


class Workspace:
    """Buffers and the thread pool of the fast path (no network state lives here).

    Parameters
    ----------
    net : FastNet
    batch_size : int
    n_threads : int
        Threads sharing the passes over ``W1`` (1 or 2 on a 2-core machine).
    block_rows : int, optional
        Rows of ``W1`` per fused block (default: about 512 KB per block, to stay in L2).
    """

    def __init__(self, net: FastNet, batch_size: int, n_threads: int = 2, block_rows: Optional[int] = None,
                 dtype=np.float32):
        if n_threads < 1:
            raise PhysgradError(f"n_threads must be >= 1, got {n_threads}")
        self.net, self.dtype = net, np.dtype(dtype)
        n0, n1 = net.sizes[0], net.sizes[1]
        if block_rows is None:  # blocks of about 512 KB stay in a 2 MB L2 with their buffer
            row_bytes = n1 * np.dtype(dtype).itemsize
            block_rows = n0 if n0 * row_bytes <= (1 << 20) else max(8, (512 * 1024) // row_bytes)
        self.n_threads, self.block_rows = int(n_threads), int(min(block_rows, n0))
        bounds = np.linspace(0, n0, self.n_threads + 1).astype(int)
        self.ranges = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self.pool = ThreadPoolExecutor(self.n_threads - 1) if self.n_threads > 1 else None
        self.acc = [np.zeros((batch_size + 1, n1), self.dtype) for _ in self.ranges]
        self.tmp = [np.empty((batch_size + 1, n1), self.dtype) for _ in self.ranges]
        self.buf = [np.empty((self.block_rows, n1), self.dtype) for _ in self.ranges]

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


def _fused_rows(W, lo, hi, rows, AT, Bm, clamp, P, acc, tmp, buf):
    """On rows ``lo:hi`` of ``W``: ``W += AT @ Bm``; clamp at 0; ``acc = P @ W`` (blocked)."""
    acc[: len(P) if P is not None else 0] = 0
    for r0 in range(lo, hi, rows):
        r1 = min(r0 + rows, hi)
        Wb = W[r0:r1]
        if AT is not None:
            b = buf[: r1 - r0]
            np.matmul(AT[r0:r1], Bm, out=b)
            np.add(Wb, b, out=Wb)
            if clamp:
                np.maximum(Wb, 0, out=Wb)
        if P is not None:
            t = tmp[: len(P)]
            np.matmul(P[:, r0:r1], Wb, out=t)
            np.add(acc[: len(P)], t, out=acc[: len(P)])


def first_layer_pass_(ws: Workspace, W1, AT=None, Bm=None, P=None):
    """Fused pass over ``W1`` (in place): optional rank update ``W1 += AT @ Bm`` then clamp (DRN),
    then the drive ``P @ W1`` of the next inputs ``P`` (shape ``(m, n0)``, ``m <= B+1``).

    Returns
    -------
    array (m, n1) or None
        ``P @ W1`` after the update, summed over threads in a fixed order.
    """
    clamp = ws.net.model == "drn"
    if P is not None:
        P = np.ascontiguousarray(P, dtype=ws.dtype)
    jobs = []
    for t, (lo, hi) in enumerate(ws.ranges[1:], start=1):
        jobs.append(ws.pool.submit(_fused_rows, W1, lo, hi, ws.block_rows, AT, Bm, clamp, P,
                                   ws.acc[t], ws.tmp[t], ws.buf[t]))
    lo, hi = ws.ranges[0]
    _fused_rows(W1, lo, hi, ws.block_rows, AT, Bm, clamp, P, ws.acc[0], ws.tmp[0], ws.buf[0])
    for j in jobs:
        j.result()
    if P is None:
        return None
    out = ws.acc[0][: len(P)].copy()
    for acc in ws.acc[1:]:
        out += acc[: len(P)]
    return out


@dataclass
class Drive:
    """Per-batch constants: input drive ``a1 = s0 @ W1`` and, for DRNs, the denominators."""

    a1: np.ndarray          # (B, n1)
    c1: Optional[np.ndarray]  # (n1,) column sums of W1 (DRN) or None


_colsum = np.add.reduce  # column sums (axis 0 is the default); a ufunc call, less overhead than .sum()


def _sums(net: FastNet, params):
    """Column and row sums of ``W_2..W_L`` (DRN), index k -> (colsum W_k, rowsum W_k)."""
    L = net.n_layers
    Ws = params[:L]
    return {k: (_colsum(Ws[k - 1]), np.add.reduce(Ws[k - 1], axis=1)) for k in range(2, L + 1)}


_BOUNDS_CACHE: dict = {}


def _recip(den):
    """``1/den``, with 0 where ``den <= 0`` (a unit with no conductance at all is set to 0 V)."""
    if den.min() > 0:
        return 1.0 / den
    return np.divide(1.0, den, out=np.zeros_like(den), where=den > 0)


def _diode_bounds(net: FastNet, dtype) -> dict:
    """Per hidden layer ``(lo, hi)``: ``[0, inf)`` for the first half of the units, ``(-inf, 0]`` for the rest."""
    key = (net.sizes, np.dtype(dtype).str)
    if key not in _BOUNDS_CACHE:
        out = {}
        for k in range(1, net.n_layers):
            n, half = net.sizes[k], net.sizes[k] // 2
            lo = np.full(n, -np.inf, dtype=dtype)
            hi = np.full(n, np.inf, dtype=dtype)
            lo[:half] = 0
            hi[half:] = 0
            out[k] = (lo, hi)
        _BOUNDS_CACHE[key] = out
    return _BOUNDS_CACHE[key]


@dataclass
class BatchConsts:
    """What every sweep of a batch's three phases shares: per free layer ``k`` the constant part of
    the numerator (``a1 + b1`` for the first layer, ``b_k`` otherwise) and ``1/denominator`` (DRN;
    units with no conductance at all get 0, i.e. are set to 0 V); the output layer's terms depend
    on ``beta`` and are made by :meth:`output`."""

    net: FastNet
    const: dict
    inv: dict
    den_out: Optional[np.ndarray]
    groups: list
    WT: dict
    bounds: dict

    def output(self, beta, y):
        """``(constant numerator, 1/denominator)`` of the output layer for nudge ``beta``: a number,
        or a column ``(rows, 1)`` giving each row of the batch its own beta (stacked phases)."""
        L = self.net.n_layers
        c = self.const[L]
        nudged = np.ndim(beta) > 0 or beta != 0
        if nudged:
            c = c + beta * y
        if self.den_out is None:  # DHN: (num + beta y) / (1 + beta)
            return c, (np.asarray(1.0 / (1.0 + beta), dtype=c.dtype) if nudged else None)
        den = self.den_out + beta if nudged else self.den_out
        if nudged and np.min(beta) < 0 and den.min() <= 0:
            raise PhysgradError(f"beta={-np.min(beta):g}: the -beta phase is non-convex (an output's total "
                                f"conductance {self.den_out.min():.4g} S <= beta); lower beta")
        return c, _recip(den)


def prepare(net: FastNet, params, drive: Drive, sums=None) -> BatchConsts:
    """The :class:`BatchConsts` of a batch (``sums``: cached column/row sums of ``W_2..W_L``)."""
    L = net.n_layers
    bs = params[L:]
    drn = net.model == "drn"
    if drn and sums is None:
        sums = _sums(net, params)
    const = {1: drive.a1 + bs[0]} if drive.a1 is not None else {}
    const.update({k: bs[k - 1] for k in range(2, L + 1)})
    inv, den_out = {}, None
    if drn:
        for k in range(1, L + 1):
            den = drive.c1 if k == 1 else sums[k][0]
            if k < L:
                den = den + sums[k + 1][1]
                inv[k] = _recip(den)
            else:
                den_out = den
    WT = {k: np.ascontiguousarray(params[k - 1].T) for k in range(2, L + 1)}  # W_k^T, row-major
    return BatchConsts(net, const, inv, den_out, net.groups(), WT, _diode_bounds(net, bs[0].dtype) if drn else {})


def relax(net: FastNet, params, drive: Drive, s: list, sweeps: int, beta: float = 0.0,
          y: Optional[np.ndarray] = None, sums=None, consts: Optional[BatchConsts] = None) -> list:
    """Block-coordinate sweeps from state ``s`` (a list ``[s_1..s_L]``), returns the new list.

    Each block update is the exact minimiser of the (nudged) energy in that layer, all other
    layers fixed: DRN ``s_k = clip((s_{k-1} W_k + W_{k+1} s_{k+1} + b_k [+ beta y]) /
    (1 W_k + W_{k+1} 1 [+ beta]))``; DHN ``s_k = clip(s_{k-1} W_k + W_{k+1} s_{k+1} + b_k, 0, 1)``,
    output ``(s_{L-1} W_L + b_L + beta y) / (1 + beta)``.
    """
    if consts is None:
        consts = prepare(net, params, drive, sums)
    L = net.n_layers
    Ws = params[:L]
    drn = net.model == "drn"
    c_out, inv_out = consts.output(beta, y)
    WT = consts.WT
    s = list(s)
    # A few rows against a large matrix (training, batch 4): (W @ v.T).T and (W^T @ v.T).T with W^T
    # cached contiguous are the fastest BLAS layouts. Many rows (evaluation): plain products, so that
    # the results stay row-major and the element-wise steps run over contiguous memory.
    skinny = s[0].shape[0] <= 64
    for _ in range(sweeps):
        for group in consts.groups:
            new = []
            for k in group:
                if k < L:
                    num = (np.matmul(Ws[k], s[k].T).T if skinny else s[k] @ WT[k + 1]) + consts.const[k]
                    if k > 1:
                        num += np.matmul(WT[k], s[k - 2].T).T if skinny else s[k - 2] @ Ws[k - 1]
                    if drn:  # diodes: first half >= 0, second half <= 0 (ufuncs: less call overhead than clip)
                        num *= consts.inv[k]
                        lo, hi = consts.bounds[k]
                        np.maximum(num, lo, out=num)
                        np.minimum(num, hi, out=num)
                    else:
                        np.maximum(num, 0, out=num)
                        np.minimum(num, 1, out=num)
                else:
                    if k == 1:
                        num = c_out.copy()
                    else:
                        num = (np.matmul(WT[k], s[k - 2].T).T if skinny else s[k - 2] @ Ws[k - 1]) + c_out
                    if inv_out is not None:
                        num *= inv_out
                new.append((k, num))
            for k, v in new:
                s[k - 1] = v
    return s


def zero_state(net: FastNet, batch: int, dtype=np.float32) -> list:
    return [np.zeros((batch, n), dtype) for n in net.sizes[1:]]


def evaluate(net: FastNet, params, x: np.ndarray, sweeps: int, batch: Optional[int] = None, n_threads: int = 2):
    """Predicted classes for pixels ``x`` (n, 784), relaxing from the zero state.

    Uses large batches (default: as many samples as keep one layer's state near 2 MB, between 256
    and 10,000) so the input drive is a large BLAS ``sgemm`` (run with ``n_threads`` BLAS threads)
    while the element-wise block updates stay in cache. For DRNs see :func:`_drn_eval_operators`.
    """
    from threadpoolctl import threadpool_limits

    W1 = params[0]
    dtype = W1.dtype
    n_pix = net.sizes[0] // 2 if net.model == "drn" else net.sizes[0]
    if np.ndim(x) != 2 or np.shape(x)[1] != n_pix:
        raise PhysgradError(f"inputs must have shape (n, {n_pix}), got {np.shape(x)}")
    preds = np.empty(len(x), dtype=np.int64)
    if batch is None:  # states of ~2 MB per layer: the element-wise block updates stay in cache
        batch = int(max(256, min(10000, (2 << 20) // (4 * max(net.sizes[1:])))))
    with threadpool_limits(n_threads):
        if net.model == "drn" and net.n_layers > 1 and batch > 64:
            ops = _drn_eval_operators(net, params)
            for i in range(0, len(x), batch):
                preds[i:i + batch] = np.argmax(_drn_eval_relax(net, ops, np.asarray(x[i:i + batch], dtype), sweeps),
                                               axis=1)
            return preds
        if net.model == "drn":
            n = net.sizes[0] // 2
            Weff = (W1[:n] - W1[n:]) * dtype.type(net.input_gain)
            c1 = W1.sum(axis=0)
        else:
            Weff, c1 = W1, None
        sums = _sums(net, params) if net.model == "drn" else None
        for i in range(0, len(x), batch):
            xb = np.asarray(x[i:i + batch], dtype=dtype)
            a1 = xb @ Weff
            s = relax(net, params, Drive(a1, c1), zero_state(net, len(xb), dtype), sweeps, sums=sums)
            preds[i:i + batch] = np.argmax(s[-1], axis=1)
    return preds


def _drn_eval_operators(net: FastNet, params) -> dict:
    r"""Operators of the free-phase block updates of a DRN with the diode signs and the
    denominators folded into the weights, for large-batch evaluation.

    Hidden layer ``k`` is stored as ``h'_k = sigma_k * h_k >= 0`` (``sigma_k = +1`` on the first half
    of the units, ``-1`` on the second), so its clipped update is one ``max(., 0)``:

    .. math:: h'_k = \max\big(0,\ h'_{k-1} D_k + h'_{k+1} U_k + c_k\big),\quad
              D_k = \operatorname{diag}(\sigma_{k-1}) W_k \operatorname{diag}(\sigma_k/d_k),\
              U_k = \operatorname{diag}(\sigma_{k+1}) W_{k+1}^\top \operatorname{diag}(\sigma_k/d_k),

    ``c_k = b_k sigma_k / d_k`` (``d_k`` the unit's total conductance; 0 where ``d_k = 0``) and for
    the first layer ``h'_0 D_1 = x @ (g (W1_top - W1_bottom) diag(sigma_1/d_1))`` (the doubled input
    folded in). The output layer has ``sigma = 1`` and no clip. Three element-wise passes per hidden
    update instead of five.
    """
    L = net.n_layers
    Ws, bs = params[:L], params[L:]
    dtype = Ws[0].dtype
    sums = _sums(net, params)
    sig = {k: np.where(np.arange(net.sizes[k]) < net.sizes[k] // 2, 1, -1).astype(dtype) for k in range(1, L)}
    sig[L] = np.ones(net.sizes[L], dtype)
    scale = {}
    for k in range(1, L + 1):
        den = _colsum(Ws[0]) if k == 1 else sums[k][0]
        if k < L:
            den = den + sums[k + 1][1]
        scale[k] = sig[k] * np.divide(1.0, den, out=np.zeros_like(den), where=den > 0)
    n = net.sizes[0] // 2
    ops = {"in": (Ws[0][:n] - Ws[0][n:]) * (dtype.type(net.input_gain) * scale[1]),
           "c": {k: bs[k - 1] * scale[k] for k in range(1, L + 1)},
           "down": {k: (sig[k - 1][:, None] * Ws[k - 1]) * scale[k] for k in range(2, L + 1)},
           "up": {k: (sig[k + 1][:, None] * Ws[k].T) * scale[k] for k in range(1, L)}}
    return ops


def _drn_eval_relax(net: FastNet, ops: dict, x, sweeps: int):
    """Output layer after ``sweeps`` sweeps from the zero state, with :func:`_drn_eval_operators`."""
    L = net.n_layers
    a = x @ ops["in"]
    a += ops["c"][1]
    h = {k: np.zeros((len(x), net.sizes[k]), a.dtype) for k in range(1, L + 1)}
    for _ in range(sweeps):
        for group in net.groups():
            new = {}
            for k in group:
                num = a + h[2] @ ops["up"][1] if k == 1 else h[k - 1] @ ops["down"][k]
                if k > 1:
                    num += ops["c"][k]
                    if k < L:
                        num += h[k + 1] @ ops["up"][k]
                if k < L:
                    np.maximum(num, 0, out=num)
                new[k] = num
            h.update(new)
    return h[L]


def cep_batch_(net: FastNet, params, ws: Workspace, drive: Drive, s_warm: list, y1h: np.ndarray,
               beta: float, weight_lrs, bias_lrs, sweeps: int, s0: np.ndarray, next_s0=None):
    """One centered-EP step on a batch (in place on ``params``), returning what the next needs.

    Parameters
    ----------
    drive : Drive
        ``s0 @ W1`` and ``1 @ W1`` for this batch (from the previous call or :func:`make_drive`).
    s_warm : list of arrays
        Warm start of the free phase (the previous batch's final ``+beta`` state).
    y1h : array (B, n_out)
        One-hot targets.
    s0 : array (B, n0)
        This batch's input layer; ``next_s0`` the next batch's (or None).

    Returns
    -------
    free : list
        The free state (predictions are ``argmax(free[-1])``).
    s_plus : list
        The ``+beta`` state (warm start of the next batch).
    next_drive : Drive or None
    """
    L = net.n_layers
    Ws, bs = params[:L], params[L:]
    drn = net.model == "drn"
    B = len(y1h)
    consts = prepare(net, params, drive)
    free = relax(net, params, drive, s_warm, sweeps, consts=consts)
    # the two nudged phases start from the same free state and are independent: relax them as one
    # stacked batch (rows 0..B-1 at -beta, rows B..2B-1 at +beta), half the calls, same arithmetic
    stacked = replace(consts, const={**consts.const, 1: np.concatenate([consts.const[1]] * 2)})
    betas = np.repeat(np.array([-beta, beta], dtype=y1h.dtype), B)[:, None]
    both = relax(net, params, drive, [np.concatenate([f, f]) for f in free], sweeps, betas,
                 np.concatenate([y1h, y1h]), consts=stacked)
    s_m = [a[:B] for a in both]
    s_p = [a[B:] for a in both]
    scale = 1.0 / (2.0 * beta * B)
    # biases: dE/db = -mean s  ->  b += lr (s+ - s-)/(2 beta) averaged
    for k in range(L):
        b = bs[k]
        b += (bias_lrs[k] * scale) * (_colsum(s_p[k]) - _colsum(s_m[k]))
    # deeper weights: one in-place rank-(2B+2) update each
    for k in range(2, L + 1):
        a_p, a_m, h_p, h_m = s_p[k - 2], s_m[k - 2], s_p[k - 1], s_m[k - 1]
        if drn:
            r = 0.5 * (_colsum(a_p * a_p) - _colsum(a_m * a_m))
            q = 0.5 * (_colsum(h_p * h_p) - _colsum(h_m * h_m))
            A = np.concatenate([a_p, -a_m, -r[None], -np.ones((1, len(r)), a_p.dtype)])
            Bm = np.concatenate([h_p, h_m, np.ones((1, len(q)), h_p.dtype), q[None]])
        else:  # dE/dW = -s_{k-1}^T s_k
            A = np.concatenate([a_p, -a_m])
            Bm = np.concatenate([h_p, h_m])
        Bm *= weight_lrs[k - 1] * scale
        W = Ws[k - 1]
        W += A.T @ Bm
        if drn:
            np.maximum(W, 0, out=W)
    # first layer: fused rank update + clamp + next drive
    D = s_p[0] - s_m[0]
    if drn:
        q1 = 0.5 * (_colsum(s_p[0] * s_p[0]) - _colsum(s_m[0] * s_m[0]))
        AT = np.ascontiguousarray(np.concatenate([s0, -np.ones((1, s0.shape[1]), s0.dtype)]).T)
        Bm = np.concatenate([D, q1[None]]) * (weight_lrs[0] * scale)
    else:
        AT = np.ascontiguousarray(s0.T)
        Bm = D * (weight_lrs[0] * scale)
    Bm = np.ascontiguousarray(Bm, dtype=Ws[0].dtype)
    P = None
    if drn:
        ones = np.ones((1, net.sizes[0]), Ws[0].dtype)
        P = ones if next_s0 is None else np.concatenate([next_s0, ones])
    elif next_s0 is not None:
        P = next_s0
    out = first_layer_pass_(ws, Ws[0], AT, Bm, P)
    next_drive = None
    if out is not None:
        if drn:
            next_drive = Drive(out[:-1], out[-1]) if next_s0 is not None else Drive(None, out[-1])
        else:
            next_drive = Drive(out, None)
    return free, s_p, next_drive


def make_drive(net: FastNet, ws: Workspace, W1, s0) -> Drive:
    """``Drive`` for input layer ``s0`` with the current ``W1`` (same blocked sums as the fused pass)."""
    if net.model == "drn":
        out = first_layer_pass_(ws, W1, P=np.concatenate([s0, np.ones((1, s0.shape[1]), s0.dtype)]))
        return Drive(out[:-1], out[-1])
    return Drive(first_layer_pass_(ws, W1, P=s0), None)


def reference_cep_step(net: FastNet, params, x, y1h, s_warm, beta, weight_lrs, bias_lrs, sweeps):
    """Straightforward numpy centered-EP step (pure: returns new params), the baseline of the benchmark.

    Recomputes ``s0 @ W1`` and the column sums in every sweep, forms each gradient
    ``dE/dW_k = mean_b 1/2 (s_{k-1} - s_k)^2`` as a full matrix per phase, then updates and clamps.

    Returns
    -------
    new_params, free, s_plus
    """
    L = net.n_layers
    Ws, bs = list(params[:L]), list(params[L:])
    s0 = input_layer(net, x, Ws[0].dtype)
    drn = net.model == "drn"

    def phase(s, b_):
        for _ in range(sweeps):
            drive = Drive(s0 @ Ws[0], Ws[0].sum(axis=0) if drn else None)
            s = relax(net, tuple(Ws) + tuple(bs), drive, s, 1, b_, y1h)
        return s

    free = phase(list(s_warm), 0.0)
    s_m = phase(free, -beta)
    s_p = phase(free, beta)
    layers_m, layers_p = [s0] + s_m, [s0] + s_p

    def dEdW(lay, k):
        a, h = lay[k - 1], lay[k]
        if drn:
            return 0.5 * ((a * a).mean(0)[:, None] + (h * h).mean(0)[None, :]) - a.T @ h / len(a)
        return -(a.T @ h) / len(a)

    newW, newb = [], []
    for k in range(1, L + 1):
        g = (dEdW(layers_p, k) - dEdW(layers_m, k)) / (2 * beta)
        W = Ws[k - 1] - weight_lrs[k - 1] * g
        newW.append(np.maximum(W, 0) if drn else W)
        gb = -(s_p[k - 1].mean(0) - s_m[k - 1].mean(0)) / (2 * beta)
        newb.append(bs[k - 1] - bias_lrs[k - 1] * gb)
    return tuple(newW) + tuple(newb), free, s_p

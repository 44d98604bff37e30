r"""The fused float32 C-EP kernel of DeepResistive/DeepHopfield + BlockCoordinateDescent + centered EP.

``physgrad train --algorithm cep`` runs on this kernel (``--engine fast``, through
:class:`physgrad.layered.steppers.FusedCEPStepper`). It defines no network of its own: a
:class:`FusedSpec` is built from the energy (:class:`physgrad.energies.layered.DeepResistive` or
:class:`~physgrad.energies.layered.DeepHopfield`: sizes, input layer, diode bounds, the ``-beta``
convexity check; the initial parameters are ``energy.init_theta``) and the block minimizer's schedule
(:func:`physgrad.minimizers.block.layer_groups`). It computes the update of the generic route --
:class:`physgrad.minimizers.block.BlockCoordinateDescent` on that energy with the centered
:class:`physgrad.learning.EquilibriumPropagation` rule -- (``tests/test_fused.py`` checks this in
float64 over both models, every schedule and several depths), with the arithmetic rearranged around
the cost that dominates at batch 4: passes over the first weight matrix ``W1`` (1568 x 1024 for
DRN-1H, 6.4 MB in float32).

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
  ``matmul``/ufuncs); the caller limits BLAS to one thread each (``threadpoolctl``). The partial
  drives are summed in a fixed order, so results do not depend on timing.
* Evaluation (many samples from the zero state) folds the DRN's diode signs, denominators and
  doubled input into the weights (:func:`_drn_eval_operators`).

:func:`cep_step` and :func:`first_layer_pass` update the parameters **in place** (the arrays of the
``params`` tuple); the network state ``s`` is plain data passed in and returned.

References
----------
B. Scellier et al., "Fast algorithm to simulate nonlinear resistive networks", ICML 2024.
A. Laborieux et al., "Scaling equilibrium propagation to deep ConvNets", 2021 (centered EP).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Optional, Union

import numpy as np

from physgrad.energies.layered import DeepHopfield, DeepResistive
from physgrad.minimizers.block import Schedule, layer_groups
from physgrad.types import PhysgradError

DTYPES = ("float32", "float64")


@dataclass(frozen=True, eq=False)
class FusedSpec:
    """What the fused kernels read about a network: all of it derived from the energy and the schedule.

    Parameters
    ----------
    energy : DeepResistive or DeepHopfield
        The network: sizes, input layer, diode bounds and the ``-beta`` convexity check.
    schedule : {"asynchronous", "synchronous", "forward", "backward"}
        Block-coordinate schedule; one sweep updates the groups ``layer_groups(L, schedule)``.
    dtype : {"float32", "float64"}
        Arithmetic of the kernels: float32 to train, float64 to compare with the generic route.

    Attributes
    ----------
    drn : bool
        ``energy`` is a :class:`DeepResistive` (conductances, diodes, denominators).
    sizes, n_layers : tuple of int, int
        ``energy.sizes`` (input layer first) and ``energy.n_layers`` (``L``, the weight layers).
    groups : tuple of tuple of int
        Free layers (1..L) updated together, in order, in one sweep.
    bounds : dict
        DRN: ``k -> (lo, hi)``, the diode bounds ``energy.bounds(k)`` of hidden layer ``k`` (V) in
        ``dtype``; DHN: empty (hidden units are clipped to [0, 1]).
    """

    energy: Union[DeepResistive, DeepHopfield]
    schedule: Schedule = "asynchronous"
    dtype: object = "float32"
    drn: bool = field(init=False)
    sizes: tuple = field(init=False)
    n_layers: int = field(init=False)
    groups: tuple = field(init=False)
    bounds: dict = field(init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.energy, (DeepResistive, DeepHopfield)):
            raise PhysgradError(f"the fused kernels implement DeepResistive and DeepHopfield energies, "
                                f"not {type(self.energy).__name__}")
        dtype = np.dtype(self.dtype)
        if dtype.name not in DTYPES:
            raise PhysgradError(f"dtype must be one of {DTYPES}, got {dtype.name!r}")
        L = self.energy.n_layers
        drn = isinstance(self.energy, DeepResistive)
        if drn and self.energy.amplified:
            raise PhysgradError(f"the fused kernels implement the DRN without amplifiers between layers, not "
                                f"amplifier_gains={self.energy.amplifier_gains}: use the generic engine "
                                f"(--engine generic)")
        bounds = {k: tuple(np.asarray(b, dtype) for b in self.energy.bounds(k)) for k in range(1, L)} if drn else {}
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "drn", drn)
        object.__setattr__(self, "sizes", self.energy.sizes)
        object.__setattr__(self, "n_layers", L)
        object.__setattr__(self, "groups", tuple(tuple(g) for g in layer_groups(L, self.schedule)))
        object.__setattr__(self, "bounds", bounds)

    def input_layer(self, x) -> np.ndarray:
        """``energy.input_layer(x)`` computed in ``dtype``, shape ``(B, sizes[0])`` (DRN: ``g (x, -x)`` in V)."""
        return self.energy.input_layer(x, self.dtype)

    def zero_state(self, batch: int) -> list:
        """``[s_1, ..., s_L]`` at 0 V, each ``(batch, n_k)`` in ``dtype``."""
        return list(self.energy.zero_state(batch, self.dtype))


class Workspace:
    """Buffers and the thread pool of the fused pass over ``W1`` (no network state lives here).

    Parameters
    ----------
    spec : FusedSpec
    batch_size : int
    n_threads : int
        Python threads sharing the row blocks of ``W1``, each running single-threaded BLAS.
    block_rows : int, optional
        Rows of ``W1`` per fused block (default: about 512 KB per block, to stay in L2).
    """

    def __init__(self, spec: FusedSpec, batch_size: int, n_threads: int = 1, block_rows: Optional[int] = None):
        if n_threads < 1:
            raise PhysgradError(f"n_threads must be >= 1, got {n_threads}")
        self.spec, self.dtype = spec, spec.dtype
        n0, n1 = spec.sizes[0], spec.sizes[1]
        if block_rows is None:  # blocks of about 512 KB stay in a 2 MB L2 with their buffer
            row_bytes = n1 * self.dtype.itemsize
            block_rows = n0 if n0 * row_bytes <= (1 << 20) else max(8, (512 * 1024) // row_bytes)
        self.n_threads, self.block_rows = int(n_threads), int(min(block_rows, n0))
        bounds = np.linspace(0, n0, self.n_threads + 1).astype(int)
        self.ranges = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self.pool = ThreadPoolExecutor(self.n_threads - 1) if self.n_threads > 1 else None
        self.acc = [np.zeros((batch_size + 1, n1), self.dtype) for _ in self.ranges]
        self.tmp = [np.empty((batch_size + 1, n1), self.dtype) for _ in self.ranges]
        self.buf = [np.empty((self.block_rows, n1), self.dtype) for _ in self.ranges]

    def close(self):
        """Shut the thread pool down (idempotent)."""
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


def _fused_rows(W, lo, hi, rows, AT, Bm, clamp, P, acc, tmp, buf):
    """On rows ``lo:hi`` of ``W`` (in place): ``W += AT @ Bm``; clamp at 0; ``acc = P @ W`` (blocked)."""
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


def first_layer_pass(ws: Workspace, W1, AT=None, Bm=None, P=None):
    """Fused pass over ``W1``: optional rank update ``W1 += AT @ Bm`` then clamp at 0 (DRN), then the
    drive ``P @ W1`` of the next inputs ``P`` (shape ``(m, n0)``, ``m <= B+1``).

    ``W1`` is modified **in place** when ``AT`` is given.

    Returns
    -------
    array (m, n1) or None
        ``P @ W1`` after the update, summed over threads in a fixed order.
    """
    clamp = ws.spec.drn
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
    """Per-batch constants: input drive ``a1 = s0 @ W1`` and, for DRNs, the column sums of ``W1``."""

    a1: Optional[np.ndarray]  # (B, n1), or None when only the column sums were computed
    c1: Optional[np.ndarray]  # (n1,) column sums of W1 (DRN) or None


_colsum = np.add.reduce  # column sums (axis 0 is the default); a ufunc call, less overhead than .sum()


def _sums(spec: FusedSpec, params) -> dict:
    """Column and row sums of ``W_2..W_L`` (DRN), index k -> (colsum W_k, rowsum W_k)."""
    L = spec.n_layers
    Ws = params[:L]
    return {k: (_colsum(Ws[k - 1]), np.add.reduce(Ws[k - 1], axis=1)) for k in range(2, L + 1)}


def _recip(den):
    """``1/den``, with 0 where ``den <= 0`` (a unit with no conductance at all is set to 0 V)."""
    if den.min() > 0:
        return 1.0 / den
    return np.divide(1.0, den, out=np.zeros_like(den), where=den > 0)


@dataclass
class BatchConsts:
    """What every sweep of a batch's three phases shares: per free layer ``k`` the constant part of
    the numerator (``a1 + b1`` for the first layer, ``b_k`` otherwise) and ``1/denominator`` (DRN;
    units with no conductance at all get 0, i.e. are set to 0 V); the transposed weights ``W_k^T``;
    the output layer's terms depend on ``beta`` and are made by :meth:`output`."""

    spec: FusedSpec
    const: dict
    inv: dict
    den_out: Optional[np.ndarray]
    WT: dict

    def output(self, beta, y):
        """``(constant numerator, 1/denominator)`` of the output layer for nudge ``beta``: a number,
        or a column ``(rows, 1)`` giving each row of the batch its own beta (stacked phases).

        A negative beta is checked by the energy's ``check_beta`` (the generic route's check and message).
        """
        L = self.spec.n_layers
        c = self.const[L]
        nudged = np.ndim(beta) > 0 or beta != 0
        if nudged:
            c = c + beta * y
            if np.min(beta) < 0:
                self.spec.energy.check_beta(np.min(beta), self.den_out)
        if self.den_out is None:  # DHN: (num + beta y) / (1 + beta)
            return c, (np.asarray(1.0 / (1.0 + beta), dtype=c.dtype) if nudged else None)
        den = self.den_out + beta if nudged else self.den_out
        return c, _recip(den)


def prepare(spec: FusedSpec, params, drive: Drive, sums=None) -> BatchConsts:
    """The :class:`BatchConsts` of a batch (``sums``: cached column/row sums of ``W_2..W_L``)."""
    L = spec.n_layers
    bs = params[L:]
    drn = spec.drn
    if drn and sums is None:
        sums = _sums(spec, params)
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
    return BatchConsts(spec, const, inv, den_out, WT)


def block_value(spec: FusedSpec, consts: BatchConsts, Ws, s: list, k: int, c_out, inv_out, skinny: bool):
    r"""The block update of free layer ``k`` before its clip, a new array ``(rows, n_k)``.

    DRN: ``(s_{k-1} W_k + s_{k+1} W_{k+1}^T + b_k) / (1 W_k + W_{k+1} 1)`` (times ``consts.inv[k]``,
    0 for a unit with no conductance); DHN: ``s_{k-1} W_k + s_{k+1} W_{k+1}^T + b_k``; the output
    layer ``k = L``: the numerator ``s_{L-1} W_L + c_out`` times ``inv_out`` (``consts.output``).
    Hidden layers are then clipped by :func:`clip_hidden`; together the two are the energy's
    ``block_solve``. ``skinny``: few rows (``(W @ v.T).T`` layouts, see :func:`relax`).
    """
    L = spec.n_layers
    WT = consts.WT
    if k < L:
        num = (np.matmul(Ws[k], s[k].T).T if skinny else s[k] @ WT[k + 1]) + consts.const[k]
        if k > 1:
            num += np.matmul(WT[k], s[k - 2].T).T if skinny else s[k - 2] @ Ws[k - 1]
        if spec.drn:
            num *= consts.inv[k]
        return num
    if k == 1:
        num = c_out.copy()
    else:
        num = (np.matmul(WT[k], s[k - 2].T).T if skinny else s[k - 2] @ Ws[k - 1]) + c_out
    if inv_out is not None:
        num *= inv_out
    return num


def clip_hidden(spec: FusedSpec, k: int, v):
    """Clip hidden layer ``k``'s block value ``v`` **in place**: DRN to the diode bounds
    ``spec.bounds[k]``, DHN to [0, 1] (ufuncs: less call overhead than ``np.clip``)."""
    if spec.drn:
        lo, hi = spec.bounds[k]
        np.maximum(v, lo, out=v)
        np.minimum(v, hi, out=v)
    else:
        np.maximum(v, 0, out=v)
        np.minimum(v, 1, out=v)
    return v


def relax(spec: FusedSpec, params, drive: Drive, s: list, sweeps: int, beta=0.0,
          y: Optional[np.ndarray] = None, sums=None, consts: Optional[BatchConsts] = None) -> list:
    r"""Block-coordinate sweeps from state ``s`` (a list ``[s_1..s_L]``), returns the new list.

    Each block update is the exact minimiser of the (nudged) energy in that layer, all other
    layers fixed (the energy's ``block_solve``): DRN
    ``s_k = clip((s_{k-1} W_k + W_{k+1} s_{k+1} + b_k [+ beta y]) / (1 W_k + W_{k+1} 1 [+ beta]))``
    to the diode bounds; DHN ``s_k = clip(s_{k-1} W_k + W_{k+1} s_{k+1} + b_k, 0, 1)``, output
    ``(s_{L-1} W_L + b_L + beta y) / (1 + beta)``. The layers of a group of ``spec.groups`` are
    updated together from the state left by the previous group.

    Parameters
    ----------
    beta : float or array (rows, 1)
        Nudge (S for DRNs), one per row for stacked phases; ``y`` the targets ``(rows, n_out)``.
    """
    if consts is None:
        consts = prepare(spec, params, drive, sums)
    L = spec.n_layers
    Ws = params[:L]
    c_out, inv_out = consts.output(beta, y)
    s = list(s)
    # A few rows against a large matrix (training, batch 4): (W @ v.T).T and (W^T @ v.T).T with W^T
    # cached contiguous are the fastest BLAS layouts. Many rows (evaluation): plain products, so that
    # the results stay row-major and the element-wise steps run over contiguous memory.
    skinny = s[0].shape[0] <= 64
    for _ in range(sweeps):
        for group in spec.groups:
            new = []
            for k in group:
                num = block_value(spec, consts, Ws, s, k, c_out, inv_out, skinny)
                if k < L:
                    clip_hidden(spec, k, num)
                new.append((k, num))
            for k, v in new:
                s[k - 1] = v
    return s


def free_outputs(spec: FusedSpec, params, x: np.ndarray, sweeps: int, batch: Optional[int] = None,
                 n_threads: int = 1) -> np.ndarray:
    """Output units (V for DRNs) after ``sweeps`` free-phase sweeps from the zero state.

    Parameters
    ----------
    x : array (n, n_inputs)
        Pixels in [0, 1].
    batch : int, optional
        Samples relaxed together (default: as many as keep one layer's state near 2 MB, between
        256 and 10,000), so the input drive is one large BLAS product while the element-wise block
        updates stay in cache. DRNs with hidden layers use :func:`_drn_eval_operators` above 64 rows.
    n_threads : int
        BLAS threads for the products.

    Returns
    -------
    array (n, n_outputs)
        In ``spec.dtype``.
    """
    from threadpoolctl import threadpool_limits

    W1 = params[0]
    dtype = spec.dtype
    n_pix = spec.energy.n_inputs
    if np.ndim(x) != 2 or np.shape(x)[1] != n_pix:
        raise PhysgradError(f"inputs must have shape (n, {n_pix}), got {np.shape(x)}")
    out = np.empty((len(x), spec.sizes[-1]), dtype=dtype)
    if batch is None:  # states of ~2 MB per layer: the element-wise block updates stay in cache
        batch = int(max(256, min(10000, (2 << 20) // (4 * max(spec.sizes[1:])))))
    with threadpool_limits(n_threads):
        if spec.drn and spec.n_layers > 1 and batch > 64:
            ops = _drn_eval_operators(spec, params)
            for i in range(0, len(x), batch):
                out[i:i + batch] = _drn_eval_relax(spec, ops, np.asarray(x[i:i + batch], dtype), sweeps)
            return out
        if spec.drn:  # s0 @ W1 = x @ (g (W1_top - W1_bottom)): the doubled input folded in
            n = n_pix
            Weff = (W1[:n] - W1[n:]) * dtype.type(spec.energy.input_gain)
            c1 = W1.sum(axis=0)
        else:
            Weff, c1 = W1, None
        sums = _sums(spec, params) if spec.drn else None
        for i in range(0, len(x), batch):
            xb = np.asarray(x[i:i + batch], dtype=dtype)
            a1 = xb @ Weff
            s = relax(spec, params, Drive(a1, c1), spec.zero_state(len(xb)), sweeps, sums=sums)
            out[i:i + batch] = s[-1]
    return out


def evaluate(spec: FusedSpec, params, x: np.ndarray, sweeps: int, batch: Optional[int] = None,
             n_threads: int = 1) -> np.ndarray:
    """Predicted classes ``argmax`` of :func:`free_outputs`, shape ``(n,)`` int64."""
    return np.argmax(free_outputs(spec, params, x, sweeps, batch, n_threads), axis=1)


def _drn_eval_operators(spec: FusedSpec, params) -> dict:
    r"""Operators of the free-phase block updates of a DRN with the diode signs and the
    denominators folded into the weights, for large-batch evaluation.

    Hidden layer ``k`` is stored as ``h'_k = sigma_k * h_k >= 0`` (``sigma_k = +1`` on the units
    with bounds ``[0, inf)``, ``-1`` on those with ``(-inf, 0]``; see ``spec.bounds``), so its
    clipped update is one ``max(., 0)``:

    .. math:: h'_k = \max\big(0,\ h'_{k-1} D_k + h'_{k+1} U_k + c_k\big),\quad
              D_k = \operatorname{diag}(\sigma_{k-1}) W_k \operatorname{diag}(\sigma_k/d_k),\
              U_k = \operatorname{diag}(\sigma_{k+1}) W_{k+1}^\top \operatorname{diag}(\sigma_k/d_k),

    ``c_k = b_k sigma_k / d_k`` (``d_k`` the unit's total conductance; 0 where ``d_k = 0``) and for
    the first layer ``h'_0 D_1 = x @ (g (W1_top - W1_bottom) diag(sigma_1/d_1))`` (the doubled input
    ``g (x, -x)`` folded in). The output layer has ``sigma = 1`` and no clip. Three element-wise
    passes per hidden update instead of five.
    """
    L = spec.n_layers
    Ws, bs = params[:L], params[L:]
    dtype = Ws[0].dtype
    sums = _sums(spec, params)
    sig = {k: np.where(spec.bounds[k][0] >= 0, 1, -1).astype(dtype) for k in range(1, L)}
    sig[L] = np.ones(spec.sizes[L], dtype)
    scale = {}
    for k in range(1, L + 1):
        den = _colsum(Ws[0]) if k == 1 else sums[k][0]
        if k < L:
            den = den + sums[k + 1][1]
        scale[k] = sig[k] * np.divide(1.0, den, out=np.zeros_like(den), where=den > 0)
    n = spec.energy.n_inputs
    ops = {"in": (Ws[0][:n] - Ws[0][n:]) * (dtype.type(spec.energy.input_gain) * scale[1]),
           "c": {k: bs[k - 1] * scale[k] for k in range(1, L + 1)},
           "down": {k: (sig[k - 1][:, None] * Ws[k - 1]) * scale[k] for k in range(2, L + 1)},
           "up": {k: (sig[k + 1][:, None] * Ws[k].T) * scale[k] for k in range(1, L)}}
    return ops


def _drn_eval_relax(spec: FusedSpec, ops: dict, x, sweeps: int):
    """Output layer after ``sweeps`` sweeps from the zero state, with :func:`_drn_eval_operators`."""
    L = spec.n_layers
    a = x @ ops["in"]
    a += ops["c"][1]
    h = {k: np.zeros((len(x), spec.sizes[k]), a.dtype) for k in range(1, L + 1)}
    for _ in range(sweeps):
        for group in spec.groups:
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


def cep_step(spec: FusedSpec, params, ws: Workspace, drive: Drive, s_warm: list, y1h: np.ndarray,
             beta: float, weight_lrs, bias_lrs, sweeps: int, s0: np.ndarray, next_s0=None):
    r"""One centered-EP step on a batch; updates the arrays of ``params`` **in place**.

    Free phase from ``s_warm``, then the ``-beta`` and ``+beta`` phases from the free state (stacked),
    each ``sweeps`` sweeps; then ``theta -= lr * (dE/dtheta(s+) - dE/dtheta(s-)) / (2 beta)`` averaged
    over the batch, conductances clamped at 0 (DRN).

    Parameters
    ----------
    params : tuple of arrays
        ``(W_1..W_L, b_1..b_L)`` in ``spec.dtype``; modified in place.
    ws : Workspace
    drive : Drive
        ``s0 @ W1`` and ``1 @ W1`` for this batch (from the previous call or :func:`make_drive`).
    s_warm : list of arrays
        Warm start of the free phase (the previous batch's final ``+beta`` state).
    y1h : array (B, n_out)
        One-hot targets.
    beta : float
        Nudging strength (> 0; S for DRNs).
    weight_lrs, bias_lrs : sequence of float
        Learning rate per layer.
    s0 : array (B, n0)
        This batch's input layer (:meth:`FusedSpec.input_layer`); ``next_s0`` the next batch's (or None).

    Returns
    -------
    free : list
        The free state (predictions are ``argmax(free[-1])``).
    s_plus : list
        The ``+beta`` state (warm start of the next batch).
    next_drive : Drive or None
        ``next_s0 @ W1`` and the column sums (DRN) after the update, from the fused pass.

    Raises
    ------
    PhysgradError
        The ``-beta`` phase is non-convex (the energy's ``check_beta``).
    """
    L = spec.n_layers
    Ws, bs = params[:L], params[L:]
    drn = spec.drn
    B = len(y1h)
    consts = prepare(spec, params, drive)
    free = relax(spec, params, drive, s_warm, sweeps, consts=consts)
    # the two nudged phases start from the same free state and are independent: relax them as one
    # stacked batch (rows 0..B-1 at -beta, rows B..2B-1 at +beta), half the calls, same arithmetic
    stacked = replace(consts, const={**consts.const, 1: np.concatenate([consts.const[1]] * 2)})
    betas = np.repeat(np.array([-beta, beta], dtype=y1h.dtype), B)[:, None]
    both = relax(spec, params, drive, [np.concatenate([f, f]) for f in free], sweeps, betas,
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
    return free, s_p, update_first_layer(spec, ws, Ws[0], AT, Bm, next_s0)


def update_first_layer(spec: FusedSpec, ws: Workspace, W1, AT, Bm, next_s0=None) -> Optional[Drive]:
    """``W1 += AT @ Bm`` **in place**, clamped at 0 (DRN), by the fused pass of :func:`first_layer_pass`,
    which also computes the next batch's :class:`Drive` (``next_s0``: its input layer, or None).

    Returns
    -------
    Drive or None
        DRN: ``next_s0 @ W1`` (None without ``next_s0``) and the column sums of the new ``W1``;
        DHN: ``next_s0 @ W1``, or None without ``next_s0``.
    """
    Bm = np.ascontiguousarray(Bm, dtype=W1.dtype)
    P = None
    if spec.drn:
        ones = np.ones((1, spec.sizes[0]), W1.dtype)
        P = ones if next_s0 is None else np.concatenate([next_s0, ones])
    elif next_s0 is not None:
        P = next_s0
    out = first_layer_pass(ws, W1, AT, Bm, P)
    if out is None:
        return None
    if spec.drn:
        return Drive(out[:-1], out[-1]) if next_s0 is not None else Drive(None, out[-1])
    return Drive(out, None)


def make_drive(spec: FusedSpec, ws: Workspace, W1, s0) -> Drive:
    """``Drive`` for input layer ``s0`` with the current ``W1`` (same blocked sums as the fused pass)."""
    if spec.drn:
        out = first_layer_pass(ws, W1, P=np.concatenate([s0, np.ones((1, s0.shape[1]), s0.dtype)]))
        return Drive(out[:-1], out[-1])
    return Drive(first_layer_pass(ws, W1, P=s0), None)

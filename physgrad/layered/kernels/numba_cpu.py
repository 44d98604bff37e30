r"""Compiled CPU kernel (numba) of the layered centered-EP step: one call per batch.

The same step as the numpy reference :func:`physgrad.layered.fused.cep_step`, specified by the same
:class:`~physgrad.layered.fused.FusedSpec` (the energy of :mod:`physgrad.energies.layered`: sizes,
input layer, bounds, the ``-beta`` check; the block schedule of
:func:`physgrad.minimizers.block.layer_groups`), compiled with numba. One call of :func:`cep_step`
does, for a batch of ``B`` samples and ``L`` weight layers (float32 or float64, DRN or DHN, any
depth and schedule):

1. the per-batch constants: the input drive ``a1 = s0 W1`` and the column sums ``1 W1`` (both left
   by the previous call), the DRN denominators ``1 W_k + W_{k+1} 1`` and their reciprocals;
2. ``sweeps`` block-coordinate sweeps of the free phase from the warm start, then ``sweeps`` of the
   ``-beta`` and ``+beta`` phases from the free state, relaxed together as one stacked batch of ``2B``
   rows. A block update is the energy's ``block_solve``:

   .. math:: s_k = \operatorname{clip}\big((s_{k-1} W_k + s_{k+1} W_{k+1}^\top + b_k [+\beta y])
             \cdot r_k,\ lo_k,\ hi_k\big),

   ``r_k = 1/(1 W_k + W_{k+1} 1 [+\beta])`` (DRN; 0 for a unit without conductance) or ``1``
   (DHN; ``1/(1+\beta)`` at the outputs), ``(lo_k, hi_k)`` the energy's ``bounds(k)``;
3. the C-EP update ``theta -= lr (dE/dtheta(s+) - dE/dtheta(s-)) / (2 beta)`` (batch mean), written
   as rank updates (see :mod:`physgrad.layered.fused`), conductances clamped at 0 S (DRN);
4. fused with the update of ``W1`` (rank ``B+1``) and its clamp: the next batch's drive
   ``[s0'; 1] W1`` -- one read and one write of ``W1`` per batch.

**Parallel and deterministic.** With ``threads > 1`` a step runs on a thread team
(:class:`physgrad.layered.kernels.team.Team`: the caller and ``threads - 1`` persistent worker
threads making the same compiled call, meeting at spin barriers; no numba parallel region per step).
Member ``m`` relaxes the free, ``-beta`` and ``+beta`` phases of its share of the batch's samples
(rows do not interact); the last member updates the biases and the deeper weights (split by rows between
the members from ``team_rows`` elements); the pass over ``W1`` is split by *row blocks*
(:data:`ROW_BLOCKS`, fixed whatever the thread count) whose partial drive sums are added in block
order. Every output element is computed by one thread, by the same sequence of floating-point
operations whatever the number of threads or the chunk sizes. Results are therefore bit-for-bit
identical for every thread count (tested). Each thread accumulates in buffers of its own and writes
shared rows once: threads writing neighbouring columns of the same rows at every row of ``W1`` made
two threads slower than one (cache lines at the borders move between the cores). Dot products over a
row (the narrow output layer) are compiled with ``fastmath={"reassoc", "nsz", "contract"}``:
vectorised, in a fixed order set by the compiled code.

**Compilation.** ``cache=True``: compiled once per machine and numba version (15-30 s of CPU the
first time for each (dtype, depth) combination), then loaded from ``__pycache__`` beside this file
(or from ``$NUMBA_CACHE_DIR``; CI and the tests set one shared folder) in about a second. A first call
that takes longer than :data:`NOTE_AFTER` seconds prints one line on stderr saying so.

**Optimizers.** ``momentum`` and ``adam`` run inside the same step: the update terms are formed at
unit learning rate (minus the C-EP gradient) and each element then takes
:func:`physgrad.learning.optim.step`'s formula with its state (:func:`_opt_apply`), in the same pass
(the state of ``W1`` streams with it); the transposed copies are refreshed by a copy.

**Threads.** The team's workers wait for the next step spinning for about 2 ms, then sleep until
the next step wakes them (the training loop's steps need no system call; an idle stepper uses no CPU).
``numba.set_num_threads`` (the stepper sets it) applies to :func:`make_drive` only (the drive of an
epoch's first batch, a numba parallel loop). Unless ``NUMBA_THREADING_LAYER`` is set, importing this
module selects numba's ``workqueue`` threading layer, whose threads sleep when idle: OpenMP's default
busy-waiting made a 2-thread DRN-1H batch 10x slower than one thread on a busy machine
(``reports/benchmarks/layered.md``).

numba is a dependency of physgrad; where it cannot be imported, :data:`AVAILABLE` is False and
nothing here can be called; the steppers then fall back to the numpy kernel, with a note.

References
----------
B. Scellier et al., "Fast algorithm to simulate nonlinear resistive networks", ICML 2024.
A. Laborieux et al., "Scaling equilibrium propagation to deep ConvNets", 2021 (centered EP).
"""
from __future__ import annotations

import os
import sys
from typing import Optional

import numpy as np

from physgrad.devices.pulsing import device_row  # compiled into the pass over W1: numba's cache of this file does
# not see changes to it (tests/test_devices_training.py compares the fused route with the device's own, bit for bit)
from physgrad.layered.fused import FusedSpec
from physgrad.layered.kernels.team import (GO, SLOTS, STATUS, Team, atomic_add, barrier, claim,  # compiled in
                                         sync_array, unclaim, wait_call)
from physgrad.types import NotSolvedError, PhysgradError

try:  # a dependency; the numpy kernel is the fallback where it cannot be imported
    import numba
    from numba import njit, prange

    from physgrad import _numba_cache
    _numba_cache.install()  # one cache for every checkout (NUMBA_CACHE_DIR/physgrad-kernels/...)
    AVAILABLE = True
    VERSION = numba.__version__
    if "NUMBA_THREADING_LAYER" not in os.environ:  # no busy-waiting pool (see the module docstring)
        numba.config.THREADING_LAYER = "workqueue"
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None
    AVAILABLE = False
    VERSION = None

    def njit(*args, **kwargs):  # a stand-in decorator: the functions exist but are never called
        if args and callable(args[0]):
            return args[0]
        return lambda f: f

    prange = range

INSTALL_HINT = ("the compiled (numba) backend needs numba, a dependency of physgrad that cannot be imported here: "
                "pip install numba (or pip install 'physgrad[fast]')")
_REDUCE = {"reassoc", "nsz", "contract"}  # vectorised dot products, fixed order for the compiled code
NARROW = 64  # a layer with fewer units (the outputs) is driven from below by dot products with W_k^T
PAR_W1 = 1 << 20  # elements of W1 above which make_drive's pass over W1 (once per epoch) is split between threads
TEAM_ROWS = 1 << 16  # elements of a deeper W_k above which its update is split by rows between the team's members
NO_DEVICE = np.zeros(0)  # ``dev`` of the pass over W1 without devices
ROW_BLOCKS = 4  # row blocks of the pass over W1, summed in a fixed order (any thread count; see _w1_reduce)
SUB = 1024  # columns of a row of W1 per sub-block of the fused pass (the update term stays in L1)


def require() -> None:
    """Raise :class:`PhysgradError` (with the install command) unless numba is importable."""
    if not AVAILABLE:
        raise PhysgradError(INSTALL_HINT)


# --- optimizers -----------------------------------------------------------------------------------
SGD, MOMENTUM, ADAM = 0, 1, 2
OPTIMIZER_CODES = {"sgd": SGD, "momentum": MOMENTUM, "adam": ADAM}
N_OC = 9  # optimizer constants per parameter array: lr, mu, b1, 1-b1, b2, 1-b2, 1-b1^t, 1-b2^t, eps


@njit(cache=True)
def _opt_apply(w, t, m, v, kind, oc, clamp):
    r"""``w`` takes one optimizer step with the gradient ``g = -t`` (``t``: the update at unit learning
    rate), in place with its state ``m``, ``v`` (``kind``: :data:`MOMENTUM` uses ``v`` only), then the
    clamp at 0 (``clamp``): the formulas of :func:`physgrad.learning.optim.step`, element by element
    (momentum :math:`v \leftarrow \mu v + g,\ w \leftarrow w - \alpha v`; Adam with bias-corrected
    moments). ``oc``: :data:`N_OC` constants of this array (see :func:`optimizer_constants`)."""
    lr, mu, b1, ob1, b2, ob2, d1, d2, eps = oc[0], oc[1], oc[2], oc[3], oc[4], oc[5], oc[6], oc[7], oc[8]
    for j in range(w.shape[0]):
        g = -t[j]
        if kind == MOMENTUM:
            a = mu * v[j] + g
            v[j] = a
            x = w[j] - lr * a
        else:
            a = b1 * m[j] + ob1 * g
            c = b2 * v[j] + ob2 * g * g
            m[j] = a
            v[j] = c
            x = w[j] - lr * ((a / d1) / (np.sqrt(c / d2) + eps))
        if clamp and x < 0:
            x = 0
        w[j] = x


# --- the pass over W1 ------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _w1_cols(W1, i0, i1, j0, j1, s0, Bs, update, drn, P, n_p, acc, kind, oc, M1, V1, dev):
    """Rows ``i0:i1``, columns ``j0:j1`` of the pass over ``W1`` (in place); ``acc`` takes the sums over
    these rows only (a row block's partial sums, see :func:`_w1_reduce`).

    ``update``: ``W1 += [s0; -1 (DRN)]^T Bs`` then clamp at 0 (DRN) -- or, with an optimizer
    (``kind`` not :data:`SGD`), the optimizer's step on the gradient ``-[s0; -1]^T Bs`` (``Bs`` at
    unit learning rate; state ``M1``, ``V1``, constants ``oc``). ``dev``: empty, or the constants of
    :func:`physgrad.devices.pulsing.row_constants` (SGD only): ``W1`` is on constant-step devices with
    nearest or stochastic rounding, and each updated row takes what they deliver
    (:func:`physgrad.devices.pulsing.device_row` from the row before the update). Then ``acc[r] = P[r] W1`` for
    ``r < n_p`` and, for a DRN, ``acc[-1] = 1 W1`` (the column sums). Zero coefficients are skipped
    (most pixels are 0): the same values as the dense product. Each row is processed in sub-blocks
    of :data:`SUB` columns, so the update term stays in L1 between its sub-passes.
    """
    nb = s0.shape[0]
    last = acc.shape[0] - 1
    t = np.empty(SUB, W1.dtype)
    device = update and dev.shape[0] > 0
    n_bad = 0
    old = np.empty(SUB if device else 0, W1.dtype)
    cu = np.empty(nb + 1, W1.dtype)
    iu = np.empty(nb + 1, np.int64)
    cp = np.empty(n_p + 1, W1.dtype)
    ip = np.empty(n_p + 1, np.int64)
    # the accumulators of these columns in a buffer of this thread, copied out at the end: rows of the
    # shared ``acc`` hold other threads' columns beside these, and writing them at every row of W1 made
    # the cores fight over the lines at the borders (2 threads slower than 1)
    loc = np.zeros((acc.shape[0], j1 - j0), acc.dtype)
    for i in range(i0, i1):
        nu = 0
        if update:
            for b in range(nb):
                v = s0[b, i]
                if v != 0:
                    cu[nu] = v
                    iu[nu] = b
                    nu += 1
            if drn:
                cu[nu] = -1
                iu[nu] = nb
                nu += 1
        n_c = 0
        for b in range(n_p):
            v = P[b, i]
            if v != 0:
                cp[n_c] = v
                ip[n_c] = b
                n_c += 1
        if drn:
            cp[n_c] = 1
            ip[n_c] = last
            n_c += 1
        for k0 in range(j0, j1, SUB):
            k1 = min(k0 + SUB, j1)
            w = k1 - k0
            row = W1[i, k0:k1]
            if device:  # an explicit loop: numba's slice assignment cost 40 us per DRN-XS step here
                for j in range(w):
                    old[j] = row[j]
            if update and kind != SGD:
                for j in range(w):
                    t[j] = 0
                for q in range(nu):
                    c = cu[q]
                    br = Bs[iu[q], k0:k1]
                    for j in range(w):
                        t[j] += c * br[j]
                vrow = V1[i, k0:k1]
                _opt_apply(row, t[:w], vrow if kind == MOMENTUM else M1[i, k0:k1], vrow, kind, oc, drn)
            elif nu == 1:  # one coefficient (a DRN row with no pixel in the batch): no update buffer
                c = cu[0]
                br = Bs[iu[0], k0:k1]
                if drn:
                    for j in range(w):
                        x = row[j] + c * br[j]
                        row[j] = 0 if x < 0 else x
                else:
                    for j in range(w):
                        row[j] += c * br[j]
            elif nu > 1:
                c = cu[0]
                br = Bs[iu[0], k0:k1]
                for j in range(w):
                    t[j] = c * br[j]
                for q in range(1, nu):
                    c = cu[q]
                    br = Bs[iu[q], k0:k1]
                    for j in range(w):
                        t[j] += c * br[j]
                if drn:
                    for j in range(w):
                        x = row[j] + t[j]
                        row[j] = 0 if x < 0 else x  # NaN stays NaN, like np.maximum
                else:
                    for j in range(w):
                        row[j] += t[j]
            if device and device_row(old[:w], row, i * W1.shape[1] + k0, dev):
                n_bad += 1  # a non-finite request: the step fails (cep_step raises)
            for q in range(n_c):
                c = cp[q]
                a = loc[ip[q], k0 - j0:k1 - j0]
                if q == n_c - 1 and drn:  # the column sums: 1 * w
                    for j in range(w):
                        a[j] += row[j]
                else:
                    for j in range(w):
                        a[j] += c * row[j]
    for r in range(n_p):
        acc[r, j0:j1] = loc[r]
    if drn:
        acc[last, j0:j1] = loc[last]
    return n_bad


@njit(cache=True, nogil=True)
def _w1_cols_sgd(W1, i0, i1, j0, j1, s0, Bs, drn, P, n_p, acc):
    """:func:`_w1_cols` for projected SGD without devices (``update`` true): the same numbers, bit for
    bit (per element the same operations in the same order), in fewer passes and with less work per row.

    The coefficients of every row of the block are gathered first (``s0`` and ``P`` read along their
    rows); the update of up to five coefficients (a batch of 4 and the DRN's constant) is one pass over
    a row segment (no update buffer), which also adds the row to the DRN's column sums; the other
    drive rows are accumulated up to three per pass. A DRN row without a pixel in the next batch (most
    rows) is thus read and written once. Column blocks of
    :data:`SUB` are the outer loop (each column's sums over the rows keep their order), so a block's
    accumulators stay in L1. Arrays are indexed flat with unsigned offsets: no slices (numba counts the
    references of each view, which cost more than the arithmetic on a short row).
    """
    U = np.uint64
    nb = s0.shape[0]
    last = acc.shape[0] - 1
    n = i1 - i0
    n1 = W1.shape[1]
    wl = j1 - j0
    cu = np.empty((n, nb + 1), W1.dtype)
    iu = np.empty((n, nb + 1), np.int64)
    nus = np.zeros(n, np.int64)
    cp = np.empty((n, n_p + 1), W1.dtype)
    ip = np.empty((n, n_p + 1), np.int64)
    ncs = np.zeros(n, np.int64)
    for b in range(nb):  # the coefficients: the pixels that are not 0, in sample order, then the DRN's constant
        for i in range(i0, i1):  # (without a branch: about 1 pixel in 5 is not 0, in no predictable pattern)
            v = s0[b, i]
            r = i - i0
            cu[r, nus[r]] = v
            iu[r, nus[r]] = b
            nus[r] += v != 0
    for b in range(n_p):
        for i in range(i0, i1):
            v = P[b, i]
            r = i - i0
            cp[r, ncs[r]] = v
            ip[r, ncs[r]] = b
            ncs[r] += v != 0
    if drn:
        for r in range(n):
            cu[r, nus[r]] = -1
            iu[r, nus[r]] = nb
            nus[r] += 1
            cp[r, ncs[r]] = 1
            ip[r, ncs[r]] = last
            ncs[r] += 1
    Wf = W1.reshape(-1)
    Bf = Bs.reshape(-1)
    loc = np.zeros((acc.shape[0], wl), acc.dtype)
    Lf = loc.reshape(-1)
    t = np.empty(SUB, W1.dtype)
    zero = t[:1].copy()
    zero[0] = 0
    zero = zero[0]
    for k0 in range(j0, j1, SUB):
        w = U(min(k0 + SUB, j1) - k0)
        for i in range(i0, i1):
            r = i - i0
            nu, n_c = nus[r], ncs[r]
            wb = U(i * n1 + k0)
            lb = U(last * wl + k0 - j0)  # the column sums (DRN), added in the update's pass
            if nu == 1:
                c0 = cu[r, 0]
                b0 = U(iu[r, 0] * n1 + k0)
                if drn:
                    for j in range(w):
                        x = Wf[wb + j] + c0 * Bf[b0 + j]
                        if x < 0:
                            x = zero
                        Wf[wb + j] = x
                        Lf[lb + j] += x
                else:
                    for j in range(w):
                        Wf[wb + j] += c0 * Bf[b0 + j]
            elif nu == 2:
                c0, c1 = cu[r, 0], cu[r, 1]
                b0, b1 = U(iu[r, 0] * n1 + k0), U(iu[r, 1] * n1 + k0)
                if drn:
                    for j in range(w):
                        x = Wf[wb + j] + (c0 * Bf[b0 + j] + c1 * Bf[b1 + j])
                        if x < 0:
                            x = zero
                        Wf[wb + j] = x
                        Lf[lb + j] += x
                else:
                    for j in range(w):
                        Wf[wb + j] += c0 * Bf[b0 + j] + c1 * Bf[b1 + j]
            elif nu == 3:
                c0, c1, c2 = cu[r, 0], cu[r, 1], cu[r, 2]
                b0, b1, b2 = U(iu[r, 0] * n1 + k0), U(iu[r, 1] * n1 + k0), U(iu[r, 2] * n1 + k0)
                if drn:
                    for j in range(w):
                        x = Wf[wb + j] + ((c0 * Bf[b0 + j] + c1 * Bf[b1 + j]) + c2 * Bf[b2 + j])
                        if x < 0:
                            x = zero
                        Wf[wb + j] = x
                        Lf[lb + j] += x
                else:
                    for j in range(w):
                        Wf[wb + j] += (c0 * Bf[b0 + j] + c1 * Bf[b1 + j]) + c2 * Bf[b2 + j]
            elif nu == 4:
                c0, c1, c2, c3 = cu[r, 0], cu[r, 1], cu[r, 2], cu[r, 3]
                b0, b1, b2, b3 = U(iu[r, 0] * n1 + k0), U(iu[r, 1] * n1 + k0), U(iu[r, 2] * n1 + k0), U(iu[r, 3] * n1 + k0)
                if drn:
                    for j in range(w):
                        x = Wf[wb + j] + (((c0 * Bf[b0 + j] + c1 * Bf[b1 + j]) + c2 * Bf[b2 + j]) + c3 * Bf[b3 + j])
                        if x < 0:
                            x = zero
                        Wf[wb + j] = x
                        Lf[lb + j] += x
                else:
                    for j in range(w):
                        Wf[wb + j] += ((c0 * Bf[b0 + j] + c1 * Bf[b1 + j]) + c2 * Bf[b2 + j]) + c3 * Bf[b3 + j]
            elif nu == 5:
                c0, c1, c2, c3, c4 = cu[r, 0], cu[r, 1], cu[r, 2], cu[r, 3], cu[r, 4]
                b0, b1, b2, b3 = U(iu[r, 0] * n1 + k0), U(iu[r, 1] * n1 + k0), U(iu[r, 2] * n1 + k0), U(iu[r, 3] * n1 + k0)
                b4 = U(iu[r, 4] * n1 + k0)
                if drn:
                    for j in range(w):
                        x = Wf[wb + j] + ((((c0 * Bf[b0 + j] + c1 * Bf[b1 + j]) + c2 * Bf[b2 + j]) + c3 * Bf[b3 + j])
                                          + c4 * Bf[b4 + j])
                        if x < 0:
                            x = zero
                        Wf[wb + j] = x
                        Lf[lb + j] += x
                else:
                    for j in range(w):
                        Wf[wb + j] += (((c0 * Bf[b0 + j] + c1 * Bf[b1 + j]) + c2 * Bf[b2 + j]) + c3 * Bf[b3 + j]) + c4 * Bf[b4 + j]
            elif nu > 5:  # the update buffer, as in _w1_cols
                c0 = cu[r, 0]
                b0 = U(iu[r, 0] * n1 + k0)
                for j in range(w):
                    t[j] = c0 * Bf[b0 + j]
                for q in range(1, nu):
                    c0 = cu[r, q]
                    b0 = U(iu[r, q] * n1 + k0)
                    for j in range(w):
                        t[j] += c0 * Bf[b0 + j]
                if drn:
                    for j in range(w):
                        x = Wf[wb + j] + t[j]
                        if x < 0:
                            x = zero
                        Wf[wb + j] = x
                        Lf[lb + j] += x
                else:
                    for j in range(w):
                        Wf[wb + j] += t[j]
            q = 0
            if drn:
                n_c -= 1  # the column sums: added above
            while q < n_c:  # acc[ip] += cp * row, up to three rows per pass
                m = min(n_c - q, 3)
                a0 = U(ip[r, q] * wl + k0 - j0)
                c0 = cp[r, q]
                if m == 1:
                    for j in range(w):
                        Lf[a0 + j] += c0 * Wf[wb + j]
                elif m == 2:
                    a1 = U(ip[r, q + 1] * wl + k0 - j0)
                    c1 = cp[r, q + 1]
                    for j in range(w):
                        x = Wf[wb + j]
                        Lf[a0 + j] += c0 * x
                        Lf[a1 + j] += c1 * x
                else:
                    a1, a2 = U(ip[r, q + 1] * wl + k0 - j0), U(ip[r, q + 2] * wl + k0 - j0)
                    c1, c2 = cp[r, q + 1], cp[r, q + 2]
                    for j in range(w):
                        x = Wf[wb + j]
                        Lf[a0 + j] += c0 * x
                        Lf[a1 + j] += c1 * x
                        Lf[a2 + j] += c2 * x
                q += m
    for r in range(n_p):
        acc[r, j0:j1] = loc[r]
    if drn:
        acc[last, j0:j1] = loc[last]
    return 0


@njit(cache=True, nogil=True)
def _w1_task(t, W1, cuts, s0, Bs, update, drn, P, n_p, parts, kind, oc, M1, V1, dev):
    """Task ``t`` of the pass over ``W1``: row block ``t // n_chunks`` (of :data:`ROW_BLOCKS`, rows
    ``b n0 / ROW_BLOCKS ..``) times column chunk ``t % n_chunks`` (``cuts``), partial sums into
    ``parts[b]``."""
    nch = len(cuts) - 1
    b, c = t // nch, t % nch
    n0 = W1.shape[0]
    i0, i1 = b * n0 // ROW_BLOCKS, (b + 1) * n0 // ROW_BLOCKS
    if update and kind == SGD and dev.shape[0] == 0:  # the common case, with fewer passes over each row
        return _w1_cols_sgd(W1, i0, i1, cuts[c], cuts[c + 1], s0, Bs, drn, P, n_p, parts[b])
    return _w1_cols(W1, i0, i1, cuts[c], cuts[c + 1], s0, Bs, update, drn, P, n_p, parts[b], kind, oc, M1, V1, dev)


@njit(cache=True, nogil=True)
def _w1_reduce(parts, acc, n_p, drn, j0, j1):
    """``acc[r, j0:j1]`` = the row blocks' partial sums added in block order (``r < n_p``, and the
    column sums for a DRN): the same order for every thread count."""
    last = acc.shape[0] - 1
    w = j1 - j0
    for r in range(acc.shape[0]):
        if r < n_p or (drn and r == last):
            a = acc[r, j0:j1]  # (views indexed from 0: vectorised)
            p0 = parts[0, r, j0:j1]
            for j in range(w):
                a[j] = p0[j]
            for b in range(1, ROW_BLOCKS):
                pb = parts[b, r, j0:j1]
                for j in range(w):
                    a[j] += pb[j]


@njit(cache=True, parallel=True)
def _w1_pass_par(W1, cuts, s0, Bs, update, drn, P, n_p, parts, acc, kind, oc, M1, V1, dev):
    n_bad = 0
    for t in prange(ROW_BLOCKS * (len(cuts) - 1)):
        n_bad += _w1_task(t, W1, cuts, s0, Bs, update, drn, P, n_p, parts, kind, oc, M1, V1, dev)
    _w1_reduce(parts, acc, n_p, drn, 0, acc.shape[1])
    return n_bad


@njit(cache=True, nogil=True)
def _w1_pass_ser(W1, cuts, s0, Bs, update, drn, P, n_p, parts, acc, kind, oc, M1, V1, dev):
    n_bad = 0
    for t in range(ROW_BLOCKS * (len(cuts) - 1)):
        n_bad += _w1_task(t, W1, cuts, s0, Bs, update, drn, P, n_p, parts, kind, oc, M1, V1, dev)
    _w1_reduce(parts, acc, n_p, drn, 0, acc.shape[1])
    return n_bad


# --- block updates --------------------------------------------------------------------------------
@njit(cache=True, fastmath=_REDUCE)
def _dot_rows(W, S, out, j0, j1, r0, r1, zero):
    """``out[r, j] += sum_m S[r, m] W[j, m]`` for ``j0 <= j < j1``, ``r0 <= r < r1`` (a vectorised dot
    per element)."""
    n = W.shape[1]
    for j in range(j0, j1):
        w = W[j]
        for r in range(r0, r1):
            s = S[r]
            a = zero
            for m in range(n):
                a += s[m] * w[m]
            out[r, j] += a


@njit(cache=True)
def _col_sums(W, out):
    """``out[j] = sum_i W[i, j]``, summed over ``i`` in order."""
    out[:] = 0
    for i in range(W.shape[0]):
        w = W[i]
        for j in range(W.shape[1]):
            out[j] += w[j]


@njit(cache=True)
def _layer_cols(k, j0, j1, Ws, WT, narrow, S, out, const1, bs, cout, inv, invout, lo, hi, drn, zero, r0, r1):
    """Columns ``j0:j1`` of the block update of free layer ``k`` (1..L) for the rows ``r0:r1`` of ``S``
    (each row, a sample and phase, is independent of the others)."""
    L = len(Ws)
    Bc = const1.shape[0]
    for r in range(r0, r1):
        if k == L:
            out[r, j0:j1] = cout[r, j0:j1]
        elif k == 1:
            out[r, j0:j1] = const1[r % Bc, j0:j1]
        else:
            out[r, j0:j1] = bs[k - 1][j0:j1]
    if k < L and narrow[k]:  # s_{k+1} W_{k+1}^T from a narrow layer k+1 (the outputs): row by row of out,
        # which stays in L1 while the few rows of W_{k+1}^T are added to it in order (zero units skipped):
        # per element the same operations as below; flat unsigned indexing (no views: numba counts the
        # references of each)
        U = np.uint64
        WTk = WT[k]
        sn = S[k]
        nw = WTk.shape[1]
        Wf = WTk.reshape(-1)
        w = U(j1 - j0)
        for r in range(r0, r1):
            o = out[r, j0:j1]
            for m in range(WTk.shape[0]):
                v = sn[r, m]
                if v != 0:
                    b = U(m * nw + j0)
                    for j in range(w):
                        o[j] += v * Wf[b + j]
    elif k < L:  # s_{k+1} W_{k+1}^T, as rows of the transposed copy (zero units skipped)
        WTk = WT[k]
        sn = S[k]
        for m in range(WTk.shape[0]):
            wrow = WTk[m, j0:j1]
            for r in range(r0, r1):
                v = sn[r, m]
                if v != 0:
                    o = out[r, j0:j1]
                    for j in range(j1 - j0):
                        o[j] += v * wrow[j]
    if k > 1:  # s_{k-1} W_k
        if narrow[k - 1]:
            _dot_rows(WT[k - 1], S[k - 2], out, j0, j1, r0, r1, zero)
        else:
            W = Ws[k - 1]
            sp = S[k - 2]
            for i in range(W.shape[0]):
                wrow = W[i, j0:j1]
                for r in range(r0, r1):
                    v = sp[r, i]
                    if v != 0:
                        o = out[r, j0:j1]
                        for j in range(j1 - j0):
                            o[j] += v * wrow[j]
    # the scaling and clamp, as views indexed from 0 (numba then vectorises: an index from j0 is checked
    # for wraparound element by element)
    w = j1 - j0
    if k == L:
        for r in range(r0, r1):
            o, iv = out[r, j0:j1], invout[r, j0:j1]
            for j in range(w):
                o[j] *= iv[j]
    else:
        lok, hik, ik = lo[k - 1][j0:j1], hi[k - 1][j0:j1], inv[k - 1][j0:j1]
        for r in range(r0, r1):
            o = out[r, j0:j1]
            for j in range(w):
                x = o[j]
                if drn:
                    x *= ik[j]
                if x < lok[j]:
                    x = lok[j]
                if x > hik[j]:
                    x = hik[j]
                o[j] = x


@njit(cache=True, nogil=True)
def _relax(S, T, sweeps, gl, gp, Ws, WT, narrow, const1, bs, cout, inv, invout, lo, hi, drn, zero, r0, r1):
    """``sweeps`` sweeps of the groups ``gl[gp[g]:gp[g+1]]`` on the rows ``r0:r1`` of the state ``S``
    (in place; ``T`` scratch). Rows (samples, phases) do not interact: any split of the rows gives the
    same numbers."""
    if r1 <= r0:
        return
    for _ in range(sweeps):
        for g in range(len(gp) - 1):
            for q in range(gp[g], gp[g + 1]):
                k = gl[q]
                _layer_cols(k, 0, Ws[k - 1].shape[1], Ws, WT, narrow, S, T[k - 1], const1, bs, cout, inv, invout,
                            lo, hi, drn, zero, r0, r1)
            for q in range(gp[g], gp[g + 1]):
                k = gl[q]
                S[k - 1][r0:r1, :] = T[k - 1][r0:r1]


# --- weight updates -------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _rank_rows(W, i0, i1, A, Bs, clamp):
    """Rows ``i0:i1`` of ``W += A^T Bs`` (each element ``sum_q A[q, i] Bs[q, j]`` in order ``q``), clamped
    at 0 when ``clamp``."""
    n = W.shape[1]
    nq = A.shape[0]
    t = np.empty(n, W.dtype)
    for i in range(i0, i1):
        c = A[0, i]
        for j in range(n):
            t[j] = c * Bs[0, j]
        for q in range(1, nq):
            c = A[q, i]
            for j in range(n):
                t[j] += c * Bs[q, j]
        w = W[i]
        for j in range(n):
            x = w[j] + t[j]
            if clamp and x < 0:
                x = 0
            w[j] = x


@njit(cache=True, nogil=True)
def _rank_opt(W, i0, i1, A, Bs, clamp, kind, oc, M, V):
    """Rows ``i0:i1`` of the optimizer's step on ``W`` with the gradient ``-A^T Bs`` (``Bs`` at unit
    learning rate; each element ``sum_q A[q, i] Bs[q, j]`` in order ``q``), state ``M``, ``V``,
    clamped at 0 when ``clamp``."""
    n = W.shape[1]
    nq = A.shape[0]
    t = np.empty(n, W.dtype)
    for i in range(i0, i1):
        c = A[0, i]
        for j in range(n):
            t[j] = c * Bs[0, j]
        for q in range(1, nq):
            c = A[q, i]
            for j in range(n):
                t[j] += c * Bs[q, j]
        _opt_apply(W[i], t, V[i] if kind == MOMENTUM else M[i], V[i], kind, oc, clamp)


@njit(cache=True, nogil=True)
def _transpose_rows(src, dst, i0, i1):
    """Rows ``i0:i1`` of ``dst = src^T``."""
    for i in range(i0, i1):
        d = dst[i]
        for j in range(d.shape[0]):
            d[j] = src[j, i]


@njit(cache=True, nogil=True)
def _recip(den, out):
    for j in range(den.shape[0]):
        out[j] = 1 / den[j] if den[j] > 0 else 0


# --- the batch ------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _constants(Ws, bs, WT, inv, drive, c1buf, beta, drn, den_out):
    """Per-batch constants (member 0): the output denominators and the ``-beta`` check (returns 1 when
    it fails), the hidden reciprocals, ``c1 = a1 + b1``."""
    L = len(Ws)
    B = c1buf.shape[0]
    nL = Ws[L - 1].shape[1]
    n1 = Ws[0].shape[1]
    if drn:
        if L > 1:
            _col_sums(Ws[L - 1], den_out)
        else:
            den_out[:] = drive[drive.shape[0] - 1]
        for j in range(nL):
            if not den_out[j] - beta > 0:
                return 1
        for k in range(1, L):
            den = np.empty(Ws[k - 1].shape[1], Ws[0].dtype)
            if k == 1:
                den[:] = drive[drive.shape[0] - 1]
            else:
                _col_sums(Ws[k - 1], den)
            rs = np.empty_like(den)
            _col_sums(WT[k], rs)  # row sums of W_{k+1}
            for j in range(den.shape[0]):
                den[j] += rs[j]
            _recip(den, inv[k - 1])
    elif beta >= 1:
        return 1
    for b in range(B):
        for j in range(n1):
            c1buf[b, j] = drive[b, j] + bs[0][j]
    return 0


@njit(cache=True, nogil=True)
def _cep_batch(m, nm, sync, Ws, bs, WT, narrow, lo, hi, inv, drive, parts, c1buf, Bs, Sf, Tf, Sn, Tn, warm, y, beta,
               wcoef, bcoef, sweeps, gl, gp, s0, nxt, n_next, drn, cuts, den_out, cout_f, invout_f, cout_n,
               invout_n, zero, kind, ocs, MW, VW, Mb, Vb, dev1, team_rows):
    """One centered-EP step (see the module docstring), member ``m`` of a team of ``nm``
    (:class:`physgrad.layered.kernels.team.Team`; ``nm == 1``: the whole step on the calling thread).
    Returns 0, or 1 when ``-beta`` makes the nudged output block non-convex (nothing is changed then),
    or 2 when a request to ``W1``'s devices (``dev1``) is not finite (the step is left half done: the
    run must stop), or 3 when the team was aborted (member 0's value counts).

    Work split, every element computed by one member with the same operations whatever ``nm``:
    member 0 forms the per-batch constants; [barrier]; member ``m`` relaxes the free, ``-beta`` and
    ``+beta`` phases of samples ``m B / nm .. (m+1) B / nm`` (rows do not interact); [barrier]; the
    last member updates the biases and the deeper weights (split by rows from ``team_rows`` elements);
    member ``m`` forms the update terms of ``W1`` and makes its tasks of the pass over ``W1`` (row blocks
    x column chunks ``cuts``; tasks ``t nm / n_tasks`` go to member ``m``); [barrier]; member 0 adds
    the row blocks' partial sums of the drive in block order.

    ``kind`` :data:`SGD`: ``wcoef``/``bcoef`` are the learning rates times ``1/(2 beta B)`` and the
    update is in place. Otherwise they are ``1/(2 beta B)`` (unit learning rates: the update terms are
    minus the C-EP gradient) and parameter array ``i`` (``W_1..W_L, b_1..b_L``) takes the optimizer's
    step with constants ``ocs[i]`` and state ``MW``/``VW`` (weights), ``Mb``/``Vb`` (biases)."""
    L = len(Ws)
    B = y.shape[0]
    one = zero + 1
    half = one / 2
    nL = Ws[L - 1].shape[1]
    if m == 0:
        sync[STATUS] = _constants(Ws, bs, WT, inv, drive, c1buf, beta, drn, den_out)
    if barrier(sync, nm):
        return 3
    if sync[STATUS] != 0:
        return sync[STATUS]
    base = c1buf if L == 1 else bs[L - 1].reshape((1, nL))
    # this member's samples: the free phase, then the -beta (rows r) and +beta (rows B + r) phases
    r0, r1 = m * B // nm, (m + 1) * B // nm
    for r in range(r0, r1):
        cout_f[r] = base[r % base.shape[0]]
        if drn:
            _recip(den_out, invout_f[r])
        else:
            invout_f[r] = one
        for k in range(L):
            Sf[k][r] = warm[k][r]
    _relax(Sf, Tf, sweeps, gl, gp, Ws, WT, narrow, c1buf, bs, cout_f, inv, invout_f, lo, hi, drn, zero, r0, r1)
    d = np.empty(nL, Ws[0].dtype)
    for half_ in range(2):
        for r in range(half_ * B + r0, half_ * B + r1):
            br = -beta if r < B else beta
            for j in range(nL):
                cout_n[r, j] = base[r % base.shape[0], j] + br * y[r % B, j]
            if drn:
                for j in range(nL):
                    d[j] = den_out[j] + br
                _recip(d, invout_n[r])
            else:
                invout_n[r] = one / (one + br)
            for k in range(L):
                Sn[k][r] = Sf[k][r % B]
        _relax(Sn, Tn, sweeps, gl, gp, Ws, WT, narrow, c1buf, bs, cout_n, inv, invout_n, lo, hi, drn, zero,
               half_ * B + r0, half_ * B + r1)
    if barrier(sync, nm):
        return 3
    # biases: b += lr (sum s+ - sum s-) / (2 beta B); by the last member, as the deeper weights that are
    # not split (member 0 forms the constants, adds the drive's partial sums and runs the Python of a step)
    if m == nm - 1:
        for k in range(L):
            sp = np.zeros(Sn[k].shape[1], Ws[0].dtype)
            sm = np.zeros_like(sp)
            for r in range(B):
                sm += Sn[k][r]
                sp += Sn[k][B + r]
            bk = bs[k]
            if kind == SGD:
                for j in range(sp.shape[0]):
                    bk[j] += bcoef[k] * (sp[j] - sm[j])
            else:
                tb = bcoef[k] * (sp - sm)
                _opt_apply(bk, tb, Vb[k] if kind == MOMENTUM else Mb[k], Vb[k], kind, ocs[L + k], False)
    # deeper weights: W_k += A^T Bs (rank 2B+2 for a DRN, 2B for a DHN), clamp; the transposed copy alike
    for k in range(2, L + 1):
        W, Wt = Ws[k - 1], WT[k - 1]
        split = W.size >= team_rows
        if not split and m != nm - 1:
            continue
        a = Sn[k - 2]
        h = Sn[k - 1]
        na, nh = a.shape[1], h.shape[1]
        nq = 2 * B + 2 if drn else 2 * B
        A = np.empty((nq, na), Ws[0].dtype)
        Bm = np.empty((nq, nh), Ws[0].dtype)
        for r in range(B):
            A[r] = a[B + r]
            A[B + r] = -a[r]
            Bm[r] = h[B + r]
            Bm[B + r] = h[r]
        if drn:
            ra = np.zeros(na, Ws[0].dtype)
            rm = np.zeros(na, Ws[0].dtype)
            qa = np.zeros(nh, Ws[0].dtype)
            qm = np.zeros(nh, Ws[0].dtype)
            for r in range(B):
                ra += a[B + r] * a[B + r]
                rm += a[r] * a[r]
                qa += h[B + r] * h[B + r]
                qm += h[r] * h[r]
            A[2 * B] = -(half * (ra - rm))
            A[2 * B + 1] = -one
            Bm[2 * B] = one
            Bm[2 * B + 1] = half * (qa - qm)
        Bm *= wcoef[k - 1]
        p, q = (m, nm) if split else (0, 1)
        i0, i1 = p * na // q, (p + 1) * na // q
        j0, j1 = p * nh // q, (p + 1) * nh // q
        if kind == SGD:
            # W_k and W_k^T take the same products in the same order (a * b == b * a): equal bit for bit.
            # A narrow W_k (the outputs) is updated as its transposed copy, whose rows are long.
            _rank_rows(Wt, j0, j1, Bm, A, drn)
            if narrow[k - 1] and not split:
                _transpose_rows(Wt, W, 0, na)
            else:
                _rank_rows(W, i0, i1, A, Bm, drn)
        else:
            _rank_opt(W, i0, i1, A, Bm, drn, kind, ocs[k - 1], MW[k - 1], VW[k - 1])
            if split and barrier(sync, nm):
                return 3
            _transpose_rows(W, Wt, j0, j1)
    # first layer: W1 += [s0; -1]^T [D; q1] lr/(2 beta B), clamp, and the next drive [s0'; 1] W1: each
    # member forms the update terms (all columns, in a buffer of its own) and makes its tasks (row blocks
    # x column chunks) of the pass over W1; member 0 adds the row blocks' partial sums
    n1 = Ws[0].shape[1]
    if m == 0:
        Bm1 = Bs
    else:
        Bm1 = np.empty((B + 1, n1), Ws[0].dtype)
    s_p, s_m = Sn[0][B:], Sn[0][:B]
    for r in range(B):
        Bm1[r] = s_p[r] - s_m[r]
    if drn:
        qa = np.zeros(n1, Ws[0].dtype)
        qm = np.zeros(n1, Ws[0].dtype)
        for r in range(B):
            qa += s_p[r] * s_p[r]
            qm += s_m[r] * s_m[r]
        Bm1[B] = half * (qa - qm)
    Bm1 *= wcoef[0]
    n_tasks = ROW_BLOCKS * (len(cuts) - 1)
    n_bad = 0
    for t in range(m * n_tasks // nm, (m + 1) * n_tasks // nm):
        n_bad += _w1_task(t, Ws[0], cuts, s0, Bm1, True, drn, nxt, n_next, parts, kind, ocs[0], MW[0], VW[0], dev1)
    sync[SLOTS + 8 * m] = n_bad
    if barrier(sync, nm):
        return 3
    if m != 0:
        return 0
    _w1_reduce(parts, drive, n_next, drn, 0, n1)
    for i in range(1, nm):
        n_bad += sync[SLOTS + 8 * i]
    return 2 if n_bad > 0 else 0


@njit(cache=True, nogil=True)
def _cep_lead(nm, sync, Ws, bs, WT, narrow, lo, hi, inv, drive, parts, c1buf, Bs, Sf, Tf, Sn, Tn, warm, y, betabuf,
              wcoef, bcoef, ibuf, gl, gp, s0, nxt, drn, cuts, den_out, cout_f, invout_f, cout_n, invout_n, zero, kind,
              ocs, MW, VW, Mb, Vb, dev1, team_rows):
    """Member 0's call of :func:`_cep_batch` (``betabuf[0]``: beta; ``ibuf``: sweeps, rows of ``nxt``):
    claims the team's workers (returns :data:`physgrad.layered.kernels.team.PARKED_CODE`, -1, when one
    sleeps), makes its part, releases them."""
    if nm > 1 and not claim(sync, nm):
        return -1
    st = _cep_batch(0, nm, sync, Ws, bs, WT, narrow, lo, hi, inv, drive, parts, c1buf, Bs, Sf, Tf, Sn, Tn, warm, y,
                    betabuf[0], wcoef, bcoef, ibuf[0], gl, gp, s0, nxt, ibuf[1], drn, cuts, den_out, cout_f, invout_f,
                    cout_n, invout_n, zero, kind, ocs, MW, VW, Mb, Vb, dev1, team_rows)
    if nm > 1:
        unclaim(sync, nm)
    return st


@njit(cache=True, nogil=True)
def _cep_loop(m, nm, sync, Ws, bs, WT, narrow, lo, hi, inv, drive, parts, c1buf, Bs, Sf, Tf, Sn, Tn, warm, y, betabuf,
              wcoef, bcoef, ibuf, gl, gp, s0, nxt, drn, cuts, den_out, cout_f, invout_f, cout_n, invout_n, zero, kind,
              ocs, MW, VW, Mb, Vb, dev1, team_rows):
    """Worker ``m``: its part of each call of :func:`_cep_lead`, until it parks or the team stops."""
    while wait_call(sync, m):
        _cep_batch(m, nm, sync, Ws, bs, WT, narrow, lo, hi, inv, drive, parts, c1buf, Bs, Sf, Tf, Sn, Tn, warm, y,
                   betabuf[0], wcoef, bcoef, ibuf[0], gl, gp, s0, nxt, ibuf[1], drn, cuts, den_out, cout_f, invout_f,
                   cout_n, invout_n, zero, kind, ocs, MW, VW, Mb, Vb, dev1, team_rows)
    return 0


@njit(cache=True, nogil=True)
def _cep_chunk(nm, sync, Ws, bs, WT, narrow, lo, hi, inv, drive, parts, c1buf, Bs, Sf, Tf, Sn, Tn, warm, y, betabuf,
               wcoef, bcoef, ibuf, gl, gp, s0, nxt, drn, cuts, den_out, cout_f, invout_f, cout_n, invout_n, zero, kind,
               ocs, MW, VW, Mb, Vb, dev1, team_rows, x, order, labels, gain, mirror, wco, bco, next_after, preds, done):
    """Member 0's call of ``K = len(wco)`` consecutive full batches (:func:`cep_steps`): for batch ``i``,
    what a call of :func:`cep_step` on staged inputs does -- :func:`_stage` of the samples
    ``order[iB:(i+1)B]`` (labels ``labels[iB:(i+1)B]``) and of the next batch's ``order[(i+1)B:(i+2)B]``
    (none after the last batch unless ``next_after``), the warm start (the previous batch's ``+beta``
    state; batch 0's is in ``warm`` already), the coefficients ``wco[i]``, ``bco[i]`` -- then
    :func:`_cep_batch` with the team's workers (one claim for the chunk; each later batch advances
    ``GO`` once, and the workers' loop, :func:`_cep_loop`, makes its part as for a one-batch call).
    ``preds[i]``: the free phase's predicted classes (``argmax``, the first maximum; NaN counts as the
    maximum, as numpy's). ``done[0]``: the batches completed.

    Returns :data:`physgrad.layered.kernels.team.PARKED_CODE` (-1; nothing done) when a worker sleeps,
    4 (nothing done) when an index of ``order`` is outside ``x``, 5 when a label is outside the outputs,
    else the status of the last batch run (:func:`_cep_batch`: a batch that fails stops the chunk,
    unchanged, with ``done[0]`` the batches before it)."""
    B = y.shape[0]
    K = wco.shape[0]
    L = len(Ws)
    n = x.shape[0]
    nL = y.shape[1]
    for q in range(order.shape[0]):
        if order[q] < -n or order[q] >= n:
            return 4
    for q in range(labels.shape[0]):
        if labels[q] < 0 or labels[q] >= nL:
            return 5
    done[0] = 0
    st = 0
    for i in range(K):
        has_next = i + 1 < K or next_after
        _stage(x, order[i * B:(i + 1) * B], labels[i * B:(i + 1) * B],
               order[(i + 1) * B:(i + 2) * B] if has_next else order[:0], gain, mirror, s0, y, nxt)
        if i > 0:  # the warm start: the previous batch's +beta state
            for k in range(L):
                wk, sk = warm[k], Sn[k]
                for r in range(B):
                    wr, sr = wk[r], sk[B + r]
                    for j in range(wr.shape[0]):
                        wr[j] = sr[j]
        for k in range(L):
            wcoef[k] = wco[i, k]
            bcoef[k] = bco[i, k]
        ibuf[1] = B if has_next else 0
        if nm > 1:  # the workers read ibuf and betabuf when their call starts
            if i == 0:
                if not claim(sync, nm):
                    return -1
            else:
                atomic_add(sync, GO, 1)
        st = _cep_batch(0, nm, sync, Ws, bs, WT, narrow, lo, hi, inv, drive, parts, c1buf, Bs, Sf, Tf, Sn, Tn, warm,
                        y, betabuf[0], wcoef, bcoef, ibuf[0], gl, gp, s0, nxt, ibuf[1], drn, cuts, den_out, cout_f,
                        invout_f, cout_n, invout_n, zero, kind, ocs, MW, VW, Mb, Vb, dev1, team_rows)
        if st != 0:
            break
        out = Sf[L - 1]
        for r in range(B):
            o = out[r]
            best, v = 0, o[0]
            if v == v:
                for j in range(1, o.shape[0]):
                    if o[j] != o[j]:  # NaN: numpy's argmax takes the first one
                        best = j
                        break
                    if o[j] > v:
                        best, v = j, o[j]
            preds[i, r] = best
        done[0] = i + 1
    if nm > 1:
        unclaim(sync, nm)
    return st


@njit(cache=True)
def _drive(W1, cuts, s0, drn, parts, acc, nthreads, par_w1, oc):
    """``acc[:len(s0)] = s0 W1`` and (DRN) ``acc[-1] = 1 W1``, with the arithmetic of the fused pass."""
    if nthreads > 1 and W1.size >= par_w1:
        _w1_pass_par(W1, cuts, s0, acc, False, drn, s0, s0.shape[0], parts, acc, SGD, oc, W1, W1, NO_DEVICE)
    else:
        _w1_pass_ser(W1, cuts, s0, acc, False, drn, s0, s0.shape[0], parts, acc, SGD, oc, W1, W1, NO_DEVICE)


@njit(cache=True, nogil=True)
def _gather(x, idx, gain, mirror, out):
    """``out[b] = gain * (x[idx[b]], -x[idx[b]])`` (``mirror``; else ``gain * x[idx[b]]``): the DRN's
    :meth:`~physgrad.energies.layered.DeepResistive.input_layer` of the rows ``idx`` of ``x`` with
    numpy's operations (``x`` already in ``out``'s dtype, ``gain`` rounded to it once)."""
    n = x.shape[1]
    for b in range(idx.shape[0]):
        xr = x[idx[b]]
        o = out[b]
        for i in range(n):
            o[i] = gain * xr[i]
        if mirror:
            o2 = out[b, n:]  # (a view indexed from 0: vectorised)
            for i in range(n):
                o2[i] = gain * -xr[i]


@njit(cache=True, nogil=True)
def _stage(x, idx, y, nxt, gain, mirror, s0, y1h, s0n):
    """:meth:`Workspace.stage`'s compiled part: :func:`_gather` of ``idx`` into ``s0`` and (``nxt`` not
    empty) of ``nxt`` into ``s0n``; ``y1h[b] = e_{y[b]}`` (0 elsewhere, as
    :func:`physgrad.layered.steppers.one_hot`). Returns 1 (nothing written) when an index is outside
    ``x`` (numpy's rule: ``-len(x) <= i < len(x)``), 2 when a label is outside ``0..n_out-1``, else 0."""
    n = x.shape[0]
    for q in range(idx.shape[0]):
        if idx[q] < -n or idx[q] >= n:
            return 1
    for q in range(nxt.shape[0]):
        if nxt[q] < -n or nxt[q] >= n:
            return 1
    for b in range(y.shape[0]):
        if y[b] < 0 or y[b] >= y1h.shape[1]:
            return 2
    _gather(x, idx, gain, mirror, s0)
    if nxt.shape[0] > 0:
        _gather(x, nxt, gain, mirror, s0n)
    for b in range(y.shape[0]):
        for j in range(y1h.shape[1]):
            y1h[b, j] = 0
        y1h[b, y[b]] = 1
    return 0


# --- Python side ----------------------------------------------------------------------------------
class Workspace:
    """Buffers of the compiled step for one network, batch size and thread count.

    Holds the drive ``[s0 W1; 1 W1]`` of the coming batch, the state buffers, and transposed copies
    ``W_k^T`` (``k >= 2``), kept equal bit for bit to ``W_k`` by the update (rebuilt by
    :meth:`attach`): a block update reads its weights as rows, ``s_{k-1} W_k`` from ``W_k`` (skipping
    units at 0 V, about half of a DRN's hidden units) and ``s_{k+1} W_{k+1}^T`` from ``W_{k+1}^T``;
    a layer narrower than :data:`NARROW` units (the outputs) takes ``s_{k-1} W_k`` as dot products
    with the rows of ``W_k^T`` instead.
    Network state is not kept here: parameters are the caller's (updated in place).

    Parameters
    ----------
    spec : FusedSpec
    batch_size : int
        Largest batch (smaller ones work too).
    threads : int
        Threads of the parallel parts (``numba.set_num_threads`` is the caller's).
    chunk : int, optional
        Largest number of columns of ``W1`` per task of the pass over ``W1`` (default 32768: the
        ``2 (B+1)`` rows of accumulators and coefficients of a task, 1.3 MB at batch 4, stay in a 2 MB
        L2 cache while ``W1`` streams through in row order); there are at least ``threads`` tasks.
    par_w1 : int
        Elements of ``W1`` from which :func:`make_drive` (the drive of an epoch's first batch) splits
        its pass over ``W1`` between numba's threads.
    team_rows : int
        Elements of a deeper ``W_k`` from which its update is split by rows between the team's
        members (default :data:`TEAM_ROWS`; smaller ones are updated by the last member).

    With ``threads > 1`` the step runs on a :class:`physgrad.layered.kernels.team.Team` of that many
    members (the caller and persistent worker threads, created at the first step; :meth:`close` or
    garbage collection stops them).
    """

    def __init__(self, spec: FusedSpec, batch_size: int, threads: int = 1, chunk: Optional[int] = None,
                 par_w1: int = PAR_W1, team_rows: int = TEAM_ROWS):
        require()
        if int(threads) < 1:
            raise PhysgradError(f"threads must be >= 1, got {threads}")
        if int(batch_size) < 1:
            raise PhysgradError(f"batch_size must be >= 1, got {batch_size}")
        self.spec, self.dtype = spec, spec.dtype
        self.B, self.threads = int(batch_size), int(threads)
        sizes, L = spec.sizes, spec.n_layers
        n1 = sizes[1]
        chunk = 32768 if chunk is None else int(chunk)
        if chunk < 1:
            raise PhysgradError(f"chunk must be >= 1, got {chunk}")
        self.par_w1, self.team_rows = int(par_w1), int(team_rows)
        nch = min(-(-n1 // chunk), n1)
        cuts = [c * n1 // nch for c in range(nch + 1)]
        if n1 >= 16 * nch:  # chunk starts on 64-byte boundaries (float32)
            cuts = [0] + [(c // 16) * 16 for c in cuts[1:-1]] + [n1]
        self.cuts = np.asarray(cuts, np.int64)
        dt = self.dtype
        self.zero = dt.type(0)
        self.drive = np.zeros((self.B + 1, n1), dt)
        self.parts = np.zeros((ROW_BLOCKS, self.B + 1, n1), dt)  # the row blocks' partial sums of the drive
        self.Bs = np.zeros((self.B + 1, n1), dt)  # the update terms of W1
        # a call's inputs, copied here: the team's workers keep these arrays from call to call
        self.s0buf, self.nxtbuf = np.zeros((self.B, sizes[0]), dt), np.zeros((self.B, sizes[0]), dt)
        self.ybuf = np.zeros((self.B, sizes[-1]), dt)
        self.warmbuf = tuple(np.zeros((self.B, n), dt) for n in sizes[1:])
        self.wbuf, self.bbuf = np.zeros(L, dt), np.zeros(L, dt)
        self.ocsbuf = np.zeros((2 * L, N_OC), dt)
        self.betabuf, self.ibuf = np.zeros(1, dt), np.zeros(2, np.int64)
        self.serial_sync = sync_array(1)
        self.nxtfull = self.nxtbuf[:self.B]  # what :meth:`stage` hands to cep_step as the next batch
        self._launch = None  # (the objects it was made from, their ids, the call's arguments, the team's key)
        self._gain = (None, None)  # stage's input gain, as given and in dtype
        self._rates = (None, None)  # cep_step's last learning rates, beta and batch size, and their coefficients
        self.note = f"{dt.name}, {L} weight layer(s)"  # for _compile_note (numpy's dtype.name is slow)
        self.c1buf = np.zeros((self.B, n1), dt)
        self.team = None
        self.narrow = np.array([False] + [sizes[k] < NARROW for k in range(2, L + 1)])
        bounds = [spec.energy.bounds(k) for k in range(1, L + 1)]
        self.lo = tuple(np.asarray(b[0], dt) for b in bounds)
        self.hi = tuple(np.asarray(b[1], dt) for b in bounds)
        self.inv = tuple(np.ones(n, dt) for n in sizes[1:])
        self.Sf = tuple(np.zeros((self.B, n), dt) for n in sizes[1:])
        self.Tf = tuple(np.zeros((self.B, n), dt) for n in sizes[1:])
        self.Sn = tuple(np.zeros((2 * self.B, n), dt) for n in sizes[1:])
        self.Tn = tuple(np.zeros((2 * self.B, n), dt) for n in sizes[1:])
        nL = sizes[-1]
        self.den_out = np.zeros(nL, dt)
        self.cout_f, self.invout_f = np.zeros((self.B, nL), dt), np.zeros((self.B, nL), dt)
        self.cout_n, self.invout_n = np.zeros((2 * self.B, nL), dt), np.zeros((2 * self.B, nL), dt)
        groups = spec.groups
        self.gl = np.asarray([k for g in groups for k in g], np.int64)
        self.gp = np.asarray(np.cumsum([0] + [len(g) for g in groups]), np.int64)
        self.WT = None
        self._sized = {}
        self.no_optimizer = (np.zeros((2 * L, N_OC), dt), tuple(np.zeros((0, 0), dt) for _ in range(L)),
                             tuple(np.zeros(0, dt) for _ in range(L)))  # the optimizer arguments of SGD

    def run(self, args: tuple, full: bool, key=None, lead=None, extra: tuple = ()) -> int:
        """``lead`` (default :func:`_cep_lead`; or :func:`_cep_chunk`, whose own arguments are ``extra``)
        with ``args``: on this workspace's team (made at the first call) for full batches (``full``: the
        arrays of ``args`` are this workspace's own, which the workers keep), else on the calling thread
        alone. ``key``: see :meth:`physgrad.layered.kernels.team.Team.run`."""
        lead = _cep_lead if lead is None else lead
        if self.threads == 1 or not full:
            return lead(1, self.serial_sync, *args, *extra)
        if self.team is None:
            self.team = Team(self.threads, _cep_loop)
        return self.team.run(lead, args, key, extra)

    def stage(self, x, idx, y, nxt, gain: float, mirror: bool) -> tuple:
        """Gather a full batch's inputs into this workspace (compiled, no temporary arrays):
        ``(s0, y1h, next_s0)`` for :func:`cep_step` -- the input layer ``gain (x, -x)`` (``mirror``, a DRN)
        or ``x`` of the rows ``idx`` of ``x`` and of the next batch's rows ``nxt`` (None: no next batch,
        ``next_s0`` None), and the one-hot targets of the labels ``y``. ``x``: C-contiguous, this
        workspace's dtype; ``len(idx) == len(nxt) == batch_size``. The arrays returned are this
        workspace's own (overwritten by the next call); :func:`cep_step` then copies nothing."""
        if gain != self._gain[0]:
            self._gain = (gain, self.dtype.type(gain))
        bad = _stage(x, idx, y, idx[:0] if nxt is None else nxt, self._gain[1], mirror, self.s0buf, self.ybuf,
                     self.nxtbuf)
        if bad == 1:
            raise PhysgradError(f"a batch index is outside the {len(x)} training samples")
        if bad == 2:
            raise PhysgradError(f"a label is outside 0..{self.ybuf.shape[1] - 1}")
        return self.s0buf, self.ybuf, None if nxt is None else self.nxtfull

    def close(self) -> None:
        """Stop the team's worker threads (a later step starts new ones)."""
        if self.team is not None:
            self.team.close()
            self.team = None

    def attach(self, params) -> None:
        """(Re)build the transposed copies ``W_k^T`` (``k >= 2``) from ``params``."""
        L = self.spec.n_layers
        if self.WT is not None and all(self.WT[k].shape == params[k].shape[::-1] for k in range(1, L)):
            for k in range(1, L):  # in place: the team's workers keep these arrays
                self.WT[k][...] = params[k].T
            return
        self.WT = (np.zeros((0, 0), self.dtype),) + tuple(np.ascontiguousarray(params[k].T) for k in range(1, L))

    def buffers(self, B: int):
        """State buffers for a batch of ``B <= batch_size`` rows (views of the full ones when smaller)."""
        if B == self.B:
            return self.Sf, self.Tf, self.Sn, self.Tn, self.cout_f, self.invout_f, self.cout_n, self.invout_n
        if B not in self._sized:
            sizes, dt, nL = self.spec.sizes, self.dtype, self.spec.sizes[-1]
            self._sized[B] = (tuple(np.zeros((B, n), dt) for n in sizes[1:]),
                              tuple(np.zeros((B, n), dt) for n in sizes[1:]),
                              tuple(np.zeros((2 * B, n), dt) for n in sizes[1:]),
                              tuple(np.zeros((2 * B, n), dt) for n in sizes[1:]),
                              np.zeros((B, nL), dt), np.zeros((B, nL), dt),
                              np.zeros((2 * B, nL), dt), np.zeros((2 * B, nL), dt))
        return self._sized[B]


def _check_params(spec: FusedSpec, params) -> tuple:
    spec.energy.split(params)
    for p in params:
        if p.dtype != spec.dtype or not p.flags.c_contiguous or not p.flags.writeable:
            raise PhysgradError(f"the compiled kernel updates C-contiguous, writeable {spec.dtype.name} parameters "
                                f"in place; got {p.dtype.name} (contiguous={p.flags.c_contiguous})")
    return tuple(params)


def make_drive(spec: FusedSpec, ws: Workspace, W1, s0) -> None:
    """Fill ``ws.drive`` with ``[s0 W1; 1 W1]`` (the drive of the coming batch; ``s0`` its input layer)."""
    s0 = np.ascontiguousarray(s0, dtype=spec.dtype)
    if len(s0) > ws.B:
        raise PhysgradError(f"batch of {len(s0)} rows exceeds the workspace's batch_size {ws.B}")
    with _compile_note(_drive, f"{spec.dtype.name}, the pass over W1"):
        _drive(W1, ws.cuts, s0, spec.drn, ws.parts, ws.drive, ws.threads, ws.par_w1, np.zeros(N_OC, spec.dtype))


def optimizer_constants(kind: str, lrs, momentum: float, t: int, dtype, betas=(0.9, 0.999)) -> np.ndarray:
    """``(len(lrs), N_OC)`` constants of :func:`_opt_apply` for step number ``t`` (1 for the first):
    ``lr, mu, b1, 1-b1, b2, 1-b2, 1-b1^t, 1-b2^t, eps`` in ``dtype``, as
    :func:`physgrad.learning.optim.step` forms them (Python floats rounded once to ``dtype``)."""
    from physgrad.learning.optim import ADAM_EPS

    b1, b2 = betas
    row = [0.0, momentum, b1, 1 - b1, b2, 1 - b2, 1 - b1 ** t, 1 - b2 ** t, ADAM_EPS]
    out = np.empty((len(lrs), N_OC), dtype)
    for i, lr in enumerate(lrs):
        out[i] = [lr] + row[1:]
    return out


class _compile_note:
    """A one-line note on stderr when the first call of ``kernel`` in this process (compiling, or
    loading from numba's cache) takes longer than :data:`NOTE_AFTER` seconds."""

    _seen: set = set()

    def __init__(self, kernel, what: str):
        self.timer = None
        key = (kernel.__name__, what)
        if key not in self._seen:  # the first call of this kernel for these types in this process
            import threading

            self._seen.add(key)
            where = numba.config.CACHE_DIR or "__pycache__ beside physgrad/layered/kernels"
            msg = (f"note: compiling the numba kernel ({what}) -- about 30 s once per machine and numba version, "
                   f"then cached in {where}")
            self.timer = threading.Timer(NOTE_AFTER, lambda: print(msg, file=sys.stderr, flush=True))
            self.timer.daemon = True

    def __enter__(self):
        if self.timer is not None:
            self.timer.start()

    def __exit__(self, *exc):
        if self.timer is not None:
            self.timer.cancel()


NOTE_AFTER = 3.0
"""Seconds of a first kernel call after which :class:`_compile_note` speaks (loading from the cache takes about 1 s)."""


def _full_args(spec: FusedSpec, params, ws: Workspace, kind, dev1, MW, VW, Mb, Vb) -> tuple:
    """``(args, key)`` of :meth:`Workspace.run` for a full batch: the workspace's arrays, the parameters,
    the optimizer state and the devices' constants -- made once and kept while these are the same
    objects (held, so ids stay unique): the team's workers keep them from call to call."""
    made = (*params, *ws.WT, kind, dev1, *MW, *VW, *Mb, *Vb, ws.team_rows, ws.cuts)
    ids = tuple(map(id, made))
    last = ws._launch
    if last is not None and last[1] == ids:
        return last[2], last[3]
    L = spec.n_layers
    args = (params[:L], params[L:], ws.WT, ws.narrow, ws.lo, ws.hi, ws.inv, ws.drive, ws.parts, ws.c1buf, ws.Bs,
            ws.Sf, ws.Tf, ws.Sn, ws.Tn, ws.warmbuf, ws.ybuf, ws.betabuf, ws.wbuf, ws.bbuf, ws.ibuf, ws.gl, ws.gp,
            ws.s0buf, ws.nxtbuf, spec.drn, ws.cuts, ws.den_out, ws.cout_f, ws.invout_f, ws.cout_n, ws.invout_n,
            ws.zero, kind, ws.ocsbuf, MW, VW, Mb, Vb, dev1, ws.team_rows)
    key = (tuple(map(id, params)), tuple(map(id, ws.WT)), kind, id(dev1), id(ws.ocsbuf),
           tuple(map(id, MW + VW + Mb + Vb)), ws.team_rows, id(ws.cuts))
    ws._launch = (made, ids, args, key)
    return args, key


def _raise_status(spec: FusedSpec, ws: Workspace, status: int, beta: float) -> None:
    """The error of a step's status (:func:`_cep_batch`): 2 a device request that is not finite, 1 the
    ``-beta`` phase that cannot be solved (the energy's message when it is non-convex); 0 returns."""
    if status == 2:
        raise PhysgradError("parameter array 0: device update: the requested change holds non-finite value(s) "
                            "(NaN or inf): the learning rule diverged; lower the learning rates")
    if status:
        spec.energy.check_beta(-beta, ws.den_out)  # raises the energy's message
        raise NotSolvedError(f"the -beta phase (beta={beta:g}) cannot be solved: the total conductances into "
                            f"the outputs are not finite ({ws.den_out}); the parameters diverged")


def cep_step(spec: FusedSpec, params, ws: Workspace, s_warm, y1h, beta: float, weight_lrs, bias_lrs,
             sweeps: int, s0, next_s0=None, optimizer=None, device_w1=None):
    """One centered-EP step; updates the arrays of ``params`` **in place** (same contract as
    :func:`physgrad.layered.fused.cep_step`, with the drive kept in ``ws``).

    Parameters
    ----------
    params : tuple of arrays
        ``(W_1..W_L, b_1..b_L)``, C-contiguous, ``spec.dtype``; ``ws.attach(params)`` must have been
        called for these arrays (the stepper does it).
    s_warm : sequence of arrays
        Warm start of the free phase, ``(B, n_k)`` each.
    y1h : array (B, n_out)
        One-hot targets.
    beta : float
        Nudging strength (> 0).
    weight_lrs, bias_lrs : sequence of float
        Learning rate per layer.
    sweeps : int
    s0 : array (B, n0)
        This batch's input layer (the drive in ``ws`` must be ``[s0 W1; 1 W1]``).
    next_s0 : array (B', n0) or None
        The next batch's input layer: its drive is left in ``ws.drive``; None leaves only the column sums.
    optimizer : tuple or None
        None: projected SGD in place. ``(kind, momentum, state)`` with ``kind`` ``"momentum"`` or
        ``"adam"`` and ``state`` the per-array state of
        :class:`physgrad.layered.optimizer.LayerOptimizer` (``init``/``load_state_arrays``): the
        learning rates scale the optimizer's step of each array, as in
        :class:`~physgrad.layered.kernels.array_stepper.OptimizerCEPStepper`; the state's arrays are
        updated in place and its step counters advanced.
    device_w1 : array or None
        ``W1`` on constant-step devices with nearest or stochastic rounding: the constants of
        :func:`physgrad.devices.pulsing.row_constants` (with this update's key); each row of ``W1`` takes what the devices
        deliver for the SGD update, in the same pass (the next drive is then that of the delivered
        conductances). SGD only. The same numbers as
        :meth:`physgrad.devices.Device.update_in_place` after the step.

    Returns
    -------
    free, s_plus : list of arrays
        The free state and the ``+beta`` state (new arrays).

    Raises
    ------
    PhysgradError
        ``-beta`` makes the nudged energy non-convex (the energy's ``check_beta`` message); nothing
        is updated then.
    """
    L = spec.n_layers
    dt = spec.dtype
    if device_w1 is None:
        dev1 = NO_DEVICE
    elif optimizer is not None:
        raise PhysgradError("device_w1: the devices' update in the pass over W1 is for SGD only")
    else:
        dev1 = np.ascontiguousarray(device_w1, dtype=np.float64)
        if dev1.shape != (8,):
            raise PhysgradError(f"device_w1 must hold 8 constants (pulsing.row_constants), got shape {dev1.shape}")
    staged = y1h is ws.ybuf  # from ws.stage: the inputs are in place already
    if not staged:
        y1h = np.ascontiguousarray(y1h, dtype=dt)
    B = len(y1h)
    if B > ws.B:
        raise PhysgradError(f"batch of {B} rows exceeds the workspace's batch_size {ws.B}")
    Sf, Tf, Sn, Tn, cout_f, invout_f, cout_n, invout_n = ws.buffers(B)
    full = B == ws.B
    warm = s_warm if full else tuple(np.ascontiguousarray(w, dtype=dt) for w in s_warm)  # (full: copied below)
    if optimizer is None:
        kind = SGD
        ocs, MW, Mb = ws.no_optimizer
        VW, Vb = MW, Mb
    else:
        name, momentum, state = optimizer
        kind = OPTIMIZER_CODES[name]
        t = int(state[0]["t"]) + 1
        ocs = optimizer_constants(name, list(weight_lrs) + list(bias_lrs), momentum, t, dt)
        weight_lrs, bias_lrs = [1.0] * L, [1.0] * L  # unit rates: the update terms are minus the gradient
        V = tuple(s["v"][0] for s in state)
        M = tuple(s["m"][0] for s in state) if kind == ADAM else V
        MW, VW, Mb, Vb = M[:L], V[:L], M[L:], V[L:]
    rates = (tuple(weight_lrs), tuple(bias_lrs), beta, B)
    if rates == ws._rates[0]:  # the same rates as the last step (most steps): the same coefficients
        wcoef, bcoef = ws._rates[1]
    else:
        wl, bl = sgd_coefficients(weight_lrs, bias_lrs, beta, B)
        wcoef, bcoef = np.array(wl, dt), np.array(bl, dt)
        ws._rates = (rates, (wcoef, bcoef))
    if not staged:
        s0 = np.ascontiguousarray(s0, dtype=dt)
    if next_s0 is None:
        nxt, n_next = s0[:0], 0
    else:
        nxt = next_s0 if staged else np.ascontiguousarray(next_s0, dtype=dt)
        n_next = len(nxt)
        if n_next > ws.B:
            raise PhysgradError(f"next batch of {n_next} rows exceeds the workspace's batch_size {ws.B}")
    if full:  # into the workspace's own arrays (kept by the team's workers from call to call)
        for buf, w in zip(ws.warmbuf, warm):
            buf[...] = w  # (casts, and checks the shape)
        if not (staged and s0 is ws.s0buf and (n_next == 0 or nxt is ws.nxtfull)):
            ws.ybuf[...] = y1h
            ws.s0buf[...] = s0
            ws.nxtbuf[:n_next] = nxt
        ws.wbuf[...] = wcoef
        ws.bbuf[...] = bcoef
        if kind != SGD:  # (SGD reads no optimizer constants)
            ws.ocsbuf[...] = ocs
        warm, y1h, s0, nxt, wcoef, bcoef, ocs = ws.warmbuf, ws.ybuf, ws.s0buf, ws.nxtbuf, ws.wbuf, ws.bbuf, ws.ocsbuf
        c1, Bs = ws.c1buf, ws.Bs
    else:
        c1, Bs = ws.c1buf[:B], ws.Bs[:B + 1]
        nxt = nxt if n_next else s0[:1]
    ws.betabuf[0] = beta
    ws.ibuf[0], ws.ibuf[1] = int(sweeps), n_next
    if full:
        args, key = _full_args(spec, params, ws, kind, dev1, MW, VW, Mb, Vb)
    else:
        args = (params[:L], params[L:], ws.WT, ws.narrow, ws.lo, ws.hi, ws.inv, ws.drive, ws.parts, c1, Bs,
                Sf, Tf, Sn, Tn, warm, y1h, ws.betabuf, wcoef, bcoef, ws.ibuf, ws.gl, ws.gp, s0, nxt, spec.drn,
                ws.cuts, ws.den_out, cout_f, invout_f, cout_n, invout_n, ws.zero, kind, ocs, MW, VW, Mb, Vb,
                dev1, ws.team_rows)
        key = None
    with _compile_note(_cep_batch, ws.note):
        status = ws.run(args, full, key)
    _raise_status(spec, ws, status, beta)
    if optimizer is not None:
        for st in optimizer[2]:
            st["t"] = t
    free = [a.copy() for a in Sf]
    s_plus = [a[B:].copy() for a in Sn]
    return free, s_plus


def sgd_coefficients(weight_lrs, bias_lrs, beta: float, B: int) -> tuple:
    """The per-layer coefficients of the C-EP step's update, ``lr / (2 beta B)``: the centered estimate
    ``(dE/dtheta(-beta) - dE/dtheta(+beta)) / (2 beta)`` averaged over the batch's ``B`` samples, times the
    learning rate (S per unit of the estimate). Returns two lists of floats (weights, biases); the
    callers round them once to the kernel's dtype."""
    scale = 1.0 / (2.0 * beta * B)
    return [lr * scale for lr in weight_lrs], [lr * scale for lr in bias_lrs]


def cep_steps(spec: FusedSpec, params, ws: Workspace, s_warm, x, order, labels, gain: float, mirror: bool,
              beta: float, wcoefs, bcoefs, sweeps: int, next_after: bool):
    """``K = len(wcoefs)`` consecutive projected-SGD steps of full batches in one compiled call
    (:func:`_cep_chunk`): per batch the same numbers, bit for bit, as :func:`cep_step` on the inputs
    :meth:`Workspace.stage` gathers, with the warm start of each batch the ``+beta`` state of the one
    before -- the one-batch route's parameters, drive, states and predictions.

    Parameters
    ----------
    params : tuple of arrays
        As for :func:`cep_step` (updated in place; ``ws.attach(params)`` done, the drive in ``ws`` that
        of the first batch).
    s_warm : sequence of arrays
        Warm start of the first batch, ``(B, n_k)`` each, ``B = ws.B`` (the batch size).
    x : array (n, n_inputs)
        Training pixels, C-contiguous, ``spec.dtype``, finite (checked by the caller).
    order : int64 array ((K + next_after) B,)
        The samples of the K batches, then (``next_after``) those of the batch after them, whose drive
        is left in ``ws.drive`` (else only the column sums).
    labels : int64 array (K B,)
        The labels of the K batches' samples.
    gain, mirror
        The input layer: ``gain (x, -x)`` (``mirror``, a DRN) or ``gain x`` (see :meth:`Workspace.stage`).
    wcoefs, bcoefs : arrays (K, L) of ``spec.dtype``
        Per batch and layer the learning rate times ``1 / (2 beta B)``, rounded once to the dtype (what
        :func:`cep_step` forms from its ``weight_lrs``, ``bias_lrs``).

    Returns
    -------
    s_plus : list of arrays
        The last batch's ``+beta`` state (the next warm start; new arrays).
    preds : int64 array (K, B)
        The free phase's predicted classes per batch.

    Raises
    ------
    PhysgradError
        An index or a label out of range (nothing changed); the errors of :func:`cep_step` for the first
        batch that fails (the batches before it are done: a run that gets this error stops).
    """
    B, K = ws.B, len(wcoefs)
    if K < 1 or len(order) != (K + bool(next_after)) * B or len(labels) != K * B:
        raise PhysgradError(f"cep_steps: {K} batch(es) of {B} need {(K + bool(next_after)) * B} sample indices "
                            f"and {K * B} labels, got {len(order)} and {len(labels)}")
    for buf, w in zip(ws.warmbuf, s_warm):
        buf[...] = w  # (casts, and checks the shape)
    ws.betabuf[0] = beta
    ws.ibuf[0] = int(sweeps)
    if gain != ws._gain[0]:
        ws._gain = (gain, ws.dtype.type(gain))
    ocs, MW, Mb = ws.no_optimizer
    args, key = _full_args(spec, params, ws, SGD, NO_DEVICE, MW, MW, Mb, Mb)
    preds = np.empty((K, B), np.int64)
    done = np.zeros(1, np.int64)
    extra = (x, order, labels, ws._gain[1], bool(mirror), wcoefs, bcoefs, bool(next_after), preds, done)
    with _compile_note(_cep_chunk, ws.note + ", several batches per call"):
        status = ws.run(args, True, key, _cep_chunk, extra)
    if status == 4:
        raise PhysgradError(f"a batch index is outside the {len(x)} training samples")
    if status == 5:
        raise PhysgradError(f"a label is outside 0..{ws.ybuf.shape[1] - 1}")
    _raise_status(spec, ws, status, beta)
    return [a[B:].copy() for a in ws.Sn], preds

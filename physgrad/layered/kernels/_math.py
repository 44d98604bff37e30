r"""The layered centered-EP step written once against an array namespace ``xp``.

``xp`` is any namespace of the Python array API standard (2023.12 subset: ``matmul``, ``sum``,
``clip``, ``where``, ``concat``, ``zeros``/``ones``, ``argmax``, arithmetic, ``.T``): numpy 2,
``array_api_strict`` (what CI tests with), or torch through ``array_api_compat``. Every function
takes arrays of one namespace and returns arrays of the same namespace, on the same device ("array
type in equals array type out"); nothing here converts to the host or knows about devices, threads
or in-place tricks -- a backend (:mod:`.torch_backend`, :class:`ArrayCEPStepper`) adds those.

The network comes from a :class:`physgrad.layered.fused.FusedSpec` (the energy's sizes and
``bounds``, the block schedule of :func:`physgrad.minimizers.block.layer_groups`), turned into
namespace arrays once by :func:`net_arrays`; input layers are the energy's ``input_layer``,
computed on the host by the caller. The arithmetic is the numpy reference kernel's
(:mod:`physgrad.layered.fused`), in the same order where that matters:

* block update of free layer ``k`` (the energy's ``block_solve``):
  ``s_k = clip((s_{k+1} W_{k+1}^T + c_k [+ s_{k-1} W_k]) r_k, lo_k, hi_k)`` with ``c_1 = s_0 W_1 + b_1``
  (the batch's drive, computed once), ``c_k = b_k``, ``r_k = 1/(1 W_k + W_{k+1} 1)`` (DRN; 0 for a
  unit without conductance) or 1 (DHN); outputs ``(s_{L-1} W_L + b_L + beta y) r_L``;
* centered-EP rank factors: ``W_k += A_k^T B_k`` (:func:`cep_factors`), conductances clamped at 0.

References
----------
B. Scellier et al., "Fast algorithm to simulate nonlinear resistive networks", ICML 2024.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from physgrad.types import PhysgradError


def namespace(*arrays):
    """The array namespace of ``arrays`` (``__array_namespace__``; torch through ``array_api_compat``)."""
    x = arrays[0]
    if hasattr(x, "__array_namespace__"):
        return x.__array_namespace__()
    try:
        import array_api_compat
    except ImportError as e:  # pragma: no cover - only for libraries without __array_namespace__
        raise PhysgradError(f"{type(x).__name__} has no __array_namespace__; install array-api-compat") from e
    return array_api_compat.array_namespace(*arrays)


@dataclass(frozen=True, eq=False)
class NetArrays:
    """What the math reads about the network, as arrays of one namespace and device.

    Attributes
    ----------
    drn : bool
    n_layers : int
    groups : tuple of tuple of int
        Free layers updated together in one sweep (``spec.groups``).
    lo, hi : dict
        Layer ``k`` (1..L-1) -> the energy's ``bounds(k)`` (V for DRNs; DHN [0, 1]).
    """

    drn: bool
    n_layers: int
    groups: tuple
    lo: dict
    hi: dict


def net_arrays(spec, xp, dtype, device=None) -> NetArrays:
    """:class:`NetArrays` of a :class:`~physgrad.layered.fused.FusedSpec` in namespace ``xp``."""
    L = spec.n_layers
    lo, hi = {}, {}
    for k in range(1, L):
        a, b = spec.energy.bounds(k)
        lo[k] = xp.asarray(np.asarray(a, np.float64), dtype=dtype, device=device)
        hi[k] = xp.asarray(np.asarray(b, np.float64), dtype=dtype, device=device)
    return NetArrays(spec.drn, L, spec.groups, lo, hi)


def recip(xp, den):
    """``1/den`` where ``den > 0``, else 0 (a unit with no conductance is set to 0 V)."""
    pos = den > 0
    return xp.where(pos, 1 / xp.where(pos, den, xp.ones_like(den)), xp.zeros_like(den))


@dataclass(frozen=True, eq=False)
class Consts:
    """Per-batch constants: ``const[k]`` (``c_k``), ``inv[k]`` (``r_k``, DRN hidden layers) and
    ``den_out`` (``1 W_L``, DRN), see the module docstring."""

    const: dict
    inv: dict
    den_out: Optional[object]


def batch_constants(xp, net: NetArrays, params, a1, c1) -> Consts:
    """:class:`Consts` from the parameters, the drive ``a1 = s0 W1`` ``(B, n1)`` and the column sums
    ``c1 = 1 W1`` (DRN)."""
    L = net.n_layers
    Ws, bs = params[:L], params[L:]
    const = {1: a1 + bs[0]}
    const.update({k: bs[k - 1] for k in range(2, L + 1)})
    inv, den_out = {}, None
    if net.drn:
        for k in range(1, L + 1):
            den = c1 if k == 1 else xp.sum(Ws[k - 1], axis=0)
            if k < L:
                inv[k] = recip(xp, den + xp.sum(Ws[k], axis=1))
            else:
                den_out = den
    return Consts(const, inv, den_out)


def output_terms(xp, net: NetArrays, consts: Consts, beta=None, y=None, rows: int = 1):
    """``(constant numerator, 1/denominator or None)`` of the output layer: free (``beta`` None) or
    nudged with ``beta`` an array ``(R, 1)`` (one beta per row) and targets ``y`` ``(R, n_out)``.
    ``rows`` repeats a first-layer constant of fewer rows (the stacked nudged phases)."""
    L = net.n_layers
    c = consts.const[L]
    if L == 1 and rows > 1:
        c = xp.concat([c] * rows, axis=0)
    if beta is None:
        return c, (recip(xp, consts.den_out) if net.drn else None)
    c = c + beta * y
    if net.drn:
        return c, recip(xp, consts.den_out + beta)
    return c, 1 / (1 + beta)


def relax(xp, net: NetArrays, params, consts: Consts, s: list, sweeps: int, c_out, inv_out, rows: int = 1) -> list:
    """``sweeps`` block-coordinate sweeps from the state ``s`` (list of ``(R, n_k)``); a new list.

    ``rows``: the first layer's constant is repeated this many times (``R = rows * B``).
    """
    L = net.n_layers
    Ws = params[:L]
    c1 = consts.const[1] if rows == 1 else xp.concat([consts.const[1]] * rows, axis=0)
    s = list(s)
    for _ in range(sweeps):
        for group in net.groups:
            new = []
            for k in group:
                if k < L:
                    num = xp.matmul(s[k], Ws[k].T) + (c1 if k == 1 else consts.const[k])
                    if k > 1:
                        num = num + xp.matmul(s[k - 2], Ws[k - 1])
                    if net.drn:
                        num = num * consts.inv[k]
                    num = xp.clip(num, min=net.lo[k], max=net.hi[k])
                else:
                    num = c_out if k == 1 else xp.matmul(s[k - 2], Ws[k - 1]) + c_out
                    if inv_out is not None:
                        num = num * inv_out
                new.append((k, num))
            for k, v in new:
                s[k - 1] = v
    return s


def phases(xp, net: NetArrays, params, consts: Consts, s_warm: list, y, beta: float, sweeps: int):
    """Free phase from ``s_warm``, then the ``-beta`` and ``+beta`` phases from the free state relaxed
    as one stacked batch (rows ``0..B-1`` at ``-beta``, ``B..2B-1`` at ``+beta``).

    Returns
    -------
    free, s_minus, s_plus : lists of arrays ``(B, n_k)``
    """
    B = y.shape[0]
    c, inv = output_terms(xp, net, consts)
    free = relax(xp, net, params, consts, s_warm, sweeps, c, inv)
    col = xp.concat([xp.full((B, 1), -beta, dtype=y.dtype, device=y.device),
                     xp.full((B, 1), beta, dtype=y.dtype, device=y.device)], axis=0)
    y2 = xp.concat([y, y], axis=0)
    c, inv = output_terms(xp, net, consts, col, y2, rows=2)
    both = relax(xp, net, params, consts, [xp.concat([f, f], axis=0) for f in free], sweeps, c, inv, rows=2)
    return free, [a[:B, ...] for a in both], [a[B:, ...] for a in both]


def cep_factors(xp, net: NetArrays, s0, s_m: list, s_p: list, beta: float, weight_lrs, bias_lrs):
    r"""The centered-EP update as rank factors: ``b_k += db_k`` and ``W_k += A_k^T B_k``.

    ``db_k = lr_b (sum s+ - sum s-) / (2 beta B)``; DRN ``A_1 = [s0; -1]``,
    ``B_1 = [h+ - h-; 1/2 sum(h+^2 - h-^2)] lr/(2 beta B)`` (the input terms cancel between the two
    phases); deeper DRN layers ``A = [a+; -a-; -r; -1]``, ``B = [h+; h-; 1; q] lr/(2 beta B)`` with
    ``r = 1/2 sum(a+^2 - a-^2)``, ``q = 1/2 sum(h+^2 - h-^2)``; DHN without the square terms.

    Returns
    -------
    dbs : list of arrays ``(n_k,)``
    factors : list of ``(A_k, B_k)``
    """
    L = net.n_layers
    B = s0.shape[0]
    scale = 1.0 / (2.0 * beta * B)
    dbs = [(bias_lrs[k] * scale) * (xp.sum(s_p[k], axis=0) - xp.sum(s_m[k], axis=0)) for k in range(L)]
    factors = []
    dt, dev = s0.dtype, s0.device
    D = s_p[0] - s_m[0]
    if net.drn:
        q1 = 0.5 * (xp.sum(s_p[0] * s_p[0], axis=0) - xp.sum(s_m[0] * s_m[0], axis=0))
        A1 = xp.concat([s0, -xp.ones((1, s0.shape[1]), dtype=dt, device=dev)], axis=0)
        B1 = xp.concat([D, xp.reshape(q1, (1, -1))], axis=0) * (weight_lrs[0] * scale)
    else:
        A1, B1 = s0, D * (weight_lrs[0] * scale)
    factors.append((A1, B1))
    for k in range(2, L + 1):
        a_p, a_m, h_p, h_m = s_p[k - 2], s_m[k - 2], s_p[k - 1], s_m[k - 1]
        if net.drn:
            r = 0.5 * (xp.sum(a_p * a_p, axis=0) - xp.sum(a_m * a_m, axis=0))
            q = 0.5 * (xp.sum(h_p * h_p, axis=0) - xp.sum(h_m * h_m, axis=0))
            A = xp.concat([a_p, -a_m, -xp.reshape(r, (1, -1)), -xp.ones((1, r.shape[0]), dtype=dt, device=dev)], axis=0)
            Bm = xp.concat([h_p, h_m, xp.ones((1, q.shape[0]), dtype=dt, device=dev), xp.reshape(q, (1, -1))], axis=0)
        else:
            A, Bm = xp.concat([a_p, -a_m], axis=0), xp.concat([h_p, h_m], axis=0)
        factors.append((A, Bm * (weight_lrs[k - 1] * scale)))
    return dbs, factors


def apply_update(xp, net: NetArrays, params, dbs, factors) -> tuple:
    """New parameters ``(W_k + A_k^T B_k [clamped at 0], b_k + db_k)`` (out of place)."""
    L = net.n_layers
    Ws = []
    for W, (A, Bm) in zip(params[:L], factors):
        W = W + xp.matmul(A.T, Bm)
        Ws.append(xp.clip(W, min=0.0) if net.drn else W)
    return tuple(Ws) + tuple(b + db for b, db in zip(params[L:], dbs))


def drive(xp, net: NetArrays, W1, s0):
    """``(s0 W1, 1 W1)`` (the second None for a DHN): one product ``[s0; 1] W1``."""
    if not net.drn:
        return xp.matmul(s0, W1), None
    P = xp.concat([s0, xp.ones((1, s0.shape[1]), dtype=s0.dtype, device=s0.device)], axis=0)
    out = xp.matmul(P, W1)
    return out[:-1, ...], out[-1, ...]


def free_outputs(xp, net: NetArrays, params, s0, sweeps: int):
    """Output layer after ``sweeps`` free sweeps from the zero state, for input layer ``s0`` ``(n, n0)``."""
    a1, c1 = drive(xp, net, params[0], s0)
    consts = batch_constants(xp, net, params, a1, c1)
    c, inv = output_terms(xp, net, consts)
    n = s0.shape[0]
    s = [xp.zeros((n, W.shape[1]), dtype=s0.dtype, device=s0.device) for W in params[:net.n_layers]]
    return relax(xp, net, params, consts, s, sweeps, c, inv)[-1]

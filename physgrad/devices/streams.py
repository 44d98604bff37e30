r"""Counter-based random numbers of the device updates: every draw a pure function of a 64-bit key and
a counter, so that an update draws the same numbers whatever order, route (compiled or numpy) or
thread split visits its devices, and nothing but the key's counters has to be checkpointed.

The generator is SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
OOPSLA 2014; the finaliser of Stafford's "variant 13"): the draw number :math:`c` of stream ``key`` is

.. math:: z = \mathrm{mix}(\mathrm{key} + (c + 1)\,\gamma),\qquad \gamma = \mathtt{0x9E3779B97F4A7C15},

the 64-bit output of position :math:`c` of the SplitMix64 sequence seeded with ``key`` (which passes
BigCrush). From it:

- a uniform on :math:`[0, 1)`: :math:`\lfloor z / 2^{11} \rfloor\, 2^{-53}` (53 bits, numpy's ``random()``);
- a standard normal: the 256-layer ziggurat of Marsaglia and Tsang (2000) in numpy's form (8 bits
  choose the layer, one the sign, 52 the abscissa; accepted at once 99 % of the time); its rare
  further draws (wedges, tail) continue the SplitMix64 sequence seeded with the first output
  :math:`z`, i.e. :math:`\mathrm{mix}(z + k\gamma)`, ``k = 1, 2, ...``.

Keys are derived from words (the run's seed, the update's number, the array, the kind of draw) by
:func:`stream_key`, in Python integers. The compiled functions (``numba``) and the vectorised numpy
ones (:func:`uniforms`, :func:`normals`) give the same bits (the tail and the wedges call ``log1p``
and ``exp``, whose last bit may differ between numpy and the compiled library).

Tests: ``tests/test_devices_streams.py`` (Kolmogorov-Smirnov and moment tests of both kinds of draw,
the compiled and numpy routes against each other, independence of neighbouring keys and counters).
"""
from __future__ import annotations

import math

import numpy as np

try:
    from numba import njit

    from physgrad import _numba_cache
    _numba_cache.install()
    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised where numba is absent
    AVAILABLE = False

    def njit(*args, **kwargs):  # a stand-in decorator: the functions exist but are never called
        if args and callable(args[0]):
            return args[0]
        return lambda f: f

M64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
_C1, _C2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_U_GAMMA, _U_C1, _U_C2 = np.uint64(GAMMA), np.uint64(_C1), np.uint64(_C2)
_S30, _S27, _S31, _S11, _S8, _S1 = (np.uint64(s) for s in (30, 27, 31, 11, 8, 1))
_BYTE, _BIT, _ABS = np.uint64(0xFF), np.uint64(1), np.uint64(0x000FFFFFFFFFFFFF)
_ULP53 = 2.0 ** -53


def mix64(z: int) -> int:
    """The SplitMix64 finaliser of a Python integer (taken modulo :math:`2^{64}`)."""
    z &= M64
    z = ((z ^ (z >> 30)) * _C1) & M64
    z = ((z ^ (z >> 27)) * _C2) & M64
    return z ^ (z >> 31)


def stream_key(*words: int) -> int:
    """A 64-bit key from integer words (any sign and size, taken modulo :math:`2^{64}`), each mixed in:
    :math:`k \\leftarrow \\mathrm{mix}((k \\oplus w) + \\gamma)` from :math:`k = 0`."""
    k = 0
    for w in words:
        k = mix64((k ^ (int(w) & M64)) + GAMMA)
    return k


# --- the ziggurat's tables (Marsaglia and Tsang 2000, 256 layers, 52-bit abscissae) -------------------------
ZIG_R = 3.6541528853610088
"""Right edge of the base layer; beyond it, the tail."""
_ZIG_V = 4.92867323399e-3  # the area of each layer


def _ziggurat_tables() -> tuple:
    r"""``(ki, wi, fi)``: layer ``i`` (1..255) spans :math:`|x| < x_i` at heights :math:`[f(x_i), f(x_{i-1})]`
    (``x_0 = 0``, ``x_255 = r``, :math:`f(x) = e^{-x^2/2}`); a 52-bit abscissa ``a`` of layer ``i`` is
    :math:`x = a\,w_i`, accepted at once when ``a < k_i`` (:math:`x < x_{i-1}`); layer 0 is the base
    rectangle of area ``v`` with the tail."""
    m = 2.0 ** 52
    f = lambda x: math.exp(-0.5 * x * x)  # noqa: E731
    ki, wi, fi = np.zeros(256, np.uint64), np.zeros(256), np.zeros(256)
    dn = tn = ZIG_R
    q = _ZIG_V / f(dn)
    ki[0], ki[1] = np.uint64(int(dn / q * m)), np.uint64(0)
    wi[0], wi[255] = q / m, dn / m
    fi[0], fi[255] = 1.0, f(dn)
    for i in range(254, 0, -1):
        dn = math.sqrt(-2.0 * math.log(_ZIG_V / dn + f(dn)))
        ki[i + 1] = np.uint64(int(dn / tn * m))
        tn = dn
        fi[i] = f(dn)
        wi[i] = dn / m
    return ki, wi, fi


ZIG_K, ZIG_W, ZIG_F = _ziggurat_tables()


# --- compiled ------------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def mix(z):  # pragma: no cover - compiled
    """The SplitMix64 finaliser of a uint64."""
    z = (z ^ (z >> _S30)) * _U_C1
    z = (z ^ (z >> _S27)) * _U_C2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def bits(key, c):  # pragma: no cover - compiled
    """The 64-bit draw number ``c`` (int, >= 0) of stream ``key`` (uint64)."""
    return mix(key + np.uint64(c + 1) * _U_GAMMA)


@njit(cache=True, inline="always")
def uniform(key, c):  # pragma: no cover - compiled
    """The uniform on [0, 1) of draw ``c`` of stream ``key``."""
    return float(bits(key, c) >> _S11) * _ULP53


@njit(cache=True, inline="always")
def normal(key, c):  # pragma: no cover - compiled
    """The standard normal of draw ``c`` of stream ``key`` (the ziggurat; see the module docstring): the
    common case inline, the rest in :func:`_normal_rest`."""
    z0 = bits(key, c)
    idx = int(z0 & _BYTE)
    z8 = z0 >> _S8
    rabs = (z8 >> _S1) & _ABS
    if rabs < ZIG_K[idx]:
        x = float(rabs) * ZIG_W[idx]
        return -x if z8 & _BIT else x
    return _normal_rest(z0)


@njit(cache=True)
def _normal_rest(z0):  # pragma: no cover - compiled
    """:func:`normal` after its first draw ``z0`` was not accepted at once."""
    z = z0
    k = 0
    while True:
        idx = int(z & _BYTE)
        z8 = z >> _S8
        rabs = (z8 >> _S1) & _ABS
        x = float(rabs) * ZIG_W[idx]
        if z8 & _BIT:
            x = -x
        if rabs < ZIG_K[idx]:
            return x
        if idx == 0:
            while True:
                k += 1
                u1 = float(mix(z0 + np.uint64(k) * _U_GAMMA) >> _S11) * _ULP53
                k += 1
                u2 = float(mix(z0 + np.uint64(k) * _U_GAMMA) >> _S11) * _ULP53
                xx = -np.log1p(-u1) / ZIG_R
                yy = -np.log1p(-u2)
                if yy + yy > xx * xx:
                    return -(ZIG_R + xx) if (rabs >> _S8) & _BIT else ZIG_R + xx
        k += 1
        u = float(mix(z0 + np.uint64(k) * _U_GAMMA) >> _S11) * _ULP53
        if (ZIG_F[idx - 1] - ZIG_F[idx]) * u + ZIG_F[idx] < np.exp(-0.5 * x * x):
            return x
        k += 1
        z = mix(z0 + np.uint64(k) * _U_GAMMA)


@njit(cache=True)
def _fill(key, first, out, kind):  # pragma: no cover - compiled
    for j in range(out.size):
        out[j] = uniform(key, first + j) if kind == 0 else normal(key, first + j)


# --- numpy -----------------------------------------------------------------------------------------------------
def _mix_np(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> _S30)) * _U_C1
    z = (z ^ (z >> _S27)) * _U_C2
    return z ^ (z >> _S31)


def _bits_np(key: int, counters) -> np.ndarray:
    c = np.asarray(counters, dtype=np.uint64).reshape(-1) + _S1  # 1-d: array arithmetic wraps silently
    return _mix_np(np.uint64(key & M64) + c * _U_GAMMA)


def uniforms(key: int, counters) -> np.ndarray:
    """The uniforms (float64) of the draws ``counters`` (ints >= 0, any shape; flat result) of stream ``key``."""
    return (_bits_np(key, counters) >> _S11).astype(np.float64) * _ULP53


def normals(key: int, counters) -> np.ndarray:
    """The standard normals (float64, flat) of the draws ``counters`` of stream ``key``: the same algorithm
    as the compiled :func:`normal`, vectorised (the rare rejections iterate on the rejected draws only)."""
    z0 = _bits_np(key, counters)
    out = np.empty(z0.size)
    z = z0.copy()
    k = np.zeros(z0.size, np.uint64)
    todo = np.arange(z0.size)
    while todo.size:
        zz = z[todo]
        idx = (zz & _BYTE).astype(np.intp)
        z8 = zz >> _S8
        rabs = (z8 >> _S1) & _ABS
        x = rabs.astype(np.float64) * ZIG_W[idx]
        x = np.where((z8 & _BIT) != 0, -x, x)
        ok = rabs < ZIG_K[idx]
        out[todo[ok]] = x[ok]
        rest = ~ok
        base = rest & (idx == 0)
        for j in np.flatnonzero(base):  # the tail (about 1 draw in 10^4): one at a time
            t = todo[j]
            while True:
                k[t] += _S1
                u1 = float(_mix_np(z0[t:t + 1] + k[t:t + 1] * _U_GAMMA)[0] >> _S11) * _ULP53
                k[t] += _S1
                u2 = float(_mix_np(z0[t:t + 1] + k[t:t + 1] * _U_GAMMA)[0] >> _S11) * _ULP53
                xx = -np.log1p(-u1) / ZIG_R
                yy = -np.log1p(-u2)
                if yy + yy > xx * xx:
                    out[t] = -(ZIG_R + xx) if int(rabs[j] >> _S8) & 1 else ZIG_R + xx
                    break
        wedge = np.flatnonzero(rest & (idx != 0))
        t = todo[wedge]
        k[t] += _S1
        u = (_mix_np(z0[t] + k[t] * _U_GAMMA) >> _S11).astype(np.float64) * _ULP53
        i, xw = idx[wedge], x[wedge]
        acc = (ZIG_F[i - 1] - ZIG_F[i]) * u + ZIG_F[i] < np.exp(-0.5 * xw * xw)
        out[t[acc]] = xw[acc]
        t = t[~acc]
        k[t] += _S1
        z[t] = _mix_np(z0[t] + k[t] * _U_GAMMA)
        todo = t
    return out


def draws(key: int, first: int, size: int, kind: str = "uniform", backend: str = "auto") -> np.ndarray:
    """Draws ``first .. first + size - 1`` of stream ``key``: ``kind`` ``"uniform"`` or ``"normal"``, by the
    compiled functions (``backend`` ``"numba"``; ``"auto"`` when installed) or the numpy ones."""
    if backend != "numpy" and AVAILABLE:
        out = np.empty(int(size))
        _fill(np.uint64(key & M64), int(first), out, 0 if kind == "uniform" else 1)
        return out
    c = np.arange(int(first), int(first) + int(size), dtype=np.uint64)
    return uniforms(key, c) if kind == "uniform" else normals(key, c)

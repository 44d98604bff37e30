r"""Convolutional Hopfield energy (deep convolutional Hopfield network, DCHN).

The energy of the comparative study (Scellier et al. 2023) and of Laborieux et al. (2021): free
layers ``s_1..s_{L-1}`` are images of shape ``(c_k, h_k, w_k)`` with units in ``[0, 1]`` (hard
sigmoid), the output layer ``s_L`` is linear and densely connected to the last image layer. Layer
``k <= L-1`` is driven by a stride-1 convolution of layer ``k-1`` followed by 2x2 pooling:

.. math::

    E(s, \theta, x) = \sum_{k=1}^{L} \tfrac12 \|s_k\|^2
        - \sum_{k=1}^{L-1} s_k \cdot P\big(W_k \star s_{k-1}\big)
        - s_L \cdot \big(\mathrm{vec}(s_{L-1})\, W_L\big) - \sum_{k=1}^{L} b_k \cdot s_k,
        \qquad s_0 = x,

per sample, where :math:`W_k \star a` is the cross-correlation (``torch.nn.functional.conv2d``) of
``a`` with kernels ``W_k`` of shape ``(c_k, c_{k-1}, K, K)`` and zero padding ``p``, :math:`P` is
2x2 max pooling (stride 2; ties go to the first maximal entry of the window in row-major order, as
torch's ``max_pool2d``) or 2x2 average pooling, ``b_k`` has one bias per channel (broadcast over
the image) and ``W_L`` has shape ``(c_{L-1} h_{L-1} w_{L-1}, n_outputs)`` (the image flattened in
``(channel, row, column)`` order). All quantities are dimensionless (a Hopfield network, not a
circuit).

**State convention.** So that every layered minimizer and learning rule applies unchanged, a state
is a tuple of *flattened* layers ``(batch, n_k)`` with ``n_k = c_k h_k w_k`` (``(channel, row,
column)`` order) and ``x`` is ``(batch, c_0 h_0 w_0)``; :meth:`ConvHopfield.image` reshapes.

**Block updates** (:meth:`ConvHopfield.block_solve`, the "Hopfield update" of the study's
fixed-point minimizer): with every other layer fixed, layer ``k``'s new value is

.. math::

    s_k \leftarrow \operatorname{clip}\Big(P(W_k\star s_{k-1}) + b_k
        + W_{k+1}^{\top}\!\star U_{k+1}(s_{k+1}),\ 0,\ 1\Big),

where :math:`U_{k+1}` un-pools ``s_{k+1}`` onto the pooling windows' winners of
:math:`W_{k+1}\star s_k` at the *current* ``s_k`` (average pooling: ``1/4`` everywhere) and
:math:`W^\top\star` is the transposed convolution (for ``k = L-1``: ``s_L W_L^\top``). The output
update is ``(vec(s_{L-1}) W_L + b_L + beta y) / (1 + beta)``. With average pooling the energy is a
separable convex quadratic in each layer and the update is the exact block minimiser; with max
pooling it is the exact minimiser with the winners held fixed (E is then piecewise quadratic in
``s_k``), and a fixed point of the sweep is a stationary point of ``E`` on the box
``[0, 1]^{n}``. :class:`physgrad.minimizers.block.BlockCoordinateDescent` runs these updates
(asynchronous schedule = the study's).

References
----------
A. Laborieux, M. Ernoult, B. Scellier, Y. Bengio, J. Grollier, D. Querlioz, "Scaling equilibrium
propagation to deep ConvNets by drastically reducing its gradient estimator bias", Front. Neurosci.
15:633674 (2021).
B. Scellier, M. Ernoult, J. Kendall, S. Kumar, "Energy-based learning algorithms for analog
computing: a comparative study", NeurIPS 2023 (the authors' ``model/hopfield``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import autograd.numpy as anp
import numpy as np
from autograd.builtins import SequenceBox
from autograd.tracer import getval

from physgrad.energies.layered import LayerStates, _check_x
from physgrad.types import FREE, Nudge, PhysgradError

Pooling = Literal["max", "avg"]
POOLINGS = get_args(Pooling)


# --- the operators of the definition (pure numpy, traceable by autograd) -------------------------
def patches(a, kernel: int, padding: int):
    """Sliding windows of ``a`` ``(B, C, H, W)``: ``(B, C, Ho, Wo, K, K)`` with ``Ho = H + 2p - K + 1``."""
    if padding:
        a = anp.pad(a, ((0, 0), (0, 0), (padding, padding), (padding, padding)), mode="constant")
    H, W = anp.shape(a)[2:]
    rows = np.arange(H - kernel + 1)[:, None] + np.arange(kernel)[None, :]  # (Ho, K)
    cols = np.arange(W - kernel + 1)[:, None] + np.arange(kernel)[None, :]  # (Wo, K)
    return a[:, :, rows[:, None, :, None], cols[None, :, None, :]]


def conv(a, W, padding: int):
    r"""Cross-correlation :math:`(W\star a)[b,o,i,j] = \sum_{c,p,q} W[o,c,p,q]\, a_{pad}[b,c,i+p,j+q]`,
    ``a`` ``(B, C, H, W)``, ``W`` ``(O, C, K, K)`` -> ``(B, O, Ho, Wo)``."""
    return anp.einsum("bchwpq,ocpq->bohw", patches(a, anp.shape(W)[-1], padding), W)


def conv_transpose(g, W, padding: int):
    r"""Adjoint of :func:`conv` in its input: ``g`` ``(B, O, Ho, Wo)`` -> ``(B, C, H, W)``, computed as
    the correlation of ``g`` padded by ``K - 1 - p`` with the flipped, transposed kernels."""
    K = anp.shape(W)[-1]
    flipped = anp.transpose(W[:, :, ::-1, ::-1], (1, 0, 2, 3))
    return conv(g, flipped, K - 1 - padding)


def conv_weight_grad(a, g, kernel: int, padding: int):
    r""":math:`\sum_{b,i,j} g[b,o,i,j]\, a_{pad}[b,c,i+p,j+q]`, shape ``(O, C, K, K)`` (the derivative of
    :math:`g \cdot (W \star a)` in ``W``)."""
    return anp.einsum("bohw,bchwpq->ocpq", g, patches(a, kernel, padding))


def windows(z):
    """``(B, C, 2h, 2w)`` -> ``(B, C, h, w, 4)``: the 2x2 pooling windows, entries in row-major order."""
    B, C, H, W = anp.shape(z)
    z = anp.reshape(z, (B, C, H // 2, 2, W // 2, 2))
    return anp.reshape(anp.transpose(z, (0, 1, 2, 4, 3, 5)), (B, C, H // 2, W // 2, 4))


def unwindows(w):
    """Inverse of :func:`windows`: ``(B, C, h, w, 4)`` -> ``(B, C, 2h, 2w)``."""
    B, C, h, wd, _ = anp.shape(w)
    w = anp.transpose(anp.reshape(w, (B, C, h, wd, 2, 2)), (0, 1, 2, 4, 3, 5))
    return anp.reshape(w, (B, C, 2 * h, 2 * wd))


def pool_weights(z, pooling: Pooling):
    """Weights of each window entry in the pooled value, ``(B, C, h, w, 4)`` (constants, never traced):
    max: 1 at the first maximal entry of each window, 0 elsewhere; avg: 1/4."""
    z = np.asarray(getval(z))
    if pooling == "avg":
        return np.full(z.shape[:2] + (z.shape[2] // 2, z.shape[3] // 2, 4), 0.25, dtype=z.dtype)
    w = windows(z)
    return (np.arange(4) == np.argmax(w, axis=-1)[..., None]).astype(z.dtype)


def pool(z, weights):
    """2x2 pooling of ``z`` ``(B, C, 2h, 2w)`` with window weights from :func:`pool_weights`."""
    return anp.sum(windows(z) * weights, axis=-1)


def unpool(p, weights):
    """Adjoint of :func:`pool`: ``p`` ``(B, C, h, w)`` spread onto the windows by ``weights``."""
    return unwindows(p[..., None] * weights)


@dataclass(frozen=True)
class ConvHopfield(LayerStates):
    r"""Energy of a deep convolutional Hopfield network (see the module docstring for the formula).

    Parameters
    ----------
    image : tuple of int
        Input shape ``(c_0, h_0, w_0)``; ``x`` is ``(batch, c_0 h_0 w_0)`` (pixels in [0, 1]).
    channels : tuple of int
        Channels ``(c_1, ..., c_{L-1})`` of the convolutional (image) layers.
    n_outputs : int
    kernel : int
        Square kernel size ``K``.
    padding : int
        Zero padding ``p`` of each convolution (``0 <= p <= K - 1``).
    pooling : {"max", "avg"}
        2x2 pooling after each convolution; every convolution's output (``h + 2p - K + 1``) must be even.

    Notes
    -----
    ``theta = (W_1, ..., W_L, b_1, ..., b_L)``: ``W_k`` ``(c_k, c_{k-1}, K, K)`` for the image layers,
    ``W_L`` ``(n_{L-1}, n_outputs)``; ``b_k`` ``(c_k,)``, ``b_L`` ``(n_outputs,)``. The defaults are
    the MNIST network of Laborieux et al. (2021) and of the authors' ``ConvHopfieldEnergy28``:
    1x28x28 -> 32x12x12 -> 64x4x4 -> 10, 5x5 kernels, no padding, max pooling.
    """

    image: tuple = (1, 28, 28)
    channels: tuple = (32, 64)
    n_outputs: int = 10
    kernel: int = 5
    padding: int = 0
    pooling: Pooling = "max"

    def __post_init__(self):
        image = tuple(int(v) for v in self.image)
        channels = tuple(int(c) for c in self.channels)
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "channels", channels)
        if len(image) != 3 or min(image) < 1:
            raise PhysgradError(f"image must be (channels, height, width) >= 1, got {self.image!r}")
        if not channels or min(channels) < 1 or int(self.n_outputs) < 1:
            raise PhysgradError(f"channels (at least one) and n_outputs must be >= 1, got {channels}, {self.n_outputs}")
        K, p = int(self.kernel), int(self.padding)
        if K < 1 or not 0 <= p <= K - 1:
            raise PhysgradError(f"kernel must be >= 1 and padding in [0, kernel - 1], got {self.kernel}, {self.padding}")
        if self.pooling not in POOLINGS:
            raise PhysgradError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        h, w = image[1:]
        for k, c in enumerate(channels, start=1):
            ho, wo = h + 2 * p - K + 1, w + 2 * p - K + 1
            if ho < 2 or wo < 2 or ho % 2 or wo % 2:
                raise PhysgradError(f"layer {k}: the convolution's output {ho}x{wo} of a {h}x{w} input must be even "
                                    f"and >= 2 for 2x2 pooling (kernel {K}, padding {p})")
            h, w = ho // 2, wo // 2

    # --- structure ----------------------------------------------------------------------------
    @property
    def shapes(self) -> tuple:
        """``(c_k, h_k, w_k)`` of the input (``k = 0``) and image layers, then ``(n_outputs,)``."""
        out, (h, w) = [self.image], self.image[1:]
        for c in self.channels:
            h, w = (h + 2 * self.padding - self.kernel + 1) // 2, (w + 2 * self.padding - self.kernel + 1) // 2
            out.append((c, h, w))
        return tuple(out) + ((int(self.n_outputs),),)

    @property
    def n_layers(self) -> int:
        """Free layers ``L`` (image layers + the output layer)."""
        return len(self.channels) + 1

    @property
    def sizes(self) -> tuple:
        """Units per layer, input first (flattened images)."""
        return tuple(int(np.prod(s)) for s in self.shapes)

    @property
    def n_inputs(self) -> int:
        return self.sizes[0]

    @property
    def n_input_units(self) -> int:
        return self.sizes[0]

    @property
    def param_shapes(self) -> tuple:
        """Shapes of ``(W_1..W_L, b_1..b_L)``."""
        sh, K = self.shapes, self.kernel
        Ws = tuple((sh[k][0], sh[k - 1][0], K, K) for k in range(1, self.n_layers)) + ((self.sizes[-2], self.sizes[-1]),)
        bs = tuple((sh[k][0],) for k in range(1, self.n_layers + 1))
        return Ws + bs

    def image_of(self, k: int, a):
        """Layer ``k`` (0 = input) as an image ``(B, c_k, h_k, w_k)`` from its flat ``(B, n_k)``."""
        return anp.reshape(a, (anp.shape(a)[0],) + self.shapes[k])

    def split(self, theta):
        """``(Ws, bs)`` from ``theta``, checking the number and shapes of the arrays."""
        L = self.n_layers
        if not isinstance(theta, (tuple, list, SequenceBox)) or len(theta) != 2 * L:
            raise PhysgradError(f"theta must be a tuple of {L} weight arrays and {L} bias vectors")
        for i, want in enumerate(self.param_shapes):
            if anp.shape(theta[i]) != want:
                kind = "W" if i < L else "b"
                raise PhysgradError(f"{kind}_{i % L + 1} must have shape {want}, got {anp.shape(theta[i])}")
        return tuple(theta[i] for i in range(L)), tuple(theta[L + i] for i in range(L))

    def input_layer(self, x, dtype=float):
        """The pixels ``x`` ``(batch, c_0 h_0 w_0)`` in ``dtype`` (default float64)."""
        return _check_x(x, self.n_inputs, dtype)

    def bounds(self, k: int):
        """``(lo, hi)`` of free layer ``k``, shape ``(n_k,)``: ``[0, 1]`` for image layers, unbounded outputs."""
        n = self.sizes[k]
        if k == self.n_layers:
            return np.full(n, -np.inf), np.full(n, np.inf)
        return np.zeros(n), np.ones(n)

    def init_theta(self, rng: np.random.Generator, weight_gain=1.0, dtype=float):
        """``W_k ~ U(-a_k, a_k)``, ``a_k = gain_k / sqrt(fan_in)`` (fan-in ``c_{k-1} K^2`` for kernels, ``n_{L-1}``
        for the dense layer; the authors' "kaiming uniform"), ``b_k = 0``. ``weight_gain`` is one number or
        one per layer. Draws in layer order, input side first, then cast to ``dtype``."""
        L = self.n_layers
        gains = tuple(float(g) for g in weight_gain) if hasattr(weight_gain, "__len__") else (float(weight_gain),) * L
        if len(gains) != L:
            raise PhysgradError(f"weight_gain needs 1 or {L} values, got {len(gains)}")
        Ws = []
        for shape, g in zip(self.param_shapes[:L], gains):
            fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
            a = g / np.sqrt(fan_in)
            Ws.append(rng.uniform(-a, a, size=shape).astype(dtype))
        return tuple(Ws) + tuple(np.zeros(s, dtype=dtype) for s in self.param_shapes[L:])

    def project(self, theta):
        """Every parameter is feasible (returned unchanged)."""
        Ws, bs = self.split(theta)
        return Ws + bs

    # --- the energy ---------------------------------------------------------------------------
    def _images(self, state, x):
        return [self.image_of(0, self.input_layer(x) if not hasattr(x, "_value") else x)] + \
            [self.image_of(k, s) for k, s in enumerate(state[:-1], start=1)]

    def drive(self, k: int, a_prev, W):
        """``(P(W_k * s_{k-1}), weights)`` of image layer ``k``: the pooled feed-forward drive ``(B, c_k, h_k, w_k)``
        and the pooling window weights it used (:func:`pool_weights`)."""
        z = conv(a_prev, W, self.padding)
        wts = pool_weights(z, self.pooling)
        return pool(z, wts), wts

    def energy(self, state, theta, x):
        """Energy per sample, shape ``(batch,)``."""
        Ws, bs = self.split(theta)
        imgs = self._images(state, x)
        L = self.n_layers
        E = 0.0
        for k in range(1, L):
            h = imgs[k]
            d, _ = self.drive(k, imgs[k - 1], Ws[k - 1])
            t = h * (0.5 * h - d - bs[k - 1][None, :, None, None])
            E = E + anp.sum(anp.reshape(t, (anp.shape(t)[0], -1)), axis=1)
        o = state[-1]
        return E + anp.sum(o * (0.5 * o - anp.dot(state[-2], Ws[-1]) - bs[-1]), axis=1)

    def theta_grad(self, state, theta, x):
        r""":math:`\partial E/\partial\theta` at fixed state, averaged over the batch: ``dE/dW_k =
        -mean_b sum_ij U_k(s_k)[o,i,j] a_{k-1,pad}[c,i+p,j+q]`` (pooling winners at the state),
        ``dE/db_k = -mean_b sum_ij s_k[c,i,j]``; dense: ``-mean_b s_{L-1}^T s_L``, ``-mean_b s_L``."""
        Ws, bs = self.split(theta)
        imgs = self._images(state, x)
        B = anp.shape(state[-1])[0]
        gW, gb = [], []
        for k in range(1, self.n_layers):
            _, wts = self.drive(k, imgs[k - 1], Ws[k - 1])
            gW.append(-conv_weight_grad(imgs[k - 1], unpool(imgs[k], wts), self.kernel, self.padding) / B)
            gb.append(-anp.sum(imgs[k], axis=(0, 2, 3)) / B)
        gW.append(-anp.dot(anp.transpose(state[-2]), state[-1]) / B)
        gb.append(-anp.mean(state[-1], axis=0))
        return tuple(gW) + tuple(gb)

    def block_solve(self, k: int, state, theta, x, nudge: Nudge = FREE):
        """The layer update of the module docstring (pure, traceable), flat ``(B, n_k)``."""
        Ws, bs = self.split(theta)
        imgs = self._images(state, x)
        L = self.n_layers
        B = anp.shape(state[-1])[0]
        if k == L:
            num = anp.dot(state[-2], Ws[-1]) + bs[-1]
            if nudge.beta != 0.0:
                y = np.broadcast_to(np.asarray(nudge.target, dtype=float), (B, self.n_outputs))
                return (num + nudge.beta * y) / (1.0 + nudge.beta)
            return num
        d, _ = self.drive(k, imgs[k - 1], Ws[k - 1])
        pre = d + bs[k - 1][None, :, None, None]
        if k == L - 1:
            back = anp.reshape(anp.dot(state[-1], anp.transpose(Ws[-1])), anp.shape(pre))
        else:
            _, wts = self.drive(k + 1, imgs[k], Ws[k])
            back = conv_transpose(unpool(imgs[k + 1], wts), Ws[k], self.padding)
        return anp.reshape(anp.clip(pre + back, 0.0, 1.0), (B, self.sizes[k]))

    def check_nudge(self, theta, nudge: Nudge) -> None:
        """The nudged output block ``(1 + beta) s_L^2 / 2 - ...`` is convex iff ``beta > -1``."""
        self.check_beta(nudge.beta)

    @staticmethod
    def check_beta(beta: float, output_conductance=None) -> None:
        """Raise :class:`PhysgradError` unless ``beta > -1``."""
        if beta <= -1.0:
            raise PhysgradError(f"beta={beta:g} makes the output block non-convex (need beta > -1)")

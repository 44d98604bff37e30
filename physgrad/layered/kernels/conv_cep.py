r"""Fast equilibrium propagation for the convolutional Hopfield energy (numpy and torch).

The same layer updates as :meth:`physgrad.energies.conv.ConvHopfield.block_solve` run by
:class:`physgrad.minimizers.block.BlockCoordinateDescent` (the reference), reorganised for speed:

* convolutions are one BLAS product on an im2col view (numpy) or ``torch.nn.functional.conv2d``
  (torch), pooling winners are indices, not one-hot masks;
* every convolution ``z_k = W_k \star s_{k-1}`` is computed once per change of ``s_{k-1}`` and
  shared by the update of ``s_k`` (its pooled drive) and of ``s_{k-1}`` (the pooling winners that
  route the feedback), where the reference computes it twice per sweep; the input layer's
  convolution is computed once per batch and shared by the free and both nudged phases;
* the equilibrium-propagation update of ``W_1`` is one product ``cols(x)^T (U_+ - U_-)`` (the
  input patches are the same in both phases).

Nothing else changes: the schedule comes from :func:`physgrad.minimizers.block.layer_groups`, the
reads of a group are the state before the group, ties in max pooling go to the first maximal entry
(as the reference and ``torch.max_pool2d``), and in float64 the kernel agrees with the reference to
rounding (tests: ``tests/test_conv_hopfield.py``).

:class:`ConvEPStepper` is the ``--engine fast`` stepper of ``dchn`` presets (the
:class:`physgrad.layered.steppers.Stepper` protocol): positive, negative or centered EP, SGD in
place or the preset's momentum/adam through :class:`physgrad.layered.optimizer.LayerOptimizer`
(numpy), with the preset's weight decay (:func:`physgrad.learning.optim.decayed`) in either.
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from physgrad.energies.conv import ConvHopfield
from physgrad.layered.optimizer import OptimizerState
from physgrad.learning._phase import ZERO_PHASES
from physgrad.learning.optim import decayed
from physgrad.minimizers.block import layer_groups
from physgrad.types import PhysgradError

VARIANT_SIGNS = {"positive": (1.0, 0.0), "negative": (0.0, -1.0), "centered": (1.0, -1.0)}
"""The two nudges (in units of beta) whose states are contrasted: ``(+1, 0)``, ``(0, -1)``, ``(+1, -1)``."""


class NumpyOps:
    """The convolution operators on numpy arrays ``(B, C, H, W)`` (BLAS products on im2col views)."""

    def __init__(self, energy: ConvHopfield):
        self.K, self.p, self.pooling = energy.kernel, energy.padding, energy.pooling

    def cols(self, a, padding=None):
        """Patches of ``a`` ``(B, C, H, W)`` as one matrix ``(C K K, B Ho Wo)`` (a copy), with ``(B, Ho, Wo)``."""
        p = self.p if padding is None else padding
        if p:
            a = np.pad(a, ((0, 0), (0, 0), (p, p), (p, p)))
        v = sliding_window_view(a, (self.K, self.K), axis=(2, 3))  # (B, C, Ho, Wo, K, K)
        B, C, Ho, Wo = v.shape[:4]
        return np.ascontiguousarray(v.transpose(1, 4, 5, 0, 2, 3)).reshape(C * self.K * self.K, B * Ho * Wo), B, Ho, Wo

    def conv(self, a, W, padding=None, cols=None):
        """``W \\star a`` ``(B, O, Ho, Wo)``: one product ``W (C K K) x cols``; ``cols``: precomputed :meth:`cols` of ``a``."""
        c, B, Ho, Wo = self.cols(a, padding) if cols is None else cols
        return (W.reshape(W.shape[0], -1) @ c).reshape(W.shape[0], B, Ho, Wo).transpose(1, 0, 2, 3)

    def conv_t(self, g, W):
        """Adjoint of :meth:`conv` in its input: one product ``W^T g`` (``(C K K, B Ho Wo)``), then the
        ``K^2`` shifted blocks added into the (padded) input image (col2im)."""
        B, O, Ho, Wo = g.shape
        C, K, p = W.shape[1], self.K, self.p
        g2 = np.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(O, B * Ho * Wo)
        cols = (W.reshape(O, -1).T @ g2).reshape(C, K, K, B, Ho, Wo)
        out = np.zeros((C, B, Ho + K - 1, Wo + K - 1), dtype=g.dtype)
        for i in range(K):
            for j in range(K):
                out[:, :, i:i + Ho, j:j + Wo] += cols[:, i, j]
        out = out.transpose(1, 0, 2, 3)
        return out[:, :, p:out.shape[2] - p, p:out.shape[3] - p] if p else out

    def wgrad(self, cols, g):
        """``sum_{b,i,j} g[b,o,i,j] cols[(c,p,q),(b,i,j)]`` shaped ``(O, C, K, K)``; ``cols`` from :meth:`cols`."""
        O = g.shape[1]
        g2 = np.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(O, -1)
        return (g2 @ cols[0].T).reshape(O, -1, self.K, self.K)

    @staticmethod
    def _corners(z):
        """The four entries of every 2x2 window as strided views, in row-major window order."""
        return z[:, :, 0::2, 0::2], z[:, :, 0::2, 1::2], z[:, :, 1::2, 0::2], z[:, :, 1::2, 1::2]

    def pool(self, z):
        """``(pooled, winners)``: 2x2 max (winner = first maximal entry, by strict comparisons in window
        order) or average pooling (winners None)."""
        v = self._corners(z)
        if self.pooling == "avg":
            return (v[0] + v[1] + v[2] + v[3]) * 0.25, None
        best = np.array(v[0])
        idx = np.zeros(best.shape, dtype=np.int8)
        for d in (1, 2, 3):
            m = v[d] > best
            np.copyto(best, v[d], where=m)
            idx[m] = d
        return best, idx

    def unpool(self, p, idx):
        """Adjoint of :meth:`pool`: ``p`` ``(B, C, h, w)`` onto the winners (avg: ``p / 4`` everywhere)."""
        B, C, h, w = p.shape
        out = np.empty((B, C, 2 * h, 2 * w), dtype=p.dtype)
        q = p * 0.25 if idx is None else p
        for d, view in enumerate(self._corners(out)):
            if idx is None:
                view[...] = q
            else:
                np.multiply(q, idx == d, out=view)
        return out

    @staticmethod
    def clip(a):
        return np.clip(a, 0.0, 1.0)

    @staticmethod
    def grad(fn, params):
        """Reverse-mode derivative of ``fn(params)``: not available on numpy arrays (truncated backprop
        on the fast engine runs on the torch backend)."""
        raise PhysgradError("truncated backprop (tbp) on the fast engine of convolutional presets differentiates "
                            "through the sweeps with torch autograd: use --backend torch, or --engine generic")

    @staticmethod
    def zeros(shape, like):
        return np.zeros(shape, dtype=like.dtype)


@dataclass
class Relaxed:
    """A relaxed state and the caches it was computed with: image layers ``imgs[k]`` (``k = 1..L-1``,
    ``imgs[0]`` the input), outputs ``out``, pre-pool convolutions ``z[k]`` and their pooled values and
    winners ``pooled[k] = (p_k, winners_k)`` (index 0 unused); ``last``: set by :func:`ep_gradient` on the
    free phase, the last nudged state as a flat tuple (the next batch's warm start)."""

    imgs: list
    out: object
    pooled: list
    last: tuple = ()


def _pool_all(ops, Ws, imgs, z1_pooled, L):
    pooled = [None, z1_pooled]
    for k in range(2, L):
        pooled.append(ops.pool(ops.conv(imgs[k - 1], Ws[k - 1])))
    return pooled


def relax(energy: ConvHopfield, ops, params, imgs, out, z1_pooled, sweeps: int, schedule: str,
          beta: float = 0.0, y=None, clamp=None) -> Relaxed:
    """``sweeps`` sweeps of the layer updates from ``(imgs, out)`` (not modified).

    Parameters
    ----------
    imgs : list
        ``[x_img, s_1, ..., s_{L-1}]`` as images ``(B, c_k, h_k, w_k)``.
    out : array ``(B, n_outputs)``
    z1_pooled : tuple
        ``ops.pool(ops.conv(x_img, W_1))`` (the same for every phase of a batch).
    beta, y : float, array ``(B, n_outputs)``
        Nudge of the outputs (``beta = 0``: free phase).
    clamp : array ``(B, n_outputs)``, optional
        Outputs held at these values (coupled and contrastive learning; ``Nudge(clamp=...)`` of the
        reference): the output layer is never updated.
    """
    L = energy.n_layers
    Ws, bs = params[:L], params[L:]
    imgs = list(imgs)
    if clamp is not None:
        out = clamp
    pooled = _pool_all(ops, Ws, imgs, z1_pooled, L)
    groups = layer_groups(L, schedule)
    B = out.shape[0]
    for _ in range(sweeps):
        for group in groups:
            new = {}
            for k in group:
                if k == L:
                    if clamp is not None:
                        continue
                    num = imgs[L - 1].reshape(B, -1) @ Ws[-1] + bs[-1]
                    new[k] = (num + beta * y) / (1.0 + beta) if beta else num
                    continue
                pre = pooled[k][0] + bs[k - 1][None, :, None, None]
                if k == L - 1:
                    back = (out @ Ws[-1].T).reshape(pre.shape)
                else:
                    back = ops.conv_t(ops.unpool(imgs[k + 1], pooled[k + 1][1]), Ws[k])
                new[k] = ops.clip(pre + back)
            for k, v in new.items():
                if k == L:
                    out = v
                else:
                    imgs[k] = v
            for k in group:
                if k < L - 1:
                    pooled[k + 1] = ops.pool(ops.conv(imgs[k], Ws[k]))
    return Relaxed(imgs, out, pooled)


def theta_grad(energy: ConvHopfield, ops, params, r: Relaxed, x_cols=None):
    """``energy.theta_grad`` at the relaxed state (batch mean), from its caches; ``x_cols`` are the input's
    im2col patches (reused across phases)."""
    L = energy.n_layers
    B = r.out.shape[0]
    gW, gb = [], []
    for k in range(1, L):
        cols = x_cols if (k == 1 and x_cols is not None) else ops.cols(r.imgs[k - 1])
        gW.append(-ops.wgrad(cols, ops.unpool(r.imgs[k], r.pooled[k][1])) / B)
        gb.append(-r.imgs[k].sum(axis=(0, 2, 3)) / B)
    gW.append(-(r.imgs[L - 1].reshape(B, -1).T @ r.out) / B)
    gb.append(-r.out.sum(axis=0) / B)
    return tuple(gW) + tuple(gb)


def _start(energy: ConvHopfield, ops, x, warm):
    """``([x_img, s_1, ..., s_{L-1}] as images, outputs)`` from a flat warm start (None: zeros)."""
    B = x.shape[0]
    shapes = energy.shapes
    if warm is None:
        return [x.reshape((B,) + shapes[0])] + [ops.zeros((B,) + shapes[k], x) for k in range(1, energy.n_layers)], \
            ops.zeros((B, energy.n_outputs), x)
    return [x.reshape((B,) + shapes[0])] + [warm[k - 1].reshape((B,) + shapes[k]) for k in range(1, energy.n_layers)], \
        warm[-1]


def ep_gradient(energy: ConvHopfield, ops, params, x, y, warm, sweeps: int, schedule: str, beta: float,
                variant: str = "centered", rule: str = "ep", zero_phase: str = "free"):
    """Free phase from ``warm`` (flat state tuple or None = zeros), nudged or clamped phase(s) from the
    free state, and the contrast estimate of ``dC/dtheta`` (shaped like ``params``).

    ``rule="ep"``: equilibrium propagation, phases nudged by ``+-beta`` (:class:`physgrad.learning.EquilibriumPropagation`);
    ``rule="cpl"``: coupled learning with ``eta = beta``, phases with the outputs clamped to
    ``o_0 +- eta (y - o_0)`` (:class:`physgrad.learning.CoupledLearning`; contrastive learning is
    ``variant="positive"``, ``beta=1``). Estimate: ``(dE/dtheta(s_hi) - dE/dtheta(s_lo)) / ((hi - lo) beta)``
    with ``(hi, lo)`` from :data:`VARIANT_SIGNS`. The unperturbed state of the one-sided variants
    (``zero_phase``, :func:`physgrad.learning._phase.zero_phase`): ``free``, the free state; ``relaxed``,
    ``sweeps`` more sweeps from it at zero perturbation (EP: free; coupled learning: the outputs clamped
    at their free values), as the authors' code does.

    Returns
    -------
    grads, free : tuple, Relaxed
        ``free`` carries the free phase; the last nudged (``+``, else ``-``) state is ``free.last`` (a flat tuple).
    """
    if rule not in ("ep", "cpl"):
        raise PhysgradError(f"rule must be 'ep' or 'cpl', got {rule!r}")
    if zero_phase not in ZERO_PHASES:
        raise PhysgradError(f"zero_phase must be one of {ZERO_PHASES}, got {zero_phase!r}")
    B = x.shape[0]
    imgs, out = _start(energy, ops, x, warm)
    x_cols = ops.cols(imgs[0])
    z1 = ops.pool(ops.conv(imgs[0], params[0], cols=x_cols))
    free = relax(energy, ops, params, imgs, out, z1, sweeps, schedule)
    hi, lo = VARIANT_SIGNS[variant]
    phases = {}
    for sign in {hi, lo}:
        if sign == 0.0 and zero_phase == "free":
            phases[sign] = free
        elif rule == "ep":
            phases[sign] = relax(energy, ops, params, free.imgs, free.out, z1, sweeps, schedule, sign * beta, y)
        else:
            clamp = free.out + (sign * beta) * (y - free.out)
            phases[sign] = relax(energy, ops, params, free.imgs, free.out, z1, sweeps, schedule, clamp=clamp)
    g_hi = theta_grad(energy, ops, params, phases[hi], x_cols)
    g_lo = theta_grad(energy, ops, params, phases[lo], x_cols)
    scale = (hi - lo) * beta
    grads = tuple((a - b) / scale for a, b in zip(g_hi, g_lo))
    last = phases[hi] if hi != 0.0 else phases[lo]
    free.last = tuple(a.reshape(B, -1) for a in last.imgs[1:]) + (last.out,)
    return grads, free


def tbp_gradient(energy: ConvHopfield, ops, params, x, y, warm, sweeps: int, schedule: str):
    r"""Truncated backprop: the free phase (``sweeps`` sweeps from ``warm``), then the gradient of the
    batch-mean cost :math:`\tfrac12\|o - y\|^2` after ``sweeps`` more sweeps from the free state (held
    constant), by reverse-mode autodiff through them (``ops.grad``: torch autograd) -- the reference's
    ``TruncatedBackprop(steps=sweeps, init="free")`` and the authors' backprop baseline.

    Returns
    -------
    grads, free : tuple, Relaxed
        ``free.last`` is the free state (the next batch's warm start, as in the reference stepper).
    """
    B = x.shape[0]
    imgs, out = _start(energy, ops, x, warm)
    z1 = ops.pool(ops.conv(imgs[0], params[0]))
    free = relax(energy, ops, params, imgs, out, z1, sweeps, schedule)

    def cost(th):
        r = relax(energy, ops, th, free.imgs, free.out, ops.pool(ops.conv(imgs[0], th[0])), sweeps, schedule)
        return 0.5 * ((r.out - y) ** 2).sum() / B

    grads = ops.grad(cost, params)
    free.last = tuple(a.reshape(B, -1) for a in free.imgs[1:]) + (free.out,)
    return grads, free


def predict(energy: ConvHopfield, ops, params, x, sweeps: int, schedule: str):
    """Outputs ``(B, n_outputs)`` of the free phase from the zero state."""
    imgs, out = _start(energy, ops, x, None)
    z1 = ops.pool(ops.conv(imgs[0], params[0]))
    return relax(energy, ops, params, imgs, out, z1, sweeps, schedule).out


class ConvEPStepper(OptimizerState):
    """EP on the convolutional Hopfield energy (``--engine fast`` of the ``dchn`` presets).

    Parameters
    ----------
    preset : Preset
        ``preset.energy()`` must be a :class:`~physgrad.energies.conv.ConvHopfield`; its schedule, beta,
        sweeps, learning rates and optimizer are used.
    params : tuple of arrays
        Initial parameters (float32 or float64; the kernel's dtype).
    threads : int
        BLAS (numpy) or torch intra-op threads, set until :meth:`close`.
    variant : {"positive", "negative", "centered"}
    rule : {"ep", "cpl", "tbp"}
        Equilibrium propagation (nudge ``preset.beta``), coupled learning (clamp amplitude ``eta``;
        contrastive learning: ``variant="positive"``, ``eta=1``) or truncated backprop through
        ``preset.sweeps`` sweeps from the free state (torch only; ``variant`` unused); see
        :func:`ep_gradient` and :func:`tbp_gradient`.
    eta : float
        Coupled-learning amplitude (``rule="cpl"``).
    conv_dtype : {"full", "bfloat16"}
        Precision of the sweeps' convolutions (torch only; :data:`physgrad.layered.kernels.conv_torch.CONV_DTYPES`).
    backend : {"numpy", "torch"}
        The preset's momentum/adam run on host copies of the parameters (small for these networks).
    device : {"cpu", "cuda"} (torch only)
    eval_batch : int
        Samples relaxed together by :meth:`evaluate`.
    """

    def __init__(self, preset, params, threads: int = 1, variant: str = "centered", backend: str = "numpy",
                 device: str = "cpu", eval_batch: int = 1000, rule: str = "ep", eta: float = 0.5,
                 conv_dtype: str = "full"):
        self.preset = preset
        self.energy = preset.energy()
        if not isinstance(self.energy, ConvHopfield):
            raise PhysgradError(f"ConvEPStepper needs a convolutional Hopfield preset, got {preset.name!r}")
        if variant not in VARIANT_SIGNS:
            raise PhysgradError(f"variant must be one of {tuple(VARIANT_SIGNS)}, got {variant!r}")
        if rule not in ("ep", "cpl", "tbp"):
            raise PhysgradError(f"rule must be one of ('ep', 'cpl', 'tbp'), got {rule!r}")
        if rule == "tbp" and backend != "torch":
            NumpyOps.grad(None, params)  # raises: names --backend torch
        if conv_dtype != "full" and backend != "torch":
            raise PhysgradError(f"convolutions in {conv_dtype} run on the torch backend: use --backend torch")
        self.energy.split(params)
        self.variant, self.backend, self.eval_batch = variant, backend, int(eval_batch)
        self.rule, self.eta = rule, float(eta)
        self.dtype = params[0].dtype
        if any(p.dtype != self.dtype for p in params):
            raise PhysgradError(f"all parameters must have one dtype, got {[p.dtype.name for p in params]}")
        self.optimizer = None
        if preset.optimizer != "sgd":  # on host arrays (a few MB at most: the kernels are small)
            from physgrad.layered.optimizer import LayerOptimizer

            self.optimizer = LayerOptimizer(preset.optimizer, preset.momentum, preset.weight_decay)
        if backend == "numpy":
            from threadpoolctl import threadpool_limits

            if device != "cpu":
                raise PhysgradError(f"device {device!r} needs the torch backend")
            self.ops = NumpyOps(self.energy)
            self.params = tuple(np.array(p) for p in params)
            self._limits = threadpool_limits(int(threads))
            self._restore = self._limits.restore_original_limits
        elif backend == "torch":
            from physgrad.layered.kernels import conv_torch

            self.ops, self.params, self._restore = conv_torch.setup(self.energy, params, device, threads, conv_dtype)
        else:
            raise PhysgradError(f"the dchn kernel runs on 'numpy' or 'torch', not {backend!r}")
        if self.optimizer is not None:
            self.opt_state = self.optimizer.init(self.to_host())

    def _array(self, a):
        return self.ops.asarray(a, self.params[0]) if self.backend == "torch" else np.asarray(a, dtype=self.dtype)

    def start_epoch(self, x, order, start_batch):
        """Nothing to prepare."""

    def step(self, x, idx, y, nxt, warm, lr_scale):
        """Free phase from ``warm``, the rule's phases (or TBP's unrolled sweeps), an SGD (or the preset's
        optimizer) step."""
        p = self.preset
        xb = self._array(x[idx])
        y1h = self._array(np.eye(self.energy.n_outputs)[np.asarray(y)])
        if warm is not None and len(warm[0]) != len(idx):
            warm = None
        if warm is not None and self.backend == "torch":  # host arrays after a resume (the checkpoint's)
            warm = [a if self.ops.t.is_tensor(a) else self._array(a) for a in warm]
        if self.rule == "tbp":
            grads, free = tbp_gradient(self.energy, self.ops, self.params, xb, y1h, warm, p.sweeps, p.schedule)
        else:
            size = p.beta if self.rule == "ep" else self.eta
            grads, free = ep_gradient(self.energy, self.ops, self.params, xb, y1h, warm, p.sweeps, p.schedule, size,
                                      self.variant, self.rule, p.zero_phase)
        wl, bl = p.learning_rates(lr_scale)
        lrs = wl + bl
        if self.optimizer is None:
            for t, g, lr in zip(self.params, grads, lrs):
                t -= lr * decayed(g, t, p.weight_decay)
        elif self.backend == "torch":
            new, self.opt_state = self.optimizer.step(self.to_host(), self.to_host(grads), lrs, self.opt_state)
            for t, a in zip(self.params, new):
                t.copy_(self.ops.asarray(a, t))
        else:
            new, self.opt_state = self.optimizer.step(self.params, grads, lrs, self.opt_state)
            self.params = tuple(np.asarray(a, dtype=self.dtype) for a in new)
        pred = self.ops.argmax(free.out) if self.backend == "torch" else np.argmax(free.out, axis=1)
        return list(free.last), pred

    def evaluate(self, params, x):
        """Predicted classes: ``preset.sweeps_eval`` sweeps from the zero state, ``eval_batch`` samples at a time."""
        preds = np.empty(len(x), dtype=np.int64)
        params = tuple(self._array(a) for a in params) if self.backend == "torch" else params
        for i in range(0, len(x), self.eval_batch):
            out = predict(self.energy, self.ops, params, self._array(x[i:i + self.eval_batch]),
                          self.preset.sweeps_eval, self.preset.schedule)
            preds[i:i + self.eval_batch] = self.ops.argmax(out) if self.backend == "torch" else np.argmax(out, axis=1)
        return preds

    def to_host(self, arrays=None):
        arrays = self.params if arrays is None else arrays
        if self.backend == "torch":
            return tuple(self.ops.to_host(a) for a in arrays)
        return tuple(arrays)

    def _state_like(self):
        """The optimizer state is shaped like the host copy of the parameters (:class:`OptimizerState`)."""
        return self.to_host()

    def close(self):
        self._restore()


def as_energy_state(energy: ConvHopfield, r: Relaxed) -> tuple:
    """The flat state tuple ``(B, n_k)`` of a :class:`Relaxed` (numpy)."""
    B = r.out.shape[0]
    return tuple(np.asarray(a).reshape(B, -1) for a in r.imgs[1:]) + (np.asarray(r.out),)


__all__ = ["NumpyOps", "Relaxed", "relax", "theta_grad", "ep_gradient", "tbp_gradient", "predict", "ConvEPStepper",
           "as_energy_state", "VARIANT_SIGNS", "RULES", "make_conv_stepper"]


RULES = {"pep": ("ep", "positive"), "nep": ("ep", "negative"), "cep": ("ep", "centered"),
         "cl": ("cpl", "positive"), "pcpl": ("cpl", "positive"), "ncpl": ("cpl", "negative"),
         "ccpl": ("cpl", "centered"), "tbp": ("tbp", "centered")}
"""CLI codes of the rules this kernel runs: ``(rule, variant)`` of :class:`ConvEPStepper`."""


def make_conv_stepper(preset, algorithm: str, params, *, threads: int = 1, backend: str = "numpy",
                      device: str = "cpu", eta: float = 0.5, conv_dtype: str = "full") -> ConvEPStepper:
    """The fast stepper of a ``dchn`` preset for a code of :data:`RULES` (``cl``: coupled learning with
    ``eta = 1``, positive; ``tbp``: torch only) on ``backend`` (``numba``, the auto choice elsewhere, runs
    the numpy kernel here: there is no compiled convolution kernel)."""
    if algorithm not in RULES:
        raise PhysgradError(f"the fast engine of dchn presets implements {', '.join(RULES)}, not {algorithm!r}: "
                            f"use --engine generic")
    backend = "numpy" if backend == "numba" else backend
    rule, variant = RULES[algorithm]
    return ConvEPStepper(preset, params, threads=threads, variant=variant, backend=backend, device=device, rule=rule,
                         eta=1.0 if algorithm == "cl" else eta, conv_dtype=conv_dtype)

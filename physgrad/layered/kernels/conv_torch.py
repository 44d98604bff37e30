"""The torch operators of the convolutional Hopfield kernel (:mod:`.conv_cep`), CPU or CUDA (optional:
``pip install torch``).

Same interface as :class:`.conv_cep.NumpyOps`: ``conv`` is ``torch.nn.functional.conv2d``, ``conv_t``
``conv_transpose2d``, ``pool`` ``max_pool2d(..., return_indices=True)`` (ties: first maximal entry,
as the numpy kernel and the reference) or ``avg_pool2d``, ``unpool`` ``max_unpool2d`` (avg: nearest
upsampling / 4), ``wgrad`` ``torch.nn.grad.conv2d_weight``. ``setup`` turns TF32 off and sets the
thread count (restored by the returned callable).

Speed (measured on this project's 2-core AVX-512/AMX Xeon, one thread, ``reports/benchmarks/dchn.md``):
the convolutions run on channels-last (NHWC) copies of their operands, which oneDNN computes about 3x
faster than NCHW at these sizes in float32 (same arithmetic, another summation order); with
``conv_dtype=torch.bfloat16`` the convolutions of the sweeps take bfloat16 operands (AMX tiles on CPUs
that have them) and return to the state's dtype, everything else (states, pooling, clipping, the
gradient's convolutions, the updates) stays in the state's dtype -- a reduced-precision mode like the
authors' "16 bit" runs (TF32 on their GPU), with its own tolerance against the float64 reference
(``tests/test_conv_hopfield.py``).
"""
from __future__ import annotations

import numpy as np

CONV_DTYPES = ("full", "bfloat16")
"""Precision of the sweeps' convolutions in the convolutional kernel: the state's dtype, or bfloat16
operands (torch backend only; refused elsewhere by :func:`physgrad.layered.engines.plan_engine`)."""


def require(device: str = "cpu"):
    """Import torch (no array-api-compat needed here) or raise :class:`PhysgradError`; check ``device``
    (:func:`physgrad.layered.kernels.torch_backend.require`)."""
    from physgrad.layered.kernels.torch_backend import require as require_torch

    return require_torch(device, array_api=False)


class TorchOps:
    """Convolution operators on torch tensors ``(B, C, H, W)``; ``conv_dtype``: None (the operands' dtype)
    or ``torch.bfloat16`` for :meth:`conv` and :meth:`conv_t`."""

    def __init__(self, energy, torch, conv_dtype=None):
        self.t = torch
        self.F = torch.nn.functional
        self.K, self.p, self.pooling = energy.kernel, energy.padding, energy.pooling
        self.conv_dtype = conv_dtype
        self.cl = torch.channels_last

    def _operands(self, a, W):
        """``(a, W)`` as channels-last tensors in the convolution dtype."""
        if self.conv_dtype is not None and a.dtype != self.conv_dtype:
            a, W = a.to(self.conv_dtype), W.to(self.conv_dtype)
        return a.contiguous(memory_format=self.cl), W.contiguous(memory_format=self.cl)

    def cols(self, a, padding=None):
        """The input itself (torch's convolutions need no im2col); kept for the kernel's interface."""
        return a

    def conv(self, a, W, padding=None, cols=None):
        a2, W2 = self._operands(a, W)
        return self.F.conv2d(a2, W2, padding=self.p if padding is None else padding).to(a.dtype)

    def conv_t(self, g, W):
        g2, W2 = self._operands(g, W)
        return self.F.conv_transpose2d(g2, W2, padding=self.p).to(g.dtype)

    def wgrad(self, a, g):
        a2, g2 = a.contiguous(memory_format=self.cl), g.contiguous(memory_format=self.cl)
        return self.t.nn.grad.conv2d_weight(a2, (g.shape[1], a.shape[1], self.K, self.K), g2,
                                            padding=self.p).contiguous()

    def pool(self, z):
        if self.pooling == "avg":
            return self.F.avg_pool2d(z, 2), None
        return self.F.max_pool2d(z, 2, return_indices=True)

    def unpool(self, p, idx):
        if idx is None:
            return self.F.interpolate(p, scale_factor=2, mode="nearest") * 0.25
        return self.F.max_unpool2d(p, idx, 2, output_size=(2 * p.shape[2], 2 * p.shape[3]))

    def clip(self, a):
        return a.clamp(0.0, 1.0)

    def grad(self, fn, params):
        """``d fn(params) / d params`` by torch autograd (``fn`` returns a scalar tensor), detached, shaped
        like ``params`` (zeros for parameters ``fn`` does not use)."""
        leaves = tuple(p.detach().requires_grad_(True) for p in params)
        with self.t.enable_grad():
            grads = self.t.autograd.grad(fn(leaves), leaves, allow_unused=True)
        return tuple(self.t.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads))

    def zeros(self, shape, like):
        return self.t.zeros(shape, dtype=like.dtype, device=like.device)

    def asarray(self, a, like):
        return self.t.as_tensor(np.asarray(a), dtype=like.dtype, device=like.device)

    def argmax(self, out):
        return self.t.argmax(out, dim=1).cpu().numpy()

    @staticmethod
    def to_host(a):
        return a.detach().cpu().numpy()


def setup(energy, params, device: str = "cpu", threads: int = 1, conv_dtype: str = "full"):
    """``(ops, params on the device, restore)``: TF32 off and ``threads`` intra-op threads until ``restore()``;
    ``conv_dtype`` one of :data:`CONV_DTYPES`."""
    from physgrad.types import PhysgradError

    if conv_dtype not in CONV_DTYPES:
        raise PhysgradError(f"conv_dtype must be one of {CONV_DTYPES}, got {conv_dtype!r}")
    torch = require(device)
    old = (torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.set_num_threads(int(threads))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    def restore():
        torch.set_num_threads(old[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old[1], old[2]

    params = tuple(torch.as_tensor(np.asarray(p), device=device).clone() for p in params)
    ops = TorchOps(energy, torch, None if conv_dtype == "full" else torch.bfloat16)
    return ops, params, restore

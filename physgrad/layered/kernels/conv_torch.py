"""The torch operators of the convolutional Hopfield kernel (:mod:`.conv_cep`), CPU or CUDA (optional:
``pip install torch``).

Same interface as :class:`.conv_cep.NumpyOps`: ``conv`` is ``torch.nn.functional.conv2d``, ``conv_t``
``conv_transpose2d``, ``pool`` ``max_pool2d(..., return_indices=True)`` (ties: first maximal entry,
as the numpy kernel and the reference) or ``avg_pool2d``, ``unpool`` ``max_unpool2d`` (avg: nearest
upsampling / 4), ``wgrad`` ``torch.nn.grad.conv2d_weight``. ``setup`` turns TF32 off and sets the
thread count (restored by the returned callable).
"""
from __future__ import annotations

import numpy as np


def require(device: str = "cpu"):
    """Import torch (no array-api-compat needed here) or raise :class:`PhysgradError`; check ``device``
    (:func:`physgrad.layered.kernels.torch_backend.require`)."""
    from physgrad.layered.kernels.torch_backend import require as require_torch

    return require_torch(device, array_api=False)


class TorchOps:
    """Convolution operators on torch tensors ``(B, C, H, W)``."""

    def __init__(self, energy, torch):
        self.t = torch
        self.F = torch.nn.functional
        self.K, self.p, self.pooling = energy.kernel, energy.padding, energy.pooling

    def cols(self, a, padding=None):
        """The input itself (torch's convolutions need no im2col); kept for the kernel's interface."""
        return a

    def conv(self, a, W, padding=None, cols=None):
        return self.F.conv2d(a, W, padding=self.p if padding is None else padding)

    def conv_t(self, g, W):
        return self.F.conv_transpose2d(g, W, padding=self.p)

    def wgrad(self, a, g):
        return self.t.nn.grad.conv2d_weight(a, (g.shape[1], a.shape[1], self.K, self.K), g, padding=self.p)

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


def setup(energy, params, device: str = "cpu", threads: int = 1):
    """``(ops, params on the device, restore)``: TF32 off and ``threads`` intra-op threads until ``restore()``."""
    torch = require(device)
    old = (torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.set_num_threads(int(threads))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    def restore():
        torch.set_num_threads(old[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old[1], old[2]

    params = tuple(torch.as_tensor(np.asarray(p), device=device).clone() for p in params)
    return TorchOps(energy, torch), params, restore

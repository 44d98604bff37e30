"""The torch backend of the layered C-EP step (``--backend torch --device cpu|cuda``; optional:
``pip install 'physgrad[torch]'``, which brings torch and array-api-compat).

:class:`TorchCEPStepper` is :class:`.array_stepper.ArrayCEPStepper` on torch tensors (the array-API
math of :mod:`._math` through ``array_api_compat.torch``), with the weight updates done in place
(``W.addmm_(A^T, B)``, ``W.clamp_(min=0)``: no temporary of the weights' size). Parameters live on
the device while the stepper runs; :meth:`~.array_stepper.ArrayCEPStepper.to_host` gives host numpy
arrays for checkpoints, so a run resumes on any backend. Initialisation is on the host.

Determinism: the stepper turns TF32 off (``torch.backends.cuda.matmul.allow_tf32``, cuDNN's too),
calls ``torch.use_deterministic_algorithms(True)`` (on CUDA with ``CUBLAS_WORKSPACE_CONFIG=:4096:8``
unless already set) and ``torch.set_num_threads(threads)`` on the CPU, and restores the previous
settings in :meth:`TorchCEPStepper.close`; :func:`determinism_flags` is what ``config.json`` records.
Nothing here requires a GPU: ``--device cuda`` without one is a clear error.
"""
from __future__ import annotations

import os

from physgrad.layered.kernels.array_stepper import ArrayCEPStepper
from physgrad.types import PhysgradError

INSTALL_HINT = "the torch backend needs torch and array-api-compat: pip install 'physgrad[torch]'"


def require(device: str = "cpu", *, array_api: bool = True):
    """Import torch (and array_api_compat, with ``array_api``) or raise :class:`PhysgradError`; check
    that ``device`` exists."""
    try:
        if array_api:
            import array_api_compat  # noqa: F401
        import torch
    except ImportError as e:
        hint = INSTALL_HINT if array_api else "the torch backend needs torch: pip install torch"
        raise PhysgradError(f"{hint} ({e})") from None
    if device not in ("cpu", "cuda"):
        raise PhysgradError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise PhysgradError("--device cuda: torch sees no CUDA device on this machine (use --device cpu)")
    return torch


def determinism_flags(device: str = "cpu") -> dict:
    """What the torch stepper sets, and the versions, for ``config.json``."""
    info = {"deterministic_algorithms": True, "tf32": False,
            "deterministic": "bit-for-bit for a given device, torch version and thread count"}
    try:
        import torch
    except ImportError:
        info["torch"] = None
        return info
    info["torch"] = torch.__version__
    if device == "cuda":
        info["cublas_workspace_config"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    return info


class TorchCEPStepper(ArrayCEPStepper):
    """Centered EP on torch tensors (CPU or CUDA), in place; see the module docstring.

    Parameters
    ----------
    preset : Preset
    params : tuple of numpy arrays
        Initial parameters on the host (their dtype is the run's).
    device : {"cpu", "cuda"}
    threads : int
        ``torch.set_num_threads`` on the CPU (restored by :meth:`close`).
    """

    def __init__(self, preset, params, device: str = "cpu", threads: int = 1):
        torch = require(device)
        import array_api_compat.torch as xp

        if int(threads) < 1:
            raise PhysgradError(f"threads must be >= 1, got {threads}")
        self._torch = torch
        self._saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                       torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        if device == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        else:
            torch.set_num_threads(int(threads))
        torch.use_deterministic_algorithms(True)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        super().__init__(preset, params, xp, device=torch.device(device))

    def _host(self, a):
        if isinstance(a, self._torch.Tensor):
            return a.detach().cpu().numpy()
        return super()._host(a)

    def _apply(self, dbs, factors) -> tuple:
        """In place: ``W += A^T B`` (``addmm_``), clamp at 0 (DRN), ``b += db``; the same tensors stay."""
        L = self.net.n_layers
        with self._torch.no_grad():
            for W, (A, Bm) in zip(self.params[:L], factors):
                W.addmm_(A.T, Bm)
                if self.net.drn:
                    W.clamp_(min=0)
            for b, db in zip(self.params[L:], dbs):
                b.add_(db)
        return self.params

    def close(self):
        """Restore torch's thread count, determinism and TF32 settings."""
        torch = self._torch
        threads, det, tf32, cudnn_tf32 = self._saved
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = cudnn_tf32

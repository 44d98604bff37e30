"""A centered-EP stepper on any array namespace: :mod:`._math` on the namespace's arrays and device.

:class:`ArrayCEPStepper` follows the stepper protocol of :mod:`physgrad.layered.steppers`. Its
parameters live in the namespace (``params``: arrays of ``xp`` on ``device``); :meth:`to_host`
converts them (and warm starts) to numpy for checkpoints and metrics, so a checkpoint resumes on any
backend. Initial parameters are drawn on the host (``energy.init_theta``) and transferred, so a seed
gives the same start on every backend; input layers are the energy's ``input_layer``, computed on
the host and transferred per batch (one definition of the network). Updates are out of place
(``W + A^T B``), which any namespace supports; :class:`.torch_backend.TorchCEPStepper` overrides
:meth:`_apply` with in-place ``addmm_``/``clamp_``.

With ``xp = array_api_strict`` it runs in CI without torch, so the backend-neutral code of the
torch backend is tested against the numpy reference there.
"""
from __future__ import annotations

import numpy as np

from physgrad.layered import fused
from physgrad.layered.kernels import _math
from physgrad.layered.optimizer import OptimizerState
from physgrad.types import PhysgradError


class ArrayCEPStepper:
    """Centered EP on :mod:`physgrad.layered.kernels._math` in namespace ``xp``.

    Parameters
    ----------
    preset : Preset
    params : tuple of numpy arrays
        Initial parameters on the host (float32 or float64: the dtype of the run).
    xp : array namespace
    device : optional
        Device of ``xp`` (None: its default).
    eval_batch : int
        Samples relaxed together by :meth:`evaluate`.
    """

    def __init__(self, preset, params, xp, device=None, eval_batch: int = 1000):
        self.preset, self.xp, self.device = preset, xp, device
        host = tuple(np.asarray(p) for p in params)
        self.spec = fused.FusedSpec(preset.energy(), preset.schedule, host[0].dtype)
        self.spec.energy.split(host)
        if any(p.dtype != self.spec.dtype for p in host):
            raise PhysgradError(f"all parameters must have one dtype, got {[p.dtype.name for p in host]}")
        if int(eval_batch) < 1:
            raise PhysgradError(f"eval_batch must be >= 1, got {eval_batch}")
        self.eval_batch = int(eval_batch)
        self.dtype = getattr(xp, self.spec.dtype.name)
        self.net = _math.net_arrays(self.spec, xp, self.dtype, device)
        self.params = tuple(self.to_device(p) for p in host)
        self.drive = None

    # --- host <-> namespace -----------------------------------------------------------------------
    def to_device(self, a):
        """A host array (or an array of ``xp``) as an array of ``xp`` on ``device`` in the run's dtype."""
        if isinstance(a, np.ndarray):
            a = np.ascontiguousarray(a, dtype=self.spec.dtype)
        return self.xp.asarray(a, dtype=self.dtype, device=self.device)

    def _host(self, a) -> np.ndarray:
        return a if isinstance(a, np.ndarray) else np.from_dlpack(a)

    def to_host(self, arrays=None) -> tuple:
        """``arrays`` (default: the parameters) as host numpy arrays (copies where the backend shares memory)."""
        arrays = self.params if arrays is None else arrays
        return tuple(np.array(self._host(a), copy=True) for a in arrays)

    def _input(self, x, idx=None):
        xs = x if idx is None else x[idx]
        return self.to_device(self.spec.input_layer(xs))

    # --- protocol ---------------------------------------------------------------------------------
    def start_epoch(self, x, order, start_batch):
        """The first batch's drive ``[s0; 1] W1``."""
        B = self.preset.batch_size
        s0 = self._input(x, order[start_batch * B:(start_batch + 1) * B])
        self.drive = _math.drive(self.xp, self.net, self.params[0], s0)

    def step(self, x, idx, y, nxt, warm, lr_scale):
        """One centered-EP step; returns the ``+beta`` state (arrays of ``xp``) and host predictions."""
        xp, p, spec = self.xp, self.preset, self.spec
        B = len(idx)
        s0 = self._input(x, idx)
        if warm is None or warm[0].shape[0] != B:
            warm = [xp.zeros((B, n), dtype=self.dtype, device=self.device) for n in spec.sizes[1:]]
        else:
            warm = [self.to_device(w) for w in warm]
        y1h = np.zeros((B, spec.sizes[-1]), spec.dtype)
        y1h[np.arange(B), y] = 1
        y1h = self.to_device(y1h)
        a1, c1 = self.drive
        if a1.shape[0] != B:  # a shorter last batch: its drive was prepared for B rows
            a1, c1 = _math.drive(xp, self.net, self.params[0], s0)
        consts = _math.batch_constants(xp, self.net, self.params, a1, c1)
        spec.energy.check_beta(-p.beta, self._host(consts.den_out) if spec.drn else None)
        free, s_m, s_p = _math.phases(xp, self.net, self.params, consts, warm, y1h, p.beta, p.sweeps)
        self.params = self._update(s0, s_m, s_p, lr_scale)
        if nxt is not None:
            self.drive = _math.drive(xp, self.net, self.params[0], self._input(x, nxt))
        pred = np.asarray(self._host(xp.argmax(free[-1], axis=1)), dtype=np.int64)
        return s_p, pred

    def _update(self, s0, s_m, s_p, lr_scale) -> tuple:
        """New parameters: the C-EP factors with the learning rates folded in, applied by :meth:`_apply`."""
        dbs, factors = _math.cep_factors(self.xp, self.net, s0, s_m, s_p, self.preset.beta,
                                         *self.preset.learning_rates(lr_scale))
        return self._apply(dbs, factors)

    def _apply(self, dbs, factors) -> tuple:
        return _math.apply_update(self.xp, self.net, self.params, dbs, factors)

    def evaluate(self, params, x):
        """Predicted classes: the free phase from the zero state, ``preset.sweeps_eval`` sweeps,
        ``eval_batch`` samples at a time. Host ``x`` gives host predictions; an array of ``xp``
        gives an array of ``xp`` (array type in equals array type out)."""
        host_in = isinstance(x, np.ndarray)
        xh = x if host_in else self._host(x)
        params = tuple(self.to_device(a) for a in params)
        preds = np.empty(len(xh), dtype=np.int64)
        for i in range(0, len(xh), self.eval_batch):
            out = _math.free_outputs(self.xp, self.net, params, self._input(xh[i:i + self.eval_batch]),
                                     self.preset.sweeps_eval)
            preds[i:i + self.eval_batch] = self._host(self.xp.argmax(out, axis=1))
        return preds if host_in else self.xp.asarray(preds, device=self.device)

    def close(self):
        """Nothing to release."""


class OptimizerCEPStepper(OptimizerState, ArrayCEPStepper):
    """Centered EP on numpy arrays with ``preset.optimizer`` = ``momentum`` or ``adam``
    (:class:`physgrad.layered.optimizer.LayerOptimizer`): the update factors at unit learning rate
    are minus the C-EP gradient estimate, :math:`g_k = -A_k^\\top B_k` and :math:`-db_k`; each array
    then takes the optimizer's step with its learning rate times the schedule's factor, and DRN
    conductances are clamped at 0.

    Parameters
    ----------
    preset : Preset
        With ``optimizer`` in {"momentum", "adam"}.
    params : tuple of numpy arrays
    """

    def __init__(self, preset, params):
        from physgrad.layered.optimizer import LayerOptimizer

        super().__init__(preset, params, np)
        self.optimizer = LayerOptimizer(preset.optimizer, preset.momentum)
        self.opt_state = self.optimizer.init(self.params)

    def _update(self, s0, s_m, s_p, lr_scale) -> tuple:
        """The factors at unit learning rates give the gradient; the optimizer steps each array with
        its learning rate times ``lr_scale``."""
        p, L = self.preset, self.net.n_layers
        wl, bl = p.learning_rates(lr_scale)
        dbs, factors = _math.cep_factors(np, self.net, s0, s_m, s_p, p.beta, [1.0] * len(wl), [1.0] * len(bl))
        grads = [-(A.T @ Bm) for A, Bm in factors] + [-db for db in dbs]
        new, self.opt_state = self.optimizer.step(self.params, grads, wl + bl, self.opt_state)
        if self.net.drn:
            new = tuple(np.maximum(W, 0, out=W) for W in new[:L]) + new[L:]
        return new


"""Training engines of layered mode behind one protocol, :class:`Stepper`.

The training loop (:func:`physgrad.layered.train.train`) owns the data order, the learning-rate
schedule, checkpoints and metrics; a stepper owns the parameters while it runs and everything
that is specific to how a batch is computed (kernels, buffers, threads, BLAS limits).

* :class:`FusedCEPStepper` (``--engine fast --backend numpy``): centered EP on the fused numpy kernel
  of :mod:`physgrad.layered.fused` (float32, in place, Python threads over the rows of ``W1``);
* :class:`FusedTBPStepper` (``--engine fast``, algorithm ``tbp``): truncated backprop by hand
  through the unrolled sweeps (:mod:`physgrad.layered.fused_tbp`), on the same numpy workspace;
* :class:`CompiledCEPStepper` (``--engine fast --backend numba``): the same step as one compiled
  call per batch (:mod:`physgrad.layered.kernels.numba_cpu`, threads over the columns of ``W1`` and
  the rows of each phase; SGD, momentum or Adam);
* :class:`physgrad.layered.kernels.torch_backend.TorchCEPStepper` (``--backend torch``): the same
  step on torch tensors, CPU or CUDA;
* :class:`RuleStepper` (``--engine generic``): any rule of :mod:`physgrad.learning` on the preset's
  energy and :class:`physgrad.minimizers.block.BlockCoordinateDescent`; the reference route;
* :class:`AmplifiedStepper`: a DRN with amplifiers between layers on a fast numpy/numba stepper, as
  the plain DRN it is an exact reparametrisation of.

Which one runs is :func:`physgrad.layered.engines.plan_engine`'s verdict; :func:`make_stepper` builds it.
All start from :func:`initial_params` (the energy's ``init_theta``, drawn on the host from
``default_rng(seed)``), so a seed gives the same start on every engine.
"""
from __future__ import annotations

from typing import Optional, Protocol

import numpy as np

from physgrad.layered import fused
from physgrad.layered.engines import plan_engine, preset_traits
from physgrad.layered.optimizer import OptimizerState
from physgrad.layered.presets import Preset
from physgrad.learning import optim
from physgrad.types import PhysgradError


class Stepper(Protocol):
    """One training engine.

    Parameters are numpy arrays on the host, ``(W_1..W_L, b_1..b_L)``, handed to the constructor
    (from :func:`initial_params` or a checkpoint); ``params`` always holds the current ones, in the
    backend's own array type (numpy arrays, or torch tensors on a device); :meth:`to_host` gives
    host numpy arrays for checkpoints.

    Attributes
    ----------
    params : tuple of arrays
        Current parameters (the backend's arrays; for :meth:`evaluate`).
    """

    params: tuple

    def to_host(self, arrays=None) -> tuple:
        """``arrays`` (default: ``params``; or a warm start returned by :meth:`step`) as host numpy arrays."""

    def start_epoch(self, x: np.ndarray, order: np.ndarray, start_batch: int) -> None:
        """Called before the batch ``start_batch`` of an epoch whose sample order is ``order``
        (``x``: all training pixels ``(n, n_inputs)``)."""

    def step(self, x: np.ndarray, idx: np.ndarray, y: np.ndarray, nxt: Optional[np.ndarray], warm,
             lr_scale: float) -> tuple:
        """Train on the batch ``x[idx]`` with labels ``y`` (``(B,)`` int).

        Parameters
        ----------
        nxt : array or None
            Indices of the next batch (a stepper may prepare it), None after the last batch.
        warm : list of arrays or None
            Warm start of the free phase: what the previous step returned (None: zeros).
        lr_scale : float
            Factor on every learning rate (the epoch's decay).

        Returns
        -------
        warm : list of arrays
            The warm start of the next batch (the last nudged state).
        pred : array (B,)
            Predicted classes of the free phase (the running train error).
        """

    def evaluate(self, params, x: np.ndarray) -> np.ndarray:
        """Predicted classes ``(n,)`` for pixels ``x`` ``(n, n_inputs)``: the free phase from the
        zero state, ``preset.sweeps_eval`` sweeps."""

    def close(self) -> None:
        """Release threads and restore process-wide settings (BLAS limits)."""


def initial_params(preset: Preset, seed: int, dtype) -> tuple:
    """The initial parameters of a run: ``preset.energy().init_theta(default_rng(seed),
    preset.weight_gain, dtype)`` (the same numbers for every engine)."""
    return preset.energy().init_theta(np.random.default_rng(seed), preset.weight_gain, np.dtype(dtype))


def optimizer_state(stepper) -> dict:
    """The stepper's optimizer arrays (``state_arrays()``: momentum / adam), empty for steppers
    that apply SGD in place."""
    get = getattr(stepper, "state_arrays", None)
    return {} if get is None else get()


def one_hot(y: np.ndarray, n: int, dtype) -> np.ndarray:
    """Targets ``(len(y), n)``: 1 at each label, 0 elsewhere."""
    out = np.zeros((len(y), n), dtype=dtype)
    out[np.arange(len(y)), y] = 1
    return out


class _HostFusedEvaluation:
    """What the two C-EP steppers on host numpy arrays share: evaluation by the fused evaluator and
    parameters that are already host arrays (needs ``spec``, ``preset``, ``threads``, ``params``)."""

    def evaluate(self, params, x):
        """:func:`physgrad.layered.fused.evaluate` with ``preset.sweeps_eval`` sweeps and ``threads`` BLAS threads."""
        return fused.evaluate(self.spec, params, x, self.preset.sweeps_eval, n_threads=self.threads)

    def to_host(self, arrays=None):
        """The parameters (or ``arrays``): already host numpy arrays."""
        return tuple(self.params if arrays is None else arrays)


class FusedCEPStepper(_HostFusedEvaluation):
    """Centered EP on the fused kernel of :mod:`physgrad.layered.fused` (``params`` updated in place).

    Parameters
    ----------
    preset : Preset
        Network (``preset.energy()``), schedule, beta, learning rates, sweeps, batch size.
    params : tuple of arrays
        Initial parameters, float32 or float64 (the kernel's dtype); modified in place.
    threads : int
        Python threads sharing the fused pass over ``W1`` when ``W1`` is at least 4 MB (below that
        one thread is faster: the hand-off costs more than the pass), each with single-threaded
        BLAS, which this stepper sets process-wide until :meth:`close`; evaluation gives the
        threads to BLAS.
    """

    def __init__(self, preset: Preset, params, threads: int = 1):
        from threadpoolctl import threadpool_limits

        self.preset = preset
        self.spec = fused.FusedSpec(preset.energy(), preset.schedule, params[0].dtype)
        self.spec.energy.split(params)
        if any(p.dtype != self.spec.dtype for p in params):
            raise PhysgradError(f"all parameters must have one dtype, got {[p.dtype.name for p in params]}")
        self.params = tuple(params)
        self.threads = int(threads)
        fused_threads = self.threads if params[0].nbytes >= (4 << 20) else 1
        self.ws = fused.Workspace(self.spec, preset.batch_size, n_threads=fused_threads)
        self._limits = threadpool_limits(1)  # BLAS single-threaded inside our threads
        self.drive = None

    def start_epoch(self, x, order, start_batch):
        """Compute the first batch's drive ``[s0; 1] @ W1``."""
        B = self.preset.batch_size
        idx = order[start_batch * B:(start_batch + 1) * B]
        self.drive = fused.make_drive(self.spec, self.ws, self.params[0], self.spec.input_layer(x[idx]))

    def _inputs(self, x, idx, nxt, warm):
        """``(warm, s0, next_s0)`` of a batch: zeros when ``warm`` does not fit it; one call for
        this batch's and the next batch's input layers (``next_s0`` None when there is no next batch
        or it is a shorter last one, whose drive :meth:`_keep_drive` computes separately)."""
        spec, B = self.spec, len(idx)
        if warm is None or len(warm[0]) != B:
            warm = spec.zero_state(B)
        if nxt is None or len(nxt) != B:
            return warm, spec.input_layer(x[idx]), None
        both = spec.input_layer(x[np.concatenate([idx, nxt])])
        return warm, both[:B], both[B:]

    def _keep_drive(self, drive, x, nxt, next_s0) -> None:
        """Hold the next batch's drive (the kernel's, or computed here for a shorter last batch)."""
        if nxt is not None and next_s0 is None:
            drive = fused.make_drive(self.spec, self.ws, self.params[0], self.spec.input_layer(x[nxt]))
        self.drive = drive

    def step(self, x, idx, y, nxt, warm, lr_scale):
        """One :func:`physgrad.layered.fused.cep_step`; also prepares the next batch's drive."""
        spec, p = self.spec, self.preset
        warm, s0, next_s0 = self._inputs(x, idx, nxt, warm)
        free, s_plus, drive = fused.cep_step(
            spec, self.params, self.ws, self.drive, warm, one_hot(y, spec.sizes[-1], spec.dtype), p.beta,
            *p.learning_rates(lr_scale), p.sweeps, s0, next_s0)
        self._keep_drive(drive, x, nxt, next_s0)
        return s_plus, np.argmax(free[-1], axis=1)

    def close(self):
        """Stop the thread pool and restore the BLAS thread limits."""
        self.ws.close()
        self._limits.restore_original_limits()


class FusedTBPStepper(FusedCEPStepper):
    """Truncated backprop on the fused kernel of :mod:`physgrad.layered.fused_tbp` (``params``
    updated in place): the free phase from the warm start, then the gradient of the cost after
    ``preset.sweeps`` sweeps unrolled from the free state (the generic route's
    ``TruncatedBackprop(steps=preset.sweeps, init="free")``), a projected SGD step.

    Parameters
    ----------
    preset, params, threads
        As for :class:`FusedCEPStepper` (the same workspace, BLAS limits and fused pass over ``W1``).
    """

    def step(self, x, idx, y, nxt, warm, lr_scale):
        """One :func:`physgrad.layered.fused_tbp.tbp_step`; returns the free state as the next warm start."""
        from physgrad.layered import fused_tbp

        spec, p = self.spec, self.preset
        warm, s0, next_s0 = self._inputs(x, idx, nxt, warm)
        free, drive = fused_tbp.tbp_step(
            spec, self.params, self.ws, self.drive, warm, one_hot(y, spec.sizes[-1], spec.dtype),
            *p.learning_rates(lr_scale), p.sweeps, s0, next_s0)
        self._keep_drive(drive, x, nxt, next_s0)
        return free, np.argmax(free[-1], axis=1)


class CompiledCEPStepper(OptimizerState, _HostFusedEvaluation):
    """Centered EP on the compiled kernel of :mod:`physgrad.layered.kernels.numba_cpu` (one call per
    batch; ``params`` updated in place). Evaluation is the numpy kernel's (large BLAS products).

    Parameters
    ----------
    preset : Preset
    params : tuple of arrays
        Initial parameters, float32 or float64, C-contiguous; modified in place.
    threads : int
        numba threads (``numba.set_num_threads``, restored by :meth:`close`) for the pass over
        ``W1`` (split by columns when ``W1`` has at least ``PAR_W1`` elements) and large block
        updates; BLAS threads of the evaluation. Results do not depend on it (bit for bit).

    ``preset.optimizer`` ``momentum`` or ``adam`` runs inside the same compiled step (the state of
    :class:`physgrad.layered.optimizer.LayerOptimizer`, updated in place; equal to
    :class:`~physgrad.layered.kernels.array_stepper.OptimizerCEPStepper` to float rounding).
    """

    def __init__(self, preset: Preset, params, threads: int = 1):
        from physgrad.layered.kernels import numba_cpu

        numba_cpu.require()
        import numba

        self.preset = preset
        self.spec = fused.FusedSpec(preset.energy(), preset.schedule, params[0].dtype)
        self.params = numba_cpu._check_params(self.spec, params)
        self.threads = int(threads)
        if not 1 <= self.threads <= numba.config.NUMBA_NUM_THREADS:
            raise PhysgradError(f"threads must be between 1 and {numba.config.NUMBA_NUM_THREADS} (numba's "
                                f"NUMBA_NUM_THREADS), got {threads}")
        self._kernel = numba_cpu
        self._old_threads = numba.get_num_threads()
        numba.set_num_threads(self.threads)
        self.ws = numba_cpu.Workspace(self.spec, preset.batch_size, threads=self.threads)
        self.ws.attach(self.params)
        self._x_checked = None  # the training pixels last checked for Workspace.stage
        # the input layer as Workspace.stage makes it: g (x, -x) for a DRN, x for a DHN (else not staged)
        energy = self.spec.energy
        n_in = getattr(energy, "n_inputs", None)
        if self.spec.drn and n_in is not None and self.spec.sizes[0] == 2 * n_in:
            self._gain, self._mirror = float(energy.input_gain), True
        elif not self.spec.drn and n_in is not None and self.spec.sizes[0] == n_in:
            self._gain, self._mirror = 1.0, False
        else:
            self._gain, self._mirror = 1.0, None
        self._coef_rows = {}  # run_batches: learning-rate factor -> (weight, bias) coefficients
        self.optimizer = None
        self.device_w1 = None
        """None, or the constants of :func:`physgrad.devices.pulsing.row_constants`: ``W1`` is on
        constant-step devices with nearest or stochastic rounding, updated in the kernel's pass over ``W1``
        (set by :class:`physgrad.layered.device_model.DeviceStepper`; SGD only)."""
        if preset.optimizer != "sgd":
            from physgrad.layered.optimizer import LayerOptimizer

            self.optimizer = LayerOptimizer(preset.optimizer, preset.momentum)
            self.opt_state = self.optimizer.init(self.params)

    def start_epoch(self, x, order, start_batch):
        """Compute the first batch's drive ``[s0; 1] @ W1`` (and rebuild the transposed copies)."""
        B = self.preset.batch_size
        idx = order[start_batch * B:(start_batch + 1) * B]
        self.ws.attach(self.params)
        self._kernel.make_drive(self.spec, self.ws, self.params[0], self.spec.input_layer(x[idx]))

    def _stageable(self, x, idx, nxt) -> bool:
        """Whether the workspace can gather this batch itself (:meth:`Workspace.stage`): full batches of
        a C-contiguous ``x`` of the kernel's dtype, checked once (shape, finite) as the input layer would."""
        B = self.ws.B
        if len(idx) != B or (nxt is not None and len(nxt) != B):
            return False
        return self._x_ready(x)

    def _x_ready(self, x) -> bool:
        """Whether the workspace can gather batches of ``x`` itself (see :meth:`_stageable`)."""
        if x is not self._x_checked:
            if not (isinstance(x, np.ndarray) and x.dtype == self.spec.dtype and x.flags.c_contiguous
                    and x.ndim == 2 and self._mirror is not None):
                return False
            ref = self.spec.input_layer(x[:2])  # the energy's shape check; and the gather must agree with it
            got = np.empty_like(ref)
            self._kernel._gather(x, np.arange(len(ref)), self.spec.dtype.type(self._gain), self._mirror, got)
            if got.tobytes() != ref.tobytes():
                self._mirror = None
                return False
            if not np.all(np.isfinite(x)):
                raise PhysgradError("inputs x contain NaN or inf")
            self._x_checked = x
        return True

    def step(self, x, idx, y, nxt, warm, lr_scale):
        """One :func:`physgrad.layered.kernels.numba_cpu.cep_step` (it also leaves the next batch's drive)."""
        spec, p = self.spec, self.preset
        B = len(idx)
        if warm is None or len(warm[0]) != B:
            warm = spec.zero_state(B)
        idx, y, nxt_a = np.asarray(idx), np.asarray(y), None if nxt is None else np.asarray(nxt)
        if (self._stageable(x, idx, nxt) and idx.dtype.kind == "i" and y.dtype.kind in "iu" and y.shape == idx.shape
                and (nxt_a is None or nxt_a.dtype.kind == "i")):  # gathered into the workspace by compiled code
            s0, y1h, next_s0 = self.ws.stage(x, idx, y, nxt_a, self._gain, self._mirror)
        else:
            y1h = one_hot(y, spec.sizes[-1], spec.dtype)
            if nxt is None:
                s0, next_s0 = spec.input_layer(x[idx]), None
            else:  # one call for this batch's and the next batch's input layers
                both = spec.input_layer(x[np.concatenate([idx, nxt])])
                s0, next_s0 = both[:B], both[B:]
        opt = None if self.optimizer is None else (self.optimizer.kind, self.optimizer.momentum, self.opt_state)
        free, s_plus = self._kernel.cep_step(
            spec, self.params, self.ws, warm, y1h, p.beta, *p.learning_rates(lr_scale), p.sweeps, s0, next_s0,
            optimizer=opt, device_w1=self.device_w1)
        return s_plus, free[-1].argmax(axis=1)

    def chunkable(self, x) -> bool:
        """Whether :meth:`run_batches` can train on the pixels ``x``: projected SGD without devices on
        ``W1`` (momentum, Adam and device models take :meth:`step`), and ``x`` a C-contiguous, finite
        array of the kernel's dtype that the workspace gathers itself (:meth:`_stageable`)."""
        return self.optimizer is None and self.device_w1 is None and self._x_ready(x)

    def run_batches(self, x, order, y, first: int, stop: int, warm, lr_scales) -> tuple:
        """Batches ``first .. stop-1`` of an epoch in one compiled call
        (:func:`physgrad.layered.kernels.numba_cpu.cep_steps`), bit for bit the calls of :meth:`step`
        with ``idx = order[bi B:(bi+1) B]``, ``y[idx]``, the next batch's indices, the previous batch's
        warm start and ``lr_scales[bi - first]`` (only where :meth:`chunkable`).

        Parameters
        ----------
        x : array (n, n_inputs)
            All training pixels.
        order : int array (n,)
            The epoch's sample order; batches ``first .. stop-1`` must be full, and so must the batch
            after them unless ``stop`` is the epoch's last.
        y : int array (n,)
            All training labels.
        warm : list of arrays or None
            Warm start of batch ``first`` (as for :meth:`step`).
        lr_scales : sequence of float
            The learning-rate factor of each batch.

        Returns
        -------
        warm : list of arrays
            The warm start of batch ``stop`` (the last ``+beta`` state).
        preds : int64 array (stop - first, B)
            Predicted classes of each batch's free phase.
        """
        spec, p, B = self.spec, self.preset, self.ws.B
        K = int(stop) - int(first)
        n_batches = -(-len(order) // B)
        if K < 1 or len(lr_scales) != K or first < 0 or stop > n_batches or stop * B > len(order):
            raise PhysgradError(f"run_batches: batches {first}..{stop - 1} of {n_batches} with {len(lr_scales)} "
                                f"learning-rate factors: need 0 <= first < stop <= the epoch's full batches")
        after = stop < n_batches
        if after and (stop + 1) * B > len(order):
            raise PhysgradError(f"run_batches: the batch after {stop - 1} is shorter than {B}; stop before it")
        if warm is None or len(warm[0]) != B:
            warm = spec.zero_state(B)
        rows = self._coef_rows
        for s in lr_scales:
            if s not in rows:
                rows[s] = self._kernel.sgd_coefficients(*p.learning_rates(s), p.beta, B)  # as cep_step's
        wco = np.array([rows[s][0] for s in lr_scales], spec.dtype)
        bco = np.array([rows[s][1] for s in lr_scales], spec.dtype)
        if len(rows) > 4096:  # a schedule that changes every batch: keep the cache small
            rows.clear()
        sel = np.ascontiguousarray(order[first * B:(stop + after) * B], dtype=np.int64)
        if sel.size and (sel.min() < -len(x) or sel.max() >= len(x)):  # (before the labels are gathered)
            raise PhysgradError(f"a batch index is outside the {len(x)} training samples")
        labels = np.ascontiguousarray(np.asarray(y)[sel[:K * B]], dtype=np.int64)
        return self._kernel.cep_steps(spec, self.params, self.ws, warm, x, sel, labels, self._gain, self._mirror,
                                      p.beta, wco, bco, p.sweeps, after)

    def close(self):
        """Restore numba's thread count and stop the kernel's worker threads."""
        import numba

        numba.set_num_threads(self._old_threads)
        self.ws.close()


def backend_info(backend: str, threads: int, device: str = "cpu") -> dict:
    """What a run records about its backend in ``config.json``: versions, threads, determinism."""
    info = {"backend": backend, "threads": int(threads), "device": device}
    if backend == "numba":
        import numba

        from physgrad.layered.kernels import numba_cpu
        info.update(numba=numba.__version__, numba_threading_layer=numba.config.THREADING_LAYER,
                    numba_max_threads=numba.config.NUMBA_NUM_THREADS,
                    deterministic="bit-for-bit for every thread count (column-parallel, fixed reduction order)",
                    narrow_columns=numba_cpu.NARROW)
    elif backend == "numpy":
        info.update(deterministic="bit-for-bit for a given thread count (row blocks summed in a fixed order)")
    elif backend == "torch":
        from physgrad.layered.kernels import torch_backend

        info.update(torch_backend.determinism_flags(device))
    return info


class RuleStepper(OptimizerState):
    """Any learning rule of :mod:`physgrad.learning` on ``preset.energy()`` and ``preset.minimizer()``.

    The minimizer runs the preset's fixed number of sweeps (``tol=None``), so the rules are built
    with ``strict=False``. As in the fused engine, the next batch's free phase starts from the last
    nudged state (``+beta`` or the ``+`` clamp; the free state for TBP/RBP). New parameters are
    ``project(theta - lr * grad)`` (SGD) or ``project`` of the optimizer's step (``preset.optimizer``), stored in the dtype of the initial parameters;
    with ``preset.weight_decay`` :math:`\\lambda > 0` the step uses :math:`g + \\lambda\\theta`
    (:func:`physgrad.learning.optim.decayed`).

    Parameters
    ----------
    preset : Preset
    algorithm : str
        A code of :func:`physgrad.learning.make_estimator` (``tbp`` unrolls from the free state,
        like the authors' backprop baseline).
    params : tuple of arrays
        Initial parameters.
    threads : int
        BLAS threads (set process-wide until :meth:`close`).
    eta : float
        Coupled-learning amplitude (pcpl/ncpl/ccpl).
    eval_batch : int, optional
        Samples relaxed together by :meth:`evaluate` (default: about 16 MB of float64 per layer's
        state, between 64 and 2000 samples).
    """

    def __init__(self, preset: Preset, algorithm: str, params, threads: int = 1, eta: float = 0.5,
                 eval_batch: Optional[int] = None):
        from threadpoolctl import threadpool_limits

        from physgrad.learning import TruncatedBackprop, make_estimator

        self.energy = preset.energy()
        if eval_batch is None:
            eval_batch = max(64, min(2000, (16 << 20) // (8 * max(self.energy.sizes))))
        if int(eval_batch) < 1:
            raise PhysgradError(f"eval_batch must be >= 1, got {eval_batch}")
        self.preset, self.eval_batch = preset, int(eval_batch)
        self.energy.split(params)
        self.params = tuple(params)
        self.dtype = params[0].dtype
        self.minimizer = preset.minimizer()
        self.eval_minimizer = preset.minimizer(preset.sweeps_eval)
        if algorithm == "tbp":  # unrolled from the free state, like the authors' BP baseline
            self.rule = TruncatedBackprop(steps=preset.sweeps, init="free", strict=False)
        else:
            self.rule = make_estimator(algorithm, beta=preset.beta, eta=eta, steps=preset.sweeps, strict=False,
                                       zero_phase=preset.zero_phase)
        self.optimizer = None
        if preset.optimizer != "sgd":
            from physgrad.layered.optimizer import LayerOptimizer

            self.optimizer = LayerOptimizer(preset.optimizer, preset.momentum, preset.weight_decay)
            self.opt_state = self.optimizer.init(self.params)
        self._limits = threadpool_limits(int(threads))
        self.record = False
        self.last = None

    def start_epoch(self, x, order, start_batch):
        """Nothing to prepare."""

    def step(self, x, idx, y, nxt, warm, lr_scale):
        """Free phase from ``warm``, the rule's estimate, a projected SGD step. With :attr:`record`
        set, :attr:`last` keeps the step's ``(params, x, y, free, plus)``: the parameters it relaxed
        at, the batch, the one-hot targets, the free equilibrium and the ``+beta`` nudged one (pep,
        cep; None for the other rules) -- what :mod:`physgrad.layered.energy` measures."""
        p = self.preset
        xb = x[idx]
        s0 = None if warm is None or len(warm[0]) != len(idx) else tuple(warm)
        free = self.minimizer.minimize(self.energy, self.params, xb, s0=s0)
        y1h = one_hot(y, self.energy.n_outputs, self.dtype)
        if hasattr(self.rule, "phases"):
            ph = self.rule.phases(self.energy, self.params, xb, y1h, self.minimizer, free=free)
            grads = self.rule.estimate_from_phases(self.energy, self.params, xb, ph)
            last = ph.plus if ph.plus is not None else (ph.minus if ph.minus is not None else ph.free)
            positive = hasattr(self.rule, "beta") and getattr(self.rule, "variant", None) in ("positive", "centered")
            plus = ph.plus if positive else None
        else:
            grads = self.rule.estimate(self.energy, self.params, xb, y1h, self.minimizer, free=free)
            last, plus = free, None
        if self.record:
            self.last = (self.params, xb, y1h, free, plus)
        wl, bl = p.learning_rates(lr_scale)
        lrs = wl + bl
        if self.optimizer is None:
            wd = self.dtype.type(p.weight_decay)
            with np.errstate(over="ignore"):  # a diverging run's overflow is reported by the train loop (exit 1)
                new = tuple(np.asarray(t - lr * optim.decayed(np.asarray(g), t, wd), dtype=self.dtype)
                            for t, g, lr in zip(self.params, grads, lrs))
        else:
            new, self.opt_state = self.optimizer.step(self.params, grads, lrs, self.opt_state)
        self.params = tuple(np.asarray(a, dtype=self.dtype) for a in self.energy.project(new))
        warm = [np.asarray(s, dtype=self.dtype) for s in last.state]
        return warm, np.argmax(np.asarray(self.energy.outputs(free.state)), axis=1)

    def evaluate(self, params, x):
        """Block coordinate descent on the energy from the zero state, ``preset.sweeps_eval`` sweeps
        (fixed budget), ``eval_batch`` samples at a time; the class of the largest output."""
        preds = np.empty(len(x), dtype=np.int64)
        for i in range(0, len(x), self.eval_batch):
            eq = self.eval_minimizer.minimize(self.energy, params, x[i:i + self.eval_batch])
            preds[i:i + self.eval_batch] = np.argmax(np.asarray(self.energy.outputs(eq.state)), axis=1)
        return preds

    def to_host(self, arrays=None):
        """The parameters (or ``arrays``): already host numpy arrays."""
        return tuple(self.params if arrays is None else arrays)

    def close(self):
        """Restore the BLAS thread limits."""
        self._limits.restore_original_limits()


class AmplifiedStepper:
    r"""A fast stepper on a DRN with amplifiers between layers, run as the plain DRN it is an exact
    reparametrisation of.

    With :math:`P_k = \prod_{m \le k} A_m` (:math:`A_1 = 1`) and :math:`r_k = P_L / P_k`, the amplified
    network with input gain :math:`g`, biases :math:`b_k` and voltages :math:`s_k` computes, sweep by
    sweep, what the plain DRN with input gain :math:`g P_L`, biases :math:`b'_k = r_k b_k` and voltages
    :math:`s'_k = r_k s_k` does, with the same conductances (``tests/test_amplified_drn.py``). A
    gradient step on :math:`b_k` is then a step on :math:`b'_k` with the learning rate times
    :math:`r_k^2` (SGD, momentum) or :math:`r_k` (Adam, whose steps do not scale with the gradient;
    exact up to its :math:`\epsilon`). The inner stepper trains the plain DRN; this wrapper maps
    biases, warm starts and optimizer state back, so parameters, checkpoints and metrics are the
    amplified network's, interchangeable with the generic engine's.

    Parameters
    ----------
    preset : Preset
        A DRN preset with ``amplifier_gains``.
    params : tuple of host arrays
        The amplified network's parameters ``(W_1..W_L, b_1..b_L)`` (the weights are handed to the
        inner stepper, which may update them in place).
    make_inner : callable
        ``make_inner(plain_preset, plain_params) -> Stepper`` (a host-array stepper: numpy or numba).
    """

    def __init__(self, preset: Preset, params, make_inner):
        energy = preset.energy()
        L = energy.n_layers
        P = np.cumprod([1.0] + list(energy.amplifier_gains))
        self.r = tuple(float(P[-1] / P[k]) for k in range(L))
        self.preset, self.L = preset, L
        bias_power = 1 if preset.optimizer == "adam" else 2
        self.plain = preset.with_options(
            name=preset.name + "-as-plain", input_gain=preset.input_gain * float(P[-1]), amplifier_gains=(),
            bias_lrs=tuple(lr * r ** bias_power for lr, r in zip(preset.bias_lrs, self.r)))
        dt = params[0].dtype
        self._r = tuple(dt.type(r) for r in self.r)
        self.inner = make_inner(self.plain, tuple(params[:L]) + tuple(b * r for b, r in zip(params[L:], self._r)))
        self.params = tuple(self.inner.params[:L]) + tuple(np.array(b, copy=True) for b in params[L:])
        self._pull()

    def _pull(self) -> None:
        """Parameters from the inner stepper: its weights (the same arrays), ``b_k = b'_k / r_k``."""
        inner = self.inner.params
        for b, bp, r in zip(self.params[self.L:], inner[self.L:], self._r):
            np.divide(bp, r, out=b)
        self.params = tuple(inner[:self.L]) + self.params[self.L:]
        self._biases = tuple(b.copy() for b in self.params[self.L:])

    def _push(self) -> None:
        """Biases changed from outside since :meth:`_pull` (a device model, a checkpoint) go to the
        inner stepper as ``b'_k = r_k b_k``; the weights are its own arrays already."""
        inner = self.inner.params
        for b, seen, bp, r in zip(self.params[self.L:], self._biases, inner[self.L:], self._r):
            if not np.array_equal(b, seen):
                np.multiply(b, r, out=bp)
        for W, Wi in zip(self.params[:self.L], inner[:self.L]):
            if W is not Wi:
                np.copyto(Wi, W)

    def start_epoch(self, x, order, start_batch):
        """The inner stepper's (after taking over outside changes of the parameters)."""
        self._push()
        self.inner.start_epoch(x, order, start_batch)

    def step(self, x, idx, y, nxt, warm, lr_scale):
        """One step of the plain DRN; warm starts in and out as the amplified network's voltages."""
        self._push()
        if warm is not None:
            warm = [s * r for s, r in zip(warm, self._r)]
        warm, pred = self.inner.step(x, idx, y, nxt, warm, lr_scale)
        self._pull()
        return [s / r for s, r in zip(warm, self._r)], pred

    def evaluate(self, params, x):
        """The plain DRN's evaluation of the amplified network's ``params`` (biases mapped)."""
        L = self.L
        return self.inner.evaluate(tuple(params[:L]) + tuple(b * r for b, r in zip(params[L:], self._r)), x)

    def to_host(self, arrays=None):
        """The parameters (or ``arrays``): host numpy arrays already."""
        return tuple(self.params if arrays is None else arrays)

    def _scale_state(self, arrays: dict, inverse: bool) -> dict:
        from physgrad.layered.optimizer import STATE_PREFIX

        out = dict(arrays)
        for k, r in enumerate(self.r):  # dL/db_k = r_k dL/db'_k: momentum and m scale by r_k, Adam's v by r_k^2
            for key in ("m", "v"):
                name = f"{STATE_PREFIX}{key}_{self.L + k}"
                if name in out:
                    f = r ** 2 if (key == "v" and self.preset.optimizer == "adam") else r
                    out[name] = out[name] / f if inverse else out[name] * f
        return out

    def state_arrays(self) -> dict:
        """The inner stepper's optimizer state, mapped to the amplified network's biases."""
        return self._scale_state(optimizer_state(self.inner), inverse=False)

    def load_state_arrays(self, arrays: dict) -> None:
        """Continue from a checkpoint's optimizer state (the amplified network's)."""
        if self.preset.optimizer == "sgd":
            if arrays:
                raise PhysgradError(f"optimizer state {sorted(arrays)} for an SGD run")
            return
        self.inner.load_state_arrays(self._scale_state(arrays, inverse=True))

    def close(self):
        """The inner stepper's."""
        self.inner.close()


def build_stepper(plan, preset: Preset, params, *, threads: int = 1, eta: float = 0.5) -> Stepper:
    """The stepper of an :class:`~physgrad.layered.engines.EnginePlan` (checks nothing: the plan did)."""
    if plan.amplified:
        from dataclasses import replace

        plain = replace(plan, amplified=False)
        return AmplifiedStepper(preset, params, lambda p, q: build_stepper(plain, p, q, threads=threads, eta=eta))
    name = plan.stepper
    if name == "ConvEPStepper":
        from physgrad.layered.kernels.conv_cep import make_conv_stepper

        return make_conv_stepper(preset, plan.algorithm, params, threads=threads, backend=plan.backend,
                                 device=plan.torch_device, eta=eta, conv_dtype=plan.conv_dtype)
    if name == "RuleStepper":
        return RuleStepper(preset, plan.algorithm, params, threads=threads, eta=eta)
    if name == "CompiledCEPStepper":
        return CompiledCEPStepper(preset, params, threads=threads)
    if name == "FusedCEPStepper":
        return FusedCEPStepper(preset, params, threads=threads)
    if name == "FusedTBPStepper":
        return FusedTBPStepper(preset, params, threads=threads)
    if name == "OptimizerCEPStepper":
        from physgrad.layered.kernels.array_stepper import OptimizerCEPStepper

        return OptimizerCEPStepper(preset, params)
    from physgrad.layered.kernels.torch_backend import TorchCEPStepper

    return TorchCEPStepper(preset, params, device=plan.torch_device, threads=threads)


def make_stepper(engine: str, preset: Preset, algorithm: str, params, *, threads: int = 1, eta: float = 0.5,
                 backend: str = "numpy", device: str = "cpu", device_model=None, conv_dtype: str = "full") -> Stepper:
    """The stepper that :func:`physgrad.layered.engines.plan_engine` chooses for ``engine`` (``"auto"``,
    ``"fast"`` or ``"generic"``), ``algorithm``, ``backend`` (``"auto"``, ``"numpy"``, ``"numba"``,
    ``"torch"``) on torch ``device``, ``preset.optimizer``, the preset's amplifiers and
    ``device_model`` (a :class:`physgrad.devices.Device` whose random reads the engine must realise;
    the caller wraps the stepper for it); refused combinations raise its :class:`PhysgradError`."""
    plan = plan_engine(engine, algorithm, backend, device, device_model=device_model, conv_dtype=conv_dtype,
                       **preset_traits(preset))
    return build_stepper(plan, preset, params, threads=threads, eta=eta)

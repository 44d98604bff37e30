r"""Layered training on a device model: one wrapper around any stepper.

A :class:`DeviceStepper` holds the *true* device conductances :math:`\theta` and the
:class:`~physgrad.devices.DeviceState`, and runs an inner stepper (fused numpy, numba, torch,
generic, or any other stepper of the protocol of :mod:`physgrad.layered.steppers`) as a black box:

1. before each step the inner stepper's parameters are set to what the circuit reads,
   :math:`\tilde\theta = \mathrm{read}(\theta)` (drift; read noise with one realisation for the
   step, ``device_rng(seed, "read", n, 0, 0)`` with ``n = state.n_updates``), and the inner stepper
   rebuilds what it caches from them (``start_epoch``: the input layer's drive, transposed copies);
2. the inner stepper trains on the batch and changes its parameters to :math:`\tilde\theta'` (its
   own optimiser step, including its projection onto :math:`g \ge 0`);
3. the requested change is :math:`\Delta = \tilde\theta' - \tilde\theta`; the devices deliver
   :math:`(\theta, \text{state}) \leftarrow \mathrm{update}(\theta, \Delta, \text{key}, \text{state})`
   with ``key = update_key(seed, n)`` (counter-based streams, :mod:`physgrad.devices.streams`). Only the
   weights :math:`W_k` are devices (a DRN's
   biases are current sources, not conductances): they take the inner stepper's values as they are.

Read-noise realisations (``Device.read_noise.resample``):

- ``"step"``: one realisation per step, shared by all examples and by the free and nudged phases:
  every engine (what the fused kernels can do: they relax the batch at one set of conductances).
- ``"phase"`` / ``"example"``: a fresh realisation per example and phase, or per example held
  through its phases: the generic engine only, whose minimizer is wrapped in
  :class:`~physgrad.devices.ReadThrough` with ``key = (n,)`` (the inner parameters are then the true
  conductances, and each phase reads them). Rules that unroll the minimizer's ``step`` (TBP, RBP)
  cannot read through and need ``"step"``. :func:`physgrad.layered.engines.plan_engine` refuses the
  other combinations, naming the alternative.

Evaluation reads the conductances once, ``device_rng(seed, "read", n, EVAL_READ, 0)``: the drift at
the current device clock and one read-noise realisation for the whole test set (a chip read once at
test time; per-image noise would need one relaxation per image).

The ideal device is never wrapped (:func:`physgrad.layered.train.train` keeps the plain stepper),
so its runs are bit-for-bit those without a device model.
"""
from __future__ import annotations


import numpy as np

from physgrad.devices import Device, DeviceState, ReadThrough, device_rng, pulsing, update_key
from physgrad.devices.model import array_key
from physgrad.layered.engines import random_reads
from physgrad.layered.steppers import optimizer_state
from physgrad.types import PhysgradError

EVAL_READ = 1 << 40
"""The ``example`` counter of the evaluation's read (beyond any example index of a step)."""
def _write(inner, values) -> None:
    """Set the inner stepper's parameters to host arrays ``values`` (in place for host arrays, so
    that kernels holding them see the change; through ``to_device`` for device tensors)."""
    if all(isinstance(p, np.ndarray) for p in inner.params):
        for p, v in zip(inner.params, values):
            np.copyto(p, v, casting="same_kind")
    elif hasattr(inner, "to_device"):
        inner.params = tuple(inner.to_device(np.ascontiguousarray(v)) for v in values)
    else:  # pragma: no cover - a stepper outside the protocol
        raise PhysgradError(f"{type(inner).__name__}: cannot set its parameters for a device model")


class DeviceStepper:
    """A stepper whose conductances live on devices (see the module docstring).

    Parameters
    ----------
    inner : Stepper
        Built on (a copy of) ``params``; its parameters are overwritten before each step.
    device : Device
        Not ideal (the ideal device runs the plain stepper).
    params : tuple of host arrays
        The true device conductances (``device.init`` or a checkpoint), ``(W_1..W_L, b_1..b_L)``.
    device_state : DeviceState
    seed : int
        The run's seed (device streams: :func:`physgrad.devices.device_rng`).
    read_through : bool
        Per-example/per-phase reads (the inner stepper must be the generic one).
    in_place : bool
        Update in place where it applies (:attr:`in_place` says whether it does): a device without drift,
        pairs or read noise (its reads are the conductances themselves) and an inner stepper on host
        arrays of the devices' dtypes. Each step then hands the inner stepper's new values to
        :meth:`Device.update_in_place <physgrad.devices.Device.update_in_place>`, which visits only the
        rows that changed and writes the delivered conductances into both the true and the inner arrays
        (no copies, no generator for devices that draw nothing): the same numbers as the general route
        bit for bit (``tests/test_device_layered.py``).
    """

    def __init__(self, inner, device: Device, params, device_state: DeviceState, seed: int, read_through: bool = False,
                 in_place: bool = True):
        if not isinstance(device, Device) or device.is_ideal:
            raise PhysgradError("DeviceStepper needs a non-ideal Device (run the plain stepper for the ideal one)")
        self.inner, self.device, self.device_state, self.seed = inner, device, device_state, int(seed)
        self.read_through = bool(read_through)
        if self.read_through and not hasattr(inner, "minimizer"):
            raise PhysgradError("per-example/per-phase device reads need the generic engine (--engine generic)")
        self._minimizer = getattr(inner, "minimizer", None)
        self.params = tuple(np.array(p, copy=True) for p in params)
        self._sync()
        host = getattr(inner, "params", None)
        self.in_place = bool(in_place and device.updates_in_place and device.reads_ideally and not self.read_through
                             and isinstance(host, (tuple, list)) and len(host) == len(self.params)
                             and all(isinstance(h, np.ndarray) and h.dtype == p.dtype and h.shape == p.shape
                                     and h.flags.c_contiguous and p.flags.c_contiguous and h is not p
                                     for h, p in zip(host, self.params)))
        self.fused_w1 = False
        if self.in_place and hasattr(inner, "device_w1") and getattr(inner, "optimizer", None) is None:
            leaf = device_state.leaves[0]
            consts = None if leaf is None else pulsing.row_constants(
                pulsing.plan(device.pulses, device.drift), leaf.cells[0], leaf.dw0)
            if consts is not None:  # W1's devices update inside the kernel's pass; one array for both
                inner.device_w1 = consts
                self.params = (host[0],) + tuple(self.params[1:])
                self.fused_w1 = True

    # --- what the inner stepper sees -----------------------------------------------------------
    def _read(self, example: int = 0) -> tuple:
        n = self.device_state.n_updates
        rng = device_rng(self.seed, "read", n, example, 0) if random_reads(self.device) else None
        return tuple(self.device.read(self.params, rng, self.device_state))

    def _sync(self) -> None:
        """Inner parameters = the conductances of the coming step (kept in ``_written``: the inner
        stepper's parameters before its step, without copying them back)."""
        values = self.params if self.read_through else self._read()
        _write(self.inner, values)
        if self.read_through:
            self.inner.minimizer = ReadThrough(self._minimizer, self.device, self.device_state, self.seed,
                                               (self.device_state.n_updates,))
        self._written = values

    def _before(self) -> tuple:
        """The inner stepper's parameters now: what :meth:`_sync` wrote when the host arrays hold exactly
        those values (same dtypes), else a copy of them."""
        host = self.inner.to_host()
        written = getattr(self, "_written", None)
        if written is not None and all(isinstance(p, np.ndarray) and np.asarray(w).dtype == p.dtype
                                       and np.shape(w) == p.shape for p, w in zip(host, written)):
            return tuple(np.asarray(w) for w in written)
        return tuple(np.array(p, copy=True) for p in host)

    # --- protocol --------------------------------------------------------------------------------
    def start_epoch(self, x, order, start_batch):
        """Inner parameters from the devices, then the inner stepper's own preparation."""
        self._sync()
        self.inner.start_epoch(x, order, start_batch)

    def step(self, x, idx, y, nxt, warm, lr_scale):
        """The inner step at the read conductances, then ``device.update`` with its requested change."""
        if self.fused_w1:  # W1 delivered (and the next drive made from it) in the kernel's pass
            key = None
            if self.device.update_draws:  # W1's key into the kernel's constants, as Device.update derives it
                key = update_key(self.seed, self.device_state.n_updates)
                pulsing.set_row_key(self.inner.device_w1, array_key(key, 0))
            warm, pred = self.inner.step(x, idx, y, nxt, warm, lr_scale)
            host = self.inner.params
            self.device_state = self.device.update_in_place(self.params[1:], host[1:], key, self.device_state,
                                                            first=1)
            self.inner.ws.attach(host)  # the transposed copies of the deeper weights
            return warm, pred
        if self.in_place:  # the next batch's drive is made below, from the delivered conductances
            warm, pred = self.inner.step(x, idx, y, None, warm, lr_scale)
            rng = update_key(self.seed, self.device_state.n_updates) if self.device.update_draws else None
            self.device_state = self.device.update_in_place(self.params, self.inner.params, rng, self.device_state)
            if nxt is not None:  # the next batch's drive from the delivered conductances
                self.inner.start_epoch(x, nxt, 0)
            return warm, pred
        before = self._before()
        warm, pred = self.inner.step(x, idx, y, nxt, warm, lr_scale)
        after = tuple(np.asarray(p) for p in self.inner.to_host())
        requested = tuple(a - b for a, b in zip(after, before))
        rng = update_key(self.seed, self.device_state.n_updates)
        params_before, state_before = self.params, self.device_state
        new, self.device_state = self.device.update(self.params, requested, rng, self.device_state)
        # arrays that are not devices (biases) keep the inner stepper's own values, not before + (after - before);
        # the devices' arrays are new (update returns fresh arrays), the inner stepper's are copied
        self.params = tuple(np.array(a, copy=True) if leaf is None else n
                            for a, n, leaf in zip(after, new, self.device_state.leaves))
        self.last_update = (params_before, self.params, state_before, self.device_state)
        self._sync()
        if nxt is not None:  # rebuild the next batch's cached drive / copies from the new conductances
            self.inner.start_epoch(x, nxt, 0)
        return warm, pred

    def evaluate(self, params, x):
        """Predictions at one read of ``params`` (drift now, one read-noise realisation for all of ``x``)."""
        n = self.device_state.n_updates
        rng = device_rng(self.seed, "read", n, EVAL_READ, 0) if random_reads(self.device) else None
        _write(self.inner, tuple(self.device.read(tuple(params), rng, self.device_state)))
        try:  # the generic engine evaluates with its own (plain) evaluation minimizer
            return self.inner.evaluate(self.inner.params, x)
        finally:
            self._sync()

    last_update = None
    """``(params before, params after, DeviceState before, after)`` of the last step's device update."""

    def state_arrays(self) -> dict:
        """The inner stepper's optimizer arrays (momentum / adam), empty for in-place SGD."""
        return optimizer_state(self.inner)

    def load_state_arrays(self, arrays: dict) -> None:
        self.inner.load_state_arrays(arrays)

    def to_host(self, arrays=None) -> tuple:
        """The true conductances (or ``arrays``, e.g. a warm start, through the inner stepper)."""
        return tuple(self.params) if arrays is None else self.inner.to_host(arrays)

    def close(self):
        self.inner.close()

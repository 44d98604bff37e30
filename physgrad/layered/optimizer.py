r"""Optimizers of layered training beyond in-place SGD: one state per parameter array, each array
with its own learning rate, as data that a checkpoint stores.

The fused numpy and torch kernels apply projected SGD in place (:math:`\theta \leftarrow
P(\theta - \alpha_k g)`); ``momentum`` and ``adam`` need a state per array: they run on the generic
engine (:class:`physgrad.layered.steppers.RuleStepper`), the array stepper on numpy
(:class:`physgrad.layered.kernels.array_stepper.OptimizerCEPStepper`) and inside the compiled kernel
(:class:`physgrad.layered.steppers.CompiledCEPStepper`, the same formulas element by element), all
with this class's state. The update rules are the
ones of :mod:`physgrad.learning.optim` (defined once there), applied array by array with that
array's learning rate, then the energy's projection ``P`` (DRN conductances :math:`\ge 0`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from physgrad.learning import optim
from physgrad.types import PhysgradError

STATE_PREFIX = "opt."


@dataclass(frozen=True)
class LayerOptimizer:
    r"""``optim.step(kind, ...)`` on each parameter array with its own learning rate.

    Attributes
    ----------
    kind : {"momentum", "adam"}
    momentum : float
        Heavy-ball coefficient :math:`\mu` (``momentum``: :math:`v \leftarrow \mu v + g`,
        :math:`\theta \leftarrow \theta - \alpha v`).
    weight_decay : float
        L2 weight decay :math:`\lambda \ge 0` on every array: the rule sees
        :math:`g + \lambda\theta` (:func:`physgrad.learning.optim.decayed`; no extra state).
    """

    kind: str
    momentum: float = 0.9
    weight_decay: float = 0.0

    def __post_init__(self):
        if self.kind not in ("momentum", "adam"):
            raise PhysgradError(f"LayerOptimizer is for 'momentum' or 'adam', got {self.kind!r}")
        if not self.weight_decay >= 0:
            raise PhysgradError(f"weight_decay must be >= 0, got {self.weight_decay}")

    def init(self, params) -> list:
        """One state per array (zeros shaped like it)."""
        return [optim.init(self.kind, (np.asarray(p),)) for p in params]

    def step(self, params, grads, lrs, state: list) -> tuple:
        """``(new params, new state)``: array ``i`` takes ``optim.step`` with learning rate ``lrs[i]``
        (the gradient ``grads[i]`` in the array's dtype); the inputs are not modified."""
        new_p, new_s = [], []
        for p, g, lr, s in zip(params, grads, lrs, state):
            (q,), s2 = optim.step(self.kind, (p,), (np.asarray(g, dtype=p.dtype),), s, p.dtype.type(lr),
                                  momentum=self.momentum, weight_decay=p.dtype.type(self.weight_decay))
            new_p.append(np.asarray(q, dtype=p.dtype))
            new_s.append(s2)
        return tuple(new_p), new_s

    def state_arrays(self, state: list) -> dict:
        """The state as named arrays (``opt.t``, ``opt.v_i``, ``opt.m_i``) for a checkpoint."""
        out = {STATE_PREFIX + "t": np.int64(state[0]["t"])}
        for i, s in enumerate(state):
            for key in ("m", "v"):
                if key in s:
                    out[f"{STATE_PREFIX}{key}_{i}"] = np.asarray(s[key][0])
        return out

    def load_state_arrays(self, arrays: dict, params) -> list:
        """The state from :meth:`state_arrays`; raises :class:`PhysgradError` when the arrays do not
        belong to this optimizer and these parameters."""
        keys = ("v",) if self.kind == "momentum" else ("m", "v")
        expected = {STATE_PREFIX + "t"} | {f"{STATE_PREFIX}{k}_{i}" for k in keys for i in range(len(params))}
        if set(arrays) != expected:
            raise PhysgradError(f"optimizer state keys {sorted(arrays)} are not those of {self.kind!r} "
                                f"({sorted(expected)})")
        t = arrays[STATE_PREFIX + "t"]
        if np.shape(t) != () or np.asarray(t).dtype.kind not in "iu" or int(t) < 0:
            raise PhysgradError(f"optimizer step counter is not an integer >= 0 ({t!r})")
        state = []
        for i, p in enumerate(params):
            s = {"t": int(t)}
            for k in keys:
                a = np.asarray(arrays[f"{STATE_PREFIX}{k}_{i}"])
                if a.shape != p.shape or a.dtype != p.dtype or not np.all(np.isfinite(a)):
                    raise PhysgradError(f"optimizer state {k}_{i} is not a finite {p.dtype} array of shape {p.shape}")
                s[k] = (a.copy(),)
            state.append(s)
        return state


class OptimizerState:
    """The checkpoint methods of a stepper's optimizer state, one definition for every stepper.

    A stepper using it has ``optimizer`` (a :class:`LayerOptimizer`, or ``None`` for SGD, which keeps
    no state) and ``opt_state``; :meth:`_state_like` gives the host arrays the state is shaped like
    (default ``self.params``; a device-resident stepper returns its host copy). The arrays are those
    of :meth:`LayerOptimizer.state_arrays`, so a checkpoint moves between the steppers.
    """

    def _state_like(self):
        return self.params

    def state_arrays(self) -> dict:
        """The optimizer state as named arrays (empty for SGD)."""
        return {} if self.optimizer is None else self.optimizer.state_arrays(self.opt_state)

    def load_state_arrays(self, arrays: dict) -> None:
        """Continue from a checkpoint's optimizer state; an SGD run refuses any state arrays."""
        if self.optimizer is None:
            if arrays:
                raise PhysgradError(f"optimizer state {sorted(arrays)} for an SGD run")
            return
        self.opt_state = self.optimizer.load_state_arrays(arrays, self._state_like())


r"""Any minimizer, relaxing the energy at the conductances a device reads.

A phase is one ``minimize`` call, so wrapping the minimizer is where read noise and drift enter
every learning rule unchanged: the rule asks for the free and nudged phases at ``theta``, each
phase relaxes at ``device.read(theta)``, and the rule's contrast of :math:`\partial_\theta E` at the
returned states is what the hardware measures (for resistive networks
:math:`\partial E/\partial g = \tfrac12\Delta v^2` does not involve the conductances at all).

Not an energy wrapper: the circuit minimizer accepts only its own energy class, and a wrapped
energy could not tell one phase from the next. This class is duck-typed (any object with
``minimize``) and depends only on the device model, so it sits with the devices, below the
minimizers and learning rules that use it.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from physgrad.devices.model import Device
from physgrad.devices.state import DeviceState, device_rng
from physgrad.types import FREE, Equilibrium, Nudge, PhysgradError

WORST_FIRST = ("solver_error", "infeasible", "max_iter", "converged")


def phase_index(nudge: Nudge) -> int:
    """0 free, 1 ``beta > 0``, 2 ``beta < 0``, ``3 + crc32(clamp)`` for a clamp (two different clamps,
    as in coupled learning, are two phases)."""
    if nudge.clamp is not None:
        return 3 + zlib.crc32(np.ascontiguousarray(nudge.clamp, dtype=float).tobytes())
    return 0 if nudge.beta == 0 else (1 if nudge.beta > 0 else 2)


@dataclass(frozen=True, eq=False)
class ReadThrough:
    """``minimize`` of ``minimizer`` at ``device.read(theta)``, one realisation per example and phase.

    Example ``b`` of a batch in a phase with nudge ``n`` is relaxed at
    ``device.read(theta, device_rng(seed, "read", *key, b, p), state)`` with ``p = phase_index(n)``,
    or ``p = 0`` in every phase when ``device.read_noise.resample == "example"`` (the example keeps
    its realisation through its phases); with ``"step"`` every example and phase reads the
    realisation ``(seed, key, 0, 0)`` and the batch is relaxed at once. The realisations are a pure function of
    ``(seed, key, b, p)``: give each training step (or trial) its own ``key``. With random reads a
    batch is relaxed example by example (one inner call each) and reassembled; deterministic reads
    (drift only) relax the batch at once.

    Parameters
    ----------
    minimizer
        Any minimizer of the contract.
    device : Device
    state : DeviceState
        From ``device.init`` on parameters shaped like the ``theta`` given to ``minimize``.
    seed : int
        The run's seed.
    key : tuple of int
        E.g. ``(step,)``.
    """

    minimizer: object
    device: Device
    state: DeviceState
    seed: int = 0
    key: tuple = ()

    def __post_init__(self):
        if not isinstance(self.device, Device) or not isinstance(self.state, DeviceState):
            raise PhysgradError("ReadThrough needs a Device and its DeviceState (from Device.init)")
        object.__setattr__(self, "key", tuple(int(k) for k in self.key))

    @property
    def name(self) -> str:
        return f"read[{self.device.label}]({getattr(self.minimizer, 'name', type(self.minimizer).__name__)})"

    @property
    def random(self) -> bool:
        """Reads draw random numbers (read noise with ``sigma > 0``)."""
        rn = self.device.read_noise
        return rn is not None and rn.sigma > 0

    def accepts(self, energy) -> None:
        self.minimizer.accepts(energy)

    def read(self, theta, example: int = 0, nudge: Nudge = FREE):
        """The conductances example ``example`` sees in the phase of ``nudge``."""
        if not self.random:
            return self.device.read(theta, None, self.state)
        if self.device.read_noise.resample == "step":
            example, p = 0, 0
        else:
            p = 0 if self.device.read_noise.resample == "example" else phase_index(nudge)
        return self.device.read(theta, device_rng(self.seed, "read", *self.key, int(example), p), self.state)

    def minimize(self, energy, theta, x, *, nudge: Nudge = FREE, s0=None) -> Equilibrium:
        """The inner minimizer's equilibrium at the read conductances (see the class docstring)."""
        batch = 1 if x is None or np.ndim(x) < 2 else int(np.shape(x)[0])
        if not self.random or batch == 1 or self.device.read_noise.resample == "step":
            return self.minimizer.minimize(energy, self.read(theta, 0, nudge), x, nudge=nudge, s0=s0)
        eqs = [self.minimizer.minimize(energy, self.read(theta, b, nudge), np.asarray(x)[b:b + 1],
                                       nudge=_row_nudge(nudge, b, batch), s0=_row(s0, b))
               for b in range(batch)]
        return _stack(eqs, self.name)


def _row(tree, b: int):
    """Row ``b`` (kept 2-D) of an array or a tuple of arrays; None stays None."""
    if tree is None:
        return None
    if isinstance(tree, (tuple, list)):
        return tuple(np.asarray(a)[b:b + 1] for a in tree)
    return np.asarray(tree)[b:b + 1]


def _row_nudge(nudge: Nudge, b: int, batch: int) -> Nudge:
    def cut(a):
        return a[b:b + 1] if a is not None and np.ndim(a) == 2 and np.shape(a)[0] == batch else a

    return Nudge(nudge.beta, target=cut(nudge.target), clamp=cut(nudge.clamp))


def _stack(eqs, solver: str) -> Equilibrium:
    """One equilibrium of the batch from one per example (tuple-valued info entries, which are per
    example, are concatenated)."""
    first = eqs[0].state
    if isinstance(first, (tuple, list)):
        state = tuple(np.concatenate([e.state[k] for e in eqs]) for k in range(len(first)))
    else:
        state = np.concatenate([e.state for e in eqs])
    info = {k: tuple(x for e in eqs for x in e.info[k]) for k, v in eqs[0].info.items()
            if isinstance(v, tuple) and all(isinstance(e.info.get(k), tuple) for e in eqs)}
    status = next(s for s in WORST_FIRST if any(e.status == s for e in eqs))
    return Equilibrium(state=state, energy=np.concatenate([np.atleast_1d(e.energy) for e in eqs]), status=status,
                       n_iter=sum(e.n_iter for e in eqs), residual=max(e.residual for e in eqs), solver=solver,
                       message="; ".join(f"example {b}: {e.message}" for b, e in enumerate(eqs) if e.message),
                       info=info)

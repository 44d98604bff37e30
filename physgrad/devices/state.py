"""What a device model remembers between updates: per-device properties drawn once, clocks, the
pair conductances of compound cells. Plain numpy arrays plus JSON, so that it rides in a checkpoint
(:meth:`DeviceState.state_dict` / :meth:`DeviceState.from_state`) and a run resumes bit-for-bit.

Randomness is not state: every device event draws from its own generator,
:func:`device_rng` ``(seed, purpose, *counters)``, spawned from the run's seed; an update draws from
the counter-based streams of :func:`update_key` ``(seed, n_updates)``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, Optional, get_args

import numpy as np

from physgrad.devices.streams import stream_key
from physgrad.types import PhysgradError

Purpose = Literal["init", "update", "read"]
PURPOSES = get_args(Purpose)
DEVICE_STREAM = 0xDE71CE
"""First spawn key of every device stream (keeps them apart from the run's other uses of its seed)."""


def device_rng(seed: int, purpose: Purpose, *counters: int) -> np.random.Generator:
    """The generator of one device event, a pure function of its arguments.

    ``SeedSequence(seed, spawn_key=(DEVICE_STREAM, PURPOSES.index(purpose), *counters))``. Conventions:
    ``("init",)`` once per run; ``("update", step)`` with ``step = state.n_updates``; ``("read", step,
    example, phase)`` (see :class:`physgrad.devices.readout.ReadThrough`). Nothing to save in a
    checkpoint: the counters are.
    """
    if purpose not in PURPOSES:
        raise PhysgradError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    key = (DEVICE_STREAM, PURPOSES.index(purpose)) + tuple(int(c) for c in counters)
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def update_key(seed: int, n_updates: int) -> int:
    """The 64-bit key of update number ``n_updates`` of a run with ``seed``: the counter-based streams of
    :mod:`physgrad.devices.streams` that the update's random numbers (stochastic rounding, cycle-to-cycle
    noise) come from, ``stream_key(DEVICE_STREAM, 1, seed, n_updates)``. A pure function of its arguments
    (about 1 us, against about 60 us for a ``device_rng``): nothing to save in a checkpoint but
    ``n_updates``."""
    return stream_key(DEVICE_STREAM, PURPOSES.index("update"), int(seed), int(n_updates))


@dataclass(frozen=True, eq=False)
class Cell:
    """Properties of one array of physical devices (shape of the parameter array). Every field is a
    float64 array, 0-d when it is the same for all devices.

    Attributes
    ----------
    g_min, g_max : array
        Hard bounds (S).
    step_up, step_down : array
        Step of one up / down pulse at the reference point of the law (S); 0-d zeros without pulses.
    nu : array
        Drift exponent.
    t_prog : array
        Device-clock time of the last programming (s).
    stuck_index : int64 array (k,)
        Flat indices of stuck devices.
    stuck_value : array (k,)
        Their conductances (S).
    """

    g_min: np.ndarray
    g_max: np.ndarray
    step_up: np.ndarray
    step_down: np.ndarray
    nu: np.ndarray
    t_prog: np.ndarray
    stuck_index: np.ndarray
    stuck_value: np.ndarray


@dataclass(frozen=True, eq=False)
class LeafState:
    """The device state of one parameter array.

    Attributes
    ----------
    scale : float
        :math:`g_\\mathrm{ref}`: largest absolute initial value of the array (S).
    dw0 : float
        Nominal pulse step :math:`\\Delta_0` (S); 0 without pulses.
    cells : tuple of Cell
        One (single device) or two (:math:`G_+`, :math:`G_-` of a differential pair).
    pair : tuple of arrays
        ``(G_+, G_-)`` (S) of a differential pair, float64; empty for single devices.
    """

    scale: float
    dw0: float
    cells: tuple
    pair: tuple = ()


@dataclass(frozen=True, eq=False)
class DeviceState:
    """Device state of a whole parameter tree.

    Attributes
    ----------
    leaves : tuple of LeafState or None
        One entry per leaf of ``theta`` (None: not a device, updated ideally).
    clock : float
        Device time (s).
    n_updates : int
        Updates applied so far (the counter of the ``("update", step)`` streams and of refreshes).
    """

    leaves: tuple
    clock: float = 0.0
    n_updates: int = 0

    def state_dict(self) -> tuple:
        """``(arrays, meta)``: a dict of numpy arrays (for ``np.savez``) and a JSON-able dict."""
        arrays, meta_leaves = {}, []
        for i, leaf in enumerate(self.leaves):
            if leaf is None:
                meta_leaves.append(None)
                continue
            meta_leaves.append({"scale": leaf.scale, "dw0": leaf.dw0, "cells": len(leaf.cells), "pair": len(leaf.pair) > 0})
            for j, cell in enumerate(leaf.cells):
                for f in fields(Cell):
                    arrays[f"leaf{i}.cell{j}.{f.name}"] = getattr(cell, f.name)
            for j, g in enumerate(leaf.pair):
                arrays[f"leaf{i}.pair{j}"] = g
        return arrays, {"clock": self.clock, "n_updates": self.n_updates, "leaves": meta_leaves}

    @classmethod
    def from_state(cls, arrays, meta) -> "DeviceState":
        """Inverse of :meth:`state_dict` (``arrays`` may be an ``np.load`` result)."""
        try:
            leaves = []
            for i, m in enumerate(meta["leaves"]):
                if m is None:
                    leaves.append(None)
                    continue
                cells = tuple(Cell(**{f.name: np.array(arrays[f"leaf{i}.cell{j}.{f.name}"]) for f in fields(Cell)})
                              for j in range(int(m["cells"])))
                pair = tuple(np.array(arrays[f"leaf{i}.pair{j}"]) for j in range(2)) if m["pair"] else ()
                leaves.append(LeafState(float(m["scale"]), float(m["dw0"]), cells, pair))
            return cls(tuple(leaves), float(meta["clock"]), int(meta["n_updates"]))
        except KeyError as err:
            raise PhysgradError(f"device state is missing {err}") from None

    def with_leaves(self, leaves, clock: Optional[float] = None, n_updates: Optional[int] = None) -> "DeviceState":
        """A copy with new leaves (and optionally clock and counter)."""
        return type(self)(tuple(leaves), self.clock if clock is None else float(clock),
                          self.n_updates if n_updates is None else int(n_updates))  # (not replace(): 3x faster)

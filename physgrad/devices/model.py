r"""A device model: how the conductances a learning rule asks for become the conductances a circuit has.

A :class:`Device` acts at two points only:

- ``update(theta, dtheta, rng, state) -> (theta, state)`` after each optimiser step: the
  optimiser requested ``theta + dtheta``; the devices deliver what their pulses, bounds, noise and
  faults allow;
- ``read(theta, rng, state) -> theta_eff`` whenever an energy reads its conductances (drift,
  read noise).

``init(theta0, rng) -> (theta, state)`` draws each device's fixed properties (variability, stuck
devices, drift exponents) and programs ``theta0``; ``program(theta, state)`` writes target
values as well as the devices allow (write-verify; the ex situ route).

``theta`` is an array or a flat tuple of arrays (``(W_1, ..., W_L, b_1, ..., b_L)`` for a layered
network); ``arrays`` in :meth:`Device.init` says which of them are devices (default all; a DRN's
biases are current sources, not conductances). The default ``Device()`` is the ideal device: it
changes nothing, draws no random numbers, and ``read`` returns the very array objects it was given.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

import numpy as np

from physgrad.devices import pulsing
from physgrad.devices.pieces import Bounds, ConstantStep, DifferentialPair, Drift, Pulses, ReadNoise, Stuck, Variability
from physgrad.devices.state import Cell, DeviceState, LeafState
from physgrad.devices.streams import stream_key
from physgrad.types import PhysgradError

SATURATING_RANGES = pulsing.SATURATING_RANGES
PIECES = {"bounds": Bounds, "pulses": Pulses, "read_noise": ReadNoise, "drift": Drift,
          "variability": Variability, "stuck": Stuck, "pair": DifferentialPair}
"""The slots of a :class:`Device` and the piece each holds."""


def array_key(key: int, i: int, side: int = 0) -> int:
    """The key of array ``i`` (``side``: 0, or +1 / -1 for the devices ``G+`` / ``G-`` of a pair) of an update
    with key ``key`` (:func:`physgrad.devices.streams.stream_key`)."""
    return stream_key(key, i, side)


def _split(theta) -> tuple:
    """``(list of arrays, is_tuple)`` of an array or a flat tuple/list of arrays."""
    if isinstance(theta, (tuple, list)):
        return list(theta), True
    return [theta], False


def _join(items, is_tuple):
    return tuple(items) if is_tuple else items[0]


@dataclass(frozen=True)
class Device:
    """A device model: at most one piece of each kind (:data:`PIECES`); all None is the ideal device.

    Parameters
    ----------
    name : str
        Label (preset name) for reports.
    bounds : Bounds, optional
        Conductance range; needed by pulses, stuck devices, pairs and bound variability.
    pulses : Pulses, optional
        Quantised, pulsed updates (levels, rounding, step law, asymmetry, cycle-to-cycle noise);
        without it updates are continuous (``g + dg``, clipped to the bounds).
    read_noise : ReadNoise, optional
    drift : Drift, optional
    variability : Variability, optional
        Device-to-device spread of steps and bounds (drawn once by :meth:`init`).
    stuck : Stuck, optional
    pair : DifferentialPair, optional
        Each parameter is the difference of two devices (signed parameters).
    """

    name: str = ""
    bounds: Optional[Bounds] = None
    pulses: Optional[Pulses] = None
    read_noise: Optional[ReadNoise] = None
    drift: Optional[Drift] = None
    variability: Optional[Variability] = None
    stuck: Optional[Stuck] = None
    pair: Optional[DifferentialPair] = None

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise PhysgradError(f"Device.name must be a string, got {self.name!r}")
        for slot, cls in PIECES.items():
            value = getattr(self, slot)
            if value is not None and not isinstance(value, cls):
                raise PhysgradError(f"Device.{slot} must be a {cls.__name__} or None, got {value!r}")
        finite = self.bounds is not None and np.isfinite(self.bounds.g_max)
        needs = [("pulses", self.pulses is not None),
                 ("pair", self.pair is not None),
                 ("stuck", self.stuck is not None),
                 ("variability (bounds)", self.variability is not None and self.variability.bounds > 0)]
        for what, used in needs:
            if used and not finite:
                raise PhysgradError(f"Device.{what.split()[0]} needs Device.bounds with a finite g_max ({what})")
        v = self.variability
        if v is not None and (v.dw_min > 0 or v.up_down > 0) and self.pulses is None:
            raise PhysgradError("Device.variability of dw_min/up_down needs Device.pulses (there are no steps to vary)")

    # --- properties ---------------------------------------------------------------------------
    @property
    def is_ideal(self) -> bool:
        """No piece at all: updates are ``theta + dtheta`` and reads return ``theta`` itself."""
        return all(getattr(self, slot) is None for slot in PIECES)

    @property
    def reads_ideally(self) -> bool:
        """Reads return ``theta`` itself (no drift, no read noise)."""
        return self.read_noise is None and self.drift is None

    @property
    def label(self) -> str:
        """``name``, or ``"ideal"``/``"custom"``."""
        return self.name or ("ideal" if self.is_ideal else "custom")

    # --- init and programming -----------------------------------------------------------------
    def init(self, theta0, rng: np.random.Generator, arrays=None) -> tuple:
        """Draw every device's fixed properties and program ``theta0``.

        Parameters
        ----------
        theta0 : array or tuple of arrays
            Initial parameters (S for conductances).
        rng : numpy Generator
            The run's ``device_rng(seed, "init")``; draws happen in a fixed order (array by array,
            cell by cell: bound spread, step spread, asymmetry spread, drift exponents, stuck devices).
        arrays : iterable of int, optional
            Indices of the arrays of ``theta0`` that are devices (default all).

        Returns
        -------
        (theta, DeviceState)
            ``theta0`` as programmed (the same object for the ideal device).
        """
        items, _ = _split(theta0)
        chosen = self._check_arrays(arrays, len(items))
        if self.is_ideal:
            return theta0, DeviceState(tuple(None for _ in items))
        leaves = []
        for i, a in enumerate(items):
            if i not in chosen:
                leaves.append(None)
                continue
            a64 = np.asarray(a, dtype=float)
            if not np.all(np.isfinite(a64)):
                raise PhysgradError(f"parameter array {i}: initial values must be finite (NaN or inf found)")
            scale = float(np.max(np.abs(a64))) if a64.size else 0.0
            needs_scale = (self.bounds is not None and self.bounds.relative) or \
                          (self.read_noise is not None and not self.read_noise.relative)
            if needs_scale and not (np.isfinite(scale) and scale > 0):
                raise PhysgradError(f"parameter array {i}: relative bounds / read noise are in units of its largest "
                                    f"initial |value|, which is {scale!r}; give absolute values (relative=false)")
            lo, hi = self._range(scale)
            dw0 = self.pulses.dw_min * (hi - lo) if self.pulses is not None else 0.0
            n_cells = 2 if self.pair is not None else 1
            cells = tuple(self._sample_cell(a64.shape, lo, hi, dw0, rng) for _ in range(n_cells))
            pair = tuple(np.zeros(a64.shape) for _ in range(2)) if self.pair is not None else ()
            leaves.append(LeafState(scale, dw0, cells, pair))
        return self.program(theta0, DeviceState(tuple(leaves)))

    @staticmethod
    def _check_arrays(arrays, n: int) -> set:
        if arrays is None:
            return set(range(n))
        chosen = [int(i) for i in arrays]
        if any(not 0 <= i < n for i in chosen) or len(set(chosen)) != len(chosen):
            raise PhysgradError(f"arrays must be distinct indices in 0..{n - 1}, got {list(arrays)}")
        return set(chosen)

    def _range(self, scale: float) -> tuple:
        if self.bounds is None:
            return -np.inf, np.inf
        k = scale if self.bounds.relative else 1.0
        return self.bounds.g_min * k, self.bounds.g_max * k

    def _sample_cell(self, shape, lo: float, hi: float, dw0: float, rng) -> Cell:
        v = self.variability or Variability()
        g_min, g_max = np.array(lo), np.array(hi)
        if v.bounds > 0:
            g_max = hi * np.maximum(1.0 + v.bounds * rng.standard_normal(shape), 0.0)
            g_min = lo * np.maximum(1.0 + v.bounds * rng.standard_normal(shape), 0.0)
            g_min, g_max = np.minimum(g_min, g_max), np.maximum(g_min, g_max)
        step_up = step_down = np.array(0.0)
        if self.pulses is not None:
            s = np.maximum(1.0 + v.dw_min * rng.standard_normal(shape), 0.0) if v.dw_min > 0 else np.array(1.0)
            a = self.pulses.up_down + (v.up_down * rng.standard_normal(shape) if v.up_down > 0 else 0.0)
            step_up = np.maximum(dw0 * s * (1.0 + a), 0.0)
            step_down = np.maximum(dw0 * s * (1.0 - a), 0.0)
        nu, t_prog = np.array(0.0), np.array(0.0)
        if self.drift is not None:
            nu = np.array(self.drift.nu)
            if self.drift.nu_std > 0:
                nu = np.maximum(self.drift.nu + self.drift.nu_std * rng.standard_normal(shape), 0.0)
            t_prog = np.zeros(shape)
        index, value = np.zeros(0, dtype=np.int64), np.zeros(0)
        if self.stuck is not None and self.stuck.fraction > 0:
            index = np.flatnonzero(rng.random(shape) < self.stuck.fraction).astype(np.int64)
            lo_i = np.broadcast_to(g_min, shape).ravel()[index]
            hi_i = np.broadcast_to(g_max, shape).ravel()[index]
            value = {"min": lo_i, "max": hi_i}.get(self.stuck.at)
            if value is None:
                value = lo_i + rng.random(index.size) * (hi_i - lo_i)
            value = np.array(value, dtype=float)
        return Cell(g_min, g_max, np.asarray(step_up, float), np.asarray(step_down, float), np.asarray(nu, float),
                    t_prog, index, value)

    def program(self, theta, state: DeviceState) -> tuple:
        """Write ``theta`` onto the devices as closely as they allow (write-verify).

        Each value is clipped to its device's bounds and, for constant-step pulsed devices, set to
        the nearest level :math:`g_{\\min,i} + k\\Delta_0`; stuck devices keep their value; a pair
        puts ``|w|`` on one device above the other's ``g_min``. Every device's clock restarts.

        Returns
        -------
        (theta, DeviceState)
            The programmed values (each array in its own dtype) and the new state.
        """
        items, is_tuple = _split(theta)
        self._check_state(state, len(items))
        if self.is_ideal:
            return theta, state
        out, leaves = list(items), []
        for i, (a, leaf) in enumerate(zip(items, state.leaves)):
            if leaf is None:
                leaves.append(None)
                continue
            t = np.asarray(a, dtype=float)
            if leaf.pair:
                gp, gm = self._program_pair(leaf, t)
                out[i] = (gp - gm).astype(np.asarray(a).dtype)
                leaf = replace(leaf, pair=(gp, gm))
            else:
                out[i] = self._program_cell(leaf.cells[0], t, leaf.dw0).astype(np.asarray(a).dtype)
            leaves.append(replace(leaf, cells=tuple(self._restart(c, state.clock) for c in leaf.cells)))
        return _join(out, is_tuple), state.with_leaves(leaves)

    def _program_cell(self, cell: Cell, target: np.ndarray, dw0: float) -> np.ndarray:
        g = np.clip(target, cell.g_min, cell.g_max)
        if self.pulses is not None and isinstance(self.pulses.law, ConstantStep):
            top = np.floor((cell.g_max - cell.g_min) / dw0 + 1e-9)
            g = cell.g_min + dw0 * np.clip(np.rint((g - cell.g_min) / dw0), 0.0, top)
        return self._hold_stuck(cell, g)

    def _program_pair(self, leaf: LeafState, w: np.ndarray) -> tuple:
        cp, cm = leaf.cells
        floor_p = self._program_cell(cp, np.broadcast_to(cp.g_min, w.shape), leaf.dw0)
        floor_m = self._program_cell(cm, np.broadcast_to(cm.g_min, w.shape), leaf.dw0)
        gp = self._program_cell(cp, np.where(w >= 0, floor_m + w, floor_p), leaf.dw0)
        gm = self._program_cell(cm, np.where(w < 0, floor_p - w, floor_m), leaf.dw0)
        return gp, gm

    @staticmethod
    def _hold_stuck(cell: Cell, g: np.ndarray) -> np.ndarray:
        if cell.stuck_index.size:
            g = np.array(g, dtype=float)
            g.flat[cell.stuck_index] = cell.stuck_value
        return g

    def _restart(self, cell: Cell, clock: float) -> Cell:
        if self.drift is None:
            return cell
        return replace(cell, t_prog=np.full(np.shape(cell.t_prog), clock))

    def _check_state(self, state: DeviceState, n: int) -> None:
        if not isinstance(state, DeviceState) or len(state.leaves) != n:
            raise PhysgradError(f"state must be the DeviceState of a theta with {n} arrays (from Device.init)")

    # --- update ---------------------------------------------------------------------------------
    def update(self, theta, dtheta, rng: np.random.Generator, state: DeviceState) -> tuple:
        """Apply the optimiser's requested change ``dtheta`` (same structure as ``theta``).

        Per device array: the request becomes pulses (:class:`~physgrad.devices.pieces.Pulses`)
        or a continuous change, starting from the drifted conductance of each device that moves;
        the result is clipped to the device's bounds, stuck devices keep their value, moved devices
        restart their drift clock; a pair pulses ``G+`` for positive requests and ``G-`` for negative
        ones and is refreshed every ``refresh_every`` updates. Arrays that are not devices get
        ``theta + dtheta``. Then the device clock advances by ``drift.seconds_per_update``.

        Parameters
        ----------
        theta : array or tuple of arrays
            Current parameters (as the device last delivered them).
        dtheta : like theta
            Requested change (S).
        rng : int or numpy Generator
            The update's key, ``update_key(seed, state.n_updates)``
            (:func:`physgrad.devices.state.update_key`), or a generator (one 64-bit key is drawn from it).
            Array ``i`` draws from the counter-based streams of ``array_key(key, i, side)``
            (:mod:`physgrad.devices.streams`; ``side`` 0, or +-1 for the two devices of a pair).
        state : DeviceState

        Returns
        -------
        (theta, DeviceState)
            New parameters (each array in its own dtype) and state (``n_updates`` + 1). The ideal
            device returns ``theta + dtheta`` computed leaf-wise, drawing nothing.

        Raises
        ------
        PhysgradError
            A request holding NaN or inf (a diverged learning rule), naming the parameter array;
            nothing is drawn or changed. Each array is updated in one pass by
            :func:`physgrad.devices.pulsing.move` (compiled with numba when installed).
        """
        items, is_tuple = _split(theta)
        deltas, _ = _split(dtheta)
        self._check_state(state, len(items))
        if len(deltas) != len(items) or any(np.shape(a) != np.shape(d) for a, d in zip(items, deltas)):
            raise PhysgradError("dtheta must have the structure and shapes of theta")
        n_next = state.n_updates + 1
        if self.is_ideal:
            return _join([a + d for a, d in zip(items, deltas)], is_tuple), state.with_leaves(state.leaves, n_updates=n_next)
        clock = state.clock
        key = pulsing.base_key(rng)
        out, leaves = [], []
        for i, (a, d, leaf) in enumerate(zip(items, deltas, state.leaves)):
            if leaf is None:
                out.append(a + d)
                leaves.append(None)
                continue
            a, d = np.asarray(a), np.asarray(d)
            if a.dtype.kind != "f" or d.dtype.kind != "f":
                raise PhysgradError(f"device update: parameter array {i} and its change must be float arrays, got "
                                    f"{a.dtype} and {d.dtype}")
            try:
                if leaf.pair:
                    (gp, cp), (gm, cm) = (self._move(c, g, d, leaf.dw0, array_key(key, i, s), clock, side=s)
                                          for c, g, s in zip(leaf.cells, leaf.pair, (1, -1)))
                    leaf = replace(leaf, cells=(cp, cm), pair=(gp, gm))
                    if self.pair.refresh_every is not None and n_next % self.pair.refresh_every == 0:
                        gp, gm = self._program_pair(leaf, gp - gm)
                        leaf = replace(leaf, cells=tuple(self._restart(c, clock) for c in leaf.cells), pair=(gp, gm))
                    out.append((gp - gm).astype(a.dtype))
                else:
                    g, cell = self._move(leaf.cells[0], a, d, leaf.dw0, array_key(key, i), clock, dtype=a.dtype)
                    leaf = replace(leaf, cells=(cell,))
                    out.append(g)
            except PhysgradError as err:
                raise PhysgradError(f"parameter array {i}: {err}") from None
            leaves.append(leaf)
        tick = self.drift.seconds_per_update if self.drift is not None else 0.0
        return _join(out, is_tuple), state.with_leaves(leaves, clock=clock + tick, n_updates=n_next)

    @property
    def updates_in_place(self) -> bool:
        """Whether :meth:`update_in_place` applies: a non-ideal device without drift (no clocks to
        restart) and without pairs."""
        return not self.is_ideal and self.drift is None and self.pair is None

    @property
    def update_draws(self) -> bool:
        """Whether an update draws random numbers (stochastic rounding or cycle-to-cycle noise)."""
        p = self.pulses
        return p is not None and (p.rounding == "stochastic" or p.c2c > 0)

    def update_in_place(self, theta, values, rng: Optional[np.random.Generator], state: DeviceState,
                        first: int = 0) -> DeviceState:
        """:meth:`update` with ``dtheta = values - theta``, written in place into both ``theta``'s and
        ``values``' arrays (afterwards both hold the delivered conductances; arrays that are not devices
        take ``values``), visiting only the rows that changed
        (:func:`physgrad.devices.pulsing.move_in_place`): the same numbers bit for bit, the same draws.

        Parameters
        ----------
        theta, values : tuples of C-contiguous float arrays, the same shapes and dtypes
            The devices' conductances and the optimiser's new values (S); modified in place.
        rng : int, numpy Generator, or None when :attr:`update_draws` is False
            As in :meth:`update` (the same key gives the same numbers).
        state : DeviceState
        first : int
            ``theta`` and ``values`` are the arrays ``first, first + 1, ...`` of the parameters; those
            before were delivered elsewhere in this update (the compiled C-EP kernel's pass over
            ``W1``, :func:`physgrad.layered.kernels.numba_cpu.cep_step`).

        Returns
        -------
        DeviceState
            ``n_updates`` + 1 (no drift: the clock stays).

        Raises
        ------
        PhysgradError
            A device with drift or pairs (:attr:`updates_in_place` False); a non-finite value, naming the
            array (arrays before it are already updated).
        """
        if not self.updates_in_place:
            raise PhysgradError(f"device {self.label!r}: update_in_place needs a device without drift and pairs; "
                                f"use update")
        items, _ = _split(theta)
        new, _ = _split(values)
        self._check_state(state, len(items) + first)
        if len(new) != len(items):
            raise PhysgradError("values must have the structure of theta")
        plan = self.__dict__.get("_plan")
        if plan is None:  # kept on the (frozen) device: plan() hashes its pieces
            plan = self.__dict__["_plan"] = pulsing.plan(self.pulses, self.drift)
        if self.update_draws and rng is None:
            raise PhysgradError(f"device {self.label!r}: update_in_place: this device draws random numbers; give it a "
                                f"key or a generator")
        key = pulsing.base_key(rng) if self.update_draws else None
        for i, (a, v, leaf) in enumerate(zip(items, new, state.leaves[first:]), start=first):
            if leaf is None:
                if a is not v:
                    np.copyto(a, v)
                continue
            try:
                pulsing.move_in_place(plan, leaf.cells[0], a, v, leaf.dw0, None if key is None else array_key(key, i))
            except PhysgradError as err:
                raise PhysgradError(f"parameter array {i}: {err}") from None
        return state.with_leaves(state.leaves, n_updates=state.n_updates + 1)

    def _move(self, cell: Cell, g, delta, dw0: float, rng, clock: float, side: int = 0, dtype=None) -> tuple:
        """One array of devices asked to change by ``delta`` (S): ``(new g, new cell)``
        (:func:`physgrad.devices.pulsing.move`, then stuck devices held)."""
        g, t_prog = pulsing.move(pulsing.plan(self.pulses, self.drift), cell, g, delta, dw0, rng, clock, side=side,
                                 dtype=dtype)
        if cell.stuck_index.size:
            g.flat[cell.stuck_index] = cell.stuck_value
        if t_prog is not None:
            cell = replace(cell, t_prog=t_prog)
        return g, cell

    def _drift_factor(self, cell: Cell, clock: float) -> np.ndarray:
        """:math:`((t_0 + \\text{clock} - t_\\mathrm{prog}) / t_0)^{-\\nu}` per device."""
        t0 = self.drift.t0
        return ((t0 + clock - cell.t_prog) / t0) ** (-cell.nu)

    # --- read -----------------------------------------------------------------------------------
    def read(self, theta, rng: Optional[np.random.Generator], state: DeviceState):
        """The conductances a circuit sees now: drift then read noise (one draw per device).

        Devices with bounds (physical conductances) read at least 0 S; a pair reads
        ``read(G+) - read(G-)``. Arrays that are not devices are returned as they are.

        Parameters
        ----------
        theta : array or tuple of arrays
        rng : numpy Generator, or None when the device has no read noise
            E.g. ``device_rng(seed, "read", step, example, phase)``.
        state : DeviceState

        Returns
        -------
        array or tuple of arrays
            ``theta`` itself (the same objects) when :attr:`reads_ideally`.
        """
        if self.reads_ideally:
            return theta
        items, is_tuple = _split(theta)
        self._check_state(state, len(items))
        if self.read_noise is not None and self.read_noise.sigma > 0 and rng is None:
            raise PhysgradError("read needs a random generator: the device has read noise")
        out = list(items)
        rn = self.read_noise
        sigma = rn.sigma if rn is not None else 0.0
        for i, (a, leaf) in enumerate(zip(items, state.leaves)):
            if leaf is None:
                continue
            gs = leaf.pair if leaf.pair else (a,)
            factors = tuple(self._drift_factor_of(state, i, j) for j in range(len(gs)))
            out[i] = pulsing.read_pair_or_cell(gs, factors, sigma, rn is None or rn.relative,
                                               sigma * leaf.scale, self.bounds is not None, rng, np.asarray(a).dtype)
        return _join(out, is_tuple)

    def _drift_factor_of(self, state: DeviceState, i: int, j: int):
        """The drift factor of cell ``j`` of leaf ``i`` at ``state.clock`` (None without drift), computed
        once per state (a state is immutable; reads between two updates share it)."""
        if self.drift is None:
            return None
        cache = state.__dict__.setdefault("_drift_factors", {})
        key = (self.drift, i, j)
        if key not in cache:
            cache[key] = np.asarray(self._drift_factor(state.leaves[i].cells[j], state.clock), dtype=float)
        return cache[key]

    def advance(self, state: DeviceState, seconds: float) -> DeviceState:
        """The state ``seconds`` later (drift continues; nothing else changes)."""
        if not (float(seconds) >= 0):
            raise PhysgradError(f"seconds must be >= 0, got {seconds!r}")
        return state.with_leaves(state.leaves, clock=state.clock + float(seconds))

    def pieces(self) -> dict:
        """The non-empty slots, ``{slot: piece}``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in PIECES and getattr(self, f.name) is not None}

r"""Batched exact block coordinate descent for layered energies.

Each block is a whole layer: with all other layers fixed the energy is a separable convex quadratic
in that layer, so its exact minimiser (the energy's ``block_solve``: a conductance-weighted mean,
clipped to the diode bounds) is computed for the whole batch at once. Layers that are not adjacent
do not interact, so a *sweep* can update several layers together:

- ``"asynchronous"`` (the authors' default): first the even-indexed free layers (1st, 3rd, ...), then
  the odd-indexed ones (2nd, 4th, ...), each group computed from the state left by the previous group;
- ``"synchronous"``: every layer from the old state (a Jacobi sweep; not monotone in general);
- ``"forward"`` / ``"backward"``: one layer at a time, input to output / output to input.

Every update of a Gauss-Seidel-type schedule lowers the energy, and because the problem is convex
(DRN) with a unique minimiser the iterates converge to it; the DHN energy is only block-convex.

References
----------
B. Scellier et al., "Fast algorithm to simulate nonlinear resistive networks", ICML 2024, Alg. 1.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Optional, get_args

import autograd.numpy as anp
import numpy as np
from autograd.builtins import tuple as atuple

from physgrad.types import FREE, ChecksNudge, ChecksState, Equilibrium, Nudge, PhysgradError, SplitsParameters
from physgrad.minimizers.loop import iterate

Schedule = Literal["asynchronous", "synchronous", "forward", "backward"]
SCHEDULES = get_args(Schedule)
_REQUIRED = ("block_solve", "energy", "outputs", "n_layers", "sizes", "input_layer")


def layer_groups(n_layers: int, schedule: Schedule) -> list:
    """Free-layer indices (1..L) updated together, in order, during one sweep.

    Returns
    -------
    list of list of int
        E.g. ``[[1, 3], [2]]`` for three free layers and ``"asynchronous"`` (the one definition of
        the schedules: every layered kernel takes its groups from here).
    """
    free = list(range(1, n_layers + 1))
    if schedule == "asynchronous":
        return [g for g in (free[0::2], free[1::2]) if g]
    if schedule == "synchronous":
        return [free]
    if schedule == "forward":
        return [[k] for k in free]
    if schedule == "backward":
        return [[k] for k in reversed(free)]
    raise PhysgradError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def _clamped(state, nudge: Nudge):
    """The state with the outputs replaced by the clamp values (traceable)."""
    if nudge.clamp is None:
        return state
    out = anp.broadcast_to(nudge.clamp, anp.shape(state[-1]))
    return tuple(state[:-1]) + (out,)


@dataclass(frozen=True)
class BlockCoordinateDescent:
    """Exact layer-wise coordinate descent, batched.

    Parameters
    ----------
    sweeps : int
        Maximum number of sweeps (exactly this many when ``tol`` is None).
    schedule : {"asynchronous", "synchronous", "forward", "backward"}
    tol : float, optional
        Stop once a sweep changes no unit by more than ``tol`` (V); ``None`` runs all ``sweeps``
        (the papers' fixed budget; the result then has status ``"max_iter"`` unless a sweep left
        the state exactly unchanged).

    Notes
    -----
    ``minimize`` returns an :class:`Equilibrium` whose ``energy`` is the per-sample minimised
    function ``E + beta C`` (``(batch,)``) and ``residual`` the largest change of the last sweep
    (V). With a clamp nudge the outputs are held at the clamp values.
    """

    sweeps: int = 1000
    schedule: Schedule = "asynchronous"
    tol: Optional[float] = 1e-10

    def __post_init__(self):
        if isinstance(self.sweeps, bool) or int(self.sweeps) != self.sweeps or self.sweeps < 1:
            raise PhysgradError(f"sweeps must be an integer >= 1, got {self.sweeps!r}")
        layer_groups(2, self.schedule)
        if self.tol is not None and not (float(self.tol) >= 0):
            raise PhysgradError(f"tol must be >= 0 or None, got {self.tol!r}")

    @property
    def name(self) -> str:
        return f"block({self.schedule})"

    def accepts(self, energy) -> None:
        """Raise :class:`PhysgradError` naming what ``energy`` lacks for block coordinate descent."""
        missing = [m for m in _REQUIRED if not hasattr(energy, m)]
        if missing:
            raise PhysgradError(f"{type(energy).__name__} cannot be minimised by block coordinate descent: "
                                f"it has no {', '.join(missing)} (a layered energy is needed)")

    def step(self, energy, theta, x, s, nudge: Nudge = FREE):
        """One sweep from state ``s`` (pure, traceable by autograd)."""
        s = _clamped(tuple(s), nudge)
        L = energy.n_layers
        skip_out = nudge.clamp is not None
        for group in layer_groups(L, self.schedule):
            new = {k: energy.block_solve(k, s, theta, x, nudge) for k in group if not (skip_out and k == L)}
            s = tuple(new.get(k, s[k - 1]) for k in range(1, L + 1))
        return atuple(s)  # a traceable tuple (autograd can differentiate a tuple-valued step)

    def minimize(self, energy, theta, x, *, nudge: Nudge = FREE, s0=None) -> Equilibrium:
        """Relax ``s0`` (default: zeros) to the minimum of ``E + beta C`` (or with clamped outputs)."""
        self.accepts(energy)
        t0 = time.perf_counter()
        x = np.asarray(x, dtype=float) if not isinstance(x, np.ndarray) else x
        B = np.shape(energy.input_layer(x))[0]
        if isinstance(energy, SplitsParameters):
            energy.split(theta)
        for t in (theta if isinstance(theta, (tuple, list)) else (theta,)):
            if not np.all(np.isfinite(t)):
                raise PhysgradError("theta contains NaN or inf")
        if nudge.beta != 0.0:
            y = np.asarray(nudge.target, dtype=float)
            if y.shape[-1] != energy.n_outputs or y.ndim > 2 or (y.ndim == 2 and y.shape[0] not in (1, B)):
                raise PhysgradError(f"nudge target shape {y.shape} does not match ({B}, {energy.n_outputs})")
            if isinstance(energy, ChecksNudge):
                energy.check_nudge(theta, nudge)
        if nudge.clamp is not None:
            c = np.asarray(nudge.clamp, dtype=float)
            if c.shape[-1] != energy.n_outputs:
                raise PhysgradError(f"clamp shape {c.shape} does not match {energy.n_outputs} outputs")
        if s0 is None:
            dtype = np.result_type(*[np.asarray(t).dtype for t in theta]) if isinstance(theta, (tuple, list)) else float
            s = tuple(np.zeros((B, n), dtype=dtype) for n in energy.sizes[1:])
        else:
            s = energy.check_state(tuple(np.asarray(a) for a in s0), B) if isinstance(energy, ChecksState) else tuple(s0)
            if not all(np.all(np.isfinite(a)) for a in s):
                raise PhysgradError("s0 contains NaN or inf")
        s = _clamped(s, nudge)
        s, status, n, residual, message = iterate(lambda s: self.step(energy, theta, x, s, nudge), s,
                                                  self.sweeps, self.tol, "sweeps")
        E = energy.energy(s, theta, x)
        if nudge.beta != 0.0:
            E = E + nudge.beta * 0.5 * np.sum((energy.outputs(s) - nudge.target) ** 2, axis=-1)
        return Equilibrium(state=tuple(np.asarray(a) for a in s), energy=np.asarray(E), status=status, n_iter=n, residual=residual,
                           solver=self.name, message=message,
                           info={"residual_kind": "max |s_t - s_(t-1)| over the last sweep (V)",
                                 "seconds": time.perf_counter() - t0})

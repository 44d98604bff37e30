r"""A deep Hopfield network on one memristor crossbar of differential pairs, trained by activity differences.

After Yi, Kendall, Williams and Kumar (Nature Electronics 2022): the weights live in a crossbar as
differential pairs :math:`w = (G_+ - G_-) / g_u`, the network relaxes by repeated vector-matrix
reads of the array while its free and nudged states are held digitally, and the update is the
activity difference of the two states (equilibrium propagation's positive variant,
:class:`physgrad.learning.ep.EquilibriumPropagation`), written into the devices by a
:class:`physgrad.devices.model.Device`.

Layout of one ``rows x cols`` crossbar (default 64 x 64): ``W_1`` (``n_inputs x hidden``) takes
rows ``0..n_inputs-1`` and ``2 hidden`` columns; ``W_2`` (``hidden x n_outputs``) rows
``0..hidden-1`` and the next ``2 n_outputs`` columns. 64 inputs, 22 hidden, 10 outputs fill the 64
columns exactly (3,536 of the 4,096 devices). Biases are held digitally (not in the array).

Energy model of one example (all assumptions are fields of :class:`CrossbarPhysics`):

- every read of a block drives its input lines at ``v_read`` times the activity (V) with the other
  lines at virtual ground, so the array dissipates :math:`P = \sum_{ij} (G^+_{ij} + G^-_{ij}) v_i^2`
  for the settling time :math:`t_s = k C / G_\mathrm{min}` (:func:`physgrad.circuit.power.settling_time`,
  :math:`G_\mathrm{min}` the smallest total conductance of a sensed line) and charges the driven
  lines' capacitance (:func:`physgrad.circuit.power.phase_energy`);
- reads per phase: one of ``W_1`` (its drive does not change within a phase) and, per sweep of the
  block coordinate descent, one backward read of ``W_2`` (outputs to hidden) and one forward read;
- programming: :func:`physgrad.devices.energy.programming_energy` on both devices of each pair;
- not counted: the peripheral circuits (DACs, ADCs, TIAs, the SRAM holding the states, control).

References
----------
S. Yi, J. D. Kendall, R. S. Williams, S. Kumar, "Activity-difference training of deep neural networks
using memristor crossbars", Nature Electronics 6, 45-51 (2023; online 2022).
B. Scellier and Y. Bengio, "Equilibrium propagation", Front. Comput. Neurosci. 11, 24 (2017).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from physgrad.circuit.power import NODE_CAPACITANCE, SETTLING_MULTIPLE, phase_energy, settling_time
from physgrad.devices.energy import WriteEnergy, programming_energy
from physgrad.devices.model import Device
from physgrad.devices.pieces import DifferentialPair
from physgrad.energies.layered import DeepHopfield
from physgrad.layered.data import DIGITS_CSV, read_digits
from physgrad.learning.ep import EquilibriumPropagation
from physgrad.minimizers.block import BlockCoordinateDescent
from physgrad.types import PhysgradError

def load_digits(path=DIGITS_CSV) -> tuple:
    """``(X, y)``: the 1797 8 x 8 digits scaled to [0, 1] (``(1797, 64)`` float64) and labels (int64)."""
    X, y = read_digits(path)
    return X / 16.0, y


@dataclass(frozen=True)
class CrossbarLayout:
    """Sizes of the network and of the one crossbar that holds it (differential pairs)."""

    n_inputs: int = 64
    hidden: int = 22
    n_outputs: int = 10
    rows: int = 64
    cols: int = 64

    def __post_init__(self):
        if self.n_inputs > self.rows or self.hidden > self.rows or 2 * (self.hidden + self.n_outputs) > self.cols:
            raise PhysgradError(f"a {self.n_inputs}-{self.hidden}-{self.n_outputs} network does not fit a "
                                f"{self.rows} x {self.cols} crossbar of differential pairs (needs "
                                f"{max(self.n_inputs, self.hidden)} rows and {2 * (self.hidden + self.n_outputs)} columns)")

    @property
    def devices_used(self) -> int:
        return 2 * (self.n_inputs * self.hidden + self.hidden * self.n_outputs)

    def energy(self) -> DeepHopfield:
        return DeepHopfield(self.n_inputs, (self.hidden,), self.n_outputs)


@dataclass(frozen=True)
class CrossbarPhysics:
    """Assumed electrical figures of the array (every one is named in the experiment's report).

    Parameters
    ----------
    g_max : float, S -- conductance of a device at the top of its range (``2 g_ref`` of the device model)
    v_read : float, V -- read voltage for an activity of 1
    node_capacitance : float, F -- capacitance of each line
    settling_multiple : float -- settling time in RC time constants
    write : WriteEnergy -- programming pulses
    """

    g_max: float = 100e-6
    v_read: float = 0.2
    node_capacitance: float = NODE_CAPACITANCE
    settling_multiple: float = SETTLING_MULTIPLE
    write: WriteEnergy = field(default_factory=WriteEnergy)


PAIR_REFRESH = 50
"""Updates between two refreshes of a crossbar preset's differential pairs (reprogramming ``G+ - G-``
from a low common level, so that potentiation-only pairs do not saturate); the experiment's choice
(reports/experiments/crossbar-hopfield), not a figure of Yi et al."""


def crossbar_device(device: Device, refresh_every: Optional[int] = None) -> Device:
    """``device`` with each weight a differential pair (signed weights) refreshed every
    ``refresh_every`` updates (None: never), unless it is ideal or has a pair already."""
    if device.is_ideal or device.pair is not None:
        return device
    return replace(device, pair=DifferentialPair(refresh_every=refresh_every))


def pair_conductances(w: np.ndarray, leaf, unit: float) -> tuple:
    """``(G+, G-)`` in S of one weight array: the device model's pair if it has one, else the ideal
    split ``G+ = max(w, 0)``, ``G- = max(-w, 0)``; ``unit`` S per weight unit."""
    if leaf is not None and leaf.pair:
        gp, gm = leaf.pair
        return np.asarray(gp) * unit, np.asarray(gm) * unit
    return np.maximum(w, 0.0) * unit, np.maximum(-w, 0.0) * unit


def read_energy(g_sum: np.ndarray, v_drive: np.ndarray, axis: int, phys: CrossbarPhysics):
    r"""Energy (J) of one read of a block: ``g_sum`` (rows x cols, S) = :math:`G_+ + G_-`, lines along
    ``axis`` (0: rows) driven at ``v_drive`` (V; one example ``(n,)`` gives a float, a batch
    ``(batch, n)`` one energy per example), the others at virtual ground."""
    v = np.asarray(v_drive, dtype=float)
    v2 = v ** 2
    power = v2 @ g_sum.sum(axis=1) if axis == 0 else v2 @ g_sum.sum(axis=0)
    sensed = g_sum.sum(axis=axis)
    g_min = float(np.min(sensed[sensed > 0])) if np.any(sensed > 0) else 0.0
    if g_min <= 0:
        return 0.0 if v.ndim == 1 else np.zeros(len(v))
    t_s = settling_time(phys.node_capacitance, g_min, phys.settling_multiple)
    return phase_energy(power, t_s, phys.node_capacitance, v)


def crossbar_units(theta0, phys: CrossbarPhysics, n_arrays: int = 2) -> tuple:
    """S per weight unit of each device array: the device range ``[0, 2 g_ref]`` (``g_ref`` the
    array's largest absolute initial weight, :attr:`physgrad.devices.state.LeafState.scale`) spans
    ``[0, g_max]``."""
    return tuple(phys.g_max / (2.0 * float(np.max(np.abs(np.asarray(theta0[i], float))))) for i in range(n_arrays))


def phase_read_energy(conductances, x, state, n_sweeps: int, phys: CrossbarPhysics) -> np.ndarray:
    """Energy (J) per example of one relaxation phase on the crossbar: a ``W_1`` read driven by the
    inputs ``x`` (batch, n_in) plus ``n_sweeps`` backward (outputs to hidden) and forward ``W_2``
    reads at the phase's final state ``(h, o)``; ``conductances`` ``((G1+, G1-), (G2+, G2-))`` in S."""
    (g1p, g1m), (g2p, g2m) = conductances
    g1, g2 = g1p + g1m, g2p + g2m
    v = phys.v_read
    h, o = (np.asarray(a, dtype=float) for a in state)
    x = np.asarray(x, dtype=float)
    return read_energy(g1, v * x, 0, phys) + n_sweeps * (read_energy(g2, v * h, 0, phys)
                                                         + read_energy(g2, v * np.abs(o), 1, phys))


@dataclass
class CrossbarTrainer:
    """Activity-difference training of a :class:`CrossbarLayout` network with a device model.

    ``theta = (W_1, W_2, b_1, b_2)``; ``W_1``, ``W_2`` are device arrays, the biases digital.
    """

    layout: CrossbarLayout
    device: Device
    phys: CrossbarPhysics
    beta: float = 0.5
    lr: tuple = (0.1, 0.05)
    minimizer: BlockCoordinateDescent = field(default_factory=lambda: BlockCoordinateDescent(sweeps=200, tol=1e-6))
    seed: int = 0
    theta: tuple = None
    state: object = None
    units: tuple = None
    energy_log: list = field(default_factory=list)

    def __post_init__(self):
        self.energy_fn = self.layout.energy()
        self.rule = EquilibriumPropagation(beta=self.beta, variant="positive", strict=False)
        rng = np.random.default_rng(self.seed)
        theta0 = self.energy_fn.init_theta(rng)
        self.rng = np.random.default_rng([self.seed, 1])
        self.theta, self.state = self.device.init(theta0, self.rng, arrays=(0, 1))
        # S per weight unit: the top of each array's device range is g_max.
        self.units = crossbar_units(theta0, self.phys)

    def _leaf(self, i):
        return None if self.state is None or self.state.leaves[i] is None else self.state.leaves[i]

    def conductances(self) -> tuple:
        """``((G1+, G1-), (G2+, G2-))`` in S."""
        return tuple(pair_conductances(np.asarray(self.theta[i], float), self._leaf(i), self.units[i]) for i in range(2))

    def phase_read_energy(self, x, state, n_sweeps: int) -> np.ndarray:
        """Energy (J) per example of one phase (:func:`phase_read_energy` at the current conductances)."""
        return phase_read_energy(self.conductances(), x, state, n_sweeps, self.phys)

    def step(self, x, y_onehot, account: bool = True) -> dict:
        """One activity-difference update on a batch; returns its energy record (J per example)."""
        phases = self.rule.phases(self.energy_fn, self.theta, x, y_onehot, self.minimizer)
        grads = self.rule.estimate_from_phases(self.energy_fn, self.theta, x, phases)
        lrs = (self.lr[0], self.lr[1], self.lr[0], self.lr[1])
        dtheta = tuple(-lr * g for lr, g in zip(lrs, grads))
        rec = {}
        if account:
            e_free = self.phase_read_energy(x, phases.free.state, phases.free.n_iter)
            e_nudge = self.phase_read_energy(x, phases.plus.state, phases.plus.n_iter)
            before = self.conductances()
        self.theta, self.state = self.device.update(self.theta, dtheta, self.rng, self.state)
        if account:
            after = self.conductances()
            e_prog = 0.0
            for i in range(2):
                leaf = self._leaf(i)
                step = leaf.dw0 * self.units[i] if leaf is not None and leaf.dw0 > 0 else 0.0
                if self.phys.write.pulsed and step <= 0:
                    continue  # no pulses defined (a continuous device): no pulsed write energy
                for gb, ga in zip(before[i], after[i]):
                    e_prog += programming_energy(gb, ga, self.phys.write, step)
            B = len(x)
            rec = {"read_free_J": float(np.mean(e_free)), "read_nudged_J": float(np.mean(e_nudge)),
                   "program_J": e_prog / B, "sweeps_free": int(phases.free.n_iter), "sweeps_nudged": int(phases.plus.n_iter)}
            self.energy_log.append(rec)
        return rec

    def predict(self, x) -> np.ndarray:
        eq = self.minimizer.minimize(self.energy_fn, self.theta, x)
        return np.argmax(self.energy_fn.outputs(eq.state), axis=1)


def one_hot(y, n: int = 10) -> np.ndarray:
    out = np.zeros((len(y), n))
    out[np.arange(len(y)), y] = 1.0
    return out


def train_crossbar(trainer: CrossbarTrainer, X, y, epochs: int, batch: int, seed: int = 0, account: bool = True) -> list:
    """Train for ``epochs`` over ``(X, y)`` in shuffled batches; returns the per-step energy records."""
    rng = np.random.default_rng([seed, 2])
    recs = []
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for i in range(0, len(X), batch):
            idx = order[i:i + batch]
            recs.append(trainer.step(X[idx], one_hot(y[idx], trainer.layout.n_outputs), account))
    return recs


def train_backprop(layout: CrossbarLayout, X, y, epochs: int, batch: int, lr: float = 0.1, seed: int = 0) -> tuple:
    """The same layer sizes as a feed-forward network (hard-sigmoid hidden, linear outputs, squared
    error) trained by backprop with SGD; same initialisation as the Hopfield network. Returns theta."""
    W1, W2, b1, b2 = (np.array(a, dtype=float) for a in layout.energy().init_theta(np.random.default_rng(seed)))
    rng = np.random.default_rng([seed, 2])
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for i in range(0, len(X), batch):
            idx = order[i:i + batch]
            x, t = X[idx], one_hot(y[idx], layout.n_outputs)
            a = x @ W1 + b1
            h = np.clip(a, 0.0, 1.0)
            o = h @ W2 + b2
            d_o = (o - t) / len(x)
            d_h = (d_o @ W2.T) * ((a > 0) & (a < 1))
            W2 -= lr * h.T @ d_o
            b2 -= lr * d_o.sum(0)
            W1 -= lr * x.T @ d_h
            b1 -= lr * d_h.sum(0)
    return W1, W2, b1, b2


def predict_backprop(theta, X) -> np.ndarray:
    W1, W2, b1, b2 = theta
    return np.argmax(np.clip(X @ W1 + b1, 0.0, 1.0) @ W2 + b2, axis=1)


def ep_step_flops(layout: CrossbarLayout, sweeps_free: float, sweeps_nudged: float) -> float:
    """FLOPs of one example's activity-difference step done digitally: per phase ``2 n_in h`` for the
    input drive, per sweep ``2 h o`` twice (hidden and output updates); the update
    ``2 (n_in h + h o)`` per phase-difference (two outer products and their difference)."""
    n, h, o = layout.n_inputs, layout.hidden, layout.n_outputs
    relax = 2 * (2 * n * h) + (sweeps_free + sweeps_nudged) * 2 * (2 * h * o)
    update = 3 * 2 * (n * h + h * o)
    return float(relax + update)


def backprop_step_flops(layout: CrossbarLayout) -> float:
    """FLOPs of one example's backprop step: forward ``2 W``, backward ``4 W`` (``W`` weights)."""
    w = layout.n_inputs * layout.hidden + layout.hidden * layout.n_outputs
    return 6.0 * w

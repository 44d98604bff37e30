r"""Programming energy of device updates: what writing the conductances a learning rule asks for costs.

Model (stated, per preset in :data:`WRITE_ENERGY`):

- **Pulsed devices.** A device moved by :math:`|\Delta G|` (S) took
  :math:`n = |\Delta G| / \Delta G_\mathrm{pulse}` programming pulses, :math:`\Delta G_\mathrm{pulse}`
  the nominal conductance step of one pulse (``dw_min`` times the device's range, in S). Each pulse
  dissipates the Joule heat of the write voltage across the device for the pulse width,

  .. math:: E_\mathrm{pulse} = V_w^2\, G\, t_w \quad \text{(J)},

  with :math:`G` the device's conductance (S) before the pulse, so a device's programming energy is
  :math:`n\, V_w^2 G t_w` and an update's energy the sum over devices. The count ``n`` is the
  expected (real-valued) count: stochastic pulse rounding is unbiased, and a soft-bounds device's
  step shrinks near its bounds (more pulses per siemens than counted here: an underestimate there).
  The driver circuits, the word/bit-line charging and the verify reads are not counted.
- **Continuous (ideal) devices.** ``joules_per_siemens`` times :math:`\sum |\Delta G|`; 0 by default
  (an ideal device has no stated write energy; a report must say so).

The figures are assumptions with their sources named in :attr:`WriteEnergy.source`; none of the
presets in :mod:`physgrad.devices.presets` comes with a measured write energy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from physgrad.types import PhysgradError


@dataclass(frozen=True)
class WriteEnergy:
    """How much one programming pulse (or one siemens of change) costs.

    Parameters
    ----------
    v_write : float, V
        Amplitude of a programming pulse across the device (0: not a pulsed device).
    t_write : float, s
        Width of a programming pulse.
    joules_per_siemens : float, J/S
        Energy per siemens of :math:`|\\Delta G|` for continuous (non-pulsed) devices.
    source : str
        Where the figures come from (or that they are assumptions).
    """

    v_write: float = 0.0
    t_write: float = 0.0
    joules_per_siemens: float = 0.0
    source: str = "none stated"

    def __post_init__(self):
        for name in ("v_write", "t_write", "joules_per_siemens"):
            v = float(getattr(self, name))
            if not (np.isfinite(v) and v >= 0):
                raise PhysgradError(f"WriteEnergy.{name} must be a finite number >= 0, got {v!r}")
            object.__setattr__(self, name, v)

    @property
    def pulsed(self) -> bool:
        return self.v_write > 0 and self.t_write > 0

    @property
    def stated(self) -> bool:
        """Whether the model states a write energy at all (pulses or J/S); metrics leave the
        programming-energy column empty when it does not, rather than report 0 J."""
        return self.pulsed or self.joules_per_siemens > 0

    def pulse_energy(self, g):
        """:math:`V_w^2 G t_w` (J) for a device of conductance ``g`` (S, any shape)."""
        return self.v_write ** 2 * np.asarray(g, dtype=float) * self.t_write


TAOX_WRITE = WriteEnergy(
    v_write=1.0, t_write=100e-9,
    source=("assumption: 1 V, 100 ns pulses (1T1R oxide ReRAM is programmed with ~0.5-2 V pulses of "
            "~10 ns-1 us); not a figure of the Yi et al. 2022 paper or of aihwkit's presets, which state none"))
"""The write-pulse assumption used for the ReRAM presets and the crossbar experiment."""

WRITE_ENERGY = {
    "ideal": WriteEnergy(source="ideal device: no write energy stated (0 J)"),
    "reram-sb": TAOX_WRITE,
    "reram-es": TAOX_WRITE,
    "digipot128": WriteEnergy(source="digital potentiometer: tap changes cost the CMOS logic, not counted (0 J)"),
    "pcm-pair": WriteEnergy(v_write=1.5, t_write=50e-9,
                            source="assumption: 1.5 V, 50 ns SET pulses (PCM partial-SET pulses are ~1-2 V, "
                                   "~10-100 ns; Nandakumar et al. 2018 do not state energies)"),
}
"""Write-energy model of each named preset (``levels{N}-*`` presets: 0, like ``ideal``)."""


def write_energy_of(name: str) -> WriteEnergy:
    """The :class:`WriteEnergy` of preset ``name`` (0 J for ``levels{N}-*`` and unknown file devices)."""
    return WRITE_ENERGY.get(str(name), WriteEnergy(source=f"{name}: no write energy stated (0 J)"))


def pulse_counts(g_before, g_after, pulse_step: float):
    r"""Expected pulse counts :math:`|\Delta G| / \Delta G_\mathrm{pulse}` per device (real-valued).

    Parameters
    ----------
    g_before, g_after : arrays of the same shape, S
    pulse_step : float, S -- nominal conductance change of one pulse (> 0)
    """
    if not (pulse_step > 0 and np.isfinite(pulse_step)):
        raise PhysgradError(f"pulse_step must be a finite number > 0 S, got {pulse_step!r}")
    return np.abs(np.asarray(g_after, dtype=float) - np.asarray(g_before, dtype=float)) / pulse_step


def programming_energy(g_before, g_after, write: WriteEnergy, pulse_step: float = 0.0) -> float:
    r"""Energy (J) to program devices from ``g_before`` to ``g_after`` (S, same shapes).

    Pulsed (``write.pulsed``): :math:`\sum_d n_d V_w^2 G_d t_w` with
    :math:`n_d = |\Delta G_d| / \Delta G_\mathrm{pulse}` (``pulse_step``, S) and :math:`G_d` the conductance
    before the update. Otherwise :math:`\text{joules\_per\_siemens} \cdot \sum_d |\Delta G_d|`.
    """
    gb = np.asarray(g_before, dtype=float)
    ga = np.asarray(g_after, dtype=float)
    if gb.shape != ga.shape:
        raise PhysgradError(f"g_before {gb.shape} and g_after {ga.shape} must have the same shape")
    if write.pulsed:
        return float(np.sum(pulse_counts(gb, ga, pulse_step) * write.pulse_energy(gb)))
    return float(write.joules_per_siemens * np.sum(np.abs(ga - gb)))


def leaf_programming_energy(write: WriteEnergy, w_before, w_after, leaf_before=None, leaf_after=None,
                            unit: float = 1.0) -> Optional[float]:
    r"""Energy (J) of one parameter array's update as its devices deliver it, or None when unknown.

    ``w_before``, ``w_after``: the array's values before and after the update, ``unit`` S per
    unit of them (1 for arrays of conductances in S). ``leaf_before``, ``leaf_after``: its
    :class:`~physgrad.devices.state.LeafState` (None for an ideal device): a differential pair
    counts both devices (``leaf.pair``, its :math:`G_\pm` times ``unit``), a pulsed device
    :math:`|\Delta G| / (\Delta_0\, \text{unit})` pulses (``leaf.dw0``, :func:`programming_energy`).

    None (not 0) when ``write`` states no energy (:attr:`WriteEnergy.stated`), or asks for pulses
    of a device without a pulse step (``dw0 = 0``): a column left empty, not a number invented.
    """
    if not write.stated:
        return None
    step = float(leaf_before.dw0) * unit if leaf_before is not None else 0.0
    if write.pulsed and step <= 0:
        return None
    if leaf_before is not None and leaf_before.pair:
        pairs = zip(leaf_before.pair, leaf_after.pair)
    else:
        pairs = [(w_before, w_after)]
    return float(sum(programming_energy(np.asarray(b, float) * unit, np.asarray(a, float) * unit, write, step)
                     for b, a in pairs))

"""Device models: how non-ideal conductances (levels, bounds, pulse responses, noise, drift, faults,
compound cells) enter training. A device model depends on numpy and :mod:`physgrad.types` only (numba,
when installed, compiles its update), so every floor above it (energies, minimizers, learning rules,
engines, verification) can use it.

- :mod:`~physgrad.devices.pieces`: one frozen record per physical effect;
- :mod:`~physgrad.devices.model`: :class:`Device` (``init``, ``update``, ``read``, ``program``, ``advance``);
- :mod:`~physgrad.devices.pulsing`: the update and read of one array in one pass (compiled or numpy);
- :mod:`~physgrad.devices.reference`: the original per-pulse update, the tests' reference;
- :mod:`~physgrad.devices.state`: :class:`DeviceState` (checkpointable), :func:`device_rng`, :func:`update_key`;
- :mod:`~physgrad.devices.streams`: the counter-based random numbers of the updates;
- :mod:`~physgrad.devices.presets`: named presets, the JSON/TOML file form;
- :mod:`~physgrad.devices.readout`: :class:`ReadThrough`, any minimizer relaxing the energy at the
  conductances the device reads.
"""
from physgrad.devices.model import PIECES, Device
from physgrad.devices.pieces import (Bounds, ConstantStep, DifferentialPair, Drift, ExpStep, Pulses, ReadNoise,
                                     SoftBounds, Stuck, Variability)
from physgrad.devices.presets import (PRESET_NAMES, device_from_dict, device_from_spec, device_to_dict, get_device,
                                      load_device)
from physgrad.devices.readout import ReadThrough
from physgrad.devices.state import DeviceState, device_rng, update_key

__all__ = ["PIECES", "PRESET_NAMES", "Bounds", "ConstantStep", "Device", "DeviceState", "DifferentialPair", "Drift",
           "ExpStep", "Pulses", "ReadNoise", "ReadThrough", "SoftBounds", "Stuck", "Variability", "device_from_dict",
           "device_from_spec", "device_rng", "device_to_dict", "get_device", "load_device", "update_key"]

r"""Named device presets with values from the literature, and the file form of a device model.

``get_device(name)`` gives a preset, ``load_device(path)`` reads a JSON or TOML file,
``device_from_spec(text)`` takes either (what ``--device-model NAME|FILE`` will take).

Presets (conductances relative to each array's largest initial conductance :math:`g_\mathrm{ref}`):

=========================== ==================================================================
``ideal``                   no device effects (the default; bit-for-bit the plain optimiser)
``levels{N}-nearest``       ``N`` uniform levels on :math:`[0, 2 g_\mathrm{ref}]`, requests
                            rounded to the nearest level (``N`` from 2 to 65536, e.g. ``levels16-nearest``)
``levels{N}-stochastic``    the same levels, unbiased stochastic rounding
``digipot128``              128-tap digital potentiometer (Dillavou et al. 2022)
``reram-sb``                ReRAM, soft bounds (aihwkit ``ReRamSBPresetDevice``)
``reram-es``                ReRAM, exponential step (aihwkit ``ReRamESPresetDevice``)
``pcm-pair``                phase-change memory pair with refresh, drift and read noise
=========================== ==================================================================

File form (JSON or TOML; every table optional, unknown keys are errors)::

    name = "my-reram"
    base = "reram-sb"          # optional: start from a preset; the tables below replace its pieces
    [bounds]
    g_min = 0.05               # OFF-state leakage, x g_ref
    g_max = 2.0
    [pulses]
    dw_min = 0.01
    rounding = "stochastic"
    law = "soft_bounds"        # "constant", "soft_bounds", or a table {kind = "exp", A_up = ...}
    up_down = 0.1
    c2c = 0.5
    [read_noise]
    sigma = 0.02
    resample = "example"
    [drift]
    nu = 0.05
    [variability]
    dw_min = 0.3
    [stuck]
    fraction = 0.01
    at = "random"
    [pair]
    refresh_every = 100
"""
from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import fields
from pathlib import Path

from physgrad.devices.model import PIECES, Device
from physgrad.devices.pieces import (LAWS, Bounds, DifferentialPair, Drift, ExpStep, Pulses, ReadNoise, SoftBounds,
                                     Variability, short)
from physgrad.types import PhysgradError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

LEVELS = re.compile(r"^levels(\d+)-(nearest|stochastic)$")


def levels(n: int, rounding: str) -> Device:
    """``n`` uniform conductance levels on :math:`[0, 2 g_\\mathrm{ref}]` per array (the range of the issue's
    device probe: twice the array's largest initial conductance), constant steps, ``rounding``."""
    if not 2 <= int(n) <= 65536:
        raise PhysgradError(f"levels: the number of levels must be in 2..65536, got {n}")
    return Device(name=f"levels{int(n)}-{rounding}", bounds=Bounds(0.0, 2.0),
                  pulses=Pulses(dw_min=1.0 / (int(n) - 1), rounding=rounding))


def digipot128() -> Device:
    """128-tap digital potentiometer: 128 levels on :math:`[0, 2 g_\\mathrm{ref}]`, nearest tap.

    A potentiometer's taps are uniform in resistance, not conductance; this preset takes them
    uniform in conductance (the levels a 7-bit setting gives), which is what matters for the
    smallest possible update. No drift, no noise, no faults.

    References
    ----------
    S. Dillavou, M. Stern, A. J. Liu, D. J. Durian, "Demonstration of decentralized physics-driven
    learning", Phys. Rev. Applied 18, 014040 (2022) (edges are 128-step digital potentiometers).
    """
    return Device(name="digipot128", bounds=Bounds(0.0, 2.0), pulses=Pulses(dw_min=1.0 / 127, rounding="nearest"))


def reram_sb() -> Device:
    """ReRAM with soft bounds, after aihwkit's ``ReRamSBPresetDevice`` (a loose fit to Gong et al. 2018).

    aihwkit: ``dw_min = 0.002`` on a weight range of 2 (``w_min = -0.75``, ``w_max = 1.25``), so
    ``dw_min = 0.001`` of the range here (about 1000 states); ``dw_min_dtod = 0.3``,
    ``up_down_dtod = 0.01``, ``w_max_dtod = 0.3/1.25 = 0.24``, cycle-to-cycle ``dw_min_std = 3.75``
    (per pulse, relative to the step). Range :math:`[0, 2 g_\\mathrm{ref}]`, symmetry point in its
    middle; stochastic pulse counts (aihwkit's stochastic pulse trains). aihwkit's write noise is
    not modelled.

    References
    ----------
    L. Gong et al., "Signal and noise extraction from analog memory elements for neuromorphic
    computing", Nat. Commun. 9, 2102 (2018).
    """
    return Device(name="reram-sb", bounds=Bounds(0.0, 2.0),
                  pulses=Pulses(dw_min=0.001, rounding="stochastic", law=SoftBounds(), c2c=3.75),
                  variability=Variability(dw_min=0.3, up_down=0.01, bounds=0.24))


def reram_es() -> Device:
    """ReRAM with an exponential step, after aihwkit's ``ReRamESPresetDevice`` (a fit to Gong et al. 2018).

    aihwkit: ``dw_min = 0.00135`` on a range of 2 (``dw_min = 0.000675`` of the range here),
    ``up_down = 0.259359``, ``A_up = -1.18445``, ``A_down = -0.081404``, ``gamma_up = gamma_down = 5``,
    ``a = b = -0.5``, ``dw_min_dtod = 0.2``, ``up_down_dtod = 0.05``, ``w_max_dtod = w_min_dtod = 0.3``,
    cycle-to-cycle ``dw_min_std = 5``. Range :math:`[0, 2 g_\\mathrm{ref}]`; write noise not modelled.
    """
    law = ExpStep(A_up=-1.18445, A_down=-0.081404, gamma_up=5.0, gamma_down=5.0, a=-0.5, b=-0.5)
    return Device(name="reram-es", bounds=Bounds(0.0, 2.0),
                  pulses=Pulses(dw_min=0.000675, rounding="stochastic", law=law, up_down=0.259359, c2c=5.0),
                  variability=Variability(dw_min=0.2, up_down=0.05, bounds=0.3))


def pcm_pair() -> Device:
    """Phase-change memory: a differential pair of potentiation-only devices, refreshed every 100 updates.

    - Pulses: soft bounds with a step of 5% of the range at mid-range (about 20 SET pulses from
      ``g_min`` to near ``g_max``) and cycle-to-cycle noise equal to the step (Nandakumar et al.
      2018: the conductance change per SET pulse is as variable as it is large).
    - Drift: :math:`\\nu = 0.05`, device-to-device :math:`\\sigma_\\nu = 0.01`, :math:`t_0 = 20` s (IBM's PCM
      model: :math:`\\nu` between 0.049 and 0.1 with spread 0.008-0.045, :math:`t_0 = 20` s; Joshi et al.
      2020, as implemented in aihwkit's ``PCMLikeNoiseModel``). One second of device time per
      update (an assumption: the training speed of the hardware).
    - Read noise: 4% of ``g``, a fresh realisation each phase (the 1/f noise of the same model,
      :math:`Q_s\\sqrt{\\ln((t + t_r)/(2 t_r))}` with :math:`Q_s = 0.0088` at :math:`g_\\max`,
      :math:`t_r = 250` ns, :math:`t = t_0`).

    References
    ----------
    S. R. Nandakumar et al., "A phase-change memory model for neuromorphic computing", J. Appl.
    Phys. 124, 152135 (2018).
    V. Joshi et al., "Accurate deep neural network inference using computational phase-change
    memory", Nat. Commun. 11, 2473 (2020).
    S. Ambrogio et al., Nature 558, 60 (2018) (PCM pairs and their refresh during training).
    """
    return Device(name="pcm-pair", bounds=Bounds(0.0, 2.0),
                  pulses=Pulses(dw_min=0.05, rounding="stochastic", law=SoftBounds(), c2c=1.0),
                  read_noise=ReadNoise(0.04, resample="phase"),
                  drift=Drift(nu=0.05, nu_std=0.01, t0=20.0, seconds_per_update=1.0),
                  pair=DifferentialPair(refresh_every=100))


NAMED = {"ideal": lambda: Device(name="ideal"), "digipot128": digipot128, "reram-sb": reram_sb,
         "reram-es": reram_es, "pcm-pair": pcm_pair}
PRESET_NAMES = ("ideal", "levels{N}-nearest", "levels{N}-stochastic") + tuple(n for n in NAMED if n != "ideal")
"""Names :func:`get_device` accepts (``{N}``: a number of levels, 2..65536)."""


def get_device(name: str) -> Device:
    """The preset called ``name`` (see the module docstring); :class:`PhysgradError` lists them otherwise."""
    m = LEVELS.match(str(name))
    if m:
        return levels(int(m.group(1)), m.group(2))
    if name in NAMED:
        return NAMED[name]()
    raise PhysgradError(f"unknown device model {name!r}; presets: {', '.join(PRESET_NAMES)} "
                        f"(e.g. levels16-stochastic), or a .json/.toml file")


def device_to_dict(device: Device) -> dict:
    """The file form of ``device`` (JSON-able; :func:`device_from_dict` inverts it)."""
    out = {"name": device.name}
    for slot, piece in device.pieces().items():
        table = {f.name: getattr(piece, f.name) for f in fields(piece)}
        if slot == "pulses":
            law = piece.law
            params = {f.name: getattr(law, f.name) for f in fields(law)}
            table["law"] = {"kind": law.kind, **params} if params else law.kind
        if slot == "pair" and table["refresh_every"] is None:
            del table["refresh_every"]
        out[slot] = table
    return out


def _law(value, where: str):
    if isinstance(value, str):
        value = {"kind": value}
    kind = value.get("kind") if isinstance(value, dict) else None
    if not isinstance(kind, str) or kind not in LAWS:
        raise PhysgradError(f"{where}: pulses.law must be one of {', '.join(map(repr, LAWS))} or a table with "
                            f"kind = one of them, got {short(value)}")
    params = {k: v for k, v in value.items() if k != "kind"}
    cls = LAWS[value["kind"]]
    valid = {f.name for f in fields(cls)}
    unknown = set(params) - valid
    if unknown:
        raise PhysgradError(f"{where}: unknown key(s) {sorted(unknown)} in pulses.law of kind {value['kind']!r}; "
                            f"valid: {sorted(valid)}")
    return cls(**params)


def device_from_dict(d: dict, source: str = "<device>") -> Device:
    """Build a :class:`Device` from its file form (see the module docstring).

    Raises
    ------
    PhysgradError
        Naming ``source`` and the offending key or value.
    """
    if not isinstance(d, dict):
        raise PhysgradError(f"{source}: a device model is a table of pieces, got {type(d).__name__}")
    unknown = set(d) - {"name", "base"} - set(PIECES)
    if unknown:
        raise PhysgradError(f"{source}: unknown key(s) {sorted(unknown)}; valid: name, base, {', '.join(PIECES)}")
    for key in ("name", "base"):
        if key in d and not (isinstance(d[key], str) and 0 < len(d[key]) <= MAX_NAME):
            raise PhysgradError(f"{source}: {key} must be a string of 1 to {MAX_NAME} characters, got "
                                f"{short(d[key])}")
    try:
        base = get_device(d["base"]) if "base" in d else Device()
    except PhysgradError as err:
        raise PhysgradError(f"{source}: base: {err}") from None
    slots = {slot: getattr(base, slot) for slot in PIECES}
    for slot, cls in PIECES.items():
        if slot not in d:
            continue
        table = d[slot]
        if not isinstance(table, dict):
            raise PhysgradError(f"{source}: {slot} must be a table of parameters, got {short(table)}")
        valid = {f.name for f in fields(cls)}
        bad = set(table) - valid
        if bad:
            raise PhysgradError(f"{source}: unknown key(s) {sorted(bad)} in {slot}; valid: {sorted(valid)}")
        params = dict(table)
        if slot == "pulses" and "law" in params:
            params["law"] = _law(params["law"], source)
        try:
            slots[slot] = cls(**params)
        except (TypeError, ValueError, OverflowError) as err:
            raise PhysgradError(f"{source}: {slot}: {err}") from None
        except PhysgradError as err:
            raise PhysgradError(f"{source}: {slot}: {err}") from None
    name = d.get("name", Path(source).stem if source != "<device>" else "custom")
    try:
        return Device(name=str(name), **slots)
    except PhysgradError as err:
        raise PhysgradError(f"{source}: {err}") from None


MAX_FILE_BYTES = 1 << 20
"""Largest device file read (1 MiB; a device model is a few hundred bytes)."""
MAX_NAME = 200
"""Longest ``name`` of a device model (characters)."""


def _read_text(path: Path) -> str:
    """The UTF-8 text of a regular file of at most :data:`MAX_FILE_BYTES` (read no further)."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise PhysgradError(f"cannot read device model {path}: {err.strerror or err}") from None
    if not stat.S_ISREG(st.st_mode):
        raise PhysgradError(f"cannot read device model {path}: not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise PhysgradError(f"{path}: a device model file is at most {MAX_FILE_BYTES} bytes, this one has {st.st_size}")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise PhysgradError(f"cannot read device model {path}: {err.strerror or err}") from None
    if len(data) > MAX_FILE_BYTES:  # grew since stat
        raise PhysgradError(f"{path}: a device model file is at most {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise PhysgradError(f"{path}:{line}: not UTF-8 text (byte {err.start}: {data[err.start:err.start + 1]!r})") from None


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise PhysgradError(f"duplicate key(s) {dup}")
    return dict(pairs)


def load_device(path) -> Device:
    """Read a device model from a ``.json`` or ``.toml`` file (see the module docstring).

    Only a regular file of at most :data:`MAX_FILE_BYTES` bytes of UTF-8 text is read; every
    failure (missing, a directory or device such as ``/dev/zero``, too large, not UTF-8, malformed,
    duplicate JSON keys, nesting too deep, wrong types or values) is a :class:`PhysgradError` naming
    the file and the line or key.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise PhysgradError(f"{path}: a device model file ends in .json or .toml")
    text = _read_text(path)
    try:
        if suffix == ".json":
            d = json.loads(text, object_pairs_hook=_no_duplicates)
        else:
            d = tomllib.loads(text)
    except json.JSONDecodeError as err:
        raise PhysgradError(f"{path}:{err.lineno}: {err.msg} (column {err.colno})") from None
    except tomllib.TOMLDecodeError as err:
        raise PhysgradError(f"{path}: {err}") from None
    except PhysgradError as err:
        raise PhysgradError(f"{path}: {err}") from None
    except RecursionError:
        raise PhysgradError(f"{path}: nested too deeply") from None
    except ValueError as err:  # e.g. an integer literal beyond Python's digit limit
        raise PhysgradError(f"{path}: {err}") from None
    return device_from_dict(d, str(path))


def device_from_spec(spec: str) -> Device:
    """A preset name or a path to a JSON/TOML file (the ``--device-model NAME|FILE`` argument)."""
    spec = str(spec)
    if spec.lower().endswith((".json", ".toml")):
        return load_device(spec)
    return get_device(spec)

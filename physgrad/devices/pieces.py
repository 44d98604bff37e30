r"""The pieces of a device model: frozen, validated records, one physical effect each.

A :class:`~physgrad.devices.model.Device` combines at most one of each piece. Conductances are in
siemens (S); a piece that takes ``relative=True`` counts them in units of the parameter array's
*scale* :math:`g_\mathrm{ref}`, the largest initial conductance of that array (so one preset fits
every layer and every network).

References
----------
M. J. Rasch et al., "A flexible and fast PyTorch toolkit for simulating training and inference on
analog crossbar arrays" (IBM aihwkit), IEEE AICAS 2021; the pulsed-device models of its
documentation (``ConstantStepDevice``, ``SoftBoundsDevice``, ``ExpStepDevice``, ``PulsedDevice``),
whose parameters the pieces below follow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Optional, Union, get_args

from physgrad.types import PhysgradError

Rounding = Literal["nearest", "stochastic"]
ROUNDINGS = get_args(Rounding)
Resample = Literal["phase", "example", "step"]
RESAMPLES = get_args(Resample)
StuckAt = Literal["min", "max", "random"]
STUCK_AT = get_args(StuckAt)


def short(value, n: int = 80) -> str:
    """``repr(value)``, cut to ``n`` characters (values read from files may be huge)."""
    text = repr(value)
    return text if len(text) <= n else text[:n] + f"... ({len(text)} characters)"


def check_number(owner: str, name: str, value, *, lo: Optional[float] = None, hi: Optional[float] = None,
                 lo_open: bool = False, hi_open: bool = False, allow_inf: bool = False) -> float:
    """``value`` as a float, or :class:`PhysgradError` naming ``owner.name`` and the allowed interval."""
    try:
        v = float(value) if not isinstance(value, (bool, str)) else math.nan
    except (TypeError, ValueError, OverflowError):
        v = math.nan
    ok = not math.isnan(v) and (allow_inf or math.isfinite(v))
    ok = ok and (lo is None or v > lo or (v == lo and not lo_open))
    ok = ok and (hi is None or v < hi or (v == hi and not hi_open))
    if not ok:
        interval = (("(" if lo_open else "[") + ("-inf" if lo is None else f"{lo:g}") + ", "
                    + ("inf" if hi is None else f"{hi:g}") + (")" if hi_open or hi is None else "]"))
        raise PhysgradError(f"{owner}.{name} must be a number in {interval}"
                            + ("" if allow_inf else " (finite)") + f", got {short(value)}")
    return v


def check_choice(owner: str, name: str, value, valid) -> None:
    """:class:`PhysgradError` naming ``owner.name`` unless ``value`` is one of ``valid``."""
    if value not in valid:
        raise PhysgradError(f"{owner}.{name} must be one of {', '.join(map(repr, valid))}; got {short(value)}")


def _set(obj, name, value):
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class Bounds:
    r"""Conductance range of every device: :math:`g_\min \le g \le g_\max` (hard bounds).

    Parameters
    ----------
    g_min : float
        Lowest conductance (the OFF state; ``> 0`` models leakage), >= 0.
    g_max : float
        Highest conductance, ``> g_min`` (``inf`` allowed for a device without pulses).
    relative : bool
        Both in units of the array's :math:`g_\mathrm{ref}` (its largest initial conductance)
        instead of S.
    """

    g_min: float = 0.0
    g_max: float = 2.0
    relative: bool = True

    def __post_init__(self):
        _set(self, "g_min", check_number("Bounds", "g_min", self.g_min, lo=0.0))
        _set(self, "g_max", check_number("Bounds", "g_max", self.g_max, lo=self.g_min, lo_open=True, allow_inf=True))
        if not isinstance(self.relative, bool):
            raise PhysgradError(f"Bounds.relative must be true or false, got {self.relative!r}")


@dataclass(frozen=True)
class ConstantStep:
    r"""Pulse response independent of the conductance (aihwkit ``ConstantStepDevice``).

    Each pulse moves :math:`g` by :math:`\pm\Delta_\pm`, :math:`\Delta_\pm = \Delta_0 (1 \pm a)`
    (:math:`a` = ``Pulses.up_down``), then the result is clipped to the bounds. Without asymmetry,
    variability and noise the reachable conductances are the levels :math:`g_\min + k\Delta_0`.
    """

    kind: ClassVar[str] = "constant"


@dataclass(frozen=True)
class SoftBounds:
    r"""Pulse response that vanishes at the bounds (aihwkit ``SoftBoundsDevice``).

    .. math::

        \Delta_+(g) = \Delta_0 (1 + a)\,\frac{2 (g_\max - g)}{g_\max - g_\min},\qquad
        \Delta_-(g) = \Delta_0 (1 - a)\,\frac{2 (g - g_\min)}{g_\max - g_\min},

    so :math:`\Delta_0` is the step at the middle of the range (aihwkit's ``dw_min`` is the step at
    its symmetry point :math:`w = 0`; here the symmetry point of :math:`a = 0` is the middle).
    Random up and down pulses pull the conductance towards the symmetry point. ``n`` noiseless up
    pulses give :math:`g_\max - g_n = (g_\max - g_0)(1 - 2\Delta_0(1+a)/(g_\max - g_\min))^n`.
    """

    kind: ClassVar[str] = "soft_bounds"


@dataclass(frozen=True)
class ExpStep:
    r"""Exponential pulse response (aihwkit ``ExpStepDevice``), with :math:`w = g - g_c` measured from the
    middle :math:`g_c` of the range:

    .. math::

        z = \frac{2 a\,(g - g_c)}{g_\max - g_\min} + b,\quad
        \Delta_+ = \Delta_0 (1 + a_\mathrm{ud}) \max(1 - A_\mathrm{up} e^{\gamma_\mathrm{up} z}, 0),\quad
        \Delta_- = \Delta_0 (1 - a_\mathrm{ud}) \max(1 - A_\mathrm{down} e^{-\gamma_\mathrm{down} z}, 0).

    Defaults are aihwkit's ``ExpStepDevice`` defaults.
    """

    kind: ClassVar[str] = "exp"
    A_up: float = 0.00081
    A_down: float = 0.36833
    gamma_up: float = 12.44625
    gamma_down: float = 12.78785
    a: float = 0.244
    b: float = 0.2425

    def __post_init__(self):
        for name in ("A_up", "A_down", "gamma_up", "gamma_down", "a", "b"):
            _set(self, name, check_number("ExpStep", name, getattr(self, name)))


Law = Union[ConstantStep, SoftBounds, ExpStep]
LAWS = {cls.kind: cls for cls in (ConstantStep, SoftBounds, ExpStep)}


@dataclass(frozen=True)
class Pulses:
    r"""Pulsed updates: a requested change becomes a whole number of pulses.

    A requested change :math:`\delta g` becomes :math:`n = R(\delta g / \Delta_0)` pulses with
    :math:`\Delta_0 = ` ``dw_min`` :math:`(g_\max - g_\min)` (the nominal step, which is all the
    controller knows). ``nearest``: :math:`n = \mathrm{rint}(\delta g/\Delta_0)`, so requests under half
    a step vanish; ``stochastic``: :math:`n = \lfloor x\rfloor + \mathrm{Bernoulli}(x - \lfloor x\rfloor)`,
    :math:`x = \delta g/\Delta_0`, unbiased (:math:`E[n\Delta_0] = \delta g`) with variance
    :math:`p(1-p)\Delta_0^2`, :math:`p = x - \lfloor x\rfloor`. The device then responds to each pulse
    by its ``law``; cycle-to-cycle noise multiplies every pulse's step by :math:`1 + \sigma_{c2c}\xi`
    (:math:`\xi \sim N(0, 1)`, fresh per pulse), so :math:`n` constant steps add
    :math:`\Delta (n + \sigma_{c2c}\sqrt{|n|}\,\xi)`. Soft-bounds and exponential-step devices are pulsed one pulse
    at a time, clipped to the bounds after each, and take at most ``ceil(10 / dw_min)`` pulses per
    update (ten full ranges: saturated long before).

    Parameters
    ----------
    dw_min : float
        :math:`\Delta_0` as a fraction of the range, in (0, 1]. With a :class:`ConstantStep` law,
        ``1/dw_min + 1`` levels (16 levels: ``dw_min = 1/15``).
    rounding : {"nearest", "stochastic"}
    law : ConstantStep, SoftBounds or ExpStep
    up_down : float
        Up/down asymmetry :math:`a` in (-1, 1): up steps :math:`\Delta_0(1+a)`, down :math:`\Delta_0(1-a)`
        (aihwkit ``up_down``).
    c2c : float
        Cycle-to-cycle standard deviation of each pulse's step, relative to it (aihwkit ``dw_min_std``).
    """

    dw_min: float
    rounding: Rounding = "stochastic"
    law: Law = ConstantStep()
    up_down: float = 0.0
    c2c: float = 0.0

    def __post_init__(self):
        _set(self, "dw_min", check_number("Pulses", "dw_min", self.dw_min, lo=0.0, hi=1.0, lo_open=True))
        check_choice("Pulses", "rounding", self.rounding, ROUNDINGS)
        if not isinstance(self.law, tuple(LAWS.values())):
            raise PhysgradError(f"Pulses.law must be one of {', '.join(LAWS)} (ConstantStep(), SoftBounds(), "
                                f"ExpStep(...)); got {short(self.law)}")
        _set(self, "up_down", check_number("Pulses", "up_down", self.up_down, lo=-1.0, hi=1.0, lo_open=True,
                                           hi_open=True))
        _set(self, "c2c", check_number("Pulses", "c2c", self.c2c, lo=0.0))


@dataclass(frozen=True)
class ReadNoise:
    r"""Read noise: every read sees :math:`g(1 + \sigma\xi)` (``relative``) or
    :math:`g + \sigma g_\mathrm{ref}\xi`, clipped at 0 S, :math:`\xi \sim N(0, 1)` per device.

    ``resample`` says which reads share a realisation, and is what decides the estimators'
    statistics (measured in the verification family ``read_noise``). In expectation both are the
    same (the estimate is linear in the phases' measurements): the gradient of the noise-averaged
    cost, plus EP's own :math:`O(\beta)` / :math:`O(\beta^2)` bias. ``"example"`` -- one realisation
    held through every phase of an example: EP measures one network, so the estimate is that
    network's gradient up to EP's bias, with variance :math:`O(\sigma^2)` whatever :math:`\beta`.
    ``"phase"`` -- a fresh realisation in every phase: the phases measure different networks, and
    their difference divided by :math:`\beta` adds an error :math:`O(\sigma/\beta)` to each estimate
    (variance :math:`O(\sigma^2/\beta^2)`), so :math:`\beta` trades EP's bias against this noise: the
    mean-square error is smallest at :math:`\beta \sim \sigma^{1/3}` (centered) or :math:`\sigma^{1/2}`
    (positive, negative). ``"step"`` -- one realisation per training step, shared by every example
    and phase of the batch (what the fused layered kernels can do: they relax the whole batch at one
    set of conductances); like ``"example"`` it adds no :math:`O(\sigma/\beta)` term, but the
    examples of a batch see the same network.

    Parameters
    ----------
    sigma : float
        Standard deviation, >= 0 (relative to ``g``, or to :math:`g_\mathrm{ref}`).
    resample : {"phase", "example", "step"}
    relative : bool
    """

    sigma: float
    resample: Resample = "phase"
    relative: bool = True

    def __post_init__(self):
        _set(self, "sigma", check_number("ReadNoise", "sigma", self.sigma, lo=0.0))
        check_choice("ReadNoise", "resample", self.resample, RESAMPLES)
        if not isinstance(self.relative, bool):
            raise PhysgradError(f"ReadNoise.relative must be true or false, got {self.relative!r}")


@dataclass(frozen=True)
class Drift:
    r"""Power-law drift of a programmed conductance (phase-change memory):

    .. math::  g(t) = g_0 \left(\frac{t}{t_0}\right)^{-\nu},\qquad t = t_0 + (\text{time since programming}),

    so a read right after programming sees :math:`g_0`. Each device's :math:`\nu` is drawn once,
    :math:`\max(0, \nu + \sigma_\nu \xi)`. A device is (re)programmed by every update that moves it
    (pulses or a nonzero request) and by :meth:`~physgrad.devices.model.Device.program`; updates
    start from the drifted value. The device clock advances by ``seconds_per_update`` after every
    update and by :meth:`~physgrad.devices.model.Device.advance`.

    Parameters
    ----------
    nu : float
        Mean drift exponent, >= 0 (PCM: about 0.05).
    nu_std : float
        Device-to-device standard deviation of :math:`\nu`.
    t0 : float
        Time of the first read after programming (s), > 0.
    seconds_per_update : float
        Device time per optimiser step (s), >= 0.
    """

    nu: float
    nu_std: float = 0.0
    t0: float = 20.0
    seconds_per_update: float = 1.0

    def __post_init__(self):
        _set(self, "nu", check_number("Drift", "nu", self.nu, lo=0.0))
        _set(self, "nu_std", check_number("Drift", "nu_std", self.nu_std, lo=0.0))
        _set(self, "t0", check_number("Drift", "t0", self.t0, lo=0.0, lo_open=True))
        _set(self, "seconds_per_update", check_number("Drift", "seconds_per_update", self.seconds_per_update, lo=0.0))


@dataclass(frozen=True)
class Variability:
    r"""Device-to-device variability, sampled once per device when the device is initialised.

    Step scale :math:`s_i = \max(0, 1 + \sigma_s\xi)`, asymmetry :math:`a_i = a + \sigma_a\xi`, so
    :math:`\Delta_{\pm,i} = \Delta_0 s_i (1 \pm a_i)`; bounds :math:`g_{\max,i} = g_\max\max(0, 1 +
    \sigma_b\xi)`, :math:`g_{\min,i} = g_\min\max(0, 1 + \sigma_b\xi')` (swapped if they cross). The
    :math:`\xi` are independent standard normals (aihwkit ``dw_min_dtod``, ``up_down_dtod``,
    ``w_max_dtod``/``w_min_dtod``).

    Parameters
    ----------
    dw_min, up_down, bounds : float
        :math:`\sigma_s` (relative), :math:`\sigma_a` (absolute), :math:`\sigma_b` (relative), each >= 0.
    """

    dw_min: float = 0.0
    up_down: float = 0.0
    bounds: float = 0.0

    def __post_init__(self):
        for name in ("dw_min", "up_down", "bounds"):
            _set(self, name, check_number("Variability", name, getattr(self, name), lo=0.0))


@dataclass(frozen=True)
class Stuck:
    """Stuck devices: each device independently with probability ``fraction`` (drawn once), held at
    its own ``g_min`` (``"min"``), ``g_max`` (``"max"``) or a value uniform in between (``"random"``)
    whatever it is asked to do.

    Parameters
    ----------
    fraction : float
        In [0, 1].
    at : {"min", "max", "random"}
    """

    fraction: float
    at: StuckAt = "min"

    def __post_init__(self):
        _set(self, "fraction", check_number("Stuck", "fraction", self.fraction, lo=0.0, hi=1.0))
        check_choice("Stuck", "at", self.at, STUCK_AT)


@dataclass(frozen=True)
class DifferentialPair:
    r"""Compound cell: the parameter is the difference :math:`w = G_+ - G_-` of two devices.

    Both devices are only potentiated (a positive request pulses :math:`G_+` up, a negative one
    :math:`G_-`), as with phase-change memory whose depression is an abrupt RESET. Every
    ``refresh_every`` updates each pair is reprogrammed: the lower device back to its ``g_min``, the
    other to ``g_min + |w|`` (nearest level), which keeps :math:`w` within one level while freeing
    the range again. Each device has its own variability, stuck state, drift and read noise; the
    parameter may be negative (signed weights).

    Parameters
    ----------
    refresh_every : int or None
        Updates between refreshes (>= 1), or None (never; a file says so by leaving it out).

    References
    ----------
    G. W. Burr et al., "Experimental demonstration and tolerancing of a large-scale neural network
    (165 000 synapses) using phase-change memory as the synaptic weight element", IEEE Trans.
    Electron Devices 62, 3498 (2015) (pairs, occasional refresh).
    S. Ambrogio et al., "Equivalent-accuracy accelerated neural-network training using analogue
    memory", Nature 558, 60 (2018).
    """

    refresh_every: Optional[int] = None

    def __post_init__(self):
        r = self.refresh_every
        ok = r is None or (isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r)
                           and int(r) == r and 1 <= r <= 2 ** 62)
        if not ok:
            raise PhysgradError(f"DifferentialPair.refresh_every must be an integer >= 1 or None, got {short(r)}")
        if r is not None:
            _set(self, "refresh_every", int(r))

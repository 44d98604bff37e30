"""Named network + training configurations reproducing the papers' MNIST experiments.

DRN presets follow Scellier et al. (2024) (the authors' ``papers/fast-drn/drn.py``); DHN presets
the same paper's deep Hopfield baselines (``papers/fast-drn/dhn.py``).

References
----------
B. Scellier, S. Mishra, Y. Bengio, Y. Ollivier, "Fast algorithm to simulate nonlinear resistive
networks", ICML 2024.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Literal, Optional, Union, get_args

from physgrad.energies.conv import ConvHopfield
from physgrad.energies.layered import DeepHopfield, DeepResistive
from physgrad.learning._phase import ZERO_PHASES, ZeroPhase
from physgrad.minimizers.block import SCHEDULES, BlockCoordinateDescent, Schedule
from physgrad.types import PhysgradError

Model = Literal["drn", "dhn", "dchn"]
MODELS = get_args(Model)
LRSchedule = Literal["exponential", "cosine"]
LR_SCHEDULES = get_args(LRSchedule)
Optimizer = Literal["sgd", "momentum", "adam"]
OPTIMIZERS = get_args(Optimizer)
MNIST_PIXELS = 28 * 28  # inputs of the MNIST presets: a flattened 28 x 28 image, pixels in [0, 1]


@dataclass(frozen=True)
class Preset:
    """A network architecture and its training hyperparameters.

    Attributes
    ----------
    name : str
    model : {"drn", "dhn"}
        Deep resistive network (inputs doubled to ``gain * (x, -x)``, non-negative conductances)
        or deep Hopfield network (inputs ``x``, signed weights, units in [0, 1]).
    hidden : tuple of int
        Hidden layer sizes (DRN: even, first half ``v >= 0``, second half ``v <= 0``).
    n_outputs : int
    input_gain : float
        DRN input voltage scale (V per unit pixel).
    amplifier_gains : tuple of float
        DRN only: gains ``(A_2, ..., A_L)`` of bidirectional amplifiers between free layers (one per
        hidden layer; see :class:`~physgrad.energies.layered.DeepResistive`); ``()``: none.
    sweeps : int
        Block-coordinate sweeps per phase (training and evaluation).
    sweeps_eval : int
        Sweeps from the zero state at evaluation.
    beta : float
        Nudging strength (S for DRNs).
    weight_lrs, bias_lrs : tuple of float
        SGD learning rate per layer (input side first).
    epochs, batch_size : int
    lr_decay : float
        Learning rates multiplied by this after every epoch (``lr_schedule = "exponential"``).
    lr_schedule : {"exponential", "cosine"}
        Factor on every learning rate (:meth:`lr_scale`): ``lr_decay ** epoch``, constant within an
        epoch (the papers'); or a linear warm-up over ``warmup_epochs`` followed by a cosine decay to
        ``lr_final`` at the end of the last epoch, updated every batch.
    warmup_epochs : float
        Length of the linear warm-up (epochs, may be fractional; cosine only).
    lr_final : float
        Factor at the end of the cosine schedule, in [0, 1).
    optimizer : {"sgd", "momentum", "adam"}
        ``sgd``: projected SGD, in place in every kernel (the papers'); ``momentum`` (heavy ball,
        coefficient ``momentum``) and ``adam`` (:mod:`physgrad.learning.optim`; its learning rates
        are steps in S per update, so scale them with ``lr_factor``): on the compiled kernel and
        the numpy array stepper (centered EP) and on the generic engine
        (:func:`physgrad.layered.engines.plan_engine`).
    momentum : float
        Heavy-ball coefficient in [0, 1) of ``optimizer = "momentum"``.
    weight_decay : float
        L2 weight decay :math:`\\lambda \\ge 0` on every parameter array (weights and biases), coupled
        to the gradient as in ``torch.optim.SGD`` (the comparative study's :math:`3\\times10^{-4}`):
        each step uses :math:`g + \\lambda\\theta` (:func:`physgrad.learning.optim.decayed`); 0 = off.
        Runs on the generic engine and on the convolutional (dchn) fast kernel
        (:func:`physgrad.layered.engines.plan_engine` refuses it elsewhere).
    ema_decay : float
        Exponential moving average of the parameters with decay ``d`` per batch (``d`` in [0, 1);
        0 = off), sampled every ``ema_every`` batches: ``bar_theta <- d^m bar_theta + (1 - d^m) theta``
        after every ``m = ema_every`` batches and after an epoch's last batch (``m`` = the batches
        since the previous update). With ``d > 0`` evaluation (test error) uses ``bar_theta``
        (checkpoints hold both); training always uses ``theta``.
    ema_every : int
        Batches between two updates of the average (each costs a few passes over the parameters,
        several times a batch step of the compiled kernel on DRN-1H; 16 keeps it to a small fraction).
    zero_phase : {"free", "relaxed"}
        Unperturbed state of the one-sided rules (pep, nep, cl, pcpl, ncpl): ``free``, the free phase
        itself; ``relaxed``, the free phase relaxed again for ``sweeps`` sweeps at zero perturbation, as
        the perturbed phase is (the authors' code of the comparative study;
        :func:`physgrad.learning._phase.zero_phase`). Runs on the generic engine and the dchn kernel.
    weight_gain : float
        Initial weights uniform in ``+-weight_gain / sqrt(fan_in)`` (DRN: then clamped at 0).
    schedule : {"asynchronous", "synchronous", "forward", "backward"}
    paper_error : float or None
        The paper's test error (%) with centered EP, for reference.
    n_inputs : int
        Pixels per image (default :data:`MNIST_PIXELS`; 64 for the 8 x 8 digits).
    dataset : str
        The dataset ``physgrad train`` uses unless ``--dataset`` says otherwise (``mnist``; ``digits``:
        the 8 x 8 digits shipped with physgrad).
    algorithm : str
        The learning rule ``physgrad train`` uses unless ``--algorithm`` says otherwise (``cep``;
        the crossbar presets: ``pep``, the activity difference of Yi et al.).
    crossbar : tuple
        ``(rows, cols)`` of the one crossbar of differential pairs that holds the weights
        (:class:`physgrad.layered.crossbar.CrossbarLayout`: a one-hidden-layer deep Hopfield network);
        ``()``: not on a crossbar. It decides the device wrapping (each weight a differential pair)
        and the energy model (:mod:`physgrad.layered.energy`); the arithmetic of the ideal device is the
        plain network's.
    """

    name: str
    model: Model
    hidden: tuple
    n_outputs: int = 10
    input_gain: float = 1.0
    amplifier_gains: tuple = ()
    sweeps: int = 4
    sweeps_eval: int = 4
    beta: float = 1.0
    weight_lrs: tuple = ()
    bias_lrs: tuple = ()
    epochs: int = 10
    batch_size: int = 4
    lr_decay: float = 0.99
    lr_schedule: LRSchedule = "exponential"
    warmup_epochs: float = 0.0
    lr_final: float = 0.0
    ema_decay: float = 0.0
    ema_every: int = 16
    optimizer: Optimizer = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    zero_phase: ZeroPhase = "free"
    weight_gain: float = 1.0
    schedule: Schedule = "asynchronous"
    paper_error: Optional[float] = None
    n_inputs: int = MNIST_PIXELS
    dataset: str = "mnist"
    algorithm: str = "cep"
    crossbar: tuple = ()

    def __post_init__(self):
        if self.model not in MODELS:
            raise PhysgradError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.schedule not in SCHEDULES:
            raise PhysgradError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        hidden = tuple(int(h) for h in self.hidden)
        object.__setattr__(self, "hidden", hidden)
        object.__setattr__(self, "crossbar", tuple(int(v) for v in self.crossbar))
        if int(self.n_inputs) < 1:
            raise PhysgradError(f"n_inputs must be >= 1, got {self.n_inputs}")
        if self.crossbar:
            if self.model != "dhn" or len(hidden) != 1 or len(self.crossbar) != 2:
                raise PhysgradError("a crossbar preset is a one-hidden-layer deep Hopfield network (model 'dhn') "
                                    f"on one (rows, cols) array; got model {self.model!r}, hidden {hidden}, "
                                    f"crossbar {self.crossbar}")
            self.crossbar_layout()  # the network must fit the array
        if not hidden:
            raise PhysgradError("a preset needs at least one hidden layer")
        if self.model != "drn" and self.amplifier_gains:
            raise PhysgradError(f"amplifier_gains are a DRN option, not {self.model!r}'s")
        energy = self.energy()  # validates the sizes (positive; a DRN's even), the input and amplifier gains
        if self.model == "drn":  # one spelling: () when every gain is 1
            object.__setattr__(self, "amplifier_gains", energy.amplifier_gains if energy.amplified else ())
        n_layers = len(hidden) + 1
        wl = tuple(float(v) for v in self.weight_lrs)
        bl = tuple(float(v) for v in (self.bias_lrs or self.weight_lrs))
        object.__setattr__(self, "weight_lrs", wl)
        object.__setattr__(self, "bias_lrs", bl)
        if len(wl) != n_layers or len(bl) != n_layers:
            raise PhysgradError(f"need {n_layers} weight and bias learning rates, got {len(wl)} and {len(bl)}")
        for name in ("sweeps", "sweeps_eval", "epochs", "batch_size", "n_outputs", "ema_every"):
            if int(getattr(self, name)) < 1:
                raise PhysgradError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise PhysgradError(f"beta must be a finite number > 0, got {self.beta}")
        if not 0 < self.lr_decay <= 1:
            raise PhysgradError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise PhysgradError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise PhysgradError(f"warmup_epochs must be in [0, epochs={self.epochs}), got {self.warmup_epochs}")
        if self.warmup_epochs > 0 and self.lr_schedule != "cosine":
            raise PhysgradError("warmup_epochs needs lr_schedule = 'cosine'")
        if self.optimizer not in OPTIMIZERS:
            raise PhysgradError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("lr_final", "ema_decay", "momentum"):
            if not 0 <= getattr(self, name) < 1:
                raise PhysgradError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.zero_phase not in ZERO_PHASES:
            raise PhysgradError(f"zero_phase must be one of {ZERO_PHASES}, got {self.zero_phase!r}")
        if not (isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < 1):
            raise PhysgradError(f"weight_decay must be a number in [0, 1), got {self.weight_decay!r}")

    def learning_rates(self, scale: float = 1.0) -> tuple:
        """``(weight_lrs, bias_lrs)`` times ``scale`` (the schedule's factor), as lists."""
        return [lr * scale for lr in self.weight_lrs], [lr * scale for lr in self.bias_lrs]

    def lr_scale(self, epoch: int, batch: int, n_batches: int) -> float:
        """Factor on every learning rate for batch ``batch`` (0-based) of epoch ``epoch`` (0-based)
        of ``n_batches``.

        ``exponential``: :math:`\\gamma^{e}` (``lr_decay``), the same for the whole epoch.
        ``cosine``: with :math:`t = e + b / n_b` in epochs, :math:`t_w` = ``warmup_epochs``,
        :math:`T` = ``epochs`` and :math:`f` = ``lr_final``:
        :math:`t / t_w` while :math:`t < t_w`, then
        :math:`f + (1 - f) \\tfrac12 (1 + \\cos(\\pi (t - t_w) / (T - t_w)))`.
        """
        if self.lr_schedule == "exponential":
            return self.lr_decay ** epoch
        t = epoch + batch / n_batches
        if t < self.warmup_epochs:
            return t / self.warmup_epochs
        u = (t - self.warmup_epochs) / (self.epochs - self.warmup_epochs)
        return self.lr_final + (1 - self.lr_final) * 0.5 * (1 + math.cos(math.pi * min(u, 1.0)))

    def energy(self) -> Union[DeepResistive, DeepHopfield, ConvHopfield]:
        """The network: :class:`~physgrad.energies.layered.DeepResistive` (with ``input_gain``) or
        :class:`~physgrad.energies.layered.DeepHopfield`, on :attr:`n_inputs` inputs."""
        if self.model == "drn":
            return DeepResistive(self.n_inputs, self.hidden, self.n_outputs, input_gain=self.input_gain,
                                 amplifier_gains=self.amplifier_gains)
        if self.model == "dchn":  # hidden = the image layers' channels; 1x28x28 input, 5x5 kernels, 2x2 max pooling
            return ConvHopfield(channels=self.hidden, n_outputs=self.n_outputs)
        return DeepHopfield(self.n_inputs, self.hidden, self.n_outputs)

    def crossbar_layout(self):
        """The :class:`physgrad.layered.crossbar.CrossbarLayout` of a crossbar preset (None otherwise)."""
        if not self.crossbar:
            return None
        from physgrad.layered.crossbar import CrossbarLayout

        return CrossbarLayout(self.n_inputs, self.hidden[0], self.n_outputs, *self.crossbar)

    def minimizer(self, sweeps: Optional[int] = None) -> BlockCoordinateDescent:
        """Block coordinate descent with this preset's schedule and a fixed budget (``tol=None``) of
        ``sweeps`` sweeps per phase (default: the training budget :attr:`sweeps`; evaluation uses
        :attr:`sweeps_eval`)."""
        return BlockCoordinateDescent(sweeps=self.sweeps if sweeps is None else sweeps, schedule=self.schedule,
                                      tol=None)

    @property
    def sizes(self) -> tuple:
        """All layer sizes, input first (the energy's: a DRN's input layer is the doubled 1568)."""
        return self.energy().sizes

    def with_options(self, **options) -> "Preset":
        """A copy with some fields changed; unknown names raise an error listing the valid ones."""
        valid = {f.name for f in fields(self)}
        unknown = set(options) - valid
        if unknown:
            raise PhysgradError(f"unknown preset option(s) {sorted(unknown)}; valid: {sorted(valid)}")
        return replace(self, **options)


PRESETS = {p.name: p for p in (
    Preset("drn-xs", "drn", (100,), input_gain=100.0, sweeps=4, sweeps_eval=4, beta=1.0,
           weight_lrs=(0.006, 0.006), epochs=10, paper_error=3.46),
    Preset("drn-1h", "drn", (1024,), input_gain=480.0, sweeps=4, sweeps_eval=4, beta=1.0,
           weight_lrs=(0.006, 0.006), epochs=50, paper_error=1.57),
    # drn-1h's network, data, estimator and SGD schedule; evaluated on a long moving average of the
    # parameters (reports/experiments/drn-1h-recipe: 1.47 +- 0.03 % over 3 seeds, drn-1h 1.55 +- 0.06 %)
    Preset("drn-1h-ema", "drn", (1024,), input_gain=480.0, sweeps=4, sweeps_eval=4, beta=1.0,
           weight_lrs=(0.006, 0.006), epochs=50, ema_decay=0.99998, paper_error=1.57),
    Preset("drn-2h", "drn", (1024, 1024), input_gain=2000.0, sweeps=5, sweeps_eval=5, beta=1.0,
           weight_lrs=(0.002, 0.006, 0.018), epochs=50, paper_error=1.48),
    Preset("drn-3h", "drn", (1024, 1024, 1024), input_gain=4000.0, sweeps=6, sweeps_eval=6, beta=2.0,
           weight_lrs=(0.005, 0.02, 0.08, 0.005), bias_lrs=(0.0005, 0.002, 0.008, 0.0005), epochs=50,
           paper_error=1.66),
    # DRN-2H/3H with DRN-1H's input gain and Kendall amplifiers of gain 2 between layers:
    # amplifiers of product P act like an input gain P times larger (DeepResistive), here 480 * 4 = 1920
    # (drn-2h: 2000) and 480 * 8 = 3840 (drn-3h: 4000), with input voltages 480 V.
    Preset("drn-2h-amp", "drn", (1024, 1024), input_gain=480.0, amplifier_gains=(2.0, 2.0), sweeps=5,
           sweeps_eval=5, beta=1.0, weight_lrs=(0.002, 0.006, 0.018), epochs=50),
    Preset("drn-3h-amp", "drn", (1024, 1024, 1024), input_gain=480.0, amplifier_gains=(2.0, 2.0, 2.0), sweeps=6,
           sweeps_eval=6, beta=2.0, weight_lrs=(0.005, 0.02, 0.08, 0.005),
           bias_lrs=(0.0005, 0.002, 0.008, 0.0005), epochs=50),
    Preset("drn-xl", "drn", (32768,), input_gain=800.0, sweeps=4, sweeps_eval=4, beta=1.0,
           weight_lrs=(0.006, 0.006), epochs=100, paper_error=1.33),
    Preset("dhn-1h", "dhn", (1024,), sweeps=15, sweeps_eval=15, beta=0.2, weight_lrs=(0.05, 0.05),
           epochs=100, batch_size=16, weight_gain=0.7, paper_error=1.79),
    Preset("dhn-2h", "dhn", (1024, 1024), sweeps=20, sweeps_eval=50, beta=0.2,
           weight_lrs=(0.2, 0.05, 0.01), epochs=100, batch_size=16, weight_gain=0.7, paper_error=1.65),
    Preset("dhn-3h", "dhn", (1024, 1024, 1024), sweeps=10, sweeps_eval=100, beta=0.2,
           weight_lrs=(0.2, 0.05, 0.01, 0.002), epochs=100, batch_size=16, weight_gain=0.7, paper_error=1.65),
    # deep convolutional Hopfield networks (issue 22; physgrad.energies.conv): "hidden" are the channels of
    # the image layers, 1x28x28 -> c1x12x12 -> c2x4x4 -> 10 (5x5 kernels, 2x2 max pooling)
    Preset("dchn-tiny", "dchn", (2, 4), sweeps=4, sweeps_eval=8, beta=0.25, weight_lrs=(0.05, 0.05, 0.02),
           epochs=2, batch_size=16, weight_gain=0.8),
    # Laborieux et al. (2021) / the authors' ConvHopfieldEnergy28 on MNIST with the comparative study's recipe
    # (beta 0.25, 15 sweeps per phase, 60 at inference, batch 128, momentum 0.9, cosine schedule)
    Preset("dchn-mnist", "dchn", (32, 64), sweeps=15, sweeps_eval=60, beta=0.25, weight_lrs=(0.0625, 0.0375, 0.0125),
           epochs=30, batch_size=128, optimizer="momentum", lr_schedule="cosine", lr_final=0.01, weight_gain=0.8),
    # Yi, Kendall, Williams, Kumar (Nature Electronics 2022): a Hopfield network on one 64 x 64 crossbar of
    # differential pairs trained by activity differences (EP's positive variant, free and nudged states held
    # digitally); here 64-22-10 on scikit-learn's 8 x 8 digits (shipped), as reports/experiments/crossbar-hopfield
    Preset("crossbar-digits", "dhn", (22,), n_inputs=64, dataset="digits", algorithm="pep", crossbar=(64, 64),
           sweeps=30, sweeps_eval=30, beta=0.2, weight_lrs=(0.2, 0.1), epochs=10, batch_size=10, lr_decay=1.0),
)}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; unknown names raise an error listing the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise PhysgradError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}") from None

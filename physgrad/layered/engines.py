"""What runs where: the one table of engine rules of layered training.

:func:`plan_engine` turns the options of a run (engine, algorithm, backend, torch device, optimizer,
amplifiers, device model) into an :class:`EnginePlan` -- the engine, the backend and the stepper
class that will run it -- or refuses the combination with one :class:`~physgrad.types.PhysgradError`
that names the alternative. :class:`physgrad.layered.train.TrainConfig` validates and resolves its
options with it, and :func:`physgrad.layered.steppers.make_stepper` builds the plan's stepper without
checking anything itself, so the two cannot disagree (``tests/test_engines.py`` walks the whole grid).

The table (``auto`` = the first choice that applies):

========== =========== ============== =================== ==========================================
engine     algorithm   backend        optimizer           stepper
========== =========== ============== =================== ==========================================
fast       cep         numba          sgd/momentum/adam   ``CompiledCEPStepper`` (auto: when numba is
                                                          importable)
fast       cep         numpy          sgd                 ``FusedCEPStepper`` (auto without numba,
                                                          with a note)
fast       cep         numpy          momentum/adam       ``OptimizerCEPStepper`` (numpy array stepper)
fast       cep         torch          sgd                 ``TorchCEPStepper`` (cpu or cuda)
fast       tbp         numpy          sgd                 ``FusedTBPStepper``
fast       cep/pep/nep numpy/torch    sgd/momentum/adam   ``ConvEPStepper`` (convolutional Hopfield
           cl/*cpl     (numba: numpy)                     presets; no compiled convolution kernel)
           (dchn)
fast       tbp (dchn)  torch          sgd/momentum/adam   ``ConvEPStepper`` (autograd through the sweeps)
generic    any         numpy          sgd/momentum/adam   ``RuleStepper``
========== =========== ============== =================== ==========================================

* ``engine="auto"``: fast for ``cep`` and for ``tbp`` with SGD (convolutional presets: for
  the EP, CL and CpL rules, and for ``tbp`` with ``backend="torch"``), generic otherwise, and generic
  when the run records its physical energy (``energy``, ``physgrad train --energy``: the fused kernels
  keep no phase states to measure; ``--engine fast --energy`` is refused).
* Amplifiers between layers (a DRN with ``amplifier_gains``): the fast numpy and numba steppers run
  the plain DRN they are an exact reparametrisation of (:class:`physgrad.layered.steppers.AmplifiedStepper`);
  torch refuses them; the generic engine runs the amplified energy itself.
* Weight decay (``Preset.weight_decay > 0``): the generic engine and ``ConvEPStepper`` only
  (``auto`` picks the generic engine for a DRN/DHN preset with weight decay).
* Refused (each with its alternative): an algorithm other than cep/tbp on the fast engine; a backend
  other than numpy for tbp or the generic engine; momentum/adam with fast tbp or on torch;
  ``device="cuda"`` without torch; ``backend="numba"`` without numba; amplifiers on torch; device
  models whose random reads the engine cannot realise: read noise resampled per phase or per
  example needs the generic engine (the fused kernels share one set of conductances between the
  phases) and an EP/CpL rule (tbp/rbp unroll the minimizer's sweeps).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from physgrad.layered.kernels.conv_torch import CONV_DTYPES
from physgrad.types import PhysgradError

ENGINES = ("auto", "fast", "generic")
BACKENDS = ("auto", "numpy", "numba", "torch")
TORCH_DEVICES = ("cpu", "cuda")
FAST_ALGORITHMS = ("cep", "tbp")
"""Algorithms of the fast engine: centered EP (every backend) and truncated backprop (numpy)."""
ALGORITHMS = ("cep", "pep", "nep", "cl", "pcpl", "ncpl", "ccpl", "tbp", "rbp")
COUPLED_ALGORITHMS = ("pcpl", "ncpl", "ccpl")
"""The algorithms that take ``eta`` (coupled learning's amplitude); the others ignore it."""
OPTIMIZERS = ("sgd", "momentum", "adam")

PER_EXAMPLE_READS = ("phase", "example")
"""Read-noise resampling (``device.read_noise.resample``) that only the generic engine realises."""


def random_reads(device) -> Optional[str]:
    """``device.read_noise.resample`` when the device's reads draw random numbers (read noise with
    ``sigma > 0``), else None; ``device`` None is the ideal device."""
    rn = getattr(device, "read_noise", None)
    return rn.resample if rn is not None and rn.sigma > 0 else None
STEPPERS = ("CompiledCEPStepper", "FusedCEPStepper", "OptimizerCEPStepper", "TorchCEPStepper", "FusedTBPStepper",
            "ConvEPStepper", "RuleStepper")
CONV_FAST_ALGORITHMS = ("cep", "pep", "nep", "cl", "pcpl", "ncpl", "ccpl", "tbp")
"""Algorithms of the fast engine of convolutional Hopfield presets (:mod:`physgrad.layered.kernels.conv_cep`;
``tbp`` on the torch backend only)."""


def preset_traits(preset) -> dict:
    """The options of :func:`plan_engine` that a preset decides: its optimizer, whether it is a DRN with
    amplifiers between layers, whether it is a convolutional Hopfield network, whether it decays its weights."""
    return {"optimizer": preset.optimizer, "amplified": preset.model == "drn" and bool(preset.amplifier_gains),
            "convolutional": preset.model == "dchn", "weight_decay": preset.weight_decay > 0}


@dataclass(frozen=True)
class EnginePlan:
    """How a run is computed (the verdict of :func:`plan_engine`).

    Attributes
    ----------
    engine : {"fast", "generic"}
    backend : {"numpy", "numba", "torch"}
    algorithm : str
    optimizer : {"sgd", "momentum", "adam"}
    stepper : str
        The class that runs it, one of :data:`STEPPERS`.
    amplified : bool
        The network has amplifiers between layers and the stepper is a fast one: it runs inside
        :class:`physgrad.layered.steppers.AmplifiedStepper` (the exact reparametrisation).
    torch_device : {"cpu", "cuda"}
    note : str or None
        Said to the user when ``auto`` chose a slower route than the best one (numba missing).
    conv_dtype : {"full", "bfloat16"}
        Precision of the convolutions in the sweeps (``ConvEPStepper`` on torch only).
    """

    engine: str
    backend: str
    algorithm: str
    optimizer: str
    stepper: str
    amplified: bool = False
    torch_device: str = "cpu"
    note: Optional[str] = None
    conv_dtype: str = "full"


def _choice(name: str, value, valid) -> None:
    if value not in valid:
        raise PhysgradError(f"{name} must be one of {valid}, got {value!r}")


def plan_engine(engine: str = "auto", algorithm: str = "cep", backend: str = "auto", torch_device: str = "cpu",
                optimizer: str = "sgd", amplified: bool = False, device_model=None,
                numba_available: Optional[bool] = None, convolutional: bool = False, energy: bool = False,
                conv_dtype: str = "full", weight_decay: bool = False) -> EnginePlan:
    """The :class:`EnginePlan` of a run, or the :class:`PhysgradError` that refuses it (module docstring).

    Parameters
    ----------
    engine : {"auto", "fast", "generic"}
    algorithm : str
        One of :data:`ALGORITHMS`.
    backend : {"auto", "numpy", "numba", "torch"}
    torch_device : {"cpu", "cuda"}
        Where the torch backend runs (the numpy and numba backends run on the cpu).
    optimizer : {"sgd", "momentum", "adam"}
    amplified : bool
        A DRN with amplifiers between layers.
    device_model : physgrad.devices.Device or None
        The conductance devices of the weights: how it resamples its random reads
        (``read_noise.resample`` when ``read_noise.sigma > 0``) decides which engines can realise them.
    numba_available : bool, optional
        Whether numba can be imported (default: :data:`physgrad.layered.kernels.numba_cpu.AVAILABLE`).
    convolutional : bool
        A convolutional Hopfield network (``dchn`` presets): its fast engine is ``ConvEPStepper``.
    energy : bool
        The run records the energy of its equilibria (:mod:`physgrad.layered.energy`): the generic
        engine, whose steps keep the free and nudged states.
    conv_dtype : {"full", "bfloat16"}
        Precision of the sweeps' convolutions: ``bfloat16`` needs the fast engine of a convolutional
        preset on the torch backend.
    weight_decay : bool
        The preset decays its weights (``Preset.weight_decay > 0``): the generic engine and the
        convolutional kernel apply it; the fused DRN/DHN kernels (numpy, numba, torch, fast tbp) do not.

    Raises
    ------
    PhysgradError
        A refused combination; the message names the option to change.
    """
    for name, value, valid in (("engine", engine, ENGINES), ("algorithm", algorithm, ALGORITHMS),
                               ("backend", backend, BACKENDS), ("device", torch_device, TORCH_DEVICES),
                               ("optimizer", optimizer, OPTIMIZERS), ("conv_dtype", conv_dtype, CONV_DTYPES)):
        _choice(name, value, valid)
    if conv_dtype != "full" and not (convolutional and backend == "torch" and engine != "generic"):
        raise PhysgradError(f"--conv-dtype {conv_dtype} runs the convolutions of a convolutional (dchn) preset on "
                            f"the fast engine's torch backend: use --backend torch with a dchn preset, or --conv-dtype full")
    if numba_available is None:
        from physgrad.layered.kernels import numba_cpu
        numba_available = numba_cpu.AVAILABLE
    if torch_device != "cpu" and backend != "torch":
        raise PhysgradError(f"device {torch_device!r} needs --backend torch (numpy and numba run on the cpu)")
    if energy:
        if engine == "fast":
            raise PhysgradError("--energy measures the free and nudged equilibria of each step, which the fast "
                                "engine's fused kernels do not keep: use --engine generic (or auto)")
        engine = "generic"
    if engine == "auto":
        fast = ((algorithm in CONV_FAST_ALGORITHMS and (algorithm != "tbp" or backend == "torch")) if convolutional
                else not weight_decay and (algorithm == "cep" or (algorithm == "tbp" and optimizer == "sgd")))
        engine = "fast" if fast else "generic"
    device_reads = random_reads(device_model)
    device_label = getattr(device_model, "label", "")
    if device_reads in PER_EXAMPLE_READS:
        if engine != "generic":
            raise PhysgradError(
                f"device {device_label!r}: read noise resampled per {device_reads} needs the generic engine (--engine "
                f"generic, one relaxation per example); the fast engine can only share one realisation per step "
                f"between the free and nudged phases: use a device file with [read_noise] resample = \"step\" for that")
        if algorithm in ("tbp", "rbp"):
            raise PhysgradError(
                f"device {device_label!r}: {algorithm} unrolls the minimizer's sweeps and cannot read through the "
                f"device per {device_reads}; use [read_noise] resample = \"step\" (one realisation per step) or an "
                f"EP/CpL rule")
    if engine == "generic":
        if backend not in ("auto", "numpy"):
            why = " with weight decay" if weight_decay and not convolutional else ""
            raise PhysgradError(f"backend {backend!r} runs the fast engine only; the generic engine (algorithm "
                                f"{algorithm!r}{why}) is the numpy reference: use --backend numpy (or auto)")
        return EnginePlan("generic", "numpy", algorithm, optimizer, "RuleStepper")
    if convolutional:
        if algorithm not in CONV_FAST_ALGORITHMS:
            raise PhysgradError(f"the fast engine of convolutional Hopfield presets implements "
                                f"{', '.join(CONV_FAST_ALGORITHMS)}, not {algorithm!r}: use --engine generic")
        if algorithm == "tbp" and backend != "torch":
            raise PhysgradError("truncated backprop (tbp) on the fast engine of convolutional presets differentiates "
                                "through the sweeps with torch autograd: use --backend torch, or --engine generic")
        kernel = "torch" if backend == "torch" else "numpy"
        note = None if backend != "numba" else "no compiled convolution kernel: --backend numba runs the numpy kernel"
        return EnginePlan("fast", kernel, algorithm, optimizer, "ConvEPStepper", torch_device=torch_device, note=note,
                          conv_dtype=conv_dtype)
    if weight_decay:
        raise PhysgradError("weight decay (--weight-decay > 0) runs on the generic engine and on the fast kernel of "
                            "convolutional (dchn) presets; the fused DRN/DHN kernels do not apply it: use --engine "
                            "generic, or --weight-decay 0")
    if algorithm not in FAST_ALGORITHMS:
        raise PhysgradError(f"the fast engine implements cep and tbp (centered EP and truncated backprop), "
                            f"not {algorithm!r}: use --engine generic")
    if algorithm == "tbp":
        if backend not in ("auto", "numpy"):
            raise PhysgradError(f"backend {backend!r} runs centered EP only; truncated backprop (tbp) on the fast "
                                f"engine runs on the numpy backend: use --backend numpy (or auto), or --engine generic")
        if optimizer != "sgd":
            raise PhysgradError(f"optimizer {optimizer!r} with tbp needs --engine generic (the fast "
                                f"truncated-backprop kernel applies SGD in place)")
        return EnginePlan("fast", "numpy", algorithm, optimizer, "FusedTBPStepper", amplified=amplified)
    note = None
    if backend == "auto":
        backend = "numba" if numba_available else "numpy"
        if not numba_available:
            from physgrad.layered.kernels import numba_cpu
            note = ("numba is not importable: the fast engine runs on the numpy kernel (several times slower "
                    "at batch 4); " + numba_cpu.INSTALL_HINT)
    if backend == "numba":
        if not numba_available:
            from physgrad.layered.kernels import numba_cpu
            raise PhysgradError(f"--backend numba: {numba_cpu.INSTALL_HINT}; or use --backend numpy")
        return EnginePlan("fast", "numba", algorithm, optimizer, "CompiledCEPStepper", amplified=amplified)
    if backend == "torch":
        if optimizer != "sgd":
            raise PhysgradError(f"optimizer {optimizer!r} on the torch backend: its kernel applies SGD in place; "
                                f"use --backend numba or numpy (the compiled kernel and the numpy array stepper "
                                f"run momentum and adam)")
        if amplified:
            raise PhysgradError("amplifiers between layers on the torch backend: use --backend numba or numpy (the "
                                "fast engine runs them as the equivalent plain DRN) or --engine generic")
        return EnginePlan("fast", "torch", algorithm, optimizer, "TorchCEPStepper", torch_device=torch_device)
    stepper = "FusedCEPStepper" if optimizer == "sgd" else "OptimizerCEPStepper"
    return EnginePlan("fast", "numpy", algorithm, optimizer, stepper, amplified=amplified, note=note)

"""``physgrad train``: train a layered network (DRN or DHN preset) on an MNIST-format dataset.

A run folder holds everything needed to reproduce and continue it:

* ``config.json`` -- the resolved configuration, preset, command line and versions;
* ``metrics.csv`` -- one row per epoch: ``epoch, train_error, test_error, train_seconds,
  eval_seconds, lr_scale`` (errors in %; train error is the running error of the free phases); with
  ``energy`` also ``energy_free_J, energy_nudged_J, energy_program_J`` (J per example, the epoch's
  mean; empty when unknown: :mod:`physgrad.layered.energy`) and ``energy.png``;
* ``checkpoint.npz`` -- parameters, the warm-start state, the position in the epoch, written after
  every epoch and on SIGINT/SIGTERM (Ctrl-C finishes the current batch -- or the current compiled call
  of up to :data:`CHUNK_BATCHES` batches, see below -- saves, and exits);
  ``--resume`` continues from it bit-for-bit. Written atomically (a temporary file, fsync,
  ``os.replace``) with the SHA-256 of its arrays stored inside, verified on load;
* ``learning_curve.png``.

Device models (``device_model``, ``--device-model NAME|FILE``): a preset of
:func:`physgrad.devices.get_device` or a JSON/TOML file; the weights :math:`W_k` are devices, the
biases are not. A non-ideal device wraps the engine's stepper in
:class:`physgrad.layered.device_model.DeviceStepper` (reads before, ``device.update`` after each step;
evaluation reads once). The device state rides in the checkpoint (``device.*`` arrays and
``device_meta``, under the same checksum) and ``config.json`` records the device's dict
(``device``); the ideal device (the default) runs the plain stepper, bit-for-bit as without it.

``config.json`` also records the data folder used and the SHA-256 of its four files (``data``);
``--resume`` refuses data whose checksums differ from the recorded ones.

The folder is claimed and locked for the run (:meth:`physgrad.runs.RunFolder.claim`: a foreign
non-empty ``--out`` is refused unless ``--overwrite``, which never replaces files physgrad did not
write; a second writer exits 2 naming the first), and every file is written atomically.

``--resume`` validates everything it reads back (config, checkpoint checksum, keys, shapes, dtypes,
the position in the epoch, metrics rows) and refuses a damaged run folder with
:class:`CorruptRunError` (exit 2) before changing anything in it.

Interrupted runs: after SIGINT or SIGTERM the checkpoint is saved and :func:`train` returns its
metrics with ``interrupted`` set to the signal number; ``physgrad train`` then exits with
128 + signal (130 for SIGINT, 143 for SIGTERM), as a shell reports a process killed by it, so that
scripts can tell an interrupted run from a finished one (exit 0).

Same seed, same result: the initial parameters come from ``default_rng(seed)`` (the energy's
``init_theta``, the same for every engine) and the order of epoch ``e`` from ``default_rng([seed, e])``;
the fused kernel sums partial products in a fixed order.

Engines (:mod:`physgrad.layered.steppers`): ``cep`` (centered EP) runs on the fast engine
(``--engine fast``, the default for it) with one of three backends (``--backend``): ``numba``, the
compiled CPU kernel of :mod:`physgrad.layered.kernels.numba_cpu` (the default when numba is installed);
``numpy``, the fused numpy kernel of :mod:`physgrad.layered.fused` (the reference, and the fallback
without numba); ``torch``, :mod:`physgrad.layered.kernels.torch_backend` on ``--device cpu|cuda``.
With ``numba`` and SGD without a device model, the loop hands the stepper several batches per compiled
call (:meth:`~physgrad.layered.steppers.CompiledCEPStepper.run_batches`, at most :data:`CHUNK_BATCHES`,
ending on the parameter average's batches and before a short last batch: :func:`_chunk_stop`), bit for
bit the batch-by-batch route; the other steppers take one call per batch.
Checkpoints are host numpy arrays, so a run resumes on any backend (``--backend``, ``--device`` and
``--threads`` may change on ``--resume``; the continuation then differs by rounding). ``tbp``
(truncated backprop) also runs on the fast engine by default, on the numpy kernel of
:mod:`physgrad.layered.fused_tbp`. Every algorithm,
``cep`` included, runs on the generic engine (``--engine generic``): the preset's energy
(:class:`physgrad.energies.layered.DeepResistive` / :class:`~physgrad.energies.layered.DeepHopfield`),
:class:`physgrad.minimizers.block.BlockCoordinateDescent` and the learning rules of
:mod:`physgrad.learning`.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal, Optional, get_args

import numpy as np

from physgrad.devices import DeviceState, device_from_spec, device_rng, device_to_dict
from physgrad.devices import Device as DeviceModel
from physgrad.circuit.power import NODE_CAPACITANCE, SETTLING_MULTIPLE
from physgrad.devices.energy import write_energy_of
from physgrad.layered.crossbar import PAIR_REFRESH, crossbar_device
from physgrad.layered.data import TRAIN_DATASETS, data_record, load_dataset
from physgrad.layered.energy import ENERGY_COLUMNS, ENERGY_PARTS, LayeredEnergyMeter, energy_kind
from physgrad.layered.optimizer import STATE_PREFIX as OPTIMIZER_PREFIX
from physgrad.layered.presets import MNIST_PIXELS, Preset, get_preset
from physgrad.layered.engines import EnginePlan, plan_engine, preset_traits
from physgrad.layered.steppers import initial_params, make_stepper, optimizer_state
from physgrad.runs import (CorruptRunError, MetricsLog, RunFolder, Rows, StopFlag, arrays_sha256, checkpoint_error,
                           device_arrays, plot_curve, pop_device_state, read_json, versions)
from physgrad.runs import load_checkpoint as load_arrays
from physgrad.runs import progress as progress_bar
from physgrad.runs import save_checkpoint as save_arrays
from physgrad.types import NotSolvedError, PhysgradError

Algorithm = Literal["cep", "pep", "nep", "cl", "pcpl", "ncpl", "ccpl", "tbp", "rbp"]
Engine = Literal["auto", "fast", "generic"]
Backend = Literal["auto", "numpy", "numba", "torch"]
TorchDevice = Literal["cpu", "cuda"]
ALGORITHMS = get_args(Algorithm)
ENGINES = get_args(Engine)
BACKENDS = get_args(Backend)
DEVICES = get_args(TorchDevice)
RESUME_MAY_CHANGE = ("epochs", "backend", "device", "threads")
RECIPE_OPTIONS = ("beta", "lr_schedule", "warmup_epochs", "lr_final", "ema_decay", "ema_every", "optimizer",
                  "momentum", "weight_decay", "zero_phase")
DTYPES = ("float32", "float64")
METRIC_FIELDS = ("epoch", "train_error", "test_error", "train_seconds", "eval_seconds", "lr_scale")
CHECKPOINT = "checkpoint.npz"

CHECKPOINT_SCALARS = {"epoch": "i", "batch": "i", "n_wrong": "i", "n_seen": "i", "train_seconds": "f",
                      "n_params": "i", "n_warm": "i"}


RUN_FILES = ("config.json", "metrics.csv", CHECKPOINT, "learning_curve.png", "energy.png")


class Metrics(Rows):
    """The metrics rows of :func:`train`; ``interrupted`` is the signal number (``signal.SIGINT``,
    ``signal.SIGTERM``) when the run stopped early after saving its checkpoint, else None."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run.

    Attributes
    ----------
    preset : str
        A name from :data:`physgrad.layered.presets.PRESETS`.
    algorithm : {"cep", "pep", "nep", "cl", "pcpl", "ncpl", "ccpl", "tbp", "rbp"}
    dataset : {"mnist", "fashion-mnist", "kmnist"}
    data_dir : str or None
    epochs, train_size, batch_size : int or None
        ``None`` = the preset's (``train_size`` None = the whole training set).
    test_size : int or None
        Evaluate on the first ``test_size`` test images (None = all).
    seed : int
    threads : int
        CPU threads: the fused engine splits its pass over ``W1`` between them (for a ``W1`` of at
        least 4 MB); evaluation and the generic engine give them to BLAS. Extra threads pay off
        only on cores that are otherwise idle (a batch-4 step is short, and a thread waiting for a
        busy core holds up the whole step).
    dtype : {"float32", "float64"}
    engine : {"auto", "fast", "generic"}
        ``fast``: the fused kernels of centered EP and truncated backprop (cep, tbp); ``generic``:
        energy + block minimizer + the learning rules of :mod:`physgrad.learning` (any algorithm);
        ``auto``: fast for cep and tbp (a DRN with amplifiers between layers runs on the fast engine
        as the plain DRN it is an exact reparametrisation of). Every rule of which engine, backend
        and stepper run what is :func:`physgrad.layered.engines.plan_engine` (:attr:`plan`).
    eta : float
        Coupled-learning amplitude (pcpl/ncpl/ccpl); contrastive learning (cl) always clamps to y.
    backend : {"auto", "numpy", "numba", "torch"}
        Kernel of the fast engine: ``numba`` the compiled CPU kernel (``physgrad[fast]``),
        ``numpy`` the reference fused kernel, ``torch`` torch tensors on ``device``
        (``physgrad[torch]``); ``auto``: numba when it is importable (a core dependency), else numpy
        (with a note). The generic engine and fast tbp are numpy (``auto`` or ``numpy`` only);
        ``momentum``/``adam`` run on numba (compiled) or numpy (the array stepper), not on torch.
    device : {"cpu", "cuda"}
        Torch device (the numpy and numba backends run on the cpu).
    lr_factor, beta, lr_schedule, warmup_epochs, lr_final, ema_decay, ema_every, optimizer, momentum, weight_decay, zero_phase : optional
        Training-recipe overrides of the preset (None = the preset's): ``lr_factor`` multiplies all
        of its learning rates; the others replace the :class:`~physgrad.layered.presets.Preset`
        fields of the same names (see there).
    input_gain : float or None
        Overrides the preset's DRN input gain (V); None = the preset's.
    amplifier_gains : tuple of float or None
        Overrides the preset's DRN amplifier gains ``(A_2, ..., A_L)``; None = the preset's, ``()``
        or all 1 = no amplifiers.
    device_model : str
        Conductance devices of the weights: a preset name of :func:`physgrad.devices.get_device`
        (``ideal``, ``levels16-stochastic``, ``pcm-pair``, ...) or a ``.json``/``.toml`` file
        (:func:`physgrad.devices.load_device`). Read noise resampled per phase or per example needs
        the generic engine (:func:`physgrad.layered.engines.plan_engine`). On a crossbar preset each
        weight is a differential pair of such devices (:func:`physgrad.layered.crossbar.crossbar_device`).
    algorithm, dataset : optional
        None (the default) = the preset's (:attr:`Preset.algorithm`, :attr:`Preset.dataset`); resolved
        on construction, so ``config.json`` always names them.
    energy : bool
        Record per example the energy of the free and nudged equilibria and the programming energy
        (:mod:`physgrad.layered.energy`; columns ``energy_free_J``, ``energy_nudged_J``,
        ``energy_program_J`` and ``energy.png``); runs on the generic engine.
    node_capacitance, settling_multiple : float
        F per node and RC time constants per phase of the energy model (defaults
        :data:`physgrad.circuit.power.NODE_CAPACITANCE`, :data:`~physgrad.circuit.power.SETTLING_MULTIPLE`).
    conv_dtype : {"full", "bfloat16"}
        Convolutional (dchn) presets on the torch backend: ``bfloat16`` runs the sweeps' convolutions
        on bfloat16 operands (AMX on CPUs that have it), everything else in ``dtype``.
    """

    preset: str = "drn-1h"
    algorithm: Optional[Algorithm] = None
    dataset: Optional[str] = None
    data_dir: Optional[str] = None
    epochs: Optional[int] = None
    train_size: Optional[int] = None
    test_size: Optional[int] = None
    batch_size: Optional[int] = None
    seed: int = 0
    threads: int = 1
    dtype: str = "float32"
    engine: Engine = "auto"
    eta: float = 0.5
    backend: Backend = "auto"
    device: TorchDevice = "cpu"
    lr_factor: Optional[float] = None
    beta: Optional[float] = None
    lr_schedule: Optional[str] = None
    warmup_epochs: Optional[float] = None
    lr_final: Optional[float] = None
    ema_decay: Optional[float] = None
    ema_every: Optional[int] = None
    optimizer: Optional[str] = None
    momentum: Optional[float] = None
    weight_decay: Optional[float] = None
    zero_phase: Optional[str] = None
    input_gain: Optional[float] = None
    amplifier_gains: Optional[tuple] = None
    device_model: str = "ideal"
    energy: bool = False
    node_capacitance: float = NODE_CAPACITANCE
    settling_multiple: float = SETTLING_MULTIPLE
    conv_dtype: str = "full"

    def __post_init__(self):
        base = get_preset(self.preset)
        if self.algorithm is None:
            object.__setattr__(self, "algorithm", base.algorithm)
        if self.dataset is None:
            object.__setattr__(self, "dataset", base.dataset)
        if not isinstance(self.energy, bool):
            raise PhysgradError(f"energy must be true or false, got {self.energy!r}")
        for name in ("node_capacitance", "settling_multiple"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise PhysgradError(f"{name} must be a finite number > 0, got {v!r}")
        if not isinstance(self.device_model, str) or not self.device_model:
            raise PhysgradError(f"device_model must be a preset name or a .json/.toml file, got {self.device_model!r}")
        if self.amplifier_gains is not None and isinstance(self.amplifier_gains, list):  # from config.json
            object.__setattr__(self, "amplifier_gains", tuple(self.amplifier_gains))
        if self.lr_factor is not None and not (math.isfinite(float(self.lr_factor)) and float(self.lr_factor) > 0):
            raise PhysgradError(f"lr_factor must be a finite number > 0, got {self.lr_factor}")
        if self.zero_phase == "relaxed" and self.algorithm in ("cep", "ccpl", "tbp", "rbp"):  # it would be ignored
            raise PhysgradError(f"zero_phase 'relaxed' is the unperturbed phase of the one-sided rules (pep, nep, cl, "
                                f"pcpl, ncpl); algorithm {self.algorithm!r} has none")
        if self.input_gain is not None and get_preset(self.preset).model != "drn":
            raise PhysgradError(f"input_gain is a DRN option; preset {self.preset!r} is a "
                                f"{get_preset(self.preset).model!r} network, whose inputs enter unscaled")
        self.resolved_preset  # the preset validates the overrides (recipe, input gain, amplifiers)
        for name, valid in (("algorithm", ALGORITHMS), ("dataset", TRAIN_DATASETS), ("engine", ENGINES),
                            ("dtype", DTYPES), ("backend", BACKENDS), ("device", DEVICES)):
            if getattr(self, name) not in valid:
                raise PhysgradError(f"{name} must be one of {valid}, got {getattr(self, name)!r}")
        for name in ("epochs", "train_size", "test_size", "batch_size"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise PhysgradError(f"{name} must be >= 1, got {v}")
        if not (0 < float(self.eta) <= 1):
            raise PhysgradError(f"eta must be in (0, 1], got {self.eta}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise PhysgradError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.threads < 1:
            raise PhysgradError(f"threads must be >= 1, got {self.threads}")
        preset = self.resolved_preset
        in_dtype = np.dtype(self.dtype).type
        scales = [("beta", preset.beta)] + ([("input_gain", preset.input_gain)] if preset.model == "drn" else [])
        for name, value in scales:  # e.g. beta = 1e308 is inf in float32: no learning, silently
            with np.errstate(over="ignore", under="ignore"):
                cast = in_dtype(value)
            if not (np.isfinite(cast) and cast > 0):
                raise PhysgradError(f"{name} = {value:g} is not a positive finite {self.dtype} (the run's dtype)")
        if (self.dataset == "digits") != (preset.n_inputs == 64):
            raise PhysgradError(f"preset {preset.name!r} takes {preset.n_inputs} inputs; dataset {self.dataset!r} has "
                                f"{64 if self.dataset == 'digits' else MNIST_PIXELS} pixels per image")
        if self.energy and energy_kind(preset) is None:
            raise PhysgradError(f"--energy: preset {preset.name!r} ({preset.model}) is neither a resistive circuit "
                                f"(drn-*) nor on a crossbar (crossbar-*): no physical energy is defined for it")
        self.plan  # the engine rules (physgrad.layered.engines): refused combinations raise here

    @property
    def resolved_device(self) -> DeviceModel:
        """The device model of ``device_model`` (read from its file each time); on a crossbar preset
        each weight a differential pair of it, refreshed every
        :data:`~physgrad.layered.crossbar.PAIR_REFRESH` updates (:func:`physgrad.layered.crossbar.crossbar_device`)."""
        device = device_from_spec(self.device_model)
        return crossbar_device(device, PAIR_REFRESH) if get_preset(self.preset).crossbar else device

    @property
    def resolved_preset(self) -> Preset:
        p = get_preset(self.preset)
        opts = {}
        if self.epochs is not None:
            opts["epochs"] = int(self.epochs)
        if self.batch_size is not None:
            opts["batch_size"] = int(self.batch_size)
        for name in RECIPE_OPTIONS:
            if getattr(self, name) is not None:
                opts[name] = getattr(self, name)
        if self.lr_factor is not None:
            f = float(self.lr_factor)
            opts["weight_lrs"] = tuple(f * v for v in p.weight_lrs)
            opts["bias_lrs"] = tuple(f * v for v in p.bias_lrs)
        if self.input_gain is not None:
            opts["input_gain"] = self.input_gain
        if self.amplifier_gains is not None:
            opts["amplifier_gains"] = self.amplifier_gains
        return p.with_options(**opts) if opts else p

    @property
    def plan(self) -> EnginePlan:
        """Engine, backend and stepper of this run: :func:`physgrad.layered.engines.plan_engine` (the
        one table of engine rules, also behind :func:`~physgrad.layered.steppers.make_stepper`)."""
        p = self.resolved_preset
        return plan_engine(self.engine, self.algorithm, self.backend, self.device, device_model=self.resolved_device,
                           energy=bool(self.energy), conv_dtype=self.conv_dtype, **preset_traits(p))

    @property
    def resolved_engine(self) -> str:
        """``fast`` or ``generic`` (:attr:`plan`)."""
        return self.plan.engine

    @property
    def resolved_backend(self) -> str:
        """``numba``, ``numpy`` or ``torch`` (:attr:`plan`: ``auto`` is numba for the fast engine when numba is
        importable, numpy otherwise, see :attr:`backend_note`). Raises :class:`PhysgradError` when
        the chosen backend's package is missing."""
        backend = self.plan.backend
        if backend == "torch":
            from physgrad.layered.kernels import torch_backend
            torch_backend.require(self.device, array_api=self.plan.stepper != "ConvEPStepper")
        return backend

    @property
    def backend_note(self) -> Optional[str]:
        """A note when ``auto`` fell back to the (slower) numpy kernel, else None."""
        return self.plan.note

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        valid = {f.name for f in fields(cls)}
        unknown = set(d) - valid
        if unknown:
            raise PhysgradError(f"unknown training option(s) {sorted(unknown)}; valid: {sorted(valid)}")
        return cls(**d)


def _host_warm(stepper, warm):
    return None if warm is None else list(stepper.to_host(warm))


def _backend_record(config: TrainConfig) -> dict:
    """The resolved backend, its versions, threads and determinism flags (``config.json``)."""
    from physgrad.layered.steppers import backend_info

    info = backend_info(config.resolved_backend, config.threads, config.device)
    if config.backend_note:
        info["note"] = config.backend_note
    return info


_arrays_sha256 = arrays_sha256  # the checksum of runs.save_checkpoint (older name, used by tests)


def save_checkpoint(path: Path, params, warm, *, epoch: int, batch: int, n_wrong: int, n_seen: int,
                    train_seconds: float, ema=None, optimizer_state=None,
                    device_state: Optional[DeviceState] = None, energy_sums=None) -> None:
    """Write the checkpoint atomically with the SHA-256 of its arrays (:func:`physgrad.runs.save_checkpoint`).
    ``ema``: the averaged parameters (``ema_decay > 0``), stored as ``ema_i`` with their count ``n_ema``;
    ``optimizer_state``: the stepper's optimizer arrays (``opt.*``, momentum / adam);
    ``device_state``: :func:`physgrad.runs.device_arrays` (``device.<name>``, ``device_meta``);
    ``energy_sums``: ``--energy`` runs, the epoch's summed energies so far (J, one per part of
    :data:`physgrad.layered.energy.ENERGY_PARTS`, NaN where unknown)."""
    arrays = {f"param_{i}": np.asarray(p) for i, p in enumerate(params)}
    arrays.update(device_arrays(device_state))
    if energy_sums is not None:
        arrays["energy_sums"] = np.asarray(energy_sums, dtype=np.float64)
    if warm is not None:
        arrays.update({f"warm_{i}": np.asarray(w) for i, w in enumerate(warm)})
    if ema is not None:
        arrays.update({f"ema_{i}": np.asarray(e) for i, e in enumerate(ema)}, n_ema=np.int64(len(ema)))
    for key, a in (optimizer_state or {}).items():
        if not key.startswith(OPTIMIZER_PREFIX):
            raise PhysgradError(f"optimizer state key {key!r} does not start with {OPTIMIZER_PREFIX!r}")
        arrays[key] = np.asarray(a)
    arrays.update(epoch=np.int64(epoch), batch=np.int64(batch), n_wrong=np.int64(n_wrong),
                  n_seen=np.int64(n_seen), train_seconds=np.float64(train_seconds),
                  n_params=np.int64(len(params)), n_warm=np.int64(0 if warm is None else len(warm)))
    save_arrays(path, arrays)


def load_checkpoint(path: Path, *, expect_params=None) -> dict:
    """Read and verify a checkpoint.

    Parameters
    ----------
    path : Path
    expect_params : sequence of arrays, optional
        Parameters of the same run (e.g. its initial ones): the checkpoint's must have their
        number, shapes and dtypes.

    Raises
    ------
    CorruptRunError
        Not a readable ``.npz``, a missing or extra key, a checksum that does not match the arrays,
        a scalar of the wrong kind, or parameters of the wrong number, shape or dtype.
    """
    path = Path(path)
    bad = checkpoint_error(path)
    arrays = load_arrays(path, required=CHECKPOINT_SCALARS)
    n_ema = arrays.get("n_ema", np.int64(0))  # optional: only runs with ema_decay > 0 write it
    optimizer_state = {k: arrays.pop(k) for k in [k for k in arrays if k.startswith(OPTIMIZER_PREFIX)]}
    scalars = {}
    for key, kind in CHECKPOINT_SCALARS.items():
        a = arrays[key]
        if a.shape != () or a.dtype.kind not in ("iu" if kind == "i" else "f"):
            raise bad(f"{key} is not a scalar {'integer' if kind == 'i' else 'float'} ({a.dtype}, shape {a.shape})")
        scalars[key] = int(a) if kind == "i" else float(a)
    n_params, n_warm = scalars["n_params"], scalars["n_warm"]
    if n_params < 1 or n_warm < 0:
        raise bad(f"n_params={n_params}, n_warm={n_warm}")
    device_state = pop_device_state(arrays, bad)
    if n_ema.shape != () or n_ema.dtype.kind not in "iu" or int(n_ema) not in (0, n_params):
        raise bad(f"n_ema is not 0 or n_params={n_params} ({n_ema!r})")
    n_ema = int(n_ema)
    energy_sums = arrays.pop("energy_sums", None)
    if energy_sums is not None:
        e = energy_sums
        if e.shape != (len(ENERGY_PARTS),) or e.dtype.kind != "f" or np.any(np.isinf(e)) or np.any(e[~np.isnan(e)] < 0):
            raise bad(f"energy_sums is not {len(ENERGY_PARTS)} energies >= 0 J (NaN: unknown): {e!r}")
        energy_sums = e.copy()
    expected = set(CHECKPOINT_SCALARS) | {f"param_{i}" for i in range(n_params)} | {f"warm_{i}" for i in range(n_warm)}
    if n_ema:
        expected |= {"n_ema"} | {f"ema_{i}" for i in range(n_ema)}
    if set(arrays) != expected:
        extra, lost = sorted(set(arrays) - expected), sorted(expected - set(arrays))
        raise bad(f"keys do not match n_params/n_warm (missing {lost}, unexpected {extra})")
    params = tuple(arrays[f"param_{i}"].copy() for i in range(n_params))
    warm = [arrays[f"warm_{i}"].copy() for i in range(n_warm)] or None
    ema = tuple(arrays[f"ema_{i}"].copy() for i in range(n_ema)) or None
    for i, p in enumerate(params):
        if p.dtype.kind != "f" or not np.all(np.isfinite(p)):
            raise bad(f"param_{i} is not a finite float array ({p.dtype})")
    for i, (e, p) in enumerate(zip(ema or (), params)):
        if e.shape != p.shape or e.dtype != p.dtype or not np.all(np.isfinite(e)):
            raise bad(f"ema_{i} is not a finite array like param_{i} ({e.dtype} {e.shape})")
    for i, w in enumerate(warm or ()):
        if w.dtype.kind != "f" or not np.all(np.isfinite(w)):
            raise bad(f"warm_{i} is not a finite float array ({w.dtype})")
    if expect_params is not None:
        if len(expect_params) != n_params:
            raise bad(f"{n_params} parameter arrays, the run has {len(expect_params)}")
        for i, (p, e) in enumerate(zip(params, expect_params)):
            if p.shape != e.shape or p.dtype != e.dtype:
                raise bad(f"param_{i} is {p.dtype} {p.shape}, the run's is {e.dtype} {e.shape}")
    if not math.isfinite(scalars["train_seconds"]) or scalars["train_seconds"] < 0:
        raise bad(f"train_seconds = {scalars['train_seconds']}")
    return {"params": params, "warm": warm, "ema": ema, "optimizer_state": optimizer_state, "epoch": scalars["epoch"], "batch": scalars["batch"],
            "n_wrong": scalars["n_wrong"], "n_seen": scalars["n_seen"], "train_seconds": scalars["train_seconds"],
            "device_state": device_state, "energy_sums": energy_sums}


def _check_position(ck: dict, path: Path, *, n_train: int, batch_size: int, n_epochs: int) -> None:
    """The checkpoint's place in the schedule must be one this run (of ``n_epochs`` epochs, as saved
    in its ``config.json``) can have written."""
    n_batches = -(-n_train // batch_size)
    epoch, batch, n_seen, n_wrong = ck["epoch"], ck["batch"], ck["n_seen"], ck["n_wrong"]
    why = None
    if not 0 <= epoch <= n_epochs:
        why = f"epoch {epoch} is outside the run's 0..{n_epochs} epochs"
    elif epoch == n_epochs and batch != 0:
        why = f"batch counter {batch} after the run's last epoch {n_epochs}"
    elif not 0 <= batch <= n_batches:
        why = f"batch counter {batch} is outside the epoch's 0..{n_batches} batches"
    elif n_seen != min(batch * batch_size, n_train):
        why = f"n_seen={n_seen} does not match batch {batch} of size {batch_size} ({n_train} training images)"
    elif not 0 <= n_wrong <= n_seen:
        why = f"n_wrong={n_wrong} outside 0..n_seen={n_seen}"
    if why:
        raise CorruptRunError(f"--resume: corrupted checkpoint {path}: {why}; the run folder cannot be continued")


def _read_run_config(cfg_path: Path) -> tuple:
    """``(config.json as a dict, the saved TrainConfig)``; a missing, unreadable or malformed file raises
    :class:`CorruptRunError`."""
    saved_all = read_json(cfg_path)
    try:
        if not isinstance(saved_all.get("config"), dict) or not isinstance(saved_all.get("preset"), dict):
            raise ValueError("no 'config' and 'preset' objects")
        if not isinstance(saved_all.get("data", {}), dict):
            raise ValueError("'data' is not an object")
        epochs = saved_all["preset"].get("epochs")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"preset epochs = {epochs!r}")
        saved = TrainConfig.from_dict(saved_all["config"])
    except (PhysgradError, ValueError, TypeError, KeyError) as exc:
        raise CorruptRunError(f"--resume: {cfg_path} is not a valid run configuration ({exc})") from None
    return saved_all, saved


def plot_learning_curve(metrics: list, path: Path, title: str = "", paper_error=None) -> None:
    """Train and test error (%) per epoch, log scale, with the paper's number as a line."""
    ep = [m["epoch"] for m in metrics]
    plot_curve(path, [{"ylabel": "error (%)", "log": True,
                       "lines": [("train (running, free phase)", ep, [m["train_error"] for m in metrics], "o-"),
                                 ("test", ep, [m["test_error"] for m in metrics], "s-")] if metrics else [],
                       "hlines": [] if paper_error is None else [(paper_error, f"paper {paper_error}%")]}], title)


def plot_energy(metrics: list, path: Path, title: str = "") -> None:
    """Energy per example (J, log scale) per epoch: free and nudged phases, programming."""
    lines = []
    for part, col, style in zip(ENERGY_PARTS, ENERGY_COLUMNS, ("o-", "s-", "x:")):
        pts = [(m["epoch"], m[col]) for m in metrics if m.get(col) is not None]
        if pts and all(v > 0 for _, v in pts):
            lines.append((part, [e for e, _ in pts], [v for _, v in pts], style))
    plot_curve(path, [{"ylabel": "energy per example (J)", "log": True, "lines": lines}], title)


def _step_energy(meter: LayeredEnergyMeter, stepper, preset: Preset) -> np.ndarray:
    """The last step's summed energies over its examples (J; NaN where unknown), one per part of
    :data:`physgrad.layered.energy.ENERGY_PARTS`, from the phases the generic stepper kept."""
    inner = getattr(stepper, "inner", stepper)
    params, xb, y1h, free, plus = inner.last
    upd = getattr(stepper, "last_update", None)
    leaves = None if upd is None else upd[2].leaves
    energy = inner.energy
    e_free = meter.phase(energy, params, xb, free, leaves=leaves)
    e_plus = None if plus is None else meter.phase(energy, params, xb, plus, beta=preset.beta, y=y1h, leaves=leaves)
    prog = None if upd is None else meter.programming(upd[0], upd[1], upd[2].leaves, upd[3].leaves)
    return np.array([np.nan if e_free is None else float(np.sum(e_free)),
                     np.nan if e_plus is None else float(np.sum(e_plus)),
                     np.nan if prog is None else float(prog)])


def _check_optimizer_arrays(arrays: dict, preset: Preset, path: Path) -> None:
    """The optimizer arrays of a checkpoint fit the preset's optimizer (none for SGD; finite numbers)."""
    bad = checkpoint_error(path)
    if preset.optimizer == "sgd" and arrays:
        raise bad(f"optimizer state {sorted(arrays)[:3]} in the checkpoint of an SGD run")
    if preset.optimizer != "sgd" and not arrays:
        raise bad(f"no optimizer state for optimizer {preset.optimizer!r}")
    for k, a in arrays.items():
        if a.dtype.kind not in "fiu" or not np.all(np.isfinite(a)):
            raise bad(f"optimizer array {k} is not finite numbers ({a.dtype})")


def _load_optimizer_state(stepper, arrays: dict, preset: Preset) -> None:
    if preset.optimizer == "sgd":
        if arrays:
            raise PhysgradError(f"optimizer state {sorted(arrays)[:3]} in the checkpoint of an SGD run")
        return
    if not arrays:
        raise PhysgradError(f"no optimizer state for optimizer {preset.optimizer!r}")
    stepper.load_state_arrays(arrays)


class _Average:
    """The exponential moving average of the parameters (host arrays) with decay ``d`` per batch,
    sampled every ``every`` batches (:attr:`Preset.ema_decay`); ``params`` is None when ``d = 0``."""

    def __init__(self, params, decay: float, every: int = 1):
        self.params = None if params is None else tuple(np.array(p, copy=True) for p in params)
        self.decay, self.every = float(decay), int(every)
        self._tmp = None if params is None else tuple(np.empty_like(p) for p in params)

    def after_batch(self, stepper, batch: int, n_batches: int) -> None:
        """Update after batch ``batch`` (0-based) of ``n_batches`` when ``every`` batches have passed
        since the last update or the epoch ends (a function of the position only, so a resumed run
        updates at the same batches)."""
        m = (batch + 1) % self.every or self.every
        if (batch + 1) % self.every == 0 or batch == n_batches - 1:
            self.update(stepper, m)

    def update(self, stepper, m: int = 1) -> None:
        """``bar <- d^m bar + (1 - d^m) theta``."""
        if self.params is None:
            return
        c = 1.0 - self.decay ** m
        for e, p, t in zip(self.params, stepper.to_host(), self._tmp):
            np.subtract(p, e, out=t)
            t *= t.dtype.type(c)
            e += t



CHUNK_BATCHES = 64
"""Most batches per compiled call of the training loop (:func:`_chunk_stop`): DRN-1H's 64 batches take
about 30 ms, so a stop signal is answered within that."""


def _chunk_stop(bi: int, n_batches: int, n_full: int, every: Optional[int], limit: Optional[int]) -> int:
    """The end (exclusive) of the batches from ``bi`` that the training loop runs in one call of the
    stepper's ``run_batches``, or ``bi`` for a call of ``step`` alone: at most :data:`CHUNK_BATCHES`
    batches, all full (of the ``n_full`` full batches among ``n_batches``), the batch after the last one
    full or none (the batch before a short last one takes ``step``), ending on the parameter average's
    batches (``every``; None: no average) -- so the average, the stop flag and the checkpoint see the
    same positions as batch by batch -- and not past ``limit`` (the testing hook's interruption)."""
    stop = min(bi + CHUNK_BATCHES, n_full if n_full == n_batches else n_full - 1)
    if every is not None:
        stop = min(stop, (bi // every + 1) * every)
    if limit is not None:
        stop = min(stop, limit)
    return max(stop, bi)


def _diverged(epoch: int, checkpoint: Path) -> str:
    """The message of a run whose parameters became non-finite in ``epoch`` (0-based; exit 1); the
    run folder's ``checkpoint`` (the last one saved, if any) is left as it is."""
    kept = (f"{checkpoint} (the last one saved) is kept" if checkpoint.exists() else "no checkpoint had been saved")
    return f"training diverged in epoch {epoch + 1} (non-finite parameters); {kept}; lower the learning rates"


def train(config: TrainConfig, out, *, resume: bool = False, overwrite: bool = False,
          progress: Optional[bool] = None, command: Optional[str] = None,
          _interrupt_after: Optional[int] = None) -> Metrics:
    """Run (or continue) a training run into folder ``out``; returns the metrics rows
    (:class:`Metrics`, whose ``interrupted`` is the signal number when SIGINT/SIGTERM stopped the run
    after saving its checkpoint).

    Parameters
    ----------
    config : TrainConfig
    out : path
        Run folder (:meth:`physgrad.runs.RunFolder.claim`: created; locked while the run lasts).
        Without ``resume`` it must not already hold a run, nor other files unless ``overwrite``.
    resume : bool
        Continue from ``out/checkpoint.npz`` (the saved config must equal ``config``).
    overwrite : bool
        Start a new run in a folder holding a train run or other files (files physgrad did not
        write are never replaced or deleted).
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).
    _interrupt_after : int, optional
        Testing hook: behave as if Ctrl-C arrived after this many batches.

    Raises
    ------
    CorruptRunError
        ``resume`` and a run folder that does not read back consistently (nothing is changed in it).
    PhysgradError
        Bad options, data or ``out`` (a foreign folder, a folder in use by another process).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PhysgradError(f"--out {out} is a file, not a folder; pass a folder for the run")
    data = load_dataset(config.dataset, config.data_dir)  # before creating anything: bad data leaves no folder
    n_train = len(data.x_train) if config.train_size is None else min(int(config.train_size), len(data.x_train))
    if config.resolved_preset.batch_size > n_train:  # its buffers would be sized by the batch, not the data
        raise PhysgradError(f"batch size {config.resolved_preset.batch_size} exceeds the {n_train} training images; "
                            f"give --batch-size {n_train} or less")
    with StopFlag() as stop:  # from here on a signal is answered at the next batch boundary (saved, 130/143)
        folder = RunFolder.claim(out, "train", resume=resume, overwrite=overwrite, will_write=RUN_FILES,
                                 run_files=(CHECKPOINT, "metrics.csv"), command=command)
        try:
            return _train(config, folder, data, resume, progress, command, _interrupt_after, stop)
        finally:
            folder.release()


def _train(config: TrainConfig, folder: RunFolder, data, resume: bool, progress, command, _interrupt_after,
           stop: StopFlag) -> Metrics:
    out = folder.path
    preset = config.resolved_preset
    cfg_path, ckpt_path, metrics_path = out / "config.json", out / CHECKPOINT, out / "metrics.csv"
    log = MetricsLog(metrics_path, METRIC_FIELDS + (ENERGY_COLUMNS if config.energy else ()), first=1,
                     optional=ENERGY_COLUMNS if config.energy else ())
    if resume:  # read and validate everything before changing anything in the run folder
        if not ckpt_path.exists() and not ckpt_path.is_symlink():
            raise PhysgradError(f"--resume: no checkpoint at {ckpt_path}")
        saved_all, saved = _read_run_config(cfg_path)
        diff = {k: (getattr(saved, k), getattr(config, k)) for k in asdict(config)
                if getattr(saved, k) != getattr(config, k) and k not in RESUME_MAY_CHANGE}
        if diff:
            raise PhysgradError(f"--resume: options differ from the saved run (saved, given): {diff}; "
                                f"only {', '.join(RESUME_MAY_CHANGE)} may change")
        if "device" in saved_all and saved_all["device"] != device_to_dict(config.resolved_device):
            raise PhysgradError(f"--resume: device model {config.device_model!r} is now "
                                f"{device_to_dict(config.resolved_device)}, the run's was {saved_all['device']}")
        now = json.loads(json.dumps(asdict(preset)))  # tuples as lists, like the saved copy
        changed = {k: (v, now[k]) for k, v in saved_all["preset"].items()
                   if k in now and k != "epochs" and v != now[k]}
        if changed:
            raise PhysgradError(f"--resume: the preset {preset.name!r} is defined differently from when the run "
                                f"started (saved, now): {changed}; continue with the physgrad version that "
                                f"started it, or start a new run")
        if saved.epochs != config.epochs and preset.lr_schedule == "cosine":
            raise PhysgradError("--resume: the cosine learning-rate schedule is laid out over the run's epochs "
                                f"({saved.resolved_preset.epochs}); it cannot be lengthened (start a new run)")
    record = data_record(data.source)
    if resume and saved_all.get("data") and saved_all["data"].get("files") != record["files"]:
        raise PhysgradError(f"--resume: the data in {record['folder']} differ from the run's (SHA-256 in "
                            f"{cfg_path}: {saved_all['data'].get('files')}, now: {record['files']})")
    dtype = np.dtype(config.dtype)
    n_train = len(data.x_train) if config.train_size is None else min(int(config.train_size), len(data.x_train))
    n_test = len(data.x_test) if config.test_size is None else min(int(config.test_size), len(data.x_test))
    x_train = (data.x_train[:n_train].astype(dtype) / dtype.type(data.scale))
    y_train = data.y_train[:n_train]
    x_test = (data.x_test[:n_test].astype(dtype) / dtype.type(data.scale))
    y_test = data.y_test[:n_test]

    B = preset.batch_size
    n_batches = -(-n_train // B)
    init = initial_params(preset, config.seed, dtype)
    device = config.resolved_device
    device_state = None
    if resume:
        ck = load_checkpoint(ckpt_path, expect_params=init)
        _check_position(ck, ckpt_path, n_train=n_train, batch_size=B, n_epochs=saved_all["preset"]["epochs"])
        params, warm, ema = ck["params"], ck["warm"], ck["ema"]
        device_state = ck["device_state"]
        if (device_state is None) != device.is_ideal:
            raise CorruptRunError(f"--resume: {ckpt_path} {'has no' if device_state is None else 'has a'} device "
                                  f"state, but the run's device model is {device.label!r}")
        if (ema is not None) != (preset.ema_decay > 0):
            raise CorruptRunError(f"--resume: corrupted checkpoint {ckpt_path}: averaged parameters "
                                  f"{'present' if ema is not None else 'missing'} but ema_decay = {preset.ema_decay}")
        epoch, start_batch = ck["epoch"], ck["batch"]
        if (ck["energy_sums"] is not None) != bool(config.energy):
            raise CorruptRunError(f"--resume: {ckpt_path} {'has' if ck['energy_sums'] is not None else 'has no'} "
                                  f"energy sums, but the run {'does not record' if not config.energy else 'records'} energy")
        energy_sums = ck["energy_sums"] if config.energy else None
        n_wrong, n_seen, t_train = ck["n_wrong"], ck["n_seen"], ck["train_seconds"]
        metrics = log.read(upto=epoch)
        _check_optimizer_arrays(ck["optimizer_state"], preset, ckpt_path)  # before anything is written
        changed = {k: getattr(config, k) for k in RESUME_MAY_CHANGE if getattr(saved, k) != getattr(config, k)}
        if changed:  # a longer schedule or another backend/thread count: the checkpoint is host numpy arrays
            saved_all["config"].update(changed)
            saved_all["preset"]["epochs"] = preset.epochs
            if set(changed) - {"epochs"}:
                saved_all.setdefault("resumed_with", []).append(
                    {"at_epoch": epoch, "changed": changed, "backend": _backend_record(config)})
                print(f"note: resuming with {changed}; rounding differs from the saved backend/threads, so the "
                      f"continuation is not bit-identical to an uninterrupted run", file=sys.stderr)
            folder.write_json("config.json", saved_all)
        if log.needs_rewrite():  # a row written after the last checkpoint: drop it, keep the others verbatim
            log.rewrite()
    else:
        folder.write_json("config.json", {"config": asdict(config), "preset": asdict(preset),
                                          "engine": config.resolved_engine, "backend": _backend_record(config),
                                          "device": device_to_dict(device), "data": record, "command": command,
                                          "versions": versions()})
        for stale in (CHECKPOINT, "metrics.csv", "learning_curve.png", "energy.png"):  # --overwrite: the previous run's files
            folder.remove(stale)
        params = init
        if not device.is_ideal:  # program the initial weights onto the devices (the biases are not devices)
            params, device_state = device.init(init, device_rng(config.seed, "init"),
                                               arrays=range(preset.energy().n_layers))
        ema = tuple(p.copy() for p in params) if preset.ema_decay > 0 else None
        warm, epoch, start_batch, n_wrong, n_seen, t_train = None, 0, 0, 0, 0, 0.0
        energy_sums = np.zeros(len(ENERGY_PARTS)) if config.energy else None
        metrics = []
    metrics = Metrics(metrics)
    if config.backend_note:
        print(f"note: {config.backend_note}", file=sys.stderr)
    show = sys.stderr.isatty() if progress is None else progress

    stepper = make_stepper(config.resolved_engine, preset, config.algorithm,
                           params if device.is_ideal else tuple(np.array(p, copy=True) for p in params),
                           threads=config.threads, eta=config.eta, backend=config.resolved_backend,
                           device=config.device, conv_dtype=config.conv_dtype)
    meter = None
    if config.energy:  # the generic engine (plan_engine): its RuleStepper keeps the phases of each step
        stepper.record = True
        meter = LayeredEnergyMeter.for_preset(preset, init, write_energy_of(config.device_model),
                                              config.node_capacitance, config.settling_multiple)
    if not device.is_ideal:
        from physgrad.layered.device_model import DeviceStepper
        from physgrad.layered.engines import PER_EXAMPLE_READS as PER_EXAMPLE
        from physgrad.layered.engines import random_reads
        stepper = DeviceStepper(stepper, device, params, device_state, config.seed,
                                read_through=random_reads(device) in PER_EXAMPLE,
                                in_place=not config.energy)  # --energy reads last_update (same arithmetic)
    batches_done = 0
    average = _Average(ema, preset.ema_decay, preset.ema_every)
    # several batches per compiled call where the stepper can (the compiled kernel's SGD without devices)
    chunked = meter is None and hasattr(stepper, "run_batches") and stepper.chunkable(x_train)
    if resume:
        try:
            _load_optimizer_state(stepper, ck["optimizer_state"], preset)
        except PhysgradError as exc:
            stepper.close()
            raise CorruptRunError(f"--resume: corrupted checkpoint {ckpt_path}: {exc}; the run folder cannot "
                                  f"be continued") from None

    def checkpoint(host, **position):
        """Save the run at the current ``epoch`` and warm start; ``position``: the batch counters."""
        save_checkpoint(folder.file(CHECKPOINT), host, _host_warm(stepper, warm), epoch=epoch, **position, ema=average.params,
                        optimizer_state=optimizer_state(stepper), device_state=getattr(stepper, "device_state", None),
                        energy_sums=energy_sums)

    def plot():
        plot_learning_curve(metrics, folder.file("learning_curve.png"), f"{preset.name} {config.algorithm} {config.dataset}",
                            preset.paper_error if config.algorithm == "cep" and config.dataset == "mnist" else None)

    try:
        with contextlib.nullcontext(stop) as flag:
            while epoch < preset.epochs:
                order = np.random.default_rng([config.seed, epoch]).permutation(n_train)
                lr_scale = preset.lr_scale(epoch, start_batch, n_batches)
                bar = progress_bar(n_batches, f"epoch {epoch + 1}/{preset.epochs}", not show, initial=start_batch)
                t0 = time.perf_counter()
                stepper.start_epoch(x_train, order, start_batch)
                bi = start_batch
                while bi < n_batches:
                    stop = bi
                    if chunked:
                        stop = _chunk_stop(bi, n_batches, n_train // B, average.every if average.params is not None
                                           else None, None if _interrupt_after is None
                                           else bi + max(_interrupt_after - batches_done, 1))
                    try:
                        if stop > bi:  # batches bi..stop-1 in one compiled call (the same numbers)
                            lrs = [preset.lr_scale(epoch, b, n_batches) for b in range(bi, stop)]
                            lr_scale = lrs[-1]
                            warm, pred = stepper.run_batches(x_train, order, y_train, bi, stop, warm, lrs)
                            idx = order[bi * B:stop * B]
                            first, bi = bi, stop - 1
                        else:
                            idx = order[bi * B:(bi + 1) * B]
                            nxt = order[(bi + 1) * B:(bi + 2) * B] if bi + 1 < n_batches else None
                            lr_scale = preset.lr_scale(epoch, bi, n_batches)
                            warm, pred = stepper.step(x_train, idx, y_train[idx], nxt, warm, lr_scale)
                            first = bi
                    except PhysgradError:  # a minimizer refusing non-finite parameters: the run diverged
                        if all(np.all(np.isfinite(a)) for a in stepper.to_host()):
                            raise
                        raise NotSolvedError(_diverged(epoch, folder.path / CHECKPOINT)) from None
                    if meter is not None:
                        energy_sums += _step_energy(meter, stepper, preset)
                    average.after_batch(stepper, bi, n_batches)  # (a chunk ends on the average's batches)
                    n_wrong += int(np.sum(pred.reshape(-1) != y_train[idx]))
                    n_seen += len(idx)
                    batches_done += bi + 1 - first
                    bar.update(bi + 1 - first)
                    if bi // 50 * 50 >= first:  # a batch that is a multiple of 50 was in this call
                        bar.set_postfix(err=f"{100.0 * n_wrong / max(n_seen, 1):.2f}%")
                    if flag.stop or (_interrupt_after is not None and batches_done >= _interrupt_after):
                        t_train += time.perf_counter() - t0
                        bar.close()
                        checkpoint(stepper.to_host(), batch=bi + 1, n_wrong=n_wrong, n_seen=n_seen,
                                   train_seconds=t_train)
                        print(f"saved {ckpt_path} (epoch {epoch + 1}, batch {bi + 1}/{n_batches}); "
                              f"continue with --resume", file=sys.stderr)
                        metrics.interrupted = flag.signum if flag.signum is not None else int(signal.SIGINT)
                        return metrics
                    bi += 1
                t_train += time.perf_counter() - t0
                bar.close()
                host = stepper.to_host()
                if not all(np.all(np.isfinite(a)) for a in host):
                    raise NotSolvedError(_diverged(epoch, folder.path / CHECKPOINT))
                t1 = time.perf_counter()
                pred = stepper.evaluate(stepper.params if average.params is None else average.params, x_test)
                t_eval = time.perf_counter() - t1
                row = {"epoch": epoch + 1, "train_error": 100.0 * n_wrong / max(n_seen, 1),
                       "test_error": 100.0 * float(np.mean(pred != y_test)), "train_seconds": t_train,
                       "eval_seconds": t_eval, "lr_scale": lr_scale}
                if energy_sums is not None:  # J per example over the epoch; absent (empty) where unknown
                    row.update({c: float(e) / n_seen for c, e in zip(ENERGY_COLUMNS, energy_sums)
                                if n_seen and not np.isnan(e)})
                    energy_sums = np.zeros(len(ENERGY_PARTS))
                with flag.critical():  # the row and the checkpoint agree even under a second Ctrl-C
                    metrics.append(row)
                    folder.file("metrics.csv")
                    log.append(row)
                    epoch, start_batch, n_wrong, n_seen, t_train = epoch + 1, 0, 0, 0, 0.0
                    checkpoint(host, batch=0, n_wrong=0, n_seen=0, train_seconds=0.0)
                if row["train_seconds"] >= 5.0 or epoch == preset.epochs:  # cheap runs: only at the end
                    plot()
                    if config.energy:
                        plot_energy(metrics, folder.file("energy.png"), f"{preset.name} {config.algorithm} "
                                    f"{config.dataset} {config.device_model}: energy per example")
                print(f"epoch {row['epoch']:3d}  train {row['train_error']:.2f}%  test {row['test_error']:.2f}%  "
                      f"({row['train_seconds']:.1f} s train, {row['eval_seconds']:.1f} s eval)", flush=True)
    finally:
        stepper.close()
    return metrics


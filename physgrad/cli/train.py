"""``physgrad train``: train a layered network (DRN or DHN preset) on an MNIST-format dataset.

See :mod:`physgrad.layered.train` for the run folder (config, metrics, checkpoints, plot) and resume.
"""
from __future__ import annotations

import argparse
import sys

from physgrad.cli._args import add_energy_options, energy_settings, positive_float
from physgrad.layered.data import TRAIN_DATASETS
from physgrad.layered.engines import COUPLED_ALGORITHMS
from physgrad.layered.kernels.conv_torch import CONV_DTYPES
from physgrad.layered.presets import LR_SCHEDULES, OPTIMIZERS, PRESETS
from physgrad.learning import ZERO_PHASES
from physgrad.layered.train import ALGORITHMS, BACKENDS, DEVICES, DTYPES, ENGINES, TrainConfig, train
from physgrad.types import PhysgradError


def register(sub) -> None:
    """Add ``train`` to an ``add_subparsers()`` object."""
    p = sub.add_parser("train", help="train a layered network (DRN/DHN preset) on MNIST-format data",
                       description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="drn-1h", choices=list(PRESETS), help="network and training recipe, default drn-1h")
    p.add_argument("--algorithm", default=None, choices=ALGORITHMS,
                   help="learning rule, default the preset's (cep, centered EP; crossbar-digits: pep, the activity difference)")
    p.add_argument("--dataset", default=None, choices=sorted(TRAIN_DATASETS),
                   help="dataset, default the preset's (mnist; crossbar-digits: digits, the 8 x 8 digits shipped with physgrad)")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset's IDX files (default: $PHYSGRAD_DATA, then the usual places; see physgrad download)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    p.add_argument("--train-size", type=int, default=None, help="use the first N training images (default: all)")
    p.add_argument("--test-size", type=int, default=None, help="evaluate on the first N test images (default: all)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="random seed, an integer >= 0")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for the fused pass over W1, evaluation and the generic engine's BLAS "
                        "(default 1; more threads pay off only on otherwise idle cores)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="floating-point type of weights and states, default float32")
    p.add_argument("--engine", default="auto", choices=ENGINES,
                   help="fast: the fused kernels (cep, tbp); generic: any algorithm on the numpy reference "
                        "route; auto: fast for cep and tbp")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="kernel of the fast engine: numba (compiled CPU, pip install 'physgrad[fast]'), numpy "
                        "(reference), torch (pip install 'physgrad[torch]'); auto: numba if installed, else numpy")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="torch device (--backend torch)")
    p.add_argument("--conv-dtype", default="full", choices=CONV_DTYPES,
                   help="dchn presets on --backend torch: precision of the convolutions in the sweeps (full: the "
                        "--dtype; bfloat16: bfloat16 operands, AMX on CPUs that have it; states and updates stay in --dtype)")
    p.add_argument("--input-gain", type=positive_float, default=None, help="DRN input gain g (V), overriding the preset's")
    p.add_argument("--amplifier-gains", type=_gains, default=None, metavar="A2,A3,...",
                   help="DRN: gains of bidirectional amplifiers between free layers, one per hidden layer "
                        "(e.g. 2,2 for two hidden layers; 'none' = no amplifiers), overriding the preset's; "
                        "runs on the generic engine")
    p.add_argument("--device-model", default="ideal", metavar="NAME|FILE",
                   help="conductance devices of the weights: a preset (ideal, levels{N}-nearest, levels{N}-stochastic, "
                        "digipot128, reram-sb, reram-es, pcm-pair) or a .json/.toml device file (default ideal)")
    p.add_argument("--eta", type=float, default=None,
                   help="coupled-learning amplitude (pcpl/ncpl/ccpl; refused with other algorithms), default 0.5")
    g = p.add_argument_group("training recipe (overrides of the preset; default: the preset's)")
    g.add_argument("--lr-factor", type=positive_float, default=None, help="multiply all the preset's learning rates")
    g.add_argument("--beta", type=positive_float, default=None, help="nudging strength beta (S for DRNs)")
    g.add_argument("--lr-schedule", default=None, choices=LR_SCHEDULES,
                   help="exponential: lr_decay**epoch (the papers'); cosine: warm-up then cosine decay per batch")
    g.add_argument("--warmup-epochs", type=float, default=None, help="linear warm-up length (cosine schedule)")
    g.add_argument("--lr-final", type=float, default=None, help="final factor of the cosine schedule, in [0, 1)")
    g.add_argument("--optimizer", default=None, choices=OPTIMIZERS,
                   help="sgd (in place in every kernel), momentum or adam (explicit gradient: the numpy array "
                        "stepper for cep, or --engine generic; adam's learning rates are steps in S)")
    g.add_argument("--momentum", type=float, default=None, help="heavy-ball coefficient of --optimizer momentum")
    g.add_argument("--weight-decay", type=float, default=None,
                   help="L2 weight decay lambda in [0, 1) on every parameter array (each step uses grad + lambda "
                        "* theta, as torch.optim.SGD; the comparative study: 3e-4); dchn presets and --engine generic")
    g.add_argument("--zero-phase", default=None, choices=ZERO_PHASES,
                   help="unperturbed state of the one-sided rules (pep, nep, cl, pcpl, ncpl): free (the free phase, "
                        "default) or relaxed (relaxed again from it for the same sweeps as the perturbed phase, as the "
                        "comparative study's code); dchn presets and --engine generic")
    g.add_argument("--ema-decay", type=float, default=None,
                   help="evaluate an exponential moving average of the parameters (decay per batch, in [0, 1))")
    g.add_argument("--ema-every", type=int, default=None, help="batches between updates of the average (16)")
    add_energy_options(p, "drn-* presets: the resistive network; crossbar-* presets: the crossbar's reads; "
                          "runs on the generic engine; physgrad.layered.energy")
    p.add_argument("--out", default=None, help="run folder (default runs/<preset>-<algorithm>-<dataset>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds a train run or other files: the files physgrad "
                        "wrote there are replaced; files it did not write are never replaced or deleted")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on a terminal)")
    p.set_defaults(func=run)


def _gains(text: str) -> tuple:
    """``"2,2"`` -> ``(2.0, 2.0)``; ``"none"`` -> ``()`` (values are checked by the energy)."""
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 2,2 or 'none', got {text!r}") from None


def run(args) -> int:
    """Train (or resume) into the run folder; print the last epoch's test error.

    Exit codes: 0 the run finished its schedule; 2 bad input (options, data, ``--out``, a corrupted
    run folder on ``--resume``); 130 / 143 interrupted by SIGINT / SIGTERM after saving the
    checkpoint (128 + signal; continue with ``--resume``); 130 also for a second Ctrl-C, which aborts
    at once (the last saved checkpoint is kept).
    """
    capacitance, settling = energy_settings(args)
    algorithm = args.algorithm or PRESETS[args.preset].algorithm
    if args.eta is not None and algorithm not in COUPLED_ALGORITHMS:  # it would be ignored
        raise PhysgradError(f"--eta is the amplitude of coupled learning ({', '.join(COUPLED_ALGORITHMS)}); the "
                            f"algorithm here is {algorithm}")
    cfg = TrainConfig(preset=args.preset, algorithm=args.algorithm, dataset=args.dataset, data_dir=args.data_dir,
                      epochs=args.epochs, train_size=args.train_size, test_size=args.test_size,
                      batch_size=args.batch_size, seed=args.seed, threads=args.threads, dtype=args.dtype,
                      engine=args.engine, eta=0.5 if args.eta is None else args.eta, backend=args.backend, device=args.device,
                      lr_factor=args.lr_factor, beta=args.beta, lr_schedule=args.lr_schedule,
                      warmup_epochs=args.warmup_epochs, lr_final=args.lr_final, ema_decay=args.ema_decay, ema_every=args.ema_every,
                      optimizer=args.optimizer, momentum=args.momentum, weight_decay=args.weight_decay,
                      zero_phase=args.zero_phase,
                      input_gain=args.input_gain, amplifier_gains=args.amplifier_gains,
                      device_model=args.device_model, energy=args.energy, node_capacitance=capacitance,
                      settling_multiple=settling, conv_dtype=args.conv_dtype)
    out = args.out or f"runs/{cfg.preset}-{cfg.algorithm}-{cfg.dataset}-s{cfg.seed}"
    try:
        metrics = train(cfg, out, resume=args.resume, overwrite=args.overwrite, progress=False if args.no_progress else None,
                        command=" ".join(sys.argv) if sys.argv else None)
    except KeyboardInterrupt:  # a second Ctrl-C: aborted at once, the last saved checkpoint is kept
        print(f"\naborted; {out} keeps its last saved checkpoint (continue with --resume)", file=sys.stderr)
        return 130
    if metrics:
        last = metrics[-1]
        print(f"{out}: epoch {int(last['epoch'])}, test error {last['test_error']:.2f}%")
    if getattr(metrics, "interrupted", None):
        return 128 + int(metrics.interrupted)  # 130 SIGINT, 143 SIGTERM: saved, not finished
    return 0

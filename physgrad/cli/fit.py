"""``physgrad fit NETLIST --data TRAIN.csv --inputs V1,... --outputs N1,...``: train a netlist's
conductances on a CSV dataset (see :mod:`physgrad.netlists.fit` for the run folder)."""
from __future__ import annotations

import argparse
import sys

import numpy as np

from physgrad.cli._args import add_energy_options, energy_settings, int_at_least, names


def _floats(text: str) -> tuple:
    try:
        values = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"expected finite comma-separated numbers, got {text!r}")
    return values


def register(sub) -> None:
    """Add ``fit`` to an ``add_subparsers()`` object."""
    from physgrad.netlists.fit import FIT_METHODS
    from physgrad.netlists.losses import LOSSES
    from physgrad.learning.optim import OPTIMIZERS

    p = sub.add_parser("fit", help="train a netlist's conductances on a CSV dataset",
                       description="Train the trainable resistors (.trainable, default all; or the resistors and "
                                   "sources named by --trainable) of NETLIST on a CSV "
                                   "dataset: each input source takes its value from the column of the same name; "
                                   "targets are the columns named like the output nodes (--loss mse) or a class "
                                   "column (--label-column with --loss levels|argmax|xent).")
    p.add_argument("netlist", help="SPICE netlist (physgrad subset)")
    p.add_argument("--data", required=True, help="training CSV (header line with column names)")
    p.add_argument("--test", default=None, help="test CSV (same columns)")
    p.add_argument("--inputs", required=True, type=names, help="comma-separated input source names")
    p.add_argument("--outputs", type=names, default=None,
                   help="comma-separated output node names (default: the netlist's .target nodes)")
    p.add_argument("--label-column", default=None, help="class column (classification)")
    p.add_argument("--loss", choices=LOSSES, default=None,
                   help="mse (default; targets from the output columns), levels (one output, a voltage level per "
                        "class), argmax (one output per class, squared hinge on the margin), xent (softmax "
                        "cross-entropy); default argmax with --label-column")
    p.add_argument("--method", choices=FIT_METHODS, default="cep",
                   help="learning rule: exact (KKT adjoint), pep/nep/cep (EP), cl, pcpl/ncpl/ccpl (coupled); default cep")
    p.add_argument("--beta", type=float, default=None, help="EP nudge (S); default 1e-4 x the median conductance of all resistors (as grad); "
                        "refused below round-off for the circuit's scales (exit 2, naming the smallest usable beta)")
    p.add_argument("--eta", type=float, default=None,
                   help="coupled-learning amplitude (pcpl, ncpl, ccpl; refused with other methods), default 0.1")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="default adam")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate; default adam 0.01 x median conductance (S per step), sgd/momentum "
                        "0.05 g^2/V^2 (g the median conductance, V the span of the source voltages)")
    p.add_argument("--g-min", type=float, default=None, help="smallest conductance (S); default 1e-3 x median")
    p.add_argument("--g-max", type=float, default=None, help="largest conductance (S); default none")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (passes over --data), default 20")
    p.add_argument("--batch-size", type=int, default=32, help="samples per learning step, default 32")
    p.add_argument("--eval-every", type=int, default=1, metavar="K",
                   help="evaluate the whole training and test sets every K epochs and after the last (default 1); "
                        "every epoch also records train_cost_in_epoch, the mean loss of its own free phases")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the sample order")
    p.add_argument("--levels", type=_floats, default=None,
                   help="class voltages for --loss levels (default evenly inside the span of the sources)")
    p.add_argument("--margin", type=float, default=None, help="--loss argmax margin (V), default 5%% of the span")
    p.add_argument("--temperature", type=float, default=None, help="--loss xent temperature (V), default 5%% of the span")
    p.add_argument("--device-model", default="ideal", metavar="NAME|FILE",
                   help="the trainable resistors are devices: a preset (ideal, levels{N}-nearest, "
                        "levels{N}-stochastic, digipot128, reram-sb, reram-es, pcm-pair) or a .json/.toml device "
                        "file; updates go through the devices, equilibria see what they read; default ideal")
    add_energy_options(p, "the netlist's resistors, diodes and nudge resistors; physgrad.netlists.energy")
    p.add_argument("--trainable", type=names, default=None, metavar="GLOBS",
                   help="comma-separated names or globs (*, ?, [...]; case-insensitive, as the netlist reader folds "
                        "names) of the elements to train: resistors (conductance, S) and independent sources that are "
                        "not inputs (V or A, e.g. the gate voltages of a transistor network); replaces the netlist's "
                        ".trainable line; default: its .trainable resistors, else every resistor. Trained sources and "
                        "transistor circuits take --method exact (the adjoint of the MNA equations, per sample)")
    p.add_argument("--bounds", action="append", default=[], metavar="NAME=LO:HI",
                   help="bounds of a trainable element (NAME a name or glob; repeatable): V for voltage sources, A for "
                        "current sources, S (conductance) for resistors, where it replaces [--g-min, --g-max]; "
                        "theta is clipped into them after every step; an initial value outside them is refused")
    p.add_argument("--source-lr", type=float, default=None,
                   help="learning rate of trained sources: adam V (or A) per step, default 0.01 x the span of the "
                        "source voltages; sgd/momentum V/V, default 0.05")
    p.add_argument("--out", default=None, help="run folder (default runs/fit-<netlist name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds a fit run or other files: the files physgrad "
                        "wrote there are replaced; files it did not write are never replaced or deleted")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on a terminal)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Train into the run folder; print one line per epoch and the folder's files.

    Exit codes: 0 finished; 2 bad input (options, files, ``--out``, a corrupted run folder on
    ``--resume``, a folder in use); 130 / 143 interrupted by SIGINT / SIGTERM after saving the
    checkpoint (continue with ``--resume``); 130 also for a second Ctrl-C, which aborts at once.
    """
    from pathlib import Path

    from physgrad.netlists.fit import FitSpec, fit_run

    from physgrad.netlists.grad import COUPLED
    from physgrad.types import PhysgradError

    capacitance, settling = energy_settings(args)
    if args.eta is not None and args.method not in COUPLED:  # it would be ignored
        raise PhysgradError(f"--eta is the amplitude of coupled learning ({', '.join(COUPLED)}); the method here is "
                            f"{args.method}")
    eta = {} if args.eta is None else {"eta": args.eta}
    spec = FitSpec(netlist=args.netlist, data=args.data, test=args.test, inputs=args.inputs, outputs=args.outputs,
                   label_column=args.label_column, loss=args.loss, method=args.method, beta=args.beta, **eta,
                   optimizer=args.optimizer, lr=args.lr, g_min=args.g_min, g_max=args.g_max, epochs=args.epochs,
                   batch_size=args.batch_size, seed=args.seed, levels=args.levels, margin=args.margin,
                   temperature=args.temperature, device_model=args.device_model,
                   eval_every=args.eval_every, energy=args.energy, node_capacitance=capacitance,
                   settling_multiple=settling, trainable=args.trainable, bounds=tuple(args.bounds),
                   source_lr=args.source_lr)
    out = args.out or f"runs/fit-{Path(args.netlist).stem}"
    try:
        rows = fit_run(spec, out, resume=args.resume, overwrite=args.overwrite,
                       progress=False if args.no_progress else None,
                       command=" ".join(["physgrad"] + sys.argv[1:]) if sys.argv else None)
    except KeyboardInterrupt:  # a second Ctrl-C: aborted at once, the last saved checkpoint is kept
        print(f"\naborted; {out} keeps its last saved checkpoint (continue with --resume)", file=sys.stderr)
        return 130
    files = [f for f in ("metrics.csv", "config.json", "checkpoint.npz", "learning_curve.png", "energy.png", "trained.cir")
             if (Path(out) / f).exists()]
    print(f"{out}: {', '.join(files)}")
    if rows.interrupted:
        return 128 + int(rows.interrupted)  # 130 SIGINT, 143 SIGTERM: saved, not finished
    return 0

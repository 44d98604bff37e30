"""``physgrad netlist layered --inputs N --hidden H --outputs M``: write a trainable netlist.

Argparse and printing only; the design is :mod:`physgrad.netlists.builder`.
"""
from __future__ import annotations

from physgrad.cli._args import int_at_least, nonnegative_float, positive_float

_count = int_at_least(0)


def register(sub) -> None:
    """Add ``netlist`` to an ``add_subparsers()`` object."""
    p = sub.add_parser("netlist", help="write a trainable netlist (layered: +x/-x inputs, diode hidden units)",
                       description="Write a netlist designed for physgrad fit on tabular data (see README, "
                                   "'Designing trainable circuits').")
    kinds = p.add_subparsers(dest="kind", required=True)
    q = kinds.add_parser("layered", help="inputs as +x/-x source pairs, bias sources, an optional hidden layer of "
                                         "diode units, skip connections to the outputs",
                         description="Each feature i drives sources vx<i> (+x) and vx<i>n (-x); the data needs both "
                                     "columns. Outputs o1..oM; hidden nodes h1..hH, each clipped by an ideal diode.")
    q.add_argument("--inputs", type=_count, required=True, help="number of input features N (2N sources)")
    q.add_argument("--hidden", type=_count, default=0, help="number of diode hidden units H (default 0: the crossbar)")
    q.add_argument("--outputs", type=_count, required=True, help="number of output nodes M (one per class for argmax)")
    q.add_argument("--resistance", type=positive_float, default=1000.0,
                   help="typical resistance (ohm) of the crossbar's resistors, default 1000 (1 mS)")
    q.add_argument("--hidden-scale", type=positive_float, default=0.1,
                   help="initial conductances into and out of the hidden layer, relative to the crossbar's; "
                        "default 0.1 (the circuit starts close to the crossbar)")
    q.add_argument("--bias", type=positive_float, default=1.0, help="bias source voltages +B and -B (V), default 1")
    q.add_argument("--vth", type=nonnegative_float, default=0.0, help="diode threshold (V), default 0")
    q.add_argument("--both-diodes", action="store_true",
                   help="clip each hidden unit on both sides (hard tanh; needs --vth > 0)")
    q.add_argument("--no-skip", action="store_true", help="leave out the direct input -> output resistors")
    q.add_argument("--no-bias", action="store_true", help="leave out the two bias sources (no per-unit offsets)")
    q.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the initial conductances (uniform 0.5-1.5 x)")
    q.add_argument("--out", default=None, help="netlist file to write (refused if it exists unless --overwrite); "
                                               "default: print to stdout")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    q.set_defaults(func=run)


def run(args) -> int:
    """Write (or print) the netlist."""
    from physgrad.netlists.builder import layered_netlist
    from physgrad.runs import write_new_file

    text = layered_netlist(args.inputs, args.hidden, args.outputs, g0=1.0 / args.resistance,
                           hidden_scale=args.hidden_scale, bias=args.bias, vth=args.vth, both=args.both_diodes,
                           skip=not args.no_skip, bias_sources=not args.no_bias, seed=args.seed)
    if args.out:
        write_new_file(args.out, text, args.overwrite)
        print(f"{args.out}: {text.count(chr(10))} lines")
    else:
        print(text, end="")
    return 0

"""``physgrad predict MODEL --data DATA.csv [--out PRED.csv]``: outputs of a trained netlist on new data.

Argparse and printing only; the work is :mod:`physgrad.netlists.predict`.
"""
from __future__ import annotations

import argparse
import json
import sys


def _names(text: str) -> tuple:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def register(sub) -> None:
    """Add ``predict`` to an ``add_subparsers()`` object."""
    p = sub.add_parser("predict", help="outputs of a trained netlist (or a fit run folder) on a CSV",
                       description="Solve MODEL for every row of a CSV: each input source takes the value of the "
                                   "column of the same name (V or A); the outputs are the output nodes' voltages "
                                   "(V). Prints RMSE when the CSV has columns named like the output nodes "
                                   "(targets) and accuracy when it has the label column.")
    p.add_argument("model", help="a physgrad fit run folder (trained.cir + config.json: inputs, outputs, loss and "
                                 "classes come from it) or a netlist (resistors in ohms)")
    p.add_argument("--data", required=True, help="CSV with a header line; columns named like the input sources")
    p.add_argument("--out", default=None,
                   help="predictions CSV to write (line, one column per output node in V, predicted and label "
                        "classes when classifying); refused if it exists unless --overwrite; default: none written")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--inputs", type=_names, default=None,
                   help="comma-separated input source names (default: the run's, or the netlist sources that "
                        "name a CSV column)")
    p.add_argument("--outputs", type=_names, default=None,
                   help="comma-separated output node names (default: the run's, or the netlist's .target nodes)")
    p.add_argument("--label-column", default=None,
                   help="class column (default: the run's); with a bare netlist the class is the largest output")
    p.add_argument("--json", action="store_true",
                   help="print the metrics (n, rmse_V, rmse_V_per_output, accuracy) as one strict JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    """Predict; write ``--out``; print the metrics. 0 when every equilibrium was certified."""
    from physgrad.netlists.predict import header_of, load_model, predict_table, predictions_csv, write_new_file

    model = load_model(args.model, args.inputs, args.outputs, args.label_column, columns=header_of(args.data))
    pred = predict_table(model, args.data)
    if args.out:
        write_new_file(args.out, predictions_csv(pred), args.overwrite)
    m = pred.metrics
    if args.json:
        print(json.dumps({"model": str(args.model), "data": str(args.data), "out": args.out,
                          "inputs": list(model.inputs), "outputs": list(model.outputs), **m},
                         indent=2, allow_nan=False))
        return 0
    print(f"{m['n']} rows; inputs {', '.join(model.inputs)}; outputs {', '.join(model.outputs)}")
    if "rmse_V" in m:
        per = ", ".join(f"{n} {v:.6g}" for n, v in m["rmse_V_per_output"].items())
        print(f"RMSE {m['rmse_V']:.6g} V ({per})")
    if "accuracy" in m:
        print(f"accuracy {100 * m['accuracy']:.2f} %")
    if args.out:
        print(f"predictions: {args.out}")
    elif "rmse_V" not in m and "accuracy" not in m:
        print("(no targets or labels in the data and no --out: nothing to report; give --out PRED.csv)",
              file=sys.stderr)
    return 0

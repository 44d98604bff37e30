"""``physgrad predict MODEL --data DATA.csv [--out PRED.csv]``: outputs of a trained netlist on new data;
``physgrad predict RUN --images FILES [--labels FILE] [--out PRED.csv] [--plot CONFUSION.png]``: classes of
images with a ``physgrad train`` run.

Argparse and printing only; the work is :mod:`physgrad.netlists.predict` and :mod:`physgrad.layered.predict`.
"""
from __future__ import annotations

import json
import sys

import numpy as np

from physgrad.cli._args import names


def register(sub) -> None:
    """Add ``predict`` to an ``add_subparsers()`` object."""
    p = sub.add_parser("predict", help="outputs of a trained netlist or fit run on a CSV; classes of images with a "
                                       "train run",
                       description="Solve MODEL for every row of a CSV: each input source takes the value of the "
                                   "column of the same name (V or A); the outputs are the output nodes' voltages "
                                   "(V). Prints RMSE when the CSV has columns named like the output nodes "
                                   "(targets) and accuracy when it has the label column. With a physgrad train "
                                   "run folder: the class of each image (--images), accuracy and a confusion "
                                   "matrix with --labels.")
    p.add_argument("model", help="a physgrad fit run folder (trained.cir + config.json: inputs, outputs, loss and "
                                 "classes come from it), a netlist (resistors in ohms), or a physgrad train run "
                                 "folder (with --images)")
    p.add_argument("--data", default=None,
                   help="CSV with a header line; columns named like the input sources (netlists and fit runs)")
    p.add_argument("--images", nargs="+", default=None, metavar="FILE|DIR",
                   help="train runs: images as IDX files (.gz too), .npy arrays (n, H, W) or (n, H*W), PNG files or "
                        "folders of PNGs; pixels 0..255 (integers; 0..16 for a run on --dataset digits) or 0..1")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="train runs: true classes (IDX or .npy, one per image) for the accuracy and the confusion "
                        "matrix")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="train runs with --labels: write the confusion matrix here (refused if it exists unless "
                        "--overwrite)")
    p.add_argument("--out", default=None,
                   help="predictions CSV to write (line, one column per output node in V, predicted and label "
                        "classes when classifying); refused if it exists unless --overwrite; default: none written")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (or --plot) file")
    p.add_argument("--inputs", type=names, default=None,
                   help="comma-separated input source names (default: the run's, or the netlist sources that "
                        "name a CSV column)")
    p.add_argument("--outputs", type=names, default=None,
                   help="comma-separated output node names (default: the run's, or the netlist's .target nodes)")
    p.add_argument("--label-column", default=None,
                   help="class column (default: the run's); with a bare netlist the class is the largest output")
    p.add_argument("--json", action="store_true",
                   help="print the metrics (n, rmse_V, rmse_V_per_output, accuracy) as one strict JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    """Predict; write ``--out``; print the metrics. 0 when every equilibrium was certified."""
    from physgrad.layered.predict import train_run_record
    from physgrad.netlists.predict import header_of, load_model, predict_table, predictions_csv
    from physgrad.runs import write_new_file
    from physgrad.types import PhysgradError

    record = train_run_record(args.model)
    if record is not None:
        return _run_images(args, record)
    if args.images or args.labels or args.plot:
        raise PhysgradError(f"--images, --labels and --plot need a physgrad train run folder; {args.model} is not one")
    if args.data is None:
        raise PhysgradError("--data CSV is required with a netlist or a fit run")
    columns = header_of(args.data)
    if args.label_column is not None and args.label_column.strip().lower() not in columns:  # named, so expected
        raise PhysgradError(f"{args.data}:1: no column {args.label_column!r} (--label-column); the columns are: "
                            f"{', '.join(columns)}")
    model = load_model(args.model, args.inputs, args.outputs, args.label_column, columns=columns)
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


def _run_images(args, record: dict) -> int:
    """A train run on images (``record``: its ``config.json``, read once): predictions CSV, accuracy and
    confusion matrix."""
    from pathlib import Path

    from physgrad.layered.predict import (confusion_matrix, plot_confusion, predict_run, predictions_csv,
                                          read_images, read_labels, run_pixel_scale)
    from physgrad.runs import write_new_file
    from physgrad.types import PhysgradError

    if not args.images:
        raise PhysgradError(f"{args.model} is a physgrad train run: give the images with --images")
    if args.data or args.inputs or args.outputs or args.label_column:
        raise PhysgradError("--data, --inputs, --outputs and --label-column are for netlists and fit runs")
    if args.plot and not args.labels:
        raise PhysgradError("--plot draws the confusion matrix: it needs --labels")
    if args.plot and Path(args.plot).exists() and not args.overwrite:
        raise PhysgradError(f"{args.plot}: exists; give --overwrite to replace it, or another --plot")
    x, names = read_images(args.images, run_pixel_scale(args.model, record))
    labels = read_labels(args.labels) if args.labels else None
    pred = predict_run(args.model, x, labels, names, record)
    if args.out:
        write_new_file(args.out, predictions_csv(pred), args.overwrite)
    k = pred.outputs.shape[1]
    counts = np.bincount(pred.predicted, minlength=k)
    m = None if labels is None else confusion_matrix(labels, pred.predicted, k)
    if args.plot:
        plot_confusion(m, args.plot, f"{Path(args.model).name}: {len(x)} images, accuracy {100 * pred.accuracy:.2f} %",
                       args.overwrite)
    if args.json:
        print(json.dumps({"model": str(args.model), "n": len(x), "predicted_counts": counts.tolist(),
                          "accuracy": pred.accuracy, "confusion": None if m is None else m.tolist(),
                          "out": args.out, "plot": args.plot}, indent=2, allow_nan=False))
        return 0
    print(f"{len(x)} images; predicted classes: " + ", ".join(f"{j}: {c}" for j, c in enumerate(counts)))
    if pred.accuracy is not None:
        print(f"accuracy {100 * pred.accuracy:.2f} %")
    for label, path in (("predictions", args.out), ("confusion matrix", args.plot)):
        if path:
            print(f"{label}: {path}")
    return 0

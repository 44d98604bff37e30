"""Experiment (d), ex situ: program an ideally trained DRN-XS onto faulty devices and evaluate it.

For each device file, the faulty chip is the one the in situ run trained on: ``device.init`` on the
run's initial parameters with ``device_rng(seed, "init")`` (the same draws of stuck devices and
device-to-device spread). The ideal run's trained weights are written onto it with
``device.program`` (write-verify: clipped to each device's bounds, nearest level for constant-step
devices, stuck devices keep their value) and evaluated on the full test set at the programmed
conductances (these devices have no drift or read noise).

    python3 reports/experiments/devices/exsitu.py --ideal-run RUN --data-dir <data> DEVICE.json ...

Prints a CSV ``device,exsitu_test_error`` (%).
"""
import argparse
import json
from pathlib import Path

import numpy as np

from physgrad.devices import device_from_spec, device_rng
from physgrad.layered.data import load_dataset
from physgrad.layered.steppers import initial_params, make_stepper
from physgrad.layered.train import TrainConfig, load_checkpoint


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ideal-run", required=True, help="run folder of the ideal training run")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("devices", nargs="+")
    args = ap.parse_args()
    run = Path(args.ideal_run)
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text())["config"])
    preset = cfg.resolved_preset
    trained = load_checkpoint(run / "checkpoint.npz")["params"]
    init = initial_params(preset, cfg.seed, np.dtype(cfg.dtype))
    data = load_dataset(cfg.dataset, args.data_dir)
    x = data.x_test.astype(np.float32) / np.float32(255)
    y = data.y_test
    stepper = make_stepper("fast", preset, "cep", tuple(p.copy() for p in trained), backend="numpy")
    try:
        err = 100.0 * float(np.mean(stepper.evaluate(trained, x) != y))
        print("device,exsitu_test_error")
        print(f"ideal,{err:.2f}")
        for spec in args.devices:
            device = device_from_spec(spec)
            _, state = device.init(init, device_rng(cfg.seed, "init"), arrays=range(preset.energy().n_layers))
            programmed, state = device.program(trained, state)
            read = device.read(programmed, None, state)
            err = 100.0 * float(np.mean(stepper.evaluate(tuple(read), x) != y))
            print(f"{Path(spec).stem},{err:.2f}", flush=True)
    finally:
        stepper.close()


if __name__ == "__main__":
    main()

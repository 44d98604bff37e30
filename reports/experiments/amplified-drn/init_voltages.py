"""Voltages of DRN-2H at initialisation (seed 0) on the first 200 MNIST training images, free phase of
5 sweeps from 0 V, for the input gains / amplifier gains of the experiment.

``python3 reports/experiments/amplified-drn/init_voltages.py <data>``
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from physgrad.layered.data import load_dataset  # noqa: E402
from physgrad.layered.presets import get_preset  # noqa: E402
from physgrad.layered.steppers import initial_params  # noqa: E402

threadpool_limits(1)
x = np.asarray(load_dataset("mnist", sys.argv[1] if len(sys.argv) > 1 else None).x_train[:200], np.float32) / 255
print("| input gain (V) | amplifier gains | mean abs output (V) | max abs hidden 1 (V) | max abs hidden 2 (V) |")
print("|---:|---|---:|---:|---:|")
for g, gains in [(2000.0, ()), (480.0, ()), (480.0, (1.5, 1.5)), (480.0, (2.0, 2.0)), (480.0, (3.0, 3.0))]:
    p = get_preset("drn-2h").with_options(input_gain=g, amplifier_gains=gains)
    s = p.minimizer().minimize(p.energy(), initial_params(p, 0, "float32"), x).state
    print(f"| {g:g} | {', '.join(f'{a:g}' for a in gains) or 'none'} | {np.abs(s[-1]).mean():.3f} | "
          f"{np.abs(s[0]).max():.1f} | {np.abs(s[1]).max():.2f} |")

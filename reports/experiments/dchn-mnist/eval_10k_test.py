"""Test error of a dchn-mnist run folder's final parameters on all 10,000 MNIST test images (60 sweeps from zero).

Usage: ``PYTHONPATH=$PWD PHYSGRAD_DATA=<data> python3 reports/experiments/dchn-mnist/eval_10k_test.py RUN_FOLDER``
"""
import sys, time
import numpy as np
from physgrad.layered.data import load_dataset
from physgrad.layered.presets import get_preset
from physgrad.layered.steppers import make_stepper
from physgrad.layered.train import load_checkpoint

run = sys.argv[1]
ck = load_checkpoint(run + "/checkpoint.npz")
params = tuple(np.asarray(p, dtype=np.float32) for p in ck["params"])
preset = get_preset("dchn-mnist")
data = load_dataset("mnist")
x = data.x_test.astype(np.float32) / np.float32(data.scale)
y = data.y_test
s = make_stepper("fast", preset, "cep", params, backend="torch")
t = time.process_time()
pred = s.evaluate(params, x)
s.close()
print(f"{run}: test error on {len(y)} images {100 * np.mean(pred != y):.2f} % ({time.process_time() - t:.0f} CPU s)")

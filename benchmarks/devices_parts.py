"""Per-part thread CPU time per step of DRN-XS device training (issue 19 item 3; reports/benchmarks/devices.md,
round 6).

Usage::

    PHYSGRAD_DATA=<data> python benchmarks/devices_parts.py ideal levels16-nearest digipot128 reram-sb reram-es

Each model trains one epoch of ``drn-xs`` (2,000 images, 500 test images, one thread) twice; the second
run counts. The parts of the device route (``DeviceStepper.step``, the compiled C-EP step, the devices'
in-place update and its compiled kernels, the next batch's drive) are wrapped with
``time.thread_time_ns``; the figures are microseconds of thread CPU per training step (the wrappers add
about 1 us each)."""
import os, sys, time, collections, shutil, tempfile, json
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(v, "1")
import numpy as np
from physgrad.layered import device_model, steppers
from physgrad.devices import pulsing, model as dmodel
from physgrad.layered.kernels import numba_cpu

T = collections.defaultdict(int); N = collections.defaultdict(int)
def wrap(owner, name, label):
    f = getattr(owner, name)
    def w(*a, **k):
        t = time.thread_time_ns()
        try:
            return f(*a, **k)
        finally:
            T[label] += time.thread_time_ns() - t; N[label] += 1
    setattr(owner, name, w)
wrap(device_model.DeviceStepper, "step", "0 DeviceStepper.step")
wrap(steppers.CompiledCEPStepper, "step", "1 inner.step")
wrap(steppers.CompiledCEPStepper, "start_epoch", "3 inner.start_epoch")
wrap(dmodel.Device, "update_in_place", "2 update_in_place")
wrap(pulsing, "_in_place_kernel", "2a _in_place_kernel")
wrap(pulsing, "_changed_rows", "2b _changed_rows")
wrap(pulsing, "_uniform_kernel", "2c _uniform_kernel")
wrap(numba_cpu.Workspace, "attach", "3a attach")
wrap(numba_cpu, "make_drive", "3b make_drive")
from physgrad.layered.train import TrainConfig, train
models = sys.argv[1:] or ["ideal"]
for m in models:
    for rep in range(2):
        T.clear(); N.clear()
        out = tempfile.mkdtemp(); shutil.rmtree(out)
        cfg = TrainConfig(preset="drn-xs", data_dir=os.environ["PHYSGRAD_DATA"], epochs=1, train_size=2000,
                          device_model=m, threads=1, test_size=500)
        t0 = time.process_time()
        train(cfg, out, progress=False)
        shutil.rmtree(out, ignore_errors=True)
    steps = max(N["1 inner.step"], 1)
    print(m, f"process {time.process_time()-t0:.2f}s", " | ".join(f"{k}: {T[k]/steps/1e3:.0f}us" for k in sorted(T)), flush=True)

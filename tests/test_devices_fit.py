"""Device models in ``physgrad fit``: the ideal device is the plain loop bit for bit; levels quantise
the fitted conductances; each device's bounds and stuck value hold; bad device models exit 2;
a run with random updates and reads resumes bit for bit; the ex situ route programs the same
devices; the sweep runs ``fit``."""
import json
from pathlib import Path

import numpy as np
import pytest

from physgrad.cli import main
from physgrad.devices import DeviceState
from physgrad.netlists.fit import (FitSpec, clip, evaluate, fit_run, gradient, program_devices, resolve)
from physgrad.learning import make_estimator, optim
from physgrad.minimizers.co_content import CoContentMinimizer

ROOT = Path(__file__).resolve().parents[1]
CIR = str(ROOT / "physgrad" / "examples" / "iris" / "iris16.cir")
DATA = ROOT / "reports" / "experiments" / "iris-16edge" / "data"
IRIS = dict(netlist=CIR, data=str(DATA / "split0-train.csv"), test=str(DATA / "split0-test.csv"),
            inputs=("vsl", "vsw", "vpl", "vpw"), outputs=("o1", "o2", "o3"), label_column="species",
            batch_size=16, lr=2e-5)
ARGS = [CIR, "--data", DATA / "split0-train.csv", "--inputs", "vsl,vsw,vpl,vpw", "--outputs", "o1,o2,o3",
        "--label-column", "species", "--epochs", "1", "--no-progress"]
FAULTY = """name = "faulty"
[bounds]
g_min = 1e-6
g_max = 3e-3
relative = false
[pulses]
dw_min = 0.01
rounding = "stochastic"
c2c = 0.2
[variability]
dw_min = 0.3
bounds = 0.3
[stuck]
fraction = 0.25
at = "random"
"""


def _fit(argv, capsys):
    code = main(["fit", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _ckpt(folder):
    with np.load(Path(folder) / "checkpoint.npz") as z:
        return {k: z[k].copy() for k in z.files}


def _device_state(ck):
    """The device state of a checkpoint (one key scheme for train and fit: physgrad.runs.device_arrays)."""
    return DeviceState.from_state({k[len("device."):]: v for k, v in ck.items() if k.startswith("device.")},
                                  json.loads(str(ck["device_meta"])))


def _metrics(folder):
    lines = (Path(folder) / "metrics.csv").read_text().splitlines()
    return [",".join(line.split(",")[:-1]) for line in lines]  # all but the seconds column


def test_ideal_device_is_the_plain_loop_bit_for_bit(tmp_path):
    spec = FitSpec(**IRIS, epochs=2, device_model="ideal")
    fit_run(spec, tmp_path / "run", progress=False, log=lambda s: None)
    ck = _ckpt(tmp_path / "run")
    assert not any(k.startswith("dev") for k in ck)  # the ideal device leaves no state
    # the loop written out with the library's pieces (the pre-device fit): clip, step, clip
    pb = resolve(FitSpec(**IRIS, epochs=2))
    r, m = pb.resolved, CoContentMinimizer()
    est = make_estimator(r["method"], beta=r["beta"], eta=r["eta"])
    theta = clip(pb.energy.theta0(), r["g_min"], r["g_max"])
    state = optim.init(r["optimizer"], theta)
    evaluate(pb, theta, pb.X, pb.Y, m), evaluate(pb, theta, pb.X_test, pb.Y_test, m)
    for epoch in range(2):
        m.clear_factors()
        order = np.random.default_rng([r["seed"], epoch]).permutation(len(pb.X))
        for i in range(0, len(order), 16):
            idx = order[i:i + 16]
            g = gradient(pb, theta, pb.X[idx], pb.Y[idx], m, est)
            theta, state = optim.step(r["optimizer"], theta, np.asarray(g, float), state, r["lr"])
            theta = clip(theta, r["g_min"], r["g_max"])
        evaluate(pb, theta, pb.X, pb.Y, m), evaluate(pb, theta, pb.X_test, pb.Y_test, m)
    np.testing.assert_array_equal(ck["theta"], theta)
    np.testing.assert_array_equal(ck["opt_m"], state["m"])


def test_levels_quantise_the_fitted_conductances(tmp_path, capsys):
    out = tmp_path / "run"
    code, text, _ = _fit([*ARGS, "--device-model", "levels16-nearest", "--lr", "2e-4", "--out", out], capsys)
    assert code == 0
    ck = _ckpt(out)
    pb = resolve(FitSpec(**IRIS))
    g_ref = np.max(clip(pb.energy.theta0(), pb.resolved["g_min"], None))
    k = ck["theta"] / (2 * g_ref / 15)  # 16 levels on [0, 2 g_ref]
    np.testing.assert_allclose(k, np.rint(k), atol=1e-9)
    assert np.all((np.rint(k) >= 0) & (np.rint(k) <= 15))
    assert len(np.unique(np.rint(k))) > 2
    assert json.loads((out / "config.json").read_text())["resolved"]["device"]["name"] == "levels16-nearest"
    if np.any(ck["theta"] == 0):  # a device at level 0: no SPICE netlist, and the log says why
        assert not (out / "trained.cir").exists() and "hold 0 S" in text


def test_each_devices_bounds_and_stuck_values_hold(tmp_path, capsys):
    dev = tmp_path / "faulty.toml"
    dev.write_text(FAULTY)
    out = tmp_path / "run"
    code, _, _ = _fit([*ARGS, "--device-model", dev, "--lr", "2e-4", "--epochs", "2", "--out", out], capsys)
    assert code == 0
    ck = _ckpt(out)
    cell = _device_state(ck).leaves[0].cells[0]
    theta = ck["theta"]
    assert np.all(theta >= cell.g_min) and np.all(theta <= cell.g_max)
    assert np.ptp(cell.g_max) > 0 and cell.stuck_index.size > 0  # variability and faults were drawn
    np.testing.assert_array_equal(theta[cell.stuck_index], cell.stuck_value)
    # ex situ: the same devices (same seed) hold the stuck values whatever is programmed
    pb = resolve(FitSpec(**IRIS, device_model=str(dev)))
    prog, dstate = program_devices(pb, np.full(16, 1e-3))
    c2 = dstate.leaves[0].cells[0]
    np.testing.assert_array_equal(c2.stuck_index, cell.stuck_index)
    np.testing.assert_array_equal(prog[cell.stuck_index], cell.stuck_value)
    free = np.setdiff1d(np.arange(16), cell.stuck_index)
    np.testing.assert_allclose(prog[free], np.minimum(1e-3, c2.g_max[free]), rtol=0, atol=0.01 * 3e-3)  # one level
    assert evaluate(pb, prog, pb.X_test, pb.Y_test, CoContentMinimizer(), dstate, 1)["accuracy"] >= 0


@pytest.mark.parametrize("extra, needle", [
    (["--device-model", "levels1-nearest"], "levels: the number of levels must be in 2..65536"),
    (["--device-model", "memristor9000"], "unknown device model 'memristor9000'; presets: ideal"),
    (["--device-model", "missing.toml"], "cannot read device model missing.toml"),
    (["--device-model", "BAD"], "unknown key(s) ['bound']"),
    (["--device-model", "pcm-pair", "--method", "exact"], "method 'exact' differentiates the network"),
])
def test_bad_device_models_exit_2(tmp_path, capsys, extra, needle):
    bad = tmp_path / "bad.toml"
    bad.write_text("[bound]\ng_min = 0\n")
    extra = [str(bad) if e == "BAD" else e for e in extra]
    code, _, err = _fit([*ARGS, *extra, "--out", tmp_path / "run"], capsys)
    assert code == 2
    assert needle in err
    assert not (tmp_path / "run").exists()


def test_random_updates_and_reads_resume_bit_for_bit(tmp_path):
    dev = tmp_path / "noisy.toml"
    dev.write_text(FAULTY + '[read_noise]\nsigma = 0.02\nresample = "example"\n')
    small = tmp_path / "small.csv"  # every other sample (60): read noise relaxes example by example
    lines = (DATA / "split0-train.csv").read_text().splitlines()
    small.write_text("\n".join(lines[:1] + lines[1::2]) + "\n")
    spec = FitSpec(**{**IRIS, "lr": 2e-4, "data": str(small)}, epochs=2, device_model=str(dev))
    fit_run(spec, tmp_path / "full", progress=False, log=lambda s: None)
    fit_run(spec, tmp_path / "part", progress=False, log=lambda s: None, _stop_after_epoch=1)
    fit_run(spec, tmp_path / "part", resume=True, progress=False, log=lambda s: None)
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "part")
    a, b = _ckpt(tmp_path / "full"), _ckpt(tmp_path / "part")
    assert set(a) == set(b)
    for k in a:
        if k not in ("seconds", "sha256"):  # the checksum covers the wall time too
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert _device_state(a).n_updates == 2 * 4  # 60 samples in batches of 16
    # another device model on resume is refused
    other = tmp_path / "other.toml"
    other.write_text(FAULTY.replace("fraction = 0.25", "fraction = 0.5"))
    with pytest.raises(Exception, match="device_model"):
        fit_run(FitSpec(**{**IRIS, "lr": 2e-4, "data": str(small)}, epochs=3, device_model=str(other)), tmp_path / "part",
                resume=True, progress=False, log=lambda s: None)


@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_read_noise_changes_what_is_measured_not_the_seed_stream(tmp_path):
    """Read noise is on the measurements: same seed, same devices, different accuracy curve from
    the noiseless device; the realisation is a pure function of the seed (two runs agree)."""
    dev = tmp_path / "levels.toml"
    base = "[bounds]\ng_min = 1e-6\ng_max = 3e-3\nrelative = false\n[pulses]\ndw_min = 0.01\n"
    dev.write_text(base)
    noisy = tmp_path / "noisy.toml"
    noisy.write_text(base + "[read_noise]\nsigma = 0.3\n")
    runs = {}
    for name, d in (("clean", dev), ("noisy", noisy), ("noisy2", noisy)):
        runs[name] = fit_run(FitSpec(**IRIS, epochs=1, device_model=str(d)), tmp_path / name, progress=False,
                             log=lambda s: None)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in runs["noisy"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in runs["noisy2"]]
    assert runs["clean"][0]["train_cost"] != runs["noisy"][0]["train_cost"]


@pytest.mark.slow  # a process pool of real fits, ~7 s of CPU
def test_sweep_runs_fit_on_the_local_pool(tmp_path):
    from physgrad.sweep import load_spec, run_sweep
    from physgrad.sweep.tasks import fit_error

    spec_path = tmp_path / "s.toml"
    spec_path.write_text(
        f'task = "fit"\nseeds = [3]\n[base]\nnetlist = "{CIR}"\ndata = "{DATA / "split0-train.csv"}"\n'
        f'test = "{DATA / "split0-test.csv"}"\ninputs = "vsl,vsw,vpl,vpw"\noutputs = ["o1", "o2", "o3"]\n'
        f'label-column = "species"\nepochs = 2\nbatch-size = 16\nlr = 2e-5\n'
        f'[grid]\ndevice-model = ["ideal", "levels64-stochastic"]\n')
    rows = run_sweep(load_spec(spec_path), tmp_path / "out", workers=1, engine="pool", progress=False,
                     log=lambda s: None)
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows), rows
    for r in rows:
        params = json.loads(r["params"])
        direct = fit_run(FitSpec(**{**IRIS, "epochs": 2, "seed": params["seed"],
                                    "device_model": params["device_model"]}), tmp_path / f"d{r['id']}",
                         progress=False, log=lambda s: None)
        assert float(r["final_error"]) == pytest.approx(fit_error({k: v for k, v in direct[-1].items()}), abs=0)
        assert int(r["epochs"]) == 2

"""Training-recipe options of layered training: learning-rate schedules, weight averaging (EMA),
recipe overrides (``lr_factor``, ``beta``), their checkpoints and resume."""
import json
import math

import numpy as np
import pytest

from physgrad.cli import main
from physgrad.layered import train as train_mod
from physgrad.layered.presets import get_preset
from physgrad.layered.train import CorruptRunError, TrainConfig, load_checkpoint, save_checkpoint, train
from physgrad.types import PhysgradError


def cfg(data_dir, **kw):
    base = dict(preset="drn-xs", data_dir=data_dir, epochs=2, train_size=40, threads=1, backend="numpy")
    base.update(kw)
    return TrainConfig(**base)


def ck(folder):
    return load_checkpoint(folder / "checkpoint.npz")


# --- the schedule -----------------------------------------------------------------------------------
def test_exponential_schedule_is_the_papers():
    p = get_preset("drn-1h")
    assert [p.lr_scale(e, b, 7) for e in range(3) for b in (0, 6)] == [1.0, 1.0, 0.99, 0.99, 0.99 ** 2, 0.99 ** 2]


def test_cosine_schedule_formula():
    p = get_preset("drn-xs").with_options(epochs=10, lr_schedule="cosine", warmup_epochs=2.0, lr_final=0.1)
    n = 100
    # warm-up: linear from 0 to 1 over two epochs
    assert p.lr_scale(0, 0, n) == 0.0
    assert p.lr_scale(1, 0, n) == pytest.approx(0.5)
    assert p.lr_scale(2, 0, n) == pytest.approx(1.0)
    # cosine from 1 to lr_final over epochs 2..10
    t = 6.0  # halfway through the decay
    assert p.lr_scale(6, 0, n) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (t - 2) / 8)))
    assert p.lr_scale(6, 0, n) == pytest.approx(0.55)
    assert p.lr_scale(9, n - 1, n) == pytest.approx(0.1, abs=1e-3)
    decay = [p.lr_scale(e, b, n) for e in range(2, 10) for b in range(0, n, 10)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))  # non-increasing after the warm-up
    assert all(0.1 <= s <= 1.0 for s in decay)


@pytest.mark.parametrize("opts, match", [
    (dict(lr_schedule="linear"), "lr_schedule must be one of"),
    (dict(warmup_epochs=1.0), "warmup_epochs needs lr_schedule = 'cosine'"),
    (dict(lr_schedule="cosine", warmup_epochs=10.0), r"warmup_epochs must be in \[0, epochs=10\)"),
    (dict(lr_final=1.0), r"lr_final must be in \[0, 1\)"),
    (dict(ema_decay=-0.1), r"ema_decay must be in \[0, 1\)"),
    (dict(ema_decay=1.0), r"ema_decay must be in \[0, 1\)"),
])
def test_bad_recipe_options(opts, match):
    with pytest.raises(PhysgradError, match=match):
        get_preset("drn-xs").with_options(**opts)
    with pytest.raises(PhysgradError, match=match):
        TrainConfig(preset="drn-xs", **opts)


def test_overrides_reach_the_preset():
    c = TrainConfig(preset="drn-2h", lr_factor=2.0, beta=0.5, lr_schedule="cosine", ema_decay=0.9)
    p, base = c.resolved_preset, get_preset("drn-2h")
    assert p.weight_lrs == tuple(2 * v for v in base.weight_lrs) and p.bias_lrs == tuple(2 * v for v in base.bias_lrs)
    assert (p.beta, p.lr_schedule, p.ema_decay) == (0.5, "cosine", 0.9)
    with pytest.raises(PhysgradError, match="lr_factor must be a finite number > 0"):
        TrainConfig(lr_factor=0.0)
    with pytest.raises(PhysgradError, match="beta must be a finite number > 0"):
        TrainConfig(beta=-1.0)


def test_the_loop_passes_the_schedule_per_batch(data_dir, tmp_path, monkeypatch):
    """The stepper receives ``preset.lr_scale(epoch, batch, n_batches)`` at every batch."""
    seen = []
    real = train_mod.make_stepper

    def spy(*a, **kw):
        s = real(*a, **kw)
        step = s.step

        def recording(x, idx, y, nxt, warm, lr_scale):
            seen.append(lr_scale)
            return step(x, idx, y, nxt, warm, lr_scale)
        s.step = recording
        return s

    monkeypatch.setattr(train_mod, "make_stepper", spy)
    c = cfg(data_dir, epochs=3, lr_schedule="cosine", warmup_epochs=0.5, lr_final=0.2)
    m = train(c, tmp_path / "r", progress=False)
    p, n = c.resolved_preset, 10  # 40 images, batch 4
    assert seen == [p.lr_scale(e, b, n) for e in range(3) for b in range(n)]
    assert [r["lr_scale"] for r in m] == [p.lr_scale(e, n - 1, n) for e in range(3)]


# --- weight averaging --------------------------------------------------------------------------------
def test_average_follows_its_formula():
    class Fake:
        def __init__(self):
            self.p = (np.zeros(3, np.float32), np.zeros((2, 2), np.float32))

        def to_host(self):
            return self.p

    rng = np.random.default_rng(0)
    fake = Fake()
    init = tuple(p.copy() for p in fake.p)
    avg = train_mod._Average(init, 0.9)
    ref = [p.astype(np.float64) for p in init]
    for _ in range(20):
        fake.p = tuple(rng.normal(size=p.shape).astype(np.float32) for p in fake.p)
        avg.update(fake)
        ref = [0.9 * r + 0.1 * p for r, p in zip(ref, fake.p)]
    for a, r in zip(avg.params, ref):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)
    assert train_mod._Average(None, 0.0).params is None



def test_average_is_sampled_every_k_batches_and_at_the_epoch_end():
    calls = []

    class Spy(train_mod._Average):
        def update(self, stepper, m=1):
            calls.append(m)

    avg = Spy(None, 0.9, every=3)
    positions = []
    for b in range(7):
        n = len(calls)
        avg.after_batch(None, b, 7)
        if len(calls) > n:
            positions.append(b)
    assert positions == [2, 5, 6] and calls == [3, 3, 1]
    # the sampled average equals d^m-weighted updates: with constant parameters it is the same EMA
    with pytest.raises(PhysgradError, match="ema_every must be >= 1"):
        get_preset("drn-xs").with_options(ema_every=0)


def test_ema_does_not_change_training_and_is_what_is_evaluated(data_dir, tmp_path):
    plain, avg = tmp_path / "plain", tmp_path / "avg"
    train(cfg(data_dir), plain, progress=False)
    m = train(cfg(data_dir, ema_decay=0.8), avg, progress=False)
    a, b = ck(plain), ck(avg)
    for p, q in zip(a["params"], b["params"]):  # averaging only reads the parameters
        np.testing.assert_array_equal(p, q)
    assert a["ema"] is None and b["ema"] is not None
    assert not np.array_equal(b["ema"][0], b["params"][0])
    # the reported test error is the averaged parameters' (same evaluation route as the run's)
    from physgrad.layered import fused
    from physgrad.layered.data import load_dataset
    data = load_dataset("mnist", data_dir)
    x = data.x_test.astype(np.float32) / np.float32(255)
    preset = cfg(data_dir).resolved_preset
    spec = fused.FusedSpec(preset.energy(), preset.schedule, np.dtype("float32"))
    pred = fused.evaluate(spec, b["ema"], x, preset.sweeps_eval)
    assert m[-1]["test_error"] == pytest.approx(100.0 * np.mean(pred != data.y_test))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_resume_with_cosine_and_ema_is_bit_for_bit(data_dir, tmp_path, backend):
    if backend == "numba":
        pytest.importorskip("numba")
    c = cfg(data_dir, epochs=3, lr_schedule="cosine", warmup_epochs=0.5, ema_decay=0.9, backend=backend)
    full, parts = tmp_path / "full", tmp_path / "parts"
    train(c, full, progress=False)
    train(c, parts, progress=False, _interrupt_after=13)
    assert ck(parts)["ema"] is not None
    train(c, parts, resume=True, progress=False)
    for key in ("params", "ema"):
        for p, q in zip(ck(full)[key], ck(parts)[key]):
            np.testing.assert_array_equal(p, q)


def test_cosine_run_cannot_be_lengthened(data_dir, tmp_path):
    out = tmp_path / "r"
    train(cfg(data_dir, lr_schedule="cosine"), out, progress=False)
    with pytest.raises(PhysgradError, match="cannot be lengthened"):
        train(cfg(data_dir, lr_schedule="cosine", epochs=3), out, resume=True, progress=False)


def test_checkpoint_with_a_wrong_average_is_refused(data_dir, tmp_path):
    out = tmp_path / "r"
    train(cfg(data_dir, ema_decay=0.5), out, progress=False)
    c = ck(out)
    # the run averages, the checkpoint does not: refused
    save_checkpoint(out / "checkpoint.npz", c["params"], c["warm"], epoch=2, batch=0, n_wrong=0, n_seen=0,
                    train_seconds=0.0)
    with pytest.raises(CorruptRunError, match="averaged parameters missing"):
        train(cfg(data_dir, ema_decay=0.5, epochs=3), out, resume=True, progress=False)
    # averages of the wrong shape: refused by the reader
    bad = (c["params"][0][:, :3],) + c["params"][1:]
    save_checkpoint(out / "checkpoint.npz", c["params"], c["warm"], epoch=2, batch=0, n_wrong=0, n_seen=0,
                    train_seconds=0.0, ema=bad)
    with pytest.raises(CorruptRunError, match="ema_0 is not a finite array like param_0"):
        load_checkpoint(out / "checkpoint.npz")


def test_cli_recipe_flags(data_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["train", "--preset", "drn-xs", "--data-dir", data_dir, "--epochs", "2", "--train-size", "16",
               "--backend", "numpy", "--lr-schedule", "cosine", "--warmup-epochs", "0.5", "--lr-final", "0.1",
               "--ema-decay", "0.9", "--lr-factor", "1.5", "--beta", "0.5", "--out", str(out), "--no-progress"])
    assert rc == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["preset"]["lr_schedule"] == "cosine" and saved["preset"]["beta"] == 0.5
    assert saved["preset"]["weight_lrs"] == pytest.approx([0.009, 0.009]) and saved["config"]["lr_factor"] == 1.5
    rc = main(["train", "--preset", "drn-xs", "--data-dir", data_dir, "--warmup-epochs", "1",
               "--out", str(tmp_path / "bad"), "--no-progress"])
    assert rc == 2
    assert "warmup_epochs needs lr_schedule = 'cosine'" in capsys.readouterr().err


# --- optimizers (momentum, adam) ------------------------------------------------------------------------
def test_layer_optimizer_matches_the_learning_optimizers():
    """Each array takes physgrad.learning.optim's step with its own learning rate."""
    from physgrad.layered.optimizer import LayerOptimizer
    from physgrad.learning import optim
    rng = np.random.default_rng(1)
    params = (rng.normal(size=(3, 2)), rng.normal(size=2))
    for kind in ("momentum", "adam"):
        opt = LayerOptimizer(kind, momentum=0.8)
        state = opt.init(params)
        ref_state = [optim.init(kind, (p,)) for p in params]
        p_ref, p = params, params
        for _ in range(3):
            grads = tuple(rng.normal(size=q.shape) for q in params)
            p, state = opt.step(p, grads, [0.1, 0.01], state)
            out = [optim.step(kind, (q,), (g,), s, lr, momentum=0.8) for q, g, s, lr in
                   zip(p_ref, grads, ref_state, [0.1, 0.01])]
            p_ref, ref_state = tuple(o[0][0] for o in out), [o[1] for o in out]
        for a, b in zip(p, p_ref):
            np.testing.assert_array_equal(a, b)
        arrays = opt.state_arrays(state)
        back = opt.load_state_arrays(arrays, p)
        assert opt.state_arrays(back).keys() == arrays.keys()
        with pytest.raises(PhysgradError, match="not those of"):
            opt.load_state_arrays({k: v for k, v in list(arrays.items())[:-1]}, p)
    with pytest.raises(PhysgradError, match="for 'momentum' or 'adam'"):
        LayerOptimizer("sgd")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_optimizer_fast_equals_generic_float64(data_dir, tmp_path, optimizer, backend):
    """Centered EP with momentum / adam: the numpy array stepper, the compiled kernel and the generic
    engine agree."""
    if backend == "numba":
        pytest.importorskip("numba")
    kw = dict(dtype="float64", train_size=24, optimizer=optimizer, lr_factor=0.1 if optimizer == "momentum" else 0.01)
    fast, gen = tmp_path / "fast", tmp_path / "gen"
    train(cfg(data_dir, engine="fast", backend=backend, **kw), fast, progress=False)
    train(cfg(data_dir, engine="generic", **kw), gen, progress=False)
    a, b = ck(fast), ck(gen)
    for p, q in zip(a["params"], b["params"]):
        np.testing.assert_allclose(p, q, rtol=1e-8, atol=1e-11)
    assert sorted(a["optimizer_state"]) == sorted(b["optimizer_state"])
    for k in a["optimizer_state"]:
        np.testing.assert_allclose(a["optimizer_state"][k], b["optimizer_state"][k], rtol=1e-7, atol=1e-11)
    saved = json.loads((fast / "config.json").read_text())
    assert saved["backend"]["backend"] == backend and saved["preset"]["optimizer"] == optimizer
    # the optimizer changes the run (it is not silently SGD)
    sgd = tmp_path / "sgd"
    train(cfg(data_dir, engine="fast", backend="numpy", dtype="float64", train_size=24), sgd, progress=False)
    assert not np.allclose(ck(sgd)["params"][0], a["params"][0])


@pytest.mark.parametrize("engine, backend", [("fast", "auto"), ("fast", "numpy"), ("generic", "auto")])
def test_optimizer_resume_is_bit_for_bit(data_dir, tmp_path, engine, backend):
    c = cfg(data_dir, epochs=2, train_size=24, optimizer="adam", lr_factor=0.01, engine=engine, backend=backend)
    full, parts = tmp_path / "full", tmp_path / "parts"
    train(c, full, progress=False)
    train(c, parts, progress=False, _interrupt_after=4)
    train(c, parts, resume=True, progress=False)
    for p, q in zip(ck(full)["params"], ck(parts)["params"]):
        np.testing.assert_array_equal(p, q)
    for k, v in ck(full)["optimizer_state"].items():
        np.testing.assert_array_equal(v, ck(parts)["optimizer_state"][k])


def test_optimizer_state_is_checked_on_resume(data_dir, tmp_path):
    out = tmp_path / "r"
    c = cfg(data_dir, epochs=1, train_size=8, optimizer="momentum")
    train(c, out, progress=False)
    k = ck(out)
    save_checkpoint(out / "checkpoint.npz", k["params"], k["warm"], epoch=1, batch=0, n_wrong=0, n_seen=0,
                    train_seconds=0.0)
    with pytest.raises(CorruptRunError, match="no optimizer state for optimizer 'momentum'"):
        train(cfg(data_dir, epochs=2, train_size=8, optimizer="momentum"), out, resume=True, progress=False)
    bad = dict(k["optimizer_state"])
    bad["opt.v_0"] = bad["opt.v_0"][:1]
    save_checkpoint(out / "checkpoint.npz", k["params"], k["warm"], epoch=1, batch=0, n_wrong=0, n_seen=0,
                    train_seconds=0.0, optimizer_state=bad)
    with pytest.raises(CorruptRunError, match="optimizer state v_0 is not a finite"):
        train(cfg(data_dir, epochs=2, train_size=8, optimizer="momentum"), out, resume=True, progress=False)


@pytest.mark.parametrize("kw, match", [
    (dict(optimizer="adam", backend="torch"), "its kernel applies SGD in place; use --backend numba or numpy"),
    (dict(optimizer="adam", algorithm="tbp", engine="fast"), "needs --engine generic"),
    (dict(optimizer="nesterov"), "optimizer must be one of"),
    (dict(optimizer="momentum", momentum=1.0), r"momentum must be in \[0, 1\)"),
])
def test_bad_optimizer_options(data_dir, kw, match):
    with pytest.raises(PhysgradError, match=match):
        cfg(data_dir, **kw)


def test_resume_refuses_a_preset_that_changed_since_the_run_started(data_dir, tmp_path):
    out = tmp_path / "r"
    train(cfg(data_dir, epochs=1), out, progress=False)
    saved = json.loads((out / "config.json").read_text())
    saved["preset"]["beta"] = 0.5  # the run was started with another definition of the preset
    (out / "config.json").write_text(json.dumps(saved))
    with pytest.raises(PhysgradError, match=r"defined differently from when the run started .*'beta': \(0.5, 1.0\)"):
        train(cfg(data_dir, epochs=2), out, resume=True, progress=False)


def test_named_recipe_preset_is_the_confirmed_recipe():
    """drn-1h-ema is exactly drn-1h with the options of reports/experiments/drn-1h-recipe/confirm-b.toml."""
    from dataclasses import replace
    confirmed = TrainConfig(preset="drn-1h", ema_decay=0.99998).resolved_preset
    assert replace(get_preset("drn-1h-ema"), name="drn-1h") == confirmed

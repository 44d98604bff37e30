"""The one table of engine rules (physgrad.layered.engines.plan_engine): TrainConfig's verdict and the
stepper that make_stepper builds agree over the whole grid engine x algorithm x backend x torch device
x optimizer x amplifiers x device model."""
import itertools

import pytest

from physgrad.devices import get_device
from physgrad.layered.engines import plan_engine
from physgrad.layered.kernels import numba_cpu
from physgrad.layered.steppers import AmplifiedStepper, initial_params, make_stepper
from physgrad.layered.train import TrainConfig
from physgrad.types import PhysgradError

GRID = list(itertools.product(("auto", "fast", "generic"), ("cep", "tbp", "pep"), ("auto", "numpy", "numba", "torch"),
                              ("cpu", "cuda"), ("sgd", "momentum", "adam"), (False, True), ("ideal", "pcm-pair")))


def verdict(f):
    """``("ok", value)`` or ``("refused", message)``."""
    try:
        return "ok", f()
    except PhysgradError as exc:
        return "refused", str(exc)


def test_train_config_and_make_stepper_agree_over_the_whole_grid():
    counts = {"ok": 0, "refused": 0}
    for engine, algorithm, backend, device, optimizer, amplified, device_model in GRID:
        opts = dict(preset="drn-xs", engine=engine, algorithm=algorithm, backend=backend, device=device,
                    optimizer=optimizer, amplifier_gains=(2.0,) if amplified else None, device_model=device_model)
        where = f"{opts}"
        kind, cfg = verdict(lambda: TrainConfig(**opts))
        if kind == "ok":  # a missing package (torch, a GPU) is refused when the backend is resolved
            kind, cfg_or_msg = verdict(lambda: (cfg.resolved_backend, cfg)[1])
            if kind == "refused":
                cfg = cfg_or_msg
        preset = TrainConfig(preset="drn-xs", optimizer=optimizer,
                             amplifier_gains=(2.0,) if amplified else None).resolved_preset
        params = initial_params(preset, 0, "float32")
        dev = get_device(device_model)
        got, stepper = verdict(lambda: make_stepper(engine, preset, algorithm, params, backend=backend, device=device,
                                                    device_model=dev))
        assert got == kind, f"{where}: TrainConfig {kind} ({cfg}), make_stepper {got} ({stepper})"
        counts[kind] += 1
        if kind == "refused":
            assert str(stepper) == str(cfg), where
            continue
        try:
            plan = cfg.plan
            assert plan == plan_engine(plan.engine, algorithm, plan.backend, device, optimizer, amplified,
                                       dev), where  # a resolved plan is a fixed point
            assert plan.amplified == (amplified and plan.engine == "fast"), where
            inner = stepper.inner if isinstance(stepper, AmplifiedStepper) else stepper
            assert isinstance(stepper, AmplifiedStepper) == plan.amplified, where
            assert type(inner).__name__ == plan.stepper, where
        finally:
            stepper.close()
    assert counts["ok"] > 100 and counts["refused"] > 100  # both sides of the table are exercised


def test_the_rules_that_matter():
    """Spot checks of the table: Adam on numba is the compiled kernel (it was a silent SGD stepper);
    amplified presets run on the fast engine; refusals name their alternative."""
    assert plan_engine("auto", "cep", "numba", optimizer="adam", numba_available=True).stepper == "CompiledCEPStepper"
    assert plan_engine("auto", "cep", "auto", optimizer="adam", numba_available=False).stepper == "OptimizerCEPStepper"
    assert plan_engine("auto", "cep", "auto", numba_available=False).note.startswith("numba is not importable")
    assert plan_engine("auto", "cep", amplified=True, numba_available=True).amplified
    assert plan_engine("auto", "tbp", optimizer="adam").engine == "generic"
    assert plan_engine("auto", "pep").engine == "generic"
    for kw, alternative in [(dict(engine="fast", algorithm="pep"), "--engine generic"),
                            (dict(algorithm="tbp", backend="numba"), "--backend numpy"),
                            (dict(backend="torch", optimizer="adam"), "--backend numba or numpy"),
                            (dict(backend="torch", amplified=True), "--backend numba or numpy"),
                            (dict(backend="numba", numba_available=False), "pip install"),
                            (dict(engine="generic", backend="numba"), "--backend numpy"),
                            (dict(torch_device="cuda"), "--backend torch"),
                            (dict(device_model=get_device("pcm-pair")), "--engine generic"),
                            (dict(device_model=get_device("pcm-pair"), engine="generic", algorithm="tbp"),
                             "EP/CpL rule")]:
        with pytest.raises(PhysgradError, match=alternative.replace("-", r"\-")):
            plan_engine(**kw)
    if numba_cpu.AVAILABLE:
        assert TrainConfig(optimizer="momentum").plan.stepper == "CompiledCEPStepper"


def test_convolutional_presets_plan_their_own_kernel():
    """dchn presets: EP, CL and CpL on ConvEPStepper (numpy or torch, any optimizer; numba runs numpy with a
    note), tbp on it with torch only, rbp refused on the fast engine; auto sends the rest to the generic one."""
    for algorithm in ("cep", "pep", "nep", "cl", "pcpl", "ncpl", "ccpl", "tbp"):
        plan = plan_engine("auto", algorithm, "torch", optimizer="momentum", convolutional=True)
        assert (plan.engine, plan.backend, plan.stepper) == ("fast", "torch", "ConvEPStepper")
    for algorithm in ("cep", "cl"):
        plan = plan_engine("fast", algorithm, "numba", convolutional=True)
        assert (plan.backend, plan.stepper) == ("numpy", "ConvEPStepper") and "numpy kernel" in plan.note
    assert plan_engine("auto", "tbp", convolutional=True).stepper == "RuleStepper"
    assert plan_engine("auto", "rbp", convolutional=True).stepper == "RuleStepper"
    with pytest.raises(PhysgradError, match="--backend torch"):
        plan_engine("fast", "tbp", "numpy", convolutional=True)
    with pytest.raises(PhysgradError, match="use --engine generic"):
        plan_engine("fast", "rbp", convolutional=True)
    assert plan_engine("auto", "cep", "torch", convolutional=True, conv_dtype="bfloat16").conv_dtype == "bfloat16"
    for kw in ({"backend": "numpy", "convolutional": True}, {"backend": "torch"}):  # torch kernel of dchn presets only
        with pytest.raises(PhysgradError, match="conv-dtype"):
            plan_engine("auto", "cep", conv_dtype="bfloat16", **kw)

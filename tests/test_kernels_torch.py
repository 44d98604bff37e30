"""The torch backend (``--backend torch``) against the numpy reference, on the CPU in float64.

Skipped where torch is not installed (``pip install 'physgrad[torch]'``; CI does not install the
multi-GB wheel: the backend-neutral code is tested with array-api-strict in
tests/test_kernels_array.py). CUDA tests run only where torch sees a GPU. Run these with
``pip install 'physgrad[torch]' && python -m pytest tests/test_kernels_torch.py``.
"""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("array_api_compat")

from physgrad.layered.kernels.torch_backend import TorchCEPStepper  # noqa: E402
from physgrad.layered.presets import MNIST_PIXELS, Preset  # noqa: E402
from physgrad.layered.steppers import FusedCEPStepper, initial_params, make_stepper  # noqa: E402
from physgrad.layered.train import train  # noqa: E402
from stepper_pairs import step_side_by_side  # noqa: E402

from test_train import cfg, params_of  # noqa: E402,F401  (data_dir: tests/conftest.py)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


def tiny_preset(model="drn"):
    return Preset("tiny", model, (16, 12), input_gain=3.0, sweeps=3, sweeps_eval=5, beta=0.05,
                  weight_lrs=(0.1, 0.1, 0.1), batch_size=4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model", ["drn", "dhn"])
def test_torch_stepper_equals_numpy_float64(model, device):
    preset = tiny_preset(model)
    rng = np.random.default_rng(2)
    x = rng.random((14, MNIST_PIXELS))
    x[x < 0.8] = 0
    y = rng.integers(0, 10, len(x))
    a = FusedCEPStepper(preset, initial_params(preset, 0, "float64"))
    b = make_stepper("fast", preset, "cep", initial_params(preset, 0, "float64"), backend="torch", device=device)
    assert isinstance(b, TorchCEPStepper) and all(isinstance(p, torch.Tensor) for p in b.params)
    try:
        first = b.params[0]
        step_side_by_side(a, b, x, y)
        assert b.params[0] is first  # updated in place
        for u, v in zip(a.params, b.to_host()):
            assert isinstance(v, np.ndarray)
            np.testing.assert_allclose(u, v, rtol=1e-11, atol=1e-12)
        np.testing.assert_array_equal(a.evaluate(a.params, x), b.evaluate(b.params, x))
        t = b.evaluate(b.params, torch.as_tensor(x, device=device))
        assert isinstance(t, torch.Tensor) and t.device.type == device  # array type in = array type out
    finally:
        a.close()
        b.close()


def test_torch_backend_run_resumes_from_numpy(data_dir, tmp_path):
    out = tmp_path / "x"
    train(cfg(data_dir, backend="numpy", epochs=2), out, progress=False, _interrupt_after=3)
    train(cfg(data_dir, backend="torch", epochs=2), out, resume=True, progress=False)
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["backend"] == "torch"
    assert saved["resumed_with"][0]["backend"]["deterministic_algorithms"] is True
    assert all(isinstance(p, np.ndarray) for p in params_of(out))

"""Shared fixtures."""
import numpy as np
import pytest

from physgrad.layered.data import FILES, write_idx


DIVIDER_NETLIST = """grad test: divider with a clipping diode
V1 in 0 1
R1 in a 1
R2 a out 2
R3 out 0 1.5
R4 a 0 0.8
D1 a b dth
.model dth D(ideal=1 vth=0.05)
V2 b 0 0.2
.target out 0.2
.trainable R1 R2 R3
.end
"""


@pytest.fixture()
def netlist(tmp_path):
    """A divider with a clipping ideal diode, a target and a .trainable line (for grad, fit, solve)."""
    p = tmp_path / "c.cir"
    p.write_text(DIVIDER_NETLIST)
    return p


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny MNIST-format dataset (48 training and 16 test images, gzipped IDX), labels tied to the
    images so that learning is possible; returns the folder (str)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)

    def images(n):
        im = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        im[rng.random((n, 28, 28)) < 0.8] = 0  # MNIST-like sparsity
        return im

    tr, te = images(48), images(16)
    for key, arr in (("train_images", tr), ("test_images", te),
                     ("train_labels", (tr.reshape(48, -1).sum(1) % 10).astype(np.uint8)),
                     ("test_labels", (te.reshape(16, -1).sum(1) % 10).astype(np.uint8))):
        write_idx(root / (FILES[key] + ".gz"), arr)
    return str(root)


# CPU seconds per test (this process and the subprocesses it waited for), written as CSV when
# PHYSGRAD_CPU_DURATIONS names a file: wall-clock durations mislead on a loaded machine, and the default
# run's budget is stated in CPU seconds.
import os as _os
import resource as _resource


def _cpu_now() -> float:
    own = _resource.getrusage(_resource.RUSAGE_SELF)
    kids = _resource.getrusage(_resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    path = _os.environ.get("PHYSGRAD_CPU_DURATIONS")
    start = _cpu_now() if path else 0.0
    yield
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{item.nodeid},{_cpu_now() - start:.3f}\n")

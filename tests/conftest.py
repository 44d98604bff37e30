"""Shared fixtures."""
import numpy as np
import pytest

from physgrad.layered.data import FILES, write_idx


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

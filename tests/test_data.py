"""IDX reader, data-directory search and checksummed download (against a local HTTP server)."""
import functools
import gzip
import hashlib
import http.server
import os
import threading

import numpy as np
import pytest

from physgrad.cli import main
from physgrad.layered import data
from physgrad.layered.data import (FILES, SYSTEM_DATA, ChecksumError, DataNotFoundError, candidate_dirs, download,
                                   find_data_dir, load_dataset, read_idx, write_idx)
from physgrad.types import PhysgradError


def make_dataset(folder, n_train=12, n_test=6, compress=True, seed=0):
    """Write the four IDX files of a small random MNIST-like dataset; return the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, n_train).astype(np.uint8),
              "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, n_test).astype(np.uint8)}
    for key, stem in FILES.items():
        write_idx(folder / (stem + (".gz" if compress else "")), arrays[key])
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_idx_roundtrip(tmp_path, compress):
    for arr in (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([1.5, -2.0], dtype=np.float32),
                np.array([[1, -7]], dtype=np.int32)):
        p = tmp_path / ("a.idx" + (".gz" if compress else ""))
        write_idx(p, arr)
        out = read_idx(p)
        assert out.dtype == arr.dtype and out.shape == arr.shape
        np.testing.assert_array_equal(out, arr)


def test_idx_gzip_detected_by_content(tmp_path):
    p = tmp_path / "no-suffix"
    write_idx(p, np.arange(5, dtype=np.uint8), compress=True)
    np.testing.assert_array_equal(read_idx(p), np.arange(5))


def test_idx_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(PhysgradError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(PhysgradError, match="5"):
        read_idx(short)
    code = tmp_path / "code"
    code.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01a")
    with pytest.raises(PhysgradError, match="type code"):
        read_idx(code)
    trunc = tmp_path / "trunc.gz"
    trunc.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x04abcd")[:-10])
    with pytest.raises(PhysgradError):
        read_idx(trunc)


@pytest.mark.parametrize("compress", [True, False])
def test_load_dataset_from_option(tmp_path, compress):
    arrays = make_dataset(tmp_path / "mnist", compress=compress)
    ds = load_dataset("mnist", data_dir=tmp_path, env={}, home=tmp_path)
    assert ds.x_train.shape == (12, 784) and ds.x_test.shape == (6, 784)
    np.testing.assert_array_equal(ds.x_train, arrays["train_images"].reshape(12, -1))
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])


def test_search_order_option_env_home(tmp_path):
    make_dataset(tmp_path / "env" / "kmnist", seed=1)
    home = tmp_path / "home"
    make_dataset(home / ".physgrad" / "data" / "kmnist", seed=2)
    env = {data.ENV_VAR: str(tmp_path / "env")}
    assert find_data_dir("kmnist", env=env, home=home) == tmp_path / "env" / "kmnist"
    assert find_data_dir("kmnist", env={}, home=home) == home / ".physgrad" / "data" / "kmnist"
    make_dataset(tmp_path / "opt", seed=3)  # the option wins, and may point at the folder itself
    assert find_data_dir("kmnist", data_dir=tmp_path / "opt", env=env, home=home) == tmp_path / "opt"


def test_no_folder_relative_to_the_working_directory(tmp_path, monkeypatch):
    """A dataset next to the working directory (e.g. ../shared/data/NAME) is never picked up."""
    make_dataset(tmp_path / "shared" / "data" / "kmnist")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    dirs = candidate_dirs("kmnist", env={}, home=tmp_path / "home")
    assert dirs == [tmp_path / "home" / ".physgrad" / "data" / "kmnist", SYSTEM_DATA / "kmnist"]
    if not (SYSTEM_DATA / "kmnist").exists():
        with pytest.raises(DataNotFoundError):
            find_data_dir("kmnist", env={}, home=tmp_path / "home")


def test_not_found_lists_where_it_looked(tmp_path, monkeypatch):
    # the system folder is an empty stand-in: on a machine with Debian's dataset-fashion-mnist installed the
    # real one would be found
    monkeypatch.setattr(data, "SYSTEM_DATA", tmp_path / "system")
    with pytest.raises(DataNotFoundError) as exc:
        find_data_dir("fashion-mnist", env={data.ENV_VAR: str(tmp_path / "b")}, home=tmp_path / "h")
    msg = str(exc.value)
    for part in ("b", ".physgrad", str(tmp_path / "system"), "physgrad download fashion-mnist", data.ENV_VAR):
        assert part in msg


def test_unknown_dataset():
    with pytest.raises(PhysgradError, match="valid: fashion-mnist, kmnist, mnist"):
        load_dataset("cifar")


def test_labels_out_of_range(tmp_path):
    make_dataset(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4, 12], dtype=np.uint8))
    with pytest.raises(PhysgradError, match="labels outside"):
        load_dataset("mnist", data_dir=tmp_path, env={}, home=tmp_path)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    make_dataset(root, seed=7)
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    finally:
        httpd.shutdown()
        httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _sums(root, algo):
    return {stem + ".gz": {algo: hashlib.new(algo, (root / (stem + ".gz")).read_bytes()).hexdigest()}
            for stem in FILES.values()}


@pytest.mark.parametrize("algo", ["md5", "sha256"])
def test_download_verifies_checksums(server, tmp_path, algo):
    url, root = server
    dest = download("mnist", tmp_path / "dl", mirrors=[url], checksums=_sums(root, algo), quiet=True)
    ds = load_dataset("mnist", data_dir=dest, env={}, home=tmp_path)
    assert ds.x_train.shape == (12, 784)
    # a second call keeps the verified files
    download("mnist", dest, mirrors=["http://127.0.0.1:9/unused/"], checksums=_sums(root, algo), quiet=True)


def test_download_bad_checksum_leaves_nothing(server, tmp_path):
    url, root = server
    sums = _sums(root, "sha256")
    sums["train-images-idx3-ubyte.gz"] = {"sha256": "0" * 64}
    with pytest.raises(ChecksumError, match="sha256"):
        download("mnist", tmp_path / "dl", mirrors=[url], checksums=sums, quiet=True)
    assert not (tmp_path / "dl" / "train-images-idx3-ubyte.gz").exists()
    assert not list((tmp_path / "dl").glob("*.part"))


def test_download_falls_back_to_next_mirror(server, tmp_path):
    url, root = server
    dest = download("mnist", tmp_path / "dl", mirrors=[url + "missing/", url], checksums=_sums(root, "md5"),
                    quiet=True)
    assert (dest / "t10k-labels-idx1-ubyte.gz").exists()


def test_download_all_mirrors_fail(server, tmp_path):
    url, root = server
    with pytest.raises(PhysgradError, match="could not download"):
        download("mnist", tmp_path / "dl", mirrors=[url + "missing/"], checksums=_sums(root, "md5"), quiet=True)


def test_download_needs_checksums(tmp_path):
    with pytest.raises(PhysgradError, match="no checksum"):
        download("mnist", tmp_path, mirrors=["http://127.0.0.1:9/"], checksums={}, quiet=True)


def test_download_cli(server, tmp_path, monkeypatch):
    url, root = server
    monkeypatch.setitem(data.DATASETS, "mnist", data.DatasetSpec("mnist", (url,), _sums(root, "md5")))
    assert main(["download", "mnist", "--dest", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "train-images-idx3-ubyte.gz").exists()


def test_real_mnist_if_present():
    """Real MNIST, from the folder named by $PHYSGRAD_DATA (tests never search elsewhere)."""
    if not os.environ.get(data.ENV_VAR):
        if os.environ.get("CI"):
            pytest.fail(f"CI must set {data.ENV_VAR} (.ci/run passes the shared MNIST folder)")
        pytest.skip(f"set {data.ENV_VAR} to a folder with MNIST to run this test")
    ds = load_dataset("mnist")
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.y_train[:5].tolist() == [5, 0, 4, 1, 9]


def test_debian_dataset_folder_is_searched_last(tmp_path):
    from physgrad.layered.data import SYSTEM_DATA, candidate_dirs

    dirs = candidate_dirs("fashion-mnist", env={}, home=tmp_path)
    assert dirs[-1] == SYSTEM_DATA / "fashion-mnist"

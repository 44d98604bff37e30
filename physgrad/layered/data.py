"""Image-classification data: IDX reader, data-directory search and checksummed download.

The three MNIST-format datasets (MNIST, Fashion-MNIST, Kuzushiji-MNIST) ship as four IDX files
each (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``), gzipped (``.gz``) or raw.

Where the files are looked for, in order (the first folder holding all four files wins):

1. the ``data_dir`` argument (``--data-dir``), as given and as ``data_dir/<name>``;
2. the environment variable ``PHYSGRAD_DATA``, as given and as ``$PHYSGRAD_DATA/<name>``;
3. ``~/.physgrad/data/<name>`` (where :func:`download` puts files by default);
4. ``/usr/share/datasets/<name>`` (Debian's ``dataset-fashion-mnist`` installs there).

A missing dataset raises :class:`DataNotFoundError` listing every folder looked at.

References
----------
LeCun et al., "Gradient-based learning applied to document recognition" (1998) (MNIST, IDX format);
Xiao et al., "Fashion-MNIST" (2017); Clanuwat et al., "Deep learning for classical Japanese
literature" (2018) (KMNIST).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from physgrad.types import PhysgradError

ENV_VAR = "PHYSGRAD_DATA"
SYSTEM_DATA = Path("/usr/share/datasets")  # Debian's dataset-* packages (dataset-fashion-mnist)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type codes -> numpy big-endian dtypes
_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class DataNotFoundError(PhysgradError):
    """The dataset's files were not found in any of the folders searched."""


class ChecksumError(PhysgradError):
    """A downloaded file does not match its published checksum."""


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset comes from.

    Attributes
    ----------
    name : str
        ``mnist``, ``fashion-mnist`` or ``kmnist``.
    mirrors : tuple of str
        Base URLs tried in order; a file's URL is ``mirror + filename + ".gz"``.
    checksums : mapping
        ``{filename.gz: {"md5": hex, "sha256": hex}}`` for the files as served (gzipped); either
        hash may be missing, at least one must be present.
    n_classes : int
    """

    name: str
    mirrors: tuple
    checksums: Mapping[str, Mapping[str, str]]
    n_classes: int = 10

    def __post_init__(self):
        if not self.mirrors:
            raise PhysgradError(f"dataset {self.name!r}: no mirrors")
        for fname, sums in self.checksums.items():
            if not set(sums) & {"md5", "sha256"} or set(sums) - {"md5", "sha256"}:
                raise PhysgradError(f"dataset {self.name!r}, file {fname}: checksums must be md5 and/or sha256")


# md5 of the gzipped files as published by the mirrors (the values torchvision checks).
DATASETS = {
    "mnist": DatasetSpec(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {"train-images-idx3-ubyte.gz": {"md5": "f68b3c2dcbeaaa9fbdd348bbdeb94873"},
         "train-labels-idx1-ubyte.gz": {"md5": "d53e105ee54ea40749a09fcbcd1e9432"},
         "t10k-images-idx3-ubyte.gz": {"md5": "9fb629c4189551a2d022fa330f9573f3"},
         "t10k-labels-idx1-ubyte.gz": {"md5": "ec29112dd5afa0611ce80d1b7f02629c"}}),
    "fashion-mnist": DatasetSpec(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {"train-images-idx3-ubyte.gz": {"md5": "8d4fb7e6c68d591d4c3dfef9ec88bf0d"},
         "train-labels-idx1-ubyte.gz": {"md5": "25c81989df183df01b3e8a0aad5dffbe"},
         "t10k-images-idx3-ubyte.gz": {"md5": "bef4ecab320f06d8554ea6380940ec79"},
         "t10k-labels-idx1-ubyte.gz": {"md5": "bb300cfdad3c16e7a12a480ee83cd310"}}),
    "kmnist": DatasetSpec(
        "kmnist",
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        {"train-images-idx3-ubyte.gz": {"md5": "bdb82020997e1d708af4cf47b453dcf7"},
         "train-labels-idx1-ubyte.gz": {"md5": "e144d726b3acfaa3e44228e80efcd344"},
         "t10k-images-idx3-ubyte.gz": {"md5": "5c965bf0a639b31b8f53240b1b52f4d7"},
         "t10k-labels-idx1-ubyte.gz": {"md5": "7320c461ea6c1c855c0b718fb2a4b134"}}),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; unknown names raise an error listing the valid ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise PhysgradError(f"unknown dataset {name!r}; valid: {', '.join(sorted(DATASETS))}") from None


@dataclass(frozen=True)
class Dataset:
    """Images and labels in memory.

    Attributes
    ----------
    x_train, x_test : uint8 arrays, shape ``(n, 784)``
        Pixels 0..255, images flattened row-major.
    y_train, y_test : int64 arrays, shape ``(n,)``
        Class labels 0..9.
    name : str
    source : str
        The folder the files were read from.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str = ""
    source: str = ""

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
                raise PhysgradError(f"{split} split: images {x.shape} and labels {y.shape} do not match")


def read_idx(path) -> np.ndarray:
    """Read one IDX file (gzipped or raw, detected from the content).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    array
        Shape and dtype from the IDX header (native byte order).

    Raises
    ------
    PhysgradError
        Bad magic number, unknown type code, or a size that does not match the header.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise PhysgradError(f"{path}: cannot read ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise PhysgradError(f"{path}: not an IDX file (bad magic number {raw[:4]!r})")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise PhysgradError(f"{path}: unknown IDX type code 0x{code:02x}")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise PhysgradError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape)) * dtype.itemsize
    body = len(raw) - 4 - 4 * ndim
    if body != expected:
        raise PhysgradError(f"{path}: header says shape {shape} ({expected} bytes) but the file has {body}")
    arr = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path, array: np.ndarray, compress: Optional[bool] = None) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``compress`` or when the name ends in ``.gz``)."""
    path = Path(path)
    array = np.asarray(array)
    codes = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    dt = array.dtype.newbyteorder("=")
    if dt not in codes:
        raise PhysgradError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, codes[dt], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array).astype(_IDX_DTYPES[codes[dt]]).tobytes()
    compress = path.suffix == ".gz" if compress is None else compress
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as fh:
        fh.write(payload)
    return path


def candidate_dirs(name: str, data_dir=None, env: Optional[Mapping[str, str]] = None, home=None) -> list:
    """Folders searched for dataset ``name``, in order (see the module docstring).

    ``env`` (default ``os.environ``) and ``home`` (default ``Path.home()``) can be given for tests.
    """
    env = os.environ if env is None else env
    home = Path.home() if home is None else Path(home)
    out = []
    for root in (data_dir, env.get(ENV_VAR) or None):
        if root is not None:
            root = Path(root).expanduser()
            out += [root, root / name]
    out += [home / ".physgrad" / "data" / name, SYSTEM_DATA / name]
    return out


def _find_file(folder: Path, stem: str) -> Optional[Path]:
    for fname in (stem + ".gz", stem):
        if (folder / fname).is_file():
            return folder / fname
    return None


def find_data_dir(name: str, data_dir=None, **kw) -> Path:
    """First folder from :func:`candidate_dirs` holding all four IDX files of ``name``.

    Raises
    ------
    DataNotFoundError
        Listing every folder looked at and how to get the files.
    """
    dataset_spec(name)
    looked = candidate_dirs(name, data_dir, **kw)
    for folder in looked:
        if all(_find_file(folder, stem) for stem in FILES.values()):
            return folder
    lines = "\n".join(f"  {p}" for p in looked)
    raise DataNotFoundError(
        f"dataset {name!r} not found: none of these folders holds the four files "
        f"{', '.join(FILES.values())} (.gz or raw):\n{lines}\n"
        f"Pass --data-dir, set {ENV_VAR}, or run `physgrad download {name}`.")


def load_dataset(name: str = "mnist", data_dir=None, **kw) -> Dataset:
    """Load a dataset into memory (images flattened to ``(n, 784)`` uint8)."""
    folder = find_data_dir(name, data_dir, **kw)
    arrays = {key: read_idx(_find_file(folder, stem)) for key, stem in FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise PhysgradError(f"{folder}: {split} images {x.shape} and labels {y.shape} do not match")
        if y.size and (y.min() < 0 or y.max() >= dataset_spec(name).n_classes):
            raise PhysgradError(f"{folder}: {split} labels outside 0..{dataset_spec(name).n_classes - 1}")
    flat = {k: v.reshape(len(v), -1) if k.endswith("images") else v.astype(np.int64)
            for k, v in arrays.items()}
    return Dataset(flat["train_images"], flat["train_labels"], flat["test_images"], flat["test_labels"],
                   name=name, source=str(folder))


def file_digest(path, algorithm: str) -> str:
    """Hex digest (``md5`` or ``sha256``) of a file."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checksums(path, sums: Mapping[str, str]) -> None:
    """Raise :class:`ChecksumError` unless every hash in ``sums`` matches the file."""
    for algorithm, expected in sums.items():
        got = file_digest(path, algorithm)
        if got != expected.lower():
            raise ChecksumError(f"{path}: {algorithm} is {got}, expected {expected}")


def download(name: str, dest=None, mirrors: Optional[Sequence[str]] = None,
             checksums: Optional[Mapping[str, Mapping[str, str]]] = None,
             timeout: float = 60.0, quiet: bool = False) -> Path:
    """Download the four files of ``name`` into ``dest`` and verify their checksums.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist", "kmnist"}
    dest : path, optional
        Target folder (default ``~/.physgrad/data/<name>``). Files already present with the right
        checksum are kept.
    mirrors, checksums : optional
        Override the dataset's mirrors (base URLs ending in ``/``) and checksums (tests use a
        local HTTP server).
    timeout : float
        Seconds per connection attempt.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    ChecksumError
        A file downloaded from every mirror failed verification (nothing is left behind).
    PhysgradError
        No mirror could serve a file (the message lists each URL and its error).
    """
    spec = dataset_spec(name)
    mirrors = tuple(mirrors) if mirrors is not None else spec.mirrors
    checksums = spec.checksums if checksums is None else checksums
    dest = Path(dest).expanduser() if dest is not None else Path.home() / ".physgrad" / "data" / name
    dest.mkdir(parents=True, exist_ok=True)
    for stem in FILES.values():
        fname = stem + ".gz"
        sums = checksums.get(fname)
        if not sums:
            raise PhysgradError(f"no checksum known for {fname}; refusing to download unverified data")
        target = dest / fname
        if target.is_file():
            try:
                verify_checksums(target, sums)
                continue
            except ChecksumError:
                target.unlink()
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + fname
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{fname}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                    shutil.copyfileobj(resp, out)
                verify_checksums(tmp, sums)
                os.replace(tmp, target)
                if not quiet:
                    print(f"{url} -> {target} (checksum ok)", file=sys.stderr)
                break
            except (urllib.error.URLError, OSError, ChecksumError) as exc:
                errors.append(f"  {url}: {exc}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            kind = ChecksumError if errors and all("expected" in e for e in errors) else PhysgradError
            raise kind(f"could not download {fname}:\n" + "\n".join(errors))
    return dest

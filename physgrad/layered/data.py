"""Image-classification data: IDX reader, data-directory search and checksummed download.

The three MNIST-format datasets (MNIST, Fashion-MNIST, Kuzushiji-MNIST) ship as four IDX files
each (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``), gzipped (``.gz``) or raw.

Where the files are looked for:

* an explicit ``data_dir`` argument (``--data-dir``) is the only place looked at: the folder as
  given, then ``data_dir/<name>``; when neither holds the four files, :class:`DataNotFoundError`
  names the folder and the missing files (no fallback to another folder);
* otherwise, in order (the first folder holding all four files wins): ``$PHYSGRAD_DATA/<name>``,
  then the folder ``$PHYSGRAD_DATA`` itself; ``~/.physgrad/data/<name>`` (where :func:`download`
  puts files by default); ``/usr/share/datasets/<name>`` (Debian's ``dataset-fashion-mnist``
  installs there). A missing dataset raises :class:`DataNotFoundError` listing every folder
  looked at.

Which dataset a folder holds: ``$PHYSGRAD_DATA`` names no dataset, so its files are used *as given*
only when something says they are the dataset asked for: the folder is named after it (e.g.
``.../fashion-mnist``) or its four gzipped files match the dataset's published md5
(:data:`DATASETS`). Otherwise (``--dataset fashion-mnist`` with ``PHYSGRAD_DATA`` pointing at a
folder ``mnist`` or ``data`` of MNIST files) :class:`WrongDatasetError` is raised, never a silent
substitute. In every folder, a gzipped file that is, by its md5, the published file of *another*
dataset is refused the same way. An explicit ``--data-dir`` is taken at its word otherwise (your
own files, re-compressed or raw). A training run records the folder used and the SHA-256 of its
four files in ``config.json`` (:func:`data_record`).

References
----------
LeCun et al., "Gradient-based learning applied to document recognition" (1998) (MNIST, IDX format);
Xiao et al., "Fashion-MNIST" (2017); Clanuwat et al., "Deep learning for classical Japanese
literature" (2018) (KMNIST).
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from physgrad.runs import fsync_dir
from physgrad.types import PhysgradError

ENV_VAR = "PHYSGRAD_DATA"
IMAGE_SHAPE = (28, 28)
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


class WrongDatasetError(PhysgradError):
    """A data folder holds the published files of another dataset than the one asked for."""


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
    x_train, x_test : uint8 arrays, shape ``(n, n_pixels)``
        Pixels ``0..scale``, images flattened row-major (MNIST-format: 784 pixels, 0..255).
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
    scale: int = 255
    """Pixel value of full intensity: training sees ``x / scale`` in [0, 1]."""

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
    head = b""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        kind = "corrupted gzip file" if head == b"\x1f\x8b" else "cannot read"
        raise PhysgradError(f"{path}: {kind} ({exc})") from exc
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
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        out += [root, root / name]
    if env.get(ENV_VAR):
        root = Path(env[ENV_VAR]).expanduser()
        out += [root / name, root]  # the named subfolder first: it says which dataset it holds
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
    if data_dir is not None:  # explicit: only this folder (as given, then <folder>/<name>), no fallback
        root = Path(data_dir).expanduser()
        for folder in (root, root / name):
            if all(_find_file(folder, stem) for stem in FILES.values()):
                check_not_other_dataset(name, folder)
                return folder
        if not root.is_dir():
            why = "does not exist" if not root.exists() else "is not a folder"
            raise DataNotFoundError(f"--data-dir {root} {why}; pass the folder holding the four files of "
                                    f"{name!r} ({', '.join(FILES.values())}, .gz or raw)")
        missing = [stem for stem in FILES.values() if not _find_file(root, stem)]
        raise DataNotFoundError(
            f"--data-dir {root} does not hold dataset {name!r}: missing {', '.join(missing)} (.gz or raw), "
            f"and {root / name} does not hold all four files either")
    looked = candidate_dirs(name, data_dir, **kw)
    env = os.environ if kw.get("env") is None else kw["env"]
    env_root = Path(env[ENV_VAR]).expanduser() if env.get(ENV_VAR) else None
    for folder in looked:
        if all(_find_file(folder, stem) for stem in FILES.values()):
            check_not_other_dataset(name, folder)
            if folder == env_root and folder.name != name and not _published(name, folder):
                raise WrongDatasetError(
                    f"{ENV_VAR}={env_root} holds four MNIST-format files but nothing says they are {name!r}: "
                    f"the folder is not named {name!r} and its files do not match the published {name!r} "
                    f"checksums. Put them in {env_root / name}, or pass --data-dir {env_root} if they "
                    f"are {name!r}.")
            return folder
    lines = "\n".join(f"  {p}" for p in looked)
    raise DataNotFoundError(
        f"dataset {name!r} not found: none of these folders holds the four files "
        f"{', '.join(FILES.values())} (.gz or raw):\n{lines}\n"
        f"Pass --data-dir, set {ENV_VAR}, or run `physgrad download {name}`.")


def check_not_other_dataset(name: str, folder) -> None:
    """Raise :class:`WrongDatasetError` when a gzipped file of ``folder`` is, by its md5, a published
    file of another dataset of :data:`DATASETS` (files matching no published checksum pass)."""
    folder = Path(folder)
    for stem in FILES.values():
        path = _find_file(folder, stem)
        if path is None or path.suffix != ".gz":
            continue
        md5 = file_digest(path, "md5")
        for other, spec in DATASETS.items():
            if other != name and spec.checksums.get(path.name, {}).get("md5") == md5:
                raise WrongDatasetError(
                    f"{path} is the published {other!r} file (md5 {md5}), not {name!r}: {folder} holds "
                    f"{other!r}; point --data-dir or {ENV_VAR} at the {name!r} files (or at a folder with a "
                    f"{name}/ subfolder)")


def _published(name: str, folder: Path) -> bool:
    """Whether all four files of ``folder`` are gzipped and match ``name``'s published md5."""
    sums = dataset_spec(name).checksums
    for stem in FILES.values():
        path = _find_file(folder, stem)
        if path is None or path.suffix != ".gz" or sums.get(path.name, {}).get("md5") is None:
            return False
        if file_digest(path, "md5") != sums[path.name]["md5"]:
            return False
    return True


DIGITS_CSV = Path(__file__).resolve().parents[1] / "examples" / "digits" / "digits.csv"
"""scikit-learn's 8 x 8 digits (1797 images, pixel counts 0..16), shipped with the package."""
DIGITS_TEST = 360
"""The last 360 images are the test split of ``--dataset digits`` (the first 1437 train)."""
EMBEDDED = ("digits",)
"""Datasets shipped inside the package (no download, no data folder)."""
TRAIN_DATASETS = tuple(DATASETS) + EMBEDDED
"""Every ``--dataset`` of ``physgrad train``."""
PIXEL_SCALE = {"digits": 16}
"""Integer pixel value of full intensity where it is not 255 (the digits count 0..16 pen strokes)."""


def pixel_scale(dataset: str) -> int:
    """The integer pixel value of full intensity of ``dataset``'s images (255; ``digits``: 16)."""
    return PIXEL_SCALE.get(dataset, 255)


def read_digits(path=DIGITS_CSV) -> tuple:
    """``(X, y)``: the digits' pixel counts ``(1797, 64)`` uint8 in 0..16 and labels int64."""
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 65 or data.min() < 0 or data[:, :64].max() > 16 or data[:, 64].max() > 9:
        raise PhysgradError(f"{path}: expected 65 columns (p0..p63 in 0..16, label in 0..9), got shape {data.shape}")
    return data[:, :64].astype(np.uint8), data[:, 64]


def data_record(folder) -> dict:
    """``{"folder": absolute path, "files": {filename: sha256}}`` of the four files in ``folder``
    (an embedded dataset: its one file)."""
    folder = Path(folder)
    if folder.is_file():
        return {"folder": str(folder.parent.resolve()), "files": {folder.name: file_digest(folder, "sha256")}}
    files = {}
    for stem in FILES.values():
        path = _find_file(folder, stem)
        files[path.name] = file_digest(path, "sha256")
    return {"folder": str(folder.resolve()), "files": files}


def load_dataset(name: str = "mnist", data_dir=None, **kw) -> Dataset:
    """Load a dataset into memory (images flattened to ``(n, 784)`` uint8; ``digits``: the embedded
    8 x 8 digits, ``(n, 64)`` in 0..16, the last :data:`DIGITS_TEST` images the test split)."""
    if name == "digits":
        if data_dir is not None:
            raise PhysgradError("--dataset digits is shipped with physgrad: no --data-dir")
        X, y = read_digits()
        n = len(X) - DIGITS_TEST
        return Dataset(X[:n], y[:n], X[n:], y[n:], name="digits", source=str(DIGITS_CSV), scale=pixel_scale("digits"))
    folder = find_data_dir(name, data_dir, **kw)
    arrays = {key: read_idx(_find_file(folder, stem)) for key, stem in FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise PhysgradError(f"{folder}: {split} images {x.shape} and labels {y.shape} do not match")
        if len(x) == 0:
            raise PhysgradError(f"{folder}: the {split} split has 0 images")
        if x.shape[1:] != IMAGE_SHAPE or x.dtype != np.uint8:
            raise PhysgradError(f"{folder}: {split} images are {x.shape[1]}x{x.shape[2]} {x.dtype}; MNIST-format "
                                f"datasets are {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} uint8")
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


MAX_DOWNLOAD_BYTES = 256 << 20  # per file; the published files are at most ~30 MB


def download(name: str, dest=None, mirrors: Optional[Sequence[str]] = None,
             checksums: Optional[Mapping[str, Mapping[str, str]]] = None,
             timeout: float = 60.0, quiet: bool = False, force: bool = False) -> Path:
    """Download the four files of ``name`` into ``dest`` and verify their checksums.

    Each file is streamed into a new unique temporary file in ``dest`` (``tempfile.mkstemp``; at
    most :data:`MAX_DOWNLOAD_BYTES`), verified, and only then renamed over its name
    (``os.replace``). A file already in ``dest`` with the published checksum is kept; any other
    file (another content, a symbolic link) under one of the four names is never deleted or
    replaced unless ``force`` -- and even then only by a verified download. Every name is checked
    before anything is downloaded.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist", "kmnist"}
    dest : path, optional
        Target folder (default ``~/.physgrad/data/<name>``).
    mirrors, checksums : optional
        Override the dataset's mirrors (base URLs ending in ``/``) and checksums (tests use a
        local HTTP server).
    timeout : float
        Seconds per connection attempt (and per read).
    force : bool
        Replace files under the dataset's names that are not the published ones (after a verified
        download).

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    ChecksumError
        A file downloaded from every mirror failed verification (nothing is left behind).
    PhysgradError
        No mirror could serve a file (the message lists each URL and its error); a file in
        ``dest`` that is not the published one, without ``force`` (the message names it).
    """
    spec = dataset_spec(name)
    mirrors = tuple(mirrors) if mirrors is not None else spec.mirrors
    checksums = spec.checksums if checksums is None else checksums
    dest = Path(dest).expanduser() if dest is not None else Path.home() / ".physgrad" / "data" / name
    if dest.exists() and not dest.is_dir():
        raise PhysgradError(f"--dest {dest} is a file, not a folder")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PhysgradError(f"--dest {dest}: cannot create the folder ({exc.strerror or exc})") from None
    todo = []
    for stem in FILES.values():  # check every name first: nothing is downloaded when one is refused
        fname = stem + ".gz"
        sums = checksums.get(fname)
        if not sums:
            raise PhysgradError(f"no checksum known for {fname}; refusing to download unverified data")
        target = dest / fname
        if target.is_symlink() or target.exists():
            if target.is_dir() and not target.is_symlink():
                raise PhysgradError(f"{target} is a folder; not replaced (move it away)")
            if target.is_file() and not target.is_symlink():
                try:
                    verify_checksums(target, sums)
                    continue  # the published file is already there
                except ChecksumError as exc:
                    why = f"its checksum differs: {exc}"
                except OSError as exc:
                    why = f"it cannot be read: {exc.strerror or exc}"
            else:
                why = "a symbolic link or special file"
            if not force:
                raise PhysgradError(f"{target} exists and is not the published {fname} ({why}); physgrad did not "
                                    f"write it and will not replace it: move it away, or pass --force to replace it "
                                    f"with a verified download")
        todo.append((fname, sums, target))
    for fname, sums, target in todo:
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + fname
            try:
                fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{fname}.", suffix=".part")
            except OSError as exc:
                raise PhysgradError(f"--dest {dest}: cannot write ({exc.strerror or exc})") from None
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                    n = 0
                    for chunk in iter(lambda: resp.read(1 << 20), b""):
                        n += len(chunk)
                        if n > MAX_DOWNLOAD_BYTES:
                            raise OSError(f"more than {MAX_DOWNLOAD_BYTES >> 20} MB; not the published file")
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                verify_checksums(tmp, sums)
                os.replace(tmp, target)
                fsync_dir(dest)
                if not quiet:
                    print(f"{url} -> {target} (checksum ok)", file=sys.stderr)
                break
            except (urllib.error.URLError, OSError, ChecksumError, ValueError, http.client.HTTPException) as exc:
                errors.append(f"  {url}: {exc}")
            finally:
                if os.path.lexists(tmp):
                    os.unlink(tmp)
        else:
            kind = ChecksumError if errors and all("expected" in e for e in errors) else PhysgradError
            raise kind(f"could not download {fname}:\n" + "\n".join(errors))
    return dest

"""Use a ``physgrad train`` run: class predictions for images (``physgrad predict RUN --images ...``).

The run folder's ``config.json`` gives the preset (network, schedule, evaluation sweeps) and dtype; its
``checkpoint.npz`` (checked as on ``--resume``) the parameters, the moving average when the run keeps one
(what the run evaluates). Each image is relaxed from the zero state for ``preset.sweeps_eval`` sweeps by
the fused evaluator (:func:`physgrad.layered.fused.free_outputs`), as the train loop's evaluation does,
and the class is the output unit with the largest value (V for DRNs). Device models are not applied
(the parameters as stored).

Images: an IDX file (``.gz`` allowed), a ``.npy`` array (``(n, H, W)`` or ``(n, H*W)``; integers 0..255 (the digits: 0..16) or
floats 0..1), or PNG files / a folder of PNGs (grey or colour, averaged to grey; 0..1). They must have
the run's input size (784 for MNIST). At most :data:`MAX_IMAGES`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from physgrad.runs import load_json, write_new_file
from physgrad.types import PhysgradError

MAX_IMAGES = 1_000_000


@dataclass(frozen=True)
class LayeredPrediction:
    """Predictions of a train run: ``outputs`` (n, n_classes), ``predicted`` (n,) int, ``names`` (the
    image of each row: file name and index), ``labels`` (n,) int or None, ``accuracy`` or None."""

    outputs: np.ndarray
    predicted: np.ndarray
    names: tuple
    labels: Optional[np.ndarray]
    accuracy: Optional[float]


def train_run_record(folder) -> Optional[dict]:
    """The ``config.json`` of the ``physgrad train`` run in ``folder``, read once (a dict with a
    ``preset`` and a ``config``); ``None`` when ``folder`` is not such a run (no checkpoint, no
    ``config.json``, or one that is not a train run's). The callers below take this record, so a
    prediction reads the file once."""
    p = Path(folder)
    if not (p.is_dir() and (p / "config.json").is_file() and (p / "checkpoint.npz").exists()):
        return None
    try:
        cfg = load_json(p / "config.json")
    except (OSError, ValueError, RecursionError):
        return None
    ok = isinstance(cfg, dict) and isinstance(cfg.get("preset"), dict) and isinstance(cfg.get("config"), dict)
    return cfg if ok else None


def is_train_run(folder) -> bool:
    """True when ``folder`` holds a ``physgrad train`` run (:func:`train_run_record` is not None)."""
    return train_run_record(folder) is not None


def _images_from(path: Path, scale: int = 255) -> tuple:
    """``(array (n, h, w) or (n, d), names)`` from one IDX / NPY / PNG file; integer pixels divided by
    ``scale`` (their full intensity)."""
    name = path.name.lower()
    if name.endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise PhysgradError(f"{path}: not a .npy array ({exc})") from None
        if arr.ndim not in (2, 3) or arr.shape[0] > MAX_IMAGES:
            raise PhysgradError(f"{path}: expected (n, H, W) or (n, H*W) images, got shape {arr.shape}")
        arr = np.asarray(arr)
        if arr.dtype.kind not in "uif":
            raise PhysgradError(f"{path}: images must be numbers, got dtype {arr.dtype}")
        if arr.dtype.kind in "ui":
            arr = arr.astype(np.float64) / scale
        return arr, tuple(f"{path.name}[{i}]" for i in range(len(arr)))
    if name.endswith(".png"):
        import matplotlib.image as mpimg

        try:
            im = np.asarray(mpimg.imread(path), dtype=np.float64)
        except (OSError, ValueError, SyntaxError) as exc:
            raise PhysgradError(f"{path}: not a PNG image ({exc})") from None
        if im.ndim == 3:
            im = im[..., :3].mean(axis=2)
        return im[None], (path.name,)
    from physgrad.layered.data import read_idx

    arr = read_idx(path)  # raises PhysgradError naming the file for anything that is not IDX
    if arr.ndim not in (2, 3) or len(arr) > MAX_IMAGES:
        raise PhysgradError(f"{path}: expected an IDX file of images (n, H, W), got shape {arr.shape}")
    return arr.astype(np.float64) / scale, tuple(f"{path.name}[{i}]" for i in range(len(arr)))


def read_images(paths: Sequence, scale: int = 255) -> tuple:
    """``(x (n, d) float in 0..1, names)`` from files and folders of PNGs (sorted by name); integer
    pixels (IDX, integer ``.npy``) in ``0..scale`` (:func:`run_pixel_scale`: 255, the digits 16)."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            pngs = sorted(q for q in p.iterdir() if q.suffix.lower() == ".png")
            if not pngs:
                raise PhysgradError(f"{p}: no .png files in the folder")
            files += pngs
        elif p.is_file():
            files.append(p)
        else:
            raise PhysgradError(f"{p}: no such file or folder")
    if len(files) > MAX_IMAGES:
        raise PhysgradError(f"{len(files)} image files: more than {MAX_IMAGES}")
    arrays, names = [], []
    for f in files:
        a, n = _images_from(f, scale)
        if len(a) == 0:
            raise PhysgradError(f"{f}: holds no images")
        arrays.append(a.reshape(len(a), -1))
        names += n
    sizes = {a.shape[1] for a in arrays}
    if len(sizes) != 1:
        raise PhysgradError(f"the images have different sizes ({sorted(sizes)} pixels)")
    x = np.concatenate(arrays)
    if not np.all(np.isfinite(x)) or x.min(initial=0) < 0 or x.max(initial=0) > 1:
        raise PhysgradError(f"pixel values must lie in 0..{scale} (integers) or 0..1 (floats)")
    return x, tuple(names)


def read_labels(path) -> np.ndarray:
    """Class labels ``(n,)`` int from an IDX or ``.npy`` file."""
    p = Path(path)
    if p.name.lower().endswith(".npy"):
        try:
            y = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise PhysgradError(f"{p}: not a .npy array ({exc})") from None
    else:
        from physgrad.layered.data import read_idx

        y = read_idx(p)
    if y.ndim != 1 or y.dtype.kind not in "ui" or len(y) > MAX_IMAGES:
        raise PhysgradError(f"{p}: labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    return y.astype(np.int64)


def run_pixel_scale(folder, record: Optional[dict] = None) -> int:
    """Full intensity of the integer pixels the train run in ``folder`` was trained on (its dataset's
    :func:`physgrad.layered.data.pixel_scale`; 255 when the run names none). ``record``: the run's
    :func:`train_run_record`, when the caller has it (else ``config.json`` is read)."""
    from physgrad.layered.data import pixel_scale

    try:
        cfg = (record if record is not None else load_json(Path(folder) / "config.json"))["config"]
        return pixel_scale(cfg.get("dataset") or "mnist")
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise PhysgradError(f"{Path(folder) / 'config.json'}: not a valid train run configuration ({exc})") from None


def predict_run(folder, x: np.ndarray, labels: Optional[np.ndarray] = None, names: Sequence = (),
                record: Optional[dict] = None) -> LayeredPrediction:
    """Predict classes of images ``x`` (n, d) in 0..1 with the train run in ``folder`` (``record``: its
    :func:`train_run_record`, when the caller has it; else it is read here)."""
    from physgrad.layered import fused
    from physgrad.layered.steppers import initial_params
    from physgrad.layered.train import TrainConfig, load_checkpoint

    folder = Path(folder)
    record = record if record is not None else train_run_record(folder)
    if record is None:
        raise PhysgradError(f"{folder}: not a physgrad train run folder (config.json with a preset, checkpoint.npz)")
    try:
        config = TrainConfig.from_dict(record["config"])
        preset = config.resolved_preset
    except (PhysgradError, OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise PhysgradError(f"{folder / 'config.json'}: not a valid train run configuration ({exc})") from None
    dtype = np.dtype(config.dtype)
    ck = load_checkpoint(folder / "checkpoint.npz", expect_params=initial_params(preset, config.seed, dtype))
    params = ck["ema"] if ck["ema"] is not None else ck["params"]
    energy = preset.energy()
    if x.shape[1] != energy.n_inputs:
        raise PhysgradError(f"the images have {x.shape[1]} pixels; the run's network takes {energy.n_inputs}")
    if labels is not None and len(labels) != len(x):
        raise PhysgradError(f"{len(labels)} labels for {len(x)} images")
    spec = fused.FusedSpec(energy, preset.schedule, dtype)
    out = np.asarray(fused.free_outputs(spec, params, np.asarray(x, dtype=dtype), preset.sweeps_eval), float)
    if not np.all(np.isfinite(out)):
        from physgrad.types import NotSolvedError

        raise NotSolvedError("non-finite outputs: the run's parameters do not relax these images")
    pred = np.argmax(out, axis=1)
    acc = None if labels is None else float(np.mean(pred == labels))
    return LayeredPrediction(out, pred, tuple(names) or tuple(str(i) for i in range(len(x))), labels, acc)


def predictions_csv(p: LayeredPrediction) -> str:
    """``image, predicted[, label], out_0..out_K-1`` (outputs with the shortest exact repr)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    k = p.outputs.shape[1]
    w.writerow(["image", "predicted"] + (["label"] if p.labels is not None else []) + [f"out_{j}" for j in range(k)])
    for i in range(len(p.predicted)):
        w.writerow([p.names[i], int(p.predicted[i])] + ([int(p.labels[i])] if p.labels is not None else [])
                   + [repr(float(v)) for v in p.outputs[i]])
    return buf.getvalue()


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``(n_classes, n_classes)``: row = true class, column = predicted class."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    ok = (labels >= 0) & (labels < n_classes)
    np.add.at(m, (labels[ok], predicted[ok]), 1)
    return m


def plot_confusion(m: np.ndarray, path, title: str = "", overwrite: bool = False) -> None:
    """The confusion matrix as a PNG (counts in the cells), written with
    :func:`physgrad.runs.write_new_file` (atomically; an existing ``path`` only with ``overwrite``)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = m.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * k, 0.8 + 0.45 * k))
    ax.imshow(m, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=100, format="png")
    finally:
        plt.close(fig)
    write_new_file(path, buf.getvalue(), overwrite)

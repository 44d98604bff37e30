"""``physgrad predict`` fuzz: damaged run folders, damaged CSVs and hostile image files. The small seeded
form runs in the default tests (``tests/test_fuzz_runs.py``); the large form is this script::

    python3 benchmarks/fuzz_predict.py [--seed 0] [--fit 200] [--train 100] [--csv 200] [--images 200]
                                       [--markdown reports/benchmarks/fuzz-predict.md]

Surfaces: a finished ``physgrad fit`` run folder with one file damaged (``corrupt`` of
``benchmarks/fuzz_runs.py``: truncation, bit flips, garbage, deletion, a folder or a symlink in its
place, structured edits of its JSON/CSV/NPZ) predicted on the training CSV; the same for a finished
``physgrad train`` run predicted on a small ``.npy`` of images with labels; an intact fit run on a
damaged CSV; an intact train run on hostile image and label files (wrong shapes and dtypes, object
arrays, NaN, huge IDX headers, garbage PNGs, empty files).

Every case writes ``--out`` either to a new path or onto a user's existing file without
``--overwrite`` (so about half the cases are refused for that reason alone, after the model and the
data were read: the damage is exercised either way). Classes:

* ``solved``: exit 0 (``--out`` complete when it was new); ``refused``: exit 2 with a message;
  ``not-solved``: exit 1;
* ``traceback``: an exception escaped ``physgrad.cli.main`` or "Traceback" on stderr; ``hang``: past
  the time limit; ``bad-exit``: any other exit code;
* ``changed``: predict changed the model folder (it only reads it); ``lost``: the user's existing
  ``--out`` file, or the target of a planted symlink, changed; ``partial``: a new ``--out`` exists
  after a failure, or is not a complete CSV after success.
"""
from __future__ import annotations

import argparse
import collections
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fuzz_runs import _rand_value, corrupt, make_fit_task, make_train_data, run_main, snapshot  # noqa: E402

GOOD = ("solved", "refused", "not-solved")
USER = b"a user's predictions, not to be touched\n"


def make_fit_run(root: Path, task: dict) -> Path:
    from physgrad.netlists.fit import FitSpec, fit_run

    spec = FitSpec(netlist=task["netlist"], data=task["data"], inputs=tuple(task["inputs"].split(",")),
                   outputs=tuple(task["outputs"].split(",")), batch_size=4, epochs=2)
    out = root / "fit-run"
    fit_run(spec, out, progress=False, log=lambda s: None)
    return out


def make_train_run(root: Path, data_dir: str) -> Path:
    from physgrad.layered.train import TrainConfig, train

    out = root / "train-run"
    train(TrainConfig(preset="drn-xs", data_dir=data_dir, epochs=1, train_size=40, test_size=8, threads=1,
                      backend="numpy"), out, progress=False)
    return out


def case(model: Path, argv_tail: list, work: Path, rng, timeout_s: float, what: str) -> tuple:
    """Run ``predict MODEL ARGV_TAIL --out OUT`` once; classify (see the module docstring)."""
    victim = work / "victim.txt"
    victim.write_text("a user's file outside the run folder")
    out = work / "pred.csv"
    existing = rng.random() < 0.5
    if out.exists() or out.is_symlink():
        out.unlink()
    if existing:
        out.write_bytes(USER)
    before = snapshot(model) if model.is_dir() else None
    rc, err, exc = run_main(["predict", str(model), *argv_tail, "--out", str(out)], timeout_s)
    if exc == "Hang":
        return "hang", what, err[-300:]
    if exc is not None or "Traceback" in err:
        return "traceback", what, (exc or "") + err[-500:]
    if victim.read_text() != "a user's file outside the run folder" or (existing and out.read_bytes() != USER):
        return "lost", what, err[-300:]
    if before is not None and snapshot(model) != before:
        return "changed", what, err[-300:]
    if not existing:
        if rc != 0 and out.exists():
            return "partial", what, f"rc={rc} and {out.name} exists"
        if rc == 0 and (not out.exists() or not out.read_text().endswith("\n")):
            return "partial", what, "exit 0 without a complete --out"
    if rc == 0 and existing:
        return "bad-exit", what, "exit 0 although --out existed without --overwrite"
    return {0: "solved", 1: "not-solved", 2: "refused"}.get(rc, "bad-exit"), what, err[-200:]


def damaged_run_case(base: Path, argv_tail: list, work: Path, rng, timeout_s: float) -> tuple:
    model = work / "model"
    if model.exists() or model.is_symlink():
        shutil.rmtree(model)
    shutil.copytree(base, model, symlinks=True)
    what = corrupt(model, rng, work / "victim.txt")
    return case(model, argv_tail, work, rng, timeout_s, what)


def damaged_csv(src: Path, dst: Path, rng) -> str:
    """One random edit of a CSV (structure, values, encoding)."""
    raw = src.read_bytes()
    lines = raw.decode().splitlines(keepends=True)
    i = int(rng.integers(len(lines)))
    op = ["drop-line", "dup-header", "cell", "cell", "nan", "huge", "short-row", "long-row", "bom", "latin1",
          "quotes", "empty", "header-only", "nul", "blank-lines", "dup-column"][int(rng.integers(16))]
    if op == "drop-line":
        del lines[i]
    elif op == "dup-header":
        lines.insert(1 + i % max(len(lines) - 1, 1), lines[0])
    elif op in ("cell", "nan", "huge"):
        j = max(i, 1) if len(lines) > 1 else 0
        cells = lines[j].rstrip("\r\n").split(",")
        k = int(rng.integers(len(cells)))
        cells[k] = {"cell": str(_rand_value(rng)), "nan": ["nan", "NaN", "inf", "-inf", ""][int(rng.integers(5))],
                    "huge": ["1e308", "-1e308", "1e400", "1" * 400, "0x10"][int(rng.integers(5))]}[op]
        lines[j] = ",".join(cells) + "\n"
    elif op == "short-row":
        j = max(i, 1)
        lines[j] = ",".join(lines[j].rstrip("\n").split(",")[:-1]) + "\n"
    elif op == "long-row":
        j = max(i, 1)
        lines[j] = lines[j].rstrip("\n") + ",1\n"
    elif op == "bom":
        lines[0] = "\ufeff" + lines[0]
    elif op == "quotes":
        lines[0] = ",".join(f'"{c}"' for c in lines[0].rstrip("\n").split(",")) + "\n"
    elif op == "empty":
        lines = []
    elif op == "header-only":
        lines = lines[:1]
    elif op == "nul":
        lines[i] = lines[i][:3] + "\0" + lines[i][3:]
    elif op == "blank-lines":
        lines.insert(i, "\n\n")
    elif op == "dup-column":
        lines = [ln.rstrip("\n") + "," + ln.split(",")[0].strip() + "\n" for ln in lines]
    text = "".join(lines)
    dst.write_bytes(text.encode("latin-1", "replace") + b"\xe9\xff" if op == "latin1" else text.encode())
    return f"csv:{op}"


def _idx_bytes(arr: np.ndarray, dims=None) -> bytes:
    dims = arr.shape if dims is None else dims
    return bytes([0, 0, 0x08, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + arr.tobytes()


def hostile_images(work: Path, rng, good: np.ndarray, labels: np.ndarray) -> tuple:
    """``(argv tail, description)``: images and labels files of which one is hostile."""
    img, lab = work / "images.npy", work / "labels.npy"
    for p in work.glob("hostile*"):
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    np.save(img, good)
    np.save(lab, labels)
    op = ["shape", "dtype", "object", "nan", "negative", "big", "empty", "idx-huge", "idx-trunc", "png-garbage",
          "png-dir", "labels-float", "labels-count", "labels-range", "flat", "scalar", "garbage", "dev-zero"][
        int(rng.integers(18))]
    tail = ["--images", str(img), "--labels", str(lab)]
    if op == "shape":
        np.save(img, good[:, :27, :])
    elif op == "dtype":
        np.save(img, good.astype([np.complex128, np.float16, np.int64, bool][int(rng.integers(4))]))
    elif op == "object":
        np.save(img, np.array([good[0], "x"], dtype=object), allow_pickle=True)
    elif op == "nan":
        g = good.astype(float)
        g[0, 3, 3] = [np.nan, np.inf, -np.inf][int(rng.integers(3))]
        np.save(img, g)
    elif op == "negative":
        np.save(img, good.astype(np.int64) - 300)
    elif op == "big":
        np.save(img, good.astype(float) * 1e300)
    elif op == "empty":
        np.save(img, good[:0])
        np.save(lab, labels[:0])
    elif op == "idx-huge":
        p = work / "hostile.idx"
        p.write_bytes(_idx_bytes(good[:1], dims=(2 ** 31, 2 ** 16, 2 ** 16)))
        tail = ["--images", str(p)]
    elif op == "idx-trunc":
        p = work / "hostile.idx"
        p.write_bytes(_idx_bytes(good)[:-int(rng.integers(1, 500))])
        tail = ["--images", str(p)]
    elif op == "png-garbage":
        p = work / "hostile.png"
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(int(rng.integers(0, 300))))
        tail = ["--images", str(p)]
    elif op == "png-dir":
        d = work / "hostile-dir"
        d.mkdir()
        (d / "a.png").write_bytes(rng.bytes(50))
        (d / "b.txt").write_text("not an image")
        tail = ["--images", str(d)]
    elif op == "labels-float":
        np.save(lab, labels.astype(float) + 0.5)
    elif op == "labels-count":
        np.save(lab, labels[:-1])
    elif op == "labels-range":
        np.save(lab, labels.astype(np.int64) + [10, -1, 2 ** 40][int(rng.integers(3))])
    elif op == "flat":
        np.save(img, good.reshape(len(good), -1)[:, :-1])
    elif op == "scalar":
        np.save(img, np.float64(3.0))
    elif op == "garbage":
        img.write_bytes(rng.bytes(int(rng.integers(0, 2000))))
    else:
        img.unlink()
        img.symlink_to("/dev/zero")
    return tail, f"images:{op}"


def run(seed: int = 0, n_fit: int = 200, n_train: int = 100, n_csv: int = 200, n_images: int = 200,
        timeout_s: float = 60.0) -> dict:
    """``{surface: {"cases", "counts" {class: n}, "bad" [(class, what, detail)], "cpu_s"}}``."""
    rng = np.random.default_rng(seed)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        task = make_fit_task(root)
        fit_base = make_fit_run(root, task)
        data_dir = make_train_data(root)
        train_base = make_train_run(root, data_dir)
        from physgrad.layered.data import FILES, read_idx

        good = read_idx(Path(data_dir) / (FILES["test_images"] + ".gz"))[:6]
        labels = read_idx(Path(data_dir) / (FILES["test_labels"] + ".gz"))[:6]
        work = root / "work"
        work.mkdir()
        np.save(work / "ok-images.npy", good)
        np.save(work / "ok-labels.npy", labels)
        fit_tail = ["--data", task["data"]]
        train_tail = ["--images", str(work / "ok-images.npy"), "--labels", str(work / "ok-labels.npy")]
        surfaces = [("fit run damaged", n_fit, lambda: damaged_run_case(fit_base, fit_tail, work, rng, timeout_s)),
                    ("train run damaged", n_train,
                     lambda: damaged_run_case(train_base, train_tail, work, rng, timeout_s))]

        def csv_case():
            what = damaged_csv(Path(task["data"]), work / "data.csv", rng)
            return case(fit_base, ["--data", str(work / "data.csv")], work, rng, timeout_s, what)

        def image_case():
            tail, what = hostile_images(work, rng, good, labels)
            return case(train_base, tail, work, rng, timeout_s, what)

        surfaces += [("CSV damaged", n_csv, csv_case), ("images hostile", n_images, image_case)]
        for name, n, fn in surfaces:
            t0 = time.process_time()
            counts, bad = collections.Counter(), []
            for _ in range(n):
                cls, what, detail = fn()
                counts[cls] += 1
                if cls not in GOOD:
                    bad.append((cls, what, detail))
            results[name] = {"cases": n, "counts": dict(counts), "bad": bad, "cpu_s": time.process_time() - t0}
    return results


def markdown(results: dict, argv: list) -> str:
    classes = ["solved", "refused", "not-solved", "traceback", "hang", "changed", "lost", "partial", "bad-exit"]
    lines = [f"`python3 benchmarks/fuzz_predict.py {' '.join(argv)}`", "",
             "| surface | cases | " + " | ".join(classes) + " | CPU s |", "|---|" + "---|" * (len(classes) + 2)]
    for name, r in results.items():
        lines.append(f"| {name} | {r['cases']} | " + " | ".join(str(r["counts"].get(c, 0)) for c in classes)
                     + f" | {r['cpu_s']:.1f} |")
    for name, r in results.items():
        for cls, what, detail in r["bad"][:10]:
            lines.append(f"- {name}: **{cls}** after `{what}`: {detail.strip()[:300]}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit", type=int, default=200)
    p.add_argument("--train", type=int, default=100)
    p.add_argument("--csv", type=int, default=200)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--markdown", default=None)
    args = p.parse_args(argv)
    results = run(args.seed, args.fit, args.train, args.csv, args.images, args.timeout)
    text = markdown(results, sys.argv[1:] if argv is None else argv)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0 if all(not r["bad"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Run-folder fuzz (issue 18): corrupted run folders on ``--resume`` (fit, train), damaged sweep tables,
concurrent writers and signals. The small seeded form runs in the default tests
(``tests/test_fuzz_runs.py``); the large form is this script::

    python3 benchmarks/fuzz_runs.py [--seed 0] [--fit 400] [--train 60] [--sweep 200] [--writers 12]
                                    [--signals 16] [--sources 0] [--energy 0]
                                    [--markdown reports/benchmarks/fuzz-runs.md]

``--sources``: run folders of ``fit --trainable 'vg*'`` on a transistor network (trained gate sources in
the checkpoint); ``--energy``: run folders of ``train --energy`` (energy columns, ``energy.png``).

Each case is classified:

* ``refused``: exit 2 with the folder byte for byte as before (the intended answer to damage);
* ``accepted``: exit 0 (the damage did not touch what the run needs, e.g. a zip timestamp);
* ``traceback``: an exception escaped ``physgrad.cli.main`` or "Traceback" on stderr;
* ``hang``: longer than the time limit;
* ``changed``: refused (exit 2) but the folder changed; ``lost``: a file outside the run folder
  (the target of a planted symlink) or a user's file inside it changed or disappeared;
* ``bad-exit``: any other exit code.

Concurrent writers: N processes start ``physgrad fit`` into one folder at once; each must exit 0 or 2
(naming the owner), the user's file in the folder must survive, and the folder must resume afterwards.
Signals: ``physgrad fit`` / ``sweep`` get SIGINT or SIGTERM (sometimes twice) after a random delay;
the exit must be 0, 130 or 143 with no traceback, and the folder must resume afterwards.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from physgrad.cli import main  # noqa: E402
from verification.fuzz import snapshot  # noqa: E402,F401  (also imported from here by fuzz_predict)

try:
    from physgrad.runs import arrays_sha256  # noqa: E402
    LEGACY = False
except ImportError:  # physgrad before issue 18 (to measure the "before" figures): no --overwrite, no runs.py
    from physgrad.layered.train import _arrays_sha256 as arrays_sha256  # noqa: E402
    LEGACY = True

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
GOOD = ("refused", "accepted")


class Hang(BaseException):
    pass


def run_main(argv, timeout_s: float) -> tuple:
    """``(exit code or None, stderr, exception name)``; SIGALRM ends a case that runs too long."""
    err = io.StringIO()

    def alarm(signum, frame):
        raise Hang()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
        return rc, err.getvalue(), None
    except Hang:
        return None, err.getvalue(), "Hang"
    except SystemExit as exc:
        return exc.code, err.getvalue(), None
    except BaseException as exc:  # noqa: BLE001 - a traceback is what is counted
        return None, err.getvalue(), f"{type(exc).__name__}: {exc}"[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --- base run folders --------------------------------------------------------------------------------
def make_fit_task(root: Path) -> dict:
    from physgrad.circuit.netlist import write_netlist
    from verification.circuits import training_graph

    circuit, inputs, outputs = training_graph(30, 3, n_inputs=2, n_outputs=2)
    (root / "net.cir").write_text(write_netlist(circuit))
    rng = np.random.default_rng(0)
    X, Y = rng.uniform(-1, 1, (16, 2)), rng.uniform(-0.2, 0.2, (16, 2))
    rows = [",".join(inputs + outputs)] + [",".join(f"{v:.6f}" for v in np.r_[x, y]) for x, y in zip(X, Y)]
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return {"netlist": str(root / "net.cir"), "data": str(root / "train.csv"), "inputs": ",".join(inputs),
            "outputs": ",".join(outputs)}


def fit_argv(task: dict, out, epochs: int = 3, *extra) -> list:
    return ["fit", task["netlist"], "--data", task["data"], "--inputs", task["inputs"], "--outputs",
            task["outputs"], "--batch-size", "4", "--epochs", str(epochs), "--out", str(out), "--no-progress",
            *extra]


def make_fit_runs(root: Path, task: dict) -> list:
    from physgrad.netlists.fit import FitSpec, fit_run

    spec = FitSpec(netlist=task["netlist"], data=task["data"], inputs=tuple(task["inputs"].split(",")),
                   outputs=tuple(task["outputs"].split(",")), batch_size=4, epochs=3)
    a, b = root / "fit-epoch", root / "fit-batch"
    fit_run(spec, a, progress=False, log=lambda s: None, _stop_after_epoch=1)
    if LEGACY:  # no mid-epoch checkpoints before issue 18
        return [a, a]
    fit_run(spec, b, progress=False, log=lambda s: None, _interrupt_after=6)
    return [a, b]


SOURCE_FIT = ("--method", "exact", "--trainable", "vg*", "--bounds", "vg*=0:3")
"""The trained-source options of the ``fit --trainable`` surface (gate voltages of a transistor network)."""


def make_source_task(root: Path) -> dict:
    """The transistor network whose gate sources ``fit --trainable 'vg*'`` trains (adjoint route)."""
    from verification.circuits import NMOS_EDGES_CSV, NMOS_EDGES_DECK

    (root / "nmos.cir").write_text(NMOS_EDGES_DECK)
    (root / "nmos.csv").write_text(NMOS_EDGES_CSV)
    return {"netlist": str(root / "nmos.cir"), "data": str(root / "nmos.csv"), "inputs": "vin", "outputs": "out"}


def source_fit_argv(task: dict, out, epochs: int = 3, *extra) -> list:
    return ["fit", task["netlist"], "--data", task["data"], "--inputs", task["inputs"], "--outputs",
            task["outputs"], "--batch-size", "2", "--epochs", str(epochs), "--out", str(out), "--no-progress",
            *SOURCE_FIT, *extra]


def make_source_fit_runs(root: Path, task: dict) -> list:
    """Two ``fit --trainable`` run folders: one stopped after epoch 1, one interrupted mid-epoch."""
    from physgrad.netlists.fit import FitSpec, fit_run

    spec = FitSpec(netlist=task["netlist"], data=task["data"], inputs=(task["inputs"],), outputs=(task["outputs"],),
                   method="exact", trainable=("vg*",), bounds=("vg*=0:3",), batch_size=2, epochs=3)
    a, b = root / "src-epoch", root / "src-batch"
    fit_run(spec, a, progress=False, log=lambda s: None, _stop_after_epoch=1)
    fit_run(spec, b, progress=False, log=lambda s: None, _interrupt_after=4)
    return [a, b]


def make_train_data(root: Path) -> str:
    from physgrad.layered.data import FILES, write_idx

    rng = np.random.default_rng(0)

    def images(n):
        im = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        im[rng.random((n, 28, 28)) < 0.8] = 0
        return im

    tr, te = images(48), images(16)
    d = root / "mnist"
    d.mkdir()
    for key, arr in (("train_images", tr), ("test_images", te),
                     ("train_labels", (tr.reshape(48, -1).sum(1) % 10).astype(np.uint8)),
                     ("test_labels", (te.reshape(16, -1).sum(1) % 10).astype(np.uint8))):
        write_idx(d / (FILES[key] + ".gz"), arr)
    return str(d)


def train_argv(data_dir: str, out, *extra) -> list:
    return ["train", "--preset", "drn-xs", "--epochs", "2", "--train-size", "40", "--test-size", "8",
            "--backend", "numpy", "--threads", "1", "--no-progress", "--data-dir", data_dir, "--out", str(out),
            *extra]


def make_train_run(root: Path, data_dir: str, energy: bool = False) -> Path:
    """A DRN-XS run interrupted mid-epoch (``energy``: with ``--energy``, its energy columns and plot)."""
    from physgrad.layered.train import TrainConfig, train

    out = root / ("train-energy-run" if energy else "train-run")
    train(TrainConfig(preset="drn-xs", data_dir=data_dir, epochs=2, train_size=40, test_size=8, threads=1,
                      backend="numpy", energy=energy), out, progress=False, _interrupt_after=14)
    return out


# --- corruptions --------------------------------------------------------------------------------------
def _rand_value(rng):
    choices = [lambda: None, lambda: "x" * int(rng.integers(0, 40)), lambda: int(rng.integers(-10**6, 10**6)),
               lambda: 10 ** int(rng.integers(10, 400)), lambda: -1, lambda: 0, lambda: 1.5, lambda: [1, "a"],
               lambda: {"a": [1]}, lambda: True, lambda: float("nan"), lambda: "nan"]
    return choices[int(rng.integers(len(choices)))]()


def _json_mutate(d, rng, depth=0):
    if isinstance(d, dict) and d:
        k = list(d)[int(rng.integers(len(d)))]
        if rng.random() < 0.5 and isinstance(d[k], (dict, list)) and depth < 3:
            _json_mutate(d[k], rng, depth + 1)
        elif rng.random() < 0.2:
            del d[k]
        else:
            d[k] = _rand_value(rng)
    elif isinstance(d, list) and d:
        i = int(rng.integers(len(d)))
        d[i] = _rand_value(rng)


def _npz_mutate(path: Path, rng):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    old = arrays.pop("sha256", None)
    keys = sorted(arrays)
    k = keys[int(rng.integers(len(keys)))]
    a = arrays[k]
    op = int(rng.integers(7))
    if op == 0:
        del arrays[k]
    elif op == 1:
        arrays[k] = a.astype(np.float32) if a.dtype != np.float32 else a.astype(np.float64)
    elif op == 2 and a.size:
        arrays[k] = a.reshape(-1)[:-1] if a.ndim else np.array([a])
    elif op == 3:
        arrays[k] = np.asarray(_rand_value(rng) if rng.random() < 0.5 else int(rng.integers(-5, 200)))
    elif op == 4 and a.size and a.dtype.kind == "f":
        b = a.copy()
        b.reshape(-1)[int(rng.integers(a.size))] = [np.nan, np.inf, -1.0, 1e300][int(rng.integers(4))]
        arrays[k] = b
    elif op == 5:
        arrays[f"extra_{int(rng.integers(100))}"] = np.zeros(3)
    else:
        arrays[k] = np.asarray(str(_rand_value(rng)))
    try:
        arrays = {kk: np.asarray(v) for kk, v in arrays.items()}
        keep_old = old is not None and rng.random() < 0.2
        np.savez(path, sha256=old if keep_old else np.array(arrays_sha256(arrays)), **arrays)
    except (ValueError, TypeError, OverflowError):
        path.write_bytes(path.read_bytes()[:-7])


def corrupt(folder: Path, rng, victim: Path) -> str:
    """Apply one random corruption to a file of ``folder``; returns its description."""
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.is_symlink())
    name = files[int(rng.integers(len(files)))]
    p = folder / name
    raw = p.read_bytes()
    op = ["truncate", "flip", "garble", "delete", "dir", "symlink", "append", "structured", "structured",
          "structured", "empty", "dev-zero"][int(rng.integers(12))]
    if op == "truncate":
        p.write_bytes(raw[:int(rng.integers(0, max(len(raw), 1)))])
    elif op == "flip":
        b = bytearray(raw)
        for _ in range(int(rng.integers(1, 9))):
            if b:
                b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        p.write_bytes(bytes(b))
    elif op == "garble":
        b = bytearray(raw)
        if b:
            i = int(rng.integers(len(b)))
            n = int(rng.integers(1, 64))
            b[i:i + n] = rng.bytes(n)
        p.write_bytes(bytes(b))
    elif op == "delete":
        p.unlink()
    elif op == "dir":
        p.unlink()
        p.mkdir()
    elif op == "symlink":
        p.unlink()
        p.symlink_to(victim)
    elif op == "append":
        with open(p, "ab") as fh:
            fh.write(rng.bytes(int(rng.integers(1, 200))))
    elif op == "empty":
        p.write_bytes(b"")
    elif op == "dev-zero":
        p.unlink()
        p.symlink_to("/dev/zero")
    else:  # structured: keeps the format, changes the content
        if name.endswith(".npz"):
            _npz_mutate(p, rng)
        elif name.endswith(".json"):
            try:
                d = json.loads(raw)
                _json_mutate(d, rng)
                p.write_text(json.dumps(d))
            except ValueError:
                p.write_bytes(raw[:-3])
        elif name.endswith(".csv"):
            lines = raw.decode("utf-8", "replace").splitlines(keepends=True)
            i = int(rng.integers(len(lines))) if lines else 0
            kind = int(rng.integers(4))
            if kind == 0 and lines:
                del lines[i]
            elif kind == 1 and lines:
                lines.insert(i, lines[i])
            elif kind == 2 and lines:
                cells = lines[i].rstrip("\r\n").split(",")
                cells[int(rng.integers(len(cells)))] = str(_rand_value(rng))
                lines[i] = ",".join(cells) + "\r\n"
            else:
                lines.append("\0,\0\r\n")
            p.write_text("".join(lines))
        else:
            p.write_bytes(raw[: len(raw) // 2])
    return f"{name}:{op}"


def corruption_case(base: Path, argv_of, rng, work: Path, timeout_s: float) -> tuple:
    """Copy ``base``, corrupt it, resume; returns ``(class, description, detail)``."""
    case = work / "case"
    if case.exists() or case.is_symlink():
        shutil.rmtree(case)
    shutil.copytree(base, case, symlinks=True)
    victim = work / "victim.txt"
    victim.write_text("a user's file outside the run folder")
    what = corrupt(case, rng, victim)
    (case / "notes.txt").write_text("a user's file inside the run folder")
    before = snapshot(case)
    rc, err, exc = run_main(argv_of(case), timeout_s)
    lost = victim.read_bytes() != b"a user's file outside the run folder" or \
        not (case / "notes.txt").is_file() or (case / "notes.txt").read_bytes() != b"a user's file inside the run folder"
    if exc == "Hang":
        return "hang", what, err[-300:]
    if exc is not None or "Traceback" in err:
        return "traceback", what, (exc or "") + err[-500:]
    if lost:
        return "lost", what, err[-300:]
    if rc == 2:
        return ("refused" if snapshot(case) == before else "changed"), what, err[-200:]
    if rc == 0:
        return "accepted", what, ""
    return "bad-exit", what, f"rc={rc} {err[-300:]}"


# --- sweep tables -------------------------------------------------------------------------------------
def sweep_table_case(base: Path, spec: Path, rng, work: Path, timeout_s: float) -> tuple:
    case = work / "sweep-case"
    if case.exists():
        shutil.rmtree(case)
    shutil.copytree(base, case, symlinks=True)
    p = case / "results.csv"
    victim = work / "victim.txt"
    victim.write_text("v")
    lines = p.read_text().splitlines(keepends=True)
    op = int(rng.integers(6))
    if op == 0:
        b = bytearray(p.read_bytes())
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        p.write_bytes(bytes(b))
    elif op == 1:
        p.write_bytes(p.read_bytes()[:int(rng.integers(len(p.read_bytes())))])
    elif op == 2:
        i = int(rng.integers(1, len(lines)))
        cells = lines[i].rstrip("\n").split(",")
        cells[int(rng.integers(len(cells)))] = str(_rand_value(rng))
        lines[i] = ",".join(cells) + "\n"
        p.write_text("".join(lines))
    elif op == 3:
        p.write_text("".join(lines) + "x" * int(rng.integers(1, 300000)) + "\n")
    elif op == 4:
        p.unlink()
        p.symlink_to(victim)
    else:
        p.write_bytes(rng.bytes(int(rng.integers(1, 2000))))
    before = snapshot(case)
    rc, err, exc = run_main(["sweep", str(spec), "--out", str(case), "--status"], timeout_s)
    what = f"results.csv:op{op}"
    if exc == "Hang":
        return "hang", what, err[-300:]
    if exc is not None or "Traceback" in err:
        return "traceback", what, (exc or "") + err[-500:]
    if victim.read_text() != "v":
        return "lost", what, ""
    if snapshot(case) != before:
        return "changed", what, err[-200:]
    return ("refused" if rc == 2 else "accepted" if rc in (0, 1) else "bad-exit"), what, err[-200:]


# --- concurrent writers and signals (real processes) ---------------------------------------------------
def writers_case(task: dict, rng, work: Path, n: int, timeout_s: float) -> tuple:
    out = work / "writers"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    cmd = [sys.executable, "-m", "physgrad", *fit_argv(task, out, int(rng.integers(1, 3)),
                                                       *([] if LEGACY else ["--overwrite"]))]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for _ in range(n)]
    results = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout_s)
            results.append((p.returncode, err))
        except subprocess.TimeoutExpired:
            _kill_group(p)
            results.append((None, "hang"))
    codes = [r[0] for r in results]
    what = f"{n} writers: exits {sorted(codes, key=str)}"
    if None in codes:
        return "hang", what, ""
    if any("Traceback" in e for _, e in results):
        return "traceback", what, next(e for _, e in results if "Traceback" in e)[-500:]
    if (out / "notes.txt").read_text() != "mine":
        return "lost", what, ""
    if any(c not in (0, 2) for c in codes) or 0 not in codes:
        return "bad-exit", what, " | ".join(e[-200:] for _, e in results)
    if any(c == 2 and "in use by" not in e and "already holds a run" not in e for c, e in results):
        return "bad-exit", what, " | ".join(e[-200:] for _, e in results)
    rc, err, exc = run_main(fit_argv(task, out, 3, "--resume"), timeout_s)
    if exc or rc != 0:
        return "changed", what, f"resume after writers: rc={rc} {exc} {err[-300:]}"
    return "accepted", what, ""


def _kill_group(proc) -> None:
    """SIGKILL the process and everything it started (its own session), then reap it."""
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=30)


def signal_case(argv: list, out: Path, rng, timeout_s: float, resume_argv=None) -> tuple:
    """Signal the command's own process (as ``kill -INT PID``; its workers are not signalled by us)."""
    if out.exists():
        shutil.rmtree(out)
    proc = subprocess.Popen([sys.executable, "-m", "physgrad", *argv], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    sig = [signal.SIGINT, signal.SIGTERM][int(rng.integers(2))]
    twice = rng.random() < 0.25
    delay = float(rng.uniform(0.5, 8.0))
    time.sleep(delay)
    proc.send_signal(sig)
    if twice:
        time.sleep(float(rng.uniform(0.0, 0.3)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return "hang", f"{argv[0]} {sig.name}{' twice' if twice else ''} after {delay:.1f}s", ""
    what = f"{argv[0]} {sig.name}{' x2' if twice else ''} after {delay:.1f}s: exit {proc.returncode}"
    if "Traceback" in err:
        if ("<frozen runpy>" in err or "<frozen importlib" in err) and not out.exists():
            return "startup", what, err[-300:]  # Python was still importing physgrad: nothing written
        return "traceback", what, err[-500:]
    # -2 / -15: the signal arrived before physgrad's handlers (while importing) or a second one during
    # the interpreter's shutdown: the process is killed by it, as a shell reports with 130 / 143
    if proc.returncode not in (0, 130, 143, -2, -15, 1 if argv[0] == "sweep" else 0):
        return "bad-exit", what, err[-300:]
    if resume_argv is not None and (out / "checkpoint.npz").exists():
        try:
            with np.load(out / "checkpoint.npz") as z:
                epoch = int(z["epoch"])
        except Exception as exc:  # noqa: BLE001
            return "changed", what, f"checkpoint unreadable after the signal: {exc}"
        rc, err2, exc = run_main(resume_argv(epoch + 1), timeout_s)
        if exc or rc != 0:
            return "changed", what, f"resume: rc={rc} {exc} {err2[-300:]}"
    return "accepted", what, ""


# --- the whole fuzz --------------------------------------------------------------------------------------
def fake_sweep(spec: Path, out: Path) -> None:
    """A sweep folder whose runs all finished, without running them (the small fuzz's base)."""
    from physgrad.runs import RunFolder
    from physgrad.sweep import load_spec
    from physgrad.sweep.runner import _row, _write_results
    from physgrad.sweep.spec import task_id

    sp = load_spec(spec)
    with RunFolder.claim(out, "sweep", reentrant=True) as folder:
        folder.file("results.csv")
        rows = [_row(sp.task, task_id(sp.task, p), p, out / "runs" / task_id(sp.task, p),
                     {"status": "ok", "final_error": 0.5, "best_error": 0.25, "epochs": 1, "seconds": 1.0,
                      "message": ""}) for p in sp.runs()]
        _write_results(out, rows)


def run(seed: int = 0, n_fit: int = 400, n_train: int = 60, n_sweep: int = 200, n_writers: int = 12,
        n_signals: int = 16, timeout_s: float = 60.0, log=print, real_sweep: bool = True, n_sources: int = 0,
        n_energy: int = 0) -> dict:
    """Run every surface; returns ``{surface: Counter of classes}`` and the failures.
    ``real_sweep=False``: the sweep tables' base folder is written directly (no worker processes)."""
    rng = np.random.default_rng(seed)
    counts, failures = collections.defaultdict(collections.Counter), []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        task = make_fit_task(root)
        fit_bases = make_fit_runs(root, task) if n_fit else []
        work = root / "work"
        work.mkdir()

        def record(surface, result):
            cls, what, detail = result
            counts[surface][cls] += 1
            if cls not in GOOD:
                failures.append((surface, cls, what, detail))
                log(f"  {surface}: {cls}: {what}: {detail[:300]}")

        for k in range(n_fit):
            base = fit_bases[k % 2]
            record("fit --resume", corruption_case(base, lambda c: fit_argv(task, c, 3, "--resume"), rng, work,
                                                   timeout_s))
        if n_sources:
            stask = make_source_task(root)
            sbases = make_source_fit_runs(root, stask)
            for k in range(n_sources):
                record("fit --trainable --resume", corruption_case(
                    sbases[k % 2], lambda c: source_fit_argv(stask, c, 3, "--resume"), rng, work, timeout_s))
        if n_train or n_energy:
            data_dir = make_train_data(root)
        if n_train:
            tbase = make_train_run(root, data_dir)
            for _ in range(n_train):
                record("train --resume", corruption_case(tbase, lambda c: train_argv(data_dir, c, "--resume"), rng,
                                                         work, timeout_s))
        if n_energy:
            ebase = make_train_run(root, data_dir, energy=True)
            for _ in range(n_energy):
                record("train --energy --resume", corruption_case(
                    ebase, lambda c: train_argv(data_dir, c, "--energy", "--resume"), rng, work, timeout_s))
        if n_sweep:
            spec = root / "s.toml"
            spec.write_text(f'task = "fit"\nseeds = [0, 1]\n[base]\nnetlist = "{task["netlist"]}"\n'
                            f'data = "{task["data"]}"\ninputs = "{task["inputs"]}"\noutputs = "{task["outputs"]}"\n'
                            f'batch-size = 4\nepochs = 1\n[grid]\nlr = [0.001]\n')
            sbase = root / "sweep-base"
            if real_sweep:
                rc, err, exc = run_main(["sweep", str(spec), "--out", str(sbase), "--engine", "pool", "--workers",
                                         "1", "--no-progress"], 600)
                assert rc == 0 and exc is None, (rc, exc, err)
            else:
                fake_sweep(spec, sbase)
            for _ in range(n_sweep):
                record("sweep results.csv", sweep_table_case(sbase, spec, rng, work, timeout_s))
        for k in range(n_writers):
            record("concurrent writers", writers_case(task, rng, work, 2 + k % 3, timeout_s * 3))
        for k in range(n_signals):
            if k % 4 == 3:
                spec2 = root / "sig.toml"
                spec2.write_text(f'task = "fit"\nseeds = [0]\n[base]\nnetlist = "{task["netlist"]}"\n'
                                 f'data = "{task["data"]}"\ninputs = "{task["inputs"]}"\n'
                                 f'outputs = "{task["outputs"]}"\nbatch-size = 4\nepochs = 100000\n'
                                 f'[grid]\nlr = [0.001]\n')
                out = work / "sig-sweep"
                record("signals", signal_case(["sweep", str(spec2), "--out", str(out), "--engine", "pool",
                                               "--workers", "1", "--no-progress"], out, rng, 3 * timeout_s))
            else:
                out = work / "sig-fit"
                record("signals", signal_case(fit_argv(task, out, 100000), out, rng, timeout_s,
                                              resume_argv=lambda e: fit_argv(task, out, e, "--resume")))
    return {"counts": {k: dict(v) for k, v in counts.items()}, "failures": failures}


def markdown(result: dict, seconds: float, cpu: float, args) -> str:
    classes = ["refused", "accepted", "traceback", "hang", "changed", "lost", "bad-exit", "startup"]
    lines = ["# Run-folder fuzz (benchmarks/fuzz_runs.py)", "",
             f"Command: `python3 benchmarks/fuzz_runs.py --seed {args.seed} --fit {args.fit} --train {args.train} "
             f"--sweep {args.sweep} --writers {args.writers} --signals {args.signals} --sources {args.sources} "
             f"--energy {args.energy}`", "",
             f"Wall {seconds:.0f} s, CPU {cpu:.0f} s (this process and its children), load average before: "
             f"{args.load}. Shared 2-core machine.", "",
             "| surface | cases | " + " | ".join(classes) + " |", "|---|---|" + "---|" * len(classes)]
    for surface, c in result["counts"].items():
        lines.append(f"| {surface} | {sum(c.values())} | " + " | ".join(str(c.get(k, 0)) for k in classes) + " |")
    lines += ["", "refused = exit 2 with the folder byte-identical; accepted = exit 0 (the damage missed what the "
              "run needs, or a writer/signal case that ended well and resumed); startup = the signal arrived while "
              "Python was still importing physgrad (Python's own KeyboardInterrupt traceback; no folder "
              "created, nothing written); the other columns are failures.", ""]
    if result["failures"]:
        lines += ["## Failures", ""] + [f"- {s}: {c}: {w}: `{d[:200]}`" for s, c, w, d in result["failures"][:50]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fit", type=int, default=400)
    ap.add_argument("--train", type=int, default=60)
    ap.add_argument("--sweep", type=int, default=200)
    ap.add_argument("--writers", type=int, default=12)
    ap.add_argument("--signals", type=int, default=16)
    ap.add_argument("--sources", type=int, default=0, help="cases of fit --trainable (trained gate sources) --resume")
    ap.add_argument("--energy", type=int, default=0, help="cases of train --energy --resume")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args()
    args.load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    t0, c0 = time.time(), time.process_time()
    result = run(args.seed, args.fit, args.train, args.sweep, args.writers, args.signals, args.timeout,
                 n_sources=args.sources, n_energy=args.energy)
    ch = os.times()
    cpu = ch.user + ch.system + ch.children_user + ch.children_system
    text = markdown(result, time.time() - t0, cpu, args)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    bad = sum(n for c in result["counts"].values() for k, n in c.items() if k not in GOOD + ("startup",))
    sys.exit(1 if bad else 0)

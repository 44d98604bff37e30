"""One run folder for ``train``, ``fit`` and ``sweep``: claim and lock, atomic writes, checksummed
checkpoints, resume checks, metrics, signals.

A run folder ``DIR`` is owned by one command at a time:

* **claim** (:meth:`RunFolder.claim`): a new run needs ``DIR`` to be missing, empty, or a run folder
  of the same kind (``.physgrad-run.json`` names the kind and every file physgrad wrote there; run
  folders written before that marker existed are recognised by their files). A non-empty folder
  of another kind is refused (exit 2) unless ``overwrite``; even then a file that physgrad did not
  write is never replaced or deleted: a name clash with one is refused (exit 2 naming it).
* **lock** (``DIR/.physgrad-lock``): an advisory ``flock`` held for the whole run plus a JSON line
  naming the owner (pid, host, start time, command). A second writer exits 2 naming the owner; a
  lock left behind by a process that died (the ``flock`` is gone with it) is taken over with a note.
* **atomic writes** (:func:`atomic_write`): a unique temporary file in the target folder
  (``tempfile.mkstemp``: ``O_EXCL``, never a fixed name, so a planted symlink is not followed),
  ``fsync``, ``os.replace``, then an ``fsync`` of the folder. A reader sees the old or the new file,
  never a part.
* **checkpoints** (:func:`save_checkpoint`, :func:`load_checkpoint`): ``.npz`` with the SHA-256 of
  its arrays (key ``sha256``), verified on load; device states under one key scheme
  (``device.<name>`` arrays and the JSON string ``device_meta``, :func:`device_arrays`).
* **resume** checks (:func:`check_resume`, :class:`MetricsLog`) raise :class:`CorruptRunError`
  (exit 2) before anything in the folder is changed.
* **signals** (:class:`StopFlag`): the first SIGINT/SIGTERM sets a flag that the loop polls at a
  batch boundary (save, then exit 128 + signal: 130 / 143); a second one raises
  :class:`KeyboardInterrupt` at once (the last saved checkpoint is kept; exit 130).
"""
from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import math
import os
import platform
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from physgrad.devices import DeviceState
from physgrad.types import PhysgradError

MARKER = ".physgrad-run.json"
LOCK = ".physgrad-lock"
OWN_FILES = (MARKER, LOCK)
KINDS = ("train", "fit", "sweep")
MAX_METRICS_BYTES = 64 << 20  # a metrics.csv larger than this is not one physgrad wrote
MAX_JSON_BYTES = 16 << 20  # config.json
MAX_CHECKPOINT_BYTES = 16 << 30


class CorruptRunError(PhysgradError):
    """A run folder on ``--resume`` cannot be read back consistently (checkpoint, config or metrics);
    nothing in it has been changed (exit 2)."""


class RunFolderError(PhysgradError):
    """``--out`` cannot be used: a file, a foreign non-empty folder, a clash with a user's file."""


class RunLockedError(PhysgradError):
    """Another live process holds the run folder's lock (the message names it)."""


class Rows(list):
    """Metrics rows of a run; ``interrupted`` is the signal number (``signal.SIGINT``,
    ``signal.SIGTERM``) when the run stopped early after saving its checkpoint, else None."""

    interrupted: Optional[int] = None


# --- atomic writes ----------------------------------------------------------------------------------
def fsync_dir(folder) -> None:
    """Make a rename in ``folder`` durable (no-op where folders cannot be fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", replace: bool = True):
    """Write ``path`` atomically: yields a file object on a new unique temporary file in the same
    folder (``tempfile.mkstemp``: created with ``O_EXCL``, so a symlink planted at any name is never
    followed), then ``fsync``, ``os.replace`` and an ``fsync`` of the folder. On an exception the
    temporary file is removed and ``path`` is unchanged.

    With ``replace=False`` the file is put in place by ``os.link``, which fails if anything (a file,
    a folder, a symlink, dangling or not) holds the name by then: two writers racing for one new
    file never replace each other's (the loser gets the "exists" error).

    Raises
    ------
    PhysgradError
        The folder cannot be written (names ``path``), or ``replace=False`` and ``path`` exists.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise PhysgradError(f"cannot write {path}: {exc.strerror or exc}") from None
    ok = False
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path, follow_symlinks=False)
            os.unlink(tmp)
        ok = True
    except FileExistsError:
        raise PhysgradError(f"{path}: exists; give --overwrite to replace it, or name another file") from None
    except OSError as exc:
        raise PhysgradError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if not ok:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    fsync_dir(path.parent)


def write_text(path, text: str) -> None:
    """:func:`atomic_write` of a UTF-8 text."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def write_bytes(path, data: bytes) -> None:
    """:func:`atomic_write` of bytes."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_new_file(path, data, overwrite: bool = False) -> Path:
    """Write ``data`` (str: UTF-8 text; bytes) to a file a user named (``--out``, ``--plot``):
    atomically, and never over an existing file unless ``overwrite`` (then atomically replaced).

    Raises
    ------
    PhysgradError
        ``path`` is a folder, its folder does not exist, it exists and not ``overwrite`` (checked
        first, and again atomically when the file is put in place), or it cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise PhysgradError(f"{path}: is a folder; name a file")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise PhysgradError(f"{path}: exists; give --overwrite to replace it, or name another file")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise PhysgradError(f"{path}: folder {folder} does not exist")
    with atomic_write(path, "w" if isinstance(data, str) else "wb", replace=overwrite) as fh:
        fh.write(data)
    return path


def write_json(path, obj) -> None:
    """Strict JSON (no NaN/Infinity), indented, written atomically."""
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def save_figure(fig, path) -> None:
    """A matplotlib figure as PNG, written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_bytes(path, buf.getvalue())


def read_regular(path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (a symlink to one is followed) of at most
    ``limit`` bytes; ``OSError`` otherwise (``FileNotFoundError`` when missing; a device such as
    ``/dev/zero``, a FIFO, a folder, too large). :func:`physgrad.circuit.files.read_limited` with the
    run folder's exception types."""
    from physgrad.circuit.files import InputFileError, MissingFileError, read_limited  # not at import: the
    # circuit package's imports are not needed by a run folder
    try:
        return read_limited(path, limit)
    except MissingFileError:
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path)) from None
    except InputFileError as exc:
        raise OSError(errno.EINVAL, str(exc), str(path)) from None


def load_json(path, limit: int = MAX_JSON_BYTES):
    """The JSON value in the regular file ``path`` (at most ``limit`` bytes, UTF-8). Raises ``OSError``
    (``FileNotFoundError`` when missing), ``ValueError`` (not UTF-8 or not JSON) or ``RecursionError``
    (nested too deeply)."""
    return json.loads(read_regular(path, limit).decode("utf-8"))


# --- versions, progress, plots -----------------------------------------------------------------------
def versions() -> dict:
    """Python, numpy, scipy, physgrad and BLAS versions, machine and CPU count (for ``config.json``)."""
    import scipy

    import physgrad
    try:
        from threadpoolctl import threadpool_info
        blas = [f"{i.get('internal_api')} {i.get('version')}" for i in threadpool_info()]
    except Exception:  # pragma: no cover
        blas = []
    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "physgrad": physgrad.__version__, "blas": blas, "machine": platform.machine(),
            "cpus": os.cpu_count()}


def progress(total: int, desc: str, disable: bool, initial: int = 0, unit: str = "batch"):
    """A tqdm bar on stderr (updated at most every 2 s; gone when closed)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=disable, mininterval=2.0, file=sys.stderr,
                leave=False, unit=unit)


def plot_curve(path, panels: Sequence[Mapping], title: str = "") -> None:
    """Learning curves, one panel per mapping, written atomically as PNG.

    Each panel: ``{"ylabel": str, "lines": [(label, x, y, style), ...], "log": bool,
    "hlines": [(y, label), ...]}``; panels without lines are left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = [p for p in panels if p.get("lines")]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4), squeeze=False)
    for ax, p in zip(axes[0], panels):
        for label, x, y, style in p["lines"]:
            ax.plot(x, y, style, ms=3, label=label)
        for y, label in p.get("hlines", ()):
            ax.axhline(y, color="k", ls="--", lw=1, label=label)
        if p.get("log") and all(v > 0 for _, _, ys, _ in p["lines"] for v in ys):
            ax.set_yscale("log")
            fmt = matplotlib.ticker.FormatStrFormatter("%g")
            ax.yaxis.set_major_formatter(fmt)
            ax.yaxis.set_minor_formatter(fmt)
        ax.set_xlabel("epoch")
        ax.set_ylabel(p["ylabel"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)


# --- the lock ---------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def read_lock(folder) -> dict:
    """The owner recorded in ``folder``'s lock file (``{}`` when there is none or it is unreadable)."""
    try:
        with open(Path(folder) / LOCK, "rb") as fh:
            info = json.loads(fh.read(4096).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _describe_owner(info: dict) -> str:
    if not info:
        return "another process (no owner recorded yet)"
    return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')}"
            + (f" ({info.get('command')})" if info.get("command") else ""))


class Lock:
    """The advisory lock of a run folder: ``fcntl.flock`` on ``DIR/.physgrad-lock`` (released by the
    kernel when its process dies) and the owner (pid, host, start time, command) written into it."""

    def __init__(self, folder, command: Optional[str] = None, log: Callable[[str], None] = None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.command = command
        self.log = log or (lambda s: print(s, file=sys.stderr))
        self.fd: Optional[int] = None

    def acquire(self) -> "Lock":
        import fcntl

        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise RunFolderError(f"{self.path} is a symbolic link; remove it (physgrad does not follow "
                                         f"links at its lock file)") from None
                raise RunFolderError(f"--out {self.folder}: cannot create the lock file {self.path} "
                                     f"({exc.strerror or exc})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunLockedError(f"{self.folder} is in use by {_describe_owner(read_lock(self.folder))}; "
                                         f"wait for it to finish or stop it (lock file {self.path})") from None
                raise RunFolderError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
            try:  # the file we locked must still be the one at the path (not unlinked by its last owner)
                same = os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            stale = os.pread(fd, 4096, 0)
            if stale.strip():
                try:
                    old = json.loads(stale.decode("utf-8", "replace"))
                except ValueError:
                    old = {}
                old = old if isinstance(old, dict) else {}
                here = old.get("host") == socket.gethostname()
                if not here and old.get("host"):
                    os.close(fd)
                    raise RunLockedError(f"{self.folder} is locked by {_describe_owner(old)} on another host; if "
                                         f"that process is gone, remove {self.path}")
                if here and isinstance(old.get("pid"), int) and old["pid"] != os.getpid() and _pid_alive(old["pid"]):
                    os.close(fd)  # alive but without the flock (another lock protocol): do not take over
                    raise RunLockedError(f"{self.folder} is in use by {_describe_owner(old)}")
                self.log(f"note: {self.folder}: took over the stale lock of {_describe_owner(old)} "
                         f"(that process is gone)")
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": self.command}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            os.fsync(fd)
            self.fd = fd
            return self
        raise RunLockedError(f"{self.folder}: the lock file {self.path} keeps changing; another process is "
                             f"starting in it")

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still holding the flock: the next owner re-checks the inode
        os.close(self.fd)
        self.fd = None


# --- the run folder ---------------------------------------------------------------------------------
def _legacy_kind(folder: Path) -> Optional[str]:
    """The kind of a run folder written before the marker file existed (by its files), or None."""
    cfg = folder / "config.json"
    if cfg.is_file() and not cfg.is_symlink():
        try:
            d = load_json(cfg)
        except (OSError, ValueError, RecursionError):
            return None
        if isinstance(d, dict):
            if "spec" in d and "resolved" in d:
                return "fit"
            if "config" in d and "preset" in d:
                return "train"
    res = folder / "results.csv"
    if res.is_file() and not res.is_symlink():
        try:
            with open(res, "rb") as fh:
                head = fh.readline(4096)
        except OSError:
            return None
        if head.startswith(b"id,task,seed,params,status"):
            return "sweep"
    return None


class RunFolder:
    """A claimed and locked run folder (use as a context manager, or call :meth:`release`).

    Attributes
    ----------
    path : Path
    kind : {"train", "fit", "sweep"}
    written : set of str
        Names of the files physgrad wrote in the folder (recorded in ``.physgrad-run.json``).
    """

    def __init__(self, path: Path, kind: str, lock: Lock, written: set, fresh: bool):
        self.path, self.kind, self.lock, self.written, self.fresh = path, kind, lock, written, fresh

    @classmethod
    def claim(cls, out, kind: str, *, resume: bool = False, overwrite: bool = False,
              will_write: Iterable[str] = (), run_files: Iterable[str] = (), command: Optional[str] = None,
              reentrant: bool = False, log: Callable[[str], None] = None) -> "RunFolder":
        """Claim ``out`` for a run of ``kind`` and lock it; nothing is written but the lock file (and a
        folder that did not exist) before :meth:`write_text` etc. are called.

        Parameters
        ----------
        out : path
        kind : {"train", "fit", "sweep"}
        resume : bool
            Continue the run in ``out`` (it must be one of ``kind``).
        overwrite : bool
            Start a new run in a folder that holds a run of ``kind`` or other files; the files named
            in ``will_write`` that physgrad wrote there before are replaced, nothing else is touched.
        will_write : names of the files this run writes (a user's file under one of them is refused).
        run_files : names whose presence means "this folder holds a run" (e.g. the checkpoint):
            without ``resume`` or ``overwrite`` such a folder is refused.
        reentrant : bool
            A folder of ``kind`` is continued without ``resume`` (a sweep: the same command again).

        Raises
        ------
        RunFolderError, RunLockedError
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        path = Path(out)
        log = log or (lambda s: print(s, file=sys.stderr))
        if path.is_symlink() and not path.is_dir():
            raise RunFolderError(f"--out {path} is a dangling symbolic link; pass a folder")
        if path.exists() and not path.is_dir():
            raise RunFolderError(f"--out {path} is a file, not a folder; pass a folder for the run")
        if resume and not path.is_dir():
            raise RunFolderError(f"--resume: {path} does not exist: no checkpoint to continue from")
        created = not path.exists()
        if created:
            try:
                path.mkdir(parents=True)
            except OSError as exc:
                raise RunFolderError(f"--out {path}: cannot write the run folder ({exc.strerror or exc})") from None
        lock = Lock(path, command, log).acquire()
        try:
            written, marker_kind = cls._read_marker(path)
            entries = sorted(p.name for p in path.iterdir() if p.name not in OWN_FILES)
            found = marker_kind or (_legacy_kind(path) if entries else None)
            if found is not None and found != kind:  # even --overwrite never replaces another command's run
                raise RunFolderError(f"--out {path} holds a {found} run, not a {kind} run; use another --out")
            if resume:
                if found != kind:
                    raise RunFolderError(f"--resume: {path} does not hold a {kind} run"
                                         + (f" (it holds {', '.join(entries[:5])})" if entries else " (it is empty)"))
            elif entries and found != kind and not overwrite:
                raise RunFolderError(f"--out {path} is not empty and not a {kind} run folder (it holds "
                                     f"{', '.join(entries[:5])}{' ...' if len(entries) > 5 else ''}); use an empty "
                                     f"or new folder, or --overwrite to write the run's files beside them")
            elif found == kind and not reentrant and not overwrite and any(
                    (path / f).exists() or (path / f).is_symlink() for f in run_files):
                raise RunFolderError(f"{path} already holds a run ({kind}); use --resume to continue it, another "
                                     f"--out, or --overwrite to start it again")
            read_back = set(run_files) | {"config.json", "runs"}  # these have their own messages on --resume
            folders = [f for f in will_write if f not in read_back and (path / f).is_dir()
                       and not (path / f).is_symlink()]
            if folders:  # checked before anything is written: the run would fail when it writes them
                raise RunFolderError(f"--out {path}: {', '.join(folders)} {'is a folder' if len(folders) == 1 else 'are folders'}"
                                     f"; physgrad writes a file there (move it away)")
            if not resume:
                if marker_kind is None and found == kind:  # a run folder from before the marker: its files are ours
                    written = set(entries)
                clash = [f for f in will_write if ((path / f).exists() or (path / f).is_symlink())
                         and f not in written]
                if clash:
                    raise RunFolderError(f"--out {path}: {', '.join(clash)} "
                                         f"{'was' if len(clash) == 1 else 'were'} not written by physgrad; not "
                                         f"replacing {'it' if len(clash) == 1 else 'them'} (move "
                                         f"{'it' if len(clash) == 1 else 'them'} away or use another --out)")
        except BaseException:
            lock.release()
            if created:
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise
        if resume and marker_kind is None:
            written = set(entries)
        return cls(path, kind, lock, written, fresh=not resume and found != kind)

    @staticmethod
    def _read_marker(path: Path) -> tuple:
        m = path / MARKER
        if not m.exists() and not m.is_symlink():
            return set(), None
        try:
            d = load_json(m, 1 << 20)
            if not isinstance(d, dict) or d.get("kind") not in KINDS or not isinstance(d.get("files"), list):
                raise ValueError("not a run marker")
            return {str(f) for f in d["files"]}, d["kind"]
        except (OSError, ValueError) as exc:
            raise RunFolderError(f"{m} is unreadable ({exc}); it is physgrad's record of the files it "
                                 f"wrote in {path}: remove it only if the folder holds no run") from None

    def _record(self, name: str) -> None:
        if name in self.written and (self.path / MARKER).exists():
            return
        self.written.add(name)
        write_json(self.path / MARKER, {"kind": self.kind, "files": sorted(self.written)})

    def file(self, name: str) -> Path:
        """``path / name``, recorded as written by physgrad (call before writing it yourself)."""
        self._record(name)
        return self.path / name

    def write_text(self, name: str, text: str) -> None:
        self._record(name)
        write_text(self.path / name, text)

    def write_json(self, name: str, obj) -> None:
        self._record(name)
        write_json(self.path / name, obj)

    def remove(self, name: str) -> None:
        """Delete ``name`` if physgrad wrote it (a user's file is never deleted)."""
        p = self.path / name
        if name in self.written and (p.is_file() or p.is_symlink()):
            p.unlink()

    def release(self) -> None:
        self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def check_resume(saved: Mapping, given: Mapping, may_change: Iterable[str], what: str = "options") -> None:
    """Refuse (:class:`PhysgradError`) when ``given`` differs from ``saved`` outside ``may_change``."""
    may = set(may_change)
    diff = {k: (saved.get(k), given.get(k)) for k in sorted(set(saved) | set(given))
            if saved.get(k) != given.get(k) and k not in may}
    if diff:
        raise PhysgradError(f"--resume: {what} differ from the saved run (saved, given): {diff}; only "
                            f"{', '.join(sorted(may)) or 'nothing'} may change")


def read_json(path, what: str = "run configuration") -> dict:
    """A JSON object from a run folder; missing, unreadable or not an object: :class:`CorruptRunError`."""
    path = Path(path)
    try:
        d = load_json(path)
    except FileNotFoundError:
        raise CorruptRunError(f"--resume: {path} is missing; the run folder cannot be continued") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptRunError(f"--resume: cannot read {path} ({type(exc).__name__}: {exc}); the run folder "
                              f"cannot be continued") from None
    if not isinstance(d, dict):
        raise CorruptRunError(f"--resume: {path} is not a valid {what} (not a JSON object)")
    return d


# --- checkpoints ------------------------------------------------------------------------------------
def arrays_sha256(arrays: Mapping) -> str:
    """SHA-256 over a checkpoint's arrays (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def device_arrays(state: Optional[DeviceState]) -> dict:
    """A device state as checkpoint arrays: ``device.<name>`` and the JSON string ``device_meta``
    (``{}`` for None: the ideal device)."""
    if state is None:
        return {}
    arrays, meta = state.state_dict()
    out = {f"device.{k}": np.asarray(v) for k, v in arrays.items()}
    out["device_meta"] = np.array(json.dumps(meta))
    return out


def pop_device_state(arrays: dict, bad: Callable[[str], Exception]) -> Optional[DeviceState]:
    """Remove and decode the device arrays of :func:`device_arrays` (also the older ``dev_*`` /
    ``devmeta`` keys of ``fit``); None when there are none."""
    dev = {k[len("device."):]: arrays.pop(k) for k in [k for k in arrays if k.startswith("device.")]}
    dev.update({k[len("dev_"):]: arrays.pop(k) for k in [k for k in arrays if k.startswith("dev_")]})
    meta = arrays.pop("device_meta", None)
    legacy = arrays.pop("devmeta", None)
    meta = meta if meta is not None else legacy
    if meta is None:
        if dev:
            raise bad(f"device arrays {sorted(dev)[:3]} without device_meta")
        return None
    try:
        return DeviceState.from_state(dev, json.loads(str(meta)))
    except (PhysgradError, ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise bad(f"its device state cannot be read ({exc})") from None


def save_checkpoint(path, arrays: Mapping) -> None:
    """Write ``arrays`` as ``.npz`` atomically with their SHA-256 (key ``sha256``)."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    if "sha256" in arrays:
        raise ValueError("'sha256' is the checksum's key")
    try:
        with atomic_write(path, "wb") as fh:
            np.savez(fh, sha256=np.array(arrays_sha256(arrays)), **arrays)
    except PhysgradError as exc:
        raise PhysgradError(f"cannot write the checkpoint: {exc}") from None


def checkpoint_error(path) -> Callable[[str], CorruptRunError]:
    """``bad(why)``: the :class:`CorruptRunError` of a damaged checkpoint ``path``."""
    def bad(why: str) -> CorruptRunError:
        return CorruptRunError(f"--resume: corrupted checkpoint {path}: {why}; the run folder cannot be "
                               f"continued (start a new run with another --out)")
    return bad


def load_checkpoint(path, required: Iterable[str] = ()) -> dict:
    """The arrays of a checkpoint, their SHA-256 verified (``sha256`` removed).

    Raises
    ------
    CorruptRunError
        Not a readable ``.npz`` (truncated, garbled, a folder, object arrays), a checksum that
        does not match, or a key of ``required`` missing.
    """
    path = Path(path)
    bad = checkpoint_error(path)
    if not path.exists() and not path.is_symlink():
        raise CorruptRunError(f"--resume: no checkpoint at {path}")
    try:
        import stat

        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            os.set_blocking(fd, True)
            z = np.load(fh, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with z:
                arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error, ...
        raise bad(f"cannot read it ({type(exc).__name__}: {exc})") from None
    stored = arrays.pop("sha256", None)
    if stored is None:
        print(f"note: {path} has no checksum (written by an older physgrad); checked by structure only",
              file=sys.stderr)
    elif stored.shape != () or stored.dtype.kind != "U" or str(stored) != arrays_sha256(arrays):
        raise bad("its SHA-256 does not match its arrays (bit flip or partial write)")
    missing = [k for k in required if k not in arrays]
    if missing:
        raise bad(f"missing key(s) {missing}")
    return arrays


def scalar(arrays: Mapping, key: str, kind: str, bad: Callable[[str], Exception], lo=None, hi=None):
    """``arrays[key]`` as a Python int (``kind="i"``) or finite float (``"f"``) within ``[lo, hi]``."""
    a = np.asarray(arrays[key])
    if a.shape != () or a.dtype.kind not in ("iu" if kind == "i" else "fiu"):
        raise bad(f"{key} is not a scalar {'integer' if kind == 'i' else 'number'} ({a.dtype}, shape {a.shape})")
    v = int(a) if kind == "i" else float(a)
    if kind == "f" and not math.isfinite(v):
        raise bad(f"{key} = {v}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise bad(f"{key} = {v} is outside {lo}..{'' if hi is None else hi}")
    return v


def finite_like(a, like, name: str, bad: Callable[[str], Exception]) -> np.ndarray:
    """``a`` must be a finite float array of ``like``'s shape (and dtype when ``like`` is float)."""
    a = np.asarray(a)
    like = np.asarray(like)
    if a.dtype.kind != "f" or a.shape != like.shape or (like.dtype.kind == "f" and a.dtype != like.dtype):
        raise bad(f"{name} is {a.dtype} {a.shape}, the run's is {like.dtype} {like.shape}")
    if not np.all(np.isfinite(a)):
        raise bad(f"{name} is not finite")
    return a.copy()


# --- metrics ----------------------------------------------------------------------------------------
class MetricsLog:
    """``metrics.csv``: a header and one row per epoch, the row of epoch ``k`` measured after ``k``
    completed epochs (``first`` is 1 for ``train``, 0 for ``fit``, whose row 0 is before training).
    The file is rewritten atomically with each row; rows already there are kept byte for byte.

    Parameters
    ----------
    path : Path
    fields : sequence of str
        Columns; ``fields[0]`` is ``epoch``.
    first : int
        Epoch of the first row.
    optional : sequence of str
        Columns that may be empty (not measured in that epoch): a missing or None value is written as
        an empty cell and read back as an absent key.
    """

    def __init__(self, path, fields: Sequence[str], first: int = 1, optional: Sequence[str] = ()):
        self.path, self.fields, self.first = Path(path), tuple(fields), int(first)
        self.optional = frozenset(optional)
        self.rows: list = []
        self._lines: list = []

    def read(self, *, upto: Optional[int] = None) -> list:
        """Read and check the file (on ``--resume``): the header must be :attr:`fields` and the rows
        finite numbers for epochs ``first, first + 1, ...``; with ``upto`` there must be rows up to
        that epoch, and later rows (written after the last checkpoint) are dropped. Anything else
        raises :class:`CorruptRunError` naming the file and line."""
        p = self.path
        if upto is not None and upto < self.first and not p.exists() and not p.is_symlink():
            self.rows, self._lines = [], []  # interrupted in the first epoch: no row yet
            return []
        try:
            text = read_regular(p, MAX_METRICS_BYTES).decode("utf-8")
        except FileNotFoundError:
            raise CorruptRunError(f"--resume: {p} is missing; the run folder cannot be continued") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CorruptRunError(f"--resume: cannot read {p} ({type(exc).__name__}: {exc})") from None
        lines = text.splitlines(keepends=True)
        if not lines:
            raise CorruptRunError(f"--resume: {p} is empty (no header row)")
        try:
            parsed = list(csv.reader(lines))
        except csv.Error as exc:
            raise CorruptRunError(f"--resume: {p} is garbled ({exc})") from None
        if tuple(parsed[0]) != self.fields:
            raise CorruptRunError(f"--resume: {p} line 1 has header {parsed[0]}, expected {list(self.fields)}")
        rows = []
        for n, cells in enumerate(parsed[1:], start=2):
            try:
                if len(cells) != len(self.fields):
                    raise ValueError(f"{len(cells)} fields, expected {len(self.fields)}")
                vals = {k: float(v) for k, v in zip(self.fields, cells) if not (v == "" and k in self.optional)}
                if not all(math.isfinite(v) for v in vals.values()):
                    raise ValueError("non-finite value")
                if vals["epoch"] != self.first + len(rows):
                    raise ValueError(f"epoch {cells[0]} where epoch {self.first + len(rows)} belongs")
            except ValueError as exc:
                raise CorruptRunError(f"--resume: {p} line {n} is garbled ({exc}): {cells}") from None
            rows.append(vals)
        if upto is not None:
            n_need = upto - self.first + 1
            if len(rows) < n_need:
                raise CorruptRunError(f"--resume: {p} has {len(rows)} epoch rows but the checkpoint is at the end of "
                                      f"epoch {upto}; the run folder cannot be continued")
            rows = rows[:n_need]
        self.rows = rows
        self._lines = lines[:len(rows) + 1]
        return rows

    def append(self, row: Mapping, fmt: Callable = None) -> None:
        """Add a row and rewrite the file atomically (with the header when it is the first)."""
        fmt = fmt or (lambda k, v: str(int(v)) if k == "epoch" else repr(float(v)))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")
        if not self._lines:
            w.writerow(self.fields)
        def absent(k):
            return k in self.optional and row.get(k) is None

        w.writerow(["" if absent(k) else fmt(k, row[k]) for k in self.fields])
        self._lines.append(buf.getvalue())
        self.rows.append({k: float(row[k]) for k in self.fields if not absent(k)})
        write_text(self.path, "".join(self._lines))

    def needs_rewrite(self) -> bool:
        """Whether the file holds more than the rows kept by :meth:`read` (rows after the checkpoint)."""
        if not self._lines and not self.path.exists():
            return False
        try:
            return self.path.read_text(encoding="utf-8") != "".join(self._lines)
        except OSError:
            return True

    def rewrite(self) -> None:
        write_text(self.path, "".join(self._lines))


# --- signals ----------------------------------------------------------------------------------------
_PENDING: dict = {"signum": None}
_ACTIVE: dict = {}  # thread ident -> the StopFlag entered last in that thread


def request_stop(thread_ident: int, signum: int = signal.SIGTERM) -> bool:
    """Ask the loop that entered a :class:`StopFlag` in thread ``thread_ident`` to stop as a signal would
    (save at its next safe point, then return with ``signum``): the route for runs in threads that get
    no signals, e.g. a Dask worker's. Returns False when that thread holds no flag (yet)."""
    flag = _ACTIVE.get(thread_ident)
    if flag is None:
        return False
    flag.request(signum)
    return True


def defer_signals() -> None:
    """Remember SIGINT/SIGTERM instead of acting on them until a :class:`StopFlag` is entered (which
    then stops at once). For worker processes that run one run each: a stop request that arrives
    between claiming the folder and installing the run's handler is not lost."""
    def remember(signum, frame):
        _PENDING["signum"] = signum

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, remember)


class StopFlag:
    """SIGINT/SIGTERM set :attr:`stop` (and :attr:`signum`); the loop saves at its next safe point and
    exits with ``128 + signum``. A second signal raises :class:`KeyboardInterrupt` at once. Outside
    the main thread (e.g. a Dask worker's thread) no handler is installed; there
    :func:`request_stop` does what a first signal does."""

    def __init__(self, message: str = "finishing the batch and saving a checkpoint"):
        self.stop = False
        self.signum: Optional[int] = None
        self.message = message
        self._old = {}
        self._critical = 0
        self._abort = False

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
            if _PENDING["signum"] is not None:  # a deferred stop request (:func:`defer_signals`)
                self.stop, self.signum = True, _PENDING["signum"]
        self._ident = threading.get_ident()
        self._outer = _ACTIVE.get(self._ident)
        _ACTIVE[self._ident] = self
        return self

    def request(self, signum: int) -> None:
        """A stop request from another thread (:func:`request_stop`): a first signal, never a second."""
        if not self.stop:
            self.stop, self.signum = True, signum
            print(f"\ninterrupt: {self.message}", file=sys.stderr)

    def _handle(self, signum, frame):
        if self.stop:  # second signal: give up at once (at the end of a critical section)
            if self._critical:
                self._abort = True
                return
            raise KeyboardInterrupt
        self.stop = True
        self.signum = signum
        print(f"\ninterrupt: {self.message} (Ctrl-C again to abort)", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if self._outer is None:
            _ACTIVE.pop(self._ident, None)
        else:
            _ACTIVE[self._ident] = self._outer
        return False

    @contextlib.contextmanager
    def critical(self):
        """A section a second signal does not cut (a checkpoint and its metrics row, which must agree):
        the abort it asks for is raised (:class:`KeyboardInterrupt`) when the section ends."""
        self._critical += 1
        try:
            yield self
        finally:
            self._critical -= 1
        if not self._critical and self._abort:
            self._abort = False
            raise KeyboardInterrupt


def exit_code(signum: Optional[int]) -> int:
    """128 + signal (130 SIGINT, 143 SIGTERM), as a shell reports a process killed by it; 0 for None."""
    return 0 if signum is None else 128 + int(signum)

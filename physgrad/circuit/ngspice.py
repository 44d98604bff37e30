"""Run ngspice on a netlist and read its operating point: the slow, independent route.

ngspice is the reference simulator that physgrad's Newton solve on the Shockley co-content is
checked against (``tests/test_ngspice.py``: agreement <= 5e-10 V) and that the benchmarks time
(``benchmarks/solve.py``). This module has two halves:

- pure functions that parse ngspice raw files (binary and ASCII), pick the operating point
  and split it into node voltages and voltage-source currents (no subprocess, testable on bytes);
- :func:`run_ngspice`, which writes the netlist into a temporary directory, runs
  ``ngspice -n -b -r out.raw net.cir`` with a timeout and parses ``out.raw``.

Sign convention for source currents
-----------------------------------
ngspice reports ``i(vname)`` as the current that enters the source at its **positive** node,
flows through the source and leaves at its **negative** node (so a battery that delivers power
has a negative ``i(vname)``). physgrad's element-current convention is "the current flowing from
the element's first node through the element to its second node"; a voltage source is written
``VoltageSource(name, pos, neg, value)``, so its first node is ``pos`` and the two conventions
coincide: :func:`source_currents` documents the (identity) conversion in one place.

Names: ngspice lower-cases every node and element name, as :mod:`physgrad.circuit` does, so the
keys of :class:`NgspiceResult` are the circuit's own names.

Tolerances: ngspice's default ``.options`` (reltol=1e-3, vntol=1e-6) are far too loose for
near-ideal diodes (answers up to 2 V wrong with exit code 0 were measured). Netlists written by
:func:`physgrad.circuit.netlist.write_netlist` set tight options; for hand-written netlists add
``.options reltol=1e-6 vntol=1e-9 abstol=1e-15`` (and ``gmin=1e-15`` to shrink the 1e-12 S
conductance ngspice puts across every diode). :func:`has_tight_options` checks for them.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np

__all__ = [
    "NgspiceError",
    "NgspiceNotFoundError",
    "NgspiceFailedError",
    "NgspiceTimeoutError",
    "NoOperatingPointError",
    "RawVariable",
    "RawPlot",
    "NgspiceResult",
    "parse_raw",
    "operating_point",
    "node_voltages",
    "source_currents",
    "ensure_op",
    "has_tight_options",
    "find_ngspice",
    "ngspice_version",
    "run_ngspice",
    "TIGHT_OPTIONS",
]

#: The ``.options`` line that makes ngspice agree with a Newton solve to ~1e-12 V (measured here;
#: at its default tolerances ngspice returned answers up to 2 V wrong with exit code 0 on circuits of
#: near-ideal diodes, N <= 1e-3). ``gmin=1e-15`` shrinks the conductance ngspice adds across
#: each diode from 1e-12 S.
TIGHT_OPTIONS = ".options reltol=1e-6 vntol=1e-9 abstol=1e-15"

#: Default wall-clock limit (s) for one ngspice run. DRN-XS (1678 nodes, 1568 input sources,
#: 157800 resistors) took 23-33 s here; a 20-node circuit takes ~10 ms.
DEFAULT_TIMEOUT_S = 120.0


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
class NgspiceError(RuntimeError):
    """ngspice could not produce an operating point. ``stdout``/``stderr`` hold its output."""

    def __init__(self, message: str, *, stdout: str = "", stderr: str = "", returncode=None):
        super().__init__(message)
        self.stdout = stdout
        self.stderr = stderr
        self.returncode = returncode


class NgspiceNotFoundError(NgspiceError):
    """The ngspice executable is not installed or not on ``PATH``."""


class NgspiceFailedError(NgspiceError):
    """ngspice exited with an error (its error lines are quoted in the message)."""


class NgspiceTimeoutError(NgspiceError):
    """ngspice ran longer than ``timeout_s`` and was killed."""


class NoOperatingPointError(NgspiceError):
    """The raw file holds no operating-point data (no ``.op`` plot, or zero points)."""


# --------------------------------------------------------------------------------------------
# raw-file parsing (pure)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RawVariable:
    """One column of a raw-file plot.

    Attributes
    ----------
    index : int
        Column index.
    name : str
        ngspice's name, e.g. ``"v(1)"`` (node voltage, V) or ``"i(v1)"`` (branch current, A).
    kind : str
        ngspice's type, e.g. ``"voltage"`` or ``"current"``.
    """

    index: int
    name: str
    kind: str


@dataclass(frozen=True)
class RawPlot:
    """One plot (analysis) of a raw file.

    Attributes
    ----------
    title, date, plotname, flags : str
        Header fields (``plotname`` is ``"Operating Point"`` for ``.op``).
    variables : tuple of RawVariable
    values : ndarray, shape ``(n_points, n_variables)``
        float64 (``flags`` real) or complex128 (``flags`` complex); SI units (V, A).
    """

    title: str
    date: str
    plotname: str
    flags: str
    variables: tuple
    values: np.ndarray = field(repr=False)

    @property
    def names(self) -> tuple:
        return tuple(v.name for v in self.variables)


_HEADER_KEYS = {"title", "date", "plotname", "flags", "no. variables", "no. points", "command",
                "option", "offset"}


def _read_line(data: bytes, pos: int) -> tuple:
    end = data.find(b"\n", pos)
    if end < 0:
        return data[pos:].decode("latin-1"), len(data)
    return data[pos:end].decode("latin-1"), end + 1


def parse_raw(data: bytes) -> tuple:
    """Parse an ngspice raw file (binary or ASCII; one or more plots).

    Parameters
    ----------
    data : bytes
        The whole file.

    Returns
    -------
    tuple of RawPlot
        In file order. A plot whose header announces ``No. Points: 0`` or whose data is
        missing (ngspice writes such a stub when ``.op`` fails) has ``values`` of shape
        ``(0, n_variables)``.

    Raises
    ------
    ValueError
        If the bytes are not a raw file (no ``Title:`` header, missing or unreadable counts,
        malformed variable or ASCII value lines).

    Notes
    -----
    Binary values are read as little-endian float64 (ngspice writes native doubles; every
    platform ngspice is packaged for is little-endian). A data section shorter than announced
    (a run killed mid-write) keeps only its complete points.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_raw expects bytes, got {type(data).__name__}")
    data = bytes(data)
    plots = []
    pos = 0
    while pos < len(data):
        if not data[pos:].strip():
            break
        plot, pos = _parse_one_plot(data, pos)
        plots.append(plot)
    if not plots:
        raise ValueError("not an ngspice raw file: empty")
    return tuple(plots)


def _parse_one_plot(data: bytes, pos: int) -> tuple:
    header: dict = {}
    variables: list = []
    n_vars = n_points = None
    body = None  # "binary" | "values"
    start = pos
    while pos < len(data):
        line, pos = _read_line(data, pos)
        stripped = line.strip()
        if not stripped:
            continue
        key, sep, rest = line.partition(":")
        lkey = key.strip().lower()
        if lkey == "variables" and sep:
            if n_vars is None:
                raise ValueError("raw file: 'Variables:' before 'No. Variables:'")
            variables = []
            first = rest.strip()
            lines = [first] if first else []
            while len(variables) < n_vars and (lines or pos < len(data)):
                if lines:
                    vline = lines.pop()
                else:
                    save = pos
                    vline, pos = _read_line(data, pos)
                    if vline.strip().lower().startswith(("binary:", "values:")):
                        pos = save  # truncated variable list (failed analysis stub)
                        break
                parts = vline.split()
                if len(parts) < 3:
                    raise ValueError(f"raw file: bad variable line {vline!r}")
                variables.append(RawVariable(int(parts[0]), parts[1], parts[2]))
            continue
        if lkey in ("binary", "values") and sep:
            body = lkey
            break
        if lkey in _HEADER_KEYS and sep:
            header[lkey] = rest.strip()
            if lkey == "no. variables":
                n_vars = _parse_count(rest, "No. Variables")
            elif lkey == "no. points":
                n_points = _parse_count(rest, "No. Points")
            continue
        if lkey == "title" or not header:
            raise ValueError(f"not an ngspice raw file: unexpected line {line[:60]!r}")
        # Unknown header lines are ignored (ngspice adds some depending on version).
    if "title" not in header and start == 0:
        raise ValueError("not an ngspice raw file: no 'Title:' header")
    if n_vars is None or n_points is None:
        raise ValueError("raw file: missing 'No. Variables' or 'No. Points'")
    flags = header.get("flags", "real").lower()
    is_complex = "complex" in flags
    dtype = np.complex128 if is_complex else np.float64
    if body is None or len(variables) < n_vars or n_vars == 0:
        # Stub written by a failed analysis: header only.
        values = np.zeros((0, len(variables)), dtype=dtype)
        return _make_plot(header, variables, values), pos
    if body == "binary":
        width = 16 if is_complex else 8
        nbytes = n_points * n_vars * width
        chunk = data[pos:pos + nbytes]
        complete = len(chunk) // (n_vars * width)
        raw = np.frombuffer(chunk[:complete * n_vars * width], dtype="<f8")
        if is_complex:
            raw = raw[0::2] + 1j * raw[1::2]
        values = raw.reshape(complete, n_vars).astype(dtype, copy=True)
        pos += nbytes
    else:
        values, pos = _parse_ascii_values(data, pos, n_vars, n_points, is_complex)
    return _make_plot(header, variables, values), pos


def _parse_count(text: str, what: str) -> int:
    try:
        return int(text.split()[0])
    except (IndexError, ValueError):
        raise ValueError(f"raw file: bad '{what}:' value {text.strip()!r}") from None


def _parse_ascii_values(data: bytes, pos: int, n_vars: int, n_points: int, is_complex: bool):
    rows = []
    current: list = []
    while pos < len(data) and len(rows) < n_points:
        save = pos
        line, pos = _read_line(data, pos)
        parts = line.split()
        if not parts:
            continue
        if ":" in parts[0] and not _is_number(parts[0].split(",")[0]):
            pos = save  # next plot's header
            break
        if len(current) == 0:
            # first line of a point: "index value"
            if len(parts) < 2:
                raise ValueError(f"raw file: bad ASCII value line {line!r}")
            token = parts[1]
        else:
            token = parts[0]
        current.append(_parse_value(token, is_complex))
        if len(current) == n_vars:
            rows.append(current)
            current = []
    dtype = np.complex128 if is_complex else np.float64
    values = np.array(rows, dtype=dtype).reshape(len(rows), n_vars)
    return values, pos


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _parse_value(token: str, is_complex: bool):
    if is_complex:
        re_part, _, im_part = token.partition(",")
        return complex(float(re_part), float(im_part or 0.0))
    return float(token)


def _make_plot(header: dict, variables: list, values: np.ndarray) -> RawPlot:
    return RawPlot(
        title=header.get("title", ""),
        date=header.get("date", ""),
        plotname=header.get("plotname", ""),
        flags=header.get("flags", ""),
        variables=tuple(variables),
        values=values,
    )


def operating_point(plots) -> dict:
    """The operating point of parsed raw-file plots as ``{ngspice name: value}``.

    Parameters
    ----------
    plots : tuple of RawPlot
        From :func:`parse_raw`.

    Returns
    -------
    dict of str to float
        E.g. ``{"v(1)": 5.0, "i(v1)": -0.0043}`` (V and A).

    Raises
    ------
    NoOperatingPointError
        No plot named "Operating Point", or it has no data (the ``.op`` failed).
    """
    ops = [p for p in plots if p.plotname.strip().lower() == "operating point"]
    if not ops:
        names = ", ".join(repr(p.plotname) for p in plots) or "none"
        raise NoOperatingPointError(f"raw file has no 'Operating Point' plot (plots: {names})")
    op = ops[-1]
    if op.values.shape[0] == 0:
        raise NoOperatingPointError(
            "raw file has an 'Operating Point' plot with no data: the .op analysis failed")
    row = op.values[-1]
    if np.iscomplexobj(row):
        row = row.real
    return {v.name: float(row[i]) for i, v in enumerate(op.variables)}


_VOLTAGE_RE = re.compile(r"^v\((.+)\)$", re.IGNORECASE)
_CURRENT_RE = re.compile(r"^i\((.+)\)$", re.IGNORECASE)


def node_voltages(op: Mapping[str, float]) -> dict:
    """Node voltages (V) from an operating point: ``{"v(n)": x}`` -> ``{"n": x}``.

    Ground ("0") is not listed by ngspice; it is added with value 0.0.
    Internal nodes ngspice creates (names containing ``#``) are dropped.
    """
    out = {"0": 0.0}
    for name, value in op.items():
        m = _VOLTAGE_RE.match(name)
        if m and "#" not in m.group(1):
            out[m.group(1)] = value
    return out


def source_currents(op: Mapping[str, float]) -> dict:
    """Voltage-source branch currents (A) in physgrad's convention.

    ngspice's ``i(vname)`` (also spelled ``vname#branch``) is the current entering the
    source at its positive node, flowing through the source and leaving at its negative node.
    physgrad's convention for an element written ``(name, first_node, second_node)`` is the
    current flowing from the first node through the element to the second node; for
    ``VoltageSource(name, pos, neg, value)`` the first node is ``pos``, so the value is
    unchanged. (A source that delivers power therefore has a negative current in both.)

    Returns
    -------
    dict of str to float
        ``{"v1": -0.0043, ...}`` keyed by the source name (as ngspice spells it).
    """
    out = {}
    for name, value in op.items():
        m = _CURRENT_RE.match(name)
        if m:
            out[m.group(1)] = _ngspice_to_physgrad_current(value)
        elif name.lower().endswith("#branch"):
            out[name[: -len("#branch")]] = _ngspice_to_physgrad_current(value)
    return out


def _ngspice_to_physgrad_current(i_ngspice: float) -> float:
    # Both conventions measure first(+) node -> through element -> second(-) node: identity.
    return float(i_ngspice)


# --------------------------------------------------------------------------------------------
# netlist text helpers (pure)
# --------------------------------------------------------------------------------------------
def _directive(line: str) -> str:
    parts = line.strip().split()
    return parts[0].lower() if parts else ""


def ensure_op(netlist: str) -> str:
    """Return ``netlist`` with an ``.op`` line (inserted before ``.end`` when missing).

    The first line of a SPICE netlist is always the title; it is never inspected.
    """
    lines = netlist.splitlines()
    if any(_directive(line) == ".op" for line in lines[1:]):
        return netlist if netlist.endswith("\n") else netlist + "\n"
    for i in range(len(lines) - 1, 0, -1):
        if _directive(lines[i]) == ".end":
            lines.insert(i, ".op")
            break
    else:
        lines.extend([".op", ".end"])
    return "\n".join(lines) + "\n"


def _option_values(netlist: str) -> dict:
    opts = {}
    for line in netlist.splitlines()[1:]:
        if _directive(line) in (".options", ".option", ".opt"):
            for key, value in re.findall(r"(\w+)\s*=\s*([^\s]+)", line):
                opts[key.lower()] = value
    return opts


def _spice_float(text: str) -> float:
    suffixes = {"t": 1e12, "g": 1e9, "meg": 1e6, "k": 1e3, "m": 1e-3, "mil": 25.4e-6,
                "u": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15}
    m = re.match(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)([a-z]*)", text.lower())
    if not m:
        raise ValueError(text)
    scale = 1.0
    suffix = m.group(2)
    for key in ("meg", "mil", "t", "g", "k", "m", "u", "n", "p", "f"):
        if suffix.startswith(key):
            scale = suffixes[key]
            break
    return float(m.group(1)) * scale


def has_tight_options(netlist: str, *, reltol: float = 1e-6, vntol: float = 1e-9,
                      abstol: float = 1e-15) -> bool:
    """True when the netlist's ``.options`` are at least as tight as the given ones.

    ngspice's defaults (reltol=1e-3, vntol=1e-6 V, abstol=1e-12 A) gave answers up to 2 V off
    for near-ideal diodes while exiting 0; the thresholds here are those measured to give
    ~1e-12 V agreement with a Newton solve.
    """
    opts = _option_values(netlist)
    try:
        return (_spice_float(opts.get("reltol", "1e-3")) <= reltol
                and _spice_float(opts.get("vntol", "1e-6")) <= vntol
                and _spice_float(opts.get("abstol", "1e-12")) <= abstol)
    except ValueError:
        return False


def _error_lines(text: str) -> list:
    keep = []
    for line in text.splitlines():
        low = line.strip().lower()
        if low.startswith(("error", "fatal")) or "error:" in low or "aborted" in low:
            keep.append(line.strip())
    return keep


def _ignored_parameter_lines(text: str) -> list:
    """ngspice's "Model issue on line N : <model line> unrecognized parameter (x) - ignored"."""
    lines = [line.strip() for line in text.splitlines()]
    out = []
    for i, line in enumerate(lines):
        if "unrecognized parameter" in line.lower():
            context = [prev for prev in lines[max(0, i - 2):i] if prev]
            out.append(" ".join(context + [line]))
    return out


def _warning_lines(text: str) -> tuple:
    return tuple(line.strip() for line in text.splitlines()
                 if line.strip().lower().startswith("warning"))


# --------------------------------------------------------------------------------------------
# running ngspice
# --------------------------------------------------------------------------------------------
_INSTALL_HINT = ("install it (Debian/Ubuntu: `apt-get install ngspice`; macOS: `brew install "
                 "ngspice`) or set the PHYSGRAD_NGSPICE environment variable to its path")


def find_ngspice(executable: Optional[str] = None) -> str:
    """Path of the ngspice executable.

    Looks at ``executable``, then ``$PHYSGRAD_NGSPICE``, then ``PATH``.

    Raises
    ------
    NgspiceNotFoundError
        With the install command.
    """
    candidate = executable or os.environ.get("PHYSGRAD_NGSPICE") or "ngspice"
    path = shutil.which(candidate)
    if path is None:
        raise NgspiceNotFoundError(f"ngspice executable {candidate!r} not found: {_INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=8)
def ngspice_version(executable: Optional[str] = None) -> str:
    """ngspice's version string, e.g. ``"ngspice-39"`` (from ``ngspice -v``)."""
    path = find_ngspice(executable)
    proc = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    m = re.search(r"(ngspice-[\w.+-]+)", proc.stdout + proc.stderr)
    return m.group(1) if m else "ngspice-unknown"


@dataclass(frozen=True)
class NgspiceResult:
    """An ngspice operating point.

    Attributes
    ----------
    voltages : mapping of str to float
        Node voltages (V), ground ``"0"`` included (0.0).
    currents : mapping of str to float
        Voltage-source branch currents (A), physgrad convention: from the source's first
        (positive) node through the source to its second node (see :func:`source_currents`).
    elapsed_s : float
        Wall-clock time of the ngspice process (s), parsing excluded.
    version : str
        E.g. ``"ngspice-39"``.
    netlist : str
        The exact text ngspice ran.
    values : mapping of str to float
        Every operating-point variable under ngspice's own name (``"v(1)"``, ``"i(v1)"``).
    warnings : tuple of str
        ngspice's ``Warning:`` lines (singular matrix, gmin/source stepping failures...).
        An answer obtained after warnings deserves suspicion.
    stdout, stderr : str
        ngspice's output.
    """

    voltages: Mapping[str, float]
    currents: Mapping[str, float]
    elapsed_s: float
    version: str
    netlist: str = field(repr=False, default="")
    values: Mapping[str, float] = field(repr=False, default_factory=dict)
    warnings: tuple = ()
    stdout: str = field(repr=False, default="")
    stderr: str = field(repr=False, default="")

    def voltage(self, node: str) -> float:
        """Voltage of ``node`` (V)."""
        try:
            return self.voltages[node]
        except KeyError:
            raise KeyError(f"no node {node!r} in the ngspice result "
                           f"(nodes: {sorted(self.voltages)[:20]})") from None

    def current(self, name: str) -> float:
        """Branch current of voltage source ``name`` (A), physgrad convention."""
        try:
            return self.currents[name]
        except KeyError:
            raise KeyError(f"no voltage source {name!r} in the ngspice result "
                           f"(sources: {sorted(self.currents)[:20]})") from None


def _netlist_text(netlist) -> tuple:
    """``(text, cwd)`` for netlist text, a netlist file (cwd = its folder, for relative
    ``.include`` paths) or a Circuit (written by :func:`physgrad.circuit.netlist.write_netlist`)."""
    if isinstance(netlist, str):
        return netlist, None
    if isinstance(netlist, os.PathLike):
        path = Path(netlist)
        return path.read_text(), path.resolve().parent
    from physgrad.circuit.netlist import write_netlist  # lazy: keeps the parser usable on its own

    return write_netlist(netlist), None


def run_ngspice(netlist, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                keep_dir: Optional[Union[str, os.PathLike]] = None,
                executable: Optional[str] = None, strict: bool = True) -> NgspiceResult:
    """Run an ``.op`` analysis in ngspice and return the operating point.

    Parameters
    ----------
    netlist : str, path-like or physgrad Circuit
        SPICE netlist text (first line = title), a path to a netlist file, or a ``Circuit``
        (written with :func:`physgrad.circuit.netlist.write_netlist`). An ``.op`` line is added when
        missing.
    timeout_s : float
        Wall-clock limit (s); the process is killed after it.
    keep_dir : path-like, optional
        Directory that receives ``net.cir``, ``out.raw``, ``stdout.txt`` and ``stderr.txt``
        (created if needed). By default a temporary directory is used and deleted.
    executable : str, optional
        ngspice executable (default ``$PHYSGRAD_NGSPICE`` or ``ngspice`` on ``PATH``).
    strict : bool
        Treat ngspice's "Model issue ... unrecognized parameter (X) - ignored" warning as an
        error (default). ngspice then exits 0 but simulates a different device than the
        netlist states (e.g. a ``vt=`` model parameter is silently dropped), which is exactly
        the silent wrong answer a verification route must not give. Other warnings (singular
        matrix, gmin stepping) are kept in :attr:`NgspiceResult.warnings`.

    Returns
    -------
    NgspiceResult

    Raises
    ------
    NgspiceNotFoundError
        ngspice is not installed (the message gives ``apt-get install ngspice``).
    NgspiceTimeoutError
        The run took longer than ``timeout_s``.
    NgspiceFailedError
        ngspice reported errors (quoted), exited non-zero, or (``strict``) ignored a model
        parameter.
    NoOperatingPointError
        The raw file has no operating-point data.
    """
    text, cwd = _netlist_text(netlist)
    text = ensure_op(text)
    exe = find_ngspice(executable)
    version = ngspice_version(exe)
    if keep_dir is not None:
        workdir = Path(keep_dir)
        workdir.mkdir(parents=True, exist_ok=True)
        return _run_in(workdir, text, cwd, exe, version, timeout_s, strict)
    with tempfile.TemporaryDirectory(prefix="physgrad-ngspice-") as tmp:
        return _run_in(Path(tmp), text, cwd, exe, version, timeout_s, strict)


def _run_in(workdir: Path, text: str, cwd, exe: str, version: str,
            timeout_s: float, strict: bool) -> NgspiceResult:
    cir = (workdir / "net.cir").resolve()
    raw = (workdir / "out.raw").resolve()
    if raw.exists():
        raw.unlink()
    cir.write_text(text)
    cmd = [exe, "-n", "-b", "-r", str(raw), str(cir)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              cwd=str(cwd or workdir), stdin=subprocess.DEVNULL,
                              errors="replace")
    except subprocess.TimeoutExpired as exc:
        out = _as_text(exc.stdout)
        err = _as_text(exc.stderr)
        raise NgspiceTimeoutError(f"ngspice did not finish within {timeout_s:g} s (killed)",
                                  stdout=out, stderr=err) from None
    elapsed = time.perf_counter() - t0
    (workdir / "stdout.txt").write_text(proc.stdout)
    (workdir / "stderr.txt").write_text(proc.stderr)
    errors = _error_lines(proc.stderr) + _error_lines(proc.stdout)
    if strict:
        errors += _ignored_parameter_lines(proc.stderr + "\n" + proc.stdout)
    if proc.returncode != 0 or errors:
        quoted = "\n  ".join(errors[:20]) or proc.stderr.strip()[-2000:] or "(no output)"
        raise NgspiceFailedError(
            f"ngspice failed (exit code {proc.returncode}):\n  {quoted}",
            stdout=proc.stdout, stderr=proc.stderr, returncode=proc.returncode)
    if not raw.exists():
        raise NoOperatingPointError("ngspice wrote no raw file (no analysis ran)",
                                    stdout=proc.stdout, stderr=proc.stderr,
                                    returncode=proc.returncode)
    try:
        plots = parse_raw(raw.read_bytes())
        op = operating_point(plots)
    except NoOperatingPointError as exc:
        raise NoOperatingPointError(str(exc), stdout=proc.stdout, stderr=proc.stderr,
                                    returncode=proc.returncode) from None
    voltages = node_voltages(op)
    currents = source_currents(op)
    return NgspiceResult(voltages=voltages, currents=currents, elapsed_s=elapsed,
                         version=version, netlist=text, values=op,
                         warnings=_warning_lines(proc.stderr), stdout=proc.stdout,
                         stderr=proc.stderr)


def _as_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value

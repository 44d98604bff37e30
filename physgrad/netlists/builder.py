r"""Trainable netlists for tabular data: a crossbar, or a crossbar with a hidden layer of diode units.

The design (``physgrad netlist layered``; measured in ``reports/experiments/netlist-design/``):

* **Signed inputs.** Feature ``i`` drives two voltage sources, ``x{i}`` at :math:`+x_i` and ``x{i}n`` at
  :math:`-x_i` (V). A passive network only forms convex combinations of its source voltages, so
  without the mirrored source a conductance (>= 0) could never give a feature a negative weight.
  The data needs both columns: ``x{i}n = -x{i}`` (:func:`signed_columns`).
* **Bias sources.** ``vbp`` at ``+bias`` and ``vbn`` at ``-bias`` (V) joined to every hidden and
  output node by trainable resistors: a per-unit offset of either sign.
* **Skip connections.** Every output is joined to every input source directly (the crossbar), so the
  hidden layer adds to a linear model instead of replacing it; with the hidden layer's conductances
  starting ``hidden_scale`` (default 0.1) times smaller than the crossbar's the circuit starts close
  to the crossbar, and training moves it away only where that lowers the loss.
* **Hidden units.** Node ``h{j}`` is joined to every input and bias source and to every output; an
  ideal diode from ``h{j}`` to ground (threshold ``vth``, default 0 V) clips it at
  :math:`h_j \le v_{th}` (a rectifier, :math:`\min(z, v_{th})`); with ``both`` a second one from
  ground clips it at :math:`h_j \ge -v_{th}` too (a hard tanh; needs ``vth > 0``).
* **Initial conductances** uniform in ``[0.5, 1.5] * g0`` (S; written as ohms), seeded.

Resistances are written in ohms (:func:`physgrad.circuit.netlist.write_netlist`); ``g0`` and the
``Circuit`` returned are in siemens. Outputs ``o{k}`` carry ``.target`` lines at 0 V (placeholders:
``physgrad fit`` takes its targets from the data).
"""
from __future__ import annotations

import sys
from typing import Optional

import numpy as np

from physgrad.circuit import Circuit, IdealDiode, Resistor, VoltageSource
from physgrad.circuit.netlist import ReaderLimits, write_netlist
from physgrad.types import PhysgradError

MAX_UNITS = 100_000
"""Largest number of inputs, hidden units or outputs (the netlist has about
``(2 n_in + 2) (n_hidden + n_out) + n_hidden n_out`` resistors)."""


MAX_RESISTORS = ReaderLimits().max_elements
"""Largest number of resistors written: the netlist reader's default element limit, so that every
netlist the builder writes can be read back."""


def resistor_count(n_inputs: int, n_hidden: int, n_outputs: int, *, skip: bool = True,
                   bias_sources: bool = True) -> int:
    """Resistors of :func:`layered_circuit`: every source (``2 n_in`` inputs and 2 biases) to every hidden
    unit, every output to every source (only the biases without ``skip``) and to every hidden unit."""
    n_src = 2 * n_inputs + (2 if bias_sources else 0)
    n_out_src = n_src if skip else (2 if bias_sources else 0)
    return n_src * n_hidden + n_outputs * (n_out_src + n_hidden)


def _count(value, what: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= MAX_UNITS:
        raise PhysgradError(f"{what} must be an integer in [{lo}, {MAX_UNITS}], got {value!r}")
    return int(value)


def layered_circuit(n_inputs: int, n_hidden: int, n_outputs: int, *, g0: float = 1e-3, hidden_scale: float = 0.1,
                    bias: float = 1.0, vth: float = 0.0, both: bool = False, skip: bool = True,
                    bias_sources: bool = True, seed: int = 0) -> Circuit:
    """The layered circuit (see module docstring) as a :class:`Circuit` (conductances in S).

    Parameters
    ----------
    n_inputs, n_hidden, n_outputs : int
        Features (each two sources), hidden diode units (0: the crossbar), outputs.
    g0 : float
        Typical conductance (S), e.g. 1e-3 S = 1 kOhm.
    hidden_scale : float
        Initial conductances into and out of the hidden units, relative to ``g0``.
    bias : float
        Bias source voltages ``+bias`` and ``-bias`` (V).
    vth : float
        Diode threshold (V), >= 0.
    both : bool
        Two diodes per hidden unit (clip both sides; ``vth > 0``) instead of one (clip above).
    skip : bool
        Direct input -> output resistors (the crossbar). Without them and without a hidden layer the
        outputs are joined to the bias sources only.
    bias_sources : bool
        The two bias sources (without them the units have no offset).
    seed : int
        Seed of the initial conductances.
    """
    n_in, n_h, n_out = _count(n_inputs, "inputs", 1), _count(n_hidden, "hidden", 0), _count(n_outputs, "outputs", 1)
    for name, v in (("g0", g0), ("hidden_scale", hidden_scale)):
        if not (np.isfinite(v) and v > 0):
            raise PhysgradError(f"{name} must be a finite number > 0, got {v!r}")
    if not (np.isfinite(bias) and bias > 0) or not (np.isfinite(vth) and vth >= 0):
        raise PhysgradError(f"bias must be > 0 V and vth >= 0 V, got {bias!r}, {vth!r}")
    lo, hi = g0 * min(1.0, hidden_scale) * 0.5, g0 * max(1.0, hidden_scale) * 1.5
    if not (lo >= sys.float_info.min and np.isfinite(hi)):
        raise PhysgradError(f"g0 = {g0!r} S (resistance {1.0 / g0:.3g} ohm) and hidden_scale = {hidden_scale!r} give "
                            f"conductances from {lo:.3g} to {hi:.3g} S: outside the normal doubles "
                            f"({sys.float_info.min:.3g} to {sys.float_info.max:.3g})")
    n_res = resistor_count(n_in, n_h, n_out, skip=skip, bias_sources=bias_sources)
    if n_res > MAX_RESISTORS:
        raise PhysgradError(f"{n_in} inputs, {n_h} hidden units and {n_out} outputs make {n_res:,} resistors; at most "
                            f"{MAX_RESISTORS:,} (what physgrad's netlist reader accepts by default)")
    if both and not vth > 0:
        raise PhysgradError("both diodes (two per hidden unit) with vth = 0 V pin every hidden node at 0 V: give vth > 0")
    rng = np.random.default_rng(seed)
    els = []
    ins = []
    for i in range(1, n_in + 1):
        els += [VoltageSource(f"vx{i}", f"x{i}", "0", 0.0), VoltageSource(f"vx{i}n", f"x{i}n", "0", 0.0)]
        ins += [f"x{i}", f"x{i}n"]
    biases = ["bp", "bn"] if bias_sources else []
    if bias_sources:
        els += [VoltageSource("vbp", "bp", "0", float(bias)), VoltageSource("vbn", "bn", "0", -float(bias))]
    sources = ins + biases
    count = [0]

    def res(a, b, scale):
        count[0] += 1
        g = float(g0 * scale * rng.uniform(0.5, 1.5))
        els.append(Resistor(f"r{count[0]}", a, b, g))

    outs = [f"o{k}" for k in range(1, n_out + 1)]
    hid = [f"h{j}" for j in range(1, n_h + 1)]
    for h in hid:
        for s in sources:
            res(s, h, hidden_scale)
    for o in outs:
        for s in (sources if skip else biases):
            res(s, o, 1.0)
        for h in hid:
            res(h, o, hidden_scale)
    for j, h in enumerate(hid, start=1):
        els.append(IdealDiode(f"dh{j}", h, "0", vth=float(vth)))
        if both:
            els.append(IdealDiode(f"dl{j}", "0", h, vth=float(vth)))
    return Circuit(tuple(els), targets={o: 0.0 for o in outs})


def input_sources(n_inputs: int) -> tuple:
    """The input source names of a layered netlist, in the order of :func:`signed_columns`."""
    return tuple(name for i in range(1, n_inputs + 1) for name in (f"vx{i}", f"vx{i}n"))


def signed_columns(X) -> np.ndarray:
    """``X`` (n, n_in) -> (n, 2 n_in): columns ``x1, -x1, x2, -x2, ...`` (the sources :func:`input_sources`)."""
    X = np.asarray(X, float)
    return np.stack([X, -X], axis=2).reshape(X.shape[0], -1)


def layered_netlist(n_inputs: int, n_hidden: int, n_outputs: int, title: Optional[str] = None, **options) -> str:
    """:func:`layered_circuit` as netlist text (resistors in ohms), with a comment header that says how
    to train it. ``options`` as :func:`layered_circuit`."""
    c = layered_circuit(n_inputs, n_hidden, n_outputs, **options)
    text = write_netlist(c)
    head, rest = text.split("\n", 1)
    ins = ",".join(input_sources(n_inputs))
    outs = ",".join(f"o{k}" for k in range(1, n_outputs + 1))
    note = [
        title or f"layered netlist: {n_inputs} inputs (+x/-x sources), {n_hidden} diode hidden units, {n_outputs} "
                 "outputs",
        "* written by physgrad netlist layered (physgrad.netlists.builder); resistances in ohms",
        f"* inputs: sources {ins}; the data needs columns vx<i> = x_i and vx<i>n = -x_i (V)",
        f"* outputs: nodes {outs} (.target lines are placeholders; fit takes targets from the data)",
        f"* train:  physgrad fit NETLIST --data TRAIN.csv --inputs {ins} --outputs {outs} --label-column LABEL "
        f"--lr {0.1 * options.get('g0', 1e-3):.3g}",
        "*   (--lr 0.1 x the crossbar's conductance, S per step: fit's default, 0.01 x the median conductance, is",
        "*   10x too small when the hidden layer starts small; features scaled to a few volts, e.g. clipped to +-3)",
    ]
    del head
    return "\n".join(note) + "\n" + rest

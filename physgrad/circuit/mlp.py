r"""Universal approximation, demonstrated: a ReLU multilayer perceptron as a circuit of resistors,
ideal diodes and VCVSs that computes exactly the same function.

Construction (one of many; chosen for exactness and for a netlist that ngspice runs unchanged).
For layer ``l`` with weights ``W`` (``n_l x n_{l-1}``) and biases ``b``, unit ``j``:

1. **Signed inputs.** Every input of the layer is available as a voltage source's node: the
   network's inputs are independent sources ``vx{i}`` (node ``x{i}``); a hidden unit's ReLU node is
   copied by a buffer VCVS of gain +1 (node ``h{l}_{i}``) and, where a weight is negative, an
   inverting VCVS of gain -1 (node ``hn{l}_{i}``); the bias rails are ``+1 V`` and ``-1 V`` sources.
2. **Weighted sum.** A summing node ``s{l}_{j}`` joined by a conductance ``|W_ji|`` (S) to the input
   of the weight's sign, ``|b_j|`` to the rail of the bias's sign and ``g0`` (S) to ground settles
   at ``(sum_i W_ji h_i + b_j) / G_j`` with ``G_j = sum_i |W_ji| + |b_j| + g0`` (KCL; the node's only
   loads are these conductances, every input being an ideal source).
3. **Gain.** A VCVS of gain ``G_j`` (``ez{l}_{j}``) restores ``z_j = sum_i W_ji h_i + b_j`` (V) at node
   ``z{l}_{j}``.
4. **ReLU** (hidden layers): a resistor ``R`` from ``z{l}_{j}`` to ``r{l}_{j}`` and an ideal diode
   from ground (anode) to ``r{l}_{j}`` (cathode). The node feeds only VCVS control ports (no
   current), so with ``z >= 0`` the diode is off and ``v_r = z``; with ``z < 0`` it conducts and
   ``v_r = 0``: ``v_r = max(z, 0)`` exactly.

The output layer has no ReLU: the outputs are the nodes ``z{L}_{j}``. The circuit is not
energy-based (the VCVSs are one-way), so physgrad solves it as an LCP; its matrix is block lower
triangular with positive diagonal (each diode sees its own ``R``; later layers do not load earlier
ones), a P-matrix: the answer is unique, and exact to round-off (tested to 1e-9 V).

With ideal diodes replaced by ngspice's steep Shockley diodes (``IS = 1e-9 A``, ``N = 1e-3``, as
:func:`physgrad.circuit.netlist.write_netlist` exports them) a conducting ReLU sits at
``-N vt ln(1 + |z|/(R IS))`` (about -0.36 mV for ``|z| = 1 V``, ``R = 1 kOhm``) and an off one leaks
``IS R`` (1 uV): :func:`ngspice_error_bound` propagates these through the layers.

References
----------
B. Scellier, S. Mishra, "A universal approximation theorem for nonlinear resistive networks",
arXiv:2312.15063 (2023) (a construction from resistors, diodes and sources; this one uses VCVS
buffers instead of their input scaling).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from physgrad.circuit.elements import (NGSPICE_VT, VCVS, Circuit, IdealDiode, Resistor, VoltageSource)
from physgrad.types import BadArgumentError, PhysgradError, as_float_array


@dataclass(frozen=True, eq=False)
class MLPCircuit:
    """A ReLU MLP as a circuit.

    Attributes
    ----------
    circuit : Circuit
    inputs : tuple of str
        The input voltage sources (``vx0, vx1, ...``), whose values are the MLP's inputs (V).
    outputs : tuple of str
        The output nodes (``z{L}_0, ...``), whose voltages are the MLP's outputs (V).
    relu_resistance : float
        ``R`` of each ReLU (ohm).
    """

    circuit: Circuit
    inputs: tuple
    outputs: tuple
    relu_resistance: float

    def with_inputs(self, x: Sequence[float]) -> Circuit:
        """The circuit with its input sources set to ``x`` (V), shape ``(n_inputs,)``."""
        x = as_float_array(x, "x (V)", (len(self.inputs),))
        return self.circuit.with_sources(dict(zip(self.inputs, x)))


def _layers(weights, biases):
    if not isinstance(weights, (list, tuple)) or not isinstance(biases, (list, tuple)):
        raise BadArgumentError("weights and biases must be sequences of arrays (one per layer)")
    if len(weights) != len(biases) or not weights:
        raise PhysgradError(f"need one bias vector per weight matrix, got {len(weights)} and {len(biases)}")
    Ws, bs = [], []
    for l, (W, b) in enumerate(zip(weights, biases), start=1):
        W = as_float_array(W, f"weights of layer {l}")
        b = as_float_array(b, f"biases of layer {l}")
        if W.ndim != 2 or b.shape != (W.shape[0],):
            raise PhysgradError(f"layer {l}: weights must be (n_out, n_in) and biases (n_out,), got {W.shape}, "
                                f"{b.shape}")
        if Ws and W.shape[1] != Ws[-1].shape[0]:
            raise PhysgradError(f"layer {l} takes {W.shape[1]} inputs but layer {l - 1} has {Ws[-1].shape[0]} units")
        Ws.append(W)
        bs.append(b)
    return Ws, bs


def mlp_forward(weights, biases, x) -> np.ndarray:
    """The MLP itself: ``h_l = relu(W_l h_{l-1} + b_l)`` for hidden layers, linear output; ``x`` of
    shape ``(n_in,)`` or ``(batch, n_in)``."""
    Ws, bs = _layers(weights, biases)
    h = np.asarray(x, float)
    for l, (W, b) in enumerate(zip(Ws, bs)):
        h = h @ W.T + b
        if l < len(Ws) - 1:
            h = np.maximum(h, 0.0)
    return h


def mlp_circuit(weights, biases, *, relu_resistance: float = 1e3, ground_conductance: float = 1.0,
                title: str = "ReLU MLP as a circuit") -> MLPCircuit:
    """The circuit of the module docstring for a ReLU MLP.

    Parameters
    ----------
    weights : sequence of (n_l, n_{l-1}) arrays
    biases : sequence of (n_l,) arrays
    relu_resistance : float
        ``R`` (ohm, > 0) in series with each ReLU diode.
    ground_conductance : float
        ``g0`` (S, > 0) from each summing node to ground (keeps the node fixed when every weight is 0).
    """
    Ws, bs = _layers(weights, biases)
    R = float(relu_resistance)
    g0 = float(ground_conductance)
    if not (np.isfinite(R) and R > 0 and np.isfinite(g0) and g0 > 0):
        raise PhysgradError("relu_resistance and ground_conductance must be finite and > 0")
    els: list = [VoltageSource("vone", "one", "0", 1.0), VoltageSource("vmone", "mone", "0", -1.0)]
    n_in = Ws[0].shape[1]
    inputs = tuple(f"vx{i}" for i in range(n_in))
    els += [VoltageSource(f"vx{i}", f"x{i}", "0", 0.0) for i in range(n_in)]
    pos = [f"x{i}" for i in range(n_in)]  # nodes carrying +h_i
    neg: dict = {}  # i -> node carrying -h_i (made on demand)
    L = len(Ws)
    outputs = ()
    for l, (W, b) in enumerate(zip(Ws, bs), start=1):
        for i in range(W.shape[1]):
            if np.any(W[:, i] < 0) and i not in neg:
                node = f"hn{l - 1}_{i}"
                els.append(VCVS(f"ein{l - 1}_{i}", node, "0", pos[i], "0", -1.0))
                neg[i] = node
        nxt = []
        for j in range(W.shape[0]):
            s = f"s{l}_{j}"
            G = g0
            for i, w in enumerate(W[j]):
                if w != 0:
                    els.append(Resistor(f"rw{l}_{j}_{i}", s, pos[i] if w > 0 else neg[i], abs(w)))
                    G += abs(w)
            if b[j] != 0:
                els.append(Resistor(f"rb{l}_{j}", s, "one" if b[j] > 0 else "mone", abs(b[j])))
                G += abs(b[j])
            els.append(Resistor(f"rg{l}_{j}", s, "0", g0))
            z = f"z{l}_{j}"
            els.append(VCVS(f"ez{l}_{j}", z, "0", s, "0", G))
            if l < L:
                r = f"r{l}_{j}"
                els.append(Resistor(f"rr{l}_{j}", z, r, 1.0 / R))
                els.append(IdealDiode(f"dr{l}_{j}", "0", r))
                h = f"h{l}_{j}"
                els.append(VCVS(f"eb{l}_{j}", h, "0", r, "0", 1.0))
                nxt.append(h)
            else:
                nxt.append(z)
        pos, neg = nxt, {}
        outputs = tuple(nxt)
    return MLPCircuit(Circuit(tuple(els), title), inputs, outputs, R)


def ngspice_error_bound(weights, biases, x, *, relu_resistance: float = 1e3, steep_IS: float = 1e-9,
                        steep_N: float = 1e-3) -> np.ndarray:
    """Bound (V, per output) on ``|v_ngspice - mlp(x)|`` when ngspice replaces each ideal diode by a
    steep Shockley diode: each ReLU is off by at most ``N vt ln(1 + |z|/(R IS)) + 2 R IS`` (its forward
    drop when conducting, its leakage through ``R`` when off), and an error ``e`` in a layer's inputs
    moves its outputs by at most ``|W| e``."""
    Ws, bs = _layers(weights, biases)
    h = np.asarray(x, float)
    err = np.zeros_like(h)
    for l, (W, b) in enumerate(zip(Ws, bs)):
        z = W @ h + b
        err = np.abs(W) @ err
        if l < len(Ws) - 1:
            err = err + steep_N * NGSPICE_VT * np.log1p(np.abs(z) / (relu_resistance * steep_IS)) \
                + 2 * relu_resistance * steep_IS
            h = np.maximum(z, 0.0)
    return err

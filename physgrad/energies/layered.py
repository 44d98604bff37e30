r"""Layered energies: deep resistive networks (DRN) and deep Hopfield networks (DHN).

Both follow the energy contract of ``docs/interfaces.md``: ``theta = (W_1, ..., W_L, b_1, ..., b_L)``
with ``W_k`` of shape ``(n_{k-1}, n_k)`` and ``b_k`` of shape ``(n_k,)``; a state is a tuple
``(s_1, ..., s_L)`` of arrays ``(batch, n_k)`` (``s_L`` are the outputs); ``x`` are the inputs
``(batch, n_inputs)`` (pixels in [0, 1]). Everything called on a state or ``theta`` is pure and
traceable by autograd.

Besides the contract, each energy gives the closed-form minimiser of one layer with all other layers
fixed (:meth:`block_solve`), the layer's bounds (:meth:`bounds`), and a DRN lowers to a
:class:`physgrad.circuit.Circuit` (:meth:`DeepResistive.to_circuit`).

References
----------
B. Scellier, S. Mishra, Y. Bengio, Y. Ollivier, "Fast algorithm to simulate nonlinear resistive
networks", ICML 2024 (DRNs, exact block coordinate descent).
B. Scellier, Y. Bengio, "Equilibrium propagation", Front. Comput. Neurosci. 2017 (Hopfield energy).
"""
from __future__ import annotations

from dataclasses import dataclass

import autograd.numpy as anp
import numpy as np
from autograd.builtins import SequenceBox

from physgrad.types import FREE, Nudge, PhysgradError


def _check_x(x, n_inputs: int, dtype=float) -> np.ndarray:
    x = np.asarray(x, dtype=dtype) if not hasattr(x, "_value") else x
    if getattr(x, "ndim", 0) == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != n_inputs:
        raise PhysgradError(f"inputs x must have shape (batch, {n_inputs}), got {np.shape(x)}")
    if not hasattr(x, "_value") and not np.all(np.isfinite(x)):
        raise PhysgradError("inputs x contain NaN or inf")
    return x


class LayerStates:
    """States as tuples of ``(batch, n_k)`` arrays, one per free layer ``k = 1..L``: the methods every
    layered energy shares (dense here, convolutional in :mod:`physgrad.energies.conv`), given its
    ``n_layers`` (``L``) and ``sizes`` (``(n_0, n_1, ..., n_L)``, ``n_0`` the inputs)."""

    def check_state(self, state, batch: int):
        """Validate a state tuple for a batch of ``batch`` samples."""
        if not isinstance(state, (tuple, list)) or len(state) != self.n_layers:
            raise PhysgradError(f"a state is a tuple of {self.n_layers} arrays (one per free layer)")
        for k, s in enumerate(state, start=1):
            if anp.shape(s) != (batch, self.sizes[k]):
                raise PhysgradError(f"state layer {k} must have shape {(batch, self.sizes[k])}, got {anp.shape(s)}")
        return tuple(state)

    def zero_state(self, batch: int, dtype=float):
        """All-zero state (0 V)."""
        return tuple(np.zeros((batch, n), dtype=dtype) for n in self.sizes[1:])

    def outputs(self, state):
        """Output units' values, shape ``(batch, n_outputs)``."""
        return state[-1]


@dataclass(frozen=True)
class _Layered(LayerStates):
    """Shared structure of the layered energies (abstract: use DeepResistive or DeepHopfield)."""

    n_inputs: int
    hidden: tuple
    n_outputs: int = 10

    def __post_init__(self):
        hidden = tuple(int(h) for h in self.hidden)
        object.__setattr__(self, "hidden", hidden)
        if int(self.n_inputs) < 1 or int(self.n_outputs) < 1 or any(h < 1 for h in hidden):
            raise PhysgradError(f"layer sizes must be >= 1, got inputs={self.n_inputs}, hidden={hidden}, "
                                f"outputs={self.n_outputs}")

    # --- structure ----------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Number of free layers ``L`` (= weight matrices)."""
        return len(self.hidden) + 1

    @property
    def sizes(self) -> tuple:
        """Layer sizes, input layer first (a DRN's input layer is the doubled ``2 n_inputs``)."""
        return (self.n_input_units,) + self.hidden + (self.n_outputs,)

    def split(self, theta):
        """``(Ws, bs)`` from ``theta``, checking the number and shapes of the arrays."""
        L = self.n_layers
        if not isinstance(theta, (tuple, list, SequenceBox)) or len(theta) != 2 * L:
            raise PhysgradError(f"theta must be a tuple of {L} weight matrices and {L} bias vectors")
        Ws, bs = tuple(theta[i] for i in range(L)), tuple(theta[L + i] for i in range(L))
        for k, (W, b) in enumerate(zip(Ws, bs), start=1):
            want = (self.sizes[k - 1], self.sizes[k])
            if anp.shape(W) != want or anp.shape(b) != (self.sizes[k],):
                raise PhysgradError(f"layer {k}: W must be {want} and b ({self.sizes[k]},), got "
                                    f"{anp.shape(W)} and {anp.shape(b)}")
        return Ws, bs

    def init_theta(self, rng: np.random.Generator, weight_gain: float = 1.0, dtype=float):
        """Initial parameters: ``W_k ~ U(-a_k, a_k)`` with ``a_k = weight_gain / sqrt(n_{k-1})``
        (then projected onto the feasible set: a DRN's conductances clamped at 0 S), ``b_k = 0``.

        The one initialisation of every layered engine. The draws are exactly
        ``rng.uniform(-a_k, a_k, size=(n_{k-1}, n_k)).astype(dtype)`` layer by layer, input side
        first, so a seed gives the same numbers on every engine and in every version.

        Returns
        -------
        tuple of arrays
            ``(W_1, ..., W_L, b_1, ..., b_L)`` of dtype ``dtype``.
        """
        Ws = []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            scale = weight_gain / np.sqrt(n_in)
            Ws.append(rng.uniform(-scale, scale, size=(n_in, n_out)).astype(dtype))
        bs = [np.zeros(n, dtype=dtype) for n in self.sizes[1:]]
        return self.project(tuple(Ws) + tuple(bs))

    def _layers(self, state, x):
        return [self.input_layer(x)] + list(state)

    def _nudge_terms(self, nudge: Nudge, batch: int):
        """``(beta, target)`` of a beta-nudge, target broadcast to ``(batch, n_out)``."""
        if nudge.beta == 0.0:
            return 0.0, None
        y = np.broadcast_to(np.asarray(nudge.target, dtype=float), (batch, self.n_outputs))
        return nudge.beta, y


@dataclass(frozen=True)
class DeepResistive(_Layered):
    r"""Energy (power dissipation, W) of a deep resistive network.

    .. math::

        E(s, \theta, x) = \sum_{k=1}^{L} \sum_{i,j} \tfrac12 W_k[i,j]\,(s_{k-1,i} - s_{k,j})^2
                          - \sum_{k=1}^{L} b_k \cdot s_k,
        \qquad s_0 = g\,(x, -x),

    per sample, with conductances ``W_k >= 0`` (S), bias currents ``b_k`` (A) injected into each
    unit, node voltages ``s`` (V) and input gain ``g`` (V per unit input). Hidden layers carry
    ideal diodes to ground: the first half of each layer's units satisfies ``s >= 0`` (diode from
    ground to the unit), the second half ``s <= 0`` (diode from the unit to ground). The output
    layer is linear (no diodes).

    **Amplifiers between layers** (``amplifier_gains``; Kendall et al. 2020). Between free layer
    ``k - 1`` and the conductances ``W_k`` (``k = 2..L``) each unit may sit behind a bidirectional
    amplifier of gain ``A_k > 0``: a VCVS drives the input side of ``W_k`` at ``A_k s_{k-1}`` and a
    CCCS draws ``1/A_k`` times the current it delivers back out of the unit. KCL at a unit of
    layer ``k`` (``A_1 = 1``: the input gain plays that role) reads

    .. math::

        s_k (\mathbf 1 W_k + W_{k+1}\mathbf 1) = A_k\, s_{k-1} W_k
        + \tfrac{1}{A_{k+1}}\, s_{k+1} W_{k+1}^\top + b_k \;(+\text{diode current}).

    Cutting the circuit at its amplifiers leaves a chain of islands (island ``k``: layer ``k``, its
    diodes and bias sources, and ``W_k``), so the steady state is still the unique minimiser of one
    convex function (:mod:`physgrad.circuit.amplifiers`: ``c_Q = c_P B/A`` with ``B = 1/A``):

    .. math::

        E(s, \theta, x) = \sum_{k=1}^{L} c_k \Big[\sum_{i,j} \tfrac12 W_k[i,j]\,
        (A_k s_{k-1,i} - s_{k,j})^2 - b_k\cdot s_k\Big],
        \qquad c_k = \prod_{m=k+1}^{L} A_m^2, \quad c_L = 1,

    which is what :meth:`energy` returns (W, per sample; ``c_k`` dimensionless). Its stationarity
    in ``s_k`` is ``c_k`` times the KCL above. Since the outputs' island has ``c_L = 1``, the
    nudged function is ``E + beta C`` unchanged and equilibrium propagation stays exact as
    ``beta -> 0`` with :meth:`theta_grad` carrying the island factors ``c_k`` (the "per-layer
    factors" of centered EP; its bias is the usual ``O(beta^2)``). With all gains 1 every formula
    is the plain DRN's, bit for bit.

    The amplified network is a reparametrisation of the plain one: with ``P_k = prod_{m<=k} A_m``
    and ``s_k = (P_k / P_L) s'_k``, ``s'`` is the plain DRN's state with input gain ``g P_L`` and
    biases ``b'_k = b_k P_L / P_k`` (every block update maps onto the plain one, so this holds
    sweep by sweep, not only at the fixed point); ``dC/dW`` is the same, ``dC/db_k = (P_L/P_k)
    dC/db'_k``. Amplifiers of product ``P_L`` therefore do what an input gain ``P_L`` times larger
    does, with voltages inside layer ``k`` lower by ``P_k / P_L``.

    Parameters
    ----------
    n_inputs : int
        Input pixels (the input layer has ``2 n_inputs`` voltage sources).
    hidden : tuple of int
        Hidden layer sizes (even).
    n_outputs : int
    input_gain : float
        ``g`` (V).
    amplifier_gains : tuple of float, optional
        ``(A_2, ..., A_L)`` (dimensionless, each finite and > 0), one per connection between free
        layers (``len(hidden)`` values); ``()`` (default) means all 1: no amplifiers.

    References
    ----------
    J. Kendall, R. Pantone, K. Manickavasagam, Y. Bengio, B. Scellier, "Training end-to-end analog
    neural networks with equilibrium propagation", arXiv:2006.01981 (2020).
    """

    input_gain: float = 1.0
    amplifier_gains: tuple = ()

    def __post_init__(self):
        super().__post_init__()
        if any(h % 2 for h in self.hidden):
            raise PhysgradError(f"DRN hidden sizes must be even (half v>=0, half v<=0), got {self.hidden}")
        g = float(self.input_gain)
        if not np.isfinite(g) or g <= 0:
            raise PhysgradError(f"input_gain must be finite and > 0, got {self.input_gain}")
        object.__setattr__(self, "input_gain", g)
        gains = self.amplifier_gains
        if isinstance(gains, (str, bytes)) or not hasattr(gains, "__len__"):
            raise PhysgradError(f"amplifier_gains must be a tuple of {len(self.hidden)} numbers, got {gains!r}")
        try:
            gains = tuple(float(a) for a in gains)
        except (TypeError, ValueError):
            raise PhysgradError(f"amplifier_gains must be numbers, got {self.amplifier_gains!r}") from None
        if not gains:
            gains = (1.0,) * len(self.hidden)
        if len(gains) != len(self.hidden):
            raise PhysgradError(f"amplifier_gains needs one gain per connection between free layers: "
                                f"{len(self.hidden)} for hidden={self.hidden}, got {len(gains)}")
        bad = [a for a in gains if not (np.isfinite(a) and a > 0)]
        if bad:
            raise PhysgradError(f"amplifier gains must be finite and > 0, got {gains}")
        total = g * float(np.prod(gains))
        if not 1e-150 <= total <= 1e150:  # the compiled kernel's exact reparametrisation scales learning
            # rates by this product squared: it must stay well inside the doubles
            raise PhysgradError(f"input_gain times the amplifier gains is {total:.3g}: outside [1e-150, 1e150]")
        object.__setattr__(self, "amplifier_gains", gains)

    @property
    def amplified(self) -> bool:
        """Whether any amplifier gain differs from 1."""
        return any(a != 1.0 for a in self.amplifier_gains)

    def gain(self, k: int) -> float:
        """``A_k``, the gain in front of ``W_k`` (``k = 1..L``; ``A_1 = 1``)."""
        return 1.0 if k == 1 else self.amplifier_gains[k - 2]

    @property
    def island_weights(self) -> tuple:
        """``(c_1, ..., c_L)`` with ``c_k = prod_{m>k} A_m^2`` (``c_L = 1``), dimensionless."""
        c, out = 1.0, [1.0]
        for k in range(self.n_layers, 1, -1):
            c = c * self.gain(k) ** 2
            out.append(c)
        return tuple(reversed(out))

    @property
    def n_input_units(self) -> int:
        return 2 * int(self.n_inputs)

    def input_layer(self, x, dtype=float):
        """Input voltages ``g (x, -x)`` (V), shape ``(batch, 2 n_inputs)``, computed in ``dtype``
        (default float64; a traced ``x`` keeps its own)."""
        x = _check_x(x, self.n_inputs, dtype)
        concatenate = anp.concatenate if hasattr(x, "_value") else np.concatenate  # traced x, or plain numpy
        return self.input_gain * concatenate([x, -x], axis=1)

    def energy(self, state, theta, x):
        """Total energy per sample (W), shape ``(batch,)``."""
        Ws, bs = self.split(theta)
        layers = self._layers(state, x)
        c = self.island_weights
        E = 0.0
        for k, (W, b) in enumerate(zip(Ws, bs), start=1):
            a, h = self._drive(layers[k - 1], k), layers[k]
            t = (0.5 * anp.dot(a * a, anp.sum(W, axis=1)), 0.5 * anp.dot(h * h, anp.sum(W, axis=0)),
                 -anp.sum(anp.dot(a, W) * h, axis=1), -anp.dot(h, b))
            if c[k - 1] == 1.0:  # summed into E term by term: the plain DRN's rounding, bit for bit
                E = E + t[0] + t[1] + t[2] + t[3]
            else:
                E = E + c[k - 1] * (t[0] + t[1] + t[2] + t[3])
        return E

    def _drive(self, s_prev, k: int):
        """``A_k s_{k-1}``: the voltages on the input side of ``W_k`` (V)."""
        A = self.gain(k)
        return s_prev if A == 1.0 else A * s_prev

    def theta_grad(self, state, theta, x):
        r""":math:`\partial E/\partial\theta` at fixed state, averaged over the batch.

        ``dE/dW_k[i,j] = c_k mean_b 1/2 (A_k s_{k-1,i} - s_{k,j})^2`` (V^2), ``dE/db_k = -c_k mean_b
        s_k`` (V), with the island weights ``c_k`` and gains ``A_k`` (all 1 without amplifiers).
        """
        Ws, bs = self.split(theta)
        layers = self._layers(state, x)
        B = anp.shape(layers[0])[0]
        c = self.island_weights
        gW, gb = [], []
        for k in range(1, self.n_layers + 1):
            a, h = self._drive(layers[k - 1], k), layers[k]
            w = 0.5 * (anp.mean(a * a, axis=0)[:, None] + anp.mean(h * h, axis=0)[None, :]) - anp.dot(a.T, h) / B
            v = -anp.mean(h, axis=0)
            gW.append(w if c[k - 1] == 1.0 else c[k - 1] * w)
            gb.append(v if c[k - 1] == 1.0 else c[k - 1] * v)
        return tuple(gW) + tuple(gb)

    def project(self, theta):
        """Feasible parameters: conductances clamped at 0 S (biases unchanged)."""
        Ws, bs = self.split(theta)
        return tuple(anp.maximum(W, 0.0) for W in Ws) + tuple(bs)

    def bounds(self, k: int):
        """``(lo, hi)`` of free layer ``k`` (1..L), arrays of shape ``(n_k,)`` (V)."""
        n = self.sizes[k]
        if k == self.n_layers:
            return np.full(n, -np.inf), np.full(n, np.inf)
        half = n // 2
        lo = np.concatenate([np.zeros(half), np.full(n - half, -np.inf)])
        hi = np.concatenate([np.full(half, np.inf), np.zeros(n - half)])
        return lo, hi

    def block_solve(self, k: int, state, theta, x, nudge: Nudge = FREE):
        r"""Exact minimiser of ``E + beta C`` over layer ``k`` with the other layers fixed.

        .. math:: s_k = \operatorname{clip}\Big(\frac{A_k s_{k-1} W_k + A_{k+1}^{-1} s_{k+1} W_{k+1}^\top
                  + b_k [+\beta y]}{\mathbf 1 W_k + W_{k+1}\mathbf 1\,[+\beta]}\Big)

        (the conductance-weighted mean of the neighbours plus the bias current over the total
        conductance; the units of a layer are decoupled, so clipping to the diode bounds is exact;
        ``A_k`` the amplifier gains, all 1 without amplifiers: dividing the energy's stationarity
        in ``s_k`` by ``c_k`` gives this KCL). A unit with no conductance at all is set to 0 V.
        Pure and traceable.
        """
        Ws, bs = self.split(theta)
        layers = self._layers(state, x)
        L = self.n_layers
        num = anp.dot(self._drive(layers[k - 1], k), Ws[k - 1]) + bs[k - 1]
        den = anp.sum(Ws[k - 1], axis=0)
        if k < L:
            back = anp.dot(layers[k + 1], Ws[k].T)
            A = self.gain(k + 1)
            num = num + (back if A == 1.0 else back / A)
            den = den + anp.sum(Ws[k], axis=1)
        if k == L:
            beta, y = self._nudge_terms(nudge, anp.shape(num)[0])
            if beta:
                num = num + beta * y
                den = den + beta
        safe = anp.where(den > 0, den, 1.0)
        s = anp.where(den > 0, num / safe, 0.0)
        if k < L:
            half = self.sizes[k] // 2
            s = anp.concatenate([anp.maximum(s[:, :half], 0.0), anp.minimum(s[:, half:], 0.0)], axis=1)
        return s

    def check_nudge(self, theta, nudge: Nudge) -> None:
        """A negative beta keeps the energy convex only while ``1 W_L - |beta| > 0`` at each output
        (see :meth:`check_beta`)."""
        if nudge.beta < 0:
            Ws, _ = self.split(theta)
            self.check_beta(nudge.beta, np.sum(np.asarray(Ws[-1]), axis=0))

    @staticmethod
    def check_beta(beta: float, output_conductance) -> None:
        """Raise :class:`PhysgradError` unless ``E + beta C`` is convex.

        Parameters
        ----------
        beta : float
            Nudging strength (S); only ``beta < 0`` can fail.
        output_conductance : array, shape ``(n_outputs,)``
            Total conductance into each output unit, ``1 W_L`` (S). The nudged output block is
            convex iff ``output_conductance + beta > 0`` at every output (computed in the array's
            dtype, as a kernel that divides by it would).
        """
        if beta < 0:
            den = output_conductance + beta
            if np.any(den <= 0):
                bad = int(np.argmin(den))
                raise PhysgradError(
                    f"beta={beta:g} makes the nudged energy non-convex: output {bad} has total "
                    f"conductance {float(output_conductance[bad]):.4g} S <= |beta|")

    # --- lowering to a circuit ----------------------------------------------------------------
    def node(self, k: int, j: int) -> str:
        """Node name of unit ``j`` of layer ``k`` (0 = input layer)."""
        return f"in{j}" if k == 0 else (f"out{j}" if k == self.n_layers else f"h{k}_{j}")

    def to_circuit(self, theta, x, nudge: Nudge = FREE):
        """The circuit of one sample: sources, resistors (zero conductances omitted), diodes, bias sources.

        Parameters
        ----------
        theta : parameters
        x : array ``(n_inputs,)`` or ``(1, n_inputs)``
        nudge : Nudge, optional
            Only its target is used (as the circuit's output targets); solve with
            ``physgrad.circuit.solve.solve(circuit, nudge=...)`` to apply it.

        Returns
        -------
        physgrad.circuit.Circuit
            Nodes ``in{i}``, ``h{k}_{j}``, ``out{j}``; outputs are ``out{j}``. A connection with an
            amplifier gain ``A_k != 1`` gets, per unit ``i`` of layer ``k - 1``, a bidirectional
            amplifier as ngspice writes it (Kendall et al.): ``E{k}_{i}`` (gain ``A_k``) driving node
            ``m{k-1}_{i}``, a 0 V sense source ``VS{k}_{i}`` from there to ``u{k-1}_{i}`` (where
            ``W_k``'s resistors start) and ``F{k}_{i}`` drawing ``1/A_k`` of the sensed current out
            of the unit.
        """
        from physgrad.circuit.elements import (CCCS, VCVS, Circuit, CurrentSource, IdealDiode, Resistor,
                                               VoltageSource)

        s0 = np.asarray(self.input_layer(x))
        if s0.shape[0] != 1:
            raise PhysgradError(f"to_circuit lowers one sample, got a batch of {s0.shape[0]}")
        Ws, bs = self.split(tuple(np.asarray(t, dtype=float) for t in theta))
        els = [VoltageSource(f"Vin{i}", self.node(0, i), "0", float(v)) for i, v in enumerate(s0[0])]
        for k in range(1, self.n_layers + 1):
            W = Ws[k - 1]
            if np.any(W < 0):
                raise PhysgradError(f"W_{k} has negative conductances; project theta first")
            A = self.gain(k)
            start = [self.node(k - 1, i) for i in range(self.sizes[k - 1])]
            if A != 1.0:
                for i, unit in enumerate(start):
                    mid, start[i] = f"m{k - 1}_{i}", f"u{k - 1}_{i}"
                    els += [VCVS(f"E{k}_{i}", mid, "0", unit, "0", A), VoltageSource(f"VS{k}_{i}", mid, start[i], 0.0),
                            CCCS(f"F{k}_{i}", unit, "0", f"VS{k}_{i}", 1.0 / A)]
            for i, j in zip(*np.nonzero(W)):
                els.append(Resistor(f"R{k}_{i}_{j}", start[i], self.node(k, j), float(W[i, j])))
            for j, b in enumerate(bs[k - 1]):
                if b != 0:
                    els.append(CurrentSource(f"I{k}_{j}", "0", self.node(k, j), float(b)))
            if k < self.n_layers:
                half = self.sizes[k] // 2
                for j in range(self.sizes[k]):
                    if j < half:
                        els.append(IdealDiode(f"D{k}_{j}", "0", self.node(k, j)))
                    else:
                        els.append(IdealDiode(f"D{k}_{j}", self.node(k, j), "0"))
        targets = ()
        if nudge.target is not None:
            y = np.broadcast_to(np.asarray(nudge.target, dtype=float).reshape(-1), (self.n_outputs,))
            targets = tuple((self.node(self.n_layers, o), float(y[o])) for o in range(self.n_outputs))
        return Circuit(elements=tuple(els), title=f"DRN {self.sizes}", targets=targets)

    def state_from_solution(self, solution):
        """Layer voltages ``(s_1, ..., s_L)`` (each ``(1, n_k)``) read from a circuit solution."""
        return tuple(np.array([[solution.voltage(self.node(k, j)) for j in range(self.sizes[k])]])
                     for k in range(1, self.n_layers + 1))


@dataclass(frozen=True)
class DeepHopfield(_Layered):
    r"""Energy of a deep Hopfield network.

    .. math::

        E(s, \theta, x) = \sum_{k=1}^{L} \tfrac12 \|s_k\|^2 - \sum_{k=1}^{L} s_{k-1}^\top W_k s_k
                          - \sum_{k=1}^{L} b_k \cdot s_k, \qquad s_0 = x,

    hidden units in ``[0, 1]`` (hard sigmoid), linear outputs, signed weights.

    Parameters
    ----------
    n_inputs, hidden, n_outputs : int, tuple, int
    """

    @property
    def n_input_units(self) -> int:
        return int(self.n_inputs)

    def input_layer(self, x, dtype=float):
        """The pixels ``x``, shape ``(batch, n_inputs)``, in ``dtype`` (default float64)."""
        return _check_x(x, self.n_inputs, dtype)

    def energy(self, state, theta, x):
        Ws, bs = self.split(theta)
        layers = self._layers(state, x)
        E = 0.0
        for k, (W, b) in enumerate(zip(Ws, bs), start=1):
            a, h = layers[k - 1], layers[k]
            E = E + 0.5 * anp.sum(h * h, axis=1) - anp.sum(anp.dot(a, W) * h, axis=1) - anp.dot(h, b)
        return E

    def theta_grad(self, state, theta, x):
        """``dE/dW_k = -mean_b s_{k-1}^T s_k``, ``dE/db_k = -mean_b s_k``."""
        self.split(theta)
        layers = self._layers(state, x)
        B = anp.shape(layers[0])[0]
        gW = tuple(-anp.dot(layers[k - 1].T, layers[k]) / B for k in range(1, self.n_layers + 1))
        gb = tuple(-anp.mean(layers[k], axis=0) for k in range(1, self.n_layers + 1))
        return gW + gb

    def project(self, theta):
        """Every parameter is feasible (returned unchanged)."""
        Ws, bs = self.split(theta)
        return Ws + bs

    def bounds(self, k: int):
        n = self.sizes[k]
        if k == self.n_layers:
            return np.full(n, -np.inf), np.full(n, np.inf)
        return np.zeros(n), np.ones(n)

    def block_solve(self, k: int, state, theta, x, nudge: Nudge = FREE):
        r"""Exact minimiser over layer ``k``: ``clip(s_{k-1} W_k + s_{k+1} W_{k+1}^T + b_k, 0, 1)``;
        output ``(s_{L-1} W_L + b_L + beta y) / (1 + beta)``."""
        Ws, bs = self.split(theta)
        layers = self._layers(state, x)
        L = self.n_layers
        num = anp.dot(layers[k - 1], Ws[k - 1]) + bs[k - 1]
        if k < L:
            return anp.clip(num + anp.dot(layers[k + 1], Ws[k].T), 0.0, 1.0)
        beta, y = self._nudge_terms(nudge, anp.shape(num)[0])
        return (num + beta * y) / (1.0 + beta) if beta else num

    def check_nudge(self, theta, nudge: Nudge) -> None:
        """The nudged output block ``(1 + beta) s_L^2 / 2 - ...`` is convex iff ``beta > -1``."""
        self.check_beta(nudge.beta)

    @staticmethod
    def check_beta(beta: float, output_conductance=None) -> None:
        """Raise :class:`PhysgradError` unless ``beta > -1`` (``output_conductance`` is unused: the
        outputs' own term ``1/2 s_L^2`` is fixed)."""
        if beta <= -1.0:
            raise PhysgradError(f"beta={beta:g} makes the output block non-convex (need beta > -1)")


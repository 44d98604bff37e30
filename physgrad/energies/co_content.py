r"""A circuit's co-content as an energy of the contract (``docs/interfaces.md``).

For a circuit of resistors (conductances :math:`g`, S), ideal diodes, Shockley diodes and
independent sources, the node voltages :math:`v` (V) at steady state minimize the total co-content

.. math::

    E(v) = \tfrac12 \sum_k g_k\, \Delta v_k^2 + \sum_j J_j(\Delta v_j) - i_{\rm inj}^\top v

subject to the voltage sources (:math:`v = P u + c`) and the ideal diodes
(:math:`v_a - v_c \le v_{th}`) (Millar 1951). The parameters :math:`\theta` are the conductances of
the trainable resistors (S, shape ``(n_trainable,)``), so :math:`\partial E/\partial g_k = \tfrac12\Delta v_k^2`
(V^2) and the EP rule is local. Inputs ``x`` (shape ``(batch, n_inputs)``) set the values of the
named independent sources (V or A); the state is the node voltages, shape ``(batch, n_nodes)``
in the order of :attr:`Circuit.nodes`; the outputs are the target nodes.

Ideal diodes enter as constraints, not as energy terms: :meth:`CoContentEnergy.energy` is the
co-content of feasible states.

References
----------
W. Millar (1951), Phil. Mag. 42; Kendall et al. (2020), "Training end-to-end analog neural networks
with equilibrium propagation", arXiv:2006.01981; Scellier (2024), "A fast algorithm to simulate
nonlinear resistive networks", ICML.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import autograd.numpy as anp
import numpy as np

from physgrad.circuit.elements import Circuit, CurrentSource, Resistor, VoltageSource
from physgrad.circuit.reduction import build_problem, reparametrize
from physgrad.circuit.diode import shockley_co_content, shockley_current, shockley_slope
from physgrad.types import FREE, DenseTooLargeError, Nudge, PhysgradError, QuadraticForm

DENSE_LIMIT_ENV = "PHYSGRAD_DENSE_LIMIT_GB"
DEFAULT_DENSE_LIMIT_GB = 4.0


def dense_limit_bytes() -> int:
    """Most memory (bytes) the dense route may use: ``$PHYSGRAD_DENSE_LIMIT_GB`` GiB (default 4 GiB)."""
    import os

    text = os.environ.get(DENSE_LIMIT_ENV, "")
    try:
        gb = float(text) if text else DEFAULT_DENSE_LIMIT_GB
    except ValueError:
        raise PhysgradError(f"{DENSE_LIMIT_ENV}={text!r} is not a number of GiB") from None
    if not gb > 0:
        raise PhysgradError(f"{DENSE_LIMIT_ENV}={text!r} must be > 0")
    return int(gb * 2**30)


@dataclass(frozen=True, eq=False)
class CoContentEnergy:
    """Co-content of ``circuit`` with ``theta`` = trainable conductances (see module docstring).

    Parameters
    ----------
    circuit : Circuit
    inputs : tuple of str
        Names of the independent sources whose values ``x`` sets (empty: ``x`` is ignored, batch 1).
    output_nodes : tuple of str, optional
        Output nodes; default the circuit's ``.target`` nodes.
    trainable : tuple of str, optional
        Trainable resistor names; default ``circuit.trainable_names``.
    """

    circuit: Circuit
    inputs: tuple = ()
    output_nodes: Optional[tuple] = None
    trainable: Optional[tuple] = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        c = self.circuit
        if not isinstance(c, Circuit):
            raise PhysgradError(f"circuit must be a Circuit, got {type(c).__name__}")
        inputs = tuple(str(n).strip().lower() for n in self.inputs)
        for n in inputs:
            if not isinstance(c.element(n), (VoltageSource, CurrentSource)):
                raise PhysgradError(f"input {n!r} is not an independent source")
        object.__setattr__(self, "inputs", inputs)
        outs = tuple(t[0] for t in c.targets) if self.output_nodes is None else tuple(self.output_nodes)
        if not outs:
            raise PhysgradError("the circuit has no output nodes: add `.target NODE VALUE` lines "
                                "(or pass output_nodes)")
        object.__setattr__(self, "output_nodes", tuple(c.nodes[c.index_of_node(n)] for n in outs))
        names = c.trainable_names if self.trainable is None else tuple(str(n).strip().lower() for n in self.trainable)
        for n in names:
            if not isinstance(c.element(n), Resistor):
                raise PhysgradError(f"trainable element {n!r} is not a resistor")
        if not names:
            raise PhysgradError("the circuit has no trainable resistors")
        object.__setattr__(self, "trainable", tuple(names))
        arr = c.arrays
        res_names = [c.elements[p].name for p in arr.res_pos]
        pos = {n: i for i, n in enumerate(res_names)}
        tpos = np.array([pos[n] for n in names], dtype=np.int64)   # resistor position of each parameter
        slot = np.full(len(res_names), len(names), dtype=np.int64)  # parameter of each resistor (n: none)
        slot[tpos] = np.arange(len(names))
        g_fixed = arr.g.copy()
        g_fixed[tpos] = 0.0
        self._cache.update(tpos=tpos, slot=slot, g_fixed=g_fixed,
                           out=np.array([c.index_of_node(n) for n in self.output_nodes]),
                           shk=len(arr.shk_a) > 0)

    # --- the dense route (energy, theta_grad, quadratic_form) --------------------------------------
    def dense_bytes(self, n_u: Optional[int] = None) -> int:
        """Estimated peak memory (bytes) of the dense route: :meth:`quadratic_form` and its autograd
        trace (the exact gradient). Counts the dense incidence ``A`` and ``A diag(g)``
        (``n_nodes x n_res`` each), the Laplacian (``n_nodes^2``), ``P`` and ``L P`` (``n_nodes x n_u``
        each) and ``H`` (``n_u^2``), float64, twice for the backward pass."""
        arr = self.circuit.arrays
        n, m = arr.n_nodes, len(arr.res_a)
        n_u = n if n_u is None else n_u
        return int(8 * 2 * (2 * n * m + n * n + 2 * n * n_u + n_u * n_u))

    def check_dense(self, what: str, nbytes: Optional[int] = None) -> None:
        """:class:`DenseTooLargeError` when the dense route (``what``) would need more than
        :func:`dense_limit_bytes`; estimated before anything is allocated."""
        nbytes = self.dense_bytes() if nbytes is None else nbytes
        limit = dense_limit_bytes()
        if nbytes > limit:
            arr = self.circuit.arrays
            raise DenseTooLargeError(
                f"{what} uses dense matrices: about {nbytes / 2**30:.3g} GiB for this circuit ({arr.n_nodes} nodes, "
                f"{len(arr.res_a)} resistors), above the limit of {limit / 2**30:.3g} GiB (set "
                f"{DENSE_LIMIT_ENV} to change it); the exact gradient is dense: use a smaller circuit or an "
                "estimator that only solves the circuit (ep, coupled learning)")

    def _incidence(self) -> np.ndarray:
        """Dense resistor incidence ``A`` (``n_nodes x n_res``), built on first use after a size check."""
        if "A" not in self._cache:
            arr = self.circuit.arrays
            self.check_dense("the co-content energy's dense form", 8 * 3 * arr.n_nodes * len(arr.res_a))
            self._cache["A"] = np.asarray(arr.A_res.todense())
        return self._cache["A"]

    # --- contract ----------------------------------------------------------------------------
    @property
    def n_outputs(self) -> int:
        return len(self.output_nodes)

    @property
    def output_rows(self) -> tuple:
        """Indices of the output nodes in the state (node order)."""
        return tuple(int(i) for i in self._cache["out"])

    @property
    def param_names(self) -> tuple:
        """Names of the trainable resistors, in the order of ``theta``."""
        return self.trainable

    def theta0(self) -> np.ndarray:
        """The circuit's own trainable conductances (S), shape ``(n_trainable,)``."""
        return np.array([self.circuit.element(n).conductance for n in self.trainable])

    def targets(self) -> np.ndarray:
        """Targets from the circuit's ``.target`` lines, in output order (V), shape ``(n_out,)``."""
        t = self.circuit.target_dict
        missing = [n for n in self.output_nodes if n not in t]
        if missing:
            raise PhysgradError(f"no .target for output node(s) {', '.join(missing)}")
        return np.array([t[n] for n in self.output_nodes])

    def inputs0(self) -> np.ndarray:
        """The circuit's own input source values, shape ``(1, n_inputs)``."""
        return np.array([[self.circuit.element(n).value for n in self.inputs]])

    def conductances(self, theta):
        """All resistor conductances (S), shape ``(n_resistors,)``, traceable in ``theta``."""
        return self._cache["g_fixed"] + anp.concatenate([anp.reshape(theta, (-1,)), np.zeros(1)])[self._cache["slot"]]

    def batch_inputs(self, x) -> np.ndarray:
        """``x`` as ``(batch, n_inputs)`` (``None`` or no inputs: the circuit's own values, batch 1)."""
        if x is None or not self.inputs:
            return self.inputs0()
        arr = np.asarray(x, dtype=float)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != len(self.inputs):
            raise PhysgradError(f"x must have shape (batch, {len(self.inputs)}) for inputs {self.inputs}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise PhysgradError("x contains NaN or inf")
        return arr

    def problem(self, theta, x_row, nudge: Nudge = FREE):
        """The circuit core's reduced :class:`~physgrad.circuit.reduction.Problem` for one sample.

        Free and beta-nudged problems reuse the sample's cached structure (``P``, ``c``, ``D``, ``d``
        depend on the sources only) through :func:`physgrad.circuit.reduction.reparametrize`; clamps and
        zero conductances (which can change the structure) go through ``build_problem`` itself.
        """
        g = np.asarray(self.conductances(np.asarray(theta, float)), dtype=float)
        if not np.all(np.isfinite(g)) or np.any(g < 0):
            raise PhysgradError("conductances must be finite and >= 0")
        if nudge.clamp is not None or np.any(g == 0):
            c = self.circuit if not self.inputs else self.circuit.with_sources(dict(zip(self.inputs, x_row)))
            return build_problem(c, nudge, outputs=self.output_nodes, conductances=g)
        return reparametrize(self._sample(x_row)["problem"], g, nudge)

    def _sample(self, x_row):
        key = ("sample", np.asarray(x_row, float).tobytes())
        if key not in self._cache:
            c = self.circuit if not self.inputs else self.circuit.with_sources(dict(zip(self.inputs, x_row)))
            pb = build_problem(c, FREE, outputs=self.output_nodes,
                               conductances=np.asarray(self.conductances(self.theta0())))
            self._cache[key] = dict(problem=pb, c=pb.c, inj=pb.inj.copy(), d=pb.d, dio_rows=pb.dio_rows)
        return self._cache[key]

    def diode_names(self, rows, x_row=None) -> tuple:
        """Names of the ideal diodes behind rows ``rows`` of the reduced constraints ``D u <= d``
        (of sample ``x_row``; default the circuit's own inputs)."""
        x_row = self.inputs0()[0] if x_row is None else x_row
        dio_rows = self._sample(x_row)["dio_rows"]
        arr = self.circuit.arrays
        return tuple(self.circuit.elements[arr.dio_pos[dio_rows[int(r)]]].name for r in rows)

    def _injections(self, x):
        return np.stack([self._sample(r)["inj"] for r in self.batch_inputs(x)])

    def energy(self, state, theta, x):
        """Co-content (W) per sample, shape ``(batch,)`` (ideal diodes: feasible states only)."""
        dv = anp.dot(state, self._incidence())
        e = 0.5 * anp.sum(self.conductances(theta) * dv**2, axis=1) - anp.sum(state * self._injections(x), axis=1)
        if self._cache["shk"]:
            e = e + self._shockley(state)
        return e

    def _shockley(self, state):
        arr = self.circuit.arrays
        va = anp.where(arr.shk_a >= 0, state[:, np.maximum(arr.shk_a, 0)], 0.0)
        vb = anp.where(arr.shk_b >= 0, state[:, np.maximum(arr.shk_b, 0)], 0.0)
        return anp.sum(shockley_co_content(va - vb, arr.shk_IS, arr.shk_N, arr.shk_vt, arr.shk_gmin), axis=1)

    def theta_grad(self, state, theta, x):
        r""":math:`\partial E/\partial g_k = \tfrac12 \Delta v_k^2` (V^2), batch mean, shape ``(n_trainable,)``."""
        dv = anp.dot(state, self._incidence()[:, self._cache["tpos"]])
        return 0.5 * anp.mean(dv**2, axis=0)

    def outputs(self, state):
        """Output node voltages (V), shape ``(batch, n_out)``."""
        return state[:, list(self._cache["out"])]

    def project(self, theta):
        """Conductances clipped at 0 S."""
        return np.maximum(np.asarray(theta, float), 0.0)

    def quadratic_form(self, theta, x) -> QuadraticForm:
        """Reduced form (dense; traceable in ``theta``) for the exact gradient and the coordinate step.

        Shockley diodes enter as the smooth terms ``S u + e`` of :class:`QuadraticForm` (their
        currents and slopes from :mod:`physgrad.circuit.solution`, i.e. the circuit core's diode law).
        """
        rows = [self._sample(r) for r in self.batch_inputs(x)]
        pb0 = rows[0]["problem"]
        self.check_dense("the exact gradient (quadratic_form)", self.dense_bytes(pb0.n_u))
        P = np.asarray(pb0.P.todense())
        A = self._incidence()
        L = anp.dot(A * self.conductances(theta), A.T)
        H = anp.dot(P.T, anp.dot(L, P))
        c = np.stack([r["c"] for r in rows])
        inj = np.stack([r["inj"] for r in rows])
        f = anp.dot(inj - anp.dot(c, L), P)  # L symmetric
        smooth = {}
        if self._cache["shk"]:
            arr = self.circuit.arrays
            def terms(v):
                return (shockley_current(v, arr.shk_IS, arr.shk_N, arr.shk_vt, arr.shk_gmin),
                        shockley_slope(v, arr.shk_IS, arr.shk_N, arr.shk_vt, arr.shk_gmin))

            pb = rows[0]["problem"]
            smooth = dict(S=np.asarray(pb.S.todense()), e=np.stack([r["problem"].e for r in rows]), smooth=terms)
        return QuadraticForm(H=H, f=f, D=np.asarray(pb0.D.todense()), d=np.stack([r["d"] for r in rows]), P=P, c=c, **smooth)

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
from physgrad.circuit.reduction import build_problem
from physgrad.circuit.diode import shockley_co_content, shockley_current, shockley_slope
from physgrad.circuit.topology import Topology
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

    Internals are sparse and per topology (:class:`physgrad.circuit.topology.Topology`): index
    arrays of the resistors' nodes and the sources' linear maps. The energy is a definition only:
    factorizations and warm starts live in the minimizer
    (:class:`physgrad.minimizers.co_content.CoContentMinimizer`). Memory is O(nnz).
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
        if len(set(names)) != len(names):
            raise PhysgradError("a trainable resistor is listed twice")
        object.__setattr__(self, "trainable", tuple(names))
        arr = c.arrays
        res_names = [c.elements[p].name for p in arr.res_pos]
        pos = {n: i for i, n in enumerate(res_names)}
        train_idx = np.array([pos[n] for n in names], dtype=np.int64)
        gpos = len(names) + np.arange(len(res_names))  # gather map of [theta, g_circuit] -> g
        gpos[train_idx] = np.arange(len(names))
        topo = Topology.build(c, inputs, self.output_nodes)
        self._cache.update(
            train_idx=train_idx, gpos=gpos, g_circuit=arr.g.copy(), res_a=arr.res_a, res_b=arr.res_b,
            ta=arr.res_a[train_idx], tb=arr.res_b[train_idx],
            out=np.array([c.index_of_node(n) for n in self.output_nodes]),
            shk=len(arr.shk_a) > 0, topology=topo)

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

    @property
    def topology(self) -> Topology:
        """The sparse per-topology structure (:class:`physgrad.circuit.topology.Topology`)."""
        return self._cache["topology"]

    @property
    def has_shockley(self) -> bool:
        """Whether the circuit has Shockley (exponential) diodes: smooth energy terms, no batched
        active-set route."""
        return bool(self._cache["shk"])

    def theta0(self) -> np.ndarray:
        """The circuit's own trainable conductances (S), shape ``(n_trainable,)``."""
        return self._cache["g_circuit"][self._cache["train_idx"]].copy()

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
        """All resistor conductances (S), shape ``(n_resistors,)``, traceable in ``theta`` (a gather)."""
        if isinstance(theta, np.ndarray) or np.isscalar(theta) or isinstance(theta, (list, tuple)):
            g = self._cache["g_circuit"].copy()
            g[self._cache["train_idx"]] = np.asarray(theta, dtype=float)
            return g
        return anp.concatenate([theta, self._cache["g_circuit"]])[self._cache["gpos"]]

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

    def source_values(self, x) -> np.ndarray:
        """Values of every independent source per sample, shape ``(batch, n_sources)``."""
        return self.topology.source_values(self.batch_inputs(x) if self.inputs else None)

    def problem(self, theta, x_row, nudge: Nudge = FREE):
        """The circuit core's reduced :class:`~physgrad.circuit.reduction.Problem` for one sample
        (built from scratch: the one-sample route; the batched route never needs it)."""
        g = np.asarray(self.conductances(np.asarray(theta, float)), dtype=float)
        if not np.all(np.isfinite(g)) or np.any(g < 0):
            raise PhysgradError("conductances must be finite and >= 0")
        c = self.circuit if not self.inputs else self.circuit.with_sources(dict(zip(self.inputs, x_row)))
        return build_problem(c, nudge, outputs=self.output_nodes, conductances=g)

    def diode_names(self, rows, x_row=None) -> tuple:
        """Names of the ideal diodes behind rows ``rows`` of the reduced constraints ``D u <= d``
        (the rows are the same for every input)."""
        return self.topology.diode_names(rows)

    def _injections(self, x):
        topo = self.topology
        return topo.injections(topo.source_values(self.batch_inputs(x) if self.inputs else None))

    @staticmethod
    def _branch(state, a, b):
        """``v_a - v_b`` per sample for index arrays ``a, b`` (ground ``-1``), traceable."""
        ext = anp.concatenate([state, anp.zeros((state.shape[0], 1))], axis=1)
        return ext[:, a] - ext[:, b]

    def energy(self, state, theta, x):
        """Co-content (W) per sample, shape ``(batch,)`` (ideal diodes: feasible states only)."""
        dv = self._branch(state, self._cache["res_a"], self._cache["res_b"])
        e = 0.5 * anp.sum(self.conductances(theta) * dv**2, axis=1) - anp.sum(state * self._injections(x), axis=1)
        if self.has_shockley:
            e = e + self._shockley(state)
        return e

    def _shockley(self, state):
        arr = self.circuit.arrays
        dv = self._branch(state, arr.shk_a, arr.shk_b)
        return anp.sum(shockley_co_content(dv, arr.shk_IS, arr.shk_N, arr.shk_vt, arr.shk_gmin), axis=1)

    def branch_voltages(self, state):
        """Voltages across the trainable resistors (V), shape ``(batch, n_trainable)``, traceable."""
        return self._branch(state, self._cache["ta"], self._cache["tb"])

    def theta_grad(self, state, theta, x):
        r""":math:`\partial E/\partial g_k = \tfrac12 \Delta v_k^2` (V^2), batch mean, shape ``(n_trainable,)``."""
        return 0.5 * anp.mean(self.branch_voltages(state) ** 2, axis=0)

    def outputs(self, state):
        """Output node voltages (V), shape ``(batch, n_out)``."""
        return state[:, self._cache["out"]]

    def project(self, theta):
        """Conductances clipped at 0 S."""
        return np.maximum(np.asarray(theta, float), 0.0)

    def dense_bytes(self) -> int:
        """Estimated peak memory (bytes) of the dense route, :meth:`quadratic_form` and its autograd
        trace: ``P^T A`` and its product with ``diag(g)`` (``n_u x n_res`` each), ``P``
        (``n_nodes x n_u``) and ``H`` (``n_u^2``), float64, twice for the backward pass."""
        topo = self.topology
        n_u, n_res, n = topo.n_u, topo.PA.shape[1], topo.P.shape[0]
        return int(8 * 2 * (2 * n_u * n_res + n * n_u + n_u * n_u))

    def check_dense(self, what: str) -> None:
        """:class:`~physgrad.types.DenseTooLargeError` when the dense route (``what``) would need more
        than :func:`dense_limit_bytes`; estimated before anything is allocated."""
        nbytes, limit = self.dense_bytes(), dense_limit_bytes()
        if nbytes > limit:
            arr = self.circuit.arrays
            raise DenseTooLargeError(
                f"{what} uses dense matrices: about {nbytes / 2**30:.3g} GiB for this circuit ({arr.n_nodes} nodes, "
                f"{len(arr.res_a)} resistors), above the limit of {limit / 2**30:.3g} GiB (set {DENSE_LIMIT_ENV} to "
                "change it); the sparse adjoint (ExactGradient(route='adjoint')) and the EP estimators need no "
                "dense matrices")

    def quadratic_form(self, theta, x) -> QuadraticForm:
        """Reduced form (dense; traceable in ``theta``) for the autograd exact gradient and the
        coordinate step, built from the topology's sparse maps (small circuits only: the entries
        of its dense matrices are limited by :meth:`check_dense`).

        Shockley diodes enter as the smooth terms ``S u + e`` of :class:`QuadraticForm` (their
        currents and slopes from :mod:`physgrad.circuit.diode`, i.e. the circuit core's diode law).
        """
        topo = self.topology
        self.check_dense("quadratic_form (the dense, autograd route)")
        W = topo.source_values(self.batch_inputs(x) if self.inputs else None)
        g = self.conductances(theta)
        PA = topo.PA.toarray()
        P = topo.P.toarray()
        H = anp.dot(PA * g, PA.T)
        inj = topo.injections(W)
        AMw = np.asarray((topo.AM @ W.T).T)  # branch offsets (B, n_res)
        f = anp.dot(inj, P) - anp.dot(AMw * g, PA.T)
        c = topo.offsets(W)
        smooth = {}
        if self.has_shockley:
            arr = self.circuit.arrays

            def terms(v):
                return (shockley_current(v, arr.shk_IS, arr.shk_N, arr.shk_vt, arr.shk_gmin),
                        shockley_slope(v, arr.shk_IS, arr.shk_N, arr.shk_vt, arr.shk_gmin))

            Sn = arr.A_shk.T.tocsr()
            smooth = dict(S=np.asarray((Sn @ topo.P).todense()), e=np.asarray((Sn @ c.T).T), smooth=terms)
        return QuadraticForm(H=H, f=f, D=topo.D.toarray(), d=topo.bounds(W), P=P, c=c, **smooth)

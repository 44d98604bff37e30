r"""Twin transistor networks that learn by themselves (coupled learning on NMOS edges), side by side
with the same network trained by the exact gradient.

The hardware of Dillavou et al. (2024): a network whose every edge is an n-channel MOSFET, in two
copies that share the edges' gate voltages: the *free* copy, whose output node is left alone, and the
*clamped* copy, whose output is held at :math:`V^C_o = V^F_o + \eta\,(y - V^F_o)`. Each gate voltage
sits on a capacitor that a local circuit charges from the edge's voltage drops in the two copies,
:math:`\Delta V^F_e` and :math:`\Delta V^C_e` (no gradient is computed anywhere), and that leaks:

.. math::

    \frac{dV_{G,e}}{dt} = \frac{\gamma}{C}\Big((\Delta V^F_e)^2 - (\Delta V^C_e)^2\Big)
                          - \frac{V_{G,e} - V_{\rm rest}}{\tau}.

This module steps that equation in time (Euler, one step per presentation of the training set,
averaging the drops' squares over the examples), with ``rate`` standing for ``gamma dt / C``
expressed through the edge's transconductance: the update of a step is

.. math:: \Delta V_{G,e} = \alpha\,u_e - \frac{dt}{\tau}(V_{G,e} - V_{\rm rest}),\qquad
          u_e = \frac{\beta}{2\eta}\Big\langle(\Delta V^F_e)^2 - (\Delta V^C_e)^2\Big\rangle

(``beta = KP W/L``, A/V^2): for an edge in its linear region with small drops the channel is a
conductance :math:`k_e \approx \beta (V_{G,e} - V_T - \bar V_e)`, and ``u`` is then coupled
learning's estimate of :math:`-\partial C/\partial V_G` (Stern et al. 2021), so ``alpha`` is the
learning rate of both trainers. The twin trained by the exact gradient takes
:math:`u_e = -\partial C / \partial V_{G,e}` (the adjoint of the free network's equations, one
transposed solve), with the same leak and the same clip of the gate voltages to
``[v_gate_min, v_gate_max]``. The cosine between the two ``u`` is recorded at every step.

The cost is :math:`C = \tfrac12 \langle \sum_o (p_o - y_o)^2 \rangle` over the training set, with
the predictions ``p`` the output voltages or, for a differential network, the difference of its two
output nodes (whose clamp then moves each node by half the nudge).

Equilibria: a batched Newton on the node voltages (all examples at once, dense Jacobians: the
networks are small) using the transistor law of :mod:`physgrad.circuit.transistors` (ngspice's
MOS1: channel, drain-source swap, bulk junctions with gmin); it is checked against
:func:`physgrad.circuit.solve.solve` on :meth:`TwinNetwork.circuit` (and that against ngspice) in
``tests/test_twin.py``.

References
----------
S. Dillavou, B. D. Beyer, M. Stern, A. J. Liu, M. Z. Miskin, D. J. Durian, "Machine learning
without a processor: emergent learning in a nonlinear electronic metamaterial", PNAS 121 (2024),
arXiv:2311.00537. M. Stern, D. Hexner, J. W. Rocks, A. J. Liu, "Supervised learning in physical
networks: from machine learning to learning machines", PRX 11 (2021).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from physgrad.circuit.elements import VCVS, Circuit, Mosfet, MosfetModel, VoltageSource
from physgrad.circuit.transistors import mos1_ids, mos1_junction
from physgrad.types import NotSolvedError, PhysgradError

EDGE_MODEL = MosfetModel("edge", "nmos", VTO=0.7, KP=2e-5, LAMBDA=0.0, GAMMA=0.0, PHI=0.6)

#: The ALD1106 NMOS array fitted to SPICE level 1 as a public reproduction of the paper's circuits
#: states it (Ma-Lab-Cal/pyclln, ``device_model/nmos_lvl1_ald1106.lib``): VTO 0.75 V, KP 62.5 uA/V^2,
#: LAMBDA 0.2 /V, GAMMA 1.09 V^0.5, PHI 0.95 V, with ``W = 138 um``, ``L = 7.8 um`` (beta = 1.1 mA/V^2).
#: The source/drain sheet resistances of that file (``rsh = 73 ohm/sq``, ``nrs = 1``, ``nrd = 0.3``:
#: 73 and 22 ohm in series) are not modelled here.
ALD1106_MODEL = MosfetModel("ald1106", "nmos", VTO=0.75, KP=6.249608378152027e-05, LAMBDA=0.19998491299329302,
                            GAMMA=1.09, PHI=0.9499477708465783)
ALD1106_W, ALD1106_L = 138e-6, 7.8e-6


def torus_edges(rows: int = 4, cols: int = 4) -> np.ndarray:
    """Edges of a ``rows x cols`` periodic square lattice (node ``r * cols + c``): 2 edges per node,
    so 32 edges on the 16 nodes of a 4 x 4 torus. Shape (E, 2)."""
    out = []
    for r in range(rows):
        for c in range(cols):
            k = r * cols + c
            out.append((k, r * cols + (c + 1) % cols))
            out.append((k, ((r + 1) % rows) * cols + c))
    return np.array(out, dtype=np.int64)


@dataclass(frozen=True)
class TwinNetwork:
    """A network of NMOS edges (drain, source = the edge's nodes; bulk at ground; gate voltages the
    parameters), with nodes held by sources.

    Attributes
    ----------
    n_nodes : int
    edges : (E, 2) int — node pairs
    inputs : tuple of int — nodes held at the data's input voltages (V)
    fixed : tuple of (int, float) — nodes held at constant voltages (V), ground among them
    outputs : tuple of int — output nodes (free in the free copy, clamped in the clamped one)
    differential : bool — the prediction is ``v[outputs[0]] - v[outputs[1]]`` (one value) instead
        of the output voltages: with gates referenced to ground every edge current rises with the
        voltage of its higher node and falls with its lower one, so each node voltage is a
        monotone (non-decreasing) function of the inputs and XOR needs a difference of two nodes
    gate : {"ground", "midpoint"} — what the gate capacitor's voltage ``V_G`` is referenced to:
        ground (the gate at ``V_G``), or the mean of the edge's two node voltages (the gate at
        ``V_G + (v_a + v_b)/2``, e.g. through a resistive divider): then the channel current is
        ``beta (V_G - V_T) dv`` while ``|dv| < 2 (V_G - V_T)`` and rises faster beyond (saturation),
        a function of the drop alone: a reciprocal nonlinear resistor with a co-content
    model : MosfetModel; W, L : m
    """

    n_nodes: int
    edges: np.ndarray
    inputs: tuple
    fixed: tuple
    outputs: tuple
    differential: bool = False
    gate: str = "ground"
    model: MosfetModel = EDGE_MODEL
    W: float = 1e-5
    L: float = 1e-6

    def __post_init__(self):
        if self.gate not in ("ground", "midpoint"):
            raise PhysgradError(f"gate must be 'ground' or 'midpoint', got {self.gate!r}")
        if self.differential and len(self.outputs) != 2:
            raise PhysgradError("a differential twin network has exactly two output nodes")
        held = list(self.inputs) + [k for k, _ in self.fixed]
        if len(set(held)) != len(held) or set(held) & set(self.outputs):
            raise PhysgradError("twin network: input, fixed and output nodes must be distinct")
        if any(not 0 <= k < self.n_nodes for k in held + list(self.outputs)):
            raise PhysgradError("twin network: a node index is out of range")

    @property
    def beta(self) -> float:
        """``KP W / L`` (A/V^2)."""
        return self.model.KP * self.W / self.L

    @property
    def ref(self) -> float:
        """Weight of each node voltage in the gate's reference (0 or 1/2)."""
        return 0.5 if self.gate == "midpoint" else 0.0

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    def predict(self, v: np.ndarray) -> np.ndarray:
        """Predictions (V) from node voltages ``v`` (B, n): shape (B, 1) if differential, else
        (B, n_outputs)."""
        o = v[:, list(self.outputs)]
        return o[:, :1] - o[:, 1:] if self.differential else o

    def clamp(self, v: np.ndarray, Y: np.ndarray, eta: float) -> np.ndarray:
        """Clamped output voltages (B, n_outputs): each prediction moved a fraction ``eta`` toward its
        target (a differential pair split evenly between its two nodes)."""
        o = v[:, list(self.outputs)]
        d = eta * (Y - self.predict(v))
        return o + (np.concatenate([d / 2, -d / 2], axis=1) if self.differential else d)

    def circuit(self, v_gate: np.ndarray, x: np.ndarray, clamp: Optional[np.ndarray] = None) -> Circuit:
        """The physgrad :class:`Circuit` of one copy for one example (nodes ``n<k>``; the node of
        ``fixed`` at 0 V is ground): the independent route the batched solver is checked against."""
        ground = [k for k, v in self.fixed if v == 0.0]
        name = (lambda k: "0" if ground and k == ground[0] else f"n{k}")
        els = [VoltageSource(f"vin{j}", name(k), "0", float(v)) for j, (k, v) in enumerate(zip(self.inputs, x))]
        els += [VoltageSource(f"vf{k}", name(k), "0", float(v)) for k, v in self.fixed if name(k) != "0"]
        if clamp is not None:
            els += [VoltageSource(f"vc{k}", name(k), "0", float(v)) for k, v in zip(self.outputs, clamp)]
        for e, (a, b) in enumerate(self.edges):
            if self.gate == "midpoint":  # g = V_G + v_a/2 + v_b/2 through two VCVS and the capacitor's source
                ref = "0"
                for tag, k in (("a", int(a)), ("b", int(b))):
                    if name(k) != "0":
                        els.append(VCVS(f"e{tag}{e}", f"h{tag}{e}", ref, name(k), "0", 0.5))
                        ref = f"h{tag}{e}"
                els.append(VoltageSource(f"vg{e}", f"g{e}", ref, float(v_gate[e])))
            else:
                els.append(VoltageSource(f"vg{e}", f"g{e}", "0", float(v_gate[e])))
            els += [Mosfet(f"m{e}", name(int(a)), f"g{e}", name(int(b)), "0", self.model, W=self.W, L=self.L)]
        return Circuit(tuple(els), "twin network copy")


@dataclass
class _Equilibria:
    v: np.ndarray  # (B, n) node voltages
    J: np.ndarray  # (B, n_free, n_free)
    dIg: np.ndarray  # (B, E): d(channel current)/d(V_G)
    free: np.ndarray  # indices of the unknown nodes
    iterations: int = 0


def _edge_terms(net: TwinNetwork, v: np.ndarray, v_gate: np.ndarray):
    """Currents leaving node a and node b into each edge (A, shape (B, E)) and the derivatives
    ``(dIa/dva, dIa/dvb, dIb/dva, dIb/dvb, dIds/dVG)`` (S)."""
    m = net.model
    a, b = net.edges[:, 0], net.edges[:, 1]
    va, vb = v[:, a], v[:, b]
    r = net.ref
    vgs, vds, vbs = v_gate[None, :] + r * (va + vb) - vb, va - vb, -vb
    ids, d_gs, d_ds, d_bs = mos1_ids(vgs, vds, vbs, m.VTO, net.beta, m.LAMBDA, m.GAMMA, m.PHI)
    IS = m.IS
    cbd, gbd = mos1_junction(-va, IS, m.vt, m.gmin)
    cbs, gbs = mos1_junction(-vb, IS, m.vt, m.gmin)
    Ia, Ib = ids - cbd, -ids - cbs
    da = r * d_gs + d_ds  # d ids / d va
    db = (r - 1) * d_gs - d_ds - d_bs  # d ids / d vb
    return Ia, Ib, (da + gbd, db, -da, -db + gbs), d_gs


def solve_batch(net: TwinNetwork, v_gate: np.ndarray, X: np.ndarray, clamp: Optional[np.ndarray] = None,
                v0: Optional[np.ndarray] = None, tol: float = 1e-13, max_iter: int = 100) -> _Equilibria:
    """Equilibria of one copy for every example: ``X`` (B, n_inputs) V; ``clamp`` (B, n_outputs) V
    or None (free copy); ``v0`` (B, n) a start. Newton with steps capped at 0.5 V per node;
    :class:`NotSolvedError` if a KCL residual stays above ``tol`` times the largest edge current."""
    B = X.shape[0]
    n = net.n_nodes
    held = np.zeros(n, bool)
    v = np.zeros((B, n)) if v0 is None else np.array(v0, float)
    held[list(net.inputs)] = True
    v[:, list(net.inputs)] = X
    for k, val in net.fixed:
        held[k] = True
        v[:, k] = val
    if clamp is not None:
        held[list(net.outputs)] = True
        v[:, list(net.outputs)] = clamp
    free = np.flatnonzero(~held)
    a, b = net.edges[:, 0], net.edges[:, 1]
    Pa = np.zeros((net.n_edges, n))
    Pa[np.arange(net.n_edges), a] = 1
    Pb = np.zeros((net.n_edges, n))
    Pb[np.arange(net.n_edges), b] = 1
    for it in range(1, max_iter + 1):
        Ia, Ib, (aa, ab, ba, bb), d_gs = _edge_terms(net, v, v_gate)
        R = Ia @ Pa + Ib @ Pb  # (B, n) current leaving each node
        J = (np.einsum("be,en,em->bnm", aa, Pa, Pa) + np.einsum("be,en,em->bnm", ab, Pa, Pb)
             + np.einsum("be,en,em->bnm", ba, Pb, Pa) + np.einsum("be,en,em->bnm", bb, Pb, Pb))
        Jf = J[:, free][:, :, free]
        Rf = R[:, free]
        scale = np.max(np.abs(Ia), axis=1, keepdims=True) + net.model.gmin
        dv = np.linalg.solve(Jf, -Rf[..., None])[..., 0]
        if it > 1 and (np.all(np.abs(Rf) <= tol * scale) or np.all(np.abs(dv) <= 1e-13)):
            return _Equilibria(v, Jf, d_gs, free, it)
        step = np.max(np.abs(dv), axis=1, keepdims=True)
        dv = dv * np.minimum(1.0, 0.5 / np.maximum(step, 1e-300))
        v[:, free] += dv
    raise NotSolvedError(f"twin network: Newton did not converge in {max_iter} iterations "
                         f"(largest KCL residual {float(np.max(np.abs(Rf))):.3g} A)")


def cost_and_gradient(net: TwinNetwork, v_gate: np.ndarray, X: np.ndarray, Y: np.ndarray, free_eq: _Equilibria):
    """``(C, dC/dV_G)``: the mean cost (V^2) and its exact gradient (V), by the adjoint of the free
    copy's equations (one transposed solve per example)."""
    v = free_eq.v
    out = list(net.outputs)
    err = net.predict(v) - Y  # (B, n_pred)
    C = 0.5 * float(np.mean(np.sum(err**2, axis=1)))
    dC_dv = np.concatenate([err, -err], axis=1) if net.differential else err  # (B, n_out)
    pos = {int(k): j for j, k in enumerate(free_eq.free)}
    rhs = np.zeros((v.shape[0], len(free_eq.free)))
    for j, o in enumerate(out):
        rhs[:, pos[o]] = dC_dv[:, j]
    mu = np.linalg.solve(np.transpose(free_eq.J, (0, 2, 1)), rhs[..., None])[..., 0]  # (B, n_free)
    mu_full = np.zeros_like(v)
    mu_full[:, free_eq.free] = mu
    a, b = net.edges[:, 0], net.edges[:, 1]
    # dR_a/dVG = d_gs, dR_b/dVG = -d_gs; dC/dVG = -mu^T dR/dVG
    g = -np.mean(free_eq.dIg * (mu_full[:, a] - mu_full[:, b]), axis=0)
    return C, g


@dataclass(frozen=True)
class TwinConfig:
    """Training of the twin network: ``eta`` (nudge, dimensionless, (0, 1]); ``rate`` (learning
    rate alpha, V per unit of ``u``: see the module docstring); ``tau_steps`` (capacitor leak time in
    steps; ``inf``: none); ``v_rest`` (V, where the leak pulls); ``steps``; gate-voltage clip (V);
    ``anneal_steps`` (``T``; ``inf``: none): step ``k``'s whole change (update and leak) is scaled by
    ``1 / (1 + k / T)``, a shrinking time step (as if the charging current were turned down), which
    keeps the fixed points and slows the drift once a state is learned."""

    eta: float = 0.1
    rate: float = 0.02
    tau_steps: float = np.inf
    v_rest: float = 0.0
    steps: int = 2000
    v_gate_min: float = 0.0
    v_gate_max: float = 5.0
    v_gate0: float = 2.5
    record_every: int = 10
    anneal_steps: float = np.inf

    def __post_init__(self):
        if not 0 < self.eta <= 1:
            raise PhysgradError(f"eta must lie in (0, 1], got {self.eta}")
        if not self.anneal_steps > 0:
            raise PhysgradError(f"anneal_steps must be > 0 (inf: no annealing), got {self.anneal_steps}")
        if not self.rate > 0 or not self.tau_steps > 0 or self.steps < 1 or self.v_gate_max <= self.v_gate_min:
            raise PhysgradError("rate and tau_steps must be > 0, steps >= 1, v_gate_max > v_gate_min")


@dataclass
class TwinHistory:
    """What a training run records every ``record_every`` steps: ``step``, ``cost`` (V^2), ``cosine``
    (between the local update and -grad), ``outputs`` (the predictions, (B, n_pred) V); and the
    final gate voltages."""

    step: list = field(default_factory=list)
    cost: list = field(default_factory=list)
    cosine: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    v_gate: Optional[np.ndarray] = None


def local_update(net: TwinNetwork, free_eq: _Equilibria, clamped_eq: _Equilibria, eta: float) -> np.ndarray:
    """``u_e = beta / (2 eta) < (dV^F_e)^2 - (dV^C_e)^2 >`` (V): the coupled-learning rule from the
    two copies' voltage drops (no gradient)."""
    a, b = net.edges[:, 0], net.edges[:, 1]
    dF = free_eq.v[:, a] - free_eq.v[:, b]
    dC = clamped_eq.v[:, a] - clamped_eq.v[:, b]
    return net.beta / (2 * eta) * np.mean(dF**2 - dC**2, axis=0)


def train(net: TwinNetwork, X: np.ndarray, Y: np.ndarray, cfg: TwinConfig, rule: str = "local",
          v_gate0: Optional[np.ndarray] = None) -> TwinHistory:
    """Train the gate voltages with ``rule`` ``"local"`` (the twin copies' coupled-learning rule) or
    ``"exact"`` (gradient descent on the adjoint gradient); both leak and clip alike. Both rules'
    updates are computed at every recorded step for the cosine (the gradient is never used by the
    local rule's update)."""
    if rule not in ("local", "exact"):
        raise PhysgradError(f"rule must be 'local' or 'exact', got {rule!r}")
    X, Y = np.asarray(X, float), np.asarray(Y, float).reshape(len(X), -1)
    if Y.shape[1] != (1 if net.differential else len(net.outputs)):
        raise PhysgradError(f"Y has {Y.shape[1]} columns; the network predicts "
                            f"{1 if net.differential else len(net.outputs)}")
    vg = np.full(net.n_edges, cfg.v_gate0) if v_gate0 is None else np.array(v_gate0, float)
    hist = TwinHistory()
    vF = vC = None
    for step in range(cfg.steps + 1):
        free = solve_batch(net, vg, X, v0=vF)
        vF = free.v
        record = step % cfg.record_every == 0 or step == cfg.steps
        need_local = rule == "local" or record
        need_grad = rule == "exact" or record
        if need_local:
            clamp = net.clamp(free.v, Y, cfg.eta)
            clamped = solve_batch(net, vg, X, clamp=clamp, v0=vC if vC is not None else vF)
            vC = clamped.v
            u_local = local_update(net, free, clamped, cfg.eta)
        if need_grad:
            C, g = cost_and_gradient(net, vg, X, Y, free)
        if record:
            nl, ng = np.linalg.norm(u_local), np.linalg.norm(g)
            cos = float(-(u_local @ g) / (nl * ng)) if nl > 0 and ng > 0 else float("nan")
            hist.step.append(step), hist.cost.append(C), hist.cosine.append(cos)
            hist.outputs.append(net.predict(free.v).copy())
        if step == cfg.steps:
            break
        u = u_local if rule == "local" else -g
        leak = 0.0 if np.isinf(cfg.tau_steps) else (vg - cfg.v_rest) / cfg.tau_steps
        scale = 1.0 if np.isinf(cfg.anneal_steps) else 1.0 / (1.0 + step / cfg.anneal_steps)
        vg = np.clip(vg + scale * (cfg.rate * u - leak), cfg.v_gate_min, cfg.v_gate_max)
    hist.v_gate = vg
    return hist


def hardware_rate(net: TwinNetwork, gamma: float, eta: float, n_examples: int) -> float:
    r"""The ``rate`` of :class:`TwinConfig` that equals the hardware's per-example rule.

    The circuit of Dillavou et al. charges each gate by ``dV_G = gamma ((dV^F)^2 - (dV^C)^2)`` per
    presented example (``gamma`` in 1/V). Summed over one pass through ``n`` examples at fixed gates
    this is ``n gamma <(dV^F)^2 - (dV^C)^2>``, i.e. :func:`train`'s step ``rate * u`` with

    .. math:: \text{rate} = \frac{2\,n\,\gamma\,\eta}{\beta}\quad(\text{V per unit of } u).

    (The hardware updates after each example, so the two agree to first order in ``gamma``.)
    """
    if not gamma > 0 or not 0 < eta <= 1 or n_examples < 1:
        raise PhysgradError("hardware_rate needs gamma > 0, 0 < eta <= 1 and n_examples >= 1")
    return 2.0 * n_examples * gamma * eta / net.beta


def error_modes(x: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Coefficients (V) of the error ``err(x)`` on the orthonormal polynomials of degree 0, 1, 2 over
    the points ``x`` (mean, slope, curvature: the modes whose order of decay the paper reports)."""
    x = np.asarray(x, float)
    P = np.vander(x - x.mean(), 3, increasing=True)
    Q, _ = np.linalg.qr(P)
    return Q.T @ np.asarray(err, float)


__all__ = ["TwinNetwork", "TwinConfig", "TwinHistory", "torus_edges", "solve_batch", "cost_and_gradient",
           "local_update", "train", "error_modes", "hardware_rate", "EDGE_MODEL", "ALD1106_MODEL", "ALD1106_W", "ALD1106_L"]

"""A circuit's steady state: voltages, every element's current, co-content and a KKT certificate."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from physgrad.circuit.elements import GROUND, Circuit, node_name
from physgrad.types import Status
from physgrad.circuit.reduction import Problem
from physgrad.circuit.diode import shockley_co_content, shockley_current, shockley_slope
from physgrad.circuit.sparse import solve as sparse_solve
from physgrad.circuit.power import PowerBalance, element_powers, tellegen

# Certificate tolerances, relative to the problem's own scales (see `certify`): each free node's KCL
# residual against that node's own current scale (Problem.current_scale), the diode conditions
# against the circuit's current scale i_scale (A) and voltage scale v_scale (V). 1e-9 leaves three
# orders of magnitude above the ~1e-12 round-off of the exact (active-set, linear, Newton) routes
# and still catches any answer that is wrong in the 9th digit. The coordinate solver stops at
# 1e-12 V steps, well inside.
CERT_RTOL = 1e-9
# Absolute floor of a node's KCL tolerance (A), for nodes whose every incident current is ~0.
CERT_ATOL = 1e-30


@dataclass(frozen=True)
class KKTCertificate:
    """Optimality certificate of an equilibrium (all in absolute units).

    Attributes
    ----------
    kcl : float
        Largest Kirchhoff current-law residual over free (super)nodes (A) — stationarity.
        Each node's residual is judged against ``CERT_RTOL`` times that node's own current scale
        (:meth:`physgrad.circuit.reduction.Problem.current_scale`) plus ``CERT_ATOL``.
    primal : float
        Largest diode constraint violation ``max(v_a - v_c - vth, 0)`` (V).
    dual : float
        Largest negative diode current ``max(-i, 0)`` (A).
    complementarity : float
        Largest ``|i (vth - v_a + v_c)|`` (W).
    tol_current, tol_voltage : float
        The tolerances used (A, V): ``tol_current`` for the diode current signs and
        complementarity (the circuit's current scale times ``CERT_RTOL``).
    kcl_ratio : float
        Largest ``|residual| / tolerance`` over the free (super)nodes (dimensionless, <= 1 to pass).
    kcl_node : str
        A node of the (super)node where ``kcl_ratio`` is reached ("" when there is none).
    kcl_tol : float
        That node's KCL tolerance (A).
    passed : bool
    """

    kcl: float
    primal: float
    dual: float
    complementarity: float
    tol_current: float
    tol_voltage: float
    passed: bool
    kcl_ratio: float = 0.0
    kcl_node: str = ""
    kcl_tol: float = 0.0

    def describe(self) -> str:
        where = (f" (worst node {self.kcl_node}: {self.kcl_ratio:.2g} of its tolerance {self.kcl_tol:.1e} A)"
                 if self.kcl_node else "")
        return (
            f"KCL {self.kcl:.2e} A{where}, diode feasibility {self.primal:.2e} V, diode current sign "
            f"{self.dual:.2e} A, complementarity {self.complementarity:.2e} W "
            f"(tolerances {self.tol_current:.1e} A, {self.tol_voltage:.1e} V): "
            + ("passed" if self.passed else "FAILED")
        )


def shockley_terms(problem: Problem, u: np.ndarray):
    """Voltages (V), currents (A) of the Shockley diodes at ``u``."""
    arr = problem.circuit.arrays
    vd = problem.S @ u + problem.e
    return vd, shockley_current(vd, arr.shk_IS, arr.shk_N, arr.shk_vt, arr.shk_gmin)


def certify(problem: Problem, u: np.ndarray, lam: np.ndarray) -> KKTCertificate:
    """KKT certificate of ``(u, lam)`` for ``problem`` (lam: currents of the rows of ``D``).

    KCL per free (super)node ``j``: ``|r_j| <= CERT_RTOL * scale_j + CERT_ATOL`` with ``scale_j`` the
    node's own current scale (A); diode feasibility ``<= CERT_RTOL * v_scale`` (V); diode current
    signs ``<= CERT_RTOL * i_scale`` (A); complementarity ``<= CERT_RTOL * i_scale * v_scale`` (W).
    """
    arr = problem.circuit.arrays
    vd, i_shk = shockley_terms(problem, u)
    slope = shockley_slope(vd, arr.shk_IS, arr.shk_N, arr.shk_vt, arr.shk_gmin)
    r = problem.H @ u - problem.f + problem.D.T @ lam + problem.S.T @ i_shk
    slack = problem.d - problem.D @ u
    v = problem.voltages(u)
    v_scale = max(1.0, float(np.max(np.abs(v), initial=0.0)), float(np.max(np.abs(problem.d), initial=0.0)))
    h = float(np.max(np.abs(problem.H.diagonal()), initial=0.0)) if problem.n_u else 0.0
    i_scale = max(
        float(np.max(np.abs(problem.f), initial=0.0)),
        h * v_scale,
        float(np.max(np.abs(lam), initial=0.0)),
        float(np.max(np.abs(i_shk), initial=0.0)),
        1e-30,
    )
    tol_i, tol_v = CERT_RTOL * i_scale, CERT_RTOL * v_scale
    kcl = float(np.max(np.abs(r), initial=0.0))
    node_tol = CERT_RTOL * problem.current_scale(u, i_shk, slope, lam) + CERT_ATOL
    with np.errstate(invalid="ignore", over="ignore"):
        ratios = np.abs(r) / node_tol
    kcl_ratio, kcl_node, kcl_tol = 0.0, "", 0.0
    if ratios.size:
        j = int(np.argmax(np.where(np.isfinite(ratios), ratios, np.inf)))
        kcl_ratio, kcl_tol = float(ratios[j]), float(node_tol[j])
        members = np.flatnonzero(problem.columns[:-1] == j)
        kcl_node = problem.circuit.nodes[int(members[0])] if members.size else ""
    primal = max(0.0, float(np.max(-slack, initial=0.0)))
    dual = max(0.0, float(np.max(-lam, initial=0.0)))
    comp = float(np.max(np.abs(lam * slack), initial=0.0))
    ok = bool(kcl_ratio <= 1.0 and primal <= tol_v and dual <= tol_i and comp <= tol_i * tol_v / CERT_RTOL)
    return KKTCertificate(kcl, primal, dual, comp, tol_i, tol_v, ok and bool(np.all(np.isfinite(u))),
                          kcl_ratio, kcl_node, kcl_tol)


@dataclass(frozen=True, eq=False)
class CircuitSolution:
    """Steady state of a circuit.

    Attributes
    ----------
    circuit : Circuit
    voltages : (n_nodes,) V, in the order of ``circuit.nodes``
    currents : (n_elements,) A, in the order of ``circuit.elements``; each flows from the element's
        first node through it to its second node
    co_content : float, W — total co-content ``sum_R g dv^2/2 + sum_D int I dv - i_inj . v``
    energy : float, W — the minimized objective (co-content plus the nudge ``beta C``)
    power : float, W — power dissipated in resistors and diodes
    status : {"converged", "max_iter", "infeasible", "solver_error"}
    solver : str
    n_iter : int
    certificate : KKTCertificate or None (None when infeasible)
    message : str
    info : mapping (u, diode multipliers, timings, backend versions)
    """

    circuit: Circuit
    voltages: np.ndarray
    currents: np.ndarray
    co_content: float
    energy: float
    power: float
    status: Status
    solver: str
    n_iter: int
    certificate: Optional[KKTCertificate]
    message: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        return self.status == "converged"

    def voltage(self, node) -> float:
        """Voltage of ``node`` (V); 0 for ground; clear error for an unknown node."""
        if node_name(node) == GROUND:
            return 0.0
        return float(self.voltages[self.circuit.index_of_node(node)])

    def current(self, name) -> float:
        """Current of element ``name`` (A), first node -> second node."""
        el = self.circuit.element(name)
        return float(self.currents[self.circuit.element_index[el.name]])

    def voltage_dict(self) -> dict:
        return dict(zip(self.circuit.nodes, np.asarray(self.voltages, dtype=float).tolist()))

    def current_dict(self) -> dict:
        return dict(zip(self.circuit.element_names, np.asarray(self.currents, dtype=float).tolist()))

    @property
    def element_powers(self) -> np.ndarray:
        """(n_elements,) W absorbed by each element, ``(v_first - v_second) * current`` (sources that
        deliver power are negative); see :mod:`physgrad.circuit.power`."""
        return element_powers(self.circuit, self.voltages, self.currents)

    def power_dict(self, powers=None) -> dict:
        """Element name -> W absorbed (``powers``: :attr:`element_powers`, computed when not given)."""
        powers = self.element_powers if powers is None else powers
        return dict(zip(self.circuit.element_names, np.asarray(powers, dtype=float).tolist()))

    @property
    def power_balance(self) -> PowerBalance:
        """Tellegen's balance: power dissipated by resistors and diodes, delivered by the sources, and
        their mismatch (0 up to rounding for an un-nudged solution)."""
        return tellegen(self.circuit, self.element_powers)

    def to_dict(self) -> dict:
        """The JSON object of ``physgrad solve --json``: strict JSON (no NaN or Infinity).

        A value that is not a finite number (no steady state: an infeasible circuit or a solver
        error; or a float64 overflow) is ``null``; ``"nonfinite"`` then maps each such field
        (``"voltages.x"``, ``"co_content"``, ...) to what it was (``"NaN"``, ``"Infinity"``,
        ``"-Infinity"``) and ``"null_reason"`` says why (the status and message). Both keys are
        absent when every value is finite.
        """
        nonfinite: dict = {}

        def num(x, key):
            x = float(x)
            if math.isfinite(x):
                return x
            nonfinite[key] = "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
            return None

        def nums(values: dict, prefix: str) -> dict:
            """``values`` with every non-finite number replaced (checked at once: 10^5 entries)."""
            if np.isfinite(np.fromiter(values.values(), dtype=float, count=len(values))).all():
                return values
            return {n: num(v, f"{prefix}.{n}") for n, v in values.items()}

        cert = self.certificate
        with np.errstate(invalid="ignore", over="ignore"):
            powers = self.element_powers  # once: the per-element powers and Tellegen's balance share it
            bal = tellegen(self.circuit, powers)
        out = {
            "status": self.status,
            "solver": self.solver,
            "voltages": nums(self.voltage_dict(), "voltages"),
            "currents": nums(self.current_dict(), "currents"),
            "co_content": num(self.co_content, "co_content"),
            "power": num(self.power, "power"),
            "element_power": nums(self.power_dict(powers), "element_power"),
            "power_balance": {k: num(getattr(bal, k), f"power_balance.{k}")
                              for k in ("dissipated", "delivered", "residual", "relative")},
            "iterations": int(self.n_iter),
            "message": self.message,
            "kkt": None if cert is None else {
                "kcl_A": num(cert.kcl, "kkt.kcl_A"), "diode_feasibility_V": num(cert.primal, "kkt.diode_feasibility_V"),
                "diode_current_sign_A": num(cert.dual, "kkt.diode_current_sign_A"),
                "complementarity_W": num(cert.complementarity, "kkt.complementarity_W"), "passed": cert.passed,
            },
        }
        if nonfinite:
            out["nonfinite"] = nonfinite
            why = ("no steady state (infeasible)" if self.status == "infeasible" else
                   f"status {self.status}" if self.status != "converged" else "a float64 overflow")
            out["null_reason"] = (f"{len(nonfinite)} value(s) are not finite numbers and are written as null: {why}"
                                  + (f": {self.message}" if self.message else ""))
        return out

    def to_json(self, indent: Optional[int] = 2) -> str:
        """:meth:`to_dict` as strict JSON text (:func:`json_text`: ``json.dumps(..., allow_nan=False)``'s text)."""
        return json_text(self.to_dict(), indent=indent)


def json_text(obj, indent: Optional[int] = 2) -> str:
    """The text of ``json.dumps(obj, indent=indent, allow_nan=False)``, written faster.

    With an indent, :func:`json.dumps` runs its pure-Python encoder, ~0.2 s for a solution of
    10^5 elements. Here a mapping of strings to finite floats (or None) -- a solution's voltages,
    currents and powers -- is joined directly from ``float.__repr__`` and the C key escaper (the
    same functions ``json`` uses, hence the same text); everything else goes through
    :func:`json.dumps`. ``ValueError`` for NaN or infinity, as :func:`json.dumps`.
    """
    if indent is None:
        return json.dumps(obj, allow_nan=False)
    return _json_indented(obj, indent, 0)


def _json_indented(obj, indent: int, level: int) -> str:
    if type(obj) is dict and obj and set(map(type, obj)) == {str}:
        pad, end = " " * (indent * (level + 1)), " " * (indent * level)
        kinds = set(map(type, obj.values()))
        if kinds <= {float, type(None)}:
            values = np.fromiter((math.nan if v is None else v for v in obj.values()), dtype=float, count=len(obj))
            if not np.isfinite(values[~np.isnan(values)] if type(None) in kinds else values).all():
                raise ValueError("Out of range float values are not JSON compliant")
            enc, rep = _encode_key, float.__repr__
            return "{\n" + ",\n".join([f"{pad}{enc(k)}: {'null' if v is None else rep(v)}" for k, v in obj.items()]) \
                + "\n" + end + "}"
        items = [f"{pad}{_encode_key(k)}: {_json_indented(v, indent, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + end + "}"
    return json.dumps(obj, indent=indent, allow_nan=False).replace("\n", "\n" + " " * (indent * level))


_encode_key = json.encoder.encode_basestring_ascii  # what json.dumps(ensure_ascii=True) writes for a str


def ideal_diode_currents(problem: Problem, lam: np.ndarray) -> np.ndarray:
    """Current (A) of every ideal diode of the circuit from the multipliers of ``problem.D``'s rows.

    Diodes the sources hold off carry 0; parallel diodes with equal thresholds share equally.
    """
    out = np.zeros(len(problem.circuit.arrays.vth))
    out[problem.dio_rows] = lam
    for k, group in problem.dio_shares.items():
        out[list(group)] = out[k] / len(group)
    return out


def _vsource_currents(problem: Problem, q: np.ndarray, clamp_nodes: np.ndarray):
    """Currents of voltage sources (and output clamps) from KCL: ``q + B i = 0`` on the source forest."""
    arr = problem.circuit.arrays
    a = np.concatenate([arr.vs_a, clamp_nodes])
    b = np.concatenate([arr.vs_b, -np.ones(len(clamp_nodes), dtype=np.int64)])
    if a.size == 0:
        return np.zeros(0)
    B = arr.incidence(a, b).tocsc()
    # The forest makes B of full column rank, so B'B is positive definite.
    return sparse_solve(B.T @ B, -(B.T @ q))


def assemble(problem: Problem, u: np.ndarray, lam: np.ndarray, **kw) -> CircuitSolution:
    """Build the :class:`CircuitSolution` from reduced variables ``u`` and diode multipliers ``lam``
    (keywords: ``status, solver, n_iter, message, info``). Overflows to ``inf`` are reported in the
    status (``solver_error``), never as warnings."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _assemble(problem, u, lam, **kw)


def _assemble(
    problem: Problem, u: np.ndarray, lam: np.ndarray, *, status: Status, solver: str, n_iter: int,
    message: str = "", info: Optional[dict] = None,
) -> CircuitSolution:
    """Build the :class:`CircuitSolution` from reduced variables ``u`` and diode multipliers ``lam``."""
    circuit = problem.circuit
    arr = circuit.arrays
    v = problem.voltages(u)
    vg = np.concatenate([v, [0.0]])  # index -1 = ground
    currents = np.zeros(len(circuit.elements))
    g = problem.g
    dv_res = vg[arr.res_a] - vg[arr.res_b]
    i_res = g * dv_res
    lam_full = ideal_diode_currents(problem, lam)
    vd, i_shk = shockley_terms(problem, u)
    currents[arr.res_pos] = i_res
    currents[arr.dio_pos] = lam_full
    currents[arr.shk_pos] = i_shk
    currents[arr.cs_pos] = arr.cs_value
    # Currents leaving each node through every element but the voltage sources and clamps.
    q = arr.A_res @ i_res + arr.A_dio @ lam_full + arr.A_shk @ i_shk + arr.A_cs @ arr.cs_value
    nudge = problem.nudge
    if nudge.beta != 0.0:
        np.add.at(q, problem.outputs, nudge.beta * (v[problem.outputs] - problem.y))
    clamp_nodes = problem.outputs if nudge.clamp is not None else np.zeros(0, np.int64)
    i_vs = _vsource_currents(problem, q, clamp_nodes)
    currents[arr.vs_pos] = i_vs[: len(arr.vs_pos)]
    j_shk = shockley_co_content(vd, arr.shk_IS, arr.shk_N, arr.shk_vt, arr.shk_gmin)
    co = 0.5 * float(i_res @ dv_res) + float(np.sum(j_shk)) - float(arr.injection() @ v)
    energy = co
    if nudge.beta != 0.0:
        energy += 0.5 * nudge.beta * float(np.sum((v[problem.outputs] - problem.y) ** 2))
    power = float(i_res @ dv_res) + float(lam_full @ arr.vth) + float(i_shk @ vd)
    info = dict(info or {})
    info.update(u=u, diode_multipliers=lam)
    if clamp_nodes.size:
        info["clamp_currents"] = i_vs[len(arr.vs_pos):]
    with np.errstate(over="ignore", invalid="ignore"):
        cert = certify(problem, u, lam)
    finite = bool(np.all(np.isfinite(v)) and np.all(np.isfinite(currents)) and np.isfinite(co) and np.isfinite(power))
    status, message = demote_unsound(circuit, status, message, currents, finite, cert, vd)
    return CircuitSolution(circuit, v, currents, co, energy, power, status, solver, n_iter, cert, message, info)


def demote_unsound(circuit: Circuit, status: Status, message: str, currents: np.ndarray, finite: bool,
                   cert: KKTCertificate, vd: np.ndarray) -> tuple:
    """``(status, message)``: a ``converged`` answer becomes ``solver_error`` when its values overflow
    float64, its KKT certificate fails, or a Shockley diode sits in or near reverse breakdown (at
    ``vd`` (V) below its model's ``breakdown_limit``), with the reason appended to the message."""
    arr = circuit.arrays
    if status == "converged" and not finite:
        status = "solver_error"
        bad = [el.name for el, i in zip(circuit.elements, currents) if not np.isfinite(i)][:5]
        message = (message + "; " if message else "") + (
            "values overflow float64" + (f" (currents of {', '.join(bad)})" if bad else "")
            + ": the circuit's voltages, currents or power exceed ~1.8e308")
    if status == "converged" and not cert.passed:
        status = "solver_error"
        message = (message + "; " if message else "") + "KKT certificate failed: " + cert.describe()
    broken = [(circuit.elements[p].name, float(v), circuit.elements[p].model)
              for p, v in zip(arr.shk_pos, vd) if v < circuit.elements[p].model.breakdown_limit]
    if status == "converged" and broken:
        status = "solver_error"
        name, v, model = broken[0]
        message = (f"diode {name} sits at {v:.6g} V, in or near reverse breakdown (model {model.name}: BV = "
                   f"{model.bv:g} V), which physgrad does not model"
                   + (f" (and {len(broken) - 1} more diodes)" if len(broken) > 1 else ""))
    return status, message


def infeasible_solution(circuit: Circuit, solver: str, message: str, info=None,
                        status: Status = "infeasible") -> CircuitSolution:
    """A solution without voltages (NaN): infeasible circuit or a solver error."""
    n = len(circuit.nodes)
    return CircuitSolution(circuit, np.full(n, np.nan), np.full(len(circuit.elements), np.nan), np.nan, np.nan,
                           np.nan, status, solver, 0, None, message, dict(info or {}))

"""Verification at scale: many random circuits (linear, ideal and Shockley diodes; 5 to 1,000 nodes
in the quick suite, plus 10,000 in the full one), each solved for a batch of inputs.

Checks per circuit (family ``scale``):

- ``batched_vs_one_by_one``: the batched minimizer (one factorization shared by the batch and the
  phases, :class:`physgrad.circuit.batch.BatchSolver`) against each sample solved alone by the
  circuit core's :func:`physgrad.circuit.solve.solve` (its own problem and factorization; Newton for
  Shockley diodes), free and beta-nudged phases and a clamped phase, max |dV| <= ``solver_tol``;
- ``qp_agreement``: ideal-diode circuits up to 300 nodes against the independent cvxpy/OSQP route;
- ``kkt_certificates``: every sample's certificate passes;
- ``warm_vs_cold``: the same equilibria with and without warm starts (<= 1e-12 V);
- ``adjoint_vs_autograd`` (up to 100 nodes): the sparse adjoint exact gradient against autograd
  through the dense KKT system (relative 1e-10), and ``adjoint_vs_fd``: against central finite
  differences of the cost along one random direction (relative ``fd_tol``; skipped at a kink);
  Shockley circuits (up to 100 nodes): the exact gradient (autograd through one Newton step) against
  finite differences.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from physgrad.circuit.elements import CurrentSource, IdealDiode, VoltageSource
from physgrad.circuit.solve import solve
from physgrad.energies.co_content import CoContentEnergy
from physgrad.learning import ExactGradient
from physgrad.minimizers.co_content import CoContentMinimizer
from physgrad.types import FREE, InfeasibleError, NotSolvedError, Nudge, PhysgradError
from verification.circuits import random_circuit, training_graph

WARM_TOL = 1e-12  # V
AUTOGRAD_TOL = 1e-10  # relative
AUTOGRAD_MAX_NODES = 100  # the dense autograd routes (checks) up to this size


@dataclass(frozen=True, eq=False)
class ScaleCase:
    name: str
    kind: str  # linear | ideal | shockley
    circuit: Any
    inputs: tuple
    outputs: tuple
    X: np.ndarray
    Y: np.ndarray


def _linear(circuit):
    return circuit.replace_elements([e for e in circuit.elements if not isinstance(e, IdealDiode)])


def make_case(kind: str, n: int, seed: int, batch: int = 4) -> ScaleCase:
    if kind == "shockley":
        batch = 2
    """One seeded random circuit of ``n`` nodes: a grid-like training graph (``n >= 20``, or Shockley),
    else :func:`random_circuit` (thresholds, a floating source, current sources, one a current input)."""
    rng = np.random.default_rng(seed)
    if kind == "shockley" or n >= 20:
        circuit, inputs, outputs = training_graph(n, seed, n_inputs=3, n_outputs=2, shockley=kind == "shockley")
        if kind == "linear":
            circuit = _linear(circuit)
        X = rng.uniform(-1, 1, (batch, len(inputs)))
    else:
        for k in range(50):  # a feasible draw (diodes between sources can be forced forward)
            circuit = random_circuit(n, 1000 * seed + k, n_vsources=2, n_isources=1)
            if kind == "linear":
                circuit = _linear(circuit)
            names = [e.name for e in circuit.elements if isinstance(e, (VoltageSource, CurrentSource)) and e.name != "vf"]
            inputs = tuple(names[:1] + [s for s in names if s.startswith("i")][:1])
            touched = {nd for e in circuit.elements if isinstance(e, VoltageSource) for nd in e.nodes}
            outputs = tuple([nd for nd in circuit.nodes if nd not in touched][:2])
            base = np.array([circuit.element(s).value for s in inputs])
            X = base[None, :] * rng.uniform(0.8, 1.2, (batch, len(inputs)))
            try:
                energy = CoContentEnergy(circuit, inputs, outputs)
                ok = CoContentMinimizer().minimize(energy, energy.theta0(), X).converged
            except (PhysgradError, NotSolvedError):
                ok = False
            if ok:
                break
    Y = rng.uniform(-0.3, 0.3, (batch, len(outputs)))
    return ScaleCase(f"scale-{kind}-{n}", kind, circuit, tuple(inputs), tuple(outputs), X, Y)


def scale_cases(quick: bool = True) -> list:
    """50 circuits for the quick suite (16 linear, 22 ideal-diode, 12 Shockley; 5 to 1,000 nodes);
    the full suite adds a 10,000-node ideal-diode graph."""
    sizes = {"linear": np.geomspace(5, 1000, 16), "ideal": np.geomspace(5, 1000, 22),
             "shockley": np.geomspace(5, 1000, 12)}
    cases = []
    for kind, ns in sizes.items():
        for j, n in enumerate(ns):
            cases.append(make_case(kind, int(round(n)), seed=100 * j + {"linear": 1, "ideal": 2, "shockley": 3}[kind]))
    if not quick:
        cases.append(make_case("ideal", 10_000, seed=7, batch=8))
    return cases


def _row(case, check, method="", value=np.nan, error=np.nan, tol=np.nan, status="info", detail="", param=np.nan,
         param_name=""):
    return dict(case=case.name, family="scale", check=check, method=method, param_name=param_name,
                param=float(param), value=float(value), reference=0.0 if np.isfinite(error) else np.nan,
                error=float(error), tol=float(tol), status=status, detail=detail)


def run_scale_case(case: ScaleCase, cfg) -> list:
    rows = []
    energy = CoContentEnergy(case.circuit, case.inputs, case.outputs)
    mini = CoContentMinimizer()
    theta = energy.theta0()
    n = len(case.circuit.nodes)
    beta = 1e-3 * float(np.median(theta))
    free = mini.minimize(energy, theta, case.X)
    phases = {"free": (FREE, free)}
    o = np.asarray(energy.outputs(free.state))
    for label, nudge in (("beta", Nudge(beta, target=case.Y)), ("clamp", Nudge(clamp=o + 0.05 * (case.Y - o)))):
        if case.kind == "shockley" and label == "clamp":
            continue
        phases[label] = (nudge, mini.minimize(energy, theta, case.X, nudge=nudge, s0=free.state))
    # batched vs one by one (the circuit core, each sample alone); an infeasible sample must be
    # infeasible on both routes
    worst, detail, ok = 0.0, [], True
    for label, (nudge, eq) in phases.items():
        certs = eq.info.get("certificates", ())
        for b, x in enumerate(case.X):
            nb = nudge if nudge.is_free else (Nudge(nudge.beta, target=nudge.target[b]) if nudge.clamp is None
                                              else Nudge(clamp=nudge.clamp[b]))
            solved = bool(np.all(np.isfinite(eq.state[b]))) and certs[b] is not None and certs[b].passed
            try:
                sol = solve(case.circuit.with_sources(dict(zip(case.inputs, x))), nudge=nb, outputs=case.outputs)
                worst = max(worst, float(np.max(np.abs(sol.voltages - eq.state[b]))))
                ok &= solved
            except (InfeasibleError, NotSolvedError) as err:
                ok &= not solved
                detail.append(f"{label}[{b}] {type(err).__name__} on both routes" if not solved else
                              f"{label}[{b}]: one-sample route {type(err).__name__}")
    rows.append(_row(case, "batched_vs_one_by_one", "co-content/auto", worst, worst, cfg.solver_tol,
                     "pass" if ok and worst <= cfg.solver_tol else "fail",
                     f"{n} nodes, {len(case.X)} samples, phases {', '.join(phases)}" + (f"; {detail}" if detail else "")))
    # certificates
    certs = [c for _, eq in phases.values() for c in eq.info.get("certificates", ()) if c is not None]
    bad = sum(not c.passed for c in certs)
    worst_c = max((c.kcl / c.tol_current for c in certs if c.tol_current > 0), default=0.0)
    rows.append(_row(case, "kkt_certificates", "co-content/auto", len(certs), worst_c, 1.0,
                     "pass" if bad == 0 and certs else "fail", f"{len(certs)} certificates, {bad} failed"))
    if case.kind != "shockley":
        # warm vs cold
        cold_e = CoContentEnergy(case.circuit, case.inputs, case.outputs)
        cold = CoContentMinimizer(warm=False)
        d = 0.0
        for label, (nudge, eq) in phases.items():
            ref = cold.minimize(cold_e, theta, case.X, nudge=nudge)
            d = max(d, float(np.max(np.abs(ref.state - eq.state))))
        rows.append(_row(case, "warm_vs_cold", "co-content/auto", d, d, WARM_TOL, "pass" if d <= WARM_TOL else "fail",
                         "free, nudged and clamped phases: warm-started vs from no conducting diode"))
        if case.kind == "ideal" and n <= 300:
            d = 0.0
            for b, x in enumerate(case.X):
                sol = solve(case.circuit.with_sources(dict(zip(case.inputs, x))), "qp", outputs=case.outputs)
                d = max(d, float(np.max(np.abs(sol.voltages - free.state[b]))))
            rows.append(_row(case, "qp_agreement", "qp", d, d, cfg.solver_tol, "pass" if d <= cfg.solver_tol else "fail",
                             "free phase vs cvxpy/OSQP + active-set polish, per sample"))
    # gradients
    route = "adjoint" if case.kind != "shockley" else "autograd"
    if case.kind == "shockley" and n > AUTOGRAD_MAX_NODES:
        return rows
    res = ExactGradient(route=route).compute(energy, theta, case.X, case.Y, mini, free)
    if case.kind != "shockley" and n <= AUTOGRAD_MAX_NODES:
        ref = ExactGradient(route="autograd").compute(energy, theta, case.X, case.Y, mini, free)
        err = float(np.max(np.abs(res.grad - ref.grad)) / max(np.max(np.abs(ref.grad)), 1e-300))
        rows.append(_row(case, "adjoint_vs_autograd", "exact", err, err, AUTOGRAD_TOL,
                         "pass" if err <= AUTOGRAD_TOL else "fail", "sparse adjoint vs autograd (dense KKT)"))
    if case.kind == "shockley" and n > AUTOGRAD_MAX_NODES:
        return rows  # the Shockley exact gradient is dense (autograd through one Newton step)
    rng = np.random.default_rng(cfg.seed)
    direction = rng.standard_normal(theta.size)
    direction /= np.linalg.norm(direction)
    h = cfg.fd_rel_step * float(np.mean(theta))

    def cost(t):
        s = mini.minimize(energy, t, case.X).state
        return float(0.5 * np.mean(np.sum((np.asarray(energy.outputs(s)) - case.Y) ** 2, axis=1)))

    try:
        d1 = (cost(theta + h * direction) - cost(theta - h * direction)) / (2 * h)
        d2 = (cost(theta + 0.5 * h * direction) - cost(theta - 0.5 * h * direction)) / h
        fd = (4 * d2 - d1) / 3
        err = abs(fd - float(res.grad @ direction)) / max(float(np.linalg.norm(res.grad)), 1e-300)
        status = "pass" if err <= cfg.fd_tol else ("skip" if res.near_kink else "fail")
        rows.append(_row(case, "adjoint_vs_fd" if route == "adjoint" else "exact_vs_fd", "exact", err, err, cfg.fd_tol,
                         status, f"route {route}; h={h:.3g}" + ("; near a kink" if res.near_kink else "")))
    except NotSolvedError as err:
        rows.append(_row(case, "adjoint_vs_fd", "exact", status="skip", detail=f"perturbed solve: {err}"[:200]))
    return rows

"""Verification checks: each takes a :class:`~verification.cases.Case` and a :class:`VerifyConfig`
and returns tidy rows (dicts); no files, no printing. One row = case x check x method x parameter.

Row columns: ``case, family, check, method, param_name, param, value, reference, error, tol,
status`` (``pass``/``fail``/``skip``/``info``) and ``detail``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from physgrad.devices import Device, ReadNoise, ReadThrough, device_rng
from physgrad.types import FREE, Nudge, PhysgradError
from physgrad.pytree import tree_flatten, tree_map, tree_norm, tree_vdot
from physgrad.learning import (CoupledLearning, EquilibriumPropagation, ExactGradient, TruncatedBackprop,
                               contrastive_learning, coupled_limit)
from physgrad.learning.cost import mean_cost
from physgrad.learning.backprop import recurrent_backprop_path
from physgrad.learning.contour import ContourEP, HolomorphicEP, switching_radius
from physgrad.learning.exact import box_active_set, find_active_set
from physgrad.learning.surrogate import surrogate_from_phases

EPS = np.finfo(float).eps
EP_CODES = {"positive": "pep", "negative": "nep", "centered": "cep"}
CPL_CODES = {"positive": "pcpl", "negative": "ncpl", "centered": "ccpl"}
EXPECTED_ORDER = {"pep": 1.0, "nep": 1.0, "cep": 2.0, "pcpl": 1.0, "ncpl": 1.0, "ep4": 4.0, "fp": 2.0, "hep": 3.0}
HEP_SLOPE_POINTS = 3  # the hep bias slope is fitted with N = 3 nudges (bias O(b^3)): larger N sits at round-off
HEP_ROUTE_POINTS, HEP_ROUTE_BETA, HEP_ROUTE_TOL = 6, 1e-2, 1e-9  # hep (N = 6, b = 1e-2 x scale) as an exact route
READ_BETAS = tuple(float(10 ** (k / 4)) for k in range(-15, -1))  # 1.8e-4 .. 0.56, four per decade
READ_VARIANCE_ORDER = {"phase": -2.0, "example": 0.0}  # d log Var / d log beta
BEST_BETA_ORDER = {"pep": 0.5, "cep": 1.0 / 3.0}  # d log beta* / d log sigma (read noise per phase)


@dataclass(frozen=True)
class VerifyConfig:
    """Grids and tolerances of the suite (all justified in ``docs``/the report).

    Attributes
    ----------
    betas : EP nudges (S). Spread over two decades so a slope is measurable; the smallest keeps
        the round-off of EP differences (~eps/beta ~ 1e-13) far below the O(beta^2) bias.
    etas : coupled-learning amplitudes (dimensionless).
    steps : TBP/RBP sweep counts.
    n_directions : random unit directions for finite differences.
    fd_rel_step : finite-difference step, relative to the mean parameter (|theta|); used with one
        Richardson extrapolation (steps h and h/2), so the truncation error is O(h^4) ~ 1e-12 and the
        round-off ~ eps |C| / h ~ 1e-12 relative: both far below ``fd_tol``.
    fd_tol : relative tolerance of exact-vs-FD and EP-vs-surrogate-gradient (|fd - g.d| / (|g| |d|)).
    slope_tol : allowed |fitted slope - expected order|.
    bound_rtol : round-off allowance of the bound check, times ``eps (|E| + |C|) / beta``.
    solver_tol : max voltage difference (V) between solvers (exact routes agree to ~1e-12 V).
    backprop_tol : relative error TBP/RBP must reach at the largest step count (Gauss-Seidel sweeps
        contract geometrically; 100 sweeps reach 1e-6 or better on the catalogue, 1e-4 leaves margin).
    seed : seed of the random directions (and of the read-noise realisations).
    solvers : the circuit core's solvers compared with the reference route.
    read_sigmas : relative read-noise levels of the ``read_noise`` family. Chosen so that the best
        beta of every estimator lies inside ``read_betas`` on the catalogue's read-noise cases (the
        laws, not the values, are what is checked).
    read_betas : EP nudges (S, times the case's ``beta_scale``) of the ``read_noise`` family.
    read_trials : realisations per (sigma, beta): the variances' relative standard error is about
        ``sqrt(2 / read_trials)``, but every beta and sigma reuses the same realisations (common
        random numbers), so slopes and the location of the minimum are far more precise.
    best_beta_tol : allowed |fitted slope of log beta* vs log sigma - expected|.
    same_mean_z : allowed largest |t| statistic of the mean difference between the estimates with read
        noise per phase and per example (every beta, sigma and parameter; the draws are common to all
        betas and sigmas, so these are a few nearly independent tests, not hundreds).
    """

    betas: tuple = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    etas: tuple = (1e-3, 1e-2, 1e-1)
    steps: tuple = (1, 3, 10, 30, 100)
    n_directions: int = 3
    fd_rel_step: float = 1e-3
    fd_tol: float = 1e-6
    slope_tol: float = 0.25
    bound_rtol: float = 64.0
    solver_tol: float = 1e-9
    backprop_tol: float = 1e-4
    seed: int = 0
    solvers: tuple = ("qp", "coordinate")
    read_sigmas: tuple = (1e-8, 1e-7, 1e-6)
    read_betas: tuple = READ_BETAS
    read_trials: int = 24
    best_beta_tol: float = 0.1
    same_mean_z: float = 4.5

    def __post_init__(self):
        for name in ("betas", "etas", "steps", "solvers", "read_sigmas", "read_betas"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.betas) < 3 or min(self.betas) <= 0:
            raise PhysgradError("betas: at least three values > 0 are needed to fit a slope")
        if len(self.etas) < 2 or min(self.etas) <= 0:
            raise PhysgradError("etas: at least two values > 0")
        if not self.steps or min(self.steps) < 1:
            raise PhysgradError("steps must be integers >= 1")
        if self.n_directions < 1 or self.fd_rel_step <= 0:
            raise PhysgradError("n_directions >= 1 and fd_rel_step > 0 are required")
        if len(self.read_sigmas) < 2 or min(self.read_sigmas) <= 0:
            raise PhysgradError("read_sigmas: at least two values > 0 are needed to fit a slope")
        if len(self.read_betas) < 5 or min(self.read_betas) <= 0:
            raise PhysgradError("read_betas: at least five values > 0 (slopes and a minimum inside the grid)")
        if self.read_trials < 2:
            raise PhysgradError("read_trials must be >= 2 (a variance needs two realisations)")


def row(case, family, check, method="", param_name="", param=np.nan, value=np.nan, reference=np.nan,
        error=np.nan, tol=np.nan, status="info", detail=""):
    """One tidy result row."""
    return dict(case=case.name, family=family, check=check, method=method, param_name=param_name,
                param=float(param), value=float(value), reference=float(reference), error=float(error),
                tol=float(tol), status=status, detail=detail)


def rel_error(a, b) -> float:
    """``|a - b| / |b|`` (Euclidean norms over every leaf of the parameter trees)."""
    nb = tree_norm(b)
    diff = tree_norm(tree_map(lambda p, q: np.asarray(p) - q, a, b))
    return float(diff / nb) if nb > 0 else float(tree_norm(a))


def cosine(a, b) -> float:
    """Cosine similarity of two gradients (parameter trees)."""
    return float(tree_vdot(a, b) / (tree_norm(a) * tree_norm(b)))


def flat(tree) -> np.ndarray:
    """All leaves of a parameter tree as one vector."""
    return tree_flatten(tree)[0]


def axpy(theta, t: float, d):
    """``theta + t d`` leaf-wise."""
    return tree_map(lambda a, b: a + t * b, theta, d)


def fit_slope(x, y):
    """Least-squares slope of ``log y`` vs ``log x`` and its spread (max minus min of the local slopes)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    slope = float(np.polyfit(lx, ly, 1)[0])
    local = np.diff(ly) / np.diff(lx)
    return slope, float(np.max(local) - np.min(local)) if local.size else 0.0


def directions(theta, k: int, seed: int) -> list:
    """``k`` seeded random directions shaped like ``theta`` (an int: a vector of that length), unit norm."""
    rng = np.random.default_rng(seed)
    like = np.zeros(theta) if isinstance(theta, (int, np.integer)) else theta
    out = []
    for _ in range(k):
        d = tree_map(lambda a: rng.normal(size=np.shape(a)), like)
        out.append(tree_map(lambda a: a / tree_norm(d), d))
    return out


def richardson(f, h: float) -> float:
    """Central difference of ``f(t)`` at 0 with one Richardson step: ``(4 D(h/2) - D(h)) / 3``."""
    d1 = (f(h) - f(-h)) / (2 * h)
    d2 = (f(h / 2) - f(-h / 2)) / h
    return (4 * d2 - d1) / 3


class Recorder:
    """Minimizer wrapper that records every equilibrium it returns (for the certificate check)."""

    def __init__(self, inner):
        self.inner = inner
        self.equilibria = []

    def accepts(self, energy):
        return self.inner.accepts(energy)

    def minimize(self, energy, theta, x, *, nudge=FREE, s0=None):
        eq = self.inner.minimize(energy, theta, x, nudge=nudge, s0=s0)
        self.equilibria.append(eq)
        return eq

    def step(self, energy, theta, x, s, nudge=FREE):
        return self.inner.step(energy, theta, x, s, nudge)


def _cost(case, theta, minimizer):
    return float(mean_cost(case.energy, minimizer.minimize(case.energy, theta, case.x).state, case.y))


def check_exact(case, cfg: VerifyConfig, minimizer) -> tuple:
    """Exact gradient vs closed form (when known) and vs central finite differences of C."""
    res = ExactGradient().compute(case.energy, case.theta, case.x, case.y, minimizer)
    rows = []
    if case.known_grad is not None:
        err = rel_error(res.grad, case.known_grad)
        rows.append(row(case, "exact", "exact_vs_closed_form", "exact", error=err, tol=1e-12,
                        status="pass" if err <= 1e-12 else "fail"))
    h = cfg.fd_rel_step * float(np.mean(np.abs(flat(case.theta))))
    aset = res.active_set
    margin = np.inf if aset is None else min(aset.min_slack, aset.min_current)
    for k, d in enumerate(directions(case.theta, cfg.n_directions, cfg.seed)):
        fd = richardson(lambda t: _cost(case, axpy(case.theta, t, d), minimizer), h)
        g = tree_vdot(res.grad, d)
        err = abs(fd - g) / tree_norm(res.grad)
        status = "pass" if err <= cfg.fd_tol else ("skip" if res.near_kink else "fail")
        rows.append(row(case, "exact", "exact_vs_fd", "exact", "direction", k, g, fd, err, cfg.fd_tol, status,
                        f"h={h:.3g}; active-set margin {margin:.3g}"))
    if aset is not None:
        rows.append(row(case, "exact", "active_set_margin", "exact", value=margin, status="skip" if res.near_kink else "info",
                        detail=f"min slack {aset.min_slack:.3g} V, min current {aset.min_current:.3g} A, "
                               f"active {list(aset.active)}"))
    return res, rows


def _ep_phases(case, theta, beta, minimizer, free=None):
    return EquilibriumPropagation(beta, "centered").phases(case.energy, theta, case.x, case.y, minimizer, free)


def _active(case, eq):
    """The active constraints of an equilibrium (diodes at their threshold / units at their bound)."""
    if not hasattr(case.energy, "quadratic_form"):
        return box_active_set(case.energy, case.theta, case.x, eq.state, 1e-9).active
    qf = case.energy.quadratic_form(case.theta, case.x)
    return find_active_set(qf, qf.reduce(eq.state), 1e-9).active


def check_ep(case, cfg: VerifyConfig, exact, minimizer) -> list:
    """EP: gradient of its own surrogate, bounds, and bias order vs the exact gradient."""
    rows = []
    C = exact.cost
    E0 = float(np.mean(np.abs(case.energy.energy(
        minimizer.minimize(case.energy, case.theta, case.x).state, case.theta, case.x))))
    h = cfg.fd_rel_step * float(np.mean(np.abs(flat(case.theta))))
    dirs = directions(case.theta, 1, cfg.seed + 1)
    free = minimizer.minimize(case.energy, case.theta, case.x)
    act0 = _active(case, free)
    errors = {v: [] for v in EP_CODES}
    for beta in (b * case.beta_scale for b in cfg.betas):
        try:
            ph = _ep_phases(case, case.theta, beta, minimizer, free)
        except PhysgradError as err:
            for v in EP_CODES:
                rows.append(row(case, "bounds", "surrogate_bound", EP_CODES[v], "beta", beta, status="skip",
                                detail=str(err)))
            continue
        switched = act0 is not None and (_active(case, ph.plus) != act0 or _active(case, ph.minus) != act0)
        L = {v: surrogate_from_phases(case.energy, case.theta, case.x, case.y, beta, v, ph) for v in EP_CODES}
        tol_b = cfg.bound_rtol * EPS * (E0 + abs(C)) / beta
        rows.append(row(case, "bounds", "lower_bound", "pep", "beta", beta, L["positive"], C, L["positive"] - C, tol_b,
                        "pass" if L["positive"] <= C + tol_b else "fail", "L_pos(beta) <= C; error = L - C"))
        rows.append(row(case, "bounds", "upper_bound", "nep", "beta", beta, L["negative"], C, C - L["negative"], tol_b,
                        "pass" if C <= L["negative"] + tol_b else "fail", "C <= L_neg(beta); error = C - L"))
        rows.append(row(case, "bounds", "centered_surrogate", "cep", "beta", beta, L["centered"], C,
                        L["centered"] - C, status="info"))
        # the EP estimate is the gradient of its own surrogate
        d = dirs[0]
        phases_at = {}

        def L_at(t, variant):
            if t not in phases_at:
                phases_at[t] = _ep_phases(case, axpy(case.theta, t, d), beta, minimizer)
            return surrogate_from_phases(case.energy, axpy(case.theta, t, d), case.x, case.y, beta, variant, phases_at[t])

        for v, code in EP_CODES.items():
            est = EquilibriumPropagation(beta, v).estimate_from_phases(case.energy, case.theta, case.x, ph)
            fd = richardson(lambda t: L_at(t, v), h)
            err = abs(fd - tree_vdot(est, d)) / tree_norm(est)
            status = "pass" if err <= cfg.fd_tol else ("skip" if switched else "fail")
            rows.append(row(case, "surrogate", "ep_is_surrogate_gradient", code, "beta", beta, tree_vdot(est, d),
                            fd, err, cfg.fd_tol, status, "active set switches" if switched else ""))
            e = rel_error(est, exact.grad)
            errors[v].append((beta, e, switched))
            rows.append(row(case, "bias", "relative_error", code, "beta", beta, e, status="info",
                            detail="active set switches" if switched else ""))
    for v, code in EP_CODES.items():
        rows.append(_slope_row(case, code, "beta", errors[v], cfg))
    return rows


def _slope_row(case, code, pname, triples, cfg):
    ok = [(p, e) for p, e, sw in triples if not sw and e > 0]
    expected = EXPECTED_ORDER[code]
    n_sw = sum(1 for *_, sw in triples if sw)
    if len(ok) < 3:
        return row(case, "bias", "bias_order", code, pname, status="skip", reference=expected,
                   detail=f"only {len(ok)} {pname} values with the free active set ({n_sw} switch)")
    slope, spread = fit_slope(*zip(*ok))
    err = abs(slope - expected)
    return row(case, "bias", "bias_order", code, pname, value=slope, reference=expected, error=err, tol=cfg.slope_tol,
               status="pass" if err <= cfg.slope_tol else "fail",
               detail=f"spread {spread:.3g}; {len(ok)} points" + (f"; {n_sw} excluded (diode switches)" if n_sw else ""))


def check_coupled(case, cfg: VerifyConfig, exact, minimizer) -> list:
    """Coupled learning: order in eta w.r.t. its eta->0 limit; CL and CpL cosine to the exact gradient."""
    rows = []
    try:
        limit = coupled_limit(case.energy, case.theta, case.x, case.y, minimizer)
    except PhysgradError as err:
        return [row(case, "coupled", "cpl_limit", "ccpl", status="skip", detail=str(err))]
    rows.append(row(case, "coupled", "cosine_to_exact", "cpl-limit", value=cosine(limit, exact.grad), status="info"))
    free = minimizer.minimize(case.energy, case.theta, case.x)
    act0 = _active(case, free)
    errors = {v: [] for v in CPL_CODES}
    for eta in cfg.etas:
        for v, code in CPL_CODES.items():
            cl = CoupledLearning(eta, v)
            try:
                ph = cl.phases(case.energy, case.theta, case.x, case.y, minimizer, free)
            except Exception as err:  # an infeasible clamp (a diode forced forward) is a property of the case
                rows.append(row(case, "coupled", "relative_error", code, "eta", eta, status="skip", detail=str(err)[:200]))
                continue
            sw = act0 is not None and any(_active(case, p) != act0 for p in (ph.plus, ph.minus) if p is not None)
            est = cl.estimate_from_phases(case.energy, case.theta, case.x, ph)
            e = rel_error(est, limit)
            errors[v].append((eta, e, sw))
            rows.append(row(case, "coupled", "relative_error", code, "eta", eta, e, status="info",
                            detail="active set switches" if sw else ""))
            rows.append(row(case, "coupled", "cosine_to_exact", code, "eta", eta, cosine(est, exact.grad), status="info"))
    for v in ("positive", "negative"):
        r = _slope_row(case, CPL_CODES[v], "eta", errors[v], cfg)
        r["family"] = "coupled"
        rows.append(r)
    # centered CpL: the clamped state is affine in eta on a fixed active set, so its error is round-off
    cen = [(p, e) for p, e, sw in errors["centered"] if not sw]
    if cen:
        worst = max(e for _, e in cen)
        rows.append(row(case, "coupled", "centered_exact", "ccpl", "eta", max(p for p, _ in cen), worst, 0.0, worst,
                        1e-8, "pass" if worst <= 1e-8 else "fail",
                        "piecewise-quadratic energy: C-CpL equals its eta->0 limit up to round-off"))
    try:
        est = contrastive_learning().estimate(case.energy, case.theta, case.x, case.y, minimizer, free)
        rows.append(row(case, "coupled", "cosine_to_exact", "cl", "eta", 1.0, cosine(est, exact.grad), status="info"))
    except Exception as err:
        rows.append(row(case, "coupled", "cosine_to_exact", "cl", status="skip", detail=str(err)[:200]))
    return rows


def check_backprop(case, cfg: VerifyConfig, exact, minimizer) -> list:
    """TBP and RBP approach the exact gradient as the number of steps grows."""
    if not case.has_step:
        return [row(case, "backprop", "convergence", m, status="skip", detail="no pure step") for m in ("tbp", "rbp")]
    rows = []
    free = minimizer.minimize(case.energy, case.theta, case.x)
    paths = {"tbp": [TruncatedBackprop(n).estimate(case.energy, case.theta, case.x, case.y, minimizer, free)
                     for n in cfg.steps],
             "rbp": recurrent_backprop_path(case.energy, case.theta, case.x, case.y, minimizer, cfg.steps, free)}
    for code, ests in paths.items():
        errs = [rel_error(g, exact.grad) for g in ests]
        for n, e in zip(cfg.steps, errs):
            rows.append(row(case, "backprop", "relative_error", code, "steps", n, e, status="info"))
        ok = errs[-1] <= cfg.backprop_tol and errs[-1] <= errs[0]
        status = "pass" if ok else ("skip" if exact.near_kink else "fail")
        rows.append(row(case, "backprop", "convergence", code, "steps", cfg.steps[-1], errs[-1], 0.0, errs[-1],
                        cfg.backprop_tol, status, f"errors {', '.join(f'{e:.2g}' for e in errs)}"
                        + ("; the free equilibrium is on a kink: the sweeps' derivative is one-sided"
                           if status == "skip" else "")))
    return rows


def check_solvers(case, cfg: VerifyConfig, recorder: Recorder) -> list:
    """Solver agreement (circuit cases) and the KKT certificate of every equilibrium the checks used."""
    rows = []
    if case.circuit is not None:
        from physgrad.minimizers.co_content import CoContentMinimizer

        ref = case.minimizer.minimize(case.energy, case.theta, case.x)
        for solver in (case.solvers if case.solvers is not None else cfg.solvers):
            if solver == "ngspice":
                rows.append(_ngspice_row(case, ref, cfg))
                continue
            for label, nudge in (("free", FREE), ("beta", Nudge(max(cfg.betas) * case.beta_scale, target=case.y))):
                try:
                    eq = CoContentMinimizer(solver).minimize(case.energy, case.theta, case.x, nudge=nudge)
                    ref_n = ref if label == "free" else case.minimizer.minimize(case.energy, case.theta, case.x, nudge=nudge)
                    diff = float(np.max(np.abs(eq.state - ref_n.state)))
                    status = "pass" if eq.converged and diff <= cfg.solver_tol else "fail"
                    rows.append(row(case, "solvers", "solver_agreement", solver, "phase", 0 if label == "free" else 1,
                                    diff, 0.0, diff, cfg.solver_tol, status, f"{label} phase; {eq.status}"))
                except Exception as err:
                    rows.append(row(case, "solvers", "solver_agreement", solver, status="fail", detail=str(err)[:200]))
    if hasattr(case.energy, "to_circuit"):  # layered model: compare with the circuit core on its lowered circuit
        from physgrad.circuit.solve import solve

        eq = case.minimizer.minimize(case.energy, case.theta, case.x)
        for b in range(np.shape(case.x)[0]):
            try:
                sol = solve(case.energy.to_circuit(case.theta, case.x[b:b + 1]))
                ref = case.energy.state_from_solution(sol)
                diff = max(float(np.max(np.abs(np.asarray(a)[b] - r[0]))) for a, r in zip(eq.state, ref))
                ok = diff <= cfg.solver_tol and sol.certificate is not None and sol.certificate.passed
                rows.append(row(case, "solvers", "solver_agreement", f"circuit/{sol.solver}", "sample", b, diff, 0.0,
                                diff, cfg.solver_tol, "pass" if ok else "fail",
                                f"{getattr(case.minimizer, 'name', 'minimizer')} vs solve(to_circuit); certificate "
                                + ("passed" if sol.certificate is not None and sol.certificate.passed else "FAILED")))
            except Exception as err:
                rows.append(row(case, "solvers", "solver_agreement", "circuit", "sample", b, status="fail",
                                detail=str(err)[:200]))
    certs = [c for eq in recorder.equilibria for c in eq.info.get("certificates", ()) if c is not None]
    n_eq = len(recorder.equilibria)
    bad_status = sum(1 for eq in recorder.equilibria if not eq.converged)
    if certs:
        n_bad = sum(1 for c in certs if not c.passed)
        worst = max(c.kcl / c.tol_current if c.tol_current > 0 else 0.0 for c in certs)
        rows.append(row(case, "solvers", "kkt_certificates", case.minimizer.__class__.__name__, value=len(certs),
                        error=worst, tol=1.0, status="pass" if n_bad == 0 and bad_status == 0 else "fail",
                        detail=f"{n_eq} equilibria, {n_bad} failed certificates, {bad_status} not converged; "
                               "error = worst KCL residual / tolerance"))
    else:
        name = getattr(case.minimizer, "name", type(case.minimizer).__name__)
        rows.append(row(case, "solvers", "kkt_certificates", str(name), value=n_eq,
                        status="pass" if bad_status == 0 else "fail",
                        detail=f"{n_eq} equilibria, {bad_status} not converged (this minimizer returns no "
                               "certificate object: its status is checked)"))
    return rows


NGSPICE_TOL = 1e-8  # V: ngspice run with reltol=1e-9, vntol=1e-12 (measured agreement ~5e-10 V)


def _ngspice_row(case, ref, cfg):
    """Free-phase node voltages against ngspice (skipped when ngspice is not installed)."""
    from physgrad.circuit.netlist import write_netlist
    from physgrad.circuit.ngspice import NgspiceNotFoundError, run_ngspice

    lines = write_netlist(case.circuit).splitlines()
    lines.insert(1, ".options reltol=1e-9 vntol=1e-12 abstol=1e-15")
    try:
        res = run_ngspice("\n".join(lines) + "\n")
    except NgspiceNotFoundError as err:
        return row(case, "solvers", "solver_agreement", "ngspice", status="skip", detail=str(err)[:200])
    except Exception as err:
        return row(case, "solvers", "solver_agreement", "ngspice", status="fail", detail=str(err)[:200])
    diff = max(abs(res.voltage(n) - float(ref.state[0, i])) for i, n in enumerate(case.circuit.nodes))
    return row(case, "solvers", "solver_agreement", "ngspice", "phase", 0, diff, 0.0, diff, NGSPICE_TOL,
               "pass" if diff <= NGSPICE_TOL else "fail",
               f"free phase vs {res.version} (.options reltol=1e-9 vntol=1e-12 abstol=1e-15)"
               + (f"; warnings: {res.warnings}" if res.warnings else ""))


def _holomorphic(case) -> bool:
    """Whether the case's co-content is holomorphic in the state (a quadratic form without ideal diodes)."""
    if not hasattr(case.energy, "quadratic_form") or not hasattr(case.energy, "output_rows"):
        return False
    return np.shape(case.energy.quadratic_form(case.theta, case.x).D)[0] == 0


def check_contour(case, cfg: VerifyConfig, exact, minimizer) -> list:
    """The contour family: bias orders of ep4 (4), fp (2) and hep with N = 3 (3); fp's 3/4 of C-EP's
    bias; hep (N = 6) as a second exact-gradient route on holomorphic cases; the switching radius.

    The slopes are fitted on the three smallest nudges above round-off. Errors below ``1000 eps / (beta / scale)`` (~2e-13 / relative nudge: the equilibria's own accuracy,
    about 1e-13 relative for Newton's ``rtol``, divided by the nudge) are round-off, not bias, and are
    left out of the fits.
    """
    rows = []
    scale = case.beta_scale
    holo = _holomorphic(case)
    free = minimizer.minimize(case.energy, case.theta, case.x)
    radius = None
    if not holo and hasattr(case.energy, "quadratic_form"):
        radius = switching_radius(case.energy, case.theta, case.x, case.y, minimizer, max(cfg.betas) * scale, free=free)
        if radius is not None:
            rows.append(row(case, "contour", "switching_radius", "fp", "beta", max(cfg.betas) * scale, radius,
                            status="info", detail="smallest |beta| at which an ideal diode switches (inf: none up to "
                                                  "the largest beta)"))
    estimators = {"ep4": lambda b: ContourEP(b, "ep4"), "fp": lambda b: ContourEP(b, "fp", 8)}
    if holo:
        estimators["hep"] = lambda b: HolomorphicEP(b, HEP_SLOPE_POINTS)
    errors = {m: [] for m in estimators}
    for beta in (b * scale for b in cfg.betas):
        floor = 1000 * EPS / (beta / scale)
        for m, make in estimators.items():
            try:
                est = make(beta).estimate(case.energy, case.theta, case.x, case.y, minimizer, free)
            except PhysgradError as err:
                rows.append(row(case, "contour", "relative_error", m, "beta", beta, status="skip", detail=str(err)[:200]))
                continue
            e = rel_error(est, exact.grad)
            switched = radius is not None and (2 * beta if m == "ep4" else beta) >= radius
            errors[m].append((beta, e if e > floor else 0.0, switched))
            rows.append(row(case, "contour", "relative_error", m, "beta", beta, e, status="info",
                            detail=("diode switches within the nudges" if switched else "")
                            + ("; round-off (left out of the fit)" if e <= floor else "")
                            + (f"; N = {HEP_SLOPE_POINTS}" if m == "hep" else "")))
    for m in estimators:
        # the order is a beta -> 0 limit: fit the three smallest nudges above round-off (at larger beta
        # the next terms of the stencil's error can dominate, e.g. ep4 on strongly curved equilibria)
        asymptotic = [t for t in errors[m] if t[1] > 0 and not t[2]][:3]
        rows.append(_slope_row(case, m, "beta", asymptotic + [t for t in errors[m] if t[2]], cfg))
    if holo:
        beta = HEP_ROUTE_BETA * scale
        est = HolomorphicEP(beta, HEP_ROUTE_POINTS).estimate(case.energy, case.theta, case.x, case.y, minimizer, free)
        e = rel_error(est, exact.grad)
        rows.append(row(case, "contour", "hep_vs_exact", "hep", "beta", beta, e, 0.0, e, HEP_ROUTE_TOL,
                        "pass" if e <= HEP_ROUTE_TOL else "fail",
                        f"N = {HEP_ROUTE_POINTS}: a second exact route (bias O(b^N))"))
    return rows


def _example(case, b: int):
    """``(x, y)`` of example ``b`` of the case's batch (circuits without inputs: the one example)."""
    if case.x is None or np.ndim(case.x) < 2 or np.shape(case.x)[0] == 1:
        return case.x, case.y
    y = np.asarray(case.y)
    return case.x[b:b + 1], (y[b:b + 1] if y.ndim == 2 and y.shape[0] == np.shape(case.x)[0] else y)


def _read_noise_runs(case, cfg: VerifyConfig):
    """EP estimates under read noise, and the exact gradients of the networks as read.

    For each sigma, trial ``i`` and beta: P-EP and C-EP from the phases relaxed at read
    conductances drawn per phase (``ReadThrough`` with ``ReadNoise(sigma, "phase")``) and per example
    (``"example"``), all from ``device_rng(cfg.seed, "read", i, example, phase)``: the free phase's
    realisation is the same in both modes, and every beta and sigma reuses the trial's draws.

    Returns
    -------
    est : dict ``(sigma, mode, code) -> array (n_beta, trials, n_params)`` (NaN where a beta failed)
    g_read : dict ``sigma -> array (trials, n_params)``: exact gradient of the batch-mean cost with
        each example at its own read conductances (the network mode ``"example"`` measures)
    failed : dict ``beta -> message`` for nudges the energy rejects (e.g. ``-beta`` non-convex)
    """
    n_p = flat(case.theta).size
    betas = [b * case.beta_scale for b in cfg.read_betas]
    batch = 1 if case.x is None or np.ndim(case.x) < 2 else np.shape(case.x)[0]
    est, g_read, failed = {}, {}, {}
    for s in cfg.read_sigmas:
        wraps = {}
        for mode in ("phase", "example"):
            dev = Device(name=f"read-noise-{mode}", read_noise=ReadNoise(s, resample=mode))
            wraps[mode] = (dev, dev.init(case.theta, device_rng(cfg.seed, "init"))[1])
            for code in BEST_BETA_ORDER:
                est[(s, mode, code)] = np.full((len(betas), cfg.read_trials, n_p), np.nan)
        g_read[s] = np.zeros((cfg.read_trials, n_p))
        for i in range(cfg.read_trials):
            rt = {mode: ReadThrough(case.minimizer, dev, st, seed=cfg.seed, key=(i,)) for mode, (dev, st) in wraps.items()}
            for b in range(batch):
                xb, yb = _example(case, b)
                g = ExactGradient().compute(case.energy, rt["example"].read(case.theta, b), xb, yb, case.minimizer).grad
                g_read[s][i] += flat(g) / batch
            free = rt["phase"].minimize(case.energy, case.theta, case.x)
            for j, beta in enumerate(betas):
                if beta in failed:
                    continue
                for mode in ("phase", "example"):
                    try:
                        ph = _ep_phases(case, case.theta, beta, rt[mode], free)
                    except PhysgradError as err:
                        failed[beta] = str(err)
                        break
                    for v, code in (("positive", "pep"), ("centered", "cep")):
                        g = EquilibriumPropagation(beta, v).estimate_from_phases(case.energy, case.theta, case.x, ph)
                        est[(s, mode, code)][j, i] = flat(g)
    return est, g_read, failed


def _best_beta(betas, mse):
    """Minimiser of the mean-square error on the grid, refined by a parabola through the smallest
    point and its neighbours in (log beta, log mse); None when the smallest point is on the edge."""
    j = int(np.nanargmin(mse))
    if j == 0 or j == len(betas) - 1 or not np.all(np.isfinite(mse[j - 1:j + 2])):
        return None
    lx, ly = np.log(betas[j - 1:j + 2]), np.log(mse[j - 1:j + 2])
    c2, c1, _ = np.polyfit(lx, ly, 2)
    return float(np.exp(-c1 / (2 * c2)))


def check_read_noise(case, cfg: VerifyConfig, exact) -> list:
    r"""EP under read noise (family ``read_noise``): the conductances each phase relaxes at are
    read as :math:`g(1 + \sigma\xi)`, a realisation per phase or per example (see
    :class:`physgrad.devices.ReadNoise`); P-EP and C-EP against the exact gradient :math:`g^*`.

    Rows (``method`` = ``code-mode``, ``detail`` starts with ``sigma=...``; values relative to
    :math:`|g^*|`): ``rms_error`` and ``std`` per (sigma, beta) (info); ``bias_given_read`` (mode
    example): :math:`|\mathrm{mean}_i(\hat g_i - g^*_i)|` with :math:`g^*_i` the exact gradient of the
    network as read (info); graded slopes: ``noisy_variance_order`` (log Var vs log beta: -2 per
    phase, 0 per example), ``noisy_variance_sigma_order`` (log Var vs log sigma: 2),
    ``noisy_bias_order`` (bias given the read network vs beta: 1 for P-EP, 2 for C-EP);
    ``best_beta`` (info) and ``best_beta_order`` (log beta* vs log sigma, per phase: 1/2 for P-EP,
    1/3 for C-EP, from :math:`\mathrm{MSE} \approx a\beta^{2k} + c\sigma^2/\beta^2`); ``same_mean``
    (the two modes have the same expectation: largest |t| of their difference).
    """
    rows = []
    g_star = flat(exact.grad)
    norm = float(np.linalg.norm(g_star))
    betas = np.array([b * case.beta_scale for b in cfg.read_betas])
    sigmas = np.array(cfg.read_sigmas)
    est, g_read, failed = _read_noise_runs(case, cfg)
    for beta, msg in failed.items():
        rows.append(row(case, "read_noise", "rms_error", "cep", "beta", beta, status="skip", detail=msg[:200]))
    ok = np.array([b not in failed for b in betas])
    var = {}
    for (s, mode, code), e in est.items():
        var[(s, mode, code)] = np.sum(np.var(e, axis=1, ddof=1), axis=1) / norm**2
        mse = np.mean(np.sum((e - g_star) ** 2, axis=2), axis=1) / norm**2
        tag = f"sigma={s:g}"
        for j in np.flatnonzero(ok):
            rows.append(row(case, "read_noise", "rms_error", f"{code}-{mode}", "beta", betas[j], np.sqrt(mse[j]),
                            status="info", detail=tag))
            rows.append(row(case, "read_noise", "std", f"{code}-{mode}", "beta", betas[j],
                            np.sqrt(var[(s, mode, code)][j]), status="info", detail=tag))
        expected = READ_VARIANCE_ORDER[mode]
        slope, spread = fit_slope(betas[ok], var[(s, mode, code)][ok])
        err = abs(slope - expected)
        rows.append(row(case, "read_noise", "noisy_variance_order", f"{code}-{mode}", "sigma", s, slope, expected, err,
                        cfg.slope_tol, "pass" if err <= cfg.slope_tol else "fail",
                        f"{tag}; log Var vs log beta; spread {spread:.3g}; {int(ok.sum())} betas"))
        if mode == "example":
            bias = np.linalg.norm(np.mean(e - g_read[s][None], axis=1), axis=1) / norm
            for j in np.flatnonzero(ok):
                rows.append(row(case, "read_noise", "bias_given_read", code, "beta", betas[j], bias[j], status="info",
                                detail=f"{tag}; EP vs the exact gradient of the network as read"))
            use = ok & (bias > 0)
            slope, spread = fit_slope(betas[use], bias[use])
            err = abs(slope - EXPECTED_ORDER[code])
            rows.append(row(case, "read_noise", "noisy_bias_order", code, "sigma", s, slope, EXPECTED_ORDER[code], err,
                            cfg.slope_tol, "pass" if err <= cfg.slope_tol else "fail",
                            f"{tag}; read noise per example; spread {spread:.3g}; {int(use.sum())} betas"))
        else:
            best = _best_beta(betas, np.where(ok, mse, np.nan))
            rows.append(row(case, "read_noise", "best_beta", code, "sigma", s, np.nan if best is None else best,
                            status="info" if best is not None else "skip",
                            detail=tag + ("; smallest rms error" if best is not None
                                          else "; the smallest rms error is at the edge of the beta grid")))
    for code in BEST_BETA_ORDER:
        worst = 0.0
        for s in sigmas:  # per trial: the same free realisation, independent nudged ones
            d = est[(s, "phase", code)][ok] - est[(s, "example", code)][ok]
            se = np.std(d, axis=1, ddof=1) / np.sqrt(d.shape[1])
            t = np.divide(np.abs(np.mean(d, axis=1)), se, out=np.zeros_like(se), where=se > 0)
            worst = max(worst, float(np.max(t)))
        rows.append(row(case, "read_noise", "same_mean", code, value=worst, reference=0.0, error=worst,
                        tol=cfg.same_mean_z, status="pass" if worst <= cfg.same_mean_z else "fail",
                        detail="largest |t| of mean(per phase) - mean(per example) over sigmas, betas and parameters: "
                               "the two modes estimate the same expectation"))
    for mode in ("phase", "example"):
        for code in BEST_BETA_ORDER:
            per_beta = [fit_slope(sigmas, np.array([var[(s, mode, code)][j] for s in sigmas]))[0] for j in np.flatnonzero(ok)]
            slope = float(np.mean(per_beta))
            err = abs(slope - 2.0)
            rows.append(row(case, "read_noise", "noisy_variance_sigma_order", f"{code}-{mode}", value=slope, reference=2.0,
                            error=err, tol=cfg.slope_tol, status="pass" if err <= cfg.slope_tol else "fail",
                            detail=f"log Var vs log sigma, mean over {len(per_beta)} betas (from {min(per_beta):.3g} "
                                   f"to {max(per_beta):.3g})"))
    for code, expected in BEST_BETA_ORDER.items():
        pts = [(r["param"], r["value"]) for r in rows if r["check"] == "best_beta" and r["method"] == code
               and r["status"] == "info"]
        if len(pts) < 2:
            rows.append(row(case, "read_noise", "best_beta_order", code, reference=expected, status="skip",
                            detail=f"only {len(pts)} sigma with the best beta inside the grid"))
            continue
        slope, spread = fit_slope(*zip(*pts))
        err = abs(slope - expected)
        rows.append(row(case, "read_noise", "best_beta_order", code, value=slope, reference=expected, error=err,
                        tol=cfg.best_beta_tol, status="pass" if err <= cfg.best_beta_tol else "fail",
                        detail=f"log beta* vs log sigma (read noise per phase); {len(pts)} sigmas; spread {spread:.3g}"))
    return rows


def run_case(case, cfg: VerifyConfig) -> list:
    """Every check on one case (rows); the ``read_noise`` family on cases tagged ``read_noise``."""
    rec = Recorder(case.minimizer)
    exact, rows = check_exact(case, cfg, rec)
    rows += check_ep(case, cfg, exact, rec)
    rows += check_coupled(case, cfg, exact, rec)
    rows += check_backprop(case, cfg, exact, rec)
    rows += check_solvers(case, cfg, rec)
    rows += check_contour(case, cfg, exact, rec)
    if "read_noise" in case.tags:
        rows += check_read_noise(case, cfg, exact)
    if "dchn" in case.tags:  # convolutional Hopfield networks: their own family in the report
        from verification.dchn import as_dchn_rows
        rows = as_dchn_rows(rows)
    return rows

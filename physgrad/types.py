"""Data shared by every energy, minimizer and learning rule: errors, nudges, equilibria, quadratic forms.

State is data: minimizers keep nothing between calls; they take a state and return a new one
inside an :class:`Equilibrium`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Protocol, runtime_checkable

import numpy as np

Status = Literal["converged", "max_iter", "infeasible", "solver_error"]
STATUSES = ("converged", "max_iter", "infeasible", "solver_error")


class PhysgradError(ValueError):
    """Bad input: the message says what is wrong and where (file, line, element, node)."""


class BadArgumentError(PhysgradError, TypeError):
    """An argument of the wrong type or shape (a float where a circuit is expected, a string where an
    array of numbers is, an array of the wrong shape). Also a ``TypeError``, so code that catches
    Python's usual error for a wrong type keeps working; like every :class:`PhysgradError` it means
    bad input (exit code 2)."""


def as_float_array(value, what: str, shape: Optional[tuple] = None, *, finite: bool = True,
                   nonnegative: bool = False) -> np.ndarray:
    """``value`` as a float array, or :class:`PhysgradError` naming ``what``.

    Parameters
    ----------
    value : array-like
    what : str
        What the array is, for the message (e.g. ``"conductances"``).
    shape : tuple, optional
        Required shape (:class:`BadArgumentError` otherwise).
    finite, nonnegative : bool
        Refuse NaN/inf, negative entries (:class:`PhysgradError`).
    """
    if isinstance(value, (str, bytes)) or value is None:
        raise BadArgumentError(f"{what} must be an array of numbers, got {type(value).__name__} {value!r:.60}")
    try:
        raw = np.asarray(value)
        if np.iscomplexobj(raw):
            raise BadArgumentError(f"{what} must be real numbers, got complex values")
        arr = np.asarray(raw, dtype=float)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, PhysgradError):
            raise
        raise BadArgumentError(f"{what} must be an array of numbers, got {type(value).__name__}: {exc}") from None
    if shape is not None and arr.shape != tuple(shape):
        raise BadArgumentError(f"{what} must have shape {tuple(shape)}, got {arr.shape}")
    if finite and not np.all(np.isfinite(arr)):
        raise PhysgradError(f"{what} contains NaN or inf")
    if nonnegative and np.any(arr < 0):
        raise PhysgradError(f"{what} must be >= 0, got a minimum of {float(np.min(arr))!r}")
    return arr


def as_float(value, what: str) -> float:
    """``value`` as a Python float, or :class:`BadArgumentError` naming ``what`` (NaN/inf allowed)."""
    if isinstance(value, (str, bytes, complex)) or value is None or isinstance(value, np.ndarray) and value.ndim:
        raise BadArgumentError(f"{what} must be a real number, got {type(value).__name__} {value!r:.60}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BadArgumentError(f"{what} must be a real number, got {type(value).__name__} {value!r:.60}") from None


class DenseTooLargeError(PhysgradError):
    """A dense computation (the exact gradient's reduced form) would need more memory than the
    allowed limit; raised from a size estimate, before anything is allocated. The message gives the
    estimate, the limit and how to change it."""


class NotSolvedError(RuntimeError):
    """A minimizer did not reach a certified equilibrium (and ``strict=True`` was asked)."""


class InfeasibleError(NotSolvedError):
    """The circuit is well formed but has no steady state: ideal diodes the sources force forward
    (their current would be infinite). ``elements`` names them when known."""

    def __init__(self, message: str, elements: tuple = ()):
        super().__init__(message)
        self.elements = tuple(elements)


class SingularSystemError(NotSolvedError):
    """A linear system that should be nonsingular is exactly singular (e.g. a KKT system whose active
    diode constraints are dependent): raised by the sparse factorisation instead of SuperLU's
    ``RuntimeError``."""


@dataclass(frozen=True)
class Nudge:
    r"""How the output units are pushed towards a target.

    Two kinds, never both:

    - ``beta`` (real) adds :math:`\beta C(s, y)` with :math:`C = \tfrac12 \sum_o (s_o - y_o)^2`
      to the energy (equilibrium propagation). Physically a conductance ``beta`` (S) from each
      output node to a voltage source at ``y_o`` (V). ``beta < 0`` may make the energy
      non-convex; minimizers check and raise :class:`PhysgradError`.
    - ``clamp`` fixes the outputs to the given values (V) (contrastive and coupled learning).

    Parameters
    ----------
    beta : float
        Nudging strength (S). ``0`` means the free phase.
    target : array, shape ``(n_out,)`` or ``(batch, n_out)``, optional
        ``y``; required when ``beta != 0``.
    clamp : array, shape ``(n_out,)`` or ``(batch, n_out)``, optional
        Values the outputs are clamped to.
    """

    beta: float = 0.0
    target: Optional[np.ndarray] = None
    clamp: Optional[np.ndarray] = None

    def __post_init__(self):
        beta = as_float(self.beta, "nudge beta")
        if not np.isfinite(beta):
            raise PhysgradError(f"nudge beta must be finite, got {self.beta!r}")
        object.__setattr__(self, "beta", beta)
        for name in ("target", "clamp"):
            value = getattr(self, name)
            if value is not None:
                arr = as_float_array(value, f"nudge {name}")
                if arr.ndim > 2:
                    raise BadArgumentError(f"nudge {name} must have shape (n_out,) or (batch, n_out), got {arr.shape}")
                object.__setattr__(self, name, arr)
        if beta != 0.0 and self.target is None:
            raise PhysgradError("a nudge with beta != 0 needs a target")
        if self.clamp is not None and beta != 0.0:
            raise PhysgradError("a nudge is either a beta-nudge or a clamp, not both")

    @property
    def is_free(self) -> bool:
        """True for the free phase (no nudge, no clamp)."""
        return self.beta == 0.0 and self.clamp is None


FREE = Nudge()


@dataclass(frozen=True)
class Equilibrium:
    """A minimizer's answer.

    Attributes
    ----------
    state : array or tuple of arrays
        The minimizing state ``s`` (node voltages in V for circuits; one array per layer,
        shape ``(batch, n_k)``, for layered networks).
    energy : float or array
        Energy at ``state`` (J per second = W for co-content; ``(batch,)`` for layered models).
    status : {"converged", "max_iter", "infeasible", "solver_error"}
    n_iter : int
        Iterations (sweeps, Newton steps, active-set steps) taken.
    residual : float
        The stopping measure the minimizer used (stated in ``info["residual_kind"]``).
    solver : str
        Name of the minimizer (and backend).
    message : str
        Human-readable reason for the status.
    info : mapping
        Anything else (diode currents, timings, versions).
    """

    state: Any
    energy: Any
    status: Status
    n_iter: int
    residual: float
    solver: str
    message: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise PhysgradError(f"status must be one of {STATUSES}, got {self.status!r}")

    @property
    def converged(self) -> bool:
        return self.status == "converged"


@dataclass(frozen=True)
class QuadraticForm:
    r"""Reduced quadratic form of a piecewise-quadratic energy (may hold autograd boxes).

    Energy per sample :math:`\tfrac12 u^\top H u - f_b^\top u` (+ a constant), constraints
    :math:`D u \le d_b`, state :math:`s_b = P u_b + c_b`.

    Attributes
    ----------
    H : array, shape ``(n, n)``
        Symmetric positive (semi)definite Hessian (S for circuits).
    f : array, shape ``(batch, n)``
        Linear term (A for circuits).
    D : array, shape ``(m, n)``
        Constraint matrix (dimensionless for circuits: rows of the incidence matrix).
    d : array, shape ``(batch, m)``
        Constraint bounds (V for circuits).
    P : array, shape ``(n_state, n)``; c : array, shape ``(batch, n_state)``
        Lift from reduced coordinates to the state.
    S : array, shape ``(k, n)``, optional; e : array, shape ``(batch, k)``, optional
        Smooth convex terms :math:`\sum_j J_j(S_j u + e_j)` (Shockley diodes: voltages ``S u + e``, V).
    smooth : callable, optional
        ``smooth(v) -> (J'(v), J''(v))`` for ``v`` of shape ``(k,)``: currents (A) and slopes (S). The
        smooth terms must not depend on ``theta``.
    """

    H: Any
    f: Any
    D: Any
    d: Any
    P: Any
    c: Any
    S: Any = None
    e: Any = None
    smooth: Any = None

    @property
    def has_smooth(self) -> bool:
        return self.S is not None and np.shape(self.S)[0] > 0

    def smooth_terms(self, u_b, b: int):
        """Currents ``J'`` (A, shape ``(k,)``) and slopes ``J''`` (S) of the smooth terms at ``u_b``."""
        return self.smooth(np.asarray(self.S, float) @ u_b + np.asarray(self.e, float)[b])

    def __post_init__(self):
        n = self.H.shape[0]
        if self.H.shape != (n, n):
            raise PhysgradError(f"H must be square, got {self.H.shape}")
        if len(self.f.shape) != 2 or self.f.shape[1] != n:
            raise PhysgradError(f"f must have shape (batch, {n}), got {self.f.shape}")
        if len(self.D.shape) != 2 or self.D.shape[1] != n:
            raise PhysgradError(f"D must have shape (m, {n}), got {self.D.shape}")
        if tuple(self.d.shape) != (self.f.shape[0], self.D.shape[0]):
            raise PhysgradError(f"d must have shape ({self.f.shape[0]}, {self.D.shape[0]}), got {self.d.shape}")
        if self.P.shape[1] != n or tuple(self.c.shape) != (self.f.shape[0], self.P.shape[0]):
            raise PhysgradError(f"P, c must map (batch, {n}) to the state; got P {self.P.shape}, c {self.c.shape}")

    def lift(self, u):
        """State ``s = u P^T + c``, shape ``(batch, n_state)``."""
        import autograd.numpy as anp  # here, not at import: the solve path (CLI) never loads autograd

        return anp.dot(u, anp.transpose(self.P)) + self.c

    def reduce(self, state) -> np.ndarray:
        """Reduced coordinates ``u`` of a state (least squares through ``P``), shape ``(batch, n)``."""
        rhs = np.asarray(state, float) - np.asarray(self.c, float)
        return np.linalg.lstsq(np.asarray(self.P, float), rhs.T, rcond=None)[0].T


# --- the three abstractions, as typing Protocols --------------------------------------------------------
# Structural types: any object with these methods is one (nothing to inherit). ``isinstance(obj, P)``
# checks that the methods exist (``runtime_checkable``), which is how the optional capabilities below
# are probed; :func:`missing` names what an object lacks, for error messages.

@runtime_checkable
class Energy(Protocol):
    r"""An energy function :math:`E(s, \theta, x)` (definitions only: no state, no caches of solves).

    For circuits (:class:`physgrad.energies.co_content.CoContentEnergy`) ``E`` is the co-content (W),
    ``s`` the node voltages (V), ``theta`` the trainable conductances (S, not the ohms of a netlist),
    ``x`` the input sources' values (V or A).
    """

    n_outputs: int

    def energy(self, state, theta, x):
        """Total energy per sample, shape ``(batch,)``; pure and traceable by autograd."""

    def theta_grad(self, state, theta, x):
        r""":math:`\partial E/\partial\theta` at fixed state, batch mean, shaped like ``theta``."""

    def outputs(self, state):
        """The output units' values (V), shape ``(batch, n_out)``."""

    def project(self, theta):
        """The nearest feasible parameters (conductances >= 0 S)."""


@runtime_checkable
class SplitsParameters(Protocol):
    """Optional energy capability: ``split(theta)`` checks and splits a parameter tuple into its parts."""

    def split(self, theta): ...


@runtime_checkable
class ChecksNudge(Protocol):
    """Optional energy capability: ``check_nudge(theta, nudge)`` raises :class:`PhysgradError` for a
    nudge that makes the energy non-convex (e.g. ``beta < 0`` below the output conductance, S)."""

    def check_nudge(self, theta, nudge) -> None: ...


@runtime_checkable
class ChecksState(Protocol):
    """Optional energy capability: ``check_state(state, batch) -> state`` validates a start state."""

    def check_state(self, state, batch: int): ...


@runtime_checkable
class HasQuadraticForm(Protocol):
    """Optional energy capability: a piecewise-quadratic energy's reduced form
    (:class:`QuadraticForm`, Hessian in S for circuits) and the state rows of its outputs."""

    output_rows: tuple

    def quadratic_form(self, theta, x) -> "QuadraticForm": ...


@runtime_checkable
class Minimizer(Protocol):
    """An energy minimizer: energy in, :class:`Equilibrium` out (keeps no state between calls)."""

    def minimize(self, energy, theta, x, *, nudge: Nudge = ..., s0=None) -> Equilibrium:
        """Relax to the minimum of ``E + beta C`` (or with clamped outputs); ``theta`` in S for circuits."""

    def accepts(self, energy) -> None:
        """Raise :class:`PhysgradError` naming what ``energy`` lacks for this minimizer."""


@runtime_checkable
class Steps(Protocol):
    """Optional minimizer capability: a pure, autograd-traceable ``step(energy, theta, x, s, nudge) -> s``
    (what truncated and recurrent backprop differentiate through)."""

    def step(self, energy, theta, x, s, nudge=...): ...


@runtime_checkable
class ImplicitGradient(Protocol):
    """Optional minimizer capability: ``implicit_gradient(energy, theta, x, free, out_grad)``, a sparse
    adjoint of the equilibrium (dC/dtheta in V^2/S for circuits), or None when it does not apply."""

    def implicit_gradient(self, energy, theta, x, free, out_grad): ...


@runtime_checkable
class Estimator(Protocol):
    r"""A learning rule: an estimate of :math:`\partial C/\partial\theta` (batch mean; V^2/S for
    circuits, whose ``theta`` are conductances in S), shaped like ``theta``."""

    def estimate(self, energy, theta, x, y, minimizer, free=None):
        """The estimate at ``theta`` for inputs ``x`` and targets ``y`` (V); ``free`` a computed free phase."""


LearningRule = Estimator
"""The talk's name for an :class:`Estimator`."""


@runtime_checkable
class HasPhases(Protocol):
    """Optional estimator capability: ``phases(...)`` returns the equilibria the estimate contrasts."""

    def phases(self, energy, theta, x, y, minimizer, free=None): ...


def missing(obj, protocol) -> list:
    """Names of ``protocol``'s methods and attributes that ``obj`` lacks (empty: ``obj`` is one)."""
    names = [n for n in getattr(protocol, "__protocol_attrs__", None) or _protocol_names(protocol)]
    return sorted(n for n in names if not hasattr(obj, n))


def _protocol_names(protocol) -> list:
    names = set()
    for base in protocol.__mro__:
        if base in (Protocol, object) or base.__name__ == "Generic":
            continue
        names.update(n for n in vars(base) if not n.startswith("_"))
        names.update(getattr(base, "__annotations__", {}))
    return sorted(names)
